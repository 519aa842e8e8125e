//! PostgresBackupSchedule: backups at a regular interval, with retention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ClusterReference, TriggeredBy};

/// The CEL rule that keeps a cron schedule to at most one run an hour: a macro (the hourly one
/// included), or exactly five fields (so no seconds field) whose first, the minute, is one
/// number. With a single minute no hour can match twice, whatever the other fields say.
pub const AT_MOST_HOURLY_RULE: &str =
    "self.startsWith('@') || self.matches('^[0-5]?[0-9](\\\\s+\\\\S+){4}$')";

/// Backs a cluster up every `interval` hours, or on a cron `schedule`, and keeps the newest
/// `keep` of its backups. Every cluster gets one called `default` (daily, triggeredBy system).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresBackupSchedule",
    plural = "postgresbackupschedules",
    singular = "postgresbackupschedule",
    shortname = "pgbs",
    category = "tusk",
    namespaced,
    status = "PostgresBackupScheduleStatus",
    derive = "PartialEq",
    doc = "Regular backups of a PostgresCluster, with retention.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(
        name = "Interval",
        type_ = "integer",
        json_path = ".spec.interval",
        description = "Hours between backups"
    ),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Keep", type_ = "integer", json_path = ".spec.keep"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRunAt"),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRunAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.interval) != has(self.schedule)").message("set exactly one of interval and schedule"))]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupScheduleSpec {
    /// The PostgresCluster, in this namespace, to back up. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: ClusterReference,

    /// Hours between backups, from 1 to 8760 (a year). Exactly one of interval and schedule is
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8760))]
    pub interval: Option<i32>,

    /// A five-field cron expression in UTC, such as "30 2 * * *", or a macro such as "@daily".
    /// A schedule runs at most once an hour: the minute field is a single number from 0 to 59,
    /// and there is no seconds field. Exactly one of interval and schedule is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})$"
        ),
        length(max = 128)
    )]
    #[x_kube(validation = Rule::new(AT_MOST_HOURLY_RULE).message("schedule may run at most once an hour: its minute field must be a single number from 0 to 59, as in \"30 2 * * *\" or \"0 * * * *\" (no seconds field, no ranges, lists or steps of minutes)").reason(Reason::FieldValueForbidden))]
    pub schedule: Option<String>,

    /// How many of this schedule's backups to retain; older ones are deleted. All are kept when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep: Option<i32>,

    /// Pause the schedule without deleting it.
    #[serde(default)]
    pub suspend: bool,

    /// Recorded on each backup as who asked for it.
    #[serde(default)]
    pub triggered_by: TriggeredBy,
}

/// When the schedule last ran and will next run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupScheduleStatus {
    /// The PostgresBackupRequest this schedule created last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,

    /// When this schedule last created a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Time>,

    /// When this schedule will next create a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Time>,

    /// Conditions, such as a schedule that cannot be parsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
