//! A serving cluster's health signals: its WAL archiver and the freshness of its backups.
//!
//! - **Archiving.** While `walArchiving` is on, the operator reads the archiver's state from
//!   the serving instance's report at `/archiver` on its health port (see
//!   [`tusk_api::instance::ArchiverReport`]), on a timer of `archiving.checkInterval`. The
//!   figures go to `status.archiving` and `/metrics`; archiving that has failed for longer than
//!   `archiving.failingAfter` makes the cluster `Degraded` with reason `ArchivingFailing`, its
//!   message naming the segment, since when, and the archive command's error.
//! - **Backups.** A cluster with a PostgresBackupSchedule whose newest backup (or, with none,
//!   the schedule's creation) is older than twice the schedule's interval is `Degraded` with
//!   reason `BackupStale`. The time since the newest backup is in `/metrics`, and in `kubectl
//!   get pgc -o wide` from `status.lastBackup.finishedAt`.
//!
//! Both signals are named beside a failure of the instance itself, which comes first (see
//! [`super::degraded`]). A Warning Event goes with each signal when it appears or its message
//! changes, a Normal `Recovered` Event when it clears.
//!
//! The report comes from a pod whose database the tenant controls, so it is untrusted (see
//! [`super::instance_report`]): file names are kept only when they look like WAL file names,
//! counts are clamped, and the archive command's error is cleaned and bounded before it reaches
//! a condition or an Event. A lie can only misstate the tenant's own cluster.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tusk_api::cluster::{ArchivingStatus, LastBackup, PostgresClusterStatus};
use tusk_api::conditions::reasons;
use tusk_api::instance::{ARCHIVER_PATH, ArchiverReport, MAX_REPORT_BYTES, printable};
use tusk_api::{PostgresBackupSchedule, PostgresCluster};

use super::degraded::{self, Signal};
use super::instance_report;
use crate::context::Context;
use crate::controllers::backup_schedule::timing;
use crate::error::{Error, Result};
use crate::metrics::ClusterLabels;

/// The most of the archive command's error shown.
const MAX_ERROR: usize = 512;

/// What was learned of the cluster's health, and when to look again.
pub struct Health {
    /// The status with `archiving` set and each bad signal among the reasons of `Degraded`.
    pub status: PostgresClusterStatus,
    /// When the signals must be looked at again, if sooner than the controller's resync.
    pub requeue: Option<Duration>,
}

/// Reads the signals of `cluster` and adds them to `status`, with their metrics.
/// `serving_pod_ip` is the IP of the Ready instance pod the StatefulSet controls, if any.
pub async fn observe(
    context: &Context,
    cluster: &PostgresCluster,
    status: PostgresClusterStatus,
    serving_pod_ip: Option<&str>,
) -> Result<Health> {
    let now = context.clock.now();
    let settings = &context.config.archiving;
    let previous = cluster
        .status
        .as_ref()
        .and_then(|status| status.archiving.as_ref());
    let (archiving, archive_error) = if !cluster.spec.wal_archiving {
        (None, None)
    } else {
        match serving_pod_ip {
            Some(ip) => {
                match instance_report::fetch::<ArchiverReport>(ip, ARCHIVER_PATH, MAX_REPORT_BYTES)
                    .await
                {
                    Ok(report) => (
                        Some(archiving_status(&report, previous, now)),
                        archive_error(&report),
                    ),
                    Err(error) => {
                        tracing::debug!(cluster = %cluster.name_any(), %error, "cannot read the archiver's state");
                        (previous.cloned(), None)
                    }
                }
            }
            // Nothing serves: the instance's own failure says the rest; keep what was known.
            None => (previous.cloned(), None),
        }
    };
    let archiving_failure = archiving.as_ref().and_then(|state| {
        failing_message(state, archive_error.as_deref(), settings.failing_after, now)
    });
    let schedules = schedules_of(context, cluster).await?;
    let staleness = backup_staleness(
        &schedules,
        status.last_backup.as_ref(),
        &cluster.name_any(),
        now,
    );
    let stale_message = staleness
        .as_ref()
        .filter(|staleness| staleness.stale_at <= now)
        .map(|staleness| staleness.message.clone());

    context.metrics.cluster_health(
        &labels(cluster),
        archiving
            .as_ref()
            .map(|state| (state, archiving_failure.is_some())),
        status
            .last_backup
            .as_ref()
            .and_then(|backup| backup.finished_at.as_ref())
            .map(|time| time.0),
        stale_message.is_some(),
    );

    let status = overlay(
        status,
        archiving,
        archiving_failure,
        stale_message,
        cluster.metadata.generation,
        now,
    );

    // Archiving: on the check timer while an instance serves; a failure not yet reported is
    // looked at again when it would be. Backups: when the newest would become stale.
    let mut requeue: Option<Duration> = None;
    let mut sooner = |wait: Duration| {
        requeue = Some(requeue.map_or(wait, |current| current.min(wait)));
    };
    if cluster.spec.wal_archiving && serving_pod_ip.is_some() {
        sooner(settings.check_interval);
    }
    if let Some(staleness) = staleness.filter(|staleness| staleness.stale_at > now) {
        sooner(
            Duration::try_from(staleness.stale_at.duration_since(now))
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
        );
    }
    Ok(Health { status, requeue })
}

