//! PostgresCluster: a database a customer ordered.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The PostgreSQL settings a customer may change, lowercase. Everything else is refused at
/// admission and never written to postgresql.conf: settings that name files, libraries or
/// commands (`include*`, `dynamic_library_path`, `ssl_*`, `log_directory`, `archive_command`...)
/// would let a tenant make the server read or run what it chooses, and settings that tusk owns
/// (`listen_addresses`, `port`, `wal_level`, `archive_timeout`, `max_wal_senders`, `fsync`,
/// `full_page_writes`...) would break connectivity, durability, backups or recovery.
///
/// `synchronous_commit` is allowed: any database user may already `SET` it for a session, and
/// turning it off loses at most the last moments of commits on a crash, never consistency.
pub const ALLOWED_PARAMETERS: &[&str] = &[
    // Memory and resources.
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "hash_mem_multiplier",
    "maintenance_work_mem",
    "autovacuum_work_mem",
    "logical_decoding_work_mem",
    "temp_buffers",
    "temp_file_limit",
    "max_stack_depth",
    "effective_io_concurrency",
    "maintenance_io_concurrency",
    "max_worker_processes",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_parallel_maintenance_workers",
    "parallel_leader_participation",
    // Connections and timeouts.
    "max_connections",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "deadlock_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
    "client_connection_check_interval",
    "max_locks_per_transaction",
    "max_pred_locks_per_transaction",
    "max_pred_locks_per_relation",
    "max_pred_locks_per_page",
    "max_prepared_transactions",
    // Planner and query tuning.
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "min_parallel_table_scan_size",
    "min_parallel_index_scan_size",
    "default_statistics_target",
    "constraint_exclusion",
    "cursor_tuple_fraction",
    "from_collapse_limit",
    "join_collapse_limit",
    "plan_cache_mode",
    "recursive_worktable_factor",
    "geqo",
    "geqo_threshold",
    "geqo_effort",
    "geqo_pool_size",
    "geqo_generations",
    "geqo_selection_bias",
    "geqo_seed",
    "jit",
    "jit_above_cost",
    "jit_inline_above_cost",
    "jit_optimize_above_cost",
    "enable_async_append",
    "enable_bitmapscan",
    "enable_gathermerge",
    "enable_group_by_reordering",
    "enable_hashagg",
    "enable_hashjoin",
    "enable_incremental_sort",
    "enable_indexonlyscan",
    "enable_indexscan",
    "enable_material",
    "enable_memoize",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_parallel_append",
    "enable_parallel_hash",
    "enable_partition_pruning",
    "enable_partitionwise_aggregate",
    "enable_partitionwise_join",
    "enable_presorted_aggregate",
    "enable_seqscan",
    "enable_sort",
    "enable_tidscan",
    // Autovacuum and vacuum.
    "autovacuum",
    "autovacuum_max_workers",
    "autovacuum_naptime",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_insert_threshold",
    "autovacuum_analyze_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_analyze_scale_factor",
    "autovacuum_freeze_max_age",
    "autovacuum_multixact_freeze_max_age",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_vacuum_cost_limit",
    "vacuum_cost_delay",
    "vacuum_cost_page_hit",
    "vacuum_cost_page_miss",
    "vacuum_cost_page_dirty",
    "vacuum_cost_limit",
    "vacuum_freeze_min_age",
    "vacuum_freeze_table_age",
    "vacuum_multixact_freeze_min_age",
    "vacuum_multixact_freeze_table_age",
    "vacuum_failsafe_age",
    "vacuum_multixact_failsafe_age",
    "vacuum_buffer_usage_limit",
    // Background writer and checkpoints (durability stays on: no fsync, no full_page_writes).
    "bgwriter_delay",
    "bgwriter_lru_maxpages",
    "bgwriter_lru_multiplier",
    "bgwriter_flush_after",
    "backend_flush_after",
    "checkpoint_timeout",
    "checkpoint_completion_target",
    "checkpoint_warning",
    "checkpoint_flush_after",
    "max_wal_size",
    "min_wal_size",
    "wal_buffers",
    "wal_compression",
    "wal_writer_delay",
    "wal_writer_flush_after",
    "commit_delay",
    "commit_siblings",
    "synchronous_commit",
    // Logging verbosity (never where logs go).
    "log_min_duration_statement",
    "log_min_duration_sample",
    "log_statement_sample_rate",
    "log_transaction_sample_rate",
    "log_statement",
    "log_lock_waits",
    "log_temp_files",
    "log_checkpoints",
    "log_connections",
    "log_disconnections",
    "log_duration",
    "log_autovacuum_min_duration",
    "log_error_verbosity",
    "log_line_prefix",
    "log_min_messages",
    "log_min_error_statement",
    "log_parameter_max_length",
    "log_parameter_max_length_on_error",
    "log_timezone",
    "client_min_messages",
    "track_activities",
    "track_activity_query_size",
    "track_counts",
    "track_functions",
    "track_io_timing",
    "track_wal_io_timing",
    "track_commit_timestamp",
    "compute_query_id",
    // Statement behaviour, locale and formatting.
    "search_path",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "default_toast_compression",
    "check_function_bodies",
    "gin_pending_list_limit",
    "gin_fuzzy_search_limit",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
    "client_encoding",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_text_search_config",
    "bytea_output",
    "xmlbinary",
    "xmloption",
    // Preloadable libraries and their settings.
    "shared_preload_libraries",
    "pg_stat_statements.max",
    "pg_stat_statements.track",
    "pg_stat_statements.track_utility",
    "pg_stat_statements.track_planning",
    "pg_stat_statements.save",
    "auto_explain.log_min_duration",
    "auto_explain.log_analyze",
    "auto_explain.log_buffers",
    "auto_explain.log_timing",
    "auto_explain.log_triggers",
    "auto_explain.log_verbose",
    "auto_explain.log_format",
    "auto_explain.log_nested_statements",
    "auto_explain.sample_rate",
    "pg_prewarm.autoprewarm",
    "pg_prewarm.autoprewarm_interval",
];

