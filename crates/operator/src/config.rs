//! The operator's configuration: a YAML file (usually mounted from a ConfigMap), with command-line
//! flags and `TUSK_*` environment variables overriding single keys (see [`Overrides`]).
//!
//! Every key has a default except where a safe one does not exist; a bad value stops start-up with
//! an error naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The operator's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// Where backups and archived WAL are stored, and the credentials to reach the store.
    pub store: StoreSettings,
    /// PostgreSQL versions and their images.
    pub postgres: PostgresSettings,
    /// The Jobs that take backups.
    pub backup_job: BackupJobSettings,
    /// How a tunnel in a customer's cluster reaches each database from outside the workload
    /// cluster.
    pub tunnel: TunnelSettings,
    /// The certificates every database serves TLS with.
    pub tls: TlsSettings,
    /// How many objects each controller reconciles at once.
    pub concurrency: ConcurrencySettings,
    /// Leader election between operator replicas.
    pub leader_election: LeaderElectionSettings,
    /// How clusters' WAL archiving is watched.
    pub archiving: ArchivingSettings,
    /// When a cluster's data volume counts as full.
    pub disk: DiskSettings,
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`. Default
    /// `0.0.0.0:8080`. Flag `--http-address`, env `TUSK_HTTP_ADDRESS`.
    pub http_address: SocketAddr,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            store: StoreSettings::default(),
            postgres: PostgresSettings::default(),
            backup_job: BackupJobSettings::default(),
            tunnel: TunnelSettings::default(),
            tls: TlsSettings::default(),
            concurrency: ConcurrencySettings::default(),
            leader_election: LeaderElectionSettings::default(),
            archiving: ArchivingSettings::default(),
            disk: DiskSettings::default(),
            http_address: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// The backup object store.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StoreSettings {
    /// The store and prefix under which every backup and WAL segment is written, such as
    /// `s3://tusk-backups/production` (also `gs://`, `az://` and `file:///`). Required. Flag
    /// `--store-url`, env `TUSK_STORE_URL`.
    pub url: String,
    /// A custom S3 endpoint (MinIO, Ceph, the sandbox's embedded S3), addressed path-style.
    /// Absent for the provider's default. Flag `--store-endpoint`, env `TUSK_STORE_ENDPOINT`.
    pub endpoint: Option<String>,
    /// The store's region, such as `eu-central-1`. Flag `--store-region`, env
    /// `TUSK_STORE_REGION`.
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints. Default false. Env `TUSK_STORE_ALLOW_HTTP`.
    pub allow_http: bool,
    /// The Secret holding the store's access keys. Absent when the store needs none (a file
    /// store, or credentials from the operator's pod identity). Only the operator uses them:
    /// instances and backup Jobs reach the store through the gateway.
    pub credentials: Option<StoreCredentials>,
    /// The S3 gateway, served by every operator replica, through which instances and backup
    /// Jobs reach the store with credentials that reach only their own cluster's prefix.
    pub gateway: GatewaySettings,
}

impl StoreSettings {
    /// Whether pods reach the store through the gateway: every store but `file://`, which
    /// exists for tests on one machine and has no credentials to guard.
    pub fn uses_gateway(&self) -> bool {
        !self.url.starts_with("file:")
    }

    /// The store URL pods use: always `s3://` (the gateway speaks S3 whatever the store
    /// behind it), with the configured bucket and prefix.
    pub fn gateway_url(&self) -> String {
        match self.url.split_once("://") {
            Some((_, rest)) => format!("s3://{}", rest.trim_end_matches('/')),
            None => self.url.clone(),
        }
    }
}

/// The object-store gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Where each replica serves the gateway. Default `0.0.0.0:9000`. Flag
    /// `--store-gateway-address`, env `TUSK_STORE_GATEWAY_ADDRESS`.
    pub address: SocketAddr,
    /// The URL under which pods in every namespace reach the gateway: the `tusk-store-gateway`
    /// Service. Default `http://tusk-store-gateway.tusk-system.svc:9000`. Flag
    /// `--store-gateway-endpoint`, env `TUSK_STORE_GATEWAY_ENDPOINT`.
    pub endpoint: String,
    /// The Secret holding the key every cluster's gateway secret is derived from. The operator
    /// creates it with a random key when it does not exist.
    pub key_secret: GatewayKeySecret,
    /// Request bodies (objects and upload parts) the gateway holds in memory at once, in MiB;
    /// a larger single body is refused. Default 256.
    pub buffer_mib: u32,
    /// How long the gateway trusts that a cluster exists before asking again; a deleted
    /// cluster's credentials work at most this long. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub cluster_cache_ttl: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([0, 0, 0, 0], 9000)),
            endpoint: "http://tusk-store-gateway.tusk-system.svc:9000".to_owned(),
            key_secret: GatewayKeySecret::default(),
            buffer_mib: 256,
            cluster_cache_ttl: Duration::from_secs(30),
        }
    }
}