/// Forgets the metrics of a deleted cluster.
pub fn forget(context: &Context, cluster: &PostgresCluster) {
    context.metrics.forget_cluster(&labels(cluster));
}

fn labels(cluster: &PostgresCluster) -> ClusterLabels {
    ClusterLabels {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
    }
}

/// The schedules of the cluster that are not suspended.
async fn schedules_of(
    context: &Context,
    cluster: &PostgresCluster,
) -> Result<Vec<PostgresBackupSchedule>> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let schedules: Api<PostgresBackupSchedule> =
        Api::namespaced(context.client.clone(), &namespace);
    Ok(schedules
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackupSchedule",
            source,
        })?
        .items
        .into_iter()
        .filter(|schedule| schedule.spec.cluster.name == name && !schedule.spec.suspend)
        .collect())
}

/// The status of the archiver from its report. `failingSince` is carried over from
/// `previous` while the same file keeps failing; a failure seen for the first time dates
/// from its last attempt.
pub fn archiving_status(
    report: &ArchiverReport,
    previous: Option<&ArchivingStatus>,
    now: Timestamp,
) -> ArchivingStatus {
    let last_failed_wal = wal_name(report.last_failed_wal.as_deref());
    let failing_since = report.failing().then(|| {
        previous
            .filter(|previous| previous.last_failed_wal == last_failed_wal)
            .and_then(|previous| previous.failing_since.clone())
            .unwrap_or_else(|| {
                Time(
                    report
                        .last_failed_time
                        .as_ref()
                        .map_or(now, |time| time.0.min(now)),
                )
            })
    });
    let lag = report.lag();
    let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    ArchivingStatus {
        archived_count: report.archived_count.max(0),
        last_archived_wal: wal_name(report.last_archived_wal.as_deref()),
        last_archived_at: report.last_archived_time.clone(),
        failed_count: report.failed_count.max(0),
        last_failed_wal,
        last_failed_at: report.last_failed_time.clone(),
        lag_segments: lag.map(|lag| clamp(lag.segments)),
        lag_bytes: lag.map(|lag| clamp(lag.bytes)),
        failing_since,
    }
}

/// A WAL file name as the report gives it, kept only when it is one.
fn wal_name(name: Option<&str>) -> Option<String> {
    name.filter(|name| tusk_backup::wal::is_wal_file_name(name))
        .map(str::to_owned)
}

/// The archive command's error of the report, cleaned and bounded, when it is about the file
/// that failed last (an older error says nothing about the current failure).
fn archive_error(report: &ArchiverReport) -> Option<String> {
    let error = report.last_error.as_deref()?;
    let failed = wal_name(report.last_failed_wal.as_deref())?;
    error
        .contains(failed.as_str())
        .then(|| printable(error, MAX_ERROR))
}

/// The `ArchivingFailing` message, once archiving has failed for `failing_after`.
pub fn failing_message(
    state: &ArchivingStatus,
    error: Option<&str>,
    failing_after: Duration,
    now: Timestamp,
) -> Option<String> {
    let since = state.failing_since.as_ref()?.0;
    let after = SignedDuration::try_from(failing_after).unwrap_or(SignedDuration::MAX);
    if now.duration_since(since) < after {
        return None;
    }
    let file = state.last_failed_wal.as_deref().unwrap_or("a WAL file");
    let cause = error.map_or_else(
        || "the archive command's error is in the instance's log".to_owned(),
        |error| format!("the archive command says: {error}"),
    );
    Some(printable(
        &format!("WAL archiving has failed since {since}: {file} cannot be archived; {cause}"),
        1024,
    ))
}

