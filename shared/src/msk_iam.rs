//! MSK IAM authentication: a SigV4-signed token for SASL OAUTHBEARER.
//!
//! MSK checks the token against the function's IAM role (`kafka-cluster:Connect`
//! and friends), so there is no password to store. Signing is local (no AWS call);
//! tokens live 15 minutes, so one is cached and re-signed well before it expires,
//! because rskafka asks for a token on every new broker connection.
//!
//! The broker ends a SASL session when the token it was opened with expires, and
//! rskafka cannot re-authenticate a live connection (KIP-368). So every token handed
//! to a connection is also recorded in that client's [`SessionLease`], and the
//! producer replaces its client before the lease runs out (see
//! [`crate::kafka_connection`]).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_config::{Region, SdkConfig};
use aws_sdk_kafka::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::{
    http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings},
    sign::v4,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rskafka::client::{OauthBearerCredentials, OauthCallback, SaslConfig};
use tokio::sync::Mutex;

use crate::kafka_connection::SessionLease;

/// A token is re-signed when it has less than this left. A third of the 15-minute
/// lifetime: a client replaced at 80 % of its session (see [`SessionLease`]) then
/// always opens its new connections with a fresh token, instead of a cached one that
/// would make the new session short too.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long a signed token is valid (the broker's limit for MSK IAM).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Why MSK IAM cannot be set up, naming what is missing.
#[derive(Debug, thiserror::Error)]
pub enum MskIamError {
    /// No region in the environment (Lambda always sets `AWS_REGION`).
    #[error("KAFKA_SECURITY=iam needs AWS_REGION")]
    NoRegion,
    /// No credentials provider (Lambda always provides the execution role's).
    #[error("KAFKA_SECURITY=iam needs AWS credentials (the execution role)")]
    NoCredentials,
    /// Credentials could not be loaded, or signing failed.
    #[error("signing the MSK IAM token: {0}")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Signs tokens for one region with one credentials provider, caching the latest.
pub struct MskIamSigner {
    region: Region,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<(String, i64)>>,
}

impl MskIamSigner {
    /// A signer using the region and credentials of `aws`.
    pub fn from_sdk_config(aws: &SdkConfig) -> Result<Self, MskIamError> {
        Ok(Self::new(
            aws.region().cloned().ok_or(MskIamError::NoRegion)?,
            aws.credentials_provider().ok_or(MskIamError::NoCredentials)?,
        ))
    }

