//! Object-store access: configuration from a URL and the few operations the backup path and the
//! operator's backup controller need.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};
use sha2::{Digest, Sha256};

use crate::sink::{StoredObject, hex_digest};

/// Where backups are stored, as the operator's configuration or the Job's environment gives it.
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or `file:///abs/dir`.
    pub url: String,
    /// A custom S3 endpoint (MinIO, Ceph, the embedded S3), addressed path-style.
    pub endpoint: Option<String>,
    /// The S3 region; `us-east-1` when unset.
    pub region: Option<String>,
    /// The S3 access key id.
    pub access_key_id: Option<String>,
    /// The S3 secret access key. Never logged and never printed by `Debug`.
    pub secret_access_key: Option<String>,
    /// Whether a plain-HTTP endpoint is acceptable.
    pub allow_http: bool,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

impl StoreConfig {
    /// Reads `TUSK_STORE_URL`, `TUSK_STORE_ENDPOINT`, `TUSK_STORE_REGION`,
    /// `TUSK_STORE_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Result<Self, StoreError> {
        let url = non_empty_env("TUSK_STORE_URL").ok_or(StoreError::MissingUrl)?;
        let allow_http = match non_empty_env("TUSK_STORE_ALLOW_HTTP").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(StoreError::InvalidSetting {
                    setting: "TUSK_STORE_ALLOW_HTTP",
                    reason: format!("expected true or false, got {other:?}"),
                });
            }
        };
        Ok(Self {
            url,
            endpoint: non_empty_env("TUSK_STORE_ENDPOINT"),
            region: non_empty_env("TUSK_STORE_REGION"),
            access_key_id: non_empty_env("AWS_ACCESS_KEY_ID"),
            secret_access_key: non_empty_env("AWS_SECRET_ACCESS_KEY"),
            allow_http,
        })
    }
}

/// One stored object, as a listing reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key relative to the bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: jiff::Timestamp,
}

/// Failures of the object store. Display carries the store's own message where it sent one
/// (e.g. "The specified bucket does not exist"), so it can go into a Warning Event as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `TUSK_STORE_URL` is not set.
    #[error("TUSK_STORE_URL is not set: tell tusk where backups are stored")]
    MissingUrl,
    /// A setting has a value tusk cannot use.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The setting at fault.
        setting: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// The store URL cannot be parsed or names an unsupported scheme.
    #[error("store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The object-store client could not be built from the configuration.
    #[error("cannot configure the object store: {}", store_message(.0))]
    Configure(#[source] object_store::Error),
    /// The object does not exist.
    #[error("object {key} does not exist")]
    NotFound {
        /// The key looked up.
        key: String,
    },
    /// A request to the store failed.
    #[error("{operation} {key}: {}", store_message(.source))]
    Request {
        /// What tusk was doing.
        operation: &'static str,
        /// The key or prefix concerned.
        key: String,
        /// The store client's error.
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    pub(crate) fn request(operation: &'static str, key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } if !is_missing_bucket(&source) => {
                StoreError::NotFound {
                    key: key.to_owned(),
                }
            }
            source => StoreError::Request {
                operation,
                key: key.to_owned(),
                source,
            },
        }
    }

    /// Whether the failure is a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// Whether a not-found answer is about the bucket rather than an object. object_store reports
/// both as `NotFound`, but a missing bucket must never read as "already deleted": the data may
/// be in a bucket that is only temporarily gone or misnamed.
fn is_missing_bucket(error: &object_store::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = cause {
        if current.to_string().contains("NoSuchBucket") {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Whether an object-store error means the object simply is not there.
pub(crate) fn is_missing_object(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. }) && !is_missing_bucket(error)
}

/// The human part of an object-store error: S3 puts it in `<Message>`; otherwise the whole
/// error chain, which object_store already makes readable.
fn store_message(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(start) = text.find("<Message>") {
        let rest = &text[start + "<Message>".len()..];
        if let Some(end) = rest.find("</Message>") {
            return rest[..end].to_owned();
        }
    }
    text
}

/// A configured object store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BackupStore {
    inner: Arc<dyn ObjectStore>,
    multipart: Option<Multipart>,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
}

/// How long one request may keep retrying before its failure is reported. Short enough that a
/// backup against an unreachable store fails within a minute, long enough for a blip.
const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a response may send nothing before its request fails. A whole request has no
/// time limit of its own: object_store's default (30 seconds from connecting to the end of the
/// body) failed the download of every base backup that took longer, that is every restore of
/// a backup of some size.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client's settings: object_store's defaults, with [`STALL_TIMEOUT`] in place of a
/// limit on the whole request.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_read_timeout(STALL_TIMEOUT)
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: REQUEST_RETRY_TIMEOUT,
    }
}

