//! What the channels functions read from their environment beyond the shared
//! [`devconnect::config::Config`]: the unsubscribe signing secret, the public URL
//! that links point at and the message alert cooldown. All are set by template.yaml;
//! locally they have defaults.

use std::time::Duration;

use devconnect::config::ConfigError;

use crate::unsubscribe::Signer;

/// Shortest secret accepted: HMAC-SHA256 keys shorter than its output weaken it.
pub const MIN_SECRET_BYTES: usize = 32;

/// The local stack's secret: only ever used outside Lambda.
const LOCAL_SECRET: &str = "devconnect-local-unsubscribe-secret-not-for-aws";

/// How long a message that alerted by email or SMS silences the same sender's next ones
/// (`MESSAGE_ALERT_COOLDOWN_SECONDS`): long enough to cover a conversation's burst.
pub const DEFAULT_MESSAGE_COOLDOWN: Duration = Duration::from_secs(600);

/// Longest cooldown accepted: a day, beyond which a user would miss a new conversation.
const MAX_MESSAGE_COOLDOWN_SECS: u64 = 24 * 3600;

/// The channels functions' own settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Signs and checks unsubscribe tokens (`UNSUBSCRIBE_SECRET`).
    pub signer: Signer,
    /// `PUBLIC_API_URL`: the HTTP API's base URL, without a trailing slash.
    pub public_api_url: String,
    /// `MESSAGE_ALERT_COOLDOWN_SECONDS`: see [`crate::router::Context::message_cooldown`].
    pub message_cooldown: Duration,
}

impl Settings {
    /// Reads `UNSUBSCRIBE_SECRET`, `PUBLIC_API_URL` and `MESSAGE_ALERT_COOLDOWN_SECONDS`
    /// (whole seconds, 0 to a day; 0 alerts every message). Outside Lambda the secret and
    /// the URL default (the URL to `local_api_url`); inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) a missing
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
        let message_cooldown = message_cooldown(var("MESSAGE_ALERT_COOLDOWN_SECONDS"))?;
        Ok(Self {
            signer: Signer::new(secret.as_bytes()),
            public_api_url: url.trim_end_matches('/').to_string(),
            message_cooldown,
        })
    }

    /// The local defaults (the local gateway at `local_api_url`).
    pub fn local(local_api_url: &str) -> Self {
        Self {
            signer: Signer::new(LOCAL_SECRET.as_bytes()),
            public_api_url: local_api_url.trim_end_matches('/').to_string(),
            message_cooldown: DEFAULT_MESSAGE_COOLDOWN,
        }
    }
}

/// `MESSAGE_ALERT_COOLDOWN_SECONDS` as read (`None`: unset or empty).
fn message_cooldown(value: Option<String>) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(DEFAULT_MESSAGE_COOLDOWN);
    };
    match v.parse::<u64>() {
        Ok(secs) if secs <= MAX_MESSAGE_COOLDOWN_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError {
            var: "MESSAGE_ALERT_COOLDOWN_SECONDS",
            reason: format!("must be whole seconds from 0 to {MAX_MESSAGE_COOLDOWN_SECS}, got {v:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_cooldown_defaults_to_ten_minutes_and_zero_turns_it_off() {
        assert_eq!(message_cooldown(None).unwrap(), Duration::from_secs(600));
        assert_eq!(message_cooldown(Some("0".into())).unwrap(), Duration::ZERO);
    }

    #[test]
    fn a_message_cooldown_that_is_no_whole_number_of_seconds_up_to_a_day_fails_init() {
        for bad in ["-1", "1.5", "ten", "86401"] {
            let e = message_cooldown(Some(bad.into())).unwrap_err();
            assert_eq!(e.var, "MESSAGE_ALERT_COOLDOWN_SECONDS", "{bad}");
        }
    }
}
