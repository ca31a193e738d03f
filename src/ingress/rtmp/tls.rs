//! RTMPS: the TLS configuration of the second RTMP listener, loaded from PEM files.

use crate::config::ConfigError;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Loads the certificate chain and key; errors name the config key.
pub fn server_config(cert_path: &str, key_path: &str) -> Result<Arc<ServerConfig>, ConfigError> {
    if cert_path.is_empty() || key_path.is_empty() {
        return Err(ConfigError::invalid(
            "rtmp.tls_cert",
            "tls_cert and tls_key must both be set for RTMPS",
        ));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ConfigError::invalid("rtmp.tls_cert", format!("cannot read {cert_path}: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            "rtmp.tls_cert",
            format!("no certificate in {cert_path}"),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| ConfigError::invalid("rtmp.tls_key", format!("cannot read {key_path}: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("rtmp.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::invalid("rtmp.tls_key", format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(config))
}
