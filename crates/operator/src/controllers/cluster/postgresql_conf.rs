//! postgresql.conf for a cluster: tusk's own settings, memory settings derived from memorySize,
//! then the user's parameters (which win, because PostgreSQL takes the last occurrence).
//!
//! How a change reaches PostgreSQL: the ConfigMap is mounted as a volume, so the kubelet
//! updates the file in the running pod and `tusk instance` reloads PostgreSQL (SIGHUP) when it
//! changes. Settings that PostgreSQL only reads at start ([`RESTART_SETTINGS`]) are also hashed
//! into an annotation on the pod template ([`restart_hash`]); when one of them changes, the
//! template changes and the StatefulSet controller restarts the pod.

use std::collections::BTreeMap;
use std::fmt::Write;

use sha2::{Digest, Sha256};
use tusk_api::PostgresCluster;
use tusk_api::cluster::parameter_refusal;

/// The ConfigMap key, and so the file name in the mounted volume, of postgresql.conf.
pub const CONFIG_FILE_KEY: &str = "postgresql.conf";

/// Settings PostgreSQL reads only at server start ("postmaster" context).
pub const RESTART_SETTINGS: &[&str] = &[
    "shared_buffers",
    "max_connections",
    "max_worker_processes",
    "max_parallel_workers",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_pred_locks_per_transaction",
    "max_wal_senders",
    "max_replication_slots",
    "wal_buffers",
    "wal_level",
    "wal_log_hints",
    "huge_pages",
    "shared_preload_libraries",
    "archive_mode",
    "track_commit_timestamp",
    "autovacuum_max_workers",
    "superuser_reserved_connections",
];

const KIB_PER_MIB: i64 = 1024;
const KIB_PER_GIB: i64 = 1024 * KIB_PER_MIB;
/// PostgreSQL's smallest `work_mem`.
const MIN_WORK_MEM_KIB: i64 = 64;
/// PostgreSQL's smallest `maintenance_work_mem`.
const MIN_MAINTENANCE_WORK_MEM_KIB: i64 = KIB_PER_MIB;
/// How many sorts or hashes each connection is counted as running at once.
const OPERATIONS_PER_CONNECTION: i64 = 3;

/// The memory settings derived from `memorySize` for `max_connections` connections and
/// `autovacuum_max_workers` workers, in KiB. They fit in the pod's memory limit (which is
/// `memorySize`): shared_buffers takes a quarter; of the rest, at most half goes to
/// maintenance (each autovacuum worker and one manual VACUUM or CREATE INDEX), and what is
/// left is shared by the connections, each running a few sorts at once. Only when there are so
/// many connections that PostgreSQL's smallest `work_mem` does not fit does the sum exceed the
/// limit, and then because of `max_connections`, which the spec sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySettings {
    /// `shared_buffers`.
    pub shared_buffers: i64,
    /// `effective_cache_size` (a planner estimate; nothing is allocated).
    pub effective_cache_size: i64,
    /// `work_mem`.
    pub work_mem: i64,
    /// `maintenance_work_mem`.
    pub maintenance_work_mem: i64,
}

impl MemorySettings {
    /// The settings for a `memory_gib` GiB limit.
    pub fn derive(memory_gib: i32, max_connections: i64, autovacuum_workers: i64) -> Self {
        let memory = i64::from(memory_gib.max(1)) * KIB_PER_GIB;
        let shared_buffers = memory / 4;
        let rest = memory - shared_buffers;
        let maintainers = autovacuum_workers.max(0) + 1;
        let maintenance_work_mem = (memory / 16)
            .clamp(64 * KIB_PER_MIB, 2 * KIB_PER_GIB)
            .min(rest / 2 / maintainers)
            .max(MIN_MAINTENANCE_WORK_MEM_KIB);
        let for_connections = rest - maintenance_work_mem * maintainers;
        let work_mem = (for_connections / (max_connections.max(1) * OPERATIONS_PER_CONNECTION))
            .clamp(MIN_WORK_MEM_KIB, KIB_PER_GIB);
        Self {
            shared_buffers,
            effective_cache_size: memory * 3 / 4,
            work_mem,
            maintenance_work_mem,
        }
    }