/// The contrib libraries `shared_preload_libraries` may name, and only by name (never a path).
pub const PRELOADABLE_LIBRARIES: &[&str] = &["auto_explain", "pg_prewarm", "pg_stat_statements"];

/// Settings whose value is a time zone name such as `Europe/Berlin`: the only values that may
/// contain '/', and then only as letters, digits, '_', '+' and '-' between slashes (never `..`).
pub const TIME_ZONE_PARAMETERS: &[&str] = &["timezone", "log_timezone"];

/// The longest parameter value, in characters. It bounds what the admission rules walk (the
/// API server estimates each rule's cost from such bounds) and what reaches postgresql.conf.
pub const MAX_PARAMETER_VALUE_LENGTH: usize = 1024;

/// The most parameters a cluster may set.
pub const MAX_PARAMETERS: usize = 256;

/// The regular expression a time zone value must match.
pub const TIME_ZONE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$";

/// Why a setting may not be written, or `None` when it may. The admission rules of
/// `spec.parameters` say the same in CEL; the operator checks again before writing
/// postgresql.conf, so a cluster admitted under older rules cannot slip through.
pub fn parameter_refusal(name: &str, value: &str) -> Option<&'static str> {
    if !ALLOWED_PARAMETERS.contains(&name) {
        return Some("is not a setting customers may change");
    }
    if value.chars().count() > MAX_PARAMETER_VALUE_LENGTH {
        return Some("has a value longer than 1024 characters");
    }
    if value.contains('\n') {
        return Some("has a value with a line break");
    }
    if TIME_ZONE_PARAMETERS.contains(&name) {
        return (!is_time_zone_name(value)).then_some("is not a time zone name");
    }
    if value.contains('/') {
        return Some("has a value with '/', which could name a file");
    }
    if name == "shared_preload_libraries"
        && !value
            .split(',')
            .map(str::trim)
            .filter(|library| !library.is_empty())
            .all(|library| PRELOADABLE_LIBRARIES.contains(&library))
    {
        return Some("may only list auto_explain, pg_prewarm and pg_stat_statements");
    }
    None
}

/// Whether `value` matches [`TIME_ZONE_PATTERN`], without a regex engine in this crate.
fn is_time_zone_name(value: &str) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let word = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
    };
    parts.len() <= 3
        && parts.iter().all(|part| word(part))
        && parts[0].starts_with(|c: char| c.is_ascii_alphabetic())
}

