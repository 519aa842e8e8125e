//! Each cluster's certificates: its own CA, and the server certificate PostgreSQL serves.
//!
//! One CA per cluster, so that a leaked CA key (or a certificate it signed) impersonates one
//! database only. The tenant can read every Secret in its namespace, so the CA's key is kept in
//! the operator's namespace ([`crate::config::TlsSettings::ca_namespace`]), in
//! `tusk-ca-<cluster uid>`: were it in the tenant's namespace, the tenant could mint
//! certificates for any name. The server key must reach the pod, so `<cluster>-tls` in the
//! tenant's namespace holds it (the tenant can read it: it lets them impersonate their own
//! database only, to clients that trust that cluster's CA alone).
//!
//! The server certificate names every way a client reaches the database: the `-rw` Service
//! (short, namespaced, `.svc` and `.svc.<cluster domain>`), each instance pod through the
//! StatefulSet's Service, the tunnel's external host, and the tunnel Service in every customer's
//! cluster the database is linked to (`remote_cluster::build::tunnel_server_names`, added by
//! the cluster controller, so a link or an unlink reissues it). It is issued again when a name
//! changes, when the CA changes, or when its renewal time has come: after
//! [`TlsSettings::renew_at_fraction`] of [`TlsSettings::certificate_lifetime`] (two thirds of
//! a year by default). The instance reloads PostgreSQL when the mounted files change, so a
//! renewal needs no restart and drops no connection.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use tusk_api::{labels as api_labels, names};

use crate::config::TlsSettings;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::labels::{self, COMPONENT_POSTGRES};

/// The key of a CA Secret holding the CA's certificate, as in the `<cluster>-tls` Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The key of a CA Secret holding the CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// The key of a CA Secret holding, during a CA rotation, the next CA's certificate: published
/// to clients before the next CA signs anything.
pub const NEXT_CA_CERT_KEY: &str = "next-ca.crt";
/// The key of a CA Secret holding, during a CA rotation, the next CA's private key.
pub const NEXT_CA_KEY_KEY: &str = "next-ca.key";
/// The key of a CA Secret holding, after a CA rotation, the previous CA's certificate: still
/// published to clients for a while after it stopped signing.
pub const PREVIOUS_CA_CERT_KEY: &str = "previous-ca.crt";
/// The annotation a platform team sets on a CA Secret (any value) to rotate that CA.
pub const ROTATE_CA_ANNOTATION: &str = "postgres.tusk.dev/rotate-ca";
/// The annotation on a CA Secret recording when its next CA was published (Unix seconds).
pub const NEXT_CA_SINCE_ANNOTATION: &str = "postgres.tusk.dev/next-ca-since";
/// The annotation on a CA Secret recording when its previous CA stopped signing (Unix
/// seconds).
pub const PREVIOUS_CA_SINCE_ANNOTATION: &str = "postgres.tusk.dev/previous-ca-since";
/// The `kubernetes.io/tls` Secret's certificate key.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The `kubernetes.io/tls` Secret's private key key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// The annotation recording the names a server certificate was issued for.
pub const NAMES_ANNOTATION: &str = "postgres.tusk.dev/tls-names";
/// The annotation recording when a server certificate is to be renewed (Unix seconds).
pub const RENEW_AT_ANNOTATION: &str = "postgres.tusk.dev/tls-renew-at";
/// The annotation recording when a server certificate expires (Unix seconds).
pub const NOT_AFTER_ANNOTATION: &str = "postgres.tusk.dev/tls-not-after";
/// The annotations on a CA Secret naming the cluster it belongs to, for people.
pub const CA_CLUSTER_ANNOTATION: &str = "postgres.tusk.dev/cluster";
/// The component label of a CA Secret.
pub const COMPONENT_CA: &str = "ca";

/// How long a CA is valid: it outlives many server certificates.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before they are issued, for clocks that lag.
pub(super) const BACKDATE: Duration = Duration::from_secs(3600);
/// A CA with less than this left is rotated without being asked.
const CA_ROTATE_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A cluster's CA: certificate and key, PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq)]
pub struct ClusterCa {
    /// The certificate of the CA that signs.
    pub cert_pem: String,
    pub(super) key_pem: String,
    /// Every CA certificate clients are to trust (PEM, one after the other): the signing one,
    /// and during a rotation the next or the previous one too.
    pub trust_pem: String,
    /// When the CA rotation under way takes its next step (Unix seconds), if one is.
    pub next_step_at: Option<i64>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("trust_pem", &self.trust_pem)
            .field("next_step_at", &self.next_step_at)
            .finish()
    }
}

