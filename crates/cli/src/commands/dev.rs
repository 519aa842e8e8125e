//! `tusk dev`: the whole platform on one machine, in one process.
//!
//! It starts the sandbox API server with its local runtime (pods become local processes), the
//! embedded S3 server with the backup bucket, the store gateway in front of it (through which
//! pods reach the store), and the operator configured for that store, then
//! installs the CRDs and writes a kubeconfig. Everything it keeps lives under one directory, so
//! running it again resumes the same clusters, data and backups; Ctrl-C stops every process it
//! started, PostgreSQL included. On such a restart the sandbox marks the pods it is about to
//! start again as not ready before it serves, and `tusk dev` says it is running only once no
//! PostgresCluster still says Ready from before the stop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tusk_operator::config::{OperatorConfig, Overrides, StoreCredentials};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;
use tusk_sandbox::s3::{S3Options, S3Server};

/// The bucket `tusk dev` keeps backups in.
pub const BUCKET: &str = "tusk-backups";
/// The namespace of the operator's own objects (the store Secret).
const SYSTEM_NAMESPACE: &str = "tusk-system";
/// The Secret holding the embedded store's keys, as a platform team would create it.
const STORE_SECRET: &str = "tusk-dev-store";
/// The field manager of what `tusk dev` applies.
const FIELD_MANAGER: &str = "tusk-dev";

/// Arguments of `tusk dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the API server's objects, the pods' volumes, the S3 buckets and the kubeconfig
    /// live. Running again with the same directory resumes everything in it.
    #[arg(long, default_value = ".tusk")]
    pub data_dir: PathBuf,
    /// The API server's port on 127.0.0.1 (0 picks a free one; the kubeconfig names it).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// How long a backup may make no progress before it is stopped and fails
    /// (backupJob.stallTimeout, such as 10m).
    #[arg(long, env = "TUSK_BACKUP_STALL_TIMEOUT")]
    pub backup_stall_timeout: Option<String>,
    /// How long a succeeded backup's Job and pod stay before they are deleted
    /// (backupJob.succeededTtl, such as 1h).
    #[arg(long, env = "TUSK_BACKUP_JOB_TTL")]
    pub backup_job_ttl: Option<String>,
    /// How long any other finished backup Job and its pod stay (backupJob.failedTtl, such as
    /// 24h).
    #[arg(long, env = "TUSK_FAILED_BACKUP_JOB_TTL")]
    pub failed_backup_job_ttl: Option<String>,
    /// How long WAL archiving may fail before a cluster is Degraded (archiving.failingAfter,
    /// such as 5m).
    #[arg(long, env = "TUSK_ARCHIVING_FAILING_AFTER")]
    pub archiving_failing_after: Option<String>,
    /// How often each archiving cluster's archiver is looked at (archiving.checkInterval,
    /// such as 30s).
    #[arg(long, env = "TUSK_ARCHIVING_CHECK_INTERVAL")]
    pub archiving_check_interval: Option<String>,
    /// The percentage of a data volume in use from which its cluster is Degraded with reason
    /// DiskFull (disk.fullPercent, 1 to 100).
    #[arg(long, env = "TUSK_DISK_FULL_PERCENT")]
    pub disk_full_percent: Option<u8>,
    /// The size in GiB up to which the operator grows a full data volume by itself
    /// (disk.autoGrow.maxSizeGi; 0, the default, leaves volumes alone).
    #[arg(long, env = "TUSK_DISK_AUTO_GROW_MAX_SIZE_GI")]
    pub disk_auto_grow_max_size_gi: Option<i32>,
    /// How much a full data volume grows each time, as a percentage of its size
    /// (disk.autoGrow.stepPercent, 1 to 1000).
    #[arg(long, env = "TUSK_DISK_AUTO_GROW_STEP_PERCENT")]
    pub disk_auto_grow_step_percent: Option<i32>,
    /// How long an Event stays after its last write before the API server deletes it, as
    /// kube-apiserver's `--event-ttl` (such as 1h, the default).
    #[arg(long, env = "TUSK_EVENT_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub event_ttl: std::time::Duration,
    /// How long a server certificate is valid (tls.certificateLifetime, such as 90d); it is
    /// renewed after two thirds of it.
    #[arg(long)]
    pub tls_certificate_lifetime: Option<String>,
    /// How long both CAs are trusted in a CA rotation (tls.caOverlap, such as 30d).
    #[arg(long)]
    pub tls_ca_overlap: Option<String>,
    /// The router's port on 127.0.0.1 (0 picks a free one, which is printed).
    #[arg(long, default_value_t = 0)]
    pub router_port: u16,
    /// How long a client of the router has to send its ClientHello, such as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub router_handshake_timeout: std::time::Duration,
}

