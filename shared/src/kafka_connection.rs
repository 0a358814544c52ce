//! How to reach the Kafka brokers: addresses plus TLS and SASL per `KAFKA_SECURITY`.
//!
//! The producer and the local gateway's MSK poller both build rskafka clients; they
//! get them from [`KafkaConnection::client_builder`], so security is decided in one place.
//!
//! A broker closes a SASL OAUTHBEARER session when its token expires (MSK IAM tokens
//! live 15 minutes), and rskafka cannot re-authenticate a live connection (KIP-368).
//! A long-lived client would then lose its connections mid-produce. So
//! [`KafkaConnection::session`] returns, with the builder, a [`SessionLease`] that
//! learns the expiry of every token the client's connections present; its owner
//! replaces the client once [`SessionLease::refresh_due`] says so (at
//! [`REFRESH_AT_PERCENT`] of the session's life), before any session can expire.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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

/// A client is replaced once this share of its session's life has passed: early
/// enough that a produce started just before cannot outlive the session (the produce
/// timeout is seconds, 20 % of a 15-minute token is 3 minutes), late enough that a
/// busy function rebuilds its client only every 12 minutes.
pub const REFRESH_AT_PERCENT: i64 = 80;

/// `true` once a session opened at `opened_at_ms` whose first token expires at
/// `expires_at_ms` has lived [`REFRESH_AT_PERCENT`] of its life, at `now_ms` (all Unix
/// milliseconds). Pure, so the decision is tested with a fake clock.
pub fn refresh_due(opened_at_ms: i64, expires_at_ms: i64, now_ms: i64) -> bool {
    let life = (expires_at_ms - opened_at_ms).max(0);
    now_ms >= opened_at_ms + life * REFRESH_AT_PERCENT / 100
}

/// When one client's broker sessions end: the earliest expiry among the tokens its
/// connections authenticated with (a reconnect inside rskafka asks for a token again,
/// so the earliest one is the first session the broker will close). No expiry (no
/// SASL) means the sessions never expire. Cheap to clone; clones share the record.
#[derive(Clone, Debug)]
pub struct SessionLease {
    opened_at_ms: i64,
    expires_at_ms: Arc<Mutex<Option<i64>>>,
}

impl SessionLease {
    /// A lease for a client built at `opened_at_ms` (Unix milliseconds).
    pub fn opened_at(opened_at_ms: i64) -> Self {
        Self {
            opened_at_ms,
            expires_at_ms: Arc::new(Mutex::new(None)),
        }
    }

    /// A connection of this client authenticated with a token expiring at `expires_at_ms`.
    pub fn record_expiry(&self, expires_at_ms: i64) {
        let mut earliest = self.expires_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        *earliest = Some(earliest.map_or(expires_at_ms, |e| e.min(expires_at_ms)));
    }

    /// The earliest token expiry recorded so far.
    pub fn expires_at_ms(&self) -> Option<i64> {
        *self.expires_at_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the client was built.
    pub fn opened_at_ms(&self) -> i64 {
        self.opened_at_ms
    }

    /// Whether the client should be replaced now (see [`refresh_due`]).
    pub fn refresh_due(&self, now_ms: i64) -> bool {
        self.expires_at_ms()
            .is_some_and(|expires| refresh_due(self.opened_at_ms, expires, now_ms))
    }

    /// Whether a session of the client has already been closed by the broker.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms().is_some_and(|expires| now_ms >= expires)
    }
}

/// Brokers and the security to use with them; cheap to clone.
#[derive(Clone)]
pub struct KafkaConnection {
    brokers: Vec<String>,
    security: KafkaSecurity,
    tls: Option<Arc<rustls::ClientConfig>>,
    signer: Option<Arc<MskIamSigner>>,
    session_lifetime: Option<Duration>,
}

