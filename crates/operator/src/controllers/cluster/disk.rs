//! How full a cluster's data volume is, from the instance's own measurement.
//!
//! The instance serves `statvfs(3)` of its data directory at `/disk` on its health port (see
//! [`tusk_api::instance::DiskReport`]). The operator records it in `status.disk` and in
//! `/metrics`, and from the operator's `disk.fullPercent` on the cluster is `Degraded` for
//! `DiskFull`, besides any other reason (the database keeps serving, so `Ready` is left as it
//! is). The Events of a volume filling up and getting room again are published by the caller
//! from [`transition`].
//!
//! The report comes from a pod whose database the tenant controls: it is read as
//! [`instance_report`] reads every report, and figures that cannot be a filesystem's are
//! ignored. A tenant can make its own cluster look fuller or emptier than it is, and nothing
//! else.

use kube::Resource as _;
use kube::runtime::events::EventType;
use tusk_api::cluster::DiskUsage;
use tusk_api::conditions::reasons;
use tusk_api::instance::{DISK_PATH, DiskReport, MAX_DISK_REPORT_BYTES};
use tusk_api::{PostgresCluster, PostgresClusterStatus};

use super::{degraded, instance_report};
use crate::context::Context;
use crate::events;

/// How close to the threshold, in percentage points, a volume must be to be looked at every
/// minute rather than at the cluster's usual resync.
pub const WATCHED_MARGIN: i32 = 20;

/// What the instance at `pod_ip` reports, when it can be read and makes sense.
pub async fn observe(pod_ip: Option<&str>) -> Option<DiskUsage> {
    let pod_ip = pod_ip?;
    match instance_report::fetch::<DiskReport>(pod_ip, DISK_PATH, MAX_DISK_REPORT_BYTES).await {
        Ok(report) => usage(report),
        Err(error) => {
            tracing::debug!(%error, "cannot read the instance's disk report");
            None
        }
    }
}

/// The usage a report describes: `None` for figures no filesystem has (nothing at all, or more
/// than an `i64` holds).
pub fn usage(report: DiskReport) -> Option<DiskUsage> {
    let total = report.used_bytes.checked_add(report.available_bytes)?;
    if total == 0 {
        return None;
    }
    let used_bytes = i64::try_from(report.used_bytes).ok()?;
    let total_bytes = i64::try_from(total).ok()?;
    // Rounded up, as df rounds: a volume is never shown emptier than it is.
    let used_percent = u128::from(report.used_bytes) * 100;
    let used_percent = used_percent.div_ceil(u128::from(total));
    Some(DiskUsage {
        used_bytes,
        total_bytes,
        used_percent: i32::try_from(used_percent).ok()?,
    })
}

/// What `status.disk` says: the new figure when one was read, else the last one. A change of
/// bytes within the same percentage is not recorded, so a busy database does not cause a
/// status write at every look.
pub fn record(previous: Option<&DiskUsage>, fresh: Option<DiskUsage>) -> Option<DiskUsage> {
    match (previous, fresh) {
        (Some(previous), Some(fresh)) if previous.used_percent == fresh.used_percent => {
            Some(previous.clone())
        }
        (previous, fresh) => fresh.or_else(|| previous.cloned()),
    }
}

/// Whether `usage` counts as full at `full_percent`.
pub fn is_full(usage: Option<&DiskUsage>, full_percent: u8) -> bool {
    usage.is_some_and(|usage| usage.used_percent >= i32::from(full_percent))
}

/// Whether `usage` is close enough to `full_percent` to be looked at every minute.
pub fn is_watched(usage: Option<&DiskUsage>, full_percent: u8) -> bool {
    usage.is_some_and(|usage| usage.used_percent + WATCHED_MARGIN >= i32::from(full_percent))
}

/// The status with `disk` recorded and, when the volume is full, `DiskFull` among the reasons
/// the cluster is `Degraded` for (see [`super::degraded`]).
pub fn overlay(
    mut status: PostgresClusterStatus,
    disk: Option<DiskUsage>,
    full_percent: u8,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> PostgresClusterStatus {
    status.disk = disk;
    match status.disk.as_ref() {
        Some(usage) if is_full(Some(usage), full_percent) => {
            let message = full_message(usage, full_percent);
            degraded::add(status, reasons::DISK_FULL, &message, generation, now)
        }
        _ => status,
    }
}

/// What changed between the recorded usage before and after a reconcile, for its Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The volume became full: a Warning `DiskFull` with this note.
    Filled(String),
    /// The volume has room again: a Normal `Recovered` with this note.
    Emptied(String),
}

/// The Event a change from `before` to `after` calls for, if any.
pub fn transition(
    before: Option<&DiskUsage>,
    after: Option<&DiskUsage>,
    full_percent: u8,
) -> Option<Transition> {
    let after = after?;
    match (
        is_full(before, full_percent),
        is_full(Some(after), full_percent),
    ) {
        (false, true) => Some(Transition::Filled(full_message(after, full_percent))),
        (true, false) => Some(Transition::Emptied(format!(
            "The data volume has room again: {}, below {full_percent}%",
            figures(after)
        ))),
        _ => None,
    }
}

/// Publishes the Event of a change from `before` to `after` on `cluster`, if it calls for one.
pub async fn report(
    context: &Context,
    cluster: &PostgresCluster,
    before: Option<&DiskUsage>,
    after: Option<&DiskUsage>,
) {
    let full_percent = context.config.disk.full_percent;
    let (type_, reason, note) = match transition(before, after, full_percent) {
        Some(Transition::Filled(note)) => (EventType::Warning, reasons::DISK_FULL, note),
        Some(Transition::Emptied(note)) => (EventType::Normal, reasons::RECOVERED, note),
        None => return,
    };
    events::publish(
        &context.recorder,
        &cluster.object_ref(&()),
        type_,
        reason,
        "MeasureDisk",
        note,
    )
    .await;
}

