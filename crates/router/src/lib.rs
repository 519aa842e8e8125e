//! tusk's router: one TCP endpoint into the workload cluster that routes each database's
//! connections by the host name the client's TLS ClientHello names (SNI), without terminating
//! TLS. The client verifies the database's own certificate, and channel binding and client
//! certificates work end to end. The router is stateless and holds no key.
//!
//! - [`handshake`]: the opening bytes of a PostgreSQL connection, as pure functions.
//! - [`routes`]: the routing table and its decisions (name, allow-list).
//! - [`watch`]: the table kept from watches of PostgresClusters and their `-rw` Services.
//! - [`limits`]: per-source rate and concurrency, per-database concurrency.
//! - [`server`]: the listener, the handshake, the splice.
//!
//! `/metrics`, `/healthz` and `/readyz` (ready once the table is loaded) are served as the
//! operator serves its own.
//!
//! docs/external-access.md describes the design.

pub mod handshake;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tusk_operator::server::{Readiness, serve_text};

/// Where and how one router runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_address: SocketAddr,
    /// The host name template: `tunnel.externalHostTemplate`.
    pub template: routes::HostTemplate,
    /// How connections are handled.
    pub settings: server::Settings,
}

/// A router that is running: where it listens.
#[derive(Clone)]
pub struct Running {
    /// The bound client address (useful with port 0).
    pub address: SocketAddr,
    /// The bound HTTP address.
    pub http_address: SocketAddr,
    /// Ready once the routing table is loaded.
    pub readiness: Readiness,
}

/// Binds both addresses and starts the router's tasks (watches, listener, HTTP) until
/// `shutdown`.
pub async fn start(
    client: kube::Client,
    options: Options,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let metrics = metrics::Metrics::new();
    let readiness = Readiness::default();
    let listener = TcpListener::bind(options.listen).await?;
    let address = listener.local_addr()?;
    let metrics_text = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.encode())
    };
    let (http_address, _) = serve_text(
        options.http_address,
        metrics_text,
        readiness.clone(),
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    let (table_sender, table) =
        tokio::sync::watch::channel(Arc::new(routes::RouteTable::default()));
    tokio::spawn(watch::keep_routes(
        client,
        options.template,
        table_sender,
        readiness.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let router = server::Router::new(options.settings, table, metrics);
    tokio::spawn(router.serve(listener, shutdown));
    Ok(Running {
        address,
        http_address,
        readiness,
    })
}
