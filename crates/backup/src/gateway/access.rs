//! Who may do what through the gateway: the signature is checked against the secret derived
//! from the access key id ([`DerivedKeys`], s3s' `S3Auth`), and then every request is
//! authorized ([`ClusterScopes`], s3s' `S3Access`): the configured bucket only, every key and
//! list prefix strictly below the cluster's own prefix, and only while that cluster exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{DeleteObjectsInput, ListObjectsV2Input};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use super::credentials::{ClusterIdentity, GatewayKey};

/// The operations the gateway forwards: what tusk's backup Jobs and instances use (get, head,
/// put, delete, list, multipart upload). Any other is answered `NotImplemented` before it
/// reaches the store.
pub const SUPPORTED_OPERATIONS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "ListObjectsV2",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

/// The operations that only read. A cluster may read, never change, the prefix of the cluster
/// it is restored from.
pub const READ_OPERATIONS: &[&str] = &["GetObject", "HeadObject", "ListObjectsV2"];

/// What the API server says about an existing cluster that matters to the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRecord {
    /// The cluster whose backup this one is restored from (`spec.restore`), identified by the
    /// backup's owner; its prefix may be read (for the base backup and its WAL), never
    /// written. Honoured only within the same namespace.
    pub restore_source: Option<ClusterIdentity>,
}

/// Tells whether a PostgresCluster still exists with the given uid, and what it restores from.
/// The gateway asks it (and caches the answer briefly) so that the credentials of a deleted
/// cluster stop working.
#[async_trait::async_trait]
pub trait ClusterDirectory: Send + Sync + 'static {
    /// `None` when `cluster.namespace`/`cluster.name` does not exist or has another uid. An
    /// error means the answer is unknown; the gateway then refuses the request.
    async fn lookup(&self, cluster: &ClusterIdentity) -> Result<Option<ClusterRecord>, String>;
}

/// Verifies signatures: the secret of an access key id is derived from it, so any well-formed
/// id has one, and only a holder of the gateway key (or of that cluster's Secret) can sign.
pub struct DerivedKeys {
    key: GatewayKey,
}

impl DerivedKeys {
    /// Derives secrets under `key`.
    pub fn new(key: GatewayKey) -> Self {
        Self { key }
    }
}

#[async_trait::async_trait]
impl S3Auth for DerivedKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if ClusterIdentity::from_access_key_id(access_key).is_none() {
            return Err(s3_error!(
                InvalidAccessKeyId,
                "This gateway only accepts the per-cluster keys tusk issues"
            ));
        }
        Ok(SecretKey::from(self.key.secret_for(access_key)))
    }
}

/// Where the clusters' objects are: the one bucket and the store prefix of the operator's
/// configuration.
#[derive(Clone, Debug)]
pub struct StoreLayout {
    /// The bucket every request must name.
    pub bucket: String,
    /// The store prefix, without leading or trailing `/`.
    pub prefix: String,
}

impl StoreLayout {
    /// `<store prefix>/<namespace>/<cluster>/<uid>/`: everything one credential reaches lies
    /// strictly below it. The trailing `/` is what keeps `<uid>x/` out.
    pub fn cluster_prefix(&self, cluster: &ClusterIdentity) -> String {
        let prefix = tusk_api::names::cluster_storage_prefix(
            &self.prefix,
            &cluster.namespace,
            &cluster.name,
            &cluster.uid,
        );
        format!("{prefix}/")
    }

    /// Refuses a key that is not a plain object key strictly below the cluster's prefix.
    pub fn check_key(&self, cluster: &ClusterIdentity, key: &str) -> S3Result<()> {
        if !is_plain_key(key) {
            return Err(s3_error!(
                AccessDenied,
                "Object keys must be relative paths without empty, '.' or '..' segments"
            ));
        }
        let own = self.cluster_prefix(cluster);
        if key.len() > own.len() && key.starts_with(&own) {
            Ok(())
        } else {
            Err(outside(&own))
        }
    }

    /// Like [`StoreLayout::check_key`], but also accepts the prefix of the cluster `record`
    /// says this one is restored from, in the same namespace: for reads only.
    pub fn check_read_key(
        &self,
        cluster: &ClusterIdentity,
        record: &ClusterRecord,
        key: &str,
    ) -> S3Result<()> {
        let own = self.check_key(cluster, key);
        match restore_source(cluster, record) {
            Some(source) if own.is_err() => self
                .check_key(source, key)
                .map_err(|_| own.err().unwrap_or_else(|| s3_error!(AccessDenied))),
            _ => own,
        }
    }