fn cel_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("'{item}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The CEL rule that admits only [`ALLOWED_PARAMETERS`]. Names must be lowercase, so a setting
/// cannot be given twice in different cases.
pub fn allowed_parameters_rule() -> String {
    format!("self.all(k, k in {})", cel_list(ALLOWED_PARAMETERS))
}

/// The message of [`allowed_parameters_rule`]: it names a refused setting (one of them, when
/// there are several). Naming them all would take `join()` over a computed list, whose items
/// kube-apiserver cannot bound: it estimates such a message far over its cost budget and refuses
/// the whole CRD.
pub fn allowed_parameters_message() -> String {
    format!(
        "'parameters may not set ' + self.filter(k, !(k in {}))[0] + ': only the settings listed in the field description may be changed, in lowercase'",
        cel_list(ALLOWED_PARAMETERS)
    )
}

/// The CEL rule that refuses '/' in values, except for time zone names.
pub fn no_path_rule() -> String {
    format!(
        "self.all(k, k in {zones} || !self[k].contains('/'))",
        zones = cel_list(TIME_ZONE_PARAMETERS)
    )
}

/// The message of [`no_path_rule`], naming a setting whose value has a '/' (one of them, for
/// the reason given at [`allowed_parameters_message`]).
pub fn no_path_message() -> String {
    format!(
        "'parameter values may not contain \\'/\\' (no file paths): ' + self.filter(k, !(k in {zones}) && self[k].contains('/'))[0]",
        zones = cel_list(TIME_ZONE_PARAMETERS)
    )
}

/// The CEL rule for time zone values. It walks the two time zone settings rather than every
/// setting, which keeps its estimated cost (a regex match per value walked) small.
pub fn time_zone_rule() -> String {
    format!(
        "{zones}.all(k, !(k in self) || self[k].matches('{TIME_ZONE_PATTERN}'))",
        zones = cel_list(TIME_ZONE_PARAMETERS)
    )
}

/// The CEL rule that limits `shared_preload_libraries` to [`PRELOADABLE_LIBRARIES`].
pub fn preload_libraries_rule() -> String {
    let library = format!("({})", PRELOADABLE_LIBRARIES.join("|"));
    format!(
        "!('shared_preload_libraries' in self) || self['shared_preload_libraries'].matches('^ *({library}( *, *{library})*)? *$')"
    )
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
    validation = Rule::new(crate::names::cluster_name_rule()).message(Message::Message(crate::names::cluster_name_message())),
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
        name = "Restore",
        type_ = "string",
        json_path = ".status.restoreProgress.summary",
        description = "How far a restore from a backup got"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "string",
        json_path = ".status.lastBackup.name",
        priority = 1
    ),
    printcolumn(
        name = "Backed Up",
        type_ = "date",
        json_path = ".status.lastBackup.finishedAt",
        description = "Time since the newest backup finished",
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
    /// override them. Names are lowercase and must be one of: memory (shared_buffers,
    /// effective_cache_size, work_mem, hash_mem_multiplier, maintenance_work_mem,
    /// autovacuum_work_mem, temp_buffers, temp_file_limit...), parallelism
    /// (max_worker_processes, max_parallel_workers*), connections and timeouts (max_connections,
    /// statement_timeout, lock_timeout, idle_in_transaction_session_timeout,
    /// idle_session_timeout, transaction_timeout, deadlock_timeout, tcp_keepalives_*), the
    /// planner (*_cost, enable_*, geqo*, jit*, default_statistics_target, join_collapse_limit...),
    /// autovacuum_* and vacuum_*, checkpoints and WAL sizing (checkpoint_timeout,
    /// checkpoint_completion_target, max_wal_size, min_wal_size, wal_compression,
    /// synchronous_commit...), logging verbosity (log_min_duration_statement, log_statement,
    /// log_lock_waits, log_line_prefix, track_*...), locale and formatting (datestyle, timezone,
    /// lc_*, search_path...), and shared_preload_libraries limited to auto_explain, pg_prewarm
    /// and pg_stat_statements with their pg_stat_statements.*, auto_explain.* and pg_prewarm.*
    /// settings. The full list is in docs/parameters.md. Values are at most 1024 characters and
    /// contain no line break and no '/' (time zone names excepted). Settings that name files,
    /// libraries or commands, and those tusk owns (listen_addresses, port, wal_level, fsync,
    /// full_page_writes, archive_*, ssl_*, include*...), are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    #[x_kube(validation = Rule::new(allowed_parameters_rule()).message(Message::Expression(allowed_parameters_message())).reason(Reason::FieldValueForbidden))]
    #[x_kube(validation = Rule::new(no_path_rule()).message(Message::Expression(no_path_message())).reason(Reason::FieldValueForbidden))]
    #[x_kube(validation = Rule::new(time_zone_rule()).message("timezone and log_timezone must be time zone names such as Europe/Berlin"))]
    #[x_kube(validation = Rule::new(preload_libraries_rule()).message("shared_preload_libraries may only list auto_explain, pg_prewarm and pg_stat_statements, separated by commas").reason(Reason::FieldValueForbidden))]
    #[x_kube(validation = Rule::new("self.all(k, !self[k].contains('\\n'))").message("a parameter value may not contain a line break"))]
    pub parameters: BTreeMap<String, String>,

    /// Bootstrap the cluster from an existing backup instead of an empty database. Only
    /// honoured when the cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("restore is immutable"))]
    pub restore: Option<RestoreSource>,

    /// How the database serves TLS. Without it, tusk issues the server certificate from the
    /// cluster's own CA and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,

    /// Reaching the database from outside the workload cluster, through tusk's router, by its
    /// external host name (docs/external-access.md). Absent: closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_access: Option<ExternalAccess>,
}

/// How the database serves TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTls {
    /// A Secret of type kubernetes.io/tls in this namespace, as cert-manager writes it, whose
    /// certificate the database serves instead of one tusk issues: `tls.crt` (the certificate,
    /// then any intermediates), `tls.key`, and `ca.crt` (the CA clients verify against; it
    /// becomes the credentials Secret's `ca.crt`). The certificate must name the
    /// `<cluster>-rw.<namespace>.svc` Service, which tusk's own connections verify. A change of
    /// the Secret (a renewal) is loaded without a restart; a Secret that cannot be served is
    /// refused, and the database keeps serving the certificate it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret: Option<SecretName>,
}

