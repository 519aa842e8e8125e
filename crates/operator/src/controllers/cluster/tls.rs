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
//! StatefulSet's Service, and the tunnel's external host. It is issued again when a name
//! changes, when the CA changes, or when a third of its lifetime is left.

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

use crate::error::{Error, Result};
use crate::labels::{self, COMPONENT_POSTGRES};

/// The key of a CA Secret holding the CA's certificate, as in the `<cluster>-tls` Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The key of a CA Secret holding the CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// The `kubernetes.io/tls` Secret's certificate key.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The `kubernetes.io/tls` Secret's private key key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// The annotation recording the names a server certificate was issued for.
pub const NAMES_ANNOTATION: &str = "postgres.tusk.dev/tls-names";
/// The annotation recording when a server certificate is to be renewed (Unix seconds).
pub const RENEW_AT_ANNOTATION: &str = "postgres.tusk.dev/tls-renew-at";
/// The annotations on a CA Secret naming the cluster it belongs to, for people.
pub const CA_CLUSTER_ANNOTATION: &str = "postgres.tusk.dev/cluster";
/// The component label of a CA Secret.
pub const COMPONENT_CA: &str = "ca";

/// How long a CA is valid: it outlives many server certificates.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid.
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from a little before they are issued, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A cluster's CA: certificate and key, PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq)]
pub struct ClusterCa {
    /// The CA certificate, which clients trust.
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The name of the Secret holding the CA of the cluster with `uid`, in the CA namespace. The
/// uid makes it unique across namespaces and incarnations.
pub fn ca_secret_name(uid: &str) -> String {
    format!("tusk-ca-{uid}")
}

fn tls_error(what: &str, error: rcgen::Error) -> Error {
    Error::Tls(format!("{what}: {error}"))
}

/// The CA's certificate parameters. A server certificate's issuer is taken from them, so they
/// depend only on the cluster's identity, never on the time.
fn ca_params(namespace: &str, cluster: &str) -> CertificateParams {
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

fn to_time(now: jiff::Timestamp) -> OffsetDateTime {
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
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The CA of `cluster` (namespace, name, uid), from its Secret in `ca_namespace`; made and
/// stored there on first use.
pub async fn ensure_ca(
    client: &kube::Client,
    ca_namespace: &str,
    namespace: &str,
    cluster: &str,
    uid: &str,
    now: jiff::Timestamp,
) -> Result<ClusterCa> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ca_namespace);
    let name = ca_secret_name(uid);
    let get_error = |source| Error::Get {
        kind: "Secret",
        name: format!("{ca_namespace}/{name}"),
        source,
    };
    if let Some(existing) = api.get_opt(&name).await.map_err(get_error)? {
        return ca_from_secret(&existing, &name);
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
            ca_from_secret(&existing, &name)
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

fn ca_from_secret(secret: &Secret, name: &str) -> Result<ClusterCa> {
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| Error::Tls(format!("the CA Secret {name} has no usable {key}")))
    };
    Ok(ClusterCa {
        cert_pem: value(CA_CERT_KEY)?,
        key_pem: value(CA_KEY_KEY)?,
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

/// The `<cluster>-tls` Secret of `cluster` in `namespace`: the existing one when it was issued by `ca` for exactly
/// `server_names` and is not due for renewal at `now`, else a new certificate and key.
pub fn server_secret(
    namespace: &str,
    cluster: &str,
    owner: &OwnerReference,
    ca: &ClusterCa,
    server_names: &[String],
    existing: Option<&Secret>,
    now: jiff::Timestamp,
) -> Result<Secret> {
    let joined = server_names.join(",");
    if let Some(existing) = existing.filter(|secret| still_good(secret, ca, &joined, now)) {
        return Ok(Secret {
            metadata: secret_meta(cluster, owner, existing_annotations(existing)),
            type_: Some("kubernetes.io/tls".to_owned()),
            data: existing.data.clone(),
            ..Secret::default()
        });
    }
    let ca_key =
        KeyPair::from_pem(&ca.key_pem).map_err(|e| tls_error("cannot read the CA key", e))?;
    // The CA Secret is named after the cluster's uid, so it was made for this very namespace
    // and name: its subject, and so the issuer of what it signs, is `ca_params`'.
    let issuer = Issuer::new(ca_params(namespace, cluster), ca_key);
    let key = KeyPair::generate().map_err(|e| tls_error("cannot generate a server key", e))?;
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
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(now) - BACKDATE;
    params.not_after = to_time(now) + SERVER_LIFETIME;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_error("cannot sign the server certificate", e))?;
    // Renewed with a third of its lifetime left.
    let renew_at = now.as_second() + (SERVER_LIFETIME.as_secs() * 2 / 3) as i64;
    let annotations = BTreeMap::from([
        (NAMES_ANNOTATION.to_owned(), joined),
        (RENEW_AT_ANNOTATION.to_owned(), renew_at.to_string()),
    ]);
    Ok(Secret {
        metadata: secret_meta(cluster, owner, annotations),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (TLS_CERT_KEY.to_owned(), ByteString(cert.pem().into_bytes())),
            (
                TLS_KEY_KEY.to_owned(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    })
}

fn still_good(secret: &Secret, ca: &ClusterCa, names: &str, now: jiff::Timestamp) -> bool {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let has = |key: &str| data.get(key).is_some_and(|value| !value.0.is_empty());
    let renew_at = annotations
        .get(RENEW_AT_ANNOTATION)
        .and_then(|value| value.parse::<i64>().ok());
    annotations.get(NAMES_ANNOTATION).map(String::as_str) == Some(names)
        && renew_at.is_some_and(|renew_at| now.as_second() < renew_at)
        && data.get(CA_CERT_KEY).map(|value| value.0.as_slice()) == Some(ca.cert_pem.as_bytes())
        && has(TLS_CERT_KEY)
        && has(TLS_KEY_KEY)
}

fn existing_annotations(secret: &Secret) -> BTreeMap<String, String> {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    [NAMES_ANNOTATION, RENEW_AT_ANNOTATION]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), annotations.get(key)?.clone())))
        .collect()
}

fn secret_meta(
    cluster: &str,
    owner: &OwnerReference,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(names::tls_secret(cluster)),
        labels: Some(labels::for_cluster(cluster, COMPONENT_POSTGRES)),
        annotations: Some(annotations),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
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
        server_secret("shop", "elephant", &owner(), ca, &names(), existing, at).unwrap()
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

    #[test]
    fn a_ca_secret_without_its_key_is_an_error_not_a_new_ca() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                CA_CERT_KEY.to_owned(),
                ByteString(b"cert".to_vec()),
            )])),
            ..Secret::default()
        };
        let error = ca_from_secret(&secret, "tusk-ca-uid").unwrap_err();
        assert!(error.to_string().contains("ca.key"), "{error}");
    }
}
