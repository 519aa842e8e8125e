//! Client certificates for tusk's own roles: PostgreSQL admits them from the network only with a
//! certificate the cluster's CA signed for that role (`hostssl ... cert`), never with a
//! password.
//!
//! The cluster's own CA (see [`super::tls`]) signs them: its key never leaves the operator's
//! namespace, so no tenant can mint one, and a certificate another cluster's CA signed is
//! refused, since each cluster trusts only its own CA. A brought server certificate
//! (`spec.tls.certificateSecret`) changes nothing here: PostgreSQL verifies clients against
//! tusk's CA, never against the CA the tenant brought.
//!
//! One role has a certificate: [`REPLICATION_ROLE`], which the backup Jobs' pg_basebackup
//! uses and replicas will. Its Secret, `<cluster>-replication-tls`, is mounted whole (key
//! included) only into the backup Jobs; the instance pods get only its `ca.crt`, as the CA
//! PostgreSQL verifies clients with ([`CLIENT_CA_FILE`]). The management role needs none: it is
//! admitted over the pod's Unix socket only, by peer authentication, and never from the
//! network.
//!
//! The certificate is renewed as the server certificate is: after
//! [`TlsSettings::renew_after`], when the CA changes, or when the role it names changes. A
//! renewed client certificate needs nothing reloaded; a changed CA reaches PostgreSQL through
//! the mounted `client-ca.crt`, which the instance reloads.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use tusk_api::PostgresCluster;
use tusk_api::conditions::reasons as condition_reasons;

use super::CONTROLLER;
use super::build::{self, REPLICATION_ROLE};
use super::tls::{self, ClusterCa, NAMES_ANNOTATION, NOT_AFTER_ANNOTATION, RENEW_AT_ANNOTATION};
use crate::config::TlsSettings;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::{self, reasons};
use crate::ssa;

/// The file, in the instance's TLS directory, holding the CA certificates PostgreSQL verifies
/// client certificates with (`ssl_ca_file`): the `ca.crt` of `<cluster>-replication-tls`.
pub const CLIENT_CA_FILE: &str = "client-ca.crt";

/// How soon a client certificate that could not be issued is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// The `kubernetes.io/tls` Secret holding the client certificate and key of the cluster's
/// replication role, and the cluster's CA certificates.
pub fn replication_secret(cluster: &str) -> String {
    format!("{cluster}-replication-tls")
}

/// The `<cluster>-replication-tls` Secret: the existing one when `ca` issued it for `role` and
/// it is not due for renewal at `now`, else a new certificate and key for `role` (its
/// CommonName, which PostgreSQL's `cert` method matches against the role connecting), usable
/// for client authentication only, valid for `settings.certificate_lifetime`.
#[allow(clippy::too_many_arguments)]
pub fn client_secret(
    namespace: &str,
    cluster: &str,
    owner: &OwnerReference,
    ca: &ClusterCa,
    role: &str,
    existing: Option<&Secret>,
    now: jiff::Timestamp,
    settings: &TlsSettings,
) -> Result<Secret> {
    if let Some(existing) =
        existing.filter(|secret| tls::still_good(secret, ca, role, now, settings.renew_after()))
    {
        return Ok(Secret {
            metadata: meta(cluster, owner, existing.annotations().clone()),
            type_: Some("kubernetes.io/tls".to_owned()),
            data: existing.data.clone(),
            ..Secret::default()
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, role);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client authentication only: the certificate cannot serve as a server's.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    tls::issued_secret(
        meta(cluster, owner, BTreeMap::new()),
        namespace,
        cluster,
        ca,
        params,
        "client",
        role.to_owned(),
        now,
        settings,
    )
}

/// The metadata of `<cluster>-replication-tls`, with those of `annotations` that say what its
/// certificate was issued for and until when.
fn meta(
    cluster: &str,
    owner: &OwnerReference,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    let kept = [NAMES_ANNOTATION, RENEW_AT_ANNOTATION, NOT_AFTER_ANNOTATION]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), annotations.get(key)?.clone())))
        .collect();
    tls::secret_meta(replication_secret(cluster), cluster, owner, kept)
}

