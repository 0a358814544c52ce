//! How to reach the Kafka brokers: addresses plus TLS and SASL per `KAFKA_SECURITY`.
//!
//! The producer and the local gateway's MSK poller both build rskafka clients; they
//! get them from [`KafkaConnection::client_builder`], so security is decided in one place.

use std::sync::Arc;

use aws_config::SdkConfig;
use rskafka::client::{ClientBuilder, SaslConfig};

use crate::{
    config::KafkaSecurity,
    msk_iam::{MskIamError, MskIamSigner},
    tls,
};

/// Why a Kafka connection cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConnectionError {
    /// The TLS client config could not be built.
    #[error("KAFKA_SECURITY={0}: TLS setup failed: {1}")]
    Tls(KafkaSecurity, #[source] rustls::Error),
    /// MSK IAM needs a region and credentials.
    #[error(transparent)]
    MskIam(#[from] MskIamError),
}

/// Brokers and the security to use with them; cheap to clone.
#[derive(Clone)]
pub struct KafkaConnection {
    brokers: Vec<String>,
    security: KafkaSecurity,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
}

impl KafkaConnection {
    /// No TLS, no authentication: the local broker.
    pub fn plaintext(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            security: KafkaSecurity::Plaintext,
            tls: None,
            sasl: None,
        }
    }

    /// Settings for `security`; `aws` (region, credentials) is needed only for [`KafkaSecurity::Iam`].
    pub fn new(
        brokers: Vec<String>,
        security: KafkaSecurity,
        aws: Option<&SdkConfig>,
    ) -> Result<Self, KafkaConnectionError> {
        let tls = match security {
            KafkaSecurity::Plaintext => None,
            KafkaSecurity::Tls | KafkaSecurity::Iam => {
                Some(tls::client_config().map_err(|e| KafkaConnectionError::Tls(security, e))?)
            }
        };
        let sasl = match security {
            KafkaSecurity::Iam => {
                let aws = aws.ok_or(MskIamError::NoRegion)?;
                Some(Arc::new(MskIamSigner::from_sdk_config(aws)?).sasl_config())
            }
            KafkaSecurity::Plaintext | KafkaSecurity::Tls => None,
        };
        Ok(Self {
            brokers,
            security,
            tls,
            sasl,
        })
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// The security in use.
    pub fn security(&self) -> KafkaSecurity {
        self.security
    }

    /// An rskafka client builder with the brokers, TLS and SASL set; callers add backoff etc.
    pub fn client_builder(&self) -> ClientBuilder {
        let mut builder = ClientBuilder::new(self.brokers.clone());
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_kafka::config::{Credentials, SharedCredentialsProvider};

    use super::*;

    fn aws() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "dummy-secret",
                None,
                None,
                "test",
            )))
            .build()
    }

    fn brokers() -> Vec<String> {
        vec!["b-1.example:9098".into()]
    }

    #[test]
    fn plaintext_uses_neither_tls_nor_sasl() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Plaintext, None).unwrap();
        assert!(c.tls.is_none() && c.sasl.is_none());
        assert_eq!(c.security(), KafkaSecurity::Plaintext);
    }

    #[test]
    fn tls_uses_tls_without_sasl() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Tls, None).unwrap();
        assert!(c.tls.is_some() && c.sasl.is_none());
    }

    #[test]
    fn iam_uses_tls_and_oauthbearer() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Iam, Some(&aws())).unwrap();
        assert!(c.tls.is_some());
        assert!(matches!(c.sasl, Some(SaslConfig::Oauthbearer(_))));
        assert_eq!(c.security(), KafkaSecurity::Iam);
        assert_eq!(c.brokers(), brokers());
    }

    #[test]
    fn iam_without_an_aws_region_fails_naming_it() {
        let err = KafkaConnection::new(brokers(), KafkaSecurity::Iam, None).err().unwrap();
        assert!(err.to_string().contains("AWS_REGION"));
    }
}