/// The name of the Secret holding the CA of the cluster with `uid`, in the CA namespace. The
/// uid makes it unique across namespaces and incarnations.
pub fn ca_secret_name(uid: &str) -> String {
    format!("tusk-ca-{uid}")
}

pub(super) fn tls_error(what: &str, error: rcgen::Error) -> Error {
    Error::Tls(format!("{what}: {error}"))
}

/// The CA's certificate parameters. A server certificate's issuer is taken from them, so they
/// depend only on the cluster's identity, never on the time.
pub(super) fn ca_params(namespace: &str, cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "tusk");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("tusk CA {namespace}/{cluster}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub(super) fn to_time(now: jiff::Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(now.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Makes a new CA for `cluster` in `namespace` (ECDSA P-256).
pub fn generate_ca(namespace: &str, cluster: &str, now: jiff::Timestamp) -> Result<ClusterCa> {
    let key = KeyPair::generate().map_err(|e| tls_error("cannot generate a CA key", e))?;
    let mut params = ca_params(namespace, cluster);
    params.not_before = to_time(now) - BACKDATE;
    params.not_after = to_time(now) + CA_LIFETIME;
    let cert = params
        .self_signed(&key)
        .map_err(|e| tls_error("cannot make the CA certificate", e))?;
    Ok(ClusterCa {
        trust_pem: cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        next_step_at: None,
    })
}

/// The CA of `cluster` (namespace, name, uid), from its Secret in the CA namespace
/// (`tls.caNamespace`); made and stored there on first use. A rotation under way (see
/// [`advance_rotation`]) is taken a step further when its time has come, each step
/// `tls.caOverlap` after the one before.
pub async fn ensure_ca(
    context: &Context,
    namespace: &str,
    cluster: &str,
    uid: &str,
    now: jiff::Timestamp,
) -> Result<ClusterCa> {
    let ca_namespace = context.config.tls.ca_namespace.as_str();
    let overlap = context.config.tls.ca_overlap;
    let api: Api<Secret> = Api::namespaced(context.client.clone(), ca_namespace);
    let name = ca_secret_name(uid);
    let get_error = |source| Error::Get {
        kind: "Secret",
        name: format!("{ca_namespace}/{name}"),
        source,
    };
    if let Some(existing) = api.get_opt(&name).await.map_err(get_error)? {
        let Some(advanced) = advance_rotation(&existing, namespace, cluster, now, overlap)? else {
            return ca_from_secret(&existing, &name, overlap);
        };
        // The resourceVersion makes this a compare-and-swap: of two reconciles, one wins.
        return match api.replace(&name, &PostParams::default(), &advanced).await {
            Ok(stored) => {
                tracing::info!(%namespace, %cluster, secret = %name, "took the rotation of the cluster's CA a step further");
                ca_from_secret(&stored, &name, overlap)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api.get(&name).await.map_err(get_error)?;
                ca_from_secret(&existing, &name, overlap)
            }
            Err(source) => Err(Error::Patch {
                kind: "Secret",
                name: format!("{ca_namespace}/{name}"),
                source,
            }),
        };
    }
    let ca = generate_ca(namespace, cluster, now)?;
    // No cluster label: the cluster controller's watches must not take it for a child.
    let labels = BTreeMap::from([
        (
            api_labels::MANAGED_BY.to_owned(),
            api_labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (api_labels::NAME.to_owned(), "postgres".to_owned()),
        (api_labels::COMPONENT.to_owned(), COMPONENT_CA.to_owned()),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ca_namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                CA_CLUSTER_ANNOTATION.to_owned(),
                format!("{namespace}/{cluster}"),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
            (
                CA_KEY_KEY.to_owned(),
                ByteString(ca.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(%namespace, %cluster, secret = %name, "created the cluster's CA");
            Ok(ca)
        }
        // Another reconcile made it first: use that one.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&name).await.map_err(get_error)?;
            ca_from_secret(&existing, &name, overlap)
        }
        Err(source) => Err(Error::Create {
            kind: "Secret",
            name: format!("{ca_namespace}/{name}"),
            source,
        }),
    }
}

/// Deletes the CA of the cluster with `uid`, when the cluster goes; a CA already gone is fine.
pub async fn delete_ca(client: &kube::Client, ca_namespace: &str, uid: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ca_namespace);
    let name = ca_secret_name(uid);
    match api.delete(&name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Secret",
            name: format!("{ca_namespace}/{name}"),
            source,
        }),
    }
}

