//! Prometheus metrics, served on `/metrics`: reconciles, reconcile errors by kind (the error
//! variant) and reconcile durations, each per controller; the outcome of restore tests; and how
//! full each cluster's data volume is.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
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
    disk_used: Family<ClusterLabels, Gauge>,
    disk_total: Family<ClusterLabels, Gauge>,
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
            disk_used,
            disk_total,
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
        self.restore_results
            .get_or_create(&RestoreResultLabels {
                namespace: test.namespace.clone(),
                name: test.name.clone(),
                result: if passed { "Passed" } else { "Failed" },
                reason: reason.to_owned(),
            })
            .inc();
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

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
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
}
