//! One rustls setup for the process: which crypto provider, which root certificates.
//!
//! ring is the only crypto provider linked: rskafka's TLS requires it, and the AWS SDK,
//! whose default HTTPS client would link aws-lc-rs as a second one (about 2 MB more
//! bootstrap), gets a hyper/rustls client on ring from [`crate::aws_http`].
//! The process default is still set once, here, before any TLS client is built, so a
//! library calling `ClientConfig::builder()` (redis does, for rediss://) never has to
//! guess. The roots are Mozilla's (webpki-roots), compiled in, for Kafka and AWS alike:
//! Amazon's CAs are among them, and a Lambda image's CA bundle location does not matter.

use std::sync::Arc;

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

/// A client config trusting the Mozilla root set, for Kafka brokers and AWS endpoints.
pub fn client_config() -> Result<ClientConfig, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
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