/// A CA rotation, one step at a time, each `overlap` after the one before, so that a client
/// that takes the published `ca.crt` at least once per `overlap` always trusts the CA that
/// signs the certificate it is shown:
///
/// 1. asked for (the [`ROTATE_CA_ANNOTATION`] on the CA Secret), or with less than a year of
///    the CA's life left: a next CA is made and published next to the current one
///    (`next-ca.crt`), which still signs;
/// 2. `overlap` later, the next CA becomes the one that signs (`ca.crt`, `ca.key`), server
///    certificates are issued again by it, and the old one stays published
///    (`previous-ca.crt`);
/// 3. `overlap` later, the old CA is dropped.
///
/// Returns the CA Secret as it must be written, or `None` when no step is due.
fn advance_rotation(
    secret: &Secret,
    namespace: &str,
    cluster: &str,
    now: jiff::Timestamp,
    overlap: Duration,
) -> Result<Option<Secret>> {
    let mut data = secret.data.clone().unwrap_or_default();
    let mut annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let has = |data: &BTreeMap<String, ByteString>, key: &str| {
        data.get(key).is_some_and(|value| !value.0.is_empty())
    };
    let now_s = now.as_second();
    // A step whose start is not recorded is due at once.
    let due = |annotations: &BTreeMap<String, String>, key: &str| {
        annotations
            .get(key)
            .and_then(|value| value.parse::<i64>().ok())
            .is_none_or(|since| now_s >= since + overlap.as_secs() as i64)
    };
    if has(&data, NEXT_CA_CERT_KEY) && has(&data, NEXT_CA_KEY_KEY) {
        if !due(&annotations, NEXT_CA_SINCE_ANNOTATION) {
            return Ok(None);
        }
        let (Some(next_cert), Some(next_key)) =
            (data.remove(NEXT_CA_CERT_KEY), data.remove(NEXT_CA_KEY_KEY))
        else {
            return Ok(None);
        };
        if let Some(current) = data.insert(CA_CERT_KEY.to_owned(), next_cert) {
            data.insert(PREVIOUS_CA_CERT_KEY.to_owned(), current);
        }
        data.insert(CA_KEY_KEY.to_owned(), next_key);
        annotations.remove(NEXT_CA_SINCE_ANNOTATION);
        annotations.insert(PREVIOUS_CA_SINCE_ANNOTATION.to_owned(), now_s.to_string());
    } else if has(&data, PREVIOUS_CA_CERT_KEY) {
        if !due(&annotations, PREVIOUS_CA_SINCE_ANNOTATION) {
            return Ok(None);
        }
        data.remove(PREVIOUS_CA_CERT_KEY);
        annotations.remove(PREVIOUS_CA_SINCE_ANNOTATION);
    } else if annotations.contains_key(ROTATE_CA_ANNOTATION)
        || data
            .get(CA_CERT_KEY)
            .and_then(|cert| certificate_not_after(&cert.0))
            .is_some_and(|not_after| not_after - now_s < CA_ROTATE_BEFORE.as_secs() as i64)
    {
        let next = generate_ca(namespace, cluster, now)?;
        data.insert(
            NEXT_CA_CERT_KEY.to_owned(),
            ByteString(next.cert_pem.into_bytes()),
        );
        data.insert(
            NEXT_CA_KEY_KEY.to_owned(),
            ByteString(next.key_pem.into_bytes()),
        );
        annotations.remove(ROTATE_CA_ANNOTATION);
        annotations.insert(NEXT_CA_SINCE_ANNOTATION.to_owned(), now_s.to_string());
    } else {
        return Ok(None);
    }
    Ok(Some(Secret {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..secret.metadata.clone()
        },
        data: Some(data),
        ..secret.clone()
    }))
}

/// When the first certificate of `pem` expires (Unix seconds), if it can be read.
fn certificate_not_after(pem: &[u8]) -> Option<i64> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(certificate.validity().not_after.timestamp())
}

fn ca_from_secret(secret: &Secret, name: &str, overlap: Duration) -> Result<ClusterCa> {
    let optional = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .filter(|value| !value.is_empty())
    };
    let value = |key: &str| {
        optional(key).ok_or_else(|| Error::Tls(format!("the CA Secret {name} has no usable {key}")))
    };
    let cert_pem = value(CA_CERT_KEY)?;
    let mut trust_pem = String::new();
    for pem in [
        Some(cert_pem.clone()),
        optional(NEXT_CA_CERT_KEY),
        optional(PREVIOUS_CA_CERT_KEY),
    ]
    .into_iter()
    .flatten()
    {
        trust_pem.push_str(pem.trim_end());
        trust_pem.push('\n');
    }
    let since = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()?
            .get(key)?
            .parse::<i64>()
            .ok()
    };
    let step = |key: &str| since(key).map(|since| since + overlap.as_secs() as i64);
    let next_step_at = if optional(NEXT_CA_CERT_KEY).is_some() {
        step(NEXT_CA_SINCE_ANNOTATION)
    } else if optional(PREVIOUS_CA_CERT_KEY).is_some() {
        step(PREVIOUS_CA_SINCE_ANNOTATION)
    } else {
        None
    };
    Ok(ClusterCa {
        cert_pem,
        key_pem: value(CA_KEY_KEY)?,
        trust_pem,
        next_step_at,
    })
}

