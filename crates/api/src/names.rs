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

/// The instance's directory for PostgreSQL's Unix socket: Debian's default, where psql looks
/// first, and a volume of the pod's own.
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// tusk's management role in every instance: the only superuser, without a password, admitted
/// by peer authentication over the Unix socket alone, to the user the instance runs as.
pub const MANAGEMENT_ROLE: &str = "postgres";

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
    /// The PEM certificate of the cluster's own CA, which signs its server certificate: what a
    /// client verifies the server against (`sslrootcert`).
    pub const CA_CERT: &str = "ca.crt";
    /// A libpq connection URI for the owner role, without the password, with
    /// `sslmode=verify-full`.
    pub const URI: &str = "uri";
    /// The same connection as a JDBC URL, for the PostgreSQL JDBC driver.
    pub const JDBC_URI: &str = "jdbc-uri";
    /// A libpq connection URI through tusk's router from outside the workload cluster, with
    /// `sslmode=verify-full`; present while `spec.externalAccess` opens the database.
    pub const EXTERNAL_URI: &str = "external-uri";
    /// Where the owner role's password was kept before it was renamed [`PASSWORD`]; read
    /// once so that an existing cluster keeps its password.
    pub const LEGACY_APP_USER_PASSWORD: &str = "app-user-password";
}

/// The Secret holding a cluster's generated passwords and backup passphrase.
pub fn credentials_secret(cluster: &str) -> String {
    format!("{cluster}-credentials")
}

/// The `kubernetes.io/tls` Secret holding a cluster's server certificate and key (and its CA's
/// certificate), mounted into the instance.
pub fn tls_secret(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The ConfigMap holding a cluster's postgresql.conf.
pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The read-write Service clients connect to.
pub fn read_write_service(cluster: &str) -> String {
    format!("{cluster}-rw")
}

/// The cluster's own LoadBalancer Service, while `spec.externalAccess.loadBalancer` asks for it.
pub fn load_balancer_service(cluster: &str) -> String {
    format!("{cluster}-external")
}

/// The longest PostgresCluster name. Its StatefulSet, named like the cluster, labels each pod
/// `controller-revision-hash: <cluster>-<revision hash>`, and that hash has up to ten
/// characters: a longer name makes a label value over [`MAX_LABEL_VALUE`] and the pod can never
/// be created. Every other name derived from a cluster's (`<cluster>-rw`, `<cluster>-0`,
/// `<cluster>-credentials`, ...) is shorter than that label or no DNS label at all.
pub const MAX_CLUSTER_NAME: usize = MAX_LABEL_VALUE - 11;

/// The admission rule, on a PostgresCluster's root, that refuses a name longer than
/// [`MAX_CLUSTER_NAME`].
pub fn cluster_name_rule() -> String {
    format!("self.metadata.name.size() <= {MAX_CLUSTER_NAME}")
}

/// The message of [`cluster_name_rule`].
pub fn cluster_name_message() -> String {
    format!(
        "a PostgresCluster name may have at most {MAX_CLUSTER_NAME} characters: its pod is labelled \
         controller-revision-hash=<name>-<10-character hash>, and a label value may have at most \
         {MAX_LABEL_VALUE}"
    )
}

/// The StatefulSet running a cluster's instance.
pub fn stateful_set(cluster: &str) -> String {
    cluster.to_owned()
}

/// The Job taking the backup a request asks for: `<request>-backup`, shortened with a hash
/// when the request's name is too long for a Job (whose name becomes a pod label value).
pub fn backup_job(request: &str) -> String {
    bounded_name(request, "backup", MAX_LABEL_NAME)
}

/// The ServiceAccount, Role and RoleBinding of one request's backup Job: the Job's token may
/// touch that request and nothing else, so each request gets its own.
pub fn backup_job_account(request: &str) -> String {
    backup_job(request)
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

/// The object key of a base backup: `<cluster prefix>/base/<backup id>.tar.gz.dare`, where the
/// cluster prefix comes from [`cluster_storage_prefix`] and the backup id is the uid of the
/// PostgresBackupRequest that took it. A request name can be reused, and two requests of the
/// same name in different clusters never meet: no backup ever overwrites another's object.
pub fn base_backup_key(cluster_prefix: &str, backup_id: &str) -> String {
    format!("{cluster_prefix}/{BASE_DIRECTORY}/{backup_id}.tar.gz.dare")
}

/// The directory of base backups below a cluster's prefix.
pub const BASE_DIRECTORY: &str = "base";

/// The prefix of a cluster's WAL archive: `<cluster prefix>/wal`.
pub fn wal_prefix(cluster_prefix: &str) -> String {
    format!("{cluster_prefix}/wal")
}

/// The object key of an archived WAL segment: `<cluster prefix>/wal/<segment>.gz.dare`.
pub fn wal_segment_key(cluster_prefix: &str, segment: &str) -> String {
    format!("{}/{segment}.gz.dare", wal_prefix(cluster_prefix))
}

/// The longest name Kubernetes accepts for objects named as DNS labels (Jobs, Services, and
/// the pods' hostnames derived from them).
pub const MAX_LABEL_NAME: usize = 63;

/// `<base>-<suffix>`, shortened to at most `max` characters when needed: the base is cut and
/// followed by eight hex digits of a hash of the whole base, so that two long names that share
/// their beginning still get different results, and the same input always gives the same name.
pub fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = fnv1a(base.as_bytes());
    let keep = max.saturating_sub(suffix.len() + 10);
    let cut: String = base.chars().take(keep).collect();
    let cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}-{hash:08x}-{suffix}")
}

