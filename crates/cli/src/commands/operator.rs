//! `tusk operator`: all controllers, against the current kubeconfig or the in-cluster config.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::signal::unix::{SignalKind, signal};
use tusk_backup::gateway::{GatewayOptions, KubeClusterDirectory, StoreGateway};
use tusk_backup::store::{BackupStore, StoreConfig};
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
    /// store.gateway.address: where this replica serves the store gateway.
    #[arg(long, env = "TUSK_STORE_GATEWAY_ADDRESS")]
    store_gateway_address: Option<SocketAddr>,
    /// store.gateway.endpoint: the URL pods reach the store gateway at.
    #[arg(long, env = "TUSK_STORE_GATEWAY_ENDPOINT")]
    store_gateway_endpoint: Option<String>,
    /// postgres.defaultVersion.
    #[arg(long, env = "TUSK_DEFAULT_POSTGRES_VERSION")]
    default_postgres_version: Option<String>,
    /// backupJob.image.
    #[arg(long, env = "TUSK_BACKUP_IMAGE")]
    backup_image: Option<String>,
    /// backupJob.stallTimeout, such as 10m.
    #[arg(long, env = "TUSK_BACKUP_STALL_TIMEOUT")]
    backup_stall_timeout: Option<String>,
    /// backupJob.succeededTtl, such as 1h.
    #[arg(long, env = "TUSK_BACKUP_JOB_TTL")]
    backup_job_ttl: Option<String>,
    /// backupJob.failedTtl, such as 24h.
    #[arg(long, env = "TUSK_FAILED_BACKUP_JOB_TTL")]
    failed_backup_job_ttl: Option<String>,
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
    /// archiving.failingAfter, such as 5m.
    #[arg(long, env = "TUSK_ARCHIVING_FAILING_AFTER")]
    archiving_failing_after: Option<String>,
    /// archiving.checkInterval, such as 30s.
    #[arg(long, env = "TUSK_ARCHIVING_CHECK_INTERVAL")]
    archiving_check_interval: Option<String>,
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
            store_gateway_address: self.store_gateway_address,
            store_gateway_endpoint: self.store_gateway_endpoint,
            default_postgres_version: self.default_postgres_version,
            backup_image: self.backup_image,
            backup_stall_timeout: self.backup_stall_timeout,
            backup_succeeded_ttl: self.backup_job_ttl,
            backup_failed_ttl: self.failed_backup_job_ttl,
            // Set in the configuration file; `tusk dev` takes them as flags.
            tls_certificate_lifetime: None,
            tls_ca_overlap: None,
            tunnel_image: self.tunnel_image,
            tunnel_host_template: self.tunnel_host_template,
            tunnel_port: self.tunnel_port,
            leader_election: self.leader_election,
            lease_namespace: self.lease_namespace,
            http_address: self.http_address,
            archiving_failing_after: self.archiving_failing_after,
            archiving_check_interval: self.archiving_check_interval,
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
    // Every replica serves the gateway, leader or not, so pods reach the store whichever
    // replica the Service picks.
    let gateway = start_store_gateway(&config, &client).await?;
    let outcome = tusk_operator::run(config, client, shutdown).await;
    if let Some(gateway) = gateway {
        gateway.shutdown().await;
    }
    outcome?;
    Ok(())
}

/// The operator's own store client: the configured store with the platform's keys, read from
/// the Secret the configuration names.
pub async fn platform_store(
    config: &OperatorConfig,
    client: &kube::Client,
) -> anyhow::Result<BackupStore> {
    let settings = &config.store;
    let (access_key_id, secret_access_key) = match &settings.credentials {
        None => (None, None),
        Some(credentials) => {
            let secret = Api::<Secret>::namespaced(client.clone(), &credentials.namespace)
                .get(&credentials.name)
                .await
                .with_context(|| {
                    format!(
                        "cannot read the store's keys from Secret {}/{}",
                        credentials.namespace, credentials.name
                    )
                })?;
            let value = |key: &str| -> anyhow::Result<String> {
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|data| data.get(key))
                    .with_context(|| {
                        format!(
                            "Secret {}/{} has no key {key:?}",
                            credentials.namespace, credentials.name
                        )
                    })?;
                String::from_utf8(bytes.0.clone()).with_context(|| {
                    format!(
                        "Secret {}/{}: {key:?} is not text",
                        credentials.namespace, credentials.name
                    )
                })
            };
            (
                Some(value(&credentials.access_key_id_key)?),
                Some(value(&credentials.secret_access_key_key)?),
            )
        }
    };
    Ok(BackupStore::new(&StoreConfig {
        url: settings.url.clone(),
        endpoint: settings.endpoint.clone(),
        region: settings.region.clone(),
        access_key_id,
        secret_access_key,
        allow_http: settings.allow_http,
    })?)
}

/// Starts the store gateway in front of the configured store, unless the store is `file://`
/// (which pods use directly). The platform's keys and the gateway key are read once, at
/// start-up: rotating either means restarting the replicas.
pub async fn start_store_gateway(
    config: &OperatorConfig,
    client: &kube::Client,
) -> anyhow::Result<Option<StoreGateway>> {
    if !config.store.uses_gateway() {
        return Ok(None);
    }
    let settings = &config.store.gateway;
    let store = platform_store(config, client).await?;
    let key = tusk_backup::gateway::ensure_gateway_key(
        client,
        &settings.key_secret.namespace,
        &settings.key_secret.name,
        &settings.key_secret.key,
    )
    .await?;
    let gateway = StoreGateway::start(
        &store,
        GatewayOptions {
            address: settings.address,
            key,
            buffer_limit: u64::from(settings.buffer_mib) * 1024 * 1024,
            cluster_cache_ttl: settings.cluster_cache_ttl,
        },
        Arc::new(KubeClusterDirectory::new(client.clone())),
    )
    .await?;
    Ok(Some(gateway))
}