/// Every name a client may reach the cluster's database by: the `-rw` Service in every form
/// the cluster's DNS answers, the instance pods through the StatefulSet's Service (for
/// replicas), and `external_host` (the tunnel's, a name or an address) when given.
pub fn server_names(
    namespace: &str,
    cluster: &str,
    cluster_domain: &str,
    external_host: Option<&str>,
) -> Vec<String> {
    let service = names::read_write_service(cluster);
    let mut all = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
        // `<pod>.<StatefulSet's Service>.<namespace>.svc...`: one name per instance.
        format!("*.{service}.{namespace}.svc"),
        format!("*.{service}.{namespace}.svc.{cluster_domain}"),
    ];
    if let Some(host) = external_host.filter(|host| !host.is_empty())
        && !all.iter().any(|name| name == host)
    {
        all.push(host.to_owned());
    }
    all
}

/// The `<cluster>-tls` Secret of `cluster` in `namespace`: the existing one when it was issued
/// by `ca` for exactly `server_names` and is not due for renewal at `now`, else a new
/// certificate and key, valid for `settings.certificate_lifetime` and due for renewal after
/// [`TlsSettings::renew_after`].
#[allow(clippy::too_many_arguments)]
pub fn server_secret(
    namespace: &str,
    cluster: &str,
    owner: &OwnerReference,
    ca: &ClusterCa,
    server_names: &[String],
    existing: Option<&Secret>,
    now: jiff::Timestamp,
    settings: &TlsSettings,
) -> Result<Secret> {
    let joined = server_names.join(",");
    if let Some(existing) =
        existing.filter(|secret| still_good(secret, ca, &joined, now, settings.renew_after()))
    {
        return Ok(keep(cluster, owner, existing));
    }
    let mut params = CertificateParams::new(server_names.to_vec())
        .map_err(|e| tls_error("a server name is not usable", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, names::read_write_service(cluster));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issued_secret(
        secret_meta(names::tls_secret(cluster), cluster, owner, BTreeMap::new()),
        namespace,
        cluster,
        ca,
        params,
        "server",
        joined,
        now,
        settings,
    )
}

/// The `kubernetes.io/tls` Secret `metadata` describes, holding a new key, the certificate
/// `params` describe for it, signed by `ca` (the CA of `cluster` in `namespace`), and `ca`'s
/// trusted certificates. The certificate is valid from just before `now` for
/// `settings.certificate_lifetime`; the Secret's annotations say what it was issued for
/// (`issued_for`, what [`still_good`] compares), when it is due for renewal and when it expires.
/// `role` says which certificate it is ("server", "client") in errors.
#[allow(clippy::too_many_arguments)]
pub(super) fn issued_secret(
    mut metadata: ObjectMeta,
    namespace: &str,
    cluster: &str,
    ca: &ClusterCa,
    mut params: CertificateParams,
    role: &str,
    issued_for: String,
    now: jiff::Timestamp,
    settings: &TlsSettings,
) -> Result<Secret> {
    let ca_key =
        KeyPair::from_pem(&ca.key_pem).map_err(|e| tls_error("cannot read the CA key", e))?;
    // The CA Secret is named after the cluster's uid, so it was made for this very namespace
    // and name: its subject, and so the issuer of what it signs, is `ca_params`'.
    let issuer = Issuer::new(ca_params(namespace, cluster), ca_key);
    let key =
        KeyPair::generate().map_err(|e| tls_error(&format!("cannot generate a {role} key"), e))?;
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(now) - BACKDATE;
    params.not_after = to_time(now) + settings.certificate_lifetime;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_error(&format!("cannot sign the {role} certificate"), e))?;
    let renew_at = now.as_second() + settings.renew_after().as_secs() as i64;
    let not_after = now.as_second() + settings.certificate_lifetime.as_secs() as i64;
    metadata.annotations = Some(BTreeMap::from([
        (NAMES_ANNOTATION.to_owned(), issued_for),
        (RENEW_AT_ANNOTATION.to_owned(), renew_at.to_string()),
        (NOT_AFTER_ANNOTATION.to_owned(), not_after.to_string()),
    ]));
    Ok(Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (TLS_CERT_KEY.to_owned(), ByteString(cert.pem().into_bytes())),
            (
                TLS_KEY_KEY.to_owned(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.trust_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    })
}

/// Whether `existing` is a certificate from `ca` for `names` that need not be renewed at
/// `now`. A certificate whose renewal time lies beyond `renew_after` from now was issued under
/// a longer lifetime than the one configured, and is renewed too.
pub(super) fn still_good(
    secret: &Secret,
    ca: &ClusterCa,
    names: &str,
    now: jiff::Timestamp,
    renew_after: Duration,
) -> bool {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let now = now.as_second();
    annotations.get(NAMES_ANNOTATION).map(String::as_str) == Some(names)
        && renew_at(secret).is_some_and(|renew_at| {
            now < renew_at && renew_at <= now + renew_after.as_secs() as i64
        })
        && data.get(CA_CERT_KEY).map(|value| value.0.as_slice()) == Some(ca.trust_pem.as_bytes())
        && is_usable(secret)
}

/// Whether a `<cluster>-tls` Secret holds a certificate and a key PostgreSQL can serve with.
pub fn is_usable(secret: &Secret) -> bool {
    let has = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .is_some_and(|value| !value.0.is_empty())
    };
    has(TLS_CERT_KEY) && has(TLS_KEY_KEY)
}