/// The longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// A name as a label value: unchanged when it fits, else cut and followed by eight hex digits
/// of a hash of the whole name, so that it stays valid, stable and distinct.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_owned();
    }
    let hash = fnv1a(name.as_bytes());
    let cut: String = name.chars().take(MAX_LABEL_VALUE - 9).collect();
    let cut = cut.trim_end_matches(['-', '.', '_']);
    format!("{cut}-{hash:08x}")
}

/// FNV-1a, 32 bits: a stable, dependency-free hash for shortening names (not for security).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// Whether `name` is a lowercase RFC 1123 label, as a namespace's name must be: at most 63
/// characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit. Such a name
/// has no dot, so a name built from it cannot reach into another domain.
pub fn is_dns_label(name: &str) -> bool {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= MAX_LABEL_NAME
                && alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|&c| alphanumeric(c) || c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dns_label_has_no_dot_and_no_capital() {
        for good in ["default", "apps", "a", "team-1", &"a".repeat(63)] {
            assert!(super::is_dns_label(good), "{good}");
        }
        for bad in [
            "",
            "other.db.tusk.local",
            "Apps",
            "-apps",
            "apps-",
            "a_b",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!super::is_dns_label(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn object_layout_matches_the_architecture() {
        let prefix = cluster_storage_prefix("backups/", "project-a", "elephant", "9f1c-uid");
        assert_eq!(prefix, "backups/project-a/elephant/9f1c-uid");
        assert_eq!(
            base_backup_key(&prefix, "req-uid"),
            "backups/project-a/elephant/9f1c-uid/base/req-uid.tar.gz.dare"
        );
        assert_eq!(
            wal_segment_key(
                &cluster_storage_prefix("", "project-a", "elephant", "u"),
                "000000010000000000000003"
            ),
            "project-a/elephant/u/wal/000000010000000000000003.gz.dare"
        );
    }

    #[test]
    fn derived_names_always_fit_and_stay_distinct() {
        assert_eq!(backup_job("my-backup"), "my-backup-backup");
        let long_a = format!("{}-a", "x".repeat(61));
        let long_b = format!("{}-b", "x".repeat(61));
        for name in [&long_a, &long_b] {
            let job = backup_job(name);
            assert!(job.len() <= MAX_LABEL_NAME, "{job} is too long");
            assert!(job.ends_with("-backup"));
            assert!(job.chars().next().unwrap().is_ascii_alphanumeric());
        }
        assert_ne!(backup_job(&long_a), backup_job(&long_b));
        assert_eq!(label_value("my-backup"), "my-backup");
        for name in [&long_a, &long_b] {
            let value = label_value(&format!("{name}-{name}"));
            assert!(value.len() <= MAX_LABEL_VALUE, "{value}");
            assert!(value.chars().last().unwrap().is_ascii_alphanumeric());
        }
        assert_ne!(
            label_value(&format!("{long_a}{long_a}")),
            label_value(&format!("{long_a}{long_b}"))
        );
        assert_eq!(backup_job(&long_a), backup_job(&long_a));
        // A cut that would end in '-' is trimmed, so the result stays a valid DNS label.
        let dashes = format!("{}-{}", "a".repeat(45), "b".repeat(30));
        assert!(!backup_job(&dashes).contains("--"));
    }
}