/// The host names `tusk dev`'s router routes by: `tunnel.externalHostTemplate` is the
/// Service's address here, which gives no name to route by.
const DEV_ROUTER_HOST_TEMPLATE: &str = "{cluster}.{namespace}.db.tusk.local";

/// What must stay the same from one run to the next: backups and pods name the store's
/// address, and its keys are in a Secret.
#[derive(Debug, Serialize, Deserialize)]
struct StoreState {
    port: u16,
    access_key: String,
    secret_key: String,
    /// The store gateway's port, which pods name in their environment.
    #[serde(default)]
    gateway_port: Option<u16>,
}

impl StoreState {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("s3.json")
    }

    fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a tusk dev store state file", path.display())
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        // It holds the store's secret key.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Starts the embedded S3 server on the port and keys of the previous run, if any.
async fn start_store(data_dir: &Path) -> anyhow::Result<S3Server> {
    let previous = StoreState::load(data_dir)?;
    let mut options = S3Options::default();
    if let Some(state) = &previous {
        options.address = SocketAddr::from((Ipv4Addr::LOCALHOST, state.port));
        options.access_key = Some(state.access_key.clone());
        options.secret_key = Some(state.secret_key.clone());
    }
    let server = S3Server::start(data_dir.join("s3"), options)
        .await
        .context(
            "cannot start the embedded S3 server (is another `tusk dev` using this directory?)",
        )?;
    server
        .create_bucket(BUCKET)
        .context("cannot create the backup bucket")?;
    StoreState {
        port: server.address().port(),
        access_key: server.access_key().to_owned(),
        secret_key: server.secret_key().to_owned(),
        gateway_port: previous.and_then(|state| state.gateway_port),
    }
    .save(data_dir)?;
    Ok(server)
}

/// Starts the store gateway in front of the embedded S3 server, on the port of the previous
/// run if any (pods name it), and points `config` at it.
async fn start_gateway(
    data_dir: &Path,
    config: &mut OperatorConfig,
    client: &kube::Client,
) -> anyhow::Result<Option<tusk_backup::gateway::StoreGateway>> {
    let mut state = StoreState::load(data_dir)?
        .context("the store state file vanished while tusk dev was starting")?;
    config.store.gateway.address =
        SocketAddr::from((Ipv4Addr::LOCALHOST, state.gateway_port.unwrap_or(0)));
    let gateway = super::operator::start_store_gateway(config, client)
        .await
        .context("cannot start the store gateway")?;
    if let Some(gateway) = &gateway {
        config.store.gateway.endpoint = format!("http://{}", gateway.address());
        state.gateway_port = Some(gateway.address().port());
        state.save(data_dir)?;
    }
    Ok(gateway)
}

/// The newest PostgreSQL major version installed here, which new clusters default to.
fn local_postgres_version() -> Option<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("bin/postgres").is_file())
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    versions.last().map(u32::to_string)
}

