//! `tusk tunnel`: the TCP forwarder that runs in a customer's cluster.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tusk_instance::tunnel::{DEFAULT_DRAIN_GRACE, DEFAULT_MAX_CONNECTIONS, Tunnel, TunnelConfig};

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
}

/// Runs `tusk tunnel` until SIGTERM or SIGINT.
pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    let config = TunnelConfig {
        listen: args.listen,
        target: args.target,
        max_connections: args.max_connections,
        health: args.health,
        drain_grace: Duration::from_secs(args.drain_grace_seconds),
    };
    let tunnel = Tunnel::bind(config).await?;
    let shutdown = tusk_instance::termination_signal()?;
    tunnel.serve(shutdown).await?;
    Ok(())
}