/// A Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SecretName {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub name: String,
}

/// Who may reach a database through the router.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.loadBalancer) || !self.loadBalancer || (has(self.allowedSourceRanges) && size(self.allowedSourceRanges) > 0)").message("loadBalancer needs allowedSourceRanges: a load balancer open to no source serves nobody, and one without source ranges would be open to everyone"))]
pub struct ExternalAccess {
    /// The client addresses the database is open to, as CIDRs (IPv4 or IPv6, such as
    /// `203.0.113.0/24` or `2001:db8::/32`); `0.0.0.0/0` and `::/0` open it to everyone.
    /// Empty: closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set", "items" = {"type": "string", "format": "cidr", "maxLength": 43}))]
    pub allowed_source_ranges: Vec<String>,

    /// Also give the database a LoadBalancer Service of its own, `<cluster>-external` on port
    /// 5432, whose `loadBalancerSourceRanges` are `allowedSourceRanges`: for clients that
    /// cannot send a server name (SNI) and so cannot be routed by the shared router. Each one
    /// costs a cloud load balancer and an address. Needs allowedSourceRanges. Removed when
    /// false or absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_balancer: bool,
}

/// Where a new cluster's data comes from, and how far past the backup it recovers. At most one
/// of targetTime, targetLSN and latest may be set; with none, the backup is restored exactly as
/// it was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.targetTime) ? 1 : 0) + (has(self.targetLSN) ? 1 : 0) + (has(self.latest) && self.latest ? 1 : 0) <= 1").message("set at most one of targetTime, targetLSN and latest"))]
pub struct RestoreSource {
    /// The PostgresBackup, in this namespace, to restore.
    pub backup: BackupReference,

