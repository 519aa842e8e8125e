//! Names of the objects tusk derives from a resource's name. Keeping them here means the
//! operator, the backup Job and the tests cannot disagree.

/// The suffix of every cluster's daily system schedule, `<cluster>-default`.
pub const DEFAULT_SCHEDULE_SUFFIX: &str = "default";

/// The name of a cluster's daily system schedule. It carries the cluster's name because a
/// namespace may hold several clusters (a restore beside its source, for one), and a schedule's
/// `cluster` cannot change once set.
pub fn default_schedule(cluster: &str) -> String {
    format!("{cluster}-{DEFAULT_SCHEDULE_SUFFIX}")
}

/// The environment variable in which the kubelet gives pods a Service's cluster IP (its
/// "service link"): `elephant-rw` becomes `ELEPHANT_RW_SERVICE_HOST`.
pub fn service_host_env(service: &str) -> String {
    format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_"))
}

/// Port PostgreSQL listens on inside every instance.
pub const POSTGRES_PORT: u16 = 5432;

/// Port of `tusk instance`'s health endpoints.
pub const INSTANCE_HEALTH_PORT: u16 = 8000;

/// Keys of the cluster credentials Secret. Everything in it is readable by the customer, so it
/// holds only what the customer may have: the owner role's login, the backup Job's replication
/// login and the backup passphrase. tusk's own superuser has no password at all.
pub mod secret_keys {
    /// The owner role's name: the customer's login.
    pub const USERNAME: &str = "username";
    /// The owner role's password.
    pub const PASSWORD: &str = "password";
    /// The database the owner role owns.
    pub const DBNAME: &str = "dbname";
    /// The replication role's name, which the backup Job's pg_basebackup logs in as.
    pub const REPLICATION_USERNAME: &str = "replication-username";
    /// The replication role's password.
    pub const REPLICATION_PASSWORD: &str = "replication-password";
    /// The passphrase every backup of the cluster is encrypted with.
    pub const BACKUP_PASSPHRASE: &str = "backup-passphrase";
    /// Where the owner role's password was kept before it was renamed [`PASSWORD`]; read
    /// once so that an existing cluster keeps its password.
    pub const LEGACY_APP_USER_PASSWORD: &str = "app-user-password";
}

/// The Secret holding a cluster's generated passwords and backup passphrase.
pub fn credentials_secret(cluster: &str) -> String {
    format!("{cluster}-credentials")
}

/// The ConfigMap holding a cluster's postgresql.conf.
pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The read-write Service clients connect to.
pub fn read_write_service(cluster: &str) -> String {
    format!("{cluster}-rw")
}

/// The StatefulSet running a cluster's instance.
pub fn stateful_set(cluster: &str) -> String {
    cluster.to_owned()
}

/// The Job taking the backup a request asks for.
pub fn backup_job(request: &str) -> String {
    format!("{request}-backup")
}

/// The prefix under which every object of one incarnation of a cluster is stored:
/// `<store prefix>/<namespace>/<cluster>/<cluster uid>`. The uid makes it unique: a cluster
/// re-created under the same name starts with an empty prefix, and nothing of the old one's is
/// ever read, overwritten or deleted through it. Every credential a tenant's pods hold reaches
/// only below this prefix.
pub fn cluster_storage_prefix(
    store_prefix: &str,
    namespace: &str,
    cluster: &str,
    cluster_uid: &str,
) -> String {
    let store_prefix = store_prefix.trim_matches('/');
    if store_prefix.is_empty() {
        format!("{namespace}/{cluster}/{cluster_uid}")
    } else {
        format!("{store_prefix}/{namespace}/{cluster}/{cluster_uid}")
    }
}

/// The prefix under which all of a cluster's objects are stored:
/// `<prefix>/<namespace>/<cluster>`.
pub fn storage_prefix(store_prefix: &str, namespace: &str, cluster: &str) -> String {
    let store_prefix = store_prefix.trim_matches('/');
    if store_prefix.is_empty() {
        format!("{namespace}/{cluster}")
    } else {
        format!("{store_prefix}/{namespace}/{cluster}")
    }
}

/// The object key of a base backup: `<prefix>/<namespace>/<cluster>/base/<backup>.tar.gz.dare`.
pub fn base_backup_key(store_prefix: &str, namespace: &str, cluster: &str, backup: &str) -> String {
    format!(
        "{}/base/{backup}.tar.gz.dare",
        storage_prefix(store_prefix, namespace, cluster)
    )
}

/// The prefix of a cluster's WAL archive: `<prefix>/<namespace>/<cluster>/wal`.
pub fn wal_prefix(store_prefix: &str, namespace: &str, cluster: &str) -> String {
    format!("{}/wal", storage_prefix(store_prefix, namespace, cluster))
}

/// The object key of an archived WAL segment: `.../wal/<segment>.gz.dare`.
pub fn wal_segment_key(
    store_prefix: &str,
    namespace: &str,
    cluster: &str,
    segment: &str,
) -> String {
    format!(
        "{}/{segment}.gz.dare",
        wal_prefix(store_prefix, namespace, cluster)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_layout_matches_the_architecture() {
        assert_eq!(
            base_backup_key("backups/", "project-a", "elephant", "my-backup"),
            "backups/project-a/elephant/base/my-backup.tar.gz.dare"
        );
        assert_eq!(
            wal_segment_key("", "project-a", "elephant", "000000010000000000000003"),
            "project-a/elephant/wal/000000010000000000000003.gz.dare"
        );
    }
}
