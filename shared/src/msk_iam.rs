//! MSK IAM authentication: a SigV4-signed token for SASL OAUTHBEARER.
//!
//! MSK checks the token against the function's IAM role (`kafka-cluster:Connect`
//! and friends), so there is no password to store. Signing is local (no AWS call);
//! tokens live 15 minutes, so one is cached and re-signed shortly before it expires,
//! because rskafka asks for a token on every new broker connection.

use std::{sync::Arc, time::Duration};

use aws_config::{Region, SdkConfig};
use aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider;
use aws_sdk_kafka::config::SharedCredentialsProvider;
use rskafka::client::{OauthBearerCredentials, OauthCallback, SaslConfig};
use tokio::sync::Mutex;

/// A token is re-signed when it has less than this left.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

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
        let mut cached = self.cached.lock().await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let margin_ms = REFRESH_MARGIN.as_millis() as i64;
        if let Some((token, expires_ms)) = cached.as_ref() {
            if *expires_ms - now_ms > margin_ms {
                return Ok(token.clone());
            }
        }
        let (token, expires_ms) =
            generate_auth_token_from_credentials_provider(self.region.clone(), self.credentials.clone())
                .await
                .map_err(|e| MskIamError::Sign(Box::new(e)))?;
        *cached = Some((token.clone(), expires_ms));
        Ok(token)
    }

    /// rskafka's SASL settings: OAUTHBEARER with tokens from this signer.
    pub fn sasl_config(self: Arc<Self>) -> SaslConfig {
        let callback: OauthCallback = Arc::new(move || {
            let signer = Arc::clone(&self);
            Box::pin(async move { signer.token().await.map_err(Into::into) })
        });
        SaslConfig::Oauthbearer(OauthBearerCredentials {
            callback,
            authz_id: None,
            bearer_kvs: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kafka::config::Credentials;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

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
        let SaslConfig::Oauthbearer(credentials) = Arc::clone(&signer).sasl_config() else {
            panic!("MSK IAM must use OAUTHBEARER");
        };
        let first = (credentials.callback)().await.unwrap();
        let second = (credentials.callback)().await.unwrap();
        assert_eq!(first, second);
        // Pretend the cached token is about to expire: the next call signs a new one.
        signer.cached.lock().await.as_mut().unwrap().1 = chrono::Utc::now().timestamp_millis() + 1_000;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let third = (credentials.callback)().await.unwrap();
        assert_ne!(first, third);
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