fn operator_config(store: &S3Server, args: &DevArgs) -> anyhow::Result<OperatorConfig> {
    let mut config = OperatorConfig::default();
    config.store.url = format!("s3://{BUCKET}/dev");
    config.store.endpoint = Some(store.endpoint().to_owned());
    config.store.allow_http = true;
    config.store.credentials = Some(StoreCredentials {
        namespace: SYSTEM_NAMESPACE.to_owned(),
        name: STORE_SECRET.to_owned(),
        access_key_id_key: "access-key-id".to_owned(),
        secret_access_key_key: "secret-access-key".to_owned(),
    });
    // The gateway key is created in the operator's namespace on first start.
    config.store.gateway.key_secret.namespace = SYSTEM_NAMESPACE.to_owned();
    // So is every cluster's CA.
    config.tls.ca_namespace = SYSTEM_NAMESPACE.to_owned();
    if let Some(version) = local_postgres_version() {
        config.postgres.default_version = version;
    }
    // Customers' clusters run on this machine too, where the database Service's address is
    // reachable as it is.
    config.tunnel.external_host_template = "{serviceIP}".to_owned();
    config.tunnel.router_host_template = Some(DEV_ROUTER_HOST_TEMPLATE.to_owned());
    config.tunnel.replicas = 1;
    config.leader_election.enabled = false;
    config.http_address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    if let Some(percent) = args.disk_full_percent {
        config.disk.full_percent = percent;
    }
    if let Some(size) = args.disk_auto_grow_max_size_gi {
        config.disk.auto_grow.max_size_gi = size;
    }
    if let Some(percent) = args.disk_auto_grow_step_percent {
        config.disk.auto_grow.step_percent = percent;
    }
    config
        .with_overrides(Overrides {
            backup_stall_timeout: args.backup_stall_timeout.clone(),
            backup_succeeded_ttl: args.backup_job_ttl.clone(),
            backup_failed_ttl: args.failed_backup_job_ttl.clone(),
            archiving_failing_after: args.archiving_failing_after.clone(),
            archiving_check_interval: args.archiving_check_interval.clone(),
            tls_certificate_lifetime: args.tls_certificate_lifetime.clone(),
            tls_ca_overlap: args.tls_ca_overlap.clone(),
            ..Overrides::default()
        })
        .context("the operator configuration for `tusk dev` is invalid")
}

async fn apply<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("cannot apply {name}"))?;
    Ok(())
}

