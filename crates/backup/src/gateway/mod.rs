//! The object-store gateway: an S3 endpoint, served by every operator replica, through which
//! instances and backup Jobs reach the store. They hold only per-cluster credentials
//! ([`credentials`]) that reach their own cluster's prefix; the platform's credentials stay in
//! the operator, which forwards the authorized requests ([`forward`]) to any store object_store
//! supports (S3 and S3-compatible, GCS, Azure).
//!
//! The order of checks on every request: the signature, against the secret derived from the
//! access key id; the operation (only those tusk uses); the bucket; every key and list prefix,
//! strictly under `<store prefix>/<namespace>/<cluster>/<uid>/` (reads also under the prefix of
//! the cluster it is restored from, in the same namespace); and that the cluster still exists
//! with that uid ([`access`]). Only then does the request reach the store.

pub mod access;
pub mod credentials;
pub mod forward;
pub mod kubernetes;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use access::{
    ClusterDirectory, ClusterRecord, ClusterScopes, DEFAULT_CLUSTER_CACHE_TTL, DerivedKeys,
    StoreLayout,
};
pub use credentials::{ClusterCredentials, ClusterIdentity, GatewayKey};
pub use kubernetes::{KubeClusterDirectory, ensure_gateway_key};

use crate::store::BackupStore;

/// The default limit on request bodies held in memory at once.
pub const DEFAULT_BUFFER_LIMIT: u64 = 256 * 1024 * 1024;

/// Failures to start the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store offers no multipart upload through object_store (a `file://` store).
    #[error(
        "the store gateway needs an s3://, gs:// or az:// store; {url} has no multipart uploads"
    )]
    Unsupported {
        /// The store's URL.
        url: String,
    },
    /// The listening socket cannot be bound.
    #[error("the store gateway cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The gateway key's Secret cannot be read or created.
    #[error("the store gateway key in Secret {namespace}/{name}: {message}")]
    Key {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What went wrong; never the key.
        message: String,
    },
}

/// How to run the gateway.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// The key every cluster's secret is derived from.
    pub key: GatewayKey,
    /// At most this many bytes of request bodies are held in memory at once.
    pub buffer_limit: u64,
    /// How long "this cluster exists" is remembered; a deleted cluster's credentials keep
    /// working at most this long.
    pub cluster_cache_ttl: std::time::Duration,
}

/// A running gateway. Stops when [`StoreGateway::shutdown`] is called or it is dropped.
#[derive(Debug)]
pub struct StoreGateway {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StoreGateway {
    /// Starts serving: requests signed with a cluster's credentials are forwarded to `store`
    /// (the operator's own client, with the platform's credentials) when `directory` says the
    /// cluster exists and the keys lie under its prefix.
    pub async fn start(
        store: &BackupStore,
        options: GatewayOptions,
        directory: Arc<dyn ClusterDirectory>,
    ) -> Result<Self, GatewayError> {
        let multipart =
            store
                .multipart_store()
                .cloned()
                .ok_or_else(|| GatewayError::Unsupported {
                    url: format!("{}/{}", store.bucket(), store.prefix()),
                })?;
        let layout = StoreLayout {
            bucket: store.bucket().to_owned(),
            prefix: store.prefix().to_owned(),
        };
        let forwarder = forward::Forwarder::new(
            store.object_store().clone(),
            multipart,
            layout.clone(),
            options.buffer_limit,
        );
        let service = {
            let mut builder = S3ServiceBuilder::new(forwarder);
            builder.set_auth(DerivedKeys::new(options.key));
            builder.set_access(ClusterScopes::new(
                layout,
                directory,
                options.cluster_cache_ttl,
            ));
            builder.build()
        };
        let listener =
            TcpListener::bind(options.address)
                .await
                .map_err(|source| GatewayError::Bind {
                    address: options.address,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| GatewayError::Bind {
            address: options.address,
            source,
        })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, service, stopped));
        tracing::info!(%address, bucket = %store.bucket(), "store gateway listening");
        Ok(Self {
            address,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the gateway listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StoreGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
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
                tracing::warn!(%error, "store gateway cannot accept a connection");
                continue;
            }
        };
        let service = service.clone();
        connections.spawn(async move {
            let _ = ConnectionBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