/// Where the gateway key is kept: a Secret in the operator's own namespace, never a tenant's.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayKeySecret {
    /// Namespace of the Secret. Default `POD_NAMESPACE`, else `tusk-system`.
    pub namespace: String,
    /// Name of the Secret. Default `tusk-store-gateway`.
    pub name: String,
    /// The Secret's key holding the gateway key. Default `key`.
    pub key: String,
}

impl Default for GatewayKeySecret {
    fn default() -> Self {
        Self {
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "tusk-system".to_owned()),
            name: "tusk-store-gateway".to_owned(),
            key: "key".to_owned(),
        }
    }
}

/// A Secret holding object-store access keys.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreCredentials {
    /// Namespace of the Secret, usually the operator's own.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key holding the access key id. Default `access-key-id`.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key. Default `secret-access-key`.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    BACKUP_STORE_ACCESS_KEY_ID.to_owned()
}

fn default_secret_access_key_key() -> String {
    BACKUP_STORE_SECRET_ACCESS_KEY.to_owned()
}

/// The key of the access key id in the per-cluster `<cluster>-backup-store` Secret.
pub const BACKUP_STORE_ACCESS_KEY_ID: &str = "access-key-id";
/// The key of the secret access key in the per-cluster `<cluster>-backup-store` Secret.
pub const BACKUP_STORE_SECRET_ACCESS_KEY: &str = "secret-access-key";

/// PostgreSQL versions.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// The major version a cluster gets when its spec names none; recorded in the cluster's
    /// spec. Default `"15"`. Flag `--default-postgres-version`, env
    /// `TUSK_DEFAULT_POSTGRES_VERSION`.
    pub default_version: String,
    /// The instance image per major version. The image holds PostgreSQL and the `tusk` binary.
    /// Must contain `defaultVersion`. Default `{"15": "ghcr.io/tusk-dev/tusk-postgres:15"}`.
    pub images: BTreeMap<String, String>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            default_version: "15".to_owned(),
            images: BTreeMap::from([(
                "15".to_owned(),
                "ghcr.io/tusk-dev/tusk-postgres:15".to_owned(),
            )]),
        }
    }
}

/// Backup Jobs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackupJobSettings {
    /// The image the backup Jobs run (it needs `tusk` and `pg_basebackup`). Default
    /// `ghcr.io/tusk-dev/tusk-postgres:15`. Flag `--backup-image`, env `TUSK_BACKUP_IMAGE`.
    pub image: String,
    /// How long a running backup may report no progress before its request is failed and its
    /// Job deleted, as a duration such as `10m`. Default `10m`. Flag `--backup-stall-timeout`,
    /// env `TUSK_BACKUP_STALL_TIMEOUT`.
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// The longest a backup Job may run at all (its `activeDeadlineSeconds`), a backstop if
    /// the operator itself is down. Default `12h`.
    #[serde(deserialize_with = "duration")]
    pub active_deadline: Duration,
    /// `gzip` or `zstd`. Default `gzip`.
    pub compression: String,
    /// The compression level. Default 6.
    pub compression_level: u32,
    /// How long a backup Job whose request succeeded stays, with its pod and logs, before
    /// Kubernetes deletes it (its `ttlSecondsAfterFinished`). The request keeps the result.
    /// Default `1h`. Flag `--backup-job-ttl`, env `TUSK_BACKUP_JOB_TTL`.
    #[serde(deserialize_with = "duration")]
    pub succeeded_ttl: Duration,
    /// The same for every other finished backup Job, kept longer so that its logs can be read.
    /// A Job starts with this TTL, shortened to `succeededTtl` once its backup is recorded, so
    /// that no Job goes before the operator has read its outcome. Default `24h`. Flag
    /// `--failed-backup-job-ttl`, env `TUSK_FAILED_BACKUP_JOB_TTL`.
    #[serde(deserialize_with = "duration")]
    pub failed_ttl: Duration,
}

impl BackupJobSettings {
    /// `succeededTtl` as `ttlSecondsAfterFinished`.
    pub fn succeeded_ttl_seconds(&self) -> i32 {
        ttl_seconds(self.succeeded_ttl)
    }

    /// `failedTtl` as `ttlSecondsAfterFinished`.
    pub fn failed_ttl_seconds(&self) -> i32 {
        ttl_seconds(self.failed_ttl)
    }
}

/// A duration in whole seconds as a Job's `ttlSecondsAfterFinished` holds it (validation keeps
/// it in range).
fn ttl_seconds(ttl: Duration) -> i32 {
    i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX)
}

impl Default for BackupJobSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/tusk-dev/tusk-postgres:15".to_owned(),
            stall_timeout: Duration::from_secs(600),
            active_deadline: Duration::from_secs(12 * 3600),
            compression: "gzip".to_owned(),
            compression_level: 6,
            succeeded_ttl: Duration::from_secs(3600),
            failed_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The external-host placeholder for the database Service's cluster IP.
const SERVICE_IP_PLACEHOLDER: &str = "{serviceIP}";

