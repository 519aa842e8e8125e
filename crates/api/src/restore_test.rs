//! PostgresRestoreTest: proof, on a schedule, that a cluster's newest backup can be restored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterReference;

/// Restores a cluster's newest PostgresBackup into a throwaway PostgresCluster every
/// `interval` hours (the first time right after creation, and whenever the annotation
/// `postgres.tusk.dev/run-now` gets a new value), checks it, records the outcome and
/// deletes the throwaway. The check runs in a Job in this namespace: PostgreSQL must start
/// within `timeoutMinutes`, `pg_amcheck` must find no corruption in any database, and, when
/// `maxDataAgeMinutes` is set, the restored data must be at most that old.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresRestoreTest",
    plural = "postgresrestoretests",
    singular = "postgresrestoretest",
    shortname = "pgrt",
    category = "tusk",
    namespaced,
    status = "PostgresRestoreTestStatus",
    derive = "PartialEq",
    doc = "Scheduled restores of a PostgresCluster's newest backup into a throwaway cluster, checked and then deleted.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(
        name = "Interval",
        type_ = "integer",
        json_path = ".spec.interval",
        description = "Hours between restore tests"
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.lastRun.result"
    ),
    printcolumn(
        name = "Recovery",
        type_ = "integer",
        json_path = ".status.lastRun.recoverySeconds",
        description = "Seconds from the start of the run until the restored PostgreSQL accepted connections"
    ),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastRun.startedAt"
    ),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRunAt"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.lastRun.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRestoreTestSpec {
    /// The PostgresCluster, in this namespace, whose newest backup is restored. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: ClusterReference,

    /// Hours between the starts of two restore tests, from 1 to 8760 (a year). The first runs
    /// right after the PostgresRestoreTest is created.
    #[schemars(range(min = 1, max = 8760))]
    pub interval: i32,

    /// How old, in minutes, the restored data may be: the newest transaction found in the
    /// restored cluster (or, when recovery replayed none, the end of the backup) must be at
    /// most this long before the check. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 527040))]
    pub max_data_age_minutes: Option<i32>,

    /// Minutes the throwaway cluster has to restore, start and pass its checks before the run
    /// fails with reason Timeout; from 1 to 1440, 60 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1440))]
    pub timeout_minutes: Option<i32>,

    /// Pause the restore tests without deleting the PostgresRestoreTest. A run in progress
    /// finishes.
    #[serde(default)]
    pub suspend: bool,
}

impl PostgresRestoreTestSpec {
    /// The timeout when `timeoutMinutes` is absent.
    pub const DEFAULT_TIMEOUT_MINUTES: i32 = 60;

    /// The timeout in minutes, with its default.
    pub fn timeout_minutes(&self) -> i32 {
        self.timeout_minutes
            .unwrap_or(Self::DEFAULT_TIMEOUT_MINUTES)
    }
}

/// The outcome of the last run, the next run, and conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRestoreTestStatus {
    /// The run in progress, or the last one that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RestoreTestRun>,

    /// When the last run that finished with result Passed started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,

    /// When the next run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Time>,

    /// The last value of the `postgres.tusk.dev/run-now` annotation that started a run (as a
    /// label value: shortened with a hash when long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub last_run_request: Option<String>,

    /// What the check Job found, as it reports it. tusk records it in lastRun only when it
    /// belongs to the run in progress, then removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RestoreCheckReport>,

    /// Ready (the last run passed) and Degraded (it failed; the reason says how).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One restore test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTestRun {
    /// When the run started (the throwaway cluster was created).
    pub started_at: Time,

    /// When the run ended, whatever its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// The PostgresBackup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub backup: Option<String>,

    /// The throwaway PostgresCluster the backup was restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub throwaway_cluster: Option<String>,

    /// Seconds from the start of the run until the restored PostgreSQL accepted connections:
    /// the time to recover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub recovery_seconds: Option<i64>,

    /// When the newest transaction of the restored data committed, as the check found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_as_of: Option<Time>,

    /// Running, Passed or Failed.
    pub result: RestoreTestResult,

    /// Why the run failed (NoBackup, RestoreFailed, Timeout, CheckFailed, DataTooOld,
    /// NameTaken), or Passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,

    /// A sentence for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
}

/// The result of a restore test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreTestResult {
    /// The throwaway cluster is restoring or being checked.
    #[default]
    Running,
    /// The backup restored, PostgreSQL started and every check passed.
    Passed,
    /// The run failed; the reason and message say how.
    Failed,
}

/// What the check Job reports. Only a claim: tusk records it for the run whose throwaway
/// cluster's uid it names, and checks the data's age itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCheckReport {
    /// The uid of the throwaway PostgresCluster that was checked.
    #[schemars(length(min = 1, max = 64))]
    pub run_id: String,

    /// Whether pg_amcheck found every database sound.
    pub amcheck_passed: bool,

    /// What pg_amcheck said, cut to its last lines.
    #[serde(default)]
    #[schemars(length(max = 2048))]
    pub amcheck_output: String,

    /// The commit time of the last transaction that recovery replayed
    /// (`pg_last_xact_replay_timestamp()`); absent when it replayed none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replayed_commit: Option<Time>,

    /// An error that kept the check from running at all, such as a refused connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub error: Option<String>,
}

/// The label on a throwaway cluster and its check Job naming the PostgresRestoreTest that
/// made them (as a label value, shortened with a hash when needed).
pub const RESTORE_TEST_LABEL: &str = "postgres.tusk.dev/restore-test";

/// Setting this annotation to a new value (such as the current time) starts a run now, unless
/// one is in progress, even while the test is suspended.
pub const RUN_NOW_ANNOTATION: &str = "postgres.tusk.dev/run-now";

/// The longest throwaway cluster name: the names tusk derives from a cluster's (its
/// StatefulSet's pods and their controller-revision-hash label, `<name>-credentials`...) must
/// stay within Kubernetes' limits.
pub const MAX_THROWAWAY_NAME: usize = 40;

/// The throwaway PostgresCluster of a restore test: `<test>-restore-test`, shortened with a
/// hash when the test's name is long. One per test: a run never starts while one exists.
pub fn throwaway_cluster(test: &str) -> String {
    crate::names::bounded_name(test, "restore-test", MAX_THROWAWAY_NAME)
}

/// The check Job of a throwaway cluster, and its ServiceAccount, Role and RoleBinding.
pub fn check_job(throwaway: &str) -> String {
    crate::names::bounded_name(throwaway, "check", crate::names::MAX_LABEL_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_whatever_the_tests_name() {
        assert_eq!(throwaway_cluster("nightly"), "nightly-restore-test");
        assert_eq!(
            check_job("nightly-restore-test"),
            "nightly-restore-test-check"
        );
        let long = "a".repeat(253);
        let throwaway = throwaway_cluster(&long);
        assert!(throwaway.len() <= MAX_THROWAWAY_NAME, "{throwaway}");
        assert!(check_job(&throwaway).len() <= crate::names::MAX_LABEL_NAME);
        assert_ne!(
            throwaway_cluster(&format!("{long}x")),
            throwaway_cluster(&format!("{long}y"))
        );
    }
}
