//! `tusk operator`: all controllers, against the current kubeconfig or the in-cluster config.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tusk_operator::config::{OperatorConfig, Overrides};

/// Arguments of `tusk operator`. Each flag overrides one key of the configuration file, and
/// each can also come from the `TUSK_*` environment variable named beside it.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// The configuration file (YAML), usually mounted from a ConfigMap.
    #[arg(long, env = "TUSK_CONFIG")]
    config: Option<PathBuf>,
    /// store.url: where backups are stored, such as s3://bucket/prefix.
    #[arg(long, env = "TUSK_STORE_URL")]
    store_url: Option<String>,
    /// store.endpoint: a custom S3 endpoint.
    #[arg(long, env = "TUSK_STORE_ENDPOINT")]
    store_endpoint: Option<String>,
    /// store.region.
    #[arg(long, env = "TUSK_STORE_REGION")]
    store_region: Option<String>,
    /// store.allowHttp: allow a plain-HTTP endpoint.
    #[arg(long, env = "TUSK_STORE_ALLOW_HTTP")]
    store_allow_http: Option<bool>,
    /// postgres.defaultVersion.
    #[arg(long, env = "TUSK_DEFAULT_POSTGRES_VERSION")]
    default_postgres_version: Option<String>,
    /// backupJob.image.
    #[arg(long, env = "TUSK_BACKUP_IMAGE")]
    backup_image: Option<String>,
    /// backupJob.stallTimeout, such as 10m.
    #[arg(long, env = "TUSK_BACKUP_STALL_TIMEOUT")]
    backup_stall_timeout: Option<String>,
    /// tunnel.image.
    #[arg(long, env = "TUSK_TUNNEL_IMAGE")]
    tunnel_image: Option<String>,
    /// tunnel.externalHostTemplate, such as "{cluster}.{namespace}.db.example.com".
    #[arg(long, env = "TUSK_TUNNEL_HOST_TEMPLATE")]
    tunnel_host_template: Option<String>,
    /// tunnel.externalPort.
    #[arg(long, env = "TUSK_TUNNEL_PORT")]
    tunnel_port: Option<u16>,
    /// leaderElection.enabled.
    #[arg(long, env = "TUSK_LEADER_ELECTION")]
    leader_election: Option<bool>,
    /// leaderElection.leaseNamespace.
    #[arg(long, env = "TUSK_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// httpAddress: where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "TUSK_HTTP_ADDRESS")]
    http_address: Option<SocketAddr>,
}

impl OperatorArgs {
    fn configuration(self) -> anyhow::Result<OperatorConfig> {
        let file = match &self.config {
            Some(path) => OperatorConfig::from_file(path)?,
            None => OperatorConfig::default(),
        };
        let overrides = Overrides {
            store_url: self.store_url,
            store_endpoint: self.store_endpoint,
            store_region: self.store_region,
            store_allow_http: self.store_allow_http,
            default_postgres_version: self.default_postgres_version,
            backup_image: self.backup_image,
            backup_stall_timeout: self.backup_stall_timeout,
            tunnel_image: self.tunnel_image,
            tunnel_host_template: self.tunnel_host_template,
            tunnel_port: self.tunnel_port,
            leader_election: self.leader_election,
            lease_namespace: self.lease_namespace,
            http_address: self.http_address,
        };
        Ok(file.with_overrides(overrides)?)
    }
}

/// Runs `tusk operator` until SIGINT or SIGTERM.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let config = args.configuration()?;
    tusk_operator::install_crypto_provider();
    let client = crate::kube_client::client()
        .await
        .context("cannot reach Kubernetes")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping the operator");
    };
    tusk_operator::run(config, client, shutdown).await?;
    Ok(())
}