/// Tunnels in customers' clusters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// The image of the tunnel Deployment (it needs `tusk`). Default
    /// `ghcr.io/tusk-dev/tusk:latest`. Flag `--tunnel-image`, env `TUSK_TUNNEL_IMAGE`.
    pub image: String,
    /// The host name under which a database is reachable from outside the workload cluster;
    /// `{cluster}` and `{namespace}` are replaced by the PostgresCluster's name and namespace,
    /// and `{serviceIP}` by the cluster IP of its `<cluster>-rw` Service (for when the
    /// customers' clusters can reach the workload cluster's service network, as in `tusk dev`).
    /// Default `{cluster}.{namespace}.db.tusk.local`. Flag `--tunnel-host-template`, env
    /// `TUSK_TUNNEL_HOST_TEMPLATE`.
    pub external_host_template: String,
    /// The host name under which `tusk router` routes each database (docs/external-access.md),
    /// with `{cluster}` and `{namespace}`; it is a name of the database's certificate too.
    /// Absent: `externalHostTemplate`, one template for both paths. Set it only where the
    /// tunnel reaches the databases' service network directly, as in `tusk dev`, whose
    /// `externalHostTemplate` is `{serviceIP}`: a client sends no name for an address, so the
    /// router cannot route by one.
    pub router_host_template: Option<String>,
    /// The port clients reach `tusk router` on: its load balancer's. Default 5432. It goes
    /// into each open database's `status.externalEndpoint` and `external-uri`.
    pub router_port: u16,
    /// The port on that host. Default 5432. Flag `--tunnel-port`, env `TUSK_TUNNEL_PORT`.
    pub external_port: u16,
    /// Where tunnels in customers' clusters dial `tusk router`, as host:port. Absent: each
    /// database's router host name and `routerPort`, which the DNS record of the router's load
    /// balancer answers. Set it where that name does not resolve, as `tusk dev` does.
    pub router_address: Option<String>,
    /// Tunnel replicas in the customer's cluster. Default 2.
    pub replicas: i32,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/tusk-dev/tusk:latest".to_owned(),
            external_host_template: "{cluster}.{namespace}.db.tusk.local".to_owned(),
            router_host_template: None,
            router_port: 5432,
            external_port: 5432,
            router_address: None,
            replicas: 2,
        }
    }
}

impl TunnelSettings {
    /// Whether the external host names the database Service's cluster IP.
    pub fn needs_service_ip(&self) -> bool {
        self.external_host_template.contains(SERVICE_IP_PLACEHOLDER)
    }

    /// The external host of `cluster` in `namespace`, given its Service's cluster IP when the
    /// template asks for it.
    pub fn external_host(
        &self,
        namespace: &str,
        cluster: &str,
        service_ip: Option<&str>,
    ) -> String {
        self.external_host_template
            .replace("{cluster}", cluster)
            .replace("{namespace}", namespace)
            .replace(SERVICE_IP_PLACEHOLDER, service_ip.unwrap_or_default())
    }

    /// The template `tusk router` routes by: `routerHostTemplate`, else `externalHostTemplate`.
    pub fn router_template(&self) -> &str {
        self.router_host_template
            .as_deref()
            .unwrap_or(&self.external_host_template)
    }

    /// Where a client outside reaches `cluster` through the router (host and port), while its
    /// `spec.externalAccess` opens it to some sources and the router template gives names.
    pub fn router_endpoint(&self, cluster: &tusk_api::PostgresCluster) -> Option<(String, u16)> {
        let open = cluster
            .spec
            .external_access
            .as_ref()
            .is_some_and(|access| !access.allowed_source_ranges.is_empty());
        let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
        let name = cluster.metadata.name.as_deref()?;
        open.then(|| self.router_host(namespace, name))
            .flatten()
            .map(|host| (host, self.router_port))
    }

    /// How a tunnel into a customer's cluster reaches `cluster` in `namespace` through the
    /// router: the name it asks the router for and the address it dials. `None` where the
    /// router template gives no names (a setup without a router): the tunnel then dials the
    /// external host directly.
    pub fn tunnel_via_router(&self, namespace: &str, cluster: &str) -> Option<(String, String)> {
        let name = self.router_host(namespace, cluster)?;
        let address = self
            .router_address
            .clone()
            .unwrap_or_else(|| format!("{name}:{}", self.router_port));
        Some((name, address))
    }

    /// The host name under which the router routes `cluster` in `namespace`, when the router
    /// template gives names (not `{serviceIP}`).
    pub fn router_host(&self, namespace: &str, cluster: &str) -> Option<String> {
        let template = self.router_template();
        (!template.contains(SERVICE_IP_PLACEHOLDER)).then(|| {
            template
                .replace("{cluster}", cluster)
                .replace("{namespace}", namespace)
        })
    }
}

