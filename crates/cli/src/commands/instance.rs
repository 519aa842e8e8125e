//! `tusk instance`: PostgreSQL's supervisor inside a database pod.
//!
//! The paths come from the command line and everything else from the environment the operator
//! sets on the container (see `tusk_instance::supervisor::env`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use tusk_instance::supervisor::{self, InstanceConfig, RunAs};

/// Arguments of `tusk instance`.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// The mounted postgresql.conf, included by the data directory's.
    #[arg(long)]
    pub config: PathBuf,
    /// The data directory; bootstrapped when empty.
    #[arg(long)]
    pub data: PathBuf,
    /// The port of /livez and /readyz.
    #[arg(long, default_value_t = tusk_api::names::INSTANCE_HEALTH_PORT)]
    pub health_port: u16,
    /// The address PostgreSQL and the health endpoints listen on: the pod's IP when the
    /// downward API gives it, else every address.
    #[arg(long, env = "POD_IP", default_value = "0.0.0.0")]
    pub listen_host: IpAddr,
    /// The directory holding initdb and postgres; by default Debian's directory for
    /// TUSK_POSTGRES_VERSION, else `pg_config --bindir`, else PATH.
    #[arg(long, env = "TUSK_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,
    /// When started as root, run PostgreSQL as this local user (PostgreSQL refuses root).
    /// Ignored when not root.
    #[arg(long, env = "TUSK_RUN_AS")]
    pub run_as: Option<String>,
    /// The directory holding the server certificate (tls.crt) and key (tls.key): PostgreSQL
    /// then serves TLS and refuses TCP connections without it. The operator always gives it.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
}

/// Runs `tusk instance` until SIGTERM or SIGINT, or until PostgreSQL exits.
pub async fn run(args: InstanceArgs) -> anyhow::Result<()> {
    let mut config =
        InstanceConfig::from_env(args.config, args.data, args.health_port, args.listen_host)?;
    if let Some(dir) = args.postgres_bin_dir {
        config.postgres_bin_dir = dir;
    }
    config.tls_dir = args.tls_dir;
    config.run_as = args.run_as.as_deref().map(RunAs::lookup).transpose()?;
    let shutdown = tusk_instance::termination_signal()?;
    supervisor::run(config, shutdown).await?;
    Ok(())
}
