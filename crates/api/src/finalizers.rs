//! Finalizers tusk places on its resources.

/// Held by every PostgresCluster until every object it has in the store is gone (see the
/// cluster controller's `delete` module).
pub const CLUSTER_STORAGE: &str = "postgrescluster.postgres.tusk.dev/storage";

/// Held by every PostgresBackup until its object-store data (and the WAL only it needed) is gone.
pub const BACKUP_STORAGE: &str = "postgresbackup.postgres.tusk.dev/s3";

/// Held by every PostgresRemoteCluster until the tunnel in the customer's cluster is gone.
pub const REMOTE_TUNNEL: &str = "postgresremotecluster.postgres.tusk.dev/tunnel";