/// The certificates every database serves TLS with: each cluster has its own CA, whose key
/// stays in the operator's namespace (a tenant can read every Secret in its own).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Namespace of the Secrets holding each cluster's CA key, `tusk-ca-<cluster uid>`.
    /// Default `POD_NAMESPACE`, else `tusk-system`.
    pub ca_namespace: String,
    /// The workload cluster's DNS domain, for the `<service>.<namespace>.svc.<domain>` name in
    /// every server certificate. Default `cluster.local`.
    pub cluster_domain: String,
    /// How long a server certificate is valid. Default `365d`; at least `10s`. `tusk dev`
    /// takes it as `--tls-certificate-lifetime`.
    #[serde(deserialize_with = "duration")]
    pub certificate_lifetime: Duration,
    /// The fraction of a server certificate's lifetime after which it is renewed, between 0
    /// and 1. Default two thirds: a certificate is renewed with a third of its life left.
    pub renew_at_fraction: f64,
    /// How long both CAs are trusted in a CA rotation: first the new CA is published next to
    /// the old one before it signs, then the old one stays published after. Default `30d`.
    /// `tusk dev` takes it as `--tls-ca-overlap`.
    #[serde(deserialize_with = "duration")]
    pub ca_overlap: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            ca_namespace: std::env::var("POD_NAMESPACE")
                .unwrap_or_else(|_| "tusk-system".to_owned()),
            cluster_domain: "cluster.local".to_owned(),
            certificate_lifetime: Duration::from_secs(365 * 24 * 3600),
            renew_at_fraction: 2.0 / 3.0,
            ca_overlap: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl TlsSettings {
    /// The shortest certificate lifetime: renewal and reload need a few seconds.
    pub const MIN_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(10);

    /// How long after its issue a server certificate is renewed.
    pub fn renew_after(&self) -> Duration {
        self.certificate_lifetime.mul_f64(self.renew_at_fraction)
    }
}

/// How many objects of each kind are reconciled at once. kube-runtime's default is unbounded,
/// which lets a burst of objects exhaust memory.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConcurrencySettings {
    /// PostgresClusters. Default 16.
    pub cluster: u16,
    /// PostgresRemoteClusters. Default 4.
    pub remote_cluster: u16,
    /// PostgresBackupRequests. Default 8.
    pub backup_request: u16,
    /// PostgresBackupSchedules. Default 8.
    pub backup_schedule: u16,
    /// PostgresBackups. Default 4.
    pub backup: u16,
}

impl Default for ConcurrencySettings {
    fn default() -> Self {
        Self {
            cluster: 16,
            remote_cluster: 4,
            backup_request: 8,
            backup_schedule: 8,
            backup: 4,
        }
    }
}

/// When a cluster's data volume counts as full.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DiskSettings {
    /// The percentage of the data volume in use from which a cluster is `Degraded` with reason
    /// `DiskFull`, from 1 to 100. Default 85.
    pub full_percent: u8,
    /// Whether and how far the operator grows a full data volume by itself. Off by default.
    pub auto_grow: AutoGrowSettings,
}

impl Default for DiskSettings {
    fn default() -> Self {
        Self {
            full_percent: 85,
            auto_grow: AutoGrowSettings::default(),
        }
    }
}

/// Growing a full data volume without waiting for its owner: each time a cluster is
/// `DiskFull`, its volumes' requested storage goes up by a step, never above a limit the
/// platform sets (its storage must allow volume expansion).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AutoGrowSettings {
    /// The size in GiB no volume is grown beyond; 0 (the default) leaves volumes as their
    /// owners sized them. A volume its owner made larger is never shrunk.
    pub max_size_gi: i32,
    /// How much a volume grows each time, as a percentage of its size, rounded up to whole
    /// GiB (at least 1 GiB), from 1 to 1000. Default 50.
    pub step_percent: i32,
}

impl Default for AutoGrowSettings {
    fn default() -> Self {
        Self {
            max_size_gi: 0,
            step_percent: 50,
        }
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElectionSettings {
    /// Elect a leader among replicas. Default true. Flag `--leader-election`, env
    /// `TUSK_LEADER_ELECTION`.
    pub enabled: bool,
    /// Namespace of the Lease. Default `tusk-system`, or env `POD_NAMESPACE` when set. Env
    /// `TUSK_LEASE_NAMESPACE`.
    pub lease_namespace: String,
    /// Name of the Lease. Default `tusk-operator`.
    pub lease_name: String,
    /// How long a leader's claim lasts without renewal; a standby takes over after it. Default
    /// `15s`.
    #[serde(deserialize_with = "duration")]
    pub lease_duration: Duration,
    /// How often the leader renews its claim; less than `leaseDuration`. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub renew_interval: Duration,
}

impl Default for LeaderElectionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_namespace: std::env::var("POD_NAMESPACE")
                .unwrap_or_else(|_| "tusk-system".to_owned()),
            lease_name: "tusk-operator".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        }
    }
}

