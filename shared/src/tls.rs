//! One rustls setup for the process: which crypto provider, which root certificates.
//!
//! ring is the only crypto provider linked: rskafka's TLS requires it, and the AWS SDK,
//! whose default HTTPS client would link aws-lc-rs as a second one (about 2 MB more
//! bootstrap), gets its own hyper/rustls client on ring from [`aws_http_client`]; every
//! SDK configuration in the workspace starts from [`aws_config_loader`] or sets it.
//! The process default is still set once, here, before any TLS client is built, so a
//! library calling `ClientConfig::builder()` (redis does, for rediss://) never has to
//! guess. Kafka roots are Mozilla's (webpki-roots), compiled in: Amazon's CAs are among
//! them, and a Lambda image's CA bundle location does not matter; the SDK client keeps
//! its own default (the system's roots), as before.

use std::sync::{Arc, LazyLock};

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_kafka::config::SharedHttpClient;
use aws_smithy_http_client::{
    tls::{rustls_provider::CryptoMode, Provider},
    Builder,
};
use rustls::{crypto::CryptoProvider, ClientConfig, RootCertStore};

/// The provider every TLS client of this process uses.
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes [`provider`] the process default; later calls (and other installers) are no-ops.
pub fn install_crypto_provider() {
    // Err only means a default is already installed, which is all we need.
    let _ = provider().install_default();
}

/// A client config trusting the Mozilla root set, for Kafka brokers.
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The HTTPS client of every AWS SDK call (discovery, @connections, SES, SNS): the
/// SDK's hyper/rustls client with ring. One per process: its connection pool is shared.
pub fn aws_http_client() -> SharedHttpClient {
    static CLIENT: LazyLock<SharedHttpClient> = LazyLock::new(|| {
        Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https()
    });
    CLIENT.clone()
}

/// `aws_config::defaults` (region and credentials from the environment) with
/// [`aws_http_client`]: the only way this workspace loads an AWS configuration.
pub fn aws_config_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(aws_http_client())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_client_config_builds_without_touching_the_process_default() {
        let config = client_config().unwrap();
        assert!(config.crypto_provider().cipher_suites.len() > 1);
    }

    #[test]
    fn installing_the_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}
