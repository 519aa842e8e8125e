//! Prometheus metrics, served on `/metrics`: reconciles, reconcile errors by kind (the error
//! variant) and reconcile durations, each per controller; and the outcome of restore tests.
//!
//! A restore test's series go when the test is deleted ([`Metrics::retain_restore_tests`]), so
//! that the series, and the memory they take, are bounded by the tests that exist.

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
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            restore_recovery,
            restore_success,
            restore_results,
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
