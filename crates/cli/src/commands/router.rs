//! `tusk router`: the one endpoint into the workload cluster that routes every database's TLS
//! connections by name (docs/external-access.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tusk_operator::config::OperatorConfig;
use tusk_router::limits::Limits;
use tusk_router::routes::HostTemplate;
use tusk_router::server::Settings;

/// Arguments of `tusk router`. Each can also come from the `TUSK_ROUTER_*` environment
/// variable named beside it.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Where clients connect.
    #[arg(long, env = "TUSK_ROUTER_LISTEN", default_value = "0.0.0.0:5432")]
    listen: SocketAddr,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "TUSK_ROUTER_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// The operator's configuration file: the router routes by its tunnel.routerHostTemplate,
    /// or else its tunnel.externalHostTemplate, so that both paths share one template.
    #[arg(long, env = "TUSK_CONFIG")]
    config: Option<PathBuf>,
    /// Each database's host name, with {cluster} and {namespace}, when not taken from the
    /// operator's configuration. Default {cluster}.{namespace}.db.tusk.local, as the
    /// operator's.
    #[arg(long, env = "TUSK_ROUTER_HOST_TEMPLATE")]
    host_template: Option<String>,
    /// Require a PROXY protocol v2 header from the load balancer on every connection and take
    /// the client's address from it.
    #[arg(long, env = "TUSK_ROUTER_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// How long a client has to send its ClientHello, such as 10s.
    #[arg(long, env = "TUSK_ROUTER_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// The largest ClientHello accepted, in bytes.
    #[arg(long, env = "TUSK_ROUTER_MAX_CLIENT_HELLO", default_value_t = 16 * 1024)]
    max_client_hello: usize,
    /// New connections per second one client address may open, on average.
    #[arg(long, env = "TUSK_ROUTER_SOURCE_RATE", default_value_t = 20.0)]
    source_rate: f64,
    /// New connections one client address may open at once beyond the average.
    #[arg(long, env = "TUSK_ROUTER_SOURCE_BURST", default_value_t = 50.0)]
    source_burst: f64,
    /// Connections one client address may hold open.
    #[arg(long, env = "TUSK_ROUTER_SOURCE_CONNECTIONS", default_value_t = 200)]
    source_connections: usize,
    /// Routed connections one database may be sent at once.
    #[arg(long, env = "TUSK_ROUTER_DATABASE_CONNECTIONS", default_value_t = 1000)]
    database_connections: usize,
}

impl RouterArgs {
    /// The host template: the flag, else the operator's configuration, else its default.
    fn template(&self) -> anyhow::Result<String> {
        if let Some(template) = &self.host_template {
            return Ok(template.clone());
        }
        let config = match &self.config {
            Some(path) => OperatorConfig::from_file(path)?,
            None => OperatorConfig::default(),
        };
        Ok(config.tunnel.router_template().to_owned())
    }

    /// The router's options from the arguments.
    fn options(&self) -> anyhow::Result<tusk_router::Options> {
        Ok(tusk_router::Options {
            listen: self.listen,
            http_address: self.http_address,
            template: HostTemplate::new(&self.template()?)?,
            settings: Settings {
                handshake_timeout: self.handshake_timeout,
                max_client_hello: self.max_client_hello,
                proxy_protocol: self.proxy_protocol,
                limits: Limits {
                    per_source_rate: self.source_rate,
                    per_source_burst: self.source_burst,
                    per_source_connections: self.source_connections,
                    per_database_connections: self.database_connections,
                },
            },
        })
    }
}

/// The options of a router with the default limits and no PROXY protocol, as `tusk dev` runs
/// it.
pub fn options(
    listen: SocketAddr,
    http_address: SocketAddr,
    host_template: &str,
    handshake_timeout: Duration,
) -> anyhow::Result<tusk_router::Options> {
    /// `tusk router`'s arguments alone, to take their defaults.
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        args: RouterArgs,
    }
    let mut args = Defaults::parse_from(["router", "--host-template", host_template]).args;
    args.listen = listen;
    args.http_address = http_address;
    args.handshake_timeout = handshake_timeout;
    args.options()
}

/// Runs `tusk router` until SIGINT or SIGTERM.
pub async fn run(args: RouterArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    tusk_operator::install_crypto_provider();
    let client = crate::kube_client::client()
        .await
        .context("cannot reach Kubernetes")?;
    let shutdown = CancellationToken::new();
    let running = tusk_router::start(client, options, shutdown.clone())
        .await
        .context("cannot start the router")?;
    tracing::info!(address = %running.address, http = %running.http_address, "the router listens");
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the router");
    shutdown.cancel();
    Ok(())
}