    /// Recover every transaction committed at or before this moment (RFC 3339 in any form:
    /// `Z`, an offset, fractional seconds) and none after, by replaying the archived WAL of the
    /// backup's cluster, which must have had walArchiving on. A moment before the backup ended,
    /// or beyond the archived WAL, stops the restore (PostgreSQL refuses to promote short of
    /// its target). When absent (and without targetLSN or latest), the backup is restored
    /// exactly as it was taken: recovery stops as soon as it is consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,

    /// Recover up to and including this WAL location, such as "0/3000060", replaying the
    /// archived WAL of the backup's cluster.
    #[serde(default, rename = "targetLSN", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub target_lsn: Option<String>,

    /// Replay every archived WAL segment of the backup's cluster: the latest state it archived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
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

    /// Where clients outside the workload cluster connect through tusk's router, as
    /// host:port, while `spec.externalAccess` opens the database to some sources; the host is
    /// a name of the database's certificate (docs/external-access.md). Absent while closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_endpoint: Option<String>,

    /// Where clients without SNI connect, as address:port: the address the platform's load
    /// balancer gave the cluster's own `<cluster>-external` Service, while
    /// `spec.externalAccess.loadBalancer` asks for one (docs/external-access.md). Absent until
    /// the load balancer has an address, and once it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_endpoint: Option<String>,

    /// The most recent successful backup of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,

    /// How far the restore from `spec.restore` got, while the phase is `Restoring`; absent
    /// otherwise. The instance reports the bytes done and the replayed location through its
    /// log, so they are only as trustworthy as what runs in the pod; the totals and targets
    /// come from the PostgresBackup and the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_progress: Option<RestoreProgress>,

    /// The WAL archiver's state while `walArchiving` is on, as the instance last reported
    /// it (see docs/metrics.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiving: Option<ArchivingStatus>,

    /// How full the data volume is, as the instance last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUsage>,

    /// The size in GiB the operator grew the data volumes to because they were full (the
    /// platform's `disk.autoGrow`), while it is above `spec.postgresDiskSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_grown_disk_size: Option<i32>,
}

/// The WAL archiver's state. The figures come from the instance's `pg_stat_archiver`, so they
/// are only as trustworthy as what runs in the pod; `failingSince` is the operator's own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchivingStatus {
    /// WAL files archived since PostgreSQL's statistics were last reset.
    pub archived_count: i64,
    /// The last WAL file archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<Time>,
    /// Failed attempts to archive WAL since the statistics were last reset.
    pub failed_count: i64,
    /// The WAL file of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<Time>,
    /// Completed WAL segments not archived yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_segments: Option<i64>,
    /// Bytes of WAL written after the end of the last archived segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Since when archiving has been failing, as the operator first saw it; absent while it
    /// works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
}

/// How full a cluster's data volume is. The instance measures it (`statvfs` of its data
/// directory, as `df` does), so the figures are only as trustworthy as what runs in the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    /// Bytes in use.
    pub used_bytes: i64,
    /// Bytes in use plus bytes PostgreSQL can still write.
    pub total_bytes: i64,
    /// `usedBytes` as a percentage of `totalBytes`, rounded up as `df` rounds it.
    pub used_percent: i32,
}

/// How far a restore got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// The step under way.
    pub stage: RestoreStage,

    /// Bytes of the backup object downloaded and unpacked (during `BaseBackup`), at most
    /// `bytesTotal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<i64>,

    /// The backup object's size, as its PostgresBackup records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,

    /// The WAL location PostgreSQL has replayed up to (during `WalReplay`).
    #[serde(
        default,
        rename = "replayedLSN",
        skip_serializing_if = "Option::is_none"
    )]
    pub replayed_lsn: Option<String>,

    /// Where replay stops: `spec.restore.targetLSN`, or without any target the location where
    /// the backup ended (its stopLSN). Absent for a targetTime or `latest` restore.
    #[serde(default, rename = "targetLSN", skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,

    /// `spec.restore.targetTime`, when the restore has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,

    /// The above in a few words, for `kubectl get` and the conditions: `base backup 12.0 MiB
    /// of 40.5 MiB`, `WAL replayed to 0/5A000028 of 0/9F000000`.
    pub summary: String,
}

/// A step of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreStage {
    /// Downloading, decrypting and unpacking the base backup into the data directory.
    BaseBackup,
    /// PostgreSQL replays WAL up to its target, then promotes.
    WalReplay,
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