    /// The most these settings let PostgreSQL allocate at once, in KiB.
    pub fn peak(&self, max_connections: i64, autovacuum_workers: i64) -> i64 {
        self.shared_buffers
            + self.maintenance_work_mem * (autovacuum_workers.max(0) + 1)
            + self.work_mem * max_connections.max(1) * OPERATIONS_PER_CONNECTION
    }
}

/// A positive whole number the spec gives for `name`, if any.
fn spec_count(cluster: &PostgresCluster, name: &str) -> Option<i64> {
    cluster
        .spec
        .parameters
        .get(name)
        .and_then(|value| value.trim().parse().ok())
        .filter(|count: &i64| *count > 0)
}

/// The settings that size PostgreSQL's shared memory, which it allocates whole at start.
const SHARED_MEMORY_SETTINGS: [&str; 2] = ["shared_buffers", "wal_buffers"];
/// The unit of `shared_buffers` and `wal_buffers` given as a bare number: a block, 8 kB.
const BLOCK_BYTES: f64 = 8192.0;
/// The most `wal_buffers` takes when left to PostgreSQL (`-1`): 16 MB, one WAL segment.
const AUTO_WAL_BUFFERS_MAX_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// A memory setting of PostgreSQL in bytes, read as PostgreSQL reads it: a number (whole or
/// with a fraction), then optionally one of its units `B`, `kB`, `MB`, `GB`, `TB` (case
/// matters), a bare number counting blocks of 8 kB. `None` for what PostgreSQL itself would
/// refuse or read otherwise (its own check reports that), and for `-1`.
fn memory_bytes(value: &str) -> Option<f64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite())?;
    let unit_bytes = match unit.trim_start() {
        "" => BLOCK_BYTES,
        "B" => 1.0,
        "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * unit_bytes)
}

/// Why the spec's parameters cannot fit in the pod's memory limit (`memorySize`), when it is
/// certain: `shared_buffers` and `wal_buffers` are shared memory that PostgreSQL allocates at
/// start and keeps, so when they reach the limit every connection's own memory takes the
/// instance over it, and the kernel kills PostgreSQL. Such parameters are never written (see
/// [`settings`]). Settings whose peak depends on the work (`work_mem` for each sort,
/// `maintenance_work_mem`...) are the spec's to size and are not refused.
pub fn sizing_refusal(cluster: &PostgresCluster) -> Option<String> {
    let given = |name: &str| {
        cluster
            .spec
            .parameters
            .get(name)
            .filter(|value| parameter_refusal(name, value).is_none())
    };
    if SHARED_MEMORY_SETTINGS
        .iter()
        .all(|name| given(name).is_none())
    {
        return None;
    }
    let memory_gib = cluster.spec.memory_size.max(1);
    let derived = MemorySettings::derive(memory_gib, 100, 3).shared_buffers as f64 * 1024.0;
    let shared_buffers = match given("shared_buffers") {
        Some(value) => memory_bytes(value)?,
        None => derived,
    };
    let wal_buffers = match given("wal_buffers").map(|value| value.trim()) {
        None | Some("-1") => (shared_buffers / 32.0).min(AUTO_WAL_BUFFERS_MAX_BYTES),
        Some(value) => memory_bytes(value)?,
    };
    let limit = f64::from(memory_gib) * 1024.0 * 1024.0 * 1024.0;
    let mib = |bytes: f64| (bytes / (1024.0 * 1024.0)).ceil();
    (shared_buffers + wal_buffers >= limit).then(|| {
        format!(
            "The parameters cannot fit in memorySize; the running configuration stays in \
             force: shared_buffers ({} MiB) and wal_buffers ({} MiB) take {} MiB of shared \
             memory, at least the pod's memory limit of {memory_gib} GiB, over which the \
             kernel kills PostgreSQL. Lower them or raise memorySize",
            mib(shared_buffers),
            mib(wal_buffers),
            mib(shared_buffers + wal_buffers),
        )
    })
}

