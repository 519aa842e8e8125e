//! TLS for tusk's own connections to PostgreSQL: the server's certificate must chain to the
//! cluster's CA and name the host connected to, as libpq's `sslmode=verify-full` demands.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    /// The file cannot be read or holds no certificate.
    #[error("cannot read a CA certificate from {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// A tokio-postgres TLS connector that trusts only the certificates in `ca_file` (PEM) and
/// checks the server's name against the host connected to. Use it with
/// `SslMode::Require`: the connection then fails unless the server proves who it is.
pub fn verifying_connector(ca_file: &Path) -> Result<MakeRustlsConnect, PgTlsError> {
    let ca_error = |reason: String| PgTlsError::CaFile {
        path: ca_file.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(ca_file).map_err(|error| ca_error(error.to_string()))?
    {
        let certificate = certificate.map_err(|error| ca_error(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| ca_error(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("it holds no certificate".to_owned()));
    }
    // Several crates in the build enable a rustls backend; this one names its own.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