/// When the cluster's backups become stale, and what to say then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staleness {
    /// The moment the newest backup (or the schedule, without one) is twice the interval old.
    pub stale_at: Timestamp,
    /// The `BackupStale` message.
    pub message: String,
}

/// When the backups of `cluster` become stale under the most demanding of `schedules` (its
/// schedules that are not suspended), given its newest backup; `None` without a schedule.
pub fn backup_staleness(
    schedules: &[PostgresBackupSchedule],
    last_backup: Option<&LastBackup>,
    cluster: &str,
    now: Timestamp,
) -> Option<Staleness> {
    let (schedule, interval) = schedules
        .iter()
        .filter_map(|schedule| Some((schedule, interval(schedule, now)?)))
        .min_by_key(|(_, interval)| *interval)?;
    let allowed = interval.checked_mul(2)?;
    let schedule_name = schedule.name_any();
    let finished = last_backup.and_then(|backup| Some((backup, backup.finished_at.as_ref()?.0)));
    let (since, message) = match finished {
        Some((backup, at)) => (
            at,
            format!(
                "The newest backup of {cluster}, {}, finished at {at}: more than twice the \
                 interval of schedule {schedule_name} ({interval:#}) ago",
                backup.name
            ),
        ),
        None => {
            let created = schedule.metadata.creation_timestamp.as_ref()?.0;
            (
                created,
                format!(
                    "{cluster} has no backup, and schedule {schedule_name} was created at \
                     {created}: more than twice its interval ({interval:#}) ago"
                ),
            )
        }
    };
    Some(Staleness {
        stale_at: since.checked_add(allowed).ok()?,
        message: format!("{message}. See the schedule's backup requests for why they fail"),
    })
}

/// The time between two runs of `schedule`: its `interval`, or the gap between the next two
/// times its cron expression names.
fn interval(schedule: &PostgresBackupSchedule, now: Timestamp) -> Option<SignedDuration> {
    if let Some(hours) = schedule.spec.interval {
        return Some(SignedDuration::from_hours(i64::from(hours.max(1))));
    }
    let uid = schedule.uid().unwrap_or_default();
    let first = timing::next_run(&schedule.spec, now, None, &uid).ok()?;
    let second = timing::next_run(&schedule.spec, now, Some(first), &uid).ok()?;
    Some(second.duration_since(first))
}

