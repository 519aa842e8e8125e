//! Prometheus metrics, served on `/metrics`: reconciles, reconcile errors by kind (the error
//! variant) and reconcile durations, each per controller; the outcome of restore tests; and
//! each cluster's health signals (its WAL archiver, the age of its newest backup, how full its
//! data volume is).
//!
//! A restore test's series go when the test is deleted ([`Metrics::retain_restore_tests`]), and
//! a cluster's when the cluster is, so that the series, and the memory they take, are bounded
//! by what exists.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use tusk_api::cluster::DiskUsage;

use crate::error::Error;

/// Labels of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller's name, such as `cluster`.
    pub controller: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller's name.
    pub controller: &'static str,
    /// The error variant, see [`Error::metric_label`].
    pub error: &'static str,
}

/// Labels of a restore test's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreTestLabels {
    /// The PostgresRestoreTest's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Labels of the restore test result counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreResultLabels {
    /// The PostgresRestoreTest's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `Passed` or `Failed`.
    pub result: &'static str,
    /// The run's reason, such as `Passed`, `Timeout` or `CheckFailed`.
    pub reason: String,
}

/// Labels of a cluster's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The PostgresCluster's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A cluster's health gauges (see docs/metrics.md).
#[derive(Clone, Default)]
struct ClusterGauges {
    archived: Family<ClusterLabels, Gauge>,
    archive_failures: Family<ClusterLabels, Gauge>,
    last_archived: Family<ClusterLabels, Gauge>,
    last_failed: Family<ClusterLabels, Gauge>,
    lag_segments: Family<ClusterLabels, Gauge>,
    lag_bytes: Family<ClusterLabels, Gauge>,
    archiving_failing: Family<ClusterLabels, Gauge>,
    last_backup: Family<ClusterLabels, Gauge>,
    last_backup_age: Family<ClusterLabels, Gauge>,
    backup_stale: Family<ClusterLabels, Gauge>,
    /// When each cluster's newest backup finished (Unix seconds), from which its age is
    /// computed at each scrape.
    backup_times: Arc<Mutex<HashMap<ClusterLabels, i64>>>,
}

