//! What the channels functions read from their environment beyond the shared
//! [`devconnect::config::Config`]: the unsubscribe signing secret and the public URL
//! that links point at. Both are set by template.yaml; locally they have defaults.

use devconnect::config::ConfigError;

use crate::unsubscribe::Signer;

/// Shortest secret accepted: HMAC-SHA256 keys shorter than its output weaken it.
pub const MIN_SECRET_BYTES: usize = 32;

/// The local stack's secret: only ever used outside Lambda.
const LOCAL_SECRET: &str = "devconnect-local-unsubscribe-secret-not-for-aws";

/// The channels functions' own settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Signs and checks unsubscribe tokens (`UNSUBSCRIBE_SECRET`).
    pub signer: Signer,
    /// `PUBLIC_API_URL`: the HTTP API's base URL, without a trailing slash.
    pub public_api_url: String,
}

impl Settings {
    /// Reads `UNSUBSCRIBE_SECRET` and `PUBLIC_API_URL`. Outside Lambda both default (the
    /// URL to `local_api_url`); inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) a missing
    /// secret fails init, so no deployed link is signed with the public local secret.
    pub fn from_env(local_api_url: &str) -> Result<Self, ConfigError> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let in_lambda = var("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let secret = match var("UNSUBSCRIBE_SECRET") {
            Some(s) if s.len() >= MIN_SECRET_BYTES => s,
            Some(_) => {
                return Err(ConfigError {
                    var: "UNSUBSCRIBE_SECRET",
                    reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
                })
            }
            None if in_lambda => {
                return Err(ConfigError {
                    var: "UNSUBSCRIBE_SECRET",
                    reason: "required in AWS".into(),
                })
            }
            None => LOCAL_SECRET.to_string(),
        };
        let url = var("PUBLIC_API_URL").unwrap_or_else(|| local_api_url.to_string());
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError {
                var: "PUBLIC_API_URL",
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(Self {
            signer: Signer::new(secret.as_bytes()),
            public_api_url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The local defaults (the local gateway at `local_api_url`).
    pub fn local(local_api_url: &str) -> Self {
        Self {
            signer: Signer::new(LOCAL_SECRET.as_bytes()),
            public_api_url: local_api_url.trim_end_matches('/').to_string(),
        }
    }
}
