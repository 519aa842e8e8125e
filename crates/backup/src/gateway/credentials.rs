//! Per-cluster credentials for the gateway: the access key id names one incarnation of one
//! PostgresCluster, and the secret access key is an HMAC of that id under the gateway key, which
//! only the operator holds. The operator writes the pair into the cluster's namespace; the
//! gateway recomputes the secret to verify a request's signature, so it keeps no list of keys
//! and a key cannot be forged or stretched to another cluster without the gateway key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The first segment of every gateway access key id: tells it apart from any real store's key.
const ACCESS_KEY_MARKER: &str = "tusk";

/// Domain separation: the gateway key signs nothing else, but a version in the input lets a
/// later derivation coexist with this one.
const DERIVATION_LABEL: &[u8] = b"tusk-store-gateway/v1\0";

/// The shortest gateway key accepted, in bytes: as long as the HMAC-SHA256 output.
pub const MIN_KEY_LENGTH: usize = 32;

/// The secret from which every cluster's secret access key is derived. Never printed.
#[derive(Clone)]
pub struct GatewayKey(Vec<u8>);

impl GatewayKey {
    /// Wraps the key's bytes; refuses a key shorter than [`MIN_KEY_LENGTH`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, KeyTooShort> {
        if bytes.len() < MIN_KEY_LENGTH {
            return Err(KeyTooShort {
                length: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// A new random key, as the operator creates when none exists yet.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; MIN_KEY_LENGTH];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// The key's bytes, to store in the operator's own Secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The credentials of `cluster`.
    pub fn credentials_for(&self, cluster: &ClusterIdentity) -> ClusterCredentials {
        let access_key_id = cluster.access_key_id();
        let secret_access_key = self.secret_for(&access_key_id);
        ClusterCredentials {
            access_key_id,
            secret_access_key,
        }
    }

    /// The secret access key belonging to `access_key_id`, whatever it names.
    pub fn secret_for(&self, access_key_id: &str) -> String {
        // HMAC accepts a key of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(DERIVATION_LABEL);
        mac.update(access_key_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayKey(<redacted>)")
    }
}

/// A gateway key shorter than [`MIN_KEY_LENGTH`].
#[derive(Debug, thiserror::Error)]
#[error("the store gateway key has {length} bytes; it needs at least {MIN_KEY_LENGTH}")]
pub struct KeyTooShort {
    /// The length found.
    pub length: usize,
}

/// One incarnation of one PostgresCluster: what a gateway credential reaches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterIdentity {
    /// The cluster's namespace.
    pub namespace: String,
    /// The cluster's name.
    pub name: String,
    /// The cluster's uid; a re-created cluster of the same name has another.
    pub uid: String,
}

impl ClusterIdentity {
    /// `tusk.<namespace>.<name>.<uid>`. SigV4 carries the access key id as the first
    /// `/`-separated field of `Credential=`, inside a comma-separated header, so the id must
    /// hold neither `/` nor `,`; namespaces (DNS labels) and uids hold no `.`, so the name is
    /// whatever lies between the second and the last dot, even if it contains dots itself.
    pub fn access_key_id(&self) -> String {
        format!(
            "{ACCESS_KEY_MARKER}.{}.{}.{}",
            self.namespace, self.name, self.uid
        )
    }

    /// Reads an access key id written by [`ClusterIdentity::access_key_id`]; `None` for
    /// anything else.
    pub fn from_access_key_id(access_key_id: &str) -> Option<Self> {
        let rest = access_key_id
            .strip_prefix(ACCESS_KEY_MARKER)?
            .strip_prefix('.')?;
        let (namespace, rest) = rest.split_once('.')?;
        let (name, uid) = rest.rsplit_once('.')?;
        let label = |text: &str| {
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let subdomain = |text: &str| text.split('.').all(label);
        let uid_ok = !uid.is_empty() && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        (label(namespace) && subdomain(name) && uid_ok).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }
}

/// The pair the operator writes into `<cluster>-backup-store`. The secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCredentials {
    /// The access key id, naming the cluster.
    pub access_key_id: String,
    /// The derived secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elephant() -> ClusterIdentity {
        ClusterIdentity {
            namespace: "project-a".into(),
            name: "elephant".into(),
            uid: "6c1f1d4e-0a6b-4b0e-9d3c-2f1f7c9b8a01".into(),
        }
    }

    #[test]
    fn the_access_key_id_round_trips_even_with_dots_in_the_name() {
        let mut cluster = elephant();
        assert_eq!(
            ClusterIdentity::from_access_key_id(&cluster.access_key_id()),
            Some(cluster.clone())
        );
        cluster.name = "db.v2".into();
        assert_eq!(
            ClusterIdentity::from_access_key_id(&cluster.access_key_id()),
            Some(cluster)
        );
        for foreign in [
            "AKIAIOSFODNN7EXAMPLE",
            "tusk.project-a.elephant",
            "tusk.Project.elephant.uid",
            "tusk.a.b/c.uid",
            "tusk..b.uid",
        ] {
            assert_eq!(
                ClusterIdentity::from_access_key_id(foreign),
                None,
                "{foreign}"
            );
        }
    }

    #[test]
    fn secrets_differ_per_cluster_incarnation_and_per_key() {
        let key = GatewayKey::new(vec![7; 32]).unwrap();
        let first = key.credentials_for(&elephant());
        let mut reborn = elephant();
        reborn.uid = "0d6a2b8e-1111-2222-3333-444455556666".into();
        assert_ne!(
            first.secret_access_key,
            key.credentials_for(&reborn).secret_access_key
        );
        let other_key = GatewayKey::new(vec![8; 32]).unwrap();
        assert_ne!(
            first.secret_access_key,
            other_key.credentials_for(&elephant()).secret_access_key
        );
        assert_eq!(first, key.credentials_for(&elephant()));
        assert!(!format!("{first:?}").contains(&first.secret_access_key));
        assert!(!format!("{key:?}").contains("7"));
        assert!(GatewayKey::new(vec![1; 16]).is_err());
    }
}