/// The effective settings of a cluster, in the order written, as (name, value) with values not
/// yet quoted. Later entries override earlier ones. The spec's `shared_buffers` and
/// `wal_buffers` are left out when they cannot fit in `memorySize` ([`sizing_refusal`]).
pub fn settings(cluster: &PostgresCluster) -> Vec<(String, String)> {
    let spec = &cluster.spec;
    let max_connections = spec_count(cluster, "max_connections").unwrap_or(100);
    let autovacuum_workers = spec_count(cluster, "autovacuum_max_workers").unwrap_or(3);
    let memory = MemorySettings::derive(spec.memory_size, max_connections, autovacuum_workers);
    // In MB when whole, as they always were, so that an unchanged value reads the same (and
    // shared_buffers keeps the restart hash of running clusters).
    let kib = |value: i64| {
        if value % KIB_PER_MIB == 0 {
            format!("{}MB", value / KIB_PER_MIB)
        } else {
            format!("{value}kB")
        }
    };

    // Where PostgreSQL listens and how it archives WAL are not here: `tusk instance` passes
    // them on the postgres command line, where no file can override them.
    let mut settings: Vec<(String, String)> = vec![
        ("shared_buffers".into(), kib(memory.shared_buffers)),
        (
            "effective_cache_size".into(),
            kib(memory.effective_cache_size),
        ),
        ("work_mem".into(), kib(memory.work_mem)),
        (
            "maintenance_work_mem".into(),
            kib(memory.maintenance_work_mem),
        ),
        ("max_connections".into(), "100".into()),
    ];
    if spec.wal_archiving {
        // Bounds how much committed work a restore can lose on a quiet database.
        settings.push(("archive_timeout".into(), "300".into()));
    }
    // Admission refuses these already; a cluster admitted under older rules still never gets
    // them into the file. `refused_parameters` says which were left out.
    let too_large = sizing_refusal(cluster).is_some();
    for (name, value) in &spec.parameters {
        let cannot_fit = too_large && SHARED_MEMORY_SETTINGS.contains(&name.as_str());
        if parameter_refusal(name, value).is_none() && !cannot_fit {
            settings.push((name.clone(), value.clone()));
        }
    }
    settings
}

/// The cluster's parameters that are not written to postgresql.conf, each as "name: why". The
/// text names settings, never their values.
pub fn refused_parameters(cluster: &PostgresCluster) -> Vec<String> {
    cluster
        .spec
        .parameters
        .iter()
        .filter_map(|(name, value)| {
            parameter_refusal(name, value).map(|why| {
                let name: String = name
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                format!("{name} {why}")
            })
        })
        .collect()
}

/// postgresql.conf as text.
pub fn render(cluster: &PostgresCluster) -> String {
    let mut text = String::from(
        "# Written by tusk from the PostgresCluster's memorySize and parameters.\n\
         # Do not edit: changes are overwritten.\n",
    );
    for (name, value) in settings(cluster) {
        let _ = writeln!(text, "{name} = '{}'", quote(&value));
    }
    text
}

