//! Labels tusk puts on the objects it creates, so that children can be found by selector.

/// The standard "managed by" label.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on everything tusk creates.
pub const MANAGED_BY_VALUE: &str = "tusk";
/// The standard "name" label; tusk sets it to the kind of thing, such as `postgres`.
pub const NAME: &str = "app.kubernetes.io/name";
/// The standard "component" label: `postgres`, `backup` or `tunnel`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// The PostgresCluster an object belongs to.
pub const CLUSTER: &str = "postgres.tusk.dev/cluster";
/// The PostgresBackupSchedule that created a request or backup.
pub const SCHEDULE: &str = "postgres.tusk.dev/schedule";
/// The PostgresBackupRequest that a Job or backup belongs to.
pub const BACKUP_REQUEST: &str = "postgres.tusk.dev/backup-request";
/// The PostgresRemoteCluster that a remote object was created for.
pub const REMOTE_CLUSTER: &str = "postgres.tusk.dev/remote-cluster";