    /// Like [`StoreLayout::check_list_prefix`], also accepting the restore source's prefix.
    pub fn check_read_list_prefix(
        &self,
        cluster: &ClusterIdentity,
        record: &ClusterRecord,
        prefix: &str,
    ) -> S3Result<()> {
        let own = self.check_list_prefix(cluster, prefix);
        match restore_source(cluster, record) {
            Some(source) if own.is_err() => self
                .check_list_prefix(source, prefix)
                .map_err(|_| own.err().unwrap_or_else(|| s3_error!(AccessDenied))),
            _ => own,
        }
    }

    /// Refuses a list prefix that does not start with the cluster's prefix.
    pub fn check_list_prefix(&self, cluster: &ClusterIdentity, prefix: &str) -> S3Result<()> {
        let own = self.cluster_prefix(cluster);
        if !prefix.starts_with(&own) {
            return Err(outside(&own));
        }
        // Whole segments become a directory path at the store: they must be plain too.
        let folder = &prefix[..prefix.rfind('/').unwrap_or(0)];
        if is_plain_key(folder) && !prefix.chars().any(|c| c.is_ascii_control()) {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "List prefixes must not contain empty, '.' or '..' segments"
            ))
        }
    }
}

/// The restore source a record names, if it lies in the signer's own namespace: a tenant can
/// name any backup it can write a reference to, but only its own namespace's prefixes.
fn restore_source<'a>(
    cluster: &ClusterIdentity,
    record: &'a ClusterRecord,
) -> Option<&'a ClusterIdentity> {
    record
        .restore_source
        .as_ref()
        .filter(|source| source.namespace == cluster.namespace)
}

fn outside(own: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        format!("These credentials reach only objects under {own}"),
    )
}

/// A key the store maps one to one: non-empty `/`-separated segments, none `.` or `..`, no
/// control characters, at most 1024 bytes (S3's limit). Filesystem-backed stores would
/// otherwise resolve `..`, and object_store would silently drop a leading or trailing `/`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && !segment.chars().any(|c| c.is_ascii_control())
        })
}

/// How long a "this cluster exists" answer is reused by default: a deleted cluster's
/// credentials keep working at most this long.
pub const DEFAULT_CLUSTER_CACHE_TTL: Duration = Duration::from_secs(30);
/// The longest a "this cluster is gone" answer is reused: short, so a cluster created a moment
/// ago is not refused for long, yet a deleted cluster's pods retrying do not flood the API.
const GONE_TTL: Duration = Duration::from_secs(5);

/// Authorizes every request against the scope of the credentials that signed it.
pub struct ClusterScopes {
    layout: StoreLayout,
    directory: Arc<dyn ClusterDirectory>,
    exists_ttl: Duration,
    answers: Mutex<HashMap<ClusterIdentity, (Instant, Option<ClusterRecord>)>>,
}

impl ClusterScopes {
    /// Authorizes against `layout`, asking `directory` whether clusters exist and reusing a
    /// "yes" for `cache_ttl`.
    pub fn new(
        layout: StoreLayout,
        directory: Arc<dyn ClusterDirectory>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            layout,
            directory,
            exists_ttl: cache_ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    async fn record(&self, cluster: &ClusterIdentity) -> S3Result<Option<ClusterRecord>> {
        let now = Instant::now();
        {
            let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, record)) = answers.get(cluster) {
                let ttl = if record.is_some() {
                    self.exists_ttl
                } else {
                    GONE_TTL.min(self.exists_ttl)
                };
                if now.duration_since(*at) < ttl {
                    return Ok(record.clone());
                }
            }
            // Only signed requests get here, so the map holds issued credentials only; still,
            // drop stale answers so it does not grow with every cluster ever deleted.
            let longest = self.exists_ttl.max(GONE_TTL);
            answers.retain(|_, (at, _)| now.duration_since(*at) < longest);
        }
        let record = self.directory.lookup(cluster).await.map_err(|error| {
            tracing::warn!(
                namespace = %cluster.namespace,
                cluster = %cluster.name,
                %error,
                "store gateway cannot tell whether a PostgresCluster exists"
            );
            s3_error!(
                ServiceUnavailable,
                "The gateway cannot check the cluster right now; retry"
            )
        })?;
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.clone(), (now, record.clone()));
        Ok(record)
    }
}

/// The record `check` attached to an authorized request.
pub(crate) fn authorized_record(extensions: &http::Extensions) -> S3Result<&ClusterRecord> {
    extensions
        .get::<ClusterRecord>()
        .ok_or_else(|| s3_error!(AccessDenied, "The request was not authorized"))
}