/// How clusters' WAL archiving is watched: the operator reads each archiving cluster's
/// archiver state from its instance and reports a failure that lasts.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ArchivingSettings {
    /// How long archiving may fail before the cluster is `Degraded` (`ArchivingFailing`), so
    /// that a short outage of the store, which PostgreSQL rides out by retrying, does not
    /// page anyone. Default `5m`. Flag `--archiving-failing-after`, env
    /// `TUSK_ARCHIVING_FAILING_AFTER`.
    #[serde(deserialize_with = "duration")]
    pub failing_after: Duration,
    /// How often the archiver's state is read from each archiving cluster's instance. Default
    /// `30s`. Flag `--archiving-check-interval`, env `TUSK_ARCHIVING_CHECK_INTERVAL`.
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
}

impl Default for ArchivingSettings {
    fn default() -> Self {
        Self {
            failing_after: Duration::from_secs(300),
            check_interval: Duration::from_secs(30),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A duration given as an override, such as `10m`.
fn parse_override(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|error| ConfigError::Invalid {
        key,
        message: error.to_string(),
    })
}

/// Single keys set on the command line or in `TUSK_*` environment variables; each overrides the
/// file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `store.url`.
    pub store_url: Option<String>,
    /// `store.endpoint`.
    pub store_endpoint: Option<String>,
    /// `store.region`.
    pub store_region: Option<String>,
    /// `store.allowHttp`.
    pub store_allow_http: Option<bool>,
    /// `store.gateway.address`.
    pub store_gateway_address: Option<SocketAddr>,
    /// `store.gateway.endpoint`.
    pub store_gateway_endpoint: Option<String>,
    /// `postgres.defaultVersion`.
    pub default_postgres_version: Option<String>,
    /// `backupJob.image`.
    pub backup_image: Option<String>,
    /// `backupJob.stallTimeout`, as text such as `10m`.
    pub backup_stall_timeout: Option<String>,
    /// `backupJob.succeededTtl`, as text such as `1h`.
    pub backup_succeeded_ttl: Option<String>,
    /// `backupJob.failedTtl`, as text such as `24h`.
    pub backup_failed_ttl: Option<String>,
    /// `tls.certificateLifetime`, as text such as `90d`.
    pub tls_certificate_lifetime: Option<String>,
    /// `tls.caOverlap`, as text such as `30d`.
    pub tls_ca_overlap: Option<String>,
    /// `tunnel.image`.
    pub tunnel_image: Option<String>,
    /// `tunnel.externalHostTemplate`.
    pub tunnel_host_template: Option<String>,
    /// `tunnel.externalPort`.
    pub tunnel_port: Option<u16>,
    /// `leaderElection.enabled`.
    pub leader_election: Option<bool>,
    /// `leaderElection.leaseNamespace`.
    pub lease_namespace: Option<String>,
    /// `httpAddress`.
    pub http_address: Option<SocketAddr>,
    /// `archiving.failingAfter`, as text such as `5m`.
    pub archiving_failing_after: Option<String>,
    /// `archiving.checkInterval`, as text such as `30s`.
    pub archiving_check_interval: Option<String>,
}

/// The configuration cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for the configuration, or a key has a bad value.
    #[error("bad configuration key `{key}`: {message}")]
    Parse {
        /// The key's path, such as `backupJob.stallTimeout`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("bad configuration key `{key}`: {message}")]
    Invalid {
        /// The key's path.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl OperatorConfig {
    /// Parses a YAML document. Unknown keys are refused, so that a typo does not silently fall
    /// back to a default.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::Parse {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: error.into_inner().to_string(),
            }
        })
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Applies overrides, then validates the result.
    pub fn with_overrides(mut self, overrides: Overrides) -> Result<Self, ConfigError> {
        let Overrides {
            store_url,
            store_endpoint,
            store_region,
            store_allow_http,
            store_gateway_address,
            store_gateway_endpoint,
            default_postgres_version,
            backup_image,
            backup_stall_timeout,
            backup_succeeded_ttl,
            backup_failed_ttl,
            tls_certificate_lifetime,
            tls_ca_overlap,
            tunnel_image,
            tunnel_host_template,
            tunnel_port,
            leader_election,
            lease_namespace,
            http_address,
            archiving_failing_after,
            archiving_check_interval,
        } = overrides;
        if let Some(url) = store_url {
            self.store.url = url;
        }
        if let Some(endpoint) = store_endpoint {
            self.store.endpoint = Some(endpoint);
        }
        if let Some(region) = store_region {
            self.store.region = Some(region);
        }
        if let Some(allow_http) = store_allow_http {
            self.store.allow_http = allow_http;
        }
        if let Some(address) = store_gateway_address {
            self.store.gateway.address = address;
        }
        if let Some(endpoint) = store_gateway_endpoint {
            self.store.gateway.endpoint = endpoint;
        }
        if let Some(version) = default_postgres_version {
            self.postgres.default_version = version;
        }
        if let Some(image) = backup_image {
            self.backup_job.image = image;
        }
        if let Some(timeout) = backup_stall_timeout {
            self.backup_job.stall_timeout = parse_override("backupJob.stallTimeout", &timeout)?;
        }
        if let Some(ttl) = backup_succeeded_ttl {
            self.backup_job.succeeded_ttl = parse_override("backupJob.succeededTtl", &ttl)?;
        }
        if let Some(ttl) = backup_failed_ttl {
            self.backup_job.failed_ttl = parse_override("backupJob.failedTtl", &ttl)?;
        }
        if let Some(lifetime) = tls_certificate_lifetime {
            self.tls.certificate_lifetime = parse_override("tls.certificateLifetime", &lifetime)?;
        }
        if let Some(overlap) = tls_ca_overlap {
            self.tls.ca_overlap = parse_override("tls.caOverlap", &overlap)?;
        }
        if let Some(image) = tunnel_image {
            self.tunnel.image = image;
        }
        if let Some(template) = tunnel_host_template {
            self.tunnel.external_host_template = template;
        }
        if let Some(port) = tunnel_port {
            self.tunnel.external_port = port;
        }
        if let Some(enabled) = leader_election {
            self.leader_election.enabled = enabled;
        }
        if let Some(namespace) = lease_namespace {
            self.leader_election.lease_namespace = namespace;
        }
        if let Some(address) = http_address {
            self.http_address = address;
        }
        if let Some(after) = archiving_failing_after {
            self.archiving.failing_after = parse_override("archiving.failingAfter", &after)?;
        }
        if let Some(interval) = archiving_check_interval {
            self.archiving.check_interval = parse_override("archiving.checkInterval", &interval)?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value that parsing cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        let url = self.store.url.as_str();
        if url.is_empty() {
            return Err(invalid(
                "store.url",
                "required: where backups are stored, such as s3://bucket/prefix",
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("store.url", format!("{url:?} is not a URL")));
        };
        if !matches!(scheme, "s3" | "gs" | "az" | "file") {
            return Err(invalid(
                "store.url",
                format!("scheme {scheme:?} is not one of s3, gs, az, file"),
            ));
        }
        if scheme != "file" && rest.split('/').next().unwrap_or_default().is_empty() {
            return Err(invalid("store.url", format!("{url:?} names no bucket")));
        }
        let gateway = &self.store.gateway;
        let gateway_url = url::Url::parse(&gateway.endpoint).ok();
        if !gateway_url.as_ref().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
        }) {
            return Err(invalid(
                "store.gateway.endpoint",
                format!(
                    "{:?} must be an http:// or https:// URL with no path, such as http://tusk-store-gateway.tusk-system.svc:9000",
                    gateway.endpoint
                ),
            ));
        }
        if gateway.buffer_mib == 0 {
            return Err(invalid("store.gateway.bufferMib", "must be at least 1"));
        }
        if gateway.key_secret.namespace.is_empty()
            || gateway.key_secret.name.is_empty()
            || gateway.key_secret.key.is_empty()
        {
            return Err(invalid(
                "store.gateway.keySecret",
                "namespace, name and key must not be empty",
            ));
        }
        if !(1..=100).contains(&self.disk.full_percent) {
            return Err(invalid("disk.fullPercent", "must be from 1 to 100"));
        }
        if self.disk.auto_grow.max_size_gi < 0 {
            return Err(invalid(
                "disk.autoGrow.maxSizeGi",
                "must be 0 (off) or a size in GiB",
            ));
        }
        if !(1..=1000).contains(&self.disk.auto_grow.step_percent) {
            return Err(invalid(
                "disk.autoGrow.stepPercent",
                "must be from 1 to 1000",
            ));
        }
        if self.tls.ca_namespace.is_empty() {
            return Err(invalid("tls.caNamespace", "must not be empty"));
        }
        let domain = &self.tls.cluster_domain;
        if domain.is_empty()
            || !domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err(invalid(
                "tls.clusterDomain",
                format!("{domain:?} must be a DNS domain such as cluster.local"),
            ));
        }
        if self.tls.certificate_lifetime < TlsSettings::MIN_CERTIFICATE_LIFETIME {
            return Err(invalid("tls.certificateLifetime", "must be at least 10s"));
        }
        if self.tls.ca_overlap.is_zero() {
            return Err(invalid("tls.caOverlap", "must be longer than zero"));
        }
        let fraction = self.tls.renew_at_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(invalid(
                "tls.renewAtFraction",
                format!("{fraction} must be between 0 and 1, such as 0.67"),
            ));
        }
        if let Some(endpoint) = &self.store.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "store.endpoint",
                    format!("{endpoint:?} must start with http:// or https://"),
                ));
            }
            if endpoint.starts_with("http://") && !self.store.allow_http {
                return Err(invalid(
                    "store.endpoint",
                    "a plain-HTTP endpoint needs store.allowHttp: true",
                ));
            }
        }
        if let Some(credentials) = &self.store.credentials
            && (credentials.namespace.is_empty() || credentials.name.is_empty())
        {
            return Err(invalid(
                "store.credentials",
                "namespace and name of the Secret are required",
            ));
        }
        let version = &self.postgres.default_version;
        if version.len() != 2 || !version.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid(
                "postgres.defaultVersion",
                format!("{version:?} is not a major version such as \"15\""),
            ));
        }
        if !self.postgres.images.contains_key(version) {
            return Err(invalid(
                "postgres.images",
                format!("no image for the default version {version}"),
            ));
        }
        if self.backup_job.image.is_empty() {
            return Err(invalid("backupJob.image", "required"));
        }
        if self.backup_job.stall_timeout.is_zero() {
            return Err(invalid(
                "backupJob.stallTimeout",
                "must be longer than zero",
            ));
        }
        if self.backup_job.active_deadline < self.backup_job.stall_timeout {
            return Err(invalid(
                "backupJob.activeDeadline",
                "must be at least backupJob.stallTimeout",
            ));
        }
        for (key, ttl) in [
            ("backupJob.succeededTtl", self.backup_job.succeeded_ttl),
            ("backupJob.failedTtl", self.backup_job.failed_ttl),
        ] {
            if i32::try_from(ttl.as_secs()).is_err() {
                return Err(invalid(key, "must be shorter than 68 years"));
            }
        }
        if self.backup_job.failed_ttl < self.backup_job.succeeded_ttl {
            return Err(invalid(
                "backupJob.failedTtl",
                "must be at least backupJob.succeededTtl",
            ));
        }
        if !matches!(self.backup_job.compression.as_str(), "gzip" | "zstd") {
            return Err(invalid("backupJob.compression", "must be gzip or zstd"));
        }
        // Read more often than every second, hundreds of instances would load the operator;
        // less often than every ten minutes, a failure would go unseen too long.
        let interval = self.archiving.check_interval;
        if interval < Duration::from_secs(1) || interval > Duration::from_secs(600) {
            return Err(invalid("archiving.checkInterval", "must be from 1s to 10m"));
        }
        if self.tunnel.image.is_empty() {
            return Err(invalid("tunnel.image", "required"));
        }
        if !self.tunnel.external_host_template.contains("{cluster}")
            && !self.tunnel.needs_service_ip()
        {
            return Err(invalid(
                "tunnel.externalHostTemplate",
                "must contain {cluster} or {serviceIP}, or every database would share one host",
            ));
        }
        if let Some(template) = &self.tunnel.router_host_template
            && (!template.contains("{cluster}")
                || !template.contains("{namespace}")
                || template.contains(SERVICE_IP_PLACEHOLDER))
        {
            return Err(invalid(
                "tunnel.routerHostTemplate",
                "must contain {cluster} and {namespace} and not {serviceIP}: the router routes by name",
            ));
        }
        if self.tunnel.external_port == 0 {
            return Err(invalid("tunnel.externalPort", "must not be 0"));
        }
        if self.tunnel.replicas < 1 {
            return Err(invalid("tunnel.replicas", "must be at least 1"));
        }
        let concurrency = &self.concurrency;
        for (key, value) in [
            ("concurrency.cluster", concurrency.cluster),
            ("concurrency.remoteCluster", concurrency.remote_cluster),
            ("concurrency.backupRequest", concurrency.backup_request),
            ("concurrency.backupSchedule", concurrency.backup_schedule),
            ("concurrency.backup", concurrency.backup),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let election = &self.leader_election;
        if election.enabled {
            if election.lease_namespace.is_empty() || election.lease_name.is_empty() {
                return Err(invalid(
                    "leaderElection.leaseNamespace",
                    "the Lease's namespace and name are required",
                ));
            }
            if election.lease_duration < Duration::from_secs(1) {
                return Err(invalid(
                    "leaderElection.leaseDuration",
                    "must be at least 1s",
                ));
            }
            if election.renew_interval.is_zero()
                || election.renew_interval >= election.lease_duration
            {
                return Err(invalid(
                    "leaderElection.renewInterval",
                    "must be shorter than leaderElection.leaseDuration",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "store:\n  url: s3://backups/prod\n";

    #[test]
    fn a_minimal_file_gets_documented_defaults() {
        let config = OperatorConfig::from_yaml(MINIMAL)
            .unwrap()
            .with_overrides(Overrides::default())
            .unwrap();
        assert_eq!(config.store.url, "s3://backups/prod");
        assert_eq!(config.postgres.default_version, "15");
        assert_eq!(config.backup_job.stall_timeout, Duration::from_secs(600));
        assert_eq!(config.backup_job.succeeded_ttl_seconds(), 3600);
        assert_eq!(config.backup_job.failed_ttl_seconds(), 24 * 3600);
        assert_eq!(
            config.leader_election.lease_duration,
            Duration::from_secs(15)
        );
        assert_eq!(config.concurrency.cluster, 16);
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
store:
  url: s3://backups/prod
  endpoint: http://127.0.0.1:9000
  region: eu-central-1
  allowHttp: true
  credentials:
    namespace: tusk-system
    name: store
  gateway:
    address: 127.0.0.1:19000
    endpoint: http://gateway.example:9000
    keySecret:
      namespace: platform
      name: gateway-key
      key: hmac
    bufferMib: 64
    clusterCacheTtl: 10s
postgres:
  defaultVersion: "16"
  images:
    "16": example/pg:16
backupJob:
  image: example/tusk:1
  stallTimeout: 90s
  activeDeadline: 2h
  succeededTtl: 5m
  failedTtl: 3d
tunnel:
  image: example/tusk:1
  externalHostTemplate: "{cluster}-{namespace}.db.example.com"
  externalPort: 15432
concurrency:
  cluster: 2
leaderElection:
  leaseDuration: 2s
  renewInterval: 500ms
httpAddress: 127.0.0.1:0
"#;
        let mut config = OperatorConfig::from_yaml(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.backup_job.stall_timeout, Duration::from_secs(90));
        assert_eq!(config.backup_job.succeeded_ttl_seconds(), 300);
        assert_eq!(config.backup_job.failed_ttl_seconds(), 3 * 24 * 3600);
        assert_eq!(config.store.gateway.endpoint, "http://gateway.example:9000");
        assert_eq!(config.store.gateway.key_secret.name, "gateway-key");
        assert_eq!(
            config.store.gateway.cluster_cache_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(config.store.gateway_url(), "s3://backups/prod");
        assert!(config.store.uses_gateway());
        assert_eq!(
            config
                .store
                .credentials
                .as_ref()
                .unwrap()
                .secret_access_key_key,
            "secret-access-key"
        );
        assert_eq!(
            config.tunnel.external_host("project-a", "elephant", None),
            "elephant-project-a.db.example.com"
        );
        assert!(!config.tunnel.needs_service_ip());
        config.tunnel.external_host_template = "{serviceIP}".into();
        assert!(config.tunnel.needs_service_ip());
        assert_eq!(
            config
                .tunnel
                .external_host("project-a", "elephant", Some("127.128.0.7")),
            "127.128.0.7"
        );
        assert_eq!(
            config.leader_election.renew_interval,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn the_router_routes_by_the_tunnel_template_unless_told_otherwise() {
        let mut config = OperatorConfig::from_yaml("store:\n  url: s3://b\n").unwrap();
        assert_eq!(
            config.tunnel.router_host("shop", "elephant").as_deref(),
            Some("elephant.shop.db.tusk.local")
        );
        // An address gives the router no name to route by.
        config.tunnel.external_host_template = "{serviceIP}".into();
        assert_eq!(config.tunnel.router_host("shop", "elephant"), None);
        config.tunnel.router_host_template = Some("{cluster}.{namespace}.db.example.com".into());
        assert_eq!(
            config.tunnel.router_host("shop", "elephant").as_deref(),
            Some("elephant.shop.db.example.com")
        );
        config.validate().unwrap();
        for bad in ["{serviceIP}", "{cluster}.db.example.com"] {
            config.tunnel.router_host_template = Some(bad.into());
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("tunnel.routerHostTemplate"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error =
            OperatorConfig::from_yaml("store:\n  url: s3://b\nbackupJob:\n  stallTimeout: soon\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("backupJob.stallTimeout"), "{error}");

        let error = OperatorConfig::from_yaml("store:\n  ulr: s3://b\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("ulr"), "{error}");

        let error = OperatorConfig::from_yaml("concurrency:\n  cluster: -1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("concurrency.cluster"), "{error}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let missing_url = OperatorConfig::default()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(missing_url.contains("`store.url`"), "{missing_url}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.postgres.default_version = "16".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`postgres.images`"), "{error}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.store.endpoint = Some("http://minio:9000".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`store.endpoint`"), "{error}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.store.gateway.endpoint = "tusk-store-gateway:9000".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`store.gateway.endpoint`"), "{error}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.leader_election.renew_interval = Duration::from_secs(20);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`leaderElection.renewInterval`"), "{error}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.backup_job.failed_ttl = Duration::from_secs(60);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`backupJob.failedTtl`"), "{error}");

        let mut config = OperatorConfig::from_yaml(MINIMAL).unwrap();
        config.backup_job.succeeded_ttl = Duration::from_secs(u64::from(u32::MAX));
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("`backupJob.succeededTtl`"), "{error}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let config = OperatorConfig::from_yaml(MINIMAL)
            .unwrap()
            .with_overrides(Overrides {
                store_url: Some("s3://other/x".into()),
                backup_stall_timeout: Some("3m".into()),
                backup_succeeded_ttl: Some("10s".into()),
                tunnel_port: Some(6432),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.store.url, "s3://other/x");
        assert_eq!(config.backup_job.stall_timeout, Duration::from_secs(180));
        assert_eq!(config.backup_job.succeeded_ttl, Duration::from_secs(10));
        assert_eq!(config.tunnel.external_port, 6432);
    }
}