/// The status with `archiving` and, among the reasons the cluster is `Degraded` for (see
/// [`super::degraded`]), failing archiving and stale backups.
pub fn overlay(
    mut status: PostgresClusterStatus,
    archiving: Option<ArchivingStatus>,
    archiving_failure: Option<String>,
    stale_backup: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> PostgresClusterStatus {
    status.archiving = archiving;
    let signals = [
        (reasons::ARCHIVING_FAILING, archiving_failure),
        (reasons::BACKUP_STALE, stale_backup),
    ];
    for (reason, message) in signals {
        if let Some(message) = message {
            status = degraded::add(status, reason, &message, generation, now);
        }
    }
    status
}

/// The Events of each signal.
const SIGNALS: [Signal; 2] = [
    Signal {
        reason: reasons::ARCHIVING_FAILING,
        action: "ArchiveWAL",
        recovered: "WAL archiving works again",
    },
    Signal {
        reason: reasons::BACKUP_STALE,
        action: "BackUp",
        recovered: "A recent backup exists again",
    },
];

/// Publishes the Events of the signals: a Warning when one appears on `Degraded` or its message
/// changes, a Normal `Recovered` when it clears.
pub async fn report_events(context: &Context, cluster: &PostgresCluster, health: &Health) {
    for signal in &SIGNALS {
        degraded::report(context, cluster, signal, &health.status).await;
    }
}

/// The keys of `status.archiving` that may be absent: a merge patch keeps what it leaves out,
/// so each absent one is sent as `null` to remove it.
const OPTIONAL_ARCHIVING_KEYS: [&str; 7] = [
    "lastArchivedWal",
    "lastArchivedAt",
    "lastFailedWal",
    "lastFailedAt",
    "lagSegments",
    "lagBytes",
    "failingSince",
];

/// Completes a status merge patch `body` so that what the status no longer has is removed:
/// `archiving` when archiving is off, and each of its fields that is absent.
pub fn clear_absent(body: &mut serde_json::Value) {
    let Some(body) = body.as_object_mut() else {
        return;
    };
    match body
        .get_mut("archiving")
        .and_then(|value| value.as_object_mut())
    {
        Some(archiving) => {
            for key in OPTIONAL_ARCHIVING_KEYS {
                archiving.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        None => {
            body.insert("archiving".to_owned(), serde_json::Value::Null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{self, DesiredCondition};
    use tusk_api::cluster::ClusterPhase;
    use tusk_api::conditions::{FALSE, TRUE, types};
    use tusk_api::instance::unix_time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn time(second: i64) -> Option<Time> {
        unix_time(second * 1000)
    }

    fn failing_report(file: &str, failed_at: i64) -> ArchiverReport {
        ArchiverReport {
            archived_count: 3,
            last_archived_wal: Some("000000010000000000000002".into()),
            last_archived_time: time(100),
            failed_count: 7,
            last_failed_wal: Some(file.into()),
            last_failed_time: time(failed_at),
            current_lsn: "0/5000100".into(),
            last_error: Some(format!(
                "cannot archive {file}: {file} is already archived with different content\u{1b}[31m"
            )),
        }
    }

    #[test]
    fn a_failure_dates_from_when_it_was_first_seen_and_degrades_once_it_lasts() {
        let file = "000000010000000000000003";
        let report = failing_report(file, 200);
        let first = archiving_status(&report, None, at(210));
        assert_eq!(first.failing_since, time(200));
        assert_eq!(
            (first.lag_segments, first.lag_bytes),
            (Some(2), Some(0x2000100))
        );
        // Still the same file later: still failing since the first sighting.
        let later = archiving_status(&failing_report(file, 290), Some(&first), at(300));
        assert_eq!(later.failing_since, time(200));
        let error = archive_error(&report);
        assert_eq!(
            error.as_deref(),
            Some(
                "cannot archive 000000010000000000000003: 000000010000000000000003 is already archived with different content [31m"
            )
        );
        let failing_after = Duration::from_secs(120);
        assert_eq!(
            failing_message(&later, error.as_deref(), failing_after, at(300)),
            None
        );
        let message = failing_message(&later, error.as_deref(), failing_after, at(320)).unwrap();
        assert!(
            message.contains(file) && message.contains("1970-01-01T00:03:20Z"),
            "{message}"
        );
        assert!(
            message.contains("already archived with different content"),
            "{message}"
        );
        // An error about another file does not explain this failure.
        let mut other = failing_report(file, 290);
        other.last_error = Some("cannot archive 000000010000000000000001: gone".into());
        assert_eq!(archive_error(&other), None);

        // Archived since: not failing.
        let mut fixed = failing_report(file, 290);
        fixed.last_archived_wal = Some(file.into());
        fixed.last_archived_time = time(295);
        let fixed = archiving_status(&fixed, Some(&later), at(300));
        assert_eq!(fixed.failing_since, None);
        assert_eq!(failing_message(&fixed, None, failing_after, at(900)), None);
    }

    #[test]
    fn what_the_report_says_is_kept_only_when_it_is_well_formed() {
        let mut report = failing_report("../../etc/passwd", 200);
        report.last_archived_wal = Some("0000000100000000000000\u{1b}".into());
        report.archived_count = -5;
        let status = archiving_status(&report, None, at(300));
        assert_eq!(status.last_failed_wal, None);
        assert_eq!(status.last_archived_wal, None);
        assert_eq!(status.archived_count, 0);
        for good in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "000000010000000000000003.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(wal_name(Some(good)).as_deref(), Some(good));
        }
        // A failure claimed in the future dates from now, not later.
        let future = archiving_status(
            &failing_report("000000010000000000000003", 900),
            None,
            at(300),
        );
        assert_eq!(future.failing_since, time(300));
    }

    fn schedule(
        name: &str,
        interval: Option<i32>,
        cron: Option<&str>,
        created: i64,
    ) -> PostgresBackupSchedule {
        let mut schedule = PostgresBackupSchedule::new(
            name,
            tusk_api::PostgresBackupScheduleSpec {
                cluster: tusk_api::common::ClusterReference::new("elephant"),
                interval,
                schedule: cron.map(str::to_owned),
                keep: None,
                suspend: false,
                triggered_by: Default::default(),
            },
        );
        schedule.metadata.creation_timestamp = time(created);
        schedule
    }

    #[test]
    fn backups_are_stale_after_twice_the_shortest_interval() {
        let hour = 3600;
        let schedules = [
            schedule("default", Some(24), None, 0),
            schedule("hourly", None, Some("@hourly"), 0),
        ];
        let backup = LastBackup {
            name: "elephant-hourly-1".into(),
            finished_at: time(10 * hour),
        };
        let staleness =
            backup_staleness(&schedules, Some(&backup), "elephant", at(11 * hour)).unwrap();
        assert_eq!(staleness.stale_at, at(12 * hour));
        assert!(
            staleness.message.contains("elephant-hourly-1") && staleness.message.contains("hourly"),
            "{}",
            staleness.message
        );
        // No backup at all: from the schedule's creation.
        let none = backup_staleness(&schedules[..1], None, "elephant", at(hour)).unwrap();
        assert_eq!(none.stale_at, at(48 * hour));
        // No schedule: never stale.
        assert_eq!(
            backup_staleness(&[], Some(&backup), "elephant", at(hour)),
            None
        );
    }

    fn ready_status() -> PostgresClusterStatus {
        PostgresClusterStatus {
            phase: Some(ClusterPhase::Ready),
            conditions: conditions::merge(
                &[],
                &[DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                )],
                Some(1),
                at(1),
            ),
            ..PostgresClusterStatus::default()
        }
    }

    #[test]
    fn archiving_comes_before_stale_backups_and_both_after_the_instances_own_failure() {
        let degraded = |status: &PostgresClusterStatus| {
            let condition = conditions::find(&status.conditions, types::DEGRADED).unwrap();
            (
                condition.status.clone(),
                condition.reason.clone(),
                condition.message.clone(),
            )
        };
        let both = overlay(
            ready_status(),
            None,
            Some("archiving".into()),
            Some("stale".into()),
            Some(1),
            at(2),
        );
        assert_eq!(
            degraded(&both),
            (
                TRUE.into(),
                reasons::ARCHIVING_FAILING.into(),
                "archiving\nAlso BackupStale: stale".into()
            )
        );
        assert_eq!(both.phase, Some(ClusterPhase::Degraded));
        let stale = overlay(
            ready_status(),
            None,
            None,
            Some("stale".into()),
            Some(1),
            at(2),
        );
        assert_eq!(
            degraded(&stale),
            (TRUE.into(), reasons::BACKUP_STALE.into(), "stale".into())
        );
        let fine = overlay(ready_status(), None, None, None, Some(1), at(2));
        assert_eq!(fine, ready_status());

        let mut crashing = ready_status();
        crashing.conditions = conditions::merge(
            &crashing.conditions,
            &[DesiredCondition::new(
                types::DEGRADED,
                TRUE,
                reasons::CRASH_LOOP,
                "x",
            )],
            Some(1),
            at(1),
        );
        let still = overlay(
            crashing.clone(),
            None,
            Some("archiving".into()),
            None,
            Some(1),
            at(2),
        );
        assert_eq!(
            degraded(&still),
            (
                TRUE.into(),
                reasons::CRASH_LOOP.into(),
                "x\nAlso ArchivingFailing: archiving".into()
            )
        );
    }

    #[test]
    fn a_status_patch_removes_what_the_status_no_longer_has() {
        let mut off = serde_json::json!({"phase": "Ready"});
        clear_absent(&mut off);
        assert_eq!(off["archiving"], serde_json::Value::Null);
        assert!(off.as_object().unwrap().contains_key("archiving"));

        // Every optional field of the archiving status is listed.
        let full = ArchivingStatus {
            archived_count: 1,
            last_archived_wal: Some("a".into()),
            last_archived_at: time(1),
            failed_count: 1,
            last_failed_wal: Some("b".into()),
            last_failed_at: time(1),
            lag_segments: Some(1),
            lag_bytes: Some(1),
            failing_since: time(1),
        };
        let mut body = serde_json::json!({"archiving": ArchivingStatus::default()});
        clear_absent(&mut body);
        let keys = |value: &serde_json::Value| {
            value
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&body["archiving"]), keys(&serde_json::json!(full)));
    }
}
