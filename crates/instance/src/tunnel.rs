//! `tusk tunnel`: a TCP forwarder from a customer's cluster to a database.
//!
//! Every accepted connection gets its own connection to the target and bytes are copied both
//! ways until either side closes. Beyond [`TunnelConfig::max_connections`] open connections, a
//! new one is closed at once (and logged) rather than queued, so a flood cannot exhaust the
//! pod's file descriptors or the database's connection slots.
//!
//! Readiness: the listening socket is bound before [`Tunnel::bind`] returns, which is what the
//! Deployment's tcpSocket probe checks. The optional health listener answers `/readyz` with
//! 200 only while the target accepts TCP connections, and `/livez` with 200 while the tunnel
//! runs.
//!
//! Through `tusk router` ([`TunnelConfig::router_request`]), the tunnel sends a TunnelRequest
//! (`tusk_api::tunnel_request`) ahead of each connection's bytes: the clients here name the
//! tunnel Service, which says nothing about the database, so the tunnel names it and proves
//! with its token that it is one of that database's tunnels. It still only copies bytes: the
//! client's TLS session ends in the database.
//!
//! Shutdown: when the shutdown future completes, the tunnel stops accepting, lets open
//! connections finish for up to [`TunnelConfig::drain_grace`], then closes what is left.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The default limit of simultaneously forwarded connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// How long open connections may take to finish after shutdown was asked for, by default.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(20);
/// How long connecting to the target may take, for a forwarded connection or a readiness check.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tunnel listens on and forwards to.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// Where clients connect, e.g. `0.0.0.0:5432`.
    pub listen: SocketAddr,
    /// Where connections go, as `host:port` (a name is resolved at every connection, so a
    /// changed DNS record is picked up without a restart).
    pub target: String,
    /// Connections open at once beyond which new ones are refused.
    pub max_connections: usize,
    /// Where to serve `/readyz` and `/livez`, if anywhere.
    pub health: Option<SocketAddr>,
    /// How long open connections may take to finish after shutdown was asked for.
    pub drain_grace: Duration,
    /// What the tunnel sends the target ahead of each connection's bytes, when the target is
    /// `tusk router`.
    pub router_request: Option<RouterRequest>,
}

/// A TunnelRequest, encoded: the database's name at the router and the tunnel's token.
#[derive(Clone, PartialEq, Eq)]
pub struct RouterRequest(Vec<u8>);

impl RouterRequest {
    /// The request for the database named `name` at the router, with `token`; `None` when
    /// either is malformed.
    pub fn new(name: &str, token: &str) -> Option<Self> {
        tusk_api::tunnel_request::encode(name, token).map(Self)
    }
}

impl std::fmt::Debug for RouterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // It holds the token.
        f.write_str("RouterRequest(..)")
    }
}

impl TunnelConfig {
    /// A configuration with the default limit, no health listener and the default grace.
    pub fn new(listen: SocketAddr, target: impl Into<String>) -> Self {
        Self {
            listen,
            target: target.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            health: None,
            drain_grace: DEFAULT_DRAIN_GRACE,
            router_request: None,
        }
    }
}

/// Failures of the tunnel itself (a failed forwarded connection is only logged).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The health listener could not be bound.
    #[error("cannot serve health checks on {address}: {source}")]
    HealthListen {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The health server stopped with an error.
    #[error("the health server failed: {0}")]
    HealthServe(#[source] io::Error),
    /// A configuration value is unusable.
    #[error("invalid tunnel setting: {0}")]
    Invalid(&'static str),
}

/// A tunnel whose sockets are bound and which is ready to serve.
#[derive(Debug)]
pub struct Tunnel {
    config: TunnelConfig,
    listener: TcpListener,
    health: Option<TcpListener>,
}

impl Tunnel {
    /// Binds the listening socket (and the health socket, if configured).
    pub async fn bind(config: TunnelConfig) -> Result<Self, TunnelError> {
        if config.max_connections == 0 {
            return Err(TunnelError::Invalid("max connections must be at least 1"));
        }
        if config.target.is_empty() {
            return Err(TunnelError::Invalid("the target must be host:port"));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| TunnelError::Listen {
                    address: config.listen,
                    source,
                })?;
        let health = match config.health {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| TunnelError::HealthListen { address, source })?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            listener,
            health,
        })
    }

    /// The address clients connect to (useful when the configured port was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the health listener, if there is one.
    pub fn health_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.health.as_ref().map(TcpListener::local_addr)
    }

    /// Forwards connections until `shutdown` completes, then drains and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), TunnelError> {
        let Self {
            config,
            listener,
            health,
        } = self;
        let target: Arc<str> = Arc::from(config.target.as_str());
        let router_request: Option<Arc<[u8]>> = config
            .router_request
            .as_ref()
            .map(|request| Arc::from(request.0.as_slice()));
        let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
        let health_task = health.map(|listener| {
            let target = Arc::clone(&target);
            let mut stopped = health_stopped.clone();
            tokio::spawn(async move {
                let app = Router::new()
                    .route("/readyz", get(target_readiness))
                    .route("/livez", get(|| async { StatusCode::OK }))
                    .with_state(target);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
            })
        });

        let permits = Arc::new(Semaphore::new(config.max_connections));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(listen = %config.listen, target = %target, through_router = router_request.is_some(), max_connections = config.max_connections, "tunnel ready");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let (client, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of descriptors and the like: back off briefly, keep serving.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached; refusing the connection");
                        drop(client);
                        continue;
                    };
                    let target = Arc::clone(&target);
                    let router_request = router_request.clone();
                    connections.spawn(async move {
                        forward(client, peer, &target, router_request.as_deref()).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        tracing::info!(
            open = connections.len(),
            grace = ?config.drain_grace,
            "shutting down: no longer accepting, draining open connections"
        );
        let drained = tokio::time::timeout(config.drain_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "grace period over; closing the remaining connections"
            );
            connections.shutdown().await;
        }
        let _ = stop_health.send(true);
        if let Some(task) = health_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(TunnelError::HealthServe(error)),
                Err(error) => tracing::warn!(%error, "the health server task ended abnormally"),
            }
        }
        tracing::info!("tunnel stopped");
        Ok(())
    }
}

/// Copies bytes both ways between a client and a fresh connection to the target, after the
/// router request when there is one.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    target: &str,
    router_request: Option<&[u8]>,
) {
    let connected = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let mut upstream = match connected {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            tracing::warn!(%peer, %target, %error, "cannot reach the target; closing the client connection");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %target, "connecting to the target timed out; closing the client connection");
            return;
        }
    };
    // Database connections are chatty request/response: do not let Nagle hold small packets.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Some(request) = router_request
        && let Err(error) = upstream.write_all(request).await
    {
        tracing::warn!(%peer, %target, %error, "cannot send the router request; closing the client connection");
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            tracing::debug!(%peer, sent, received, "connection closed");
        }
        Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
    }
}

/// `/readyz`: 200 when the target accepts a TCP connection now, 503 otherwise.
async fn target_readiness(State(target): State<Arc<str>>) -> StatusCode {
    match tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(&*target)).await {
        Ok(Ok(_)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