impl ClusterGauges {
    fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &Family<ClusterLabels, Gauge>); 10] = [
            (
                "cluster_wal_archived",
                "WAL files the cluster's PostgreSQL archived since its statistics were reset (pg_stat_archiver.archived_count)",
                &self.archived,
            ),
            (
                "cluster_wal_archive_failures",
                "Failed attempts to archive WAL since the statistics were reset (pg_stat_archiver.failed_count)",
                &self.archive_failures,
            ),
            (
                "cluster_wal_last_archived_timestamp_seconds",
                "When the last WAL file was archived, in seconds since the Unix epoch",
                &self.last_archived,
            ),
            (
                "cluster_wal_last_failed_timestamp_seconds",
                "When an attempt to archive WAL last failed, in seconds since the Unix epoch",
                &self.last_failed,
            ),
            (
                "cluster_wal_archive_lag_segments",
                "Completed WAL segments not archived yet",
                &self.lag_segments,
            ),
            (
                "cluster_wal_archive_lag_bytes",
                "Bytes of WAL written after the end of the last archived segment",
                &self.lag_bytes,
            ),
            (
                "cluster_wal_archiving_failing",
                "1 while the cluster is Degraded for ArchivingFailing, else 0",
                &self.archiving_failing,
            ),
            (
                "cluster_last_backup_timestamp_seconds",
                "When the cluster's newest backup finished, in seconds since the Unix epoch",
                &self.last_backup,
            ),
            (
                "cluster_last_backup_age_seconds",
                "Seconds since the cluster's newest backup finished",
                &self.last_backup_age,
            ),
            (
                "cluster_backup_stale",
                "1 while the cluster's newest backup is older than twice its schedule's interval, else 0",
                &self.backup_stale,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
    }

    fn archiving_families(&self) -> [&Family<ClusterLabels, Gauge>; 7] {
        [
            &self.archived,
            &self.archive_failures,
            &self.last_archived,
            &self.last_failed,
            &self.lag_segments,
            &self.lag_bytes,
            &self.archiving_failing,
        ]
    }
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    restore_recovery: Family<RestoreTestLabels, Gauge<f64, AtomicU64>>,
    restore_success: Family<RestoreTestLabels, Gauge<f64, AtomicU64>>,
    restore_results: Family<RestoreResultLabels, Counter>,
    clusters: ClusterGauges,
    disk_used: Family<ClusterLabels, Gauge>,
    disk_total: Family<ClusterLabels, Gauge>,
    /// The label sets of `restore_results` each test has, so that they can all be removed;
    /// every test with a series has an entry.
    restore_result_labels: Arc<Mutex<HashMap<RestoreTestLabels, HashSet<RestoreResultLabels>>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tusk_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took",
            durations.clone(),
        );
        let restore_recovery = Family::<RestoreTestLabels, Gauge<f64, AtomicU64>>::default();
        let restore_success = Family::<RestoreTestLabels, Gauge<f64, AtomicU64>>::default();
        let restore_results = Family::<RestoreResultLabels, Counter>::default();
        registry.register(
            "restore_test_last_duration_seconds",
            "Time to recover of a restore test's last run that reached a running PostgreSQL",
            restore_recovery.clone(),
        );
        registry.register(
            "restore_test_last_success_timestamp_seconds",
            "Start of a restore test's last passed run, in seconds since the Unix epoch",
            restore_success.clone(),
        );
        registry.register(
            "restore_test_runs",
            "Finished restore test runs, by result and reason",
            restore_results.clone(),
        );
        let clusters = ClusterGauges::default();
        clusters.register(&mut registry);
        let disk_used = Family::<ClusterLabels, Gauge>::default();
        let disk_total = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_disk_used_bytes",
            "Bytes in use on a cluster's data volume, as its instance last reported",
            disk_used.clone(),
        );
        registry.register(
            "cluster_disk_total_bytes",
            "Bytes in use plus bytes PostgreSQL can still write on a cluster's data volume",
            disk_total.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            restore_recovery,
            restore_success,
            restore_results,
            clusters,
            disk_used,
            disk_total,
            restore_result_labels: Arc::default(),
        }
    }

    /// Counts a reconcile of `controller` and returns a guard that records its duration when
    /// dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            histogram: self
                .durations
                .get_or_create(&ControllerLabels { controller })
                .clone(),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`.
    pub fn reconcile_failed(&self, controller: &'static str, error: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Records a finished restore test run: its result and reason, its time to recover when
    /// PostgreSQL came up, and its start when it passed.
    pub fn restore_test_finished(
        &self,
        test: RestoreTestLabels,
        passed: bool,
        reason: &str,
        recovery_seconds: Option<i64>,
        started_at: jiff::Timestamp,
    ) {
        let labels = RestoreResultLabels {
            namespace: test.namespace.clone(),
            name: test.name.clone(),
            result: if passed { "Passed" } else { "Failed" },
            reason: reason.to_owned(),
        };
        self.restore_results.get_or_create(&labels).inc();
        self.restore_result_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(test.clone())
            .or_default()
            .insert(labels);
        if let Some(seconds) = recovery_seconds {
            self.restore_recovery
                .get_or_create(&test)
                .set(seconds as f64);
        }
        if passed {
            self.restore_success
                .get_or_create(&test)
                .set(started_at.as_second() as f64);
        }
    }

    /// Records a cluster's health signals: its archiver's state (`None` when it does not
    /// archive WAL, which removes those series), when its newest backup finished, and whether
    /// that is stale. `archiving_failing` is whether the cluster is reported for it.
    pub fn cluster_health(
        &self,
        cluster: &ClusterLabels,
        archiving: Option<(&tusk_api::cluster::ArchivingStatus, bool)>,
        last_backup: Option<jiff::Timestamp>,
        backup_stale: bool,
    ) {
        let gauges = &self.clusters;
        match archiving {
            Some((state, failing)) => {
                let seconds =
                    |time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                        time.as_ref().map_or(0, |time| time.0.as_second())
                    };
                for (family, value) in [
                    (&gauges.archived, state.archived_count),
                    (&gauges.archive_failures, state.failed_count),
                    (&gauges.last_archived, seconds(&state.last_archived_at)),
                    (&gauges.last_failed, seconds(&state.last_failed_at)),
                    (&gauges.archiving_failing, i64::from(failing)),
                ] {
                    family.get_or_create(cluster).set(value);
                }
                for (family, value) in [
                    (&gauges.lag_segments, state.lag_segments),
                    (&gauges.lag_bytes, state.lag_bytes),
                ] {
                    match value {
                        Some(value) => {
                            family.get_or_create(cluster).set(value);
                        }
                        None => {
                            family.remove(cluster);
                        }
                    }
                }
            }
            None => {
                for family in gauges.archiving_families() {
                    family.remove(cluster);
                }
            }
        }
        let mut times = gauges
            .backup_times
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match last_backup {
            Some(finished) => {
                gauges
                    .last_backup
                    .get_or_create(cluster)
                    .set(finished.as_second());
                times.insert(cluster.clone(), finished.as_second());
            }
            None => {
                gauges.last_backup.remove(cluster);
                gauges.last_backup_age.remove(cluster);
                times.remove(cluster);
            }
        }
        gauges
            .backup_stale
            .get_or_create(cluster)
            .set(i64::from(backup_stale));
    }

    /// Removes every series of a deleted cluster.
    pub fn forget_cluster(&self, cluster: &ClusterLabels) {
        self.cluster_health(cluster, None, None, false);
        self.clusters.backup_stale.remove(cluster);
    }

    /// Records how full a cluster's data volume is; `None` removes its series (the cluster is
    /// gone, or no figure is known).
    pub fn cluster_disk(&self, cluster: &ClusterLabels, usage: Option<&DiskUsage>) {
        match usage {
            Some(usage) => {
                self.disk_used.get_or_create(cluster).set(usage.used_bytes);
                self.disk_total
                    .get_or_create(cluster)
                    .set(usage.total_bytes);
            }
            None => {
                self.disk_used.remove(cluster);
                self.disk_total.remove(cluster);
            }
        }
    }

    /// Removes the series of every restore test for which `exists` is false: a deleted test's
    /// gauges and counters go with it.
    pub fn retain_restore_tests(&self, exists: impl Fn(&RestoreTestLabels) -> bool) {
        let mut result_labels = self
            .restore_result_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        result_labels.retain(|test, results| {
            if exists(test) {
                return true;
            }
            for labels in results.iter() {
                self.restore_results.remove(labels);
            }
            // The gauges are only ever set along with a result.
            self.restore_recovery.remove(test);
            self.restore_success.remove(test);
            false
        });
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        // The age of each cluster's newest backup, as of this scrape.
        let now = jiff::Timestamp::now().as_second();
        for (cluster, finished) in self
            .clusters
            .backup_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            self.clusters
                .last_backup_age
                .get_or_create(cluster)
                .set((now - finished).max(0));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_exported_per_controller() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_started("cluster"));
        metrics.reconcile_failed(
            "backup",
            &Error::StoreDelete("The specified bucket does not exist".into()),
        );
        let text = metrics.encode();
        assert!(text.contains("tusk_operator_reconciles_total{controller=\"cluster\"} 1"));
        assert!(text.contains(
            "tusk_operator_reconcile_errors_total{controller=\"backup\",error=\"StoreDelete\"} 1"
        ));
        assert!(
            text.contains(
                "tusk_operator_reconcile_duration_seconds_count{controller=\"cluster\"} 1"
            )
        );
    }

    #[test]
    fn a_clusters_health_is_exported_until_it_is_deleted() {
        let metrics = Metrics::new();
        let cluster = ClusterLabels {
            namespace: "shop".into(),
            name: "elephant".into(),
        };
        let state = tusk_api::cluster::ArchivingStatus {
            archived_count: 12,
            failed_count: 3,
            lag_segments: Some(2),
            lag_bytes: Some(4096),
            ..Default::default()
        };
        let finished = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90);
        metrics.cluster_health(&cluster, Some((&state, true)), Some(finished), true);
        let text = metrics.encode();
        let labels = "{namespace=\"shop\",name=\"elephant\"}";
        for line in [
            "tusk_operator_cluster_wal_archived",
            "tusk_operator_cluster_wal_archive_failures",
            "tusk_operator_cluster_wal_archive_lag_segments",
            "tusk_operator_cluster_wal_archive_lag_bytes",
            "tusk_operator_cluster_wal_archiving_failing",
            "tusk_operator_cluster_backup_stale",
        ]
        .iter()
        .zip(["12", "3", "2", "4096", "1", "1"])
        .map(|(name, value)| format!("{name}{labels} {value}\n"))
        {
            assert!(text.contains(&line), "{line} is not in\n{text}");
        }
        let age = text
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "tusk_operator_cluster_last_backup_age_seconds{labels} "
                ))
            })
            .and_then(|value| value.parse::<i64>().ok())
            .expect("the backup's age");
        assert!((90..100).contains(&age), "{age}");

        metrics.forget_cluster(&cluster);
        assert!(!metrics.encode().contains("elephant"));
    }

    #[test]
    fn disk_usage_is_exported_per_cluster_until_it_is_gone() {
        let metrics = Metrics::new();
        let cluster = ClusterLabels {
            namespace: "shop".into(),
            name: "elephant".into(),
        };
        let usage = DiskUsage {
            used_bytes: 900,
            total_bytes: 1000,
            used_percent: 90,
        };
        metrics.cluster_disk(&cluster, Some(&usage));
        let text = metrics.encode();
        assert!(text.contains(
            "tusk_operator_cluster_disk_used_bytes{namespace=\"shop\",name=\"elephant\"} 900"
        ));
        assert!(text.contains(
            "tusk_operator_cluster_disk_total_bytes{namespace=\"shop\",name=\"elephant\"} 1000"
        ));
        metrics.cluster_disk(&cluster, None);
        assert!(!metrics.encode().contains("name=\"elephant\""));
    }

    #[test]
    fn a_deleted_restore_tests_series_go_and_the_others_stay() {
        let metrics = Metrics::new();
        let test = |name: &str| RestoreTestLabels {
            namespace: "shop".to_owned(),
            name: name.to_owned(),
        };
        let started = jiff::Timestamp::from_second(1_700_000_000).expect("a time");
        for name in ["kept", "deleted"] {
            metrics.restore_test_finished(test(name), true, "Passed", Some(12), started);
            metrics.restore_test_finished(test(name), false, "Timeout", None, started);
        }
        let series = |text: &str, name: &str| {
            text.lines()
                .filter(|line| line.contains(&format!("name=\"{name}\"")))
                .count()
        };
        let before = metrics.encode();
        assert_eq!(series(&before, "deleted"), 4, "{before}");

        metrics.retain_restore_tests(|labels| labels.name == "kept");
        let after = metrics.encode();
        assert_eq!(series(&after, "deleted"), 0, "{after}");
        assert_eq!(series(&after, "kept"), 4, "{after}");
        assert!(
            metrics
                .restore_result_labels
                .lock()
                .expect("not poisoned")
                .keys()
                .all(|labels| labels.name == "kept")
        );
    }
}