    /// A signer for `region` with `credentials`.
    pub fn new(region: Region, credentials: SharedCredentialsProvider) -> Self {
        Self {
            region,
            credentials,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least [`REFRESH_MARGIN`]: the cached one, or a freshly signed one.
    pub async fn token(&self) -> Result<String, MskIamError> {
        self.token_with_expiry().await.map(|(token, _)| token)
    }

    /// Like [`Self::token`], with the token's expiry (Unix milliseconds): the moment the
    /// broker ends a session authenticated with it.
    pub async fn token_with_expiry(&self) -> Result<(String, i64), MskIamError> {
        let mut cached = self.cached.lock().await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let margin_ms = i64::try_from(REFRESH_MARGIN.as_millis()).unwrap_or(i64::MAX);
        if let Some((token, expires_ms)) = cached.as_ref() {
            if *expires_ms - now_ms > margin_ms {
                return Ok((token.clone(), *expires_ms));
            }
        }
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| MskIamError::Sign(Box::new(e)))?;
        let (token, expires_ms) = sign_token(&self.region, credentials, SystemTime::now())?;
        *cached = Some((token.clone(), expires_ms));
        Ok((token, expires_ms))
    }

    /// rskafka's SASL settings: OAUTHBEARER with tokens from this signer. Each token
    /// handed to a connection is recorded in `lease`, so the client's owner knows when
    /// the first of its sessions will be closed by the broker.
    pub fn sasl_config(self: Arc<Self>, lease: SessionLease) -> SaslConfig {
        let callback: OauthCallback = Arc::new(move || {
            let signer = Arc::clone(&self);
            let lease = lease.clone();
            Box::pin(async move {
                let (token, expires_ms) = signer.token_with_expiry().await?;
                lease.record_expiry(expires_ms);
                Ok(token)
            })
        });
        SaslConfig::Oauthbearer(OauthBearerCredentials {
            callback,
            authz_id: None,
            bearer_kvs: Vec::new(),
        })
    }
}

/// The token MSK takes for OAUTHBEARER: `https://kafka.<region>.amazonaws.com/?Action=
/// kafka-cluster:Connect`, SigV4-presigned in the query for the `kafka-cluster` service
/// and [`TOKEN_LIFETIME`], base64url without padding; with its expiry (Unix ms).
fn sign_token(region: &Region, credentials: Credentials, now: SystemTime) -> Result<(String, i64), MskIamError> {
    let failed = |e: &dyn std::fmt::Display| MskIamError::Sign(e.to_string().into());
    let mut url = url::Url::parse(&format!("https://kafka.{region}.amazonaws.com/")).map_err(|e| failed(&e))?;
    url.query_pairs_mut().append_pair("Action", "kafka-cluster:Connect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region.as_ref())
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?;
    let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| failed(&e))?;
    let (instructions, _) = sign(request, &params.into()).map_err(|e| failed(&e))?.into_parts();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
        query.append_pair("User-Agent", concat!("devconnect/", env!("CARGO_PKG_VERSION")));
    }
    // X-Amz-Date has whole seconds; the token expires TOKEN_LIFETIME after it.
    let signed_at = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| failed(&e))?
        .as_secs();
    let expires_ms = (signed_at + TOKEN_LIFETIME.as_secs()) as i64 * 1_000;
    Ok((URL_SAFE_NO_PAD.encode(url.as_str()), expires_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> MskIamSigner {
        let credentials = Credentials::new("AKIDEXAMPLE", "dummy-secret", None, None, "test");
        MskIamSigner::new(Region::new("eu-west-1"), SharedCredentialsProvider::new(credentials))
    }

    #[tokio::test]
    async fn the_token_is_a_presigned_kafka_connect_url_for_the_region() {
        let token = signer().token().await.unwrap();
        let url = url::Url::parse(&String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap()).unwrap();
        assert_eq!(url.host_str(), Some("kafka.eu-west-1.amazonaws.com"));
        let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["Action"], "kafka-cluster:Connect");
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert!(query["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"));
        assert!(query["X-Amz-Credential"].contains("/eu-west-1/kafka-cluster/aws4_request"));
        assert_eq!(query["X-Amz-Expires"], "900");
        assert!(!query["X-Amz-Signature"].is_empty());
        assert!(!token.contains("dummy-secret"));
    }

    #[tokio::test]
    async fn the_callback_reuses_a_token_until_it_nears_expiry() {
        let signer = Arc::new(signer());
        let lease = SessionLease::opened_at(chrono::Utc::now().timestamp_millis());
        let SaslConfig::Oauthbearer(credentials) = Arc::clone(&signer).sasl_config(lease.clone()) else {
            panic!("MSK IAM must use OAUTHBEARER");
        };
        let first = (credentials.callback)().await.unwrap();
        let second = (credentials.callback)().await.unwrap();
        assert_eq!(first, second);
        // The lease knows the token's expiry: 15 minutes from now.
        let expires = lease.expires_at_ms().expect("the callback records the token's expiry");
        let left = expires - chrono::Utc::now().timestamp_millis();
        assert!((890_000..=900_000).contains(&left), "{left} ms left");
        // Pretend the cached token is about to expire: the next call signs a new one.
        signer.cached.lock().await.as_mut().unwrap().1 = chrono::Utc::now().timestamp_millis() + 1_000;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let third = (credentials.callback)().await.unwrap();
        assert_ne!(first, third);
    }

    #[test]
    fn a_token_expires_fifteen_minutes_after_its_signing_second() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let credentials = Credentials::new("AKIDEXAMPLE", "dummy-secret", None, None, "test");
        let (token, expires_ms) = sign_token(&Region::new("eu-west-1"), credentials.clone(), at).unwrap();
        assert_eq!(expires_ms, 1_700_000_900_000);
        let url = url::Url::parse(&String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap()).unwrap();
        let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["X-Amz-Date"], "20231114T221320Z");
        // Same inputs, same signature; another secret, another one.
        let (again, _) = sign_token(&Region::new("eu-west-1"), credentials, at).unwrap();
        assert_eq!(token, again);
        let other = Credentials::new("AKIDEXAMPLE", "other-secret", None, None, "test");
        assert_ne!(token, sign_token(&Region::new("eu-west-1"), other, at).unwrap().0);
    }

    #[test]
    fn a_missing_region_is_named() {
        let aws = SdkConfig::builder().build();
        assert!(matches!(
            MskIamSigner::from_sdk_config(&aws),
            Err(MskIamError::NoRegion)
        ));
        assert!(MskIamError::NoRegion.to_string().contains("AWS_REGION"));
    }
}