/// The condition's and the Warning Event's message.
fn full_message(usage: &DiskUsage, full_percent: u8) -> String {
    format!(
        "The data volume is {}, at or above {full_percent}%; PostgreSQL stops when it is full. \
         Delete data, or grow spec.postgresDiskSize",
        figures(usage)
    )
}

/// `87% full (0.87 GiB of 1.00 GiB used)`, in MiB for a volume under 1 GiB.
fn figures(usage: &DiskUsage) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    const GIB: f64 = 1024.0 * MIB;
    let (unit, size, decimals) = if usage.total_bytes < 1 << 30 {
        ("MiB", MIB, 0)
    } else {
        ("GiB", GIB, 2)
    };
    let amount = |bytes: i64| format!("{:.decimals$}", bytes as f64 / size);
    format!(
        "{}% full ({} {unit} of {} {unit} used)",
        usage.used_percent,
        amount(usage.used_bytes),
        amount(usage.total_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{self, DesiredCondition};
    use tusk_api::cluster::ClusterPhase;
    use tusk_api::conditions::{FALSE, TRUE, types};

    fn report(used: u64, available: u64) -> DiskReport {
        DiskReport {
            used_bytes: used,
            available_bytes: available,
        }
    }

    #[test]
    fn usage_is_rounded_up_and_impossible_figures_are_ignored() {
        let usage = usage(report(851, 149)).unwrap();
        assert_eq!((usage.used_percent, usage.total_bytes), (86, 1000));
        assert_eq!(super::usage(report(0, 1)).unwrap().used_percent, 0);
        assert_eq!(super::usage(report(0, 0)), None);
        assert_eq!(super::usage(report(u64::MAX, 1)), None);
        assert_eq!(super::usage(report(u64::MAX / 2 + 1, 0)), None);
    }

    #[test]
    fn a_full_volume_degrades_the_cluster_beside_other_failures() {
        let now = jiff::Timestamp::from_second(10).unwrap();
        let healthy = PostgresClusterStatus {
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
                now,
            ),
            ..PostgresClusterStatus::default()
        };
        let gib = 1 << 30;
        let full = usage(report(9 * gib / 10, gib - 9 * gib / 10));
        let status = overlay(healthy.clone(), full.clone(), 85, Some(1), now);
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        let degraded = conditions::find(&status.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            (TRUE, reasons::DISK_FULL)
        );
        assert!(
            degraded.message.starts_with(
                "The data volume is 90% full (0.90 GiB of 1.00 GiB used), at or above 85%"
            ),
            "{}",
            degraded.message
        );
        // Below the threshold: recorded, nothing else.
        let roomy = usage(report(gib / 2, gib / 2));
        let status = overlay(healthy.clone(), roomy.clone(), 85, Some(1), now);
        assert_eq!(
            status,
            PostgresClusterStatus {
                disk: roomy,
                ..healthy
            }
        );
        // Already degraded for the instance's own failure: that reason stays first, and the
        // full volume is named too.
        let crashing = overlay(status, None, 85, Some(1), now);
        let crash = PostgresClusterStatus {
            phase: Some(ClusterPhase::Degraded),
            conditions: conditions::merge(
                &crashing.conditions,
                &[DesiredCondition::new(
                    types::DEGRADED,
                    TRUE,
                    reasons::CRASH_LOOP,
                    "PANIC: could not write to file",
                )],
                Some(1),
                now,
            ),
            ..crashing
        };
        let status = overlay(crash, full, 85, Some(1), now);
        let degraded = conditions::find(&status.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.reason, reasons::CRASH_LOOP);
        assert!(
            degraded.message.starts_with(
                "PANIC: could not write to file\nAlso DiskFull: The data volume is 90% full"
            ),
            "{}",
            degraded.message
        );
    }

    #[test]
    fn filling_and_emptying_are_each_one_event() {
        let at = |percent: u64| usage(report(percent, 100 - percent));
        assert!(matches!(
            transition(at(50).as_ref(), at(90).as_ref(), 85),
            Some(Transition::Filled(note)) if note.starts_with("The data volume is 90% full")
        ));
        assert_eq!(transition(at(90).as_ref(), at(95).as_ref(), 85), None);
        assert!(matches!(
            transition(at(90).as_ref(), at(40).as_ref(), 85),
            Some(Transition::Emptied(note)) if note.contains("40% full") && note.ends_with("below 85%")
        ));
        assert_eq!(transition(at(40).as_ref(), at(50).as_ref(), 85), None);
        // First look at a cluster that is already full: it is news.
        assert!(matches!(
            transition(None, at(90).as_ref(), 85),
            Some(Transition::Filled(_))
        ));
        // A small volume is told in MiB.
        assert!(matches!(
            transition(None, usage(report(80 << 20, 48 << 20)).as_ref(), 40),
            Some(Transition::Filled(note)) if note.starts_with("The data volume is 63% full (80 MiB of 128 MiB used)")
        ));
        // Nothing read: nothing changed.
        assert_eq!(transition(at(90).as_ref(), None, 85), None);
    }

    #[test]
    fn only_a_new_percentage_is_recorded() {
        let first = usage(report(500, 500));
        let same_percentage = usage(report(499, 501));
        let fuller = usage(report(520, 480));
        assert_eq!(record(first.as_ref(), same_percentage), first);
        assert_eq!(record(first.as_ref(), fuller.clone()), fuller);
        assert_eq!(record(first.as_ref(), None), first);
        assert_eq!(record(None, None), None);
    }
}