impl KafkaConnection {
    /// No TLS, no authentication: the local broker.
    pub fn plaintext(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            security: KafkaSecurity::Plaintext,
            tls: None,
            signer: None,
            session_lifetime: None,
        }
    }

    /// Treats every session as ending `lifetime` after it opens, as a broker with
    /// `connections.max.reauth.ms` does, on top of any token expiry. The local broker
    /// has no SASL, so tests use this to drive the same refresh path as MSK IAM.
    pub fn with_session_lifetime(mut self, lifetime: Duration) -> Self {
        self.session_lifetime = Some(lifetime);
        self
    }

    /// Settings for `security`; `aws` (region, credentials) is needed only for [`KafkaSecurity::Iam`].
    pub fn new(
        brokers: Vec<String>,
        security: KafkaSecurity,
        aws: Option<&SdkConfig>,
    ) -> Result<Self, KafkaConnectionError> {
        let tls = match security {
            KafkaSecurity::Plaintext => None,
            KafkaSecurity::Tls | KafkaSecurity::Iam => Some(Arc::new(
                tls::client_config().map_err(|e| KafkaConnectionError::Tls(security, e))?,
            )),
        };
        let signer = match security {
            KafkaSecurity::Iam => {
                let aws = aws.ok_or(MskIamError::NoRegion)?;
                Some(Arc::new(MskIamSigner::from_sdk_config(aws)?))
            }
            KafkaSecurity::Plaintext | KafkaSecurity::Tls => None,
        };
        Ok(Self {
            brokers,
            security,
            tls,
            signer,
            session_lifetime: None,
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
    /// For a client kept longer than a token lives, use [`Self::session`].
    pub fn client_builder(&self) -> ClientBuilder {
        self.session(chrono::Utc::now().timestamp_millis()).0
    }

    /// A builder for a client built at `now_ms`, and the lease that tells when to
    /// replace that client (its SASL sessions' expiry, or [`Self::with_session_lifetime`]).
    pub fn session(&self, now_ms: i64) -> (ClientBuilder, SessionLease) {
        let lease = SessionLease::opened_at(now_ms);
        if let Some(lifetime) = self.session_lifetime {
            lease.record_expiry(now_ms.saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)));
        }
        let mut builder = ClientBuilder::new(self.brokers.clone());
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = self.sasl_config(&lease) {
            builder = builder.sasl_config(sasl);
        }
        (builder, lease)
    }

    fn sasl_config(&self, lease: &SessionLease) -> Option<SaslConfig> {
        self.signer
            .as_ref()
            .map(|signer| Arc::clone(signer).sasl_config(lease.clone()))
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
        assert!(c.tls.is_none() && c.signer.is_none());
        assert_eq!(c.security(), KafkaSecurity::Plaintext);
    }

    #[test]
    fn tls_uses_tls_without_sasl() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Tls, None).unwrap();
        assert!(c.tls.is_some() && c.signer.is_none());
    }

    #[test]
    fn iam_uses_tls_and_oauthbearer() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Iam, Some(&aws())).unwrap();
        assert!(c.tls.is_some());
        let lease = SessionLease::opened_at(0);
        assert!(matches!(c.sasl_config(&lease), Some(SaslConfig::Oauthbearer(_))));
        assert_eq!(c.security(), KafkaSecurity::Iam);
        assert_eq!(c.brokers(), brokers());
    }

    #[test]
    fn iam_without_an_aws_region_fails_naming_it() {
        let err = KafkaConnection::new(brokers(), KafkaSecurity::Iam, None).err().unwrap();
        assert!(err.to_string().contains("AWS_REGION"));
    }

    /// Milliseconds from a fake clock's zero.
    const MIN: i64 = 60_000;

    #[test]
    fn a_session_is_refreshed_at_80_percent_of_its_life() {
        // An MSK IAM token: 15 minutes.
        let (opened, expires) = (0, 15 * MIN);
        assert!(!refresh_due(opened, expires, 0));
        assert!(!refresh_due(opened, expires, 12 * MIN - 1));
        assert!(refresh_due(opened, expires, 12 * MIN));
        assert!(refresh_due(opened, expires, 20 * MIN));
        // A session opened late in a cached token's life is short, and refreshed early.
        assert!(refresh_due(10 * MIN, 15 * MIN, 14 * MIN));
        assert!(!refresh_due(10 * MIN, 15 * MIN, 13 * MIN));
        // A token that had already expired: refresh at once.
        assert!(refresh_due(10 * MIN, 5 * MIN, 10 * MIN));
    }

    #[test]
    fn a_lease_follows_the_earliest_token_of_its_connections() {
        let lease = SessionLease::opened_at(0);
        assert!(!lease.refresh_due(i64::MAX), "no SASL: never refreshed");
        lease.record_expiry(15 * MIN);
        // A reconnect later in the client's life presented a token expiring sooner? Never
        // later than the first: the earliest expiry wins.
        lease.record_expiry(20 * MIN);
        lease.clone().record_expiry(14 * MIN);
        assert_eq!(lease.expires_at_ms(), Some(14 * MIN));
        assert!(!lease.refresh_due(11 * MIN));
        assert!(lease.refresh_due(14 * MIN * 80 / 100));
        assert!(!lease.expired(14 * MIN - 1));
        assert!(lease.expired(14 * MIN));
    }

    #[tokio::test]
    async fn a_short_lived_token_makes_the_lease_due_in_real_time() {
        let lease = SessionLease::opened_at(chrono::Utc::now().timestamp_millis());
        lease.record_expiry(lease.opened_at_ms() + 200);
        assert!(!lease.refresh_due(chrono::Utc::now().timestamp_millis()));
        tokio::time::sleep(Duration::from_millis(170)).await;
        assert!(lease.refresh_due(chrono::Utc::now().timestamp_millis()));
        assert!(!lease.expired(lease.opened_at_ms() + 199));
    }

    #[tokio::test]
    async fn iam_sessions_learn_their_expiry_from_the_token_they_present() {
        let c = KafkaConnection::new(brokers(), KafkaSecurity::Iam, Some(&aws())).unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let lease = SessionLease::opened_at(now);
        let Some(SaslConfig::Oauthbearer(credentials)) = c.sasl_config(&lease) else {
            panic!("MSK IAM must use OAUTHBEARER");
        };
        assert_eq!(lease.expires_at_ms(), None, "nothing connected yet");
        (credentials.callback)().await.unwrap();
        let expires = lease.expires_at_ms().expect("the token's expiry");
        assert!(refresh_due(now, expires, now + 12 * MIN + 1_000));
        assert!(!refresh_due(now, expires, now + 11 * MIN));
    }

    #[test]
    fn a_forced_session_lifetime_is_recorded_when_the_client_is_built() {
        let c = KafkaConnection::plaintext(brokers()).with_session_lifetime(Duration::from_secs(10));
        let (_, lease) = c.session(1_000);
        assert_eq!(lease.expires_at_ms(), Some(11_000));
        assert!(lease.refresh_due(9_000));
        let (_, plain) = KafkaConnection::plaintext(brokers()).session(1_000);
        assert_eq!(plain.expires_at_ms(), None);
    }
}
