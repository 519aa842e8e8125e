//! PostgresCluster: a database a customer ordered.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// PostgreSQL settings that tusk itself must control: where the server listens, where its files
/// live, and how WAL is archived and restored. A cluster that sets any of them is refused at
/// admission, because honouring it would break connectivity, backups or point-in-time recovery.
pub const OWNED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "archive_mode",
    "archive_command",
    "archive_library",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "primary_conninfo",
    "primary_slot_name",
    "wal_level",
];

/// The CEL rule that refuses [`OWNED_PARAMETERS`]. PostgreSQL matches setting names without
/// regard to case, so the rule does too.
pub fn owned_parameters_rule() -> String {
    let quoted: Vec<String> = OWNED_PARAMETERS
        .iter()
        .map(|name| format!("'{name}'"))
        .collect();
    format!("!self.exists(k, k.lowerAscii() in [{}])", quoted.join(", "))
}

/// A PostgreSQL database ordered by a customer. tusk runs it as a one-instance StatefulSet,
/// generates its credentials, and backs it up every day unless told otherwise.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresCluster",
    plural = "postgresclusters",
    singular = "postgrescluster",
    shortname = "pgc",
    category = "tusk",
    namespaced,
    status = "PostgresClusterStatus",
    derive = "PartialEq",
    doc = "A PostgreSQL database ordered by a customer.",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Memory",
        type_ = "integer",
        json_path = ".spec.memorySize",
        description = "Memory in GiB"
    ),
    printcolumn(
        name = "Disk",
        type_ = "integer",
        json_path = ".spec.postgresDiskSize",
        description = "Disk in GiB"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Last Backup",
        type_ = "string",
        json_path = ".status.lastBackup.name",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.restore) == has(oldSelf.restore)").message("restore can only be set when the cluster is created").field_path(".restore"))]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterSpec {
    /// Human-readable name shown by the platform. It need not be unique.
    #[schemars(length(min = 1, max = 253))]
    pub display_name: String,

    /// Memory for the PostgreSQL instance, in GiB. PostgreSQL's memory settings
    /// (shared_buffers, effective_cache_size, work_mem, maintenance_work_mem) are derived from it.
    #[schemars(range(min = 1, max = 1024))]
    pub memory_size: i32,

    /// Size of the PostgreSQL data volume, in GiB. It may grow, never shrink.
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("postgresDiskSize may grow but never shrink").reason(Reason::FieldValueForbidden))]
    pub postgres_disk_size: i32,

    /// Archive every WAL segment to object storage, which enables point-in-time recovery.
    #[serde(default)]
    pub wal_archiving: bool,

    /// PostgreSQL major version, such as "15". When absent, the operator's default version is
    /// used and recorded here by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]$"))]
    pub postgres_version: Option<String>,

    /// PostgreSQL settings written to postgresql.conf after tusk's memory settings, so they
    /// override them. Settings that tusk owns (listen_addresses, port, archive_command,
    /// restore_command, data_directory, hba_file and the like) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = Rule::new(owned_parameters_rule()).message("parameters may not set a setting that tusk owns (listen_addresses, port, archive_command, restore_command, data_directory, hba_file, recovery_target_*, wal_level and the like)").reason(Reason::FieldValueForbidden))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_.]*$'))").message("parameter names may contain only letters, digits, '_' and '.'"))]
    #[x_kube(validation = Rule::new("self.all(k, !self[k].contains('\\n'))").message("a parameter value may not contain a line break"))]
    pub parameters: BTreeMap<String, String>,

    /// Bootstrap the cluster from an existing backup instead of an empty database. Only
    /// honoured when the cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("restore is immutable"))]
    pub restore: Option<RestoreSource>,
}

/// Where a new cluster's data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The PostgresBackup, in this namespace, to restore.
    pub backup: BackupReference,

    /// Recover to this moment (RFC 3339) by replaying archived WAL after the backup. The source
    /// cluster must have had walArchiving on. When absent, the backup is restored as it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,
}

/// A reference to a PostgresBackup in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct BackupReference {
    /// Name of the PostgresBackup.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What tusk last observed of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// A one-word summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,

    /// Ready, Progressing and Degraded, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes. When it is lower than the object's
    /// generation, the operator has not yet acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where clients in the workload cluster connect, as host:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The most recent successful backup of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
}

/// The most recent successful backup of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// Name of the PostgresBackup.
    pub name: String,
    /// When the backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// A one-word summary of a cluster's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClusterPhase {
    /// The children are being created and PostgreSQL is starting for the first time.
    Creating,
    /// The cluster's data is being restored from a backup.
    Restoring,
    /// PostgreSQL accepts connections and matches the spec.
    Ready,
    /// A change to the spec is being rolled out.
    Updating,
    /// PostgreSQL is not serving, or the spec cannot be honoured; see the conditions.
    Degraded,
}
