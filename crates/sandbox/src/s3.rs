//! An S3-compatible server on loopback, backed by a directory.
//!
//! s3s parses the S3 protocol and checks SigV4 signatures; [`crate::s3_store`] stores buckets
//! as directories and objects as files, multipart uploads included. This module adds what tests
//! and `tusk dev` need around them: a random port, generated credentials, bucket creation and
//! removal, a count of unfinished multipart uploads, and a switch that makes the server
//! unreachable, to test what a client does when the store goes away mid-upload.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use rand::RngExt;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3ErrorCode, S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Failures of the embedded S3 server.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The storage directory cannot be created or opened.
    #[error("S3 storage directory {path}: {source}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The storage directory cannot be used (not readable, or its leftovers not removable).
    #[error("S3 storage directory {path}: {source}")]
    Backend {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The listening socket cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bucket name is not a valid S3 bucket name.
    #[error(
        "{0:?} is not a valid bucket name (3-63 characters: lowercase letters, digits, '-' and '.')"
    )]
    InvalidBucketName(String),
    /// Creating or deleting a bucket's directory failed.
    #[error("bucket {bucket}: {source}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Where to listen; port 0 picks a free port.
    pub address: SocketAddr,
    /// The one access key accepted; random when unset.
    pub access_key: Option<String>,
    /// Its secret key; random when unset.
    pub secret_key: Option<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: None,
            secret_key: None,
        }
    }
}

/// A running S3 server. Stops when [`S3Server::shutdown`] is called or it is dropped.
#[derive(Debug)]
pub struct S3Server {
    root: PathBuf,
    address: SocketAddr,
    endpoint: String,
    access_key: String,
    secret_key: String,
    reachable: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn random_token(length: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

impl S3Server {
    /// Starts serving the buckets under `root` (created if missing; each subdirectory is a
    /// bucket).
    pub async fn start(root: impl Into<PathBuf>, options: S3Options) -> Result<Self, S3Error> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| S3Error::Storage {
            path: root.clone(),
            source,
        })?;
        let backend =
            crate::s3_store::DirectoryStore::new(&root).map_err(|source| S3Error::Backend {
                path: root.clone(),
                source,
            })?;
        let access_key = options.access_key.unwrap_or_else(|| random_token(20));
        let secret_key = options.secret_key.unwrap_or_else(|| random_token(40));
        let service = {
            let mut builder = S3ServiceBuilder::new(backend);
            builder.set_auth(SimpleAuth::from_single(
                access_key.clone(),
                secret_key.clone(),
            ));
            builder.set_access(BucketsMustExist { root: root.clone() });
            builder.build()
        };
        let listener =
            TcpListener::bind(options.address)
                .await
                .map_err(|source| S3Error::Bind {
                    address: options.address,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| S3Error::Bind {
            address: options.address,
            source,
        })?;
        let reachable = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, service, reachable.clone(), stopped));
        tracing::info!(%address, root = %root.display(), "embedded S3 server listening");
        Ok(Self {
            root,
            address,
            endpoint: format!("http://{address}"),
            access_key,
            secret_key,
            reachable,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234` (path-style addressing).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The access key clients sign with.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key clients sign with.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket; creating an existing one succeeds.
    pub fn create_bucket(&self, name: &str) -> Result<(), S3Error> {
        let path = self.bucket_path(name)?;
        std::fs::create_dir_all(path).map_err(|source| S3Error::Bucket {
            bucket: name.to_owned(),
            source,
        })
    }

    /// Deletes a bucket and everything in it, as an administrator would on a real store;
    /// deleting a missing bucket succeeds.
    pub fn delete_bucket(&self, name: &str) -> Result<(), S3Error> {
        let path = self.bucket_path(name)?;
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(S3Error::Bucket {
                bucket: name.to_owned(),
                source,
            }),
        }
    }

    fn bucket_path(&self, name: &str) -> Result<PathBuf, S3Error> {
        let valid = (3..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if valid {
            Ok(self.root.join(name))
        } else {
            Err(S3Error::InvalidBucketName(name.to_owned()))
        }
    }

    /// How many multipart uploads were started and neither completed nor aborted. The store keeps
    /// one `.upload-<id>.json` file per such upload (and `.upload_id-<id>.part-<n>` per part).
    pub fn pending_multipart_uploads(&self) -> io::Result<usize> {
        let mut pending = 0;
        for entry in std::fs::read_dir(&self.root)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".upload-") && name.ends_with(".json") {
                pending += 1;
            }
        }
        Ok(pending)
    }

    /// Makes the server unreachable (`false`: every connection, new or open, is closed
    /// without an answer) or reachable again (`true`).
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(mut self) {
        self.stop_serving().await;
    }

    async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Why a connection is closed without a response: hyper does that for any error a service
/// returns, as a dead peer would.
#[derive(Debug, thiserror::Error)]
enum ConnectionClosed {
    /// The server plays unreachable.
    #[error("the S3 server is unreachable")]
    Unreachable,
    /// s3s could not produce a response.
    #[error("{0}")]
    Protocol(s3s::StdError),
}

/// Refuses requests to a bucket that does not exist the way AWS S3 does, with its message,
/// before any operation starts. That sentence is what users see in the operator's Warning
/// Events, so the sandbox must say it as a real store would.
struct BucketsMustExist {
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3Access for BucketsMustExist {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        let bucket = match cx.s3_path() {
            S3Path::Root => return Ok(()),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket,
        };
        if cx.s3_op().name() == "CreateBucket" || self.root.join(&**bucket).is_dir() {
            return Ok(());
        }
        Err(s3s::S3Error::with_message(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        ))
    }
}

async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    reachable: Arc<AtomicBool>,
    mut stopped: oneshot::Receiver<()>,
) {
    // Dropping the set at the end aborts every open connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (socket, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "embedded S3 server cannot accept a connection");
                continue;
            }
        };
        if !reachable.load(Ordering::SeqCst) {
            drop(socket);
            continue;
        }
        let service = service.clone();
        let reachable = reachable.clone();
        connections.spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                let service = service.clone();
                let reachable = reachable.clone();
                async move {
                    if !reachable.load(Ordering::SeqCst) {
                        return Err(ConnectionClosed::Unreachable);
                    }
                    hyper::service::Service::call(&service, request)
                        .await
                        .map_err(|error| ConnectionClosed::Protocol(error.into()))
                }
            });
            let _ = ConnectionBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_are_directories_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path().join("s3"), S3Options::default())
            .await
            .unwrap();
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        assert_ne!(server.address().port(), 0);
        assert_eq!(server.access_key().len(), 20);
        server.create_bucket("backups").unwrap();
        assert!(server.root().join("backups").is_dir());
        assert!(matches!(
            server.create_bucket("../escape"),
            Err(S3Error::InvalidBucketName(_))
        ));
        server.delete_bucket("backups").unwrap();
        assert!(!server.root().join("backups").exists());
        assert_eq!(server.pending_multipart_uploads().unwrap(), 0);
        server.shutdown().await;
    }
}