fn annotation_seconds(secret: &Secret, key: &str) -> Option<i64> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// When the certificate in a `<cluster>-tls` Secret is due for renewal (Unix seconds).
pub fn renew_at(secret: &Secret) -> Option<i64> {
    annotation_seconds(secret, RENEW_AT_ANNOTATION)
}

/// When the certificate in a `<cluster>-tls` Secret expires (Unix seconds).
pub fn not_after(secret: &Secret) -> Option<i64> {
    annotation_seconds(secret, NOT_AFTER_ANNOTATION)
}

/// The `<cluster>-tls` Secret as it is, with tusk's metadata: what is applied while a
/// certificate is good, or while a new one cannot be had.
pub fn keep(cluster: &str, owner: &OwnerReference, existing: &Secret) -> Secret {
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let kept = [
        NAMES_ANNOTATION,
        RENEW_AT_ANNOTATION,
        NOT_AFTER_ANNOTATION,
        BROUGHT_FROM_ANNOTATION,
    ]
    .into_iter()
    .filter_map(|key| Some((key.to_owned(), annotations.get(key)?.clone())))
    .collect();
    Secret {
        metadata: secret_meta(names::tls_secret(cluster), cluster, owner, kept),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: existing.data.clone(),
        ..Secret::default()
    }
}