/// A hash of the effective values of the settings that need a restart.
pub fn restart_hash(cluster: &PostgresCluster) -> String {
    let mut effective: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in settings(cluster) {
        let name = name.to_ascii_lowercase();
        if RESTART_SETTINGS.contains(&name.as_str()) {
            effective.insert(name, value);
        }
    }
    let mut hasher = Sha256::new();
    for (name, value) in &effective {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::PostgresClusterSpec;

    fn cluster(memory: i32, parameters: &[(&str, &str)]) -> PostgresCluster {
        PostgresCluster::new(
            "elephant",
            PostgresClusterSpec {
                display_name: "e".into(),
                memory_size: memory,
                postgres_disk_size: 1,
                wal_archiving: true,
                postgres_version: None,
                parameters: parameters
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                restore: None,
                tls: None,
                external_access: None,
            },
        )
    }

    #[test]
    fn memory_settings_follow_memory_size() {
        let conf = render(&cluster(2, &[]));
        assert!(conf.contains("shared_buffers = '512MB'"), "{conf}");
        assert!(conf.contains("effective_cache_size = '1536MB'"), "{conf}");
        assert!(conf.contains("maintenance_work_mem = '128MB'"), "{conf}");
        // (1536 MiB - 4 x 128 MiB) / (100 connections x 3)
        assert!(conf.contains("work_mem = '3495kB'"), "{conf}");
        assert!(conf.contains("archive_timeout = '300'"), "{conf}");
        assert!(!conf.contains("archive_command"), "{conf}");
    }

    #[test]
    fn derived_memory_settings_fit_in_the_pods_memory_limit() {
        for memory_gib in [1, 2, 3, 8, 64, 1024] {
            let limit = i64::from(memory_gib) * KIB_PER_GIB;
            for connections in [1, 20, 100, 500, 1000, 2000, 10_000, 100_000] {
                for workers in [1, 3, 10, 100] {
                    let derived = MemorySettings::derive(memory_gib, connections, workers);
                    let peak = derived.peak(connections, workers);
                    let smallest = MemorySettings {
                        work_mem: MIN_WORK_MEM_KIB,
                        ..derived
                    };
                    assert!(
                        peak <= limit || derived == smallest,
                        "{memory_gib} GiB, {connections} connections, {workers} workers: \
                         {derived:?} may take {peak} KiB of {limit}"
                    );
                    assert!(derived.maintenance_work_mem >= MIN_MAINTENANCE_WORK_MEM_KIB);
                }
            }
        }
        // 1 GiB for 100 connections used to get 4 MB of work_mem each: 1.2 GiB for sorts alone.
        let small = MemorySettings::derive(1, 100, 3);
        assert!(small.peak(100, 3) <= KIB_PER_GIB, "{small:?}");
        // The spec's max_connections and autovacuum_max_workers are what is divided.
        let conf = render(&cluster(
            1,
            &[("max_connections", "1000"), ("autovacuum_max_workers", "7")],
        ));
        let derived = MemorySettings::derive(1, 1000, 7);
        assert!(
            conf.contains(&format!("work_mem = '{}kB'", derived.work_mem)),
            "{conf}"
        );
    }

    #[test]
    fn user_parameters_come_last_and_are_quoted() {
        let conf = render(&cluster(
            2,
            &[("shared_buffers", "1GB"), ("search_path", "a, 'b'")],
        ));
        let derived = conf.find("shared_buffers = '512MB'").unwrap();
        let user = conf.find("shared_buffers = '1GB'").unwrap();
        assert!(user > derived);
        assert!(conf.contains("search_path = 'a, ''b'''"), "{conf}");
    }

    #[test]
    fn a_setting_off_the_allow_list_is_never_written() {
        let attacks = [
            ("include_dir", "/etc"),
            ("fsync", "off"),
            ("full_page_writes", "off"),
            ("archive_command", "curl evil"),
            ("archive_timeout", "1"),
            ("max_wal_senders", "0"),
            ("dynamic_library_path", "/tmp"),
            ("ssl_passphrase_command", "sh -c id"),
            ("shared_preload_libraries", "/tmp/evil.so"),
            ("shared_preload_libraries", "pg_stat_statements, evil"),
            ("log_directory", "/var/lib/tusk"),
            ("search_path", "/etc/passwd"),
            ("timezone", "../../../../etc/passwd"),
            ("Work_Mem", "64MB"),
        ];
        for (name, value) in attacks {
            let tenant = cluster(2, &[(name, value)]);
            let conf = render(&tenant);
            let line = format!("{name} = '{}'", quote(value));
            assert!(!conf.contains(&line), "{line} was written:\n{conf}");
            let refused = refused_parameters(&tenant);
            assert_eq!(refused.len(), 1, "{name}: {refused:?}");
            assert!(refused[0].starts_with(name), "{refused:?}");
            assert!(!refused[0].contains(value), "{refused:?}");
        }
        let allowed = cluster(
            2,
            &[
                (
                    "shared_preload_libraries",
                    "pg_stat_statements,auto_explain",
                ),
                ("timezone", "America/Argentina/Buenos_Aires"),
                ("log_min_duration_statement", "250ms"),
                ("synchronous_commit", "off"),
            ],
        );
        assert!(refused_parameters(&allowed).is_empty());
        let conf = render(&allowed);
        assert!(
            conf.contains("timezone = 'America/Argentina/Buenos_Aires'"),
            "{conf}"
        );
        assert!(
            conf.contains("shared_preload_libraries = 'pg_stat_statements,auto_explain'"),
            "{conf}"
        );
    }

    #[test]
    fn shared_memory_that_cannot_fit_in_memory_size_is_refused_and_never_written() {
        // As PostgreSQL reads them: units, fractions, and bare numbers of 8 kB blocks.
        assert_eq!(memory_bytes("128MB"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(
            memory_bytes(" 1.5 GB "),
            Some(1.5 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(memory_bytes("16384"), Some(16384.0 * 8192.0));
        for unreadable in ["banana", "1gb", "1 GiB", "", "-1", "1e9"] {
            assert_eq!(memory_bytes(unreadable), None, "{unreadable}");
        }

        for too_large in [
            vec![("shared_buffers", "1GB")],
            vec![("shared_buffers", "2GB")],
            vec![("shared_buffers", "131072")],
            vec![("shared_buffers", "1000MB"), ("wal_buffers", "24MB")],
            vec![("wal_buffers", "800MB")],
        ] {
            let tenant = cluster(1, &too_large);
            let refusal = sizing_refusal(&tenant).unwrap_or_else(|| panic!("{too_large:?}"));
            assert!(refusal.contains("memorySize"), "{refusal}");
            let conf = render(&tenant);
            // The derived values stand; the spec's are never written.
            assert!(conf.contains("shared_buffers = '256MB'"), "{conf}");
            for (name, value) in &too_large {
                assert!(!conf.contains(&format!("{name} = '{value}'")), "{conf}");
            }
        }
        let refusal = sizing_refusal(&cluster(1, &[("shared_buffers", "2GB")])).unwrap();
        assert!(
            refusal.contains("shared_buffers (2048 MiB) and wal_buffers (16 MiB) take 2064 MiB"),
            "{refusal}"
        );

        for fitting in [
            vec![],
            vec![("shared_buffers", "768MB")],
            vec![("shared_buffers", "1000MB"), ("wal_buffers", "-1")],
            vec![("work_mem", "4GB"), ("maintenance_work_mem", "2GB")],
            // PostgreSQL's to refuse, with its own message.
            vec![("shared_buffers", "banana")],
        ] {
            let tenant = cluster(1, &fitting);
            assert_eq!(sizing_refusal(&tenant), None, "{fitting:?}");
            let conf = render(&tenant);
            for (name, value) in &fitting {
                assert!(conf.contains(&format!("{name} = '{value}'")), "{conf}");
            }
        }
        assert_eq!(
            sizing_refusal(&cluster(4, &[("shared_buffers", "2GB")])),
            None
        );
    }

    #[test]
    fn only_restart_settings_change_the_restart_hash() {
        let base = restart_hash(&cluster(2, &[]));
        assert_eq!(base, restart_hash(&cluster(2, &[("work_mem", "64MB")])));
        assert_ne!(
            base,
            restart_hash(&cluster(2, &[("max_connections", "200")]))
        );
        assert_ne!(base, restart_hash(&cluster(4, &[])));
        assert_ne!(
            base,
            restart_hash(&cluster(
                2,
                &[("shared_preload_libraries", "pg_stat_statements")]
            ))
        );
    }
}