/// The multipart view of the same client, which has no `Debug` of its own.
#[derive(Clone)]
struct Multipart(Arc<dyn MultipartStore>);

impl fmt::Debug for Multipart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MultipartStore")
    }
}

/// One client seen both as an object store and as a multipart store.
fn both<S: ObjectStore + MultipartStore>(store: S) -> (Arc<dyn ObjectStore>, Option<Multipart>) {
    let store = Arc::new(store);
    (store.clone(), Some(Multipart(store)))
}

impl BackupStore {
    /// Builds the store client. Does no I/O except creating a `file://` directory.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: config.url.clone(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(&config.url).map_err(|error| invalid(&error.to_string()))?;
        let bucket = url.host_str().unwrap_or_default().to_owned();
        let path_prefix = url.path().trim_matches('/').to_owned();
        type Clients = (Arc<dyn ObjectStore>, Option<Multipart>);
        let ((inner, multipart), bucket, prefix): (Clients, String, String) = match url.scheme() {
            "s3" => {
                if bucket.is_empty() {
                    return Err(invalid("no bucket name, expected s3://bucket/prefix"));
                }
                // The client options first: `with_allow_http` below is one of them.
                let mut builder = AmazonS3Builder::new()
                    .with_client_options(client_options())
                    .with_bucket_name(&bucket)
                    .with_region(config.region.as_deref().unwrap_or("us-east-1"))
                    .with_allow_http(config.allow_http)
                    .with_retry(retry_config());
                if let Some(endpoint) = &config.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(key_id) = &config.access_key_id {
                    builder = builder.with_access_key_id(key_id);
                }
                if let Some(secret) = &config.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder.build().map_err(StoreError::Configure)?;
                (both(store), bucket, path_prefix)
            }
            "gs" => {
                if bucket.is_empty() {
                    return Err(invalid("no bucket name, expected gs://bucket/prefix"));
                }
                let store = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(StoreError::Configure)?;
                (both(store), bucket, path_prefix)
            }
            "az" | "azure" => {
                if bucket.is_empty() {
                    return Err(invalid("no container name, expected az://container/prefix"));
                }
                let store = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(StoreError::Configure)?;
                (both(store), bucket, path_prefix)
            }
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| invalid("expected an absolute path, file:///abs/dir"))?;
                std::fs::create_dir_all(&dir).map_err(|error| {
                    invalid(&format!("cannot create {}: {error}", dir.display()))
                })?;
                let store =
                    LocalFileSystem::new_with_prefix(&dir).map_err(StoreError::Configure)?;
                ((Arc::new(store), None), String::new(), String::new())
            }
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}; use s3://, gs://, az:// or file://"
                )));
            }
        };
        Ok(Self {
            inner,
            multipart,
            bucket,
            prefix,
            endpoint: config.endpoint.clone(),
        })
    }

    /// The bucket or container; empty for `file://`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The URL's path part, without leading or trailing '/'.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The custom endpoint, if one is configured.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The underlying object_store client.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The low-level multipart client of the same store, which the store gateway forwards
    /// uploads to; `None` for `file://`.
    pub fn multipart_store(&self) -> Option<&Arc<dyn MultipartStore>> {
        self.multipart.as_ref().map(|multipart| &multipart.0)
    }

    /// Deletes one object. Deleting a missing object succeeds; a missing bucket is an error.
    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) => Ok(()),
            Err(error) if is_missing_object(&error) => Ok(()),
            Err(error) => Err(StoreError::request("deleting", key, error)),
        }
    }

    /// Aborts the unfinished multipart upload `upload_id` of `key`, so that its parts stop
    /// taking space. An upload that is already gone (completed or aborted) is not an error.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let Some(multipart) = self.multipart_store() else {
            // A file:// store has no upload ids; nothing outside this process can abort.
            return Ok(());
        };
        let upload_id = upload_id.to_owned();
        match multipart
            .abort_multipart(&ObjectPath::from(key), &upload_id)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_missing_object(&error) => Ok(()),
            Err(error) => Err(StoreError::request("aborting the upload of", key, error)),
        }
    }

    /// Deletes every object under `prefix` (a folder: `a/b` matches `a/b/c`, not `a/bc`) and
    /// returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let objects = self.list(prefix).await?;
        let count = objects.len();
        let locations = futures::stream::iter(
            objects
                .into_iter()
                .map(|object| Ok(ObjectPath::from(object.key))),
        )
        .boxed();
        let mut deleted = self.inner.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => {}
                Err(error) if is_missing_object(&error) => {}
                Err(error) => return Err(StoreError::request("deleting under", prefix, error)),
            }
        }
        Ok(count)
    }

    /// Lists every object under `prefix`, recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let trimmed = prefix.trim_matches('/');
        let location = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        self.inner
            .list(location.as_ref())
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: jiff::Timestamp::new(
                    meta.last_modified.timestamp(),
                    meta.last_modified.timestamp_subsec_nanos() as i32,
                )
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            })
            .try_collect()
            .await
            .or_else(|error| {
                // A local directory that was never written to lists as empty, like a bucket.
                if is_missing_object(&error) {
                    Ok(Vec::new())
                } else {
                    Err(StoreError::request("listing", prefix, error))
                }
            })
    }

    /// Whether an object exists. S3 answers HEAD without a body, so here a missing bucket
    /// cannot be told from a missing object; callers that must not mistake one for the other
    /// list or delete instead.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.inner.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(error) if is_missing_object(&error) => Ok(false),
            Err(error) => Err(StoreError::request("looking up", key, error)),
        }
    }

    /// Reads an object through and returns its size and the SHA-256 of its bytes, or `None` when
    /// it does not exist. Memory stays bounded: the object is hashed as it streams.
    pub async fn digest(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let result = match self.inner.get(&ObjectPath::from(key)).await {
            Ok(result) => result,
            Err(error) if is_missing_object(&error) => return Ok(None),
            Err(error) => return Err(StoreError::request("reading", key, error)),
        };
        let mut stream = result.into_stream();
        let mut digest = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| StoreError::request("reading", key, error))?;
            size += chunk.len() as u64;
            digest.update(&chunk);
        }
        Ok(Some(StoredObject {
            size,
            sha256: hex_digest(digest),
        }))
    }

    /// Joins the configured prefix and `relative` into a key.
    pub fn key(&self, relative: &str) -> String {
        let relative = relative.trim_matches('/');
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> StoreConfig {
        StoreConfig {
            url: url.to_owned(),
            endpoint: Some("http://127.0.0.1:9000".to_owned()),
            access_key_id: Some("tusk".to_owned()),
            secret_access_key: Some("very-secret-value".to_owned()),
            allow_http: true,
            ..StoreConfig::default()
        }
    }

    #[test]
    fn s3_url_gives_bucket_and_prefix() {
        let store = BackupStore::new(&config("s3://backups/team/a/")).unwrap();
        assert_eq!(store.bucket(), "backups");
        assert_eq!(store.prefix(), "team/a");
        assert_eq!(store.endpoint(), Some("http://127.0.0.1:9000"));
        assert_eq!(store.key("/ns/c/base/x"), "team/a/ns/c/base/x");
    }

    #[test]
    fn unsupported_scheme_is_refused_with_the_choices() {
        let error = BackupStore::new(&config("ftp://backups/x")).unwrap_err();
        assert!(error.to_string().contains("use s3://"), "{error}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let printed = format!("{:?}", config("s3://b"));
        assert!(!printed.contains("very-secret-value"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn s3_message_is_extracted_from_the_response_body() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: "Client error with status 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into(),
        };
        assert_eq!(store_message(&error), "The specified bucket does not exist");
    }

    #[tokio::test]
    async fn file_store_lists_and_deletes_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store = BackupStore::new(&StoreConfig {
            url: url.to_string(),
            ..StoreConfig::default()
        })
        .unwrap();
        assert_eq!(store.bucket(), "");
        for key in ["ns/c/wal/1", "ns/c/wal/2", "ns/cc/wal/1"] {
            store
                .object_store()
                .put(&ObjectPath::from(key), "x".into())
                .await
                .unwrap();
        }
        assert!(store.exists("ns/c/wal/1").await.unwrap());
        assert_eq!(store.list("ns/c").await.unwrap().len(), 2);
        assert_eq!(store.delete_prefix("ns/c").await.unwrap(), 2);
        assert!(!store.exists("ns/c/wal/1").await.unwrap());
        assert!(store.exists("ns/cc/wal/1").await.unwrap());
        store.delete_object("ns/c/wal/1").await.unwrap();
    }
}