/// The metadata of the Secret `name` of `cluster`'s certificates, owned by the cluster.
pub(super) fn secret_meta(
    name: String,
    cluster: &str,
    owner: &OwnerReference,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(labels::for_cluster(cluster, COMPONENT_POSTGRES)),
        annotations: Some(annotations),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The largest value of a brought Secret (`tls.crt`, `tls.key`, `ca.crt`) the operator reads: a
/// certificate chain is a few KiB, and the Secret is tenant input.
pub const MAX_BROUGHT_VALUE: usize = 64 * 1024;
/// The annotation on `<cluster>-tls` naming the Secret its certificate was brought in.
pub const BROUGHT_FROM_ANNOTATION: &str = "postgres.tusk.dev/tls-secret";

/// The `<cluster>-tls` Secret serving the certificate `brought` holds: `brought` is the
/// Secret named in `spec.tls.certificateSecret`, in the cluster's own namespace, written by the
/// tenant (or its cert-manager). Everything in it is attacker input, so it is served only when
/// it is a `kubernetes.io/tls` Secret tusk does not manage itself, every value is at most
/// [`MAX_BROUGHT_VALUE`] bytes, `tls.key` is the key of the certificate in `tls.crt`, and that
/// certificate, with any intermediates after it, verifies against `ca.crt` now for the name
/// tusk's own connections use, `<cluster>-rw.<namespace>.svc`. Otherwise the error says what
/// is wrong, never quoting a value.
pub fn brought_secret(
    namespace: &str,
    cluster: &str,
    owner: &OwnerReference,
    brought: &Secret,
    now: jiff::Timestamp,
    settings: &TlsSettings,
) -> std::result::Result<Secret, String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

    let name = brought.metadata.name.clone().unwrap_or_default();
    let what = format!("Secret {name} (spec.tls.certificateSecret)");
    let type_ = brought.type_.as_deref().unwrap_or("Opaque");
    if type_ != "kubernetes.io/tls" {
        return Err(format!("{what} is of type {type_}, not kubernetes.io/tls"));
    }
    let managed = brought
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(api_labels::MANAGED_BY))
        .is_some_and(|value| value == api_labels::MANAGED_BY_VALUE);
    if managed {
        return Err(format!(
            "{what} is one tusk manages; name a Secret of your own"
        ));
    }
    let value = |key: &str| -> std::result::Result<&[u8], String> {
        let value = brought
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|value| value.0.as_slice())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| format!("{what} has no {key}"))?;
        if value.len() > MAX_BROUGHT_VALUE {
            return Err(format!(
                "{key} of {what} is larger than {} KiB",
                MAX_BROUGHT_VALUE / 1024
            ));
        }
        Ok(value)
    };
    let (cert_pem, key_pem, ca_pem) = (
        value(TLS_CERT_KEY)?,
        value(TLS_KEY_KEY)?,
        value(CA_CERT_KEY)?,
    );
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| format!("{TLS_CERT_KEY} of {what} is not a PEM certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| format!("{TLS_KEY_KEY} of {what} is not an unencrypted PEM private key"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        format!("{TLS_KEY_KEY} of {what} is not an RSA, ECDSA or Ed25519 private key")
    })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
        .keys_match()
        .map_err(|_| {
            format!("{TLS_KEY_KEY} of {what} is not the key of the certificate in {TLS_CERT_KEY}")
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|_| format!("{CA_CERT_KEY} of {what} is not PEM certificates"))?;
        roots
            .add(ca)
            .map_err(|error| format!("{CA_CERT_KEY} of {what} cannot be used: {error}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{CA_CERT_KEY} of {what} holds no certificate"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|error| format!("{CA_CERT_KEY} of {what} cannot be used: {error}"))?;
    let service = format!("{}.{namespace}.svc", names::read_write_service(cluster));
    let server_name = ServerName::try_from(service.clone())
        .map_err(|_| format!("{service} is not a DNS name"))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(now.as_second().max(0) as u64));
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], at)
        .map_err(|error| {
            format!(
                "the certificate in {TLS_CERT_KEY} of {what} does not verify against its \
                 {CA_CERT_KEY} for {service}: {error}"
            )
        })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|_| format!("{TLS_CERT_KEY} of {what} is not a certificate tusk can read"))?;
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let renew_at =
        not_before + ((not_after - not_before) as f64 * settings.renew_at_fraction) as i64;
    let annotations = BTreeMap::from([
        (BROUGHT_FROM_ANNOTATION.to_owned(), name),
        (RENEW_AT_ANNOTATION.to_owned(), renew_at.to_string()),
        (NOT_AFTER_ANNOTATION.to_owned(), not_after.to_string()),
    ]);
    Ok(Secret {
        metadata: secret_meta(names::tls_secret(cluster), cluster, owner, annotations),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (TLS_CERT_KEY.to_owned(), ByteString(cert_pem.to_vec())),
            (TLS_KEY_KEY.to_owned(), ByteString(key_pem.to_vec())),
            (CA_CERT_KEY.to_owned(), ByteString(ca_pem.to_vec())),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn names() -> Vec<String> {
        server_names("shop", "elephant", "cluster.local", Some("10.0.0.7"))
    }

    fn issue(ca: &ClusterCa, existing: Option<&Secret>, at: jiff::Timestamp) -> Secret {
        server_secret(
            "shop",
            "elephant",
            &owner(),
            ca,
            &names(),
            existing,
            at,
            &TlsSettings::default(),
        )
        .unwrap()
    }

    fn value(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn the_certificate_names_every_way_in() {
        assert_eq!(
            names(),
            [
                "elephant-rw",
                "elephant-rw.shop",
                "elephant-rw.shop.svc",
                "elephant-rw.shop.svc.cluster.local",
                "*.elephant-rw.shop.svc",
                "*.elephant-rw.shop.svc.cluster.local",
                "10.0.0.7"
            ]
        );
        assert_eq!(
            server_names("shop", "elephant", "example.org", None).len(),
            6
        );
    }

    #[test]
    fn the_server_secret_holds_no_ca_key_and_is_kept_until_due() {
        let ca = generate_ca("shop", "elephant", now()).unwrap();
        let first = issue(&ca, None, now());
        assert_eq!(first.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(first.metadata.name.as_deref(), Some("elephant-tls"));
        assert_eq!(value(&first, CA_CERT_KEY), ca.cert_pem);
        assert!(value(&first, TLS_KEY_KEY).contains("PRIVATE KEY"));
        let serialized = serde_json::to_string(&first).unwrap();
        assert!(!serialized.contains(ca.key_pem.lines().nth(1).unwrap()));
        assert!(!format!("{ca:?}").contains(ca.key_pem.lines().nth(1).unwrap()));

        // Kept while good.
        let later = now()
            .checked_add(jiff::SignedDuration::from_hours(24))
            .unwrap();
        assert_eq!(issue(&ca, Some(&first), later).data, first.data);
        // New names, a new CA, or two thirds of the lifetime: issued again.
        let other_names = server_names("shop", "elephant", "cluster.local", None);
        let renamed = server_secret(
            "shop",
            "elephant",
            &owner(),
            &ca,
            &other_names,
            Some(&first),
            later,
            &TlsSettings::default(),
        )
        .unwrap();
        assert_ne!(renamed.data, first.data);
        let other_ca = generate_ca("shop", "elephant", now()).unwrap();
        assert_ne!(issue(&other_ca, Some(&first), later).data, first.data);
        let due = now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 244))
            .unwrap();
        assert_ne!(issue(&ca, Some(&first), due).data, first.data);
    }

    /// A customer's CA and a certificate it issued for `names`, valid from `from` for `days`.
    fn customer_certificate(
        names: &[&str],
        from: jiff::Timestamp,
        days: i64,
    ) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "customer CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.not_before = to_time(from);
        params.not_after = to_time(from) + time::Duration::days(days);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), ca_cert.pem())
    }

    fn tls_secret(type_: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("own-cert".into()),
                ..ObjectMeta::default()
            },
            type_: Some(type_.into()),
            data: Some(
                data.iter()
                    .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn bring(secret: &Secret) -> std::result::Result<Secret, String> {
        brought_secret(
            "shop",
            "elephant",
            &owner(),
            secret,
            now(),
            &TlsSettings::default(),
        )
    }

    #[test]
    fn a_brought_certificate_is_served_only_when_it_holds_together() {
        let issued = now()
            .checked_sub(jiff::SignedDuration::from_hours(24 * 30))
            .unwrap();
        let (cert, key, ca) = customer_certificate(&["elephant-rw.shop.svc"], issued, 90);
        let good = tls_secret(
            "kubernetes.io/tls",
            &[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca)],
        );
        let served = bring(&good).unwrap();
        assert_eq!(served.metadata.name.as_deref(), Some("elephant-tls"));
        assert_eq!(served.data, good.data);
        // Renewed at two thirds of its 90 days, expiring at their end.
        assert_eq!(renew_at(&served), Some(issued.as_second() + 60 * 24 * 3600));
        assert_eq!(
            not_after(&served),
            Some(issued.as_second() + 90 * 24 * 3600)
        );

        let (other_cert, other_key, other_ca) =
            customer_certificate(&["elephant-rw.shop.svc"], issued, 90);
        let (elsewhere, elsewhere_key, elsewhere_ca) =
            customer_certificate(&["db.example.org"], issued, 90);
        let (expired, expired_key, expired_ca) = customer_certificate(
            &["elephant-rw.shop.svc"],
            now()
                .checked_sub(jiff::SignedDuration::from_hours(24 * 100))
                .unwrap(),
            90,
        );
        let huge = format!("{cert}{}", "#".repeat(MAX_BROUGHT_VALUE));
        let mut managed = good.clone();
        managed.metadata.labels = Some(BTreeMap::from([(
            api_labels::MANAGED_BY.to_owned(),
            api_labels::MANAGED_BY_VALUE.to_owned(),
        )]));
        let refusals = [
            (
                tls_secret(
                    "Opaque",
                    &[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca)],
                ),
                "is of type Opaque, not kubernetes.io/tls",
            ),
            (managed, "is one tusk manages"),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[("tls.crt", &cert), ("tls.key", &key)],
                ),
                "has no ca.crt",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[("tls.crt", &huge), ("tls.key", &key), ("ca.crt", &ca)],
                ),
                "tls.crt of Secret own-cert (spec.tls.certificateSecret) is larger than 64 KiB",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[("tls.crt", &cert), ("tls.key", &other_key), ("ca.crt", &ca)],
                ),
                "is not the key of the certificate in tls.crt",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[
                        ("tls.crt", &cert),
                        ("tls.key", "not a key"),
                        ("ca.crt", &ca),
                    ],
                ),
                "is not an unencrypted PEM private key",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[
                        ("tls.crt", &other_cert),
                        ("tls.key", &other_key),
                        ("ca.crt", &ca),
                    ],
                ),
                "does not verify against its ca.crt for elephant-rw.shop.svc",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[
                        ("tls.crt", &elsewhere),
                        ("tls.key", &elsewhere_key),
                        ("ca.crt", &elsewhere_ca),
                    ],
                ),
                "does not verify against its ca.crt for elephant-rw.shop.svc",
            ),
            (
                tls_secret(
                    "kubernetes.io/tls",
                    &[
                        ("tls.crt", &expired),
                        ("tls.key", &expired_key),
                        ("ca.crt", &expired_ca),
                    ],
                ),
                "does not verify against its ca.crt for elephant-rw.shop.svc",
            ),
        ];
        for (secret, expected) in refusals {
            let error = bring(&secret).unwrap_err();
            assert!(error.contains(expected), "{error}");
            for value in [&key, &other_key] {
                assert!(!error.contains(value.lines().nth(1).unwrap()), "{error}");
            }
        }
        let _ = other_ca;
    }

    #[test]
    fn the_configured_lifetime_and_fraction_set_expiry_and_renewal() {
        let settings = TlsSettings {
            certificate_lifetime: Duration::from_secs(30),
            renew_at_fraction: 0.5,
            ..TlsSettings::default()
        };
        let ca = generate_ca("shop", "elephant", now()).unwrap();
        let issue_at = |existing: Option<&Secret>, at: jiff::Timestamp, settings: &TlsSettings| {
            server_secret(
                "shop",
                "elephant",
                &owner(),
                &ca,
                &names(),
                existing,
                at,
                settings,
            )
            .unwrap()
        };
        let first = issue_at(None, now(), &settings);
        assert_eq!(renew_at(&first), Some(now().as_second() + 15));
        assert_eq!(not_after(&first), Some(now().as_second() + 30));
        let at = |seconds: i64| {
            now()
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap()
        };
        assert_eq!(issue_at(Some(&first), at(14), &settings).data, first.data);
        let renewed = issue_at(Some(&first), at(15), &settings);
        assert_ne!(renewed.data, first.data);
        assert_eq!(renew_at(&renewed), Some(at(15).as_second() + 15));
        // A certificate issued under a year's lifetime is renewed once the lifetime is
        // shortened.
        let yearly = issue(&ca, None, now());
        assert_ne!(issue_at(Some(&yearly), at(1), &settings).data, yearly.data);
    }

    #[test]
    fn a_ca_rotation_publishes_then_switches_then_drops() {
        let overlap = Duration::from_secs(60);
        let at = |seconds: i64| {
            now()
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap()
        };
        let old = generate_ca("shop", "elephant", now()).unwrap();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("tusk-ca-uid-1".into()),
                annotations: Some(BTreeMap::from([(
                    ROTATE_CA_ANNOTATION.to_owned(),
                    "now".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (
                    CA_CERT_KEY.to_owned(),
                    ByteString(old.cert_pem.clone().into_bytes()),
                ),
                (
                    CA_KEY_KEY.to_owned(),
                    ByteString(old.key_pem.clone().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let step = |secret: &Secret, seconds: i64| {
            advance_rotation(secret, "shop", "elephant", at(seconds), overlap).unwrap()
        };
        let ca = |secret: &Secret| ca_from_secret(secret, "tusk-ca-uid-1", overlap).unwrap();

        // 1: published next to the old one, which still signs.
        let published = step(&secret, 0).expect("the rotation starts");
        let first = ca(&published);
        assert_eq!(first.cert_pem, old.cert_pem);
        assert_eq!(first.key_pem, old.key_pem);
        assert!(first.trust_pem.starts_with(&old.cert_pem));
        assert_eq!(first.trust_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(first.next_step_at, Some(at(60).as_second()));
        assert!(
            !published
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(ROTATE_CA_ANNOTATION)
        );
        assert_eq!(step(&published, 59), None);

        // 2: the new CA signs; the old one is still trusted.
        let switched = step(&published, 60).expect("the switch");
        let second = ca(&switched);
        assert_ne!(second.cert_pem, old.cert_pem);
        assert!(first.trust_pem.contains(&second.cert_pem));
        assert!(second.trust_pem.contains(&old.cert_pem));
        assert_eq!(second.next_step_at, Some(at(120).as_second()));
        assert_eq!(step(&switched, 119), None);
        // A server certificate is issued again, by the new CA.
        let server = issue(&first, None, now());
        assert_ne!(issue(&second, Some(&server), at(60)).data, server.data);

        // 3: the old CA is dropped.
        let dropped = step(&switched, 120).expect("the drop");
        let third = ca(&dropped);
        assert_eq!(third.cert_pem, second.cert_pem);
        assert_eq!(third.trust_pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(third.next_step_at, None);
        assert_eq!(step(&dropped, 10_000), None, "done until asked again");
    }

    #[test]
    fn a_ca_secret_without_its_key_is_an_error_not_a_new_ca() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                CA_CERT_KEY.to_owned(),
                ByteString(b"cert".to_vec()),
            )])),
            ..Secret::default()
        };
        let error = ca_from_secret(&secret, "tusk-ca-uid", Duration::from_secs(60)).unwrap_err();
        assert!(error.to_string().contains("ca.key"), "{error}");
    }
}