/// The cluster named by a request's verified credentials.
pub(crate) fn signer(credentials: Option<&s3s::auth::Credentials>) -> S3Result<ClusterIdentity> {
    credentials
        .and_then(|credentials| ClusterIdentity::from_access_key_id(&credentials.access_key))
        .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))
}

#[async_trait::async_trait]
impl S3Access for ClusterScopes {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let cluster = signer(cx.credentials())?;
        let operation = cx.s3_op().name();
        if !SUPPORTED_OPERATIONS.contains(&operation) {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                format!("The store gateway does not forward {operation}"),
            ));
        }
        let key = match cx.s3_path() {
            S3Path::Root => return Err(s3_error!(AccessDenied, "A bucket is required")),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. }
                if **bucket != *self.layout.bucket =>
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    format!("These credentials reach only bucket {}", self.layout.bucket),
                ));
            }
            S3Path::Object { key, .. } => Some(key.to_string()),
            S3Path::Bucket { .. } => None,
        };
        let Some(record) = self.record(&cluster).await? else {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!(
                    "PostgresCluster {}/{} with uid {} no longer exists; its credentials are void",
                    cluster.namespace, cluster.name, cluster.uid
                ),
            ));
        };
        if let Some(key) = key {
            if READ_OPERATIONS.contains(&operation) {
                self.layout.check_read_key(&cluster, &record, &key)?;
            } else {
                self.layout.check_key(&cluster, &key)?;
            }
        }
        // The operation's own check and the forwarder read it from the request.
        cx.extensions_mut().insert(record);
        Ok(())
    }

    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        let cluster = signer(req.credentials.as_ref())?;
        let record = authorized_record(&req.extensions)?;
        let prefix = req.input.prefix.as_deref().unwrap_or_default();
        self.layout.check_read_list_prefix(&cluster, record, prefix)
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let cluster = signer(req.credentials.as_ref())?;
        for object in &req.input.delete.objects {
            self.layout.check_key(&cluster, &object.key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> StoreLayout {
        StoreLayout {
            bucket: "tusk-backups".into(),
            prefix: "prod".into(),
        }
    }

    fn elephant() -> ClusterIdentity {
        ClusterIdentity {
            namespace: "project-a".into(),
            name: "elephant".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn keys_must_lie_strictly_below_the_cluster_prefix() {
        let layout = layout();
        let cluster = elephant();
        assert!(
            layout
                .check_key(&cluster, "prod/project-a/elephant/u1/wal/1")
                .is_ok()
        );
        for key in [
            "prod/project-a/elephant/u1/",
            "prod/project-a/elephant/u1",
            "prod/project-a/elephant/u1x/wal/1",
            "prod/project-a/elephant/u1/../../project-b/x",
            "prod/project-a/elephant/u1//x",
            "prod/project-a/elephant/u1/./x",
            "/prod/project-a/elephant/u1/x",
            "prod/project-b/elephant/u1/x",
            "prod/project-a/elephant/u1/x\n",
        ] {
            assert!(layout.check_key(&cluster, key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn a_restoring_cluster_reads_its_source_in_its_own_namespace_only() {
        let layout = layout();
        let restored = ClusterIdentity {
            name: "restored".into(),
            uid: "u2".into(),
            ..elephant()
        };
        let record = ClusterRecord {
            restore_source: Some(elephant()),
        };
        let source_key = "prod/project-a/elephant/u1/base/b.tar.gz.dare";
        assert!(
            layout
                .check_read_key(&restored, &record, source_key)
                .is_ok()
        );
        assert!(layout.check_key(&restored, source_key).is_err());
        assert!(
            layout
                .check_read_list_prefix(&restored, &record, "prod/project-a/elephant/u1/wal/")
                .is_ok()
        );
        let foreign = ClusterRecord {
            restore_source: Some(ClusterIdentity {
                namespace: "project-b".into(),
                ..elephant()
            }),
        };
        assert!(
            layout
                .check_read_key(&restored, &foreign, "prod/project-b/elephant/u1/base/b")
                .is_err()
        );
    }

    #[test]
    fn list_prefixes_must_start_with_the_cluster_prefix() {
        let layout = layout();
        let cluster = elephant();
        for prefix in [
            "prod/project-a/elephant/u1/",
            "prod/project-a/elephant/u1/wal/0000",
        ] {
            assert!(
                layout.check_list_prefix(&cluster, prefix).is_ok(),
                "{prefix}"
            );
        }
        for prefix in [
            "",
            "prod/",
            "prod/project-a/elephant/u1",
            "prod/project-a/elephant/u",
            "prod/project-a/elephant/u1/../",
        ] {
            assert!(
                layout.check_list_prefix(&cluster, prefix).is_err(),
                "{prefix}"
            );
        }
    }
}