/// What became of the client certificates in a reconcile.
pub struct ClientTls {
    /// Why the replication role's certificate is not as it should be (the reason of the
    /// `Degraded` condition, and its message), when it is not.
    pub problem: Option<(&'static str, String)>,
    /// When to look at the certificate again: at its renewal time, or soon after a failure.
    pub recheck_in: Duration,
}

/// Issues (or keeps) and applies the `<cluster>-replication-tls` Secret, before the
/// StatefulSet that mounts its CA. A Normal Event records a new certificate; when one cannot be
/// had, a Warning Event says why and the existing one is kept, and past its renewal time the
/// cluster is `Degraded`. `ca` is the cluster's CA when the server certificate's step already
/// holds it; else it is fetched (or made) here.
pub async fn reconcile(
    context: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    ca: Option<&ClusterCa>,
) -> Result<ClientTls> {
    let name = cluster.name_any();
    let owner = build::controller_owner(cluster)?;
    let secrets = Api::<Secret>::namespaced(context.client.clone(), namespace);
    let secret_name = replication_secret(&name);
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::Get {
            kind: "Secret",
            name: secret_name.clone(),
            source,
        })?
        .filter(tls::is_usable);
    let now = context.clock.now();
    let reference = cluster.object_ref(&());
    let issued = async {
        let ca = match ca {
            Some(ca) => ca.clone(),
            None => tls::ensure_ca(context, namespace, &name, &owner.uid, now).await?,
        };
        client_secret(
            namespace,
            &name,
            &owner,
            &ca,
            REPLICATION_ROLE,
            existing.as_ref(),
            now,
            &context.config.tls,
        )
    }
    .await;
    let secret = match issued {
        Ok(secret) => secret,
        Err(error) => {
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reasons::CERTIFICATE_FAILED,
                "IssueClientCertificate",
                error.to_string(),
            )
            .await;
            let Some(existing) = existing else {
                return Err(error);
            };
            let overdue = tls::renew_at(&existing).is_none_or(|at| at <= now.as_second());
            return Ok(ClientTls {
                problem: overdue.then(|| {
                    (
                        condition_reasons::CERTIFICATE_NOT_RENEWED,
                        format!(
                            "The client certificate of role {REPLICATION_ROLE} is due for \
                             renewal and cannot be renewed: {error}"
                        ),
                    )
                }),
                recheck_in: RETRY,
            });
        }
    };
    ssa::apply(&secrets, CONTROLLER, &secret).await?;
    if existing.as_ref().and_then(|old| old.data.as_ref()) != secret.data.as_ref() {
        let (reason, verb) = match existing {
            Some(_) => (reasons::CERTIFICATE_RENEWED, "Renewed"),
            None => (reasons::CERTIFICATE_ISSUED, "Issued"),
        };
        events::publish(
            &context.recorder,
            &reference,
            EventType::Normal,
            reason,
            "IssueClientCertificate",
            format!("{verb} the client certificate of role {REPLICATION_ROLE}"),
        )
        .await;
    }
    let recheck_in = tls::renew_at(&secret)
        .map(|at| Duration::from_secs(at.saturating_sub(now.as_second()).max(1) as u64))
        .unwrap_or(RETRY);
    Ok(ClientTls {
        problem: None,
        recheck_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::cluster::tls::{CA_CERT_KEY, TLS_CERT_KEY};
    use x509_parser::extensions::ParsedExtension;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "postgres.tusk.dev/v1".into(),
            kind: "PostgresCluster".into(),
            name: "elephant".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    fn settings() -> TlsSettings {
        TlsSettings {
            certificate_lifetime: Duration::from_secs(3000),
            ..TlsSettings::default()
        }
    }

    fn issue(ca: &ClusterCa, existing: Option<&Secret>, at: jiff::Timestamp) -> Secret {
        client_secret(
            "project-a",
            "elephant",
            &owner(),
            ca,
            REPLICATION_ROLE,
            existing,
            at,
            &settings(),
        )
        .unwrap()
    }

    fn value(secret: &Secret, key: &str) -> Vec<u8> {
        secret.data.as_ref().unwrap()[key].0.clone()
    }

    #[test]
    fn the_certificate_names_the_role_and_authenticates_clients_only() {
        let ca = tls::generate_ca("project-a", "elephant", now()).unwrap();
        let secret = issue(&ca, None, now());
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("elephant-replication-tls")
        );
        assert_eq!(value(&secret, CA_CERT_KEY), ca.trust_pem.as_bytes());
        let pem = value(&secret, TLS_CERT_KEY);
        let der = {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(&pem).unwrap()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let common_name = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(common_name.as_str().unwrap(), REPLICATION_ROLE);
        let usage = cert
            .extensions()
            .iter()
            .find_map(|extension| match extension.parsed_extension() {
                ParsedExtension::ExtendedKeyUsage(usage) => Some(usage.clone()),
                _ => None,
            })
            .unwrap();
        assert!(usage.client_auth && !usage.server_auth);
        assert_ne!(cert.issuer(), cert.subject(), "signed by the CA");
    }

    #[test]
    fn the_certificate_is_kept_until_its_renewal_time_or_a_new_ca() {
        let ca = tls::generate_ca("project-a", "elephant", now()).unwrap();
        let first = issue(&ca, None, now());
        let soon = now() + jiff::SignedDuration::from_secs(60);
        assert_eq!(issue(&ca, Some(&first), soon).data, first.data);
        // Two thirds of 3000 s later it is renewed.
        let due = now() + jiff::SignedDuration::from_secs(2001);
        assert_ne!(issue(&ca, Some(&first), due).data, first.data);
        let other = tls::generate_ca("project-a", "elephant", now()).unwrap();
        let renewed = issue(&other, Some(&first), soon);
        assert_ne!(renewed.data, first.data);
        assert_eq!(value(&renewed, CA_CERT_KEY), other.trust_pem.as_bytes());
    }
}
