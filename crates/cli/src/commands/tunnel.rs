//! `tusk tunnel`: the TCP forwarder that runs in a customer's cluster.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tusk_api::tunnel_request;
use tusk_instance::tunnel::{
    DEFAULT_DRAIN_GRACE, DEFAULT_MAX_CONNECTIONS, RouterRequest, Tunnel, TunnelConfig,
};

/// Arguments of `tusk tunnel`.
#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// Where clients connect, e.g. 0.0.0.0:5432. Bound as given, also when POD_IP is set.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where connections are forwarded, as host:port.
    #[arg(long)]
    pub target: String,
    /// Connections open at once beyond which new ones are closed immediately.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Serve /readyz (is the target reachable?) and /livez over HTTP on this address.
    #[arg(long)]
    pub health: Option<SocketAddr>,
    /// Seconds open connections may take to finish after SIGTERM or SIGINT before they are
    /// closed.
    #[arg(long, default_value_t = DEFAULT_DRAIN_GRACE.as_secs())]
    pub drain_grace_seconds: u64,
    /// When the target is `tusk router`: the database's external host name, which the tunnel
    /// sends ahead of each connection with its token (from the environment variable
    /// TUSK_TUNNEL_TOKEN, never an argument), so that the router routes it there.
    #[arg(long)]
    pub route_name: Option<String>,
}

/// Runs `tusk tunnel` until SIGTERM or SIGINT.
pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    let router_request = match &args.route_name {
        Some(name) => {
            let token = std::env::var(tunnel_request::TOKEN_ENV).with_context(|| {
                format!(
                    "--route-name needs the tunnel's token in {}",
                    tunnel_request::TOKEN_ENV
                )
            })?;
            Some(RouterRequest::new(name, &token).with_context(|| {
                format!(
                    "--route-name must be a host name and {} 64 hexadecimal digits",
                    tunnel_request::TOKEN_ENV
                )
            })?)
        }
        None => None,
    };
    let config = TunnelConfig {
        listen: args.listen,
        target: args.target,
        max_connections: args.max_connections,
        health: args.health,
        drain_grace: Duration::from_secs(args.drain_grace_seconds),
        router_request,
    };
    let tunnel = Tunnel::bind(config).await?;
    let shutdown = tusk_instance::termination_signal()?;
    tunnel.serve(shutdown).await?;
    Ok(())
}
