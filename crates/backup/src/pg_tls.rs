//! TLS for tusk's own connections to PostgreSQL: the server's certificate must chain to the
//! cluster's CA and name the host connected to, as libpq's `sslmode=verify-full` demands.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    /// The client certificate or its key cannot be used.
    #[error("cannot read the client certificate from {path}: {reason}")]
    ClientCertificate {
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
    verifying_connector_with_client(ca_file, None)
}

/// [`verifying_connector`], showing the server the client certificate in `client` (the
/// certificate's PEM file and its key's) when asked for one: how tusk's own roles log in.
pub fn verifying_connector_with_client(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<MakeRustlsConnect, PgTlsError> {
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
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let error = |path: &Path, reason: String| PgTlsError::ClientCertificate {
                path: path.display().to_string(),
                reason,
            };
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| error(cert_file, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(cert_file, e.to_string()))?;
            if chain.is_empty() {
                return Err(error(cert_file, "it holds no certificate".to_owned()));
            }
            // The error names the file only: a key's content never reaches a message.
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|_| error(key_file, "it holds no usable private key".to_owned()))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}