/// What a platform team installs once: the CRDs, the operator's namespace and the store Secret.
async fn install(client: &kube::Client, store: &S3Server) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tusk_api::crds() {
        apply(&crds, &crd).await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(SYSTEM_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    apply(&namespaces, &namespace).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(STORE_SECRET.to_owned()),
            namespace: Some(SYSTEM_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                (
                    "access-key-id".to_owned(),
                    ByteString(store.access_key().as_bytes().to_vec()),
                ),
                (
                    "secret-access-key".to_owned(),
                    ByteString(store.secret_key().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    apply(&secrets, &secret).await
}

/// Waits until the API server serves the CRDs' kinds.
async fn wait_for_crds(client: &kube::Client) -> anyhow::Result<()> {
    let clusters: Api<tusk_api::PostgresCluster> = Api::all(client.clone());
    for _ in 0..100 {
        if clusters.list(&Default::default()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the API server does not serve PostgresClusters after installing the CRDs")
}

/// The longest `tusk dev` waits at start for the statuses from before a restart to be replaced.
const STALE_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a PostgresCluster says Ready while none of its instance pods is: a status from
/// before a restart, which the operator has not replaced yet.
async fn stale_ready(client: &kube::Client, cluster: &tusk_api::PostgresCluster) -> bool {
    use kube::ResourceExt;
    let says_ready = cluster.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True")
    });
    if !says_ready {
        return false;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let selector = tusk_operator::labels::selector_string(
        &tusk_operator::labels::instance_selector(&cluster.name_any()),
    );
    let Ok(pods) = pods.list(&ListParams::default().labels(&selector)).await else {
        return true;
    };
    !pods.items.iter().any(tusk_sandbox::controllers::is_ready)
}

/// Waits until no PostgresCluster says Ready from before a restart. The sandbox marks the
/// pods it restarts as not ready before it serves; until the operator has seen that, a
/// cluster still says Ready from before the stop, and a readiness wait started once `tusk dev`
/// says it runs would pass before PostgreSQL answers.
async fn wait_for_current_statuses(client: &kube::Client) {
    let clusters: Api<tusk_api::PostgresCluster> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + STALE_READY_WAIT;
    loop {
        let mut stale = Vec::new();
        if let Ok(list) = clusters.list(&ListParams::default()).await {
            for cluster in &list.items {
                if stale_ready(client, cluster).await {
                    stale.push(kube::ResourceExt::name_any(cluster));
                }
            }
        }
        if stale.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                clusters = %stale.join(", "),
                "these clusters still say Ready from before the restart, although no instance of theirs is ready"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn usage(kubeconfig: &Path, store: &S3Server, gateway: &str) -> String {
    let kubeconfig = kubeconfig.display();
    format!(
        "\
tusk dev is running. In another terminal:

  export KUBECONFIG={kubeconfig}
  kubectl apply -f examples/elephant.yaml
  kubectl get pgc -w
  kubectl apply -f examples/my-backup.yaml
  kubectl get pgbr,pgb

Backups go to the embedded S3 server at {endpoint}, bucket {BUCKET}; databases and backup
Jobs reach it through the store gateway at {gateway}, each with keys for its own prefix only.
Press Ctrl-C to stop everything; run `tusk dev` again to resume.
",
        endpoint = store.endpoint()
    )
}

/// Starts the router on 127.0.0.1, routing by the operator's router template; returns its
/// address.
async fn start_router(
    args: &DevArgs,
    config: &OperatorConfig,
    client: kube::Client,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let options = super::router::options(
        SocketAddr::from((Ipv4Addr::LOCALHOST, args.router_port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        config.tunnel.router_template(),
        args.router_handshake_timeout,
    )?;
    let running = tusk_router::start(client, options, shutdown)
        .await
        .context("cannot start the router")?;
    Ok(running.address)
}

fn router_usage(router: SocketAddr) -> String {
    format!(
        "\
The router listens at {router}: a database with spec.externalAccess open to 127.0.0.1/32 is
reached by its name, {DEV_ROUTER_HOST_TEMPLATE}, with its ca.crt:
  psql \"host=elephant.default.db.tusk.local hostaddr={ip} port={port} sslmode=verify-full sslrootcert=ca.crt user=app dbname=app\"
",
        ip = router.ip(),
        port = router.port(),
    )
}

/// Runs `tusk dev` until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    tusk_operator::install_crypto_provider();
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;

    let store = start_store(&data_dir).await?;
    let tusk = std::env::current_exe().context("cannot find the tusk executable")?;
    let kubeconfig = data_dir.join("kubeconfig");
    let sandbox = Sandbox::builder()
        .port(args.port)
        .event_ttl(args.event_ttl)
        .data_dir(data_dir.join("apiserver"))
        .kubeconfig_path(&kubeconfig)
        .runtime(RuntimeOptions::new(data_dir.join("runtime")).tusk_executable(tusk))
        .start()
        .await
        .context("cannot start the sandbox")?;
    let client = sandbox
        .client()
        .await
        .context("cannot connect to the sandbox")?;
    install(&client, &store).await?;
    wait_for_crds(&client).await?;
    let mut config = operator_config(&store, &args)?;
    let gateway = start_gateway(&data_dir, &mut config, &client).await?;
    let gateway_endpoint = config.store.gateway.endpoint.clone();
    let stop_router = tokio_util::sync::CancellationToken::new();
    let router = start_router(&args, &config, client.clone(), stop_router.clone()).await?;
    // Each open database's status.externalEndpoint and external-uri name this router.
    config.tunnel.router_port = router.port();
    // Tunnels in customers' clusters (sandboxes on this machine) reach it here too: no DNS
    // resolves the database names.
    config.tunnel.router_address = Some(router.to_string());

    let (stop_operator, operator_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut operator = tokio::spawn(tusk_operator::run(config, client.clone(), async move {
        let _ = operator_stopped.await;
    }));
    wait_for_current_statuses(&client).await;
    eprint!("{}", usage(&kubeconfig, &store, &gateway_endpoint));
    eprint!("{}", router_usage(router));

    // The operator ending on its own is a failure to report, not a reason to keep the
    // databases running unmanaged.
    let outcome = tokio::select! {
        _ = interrupt.recv() => Ok(()),
        _ = terminate.recv() => Ok(()),
        ended = &mut operator => Err(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the operator stopped unexpectedly"),
            Ok(Err(error)) => anyhow::Error::new(error).context("the operator stopped"),
            Err(error) => anyhow::Error::new(error).context("the operator task failed"),
        }),
    };
    eprintln!("Stopping tusk dev: the operator, every pod's processes, then the servers.");
    let _ = stop_operator.send(());
    if !operator.is_finished() {
        match operator.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the operator stopped with an error"),
            Err(error) => tracing::warn!(%error, "the operator task failed"),
        }
    }
    stop_router.cancel();
    sandbox.shutdown().await;
    if let Some(gateway) = gateway {
        gateway.shutdown().await;
    }
    store.shutdown().await;
    outcome
}
