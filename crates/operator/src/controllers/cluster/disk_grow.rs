//! Growing a full data volume without waiting for its owner, where the platform allows it
//! (the operator's `disk.autoGrow`, off by default).
//!
//! When a cluster is `DiskFull`, the operator raises its volumes' requested storage by
//! `stepPercent` of their size (whole GiB, at least one), never above `maxSizeGi`, records the
//! size in `status.autoGrownDiskSize` and a Normal `DiskGrown` Event. It grows again only once
//! the instance reports a filesystem of the size asked, so a volume whose storage grows slowly
//! (or only when its pod restarts) is not asked for more meanwhile. A full volume at the limit
//! gets a Warning `DiskGrowthLimitReached`, once when it fills and once when a growth that
//! reached the limit was not enough. A volume is never shrunk: a larger
//! `spec.postgresDiskSize` wins, and the grown size no longer shows.

use kube::Resource as _;
use kube::runtime::events::EventType;
use tusk_api::cluster::DiskUsage;
use tusk_api::conditions::reasons;

use super::disk::is_full;
use crate::config::AutoGrowSettings;
use crate::context::Context;
use crate::events;

/// Bytes in a GiB.
const GIB: i64 = 1 << 30;

/// What to do about a cluster's volume size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: not full, auto-grow off, or a growth not yet in effect.
    Nothing,
    /// Ask the volumes for `to` GiB (they have `from`).
    Grow {
        /// The size in GiB the volumes have.
        from: i32,
        /// The size in GiB to ask.
        to: i32,
    },
    /// Full at the limit: warn (this is news).
    AtLimit {
        /// The size in GiB the volumes have, the limit or more.
        size: i32,
    },
}

/// The size in GiB the volumes have been asked for: the spec's, or the grown one above it.
pub fn effective_size(spec_size: i32, grown: Option<i32>) -> i32 {
    grown.map_or(spec_size, |grown| grown.max(spec_size))
}

/// The grown size still worth showing in status: only above the spec's.
pub fn shown_growth(spec_size: i32, grown: Option<i32>) -> Option<i32> {
    grown.filter(|grown| *grown > spec_size)
}

/// What a cluster whose volumes were asked for `size` GiB needs, given the usage reported now
/// and the one recorded before.
pub fn decide(
    settings: &AutoGrowSettings,
    full_percent: u8,
    size: i32,
    before: Option<&DiskUsage>,
    now: Option<&DiskUsage>,
) -> Decision {
    let limit = settings.max_size_gi;
    let Some(usage) = now.filter(|usage| limit > 0 && is_full(Some(usage), full_percent)) else {
        return Decision::Nothing;
    };
    // The filesystem has the size asked (less what the filesystem keeps for itself), so the
    // last growth took effect.
    if usage.total_bytes < i64::from(size) * GIB * 9 / 10 {
        return Decision::Nothing;
    }
    if size >= limit {
        let newly_full = !is_full(before, full_percent);
        let just_grown = before.is_some_and(|before| before.total_bytes < usage.total_bytes);
        return if newly_full || just_grown {
            Decision::AtLimit { size }
        } else {
            Decision::Nothing
        };
    }
    let step = (i64::from(size) * i64::from(settings.step_percent) + 99) / 100;
    let to = (i64::from(size) + step.max(1)).min(i64::from(limit));
    Decision::Grow {
        from: size,
        to: i32::try_from(to).unwrap_or(limit),
    }
}

/// Publishes the Event of a decision on `cluster`.
pub async fn report(
    context: &Context,
    cluster: &tusk_api::PostgresCluster,
    decision: &Decision,
    usage: Option<&DiskUsage>,
) {
    let limit = context.config.disk.auto_grow.max_size_gi;
    let percent = usage.map_or(0, |usage| usage.used_percent);
    let (type_, reason, note) = match decision {
        Decision::Nothing => return,
        Decision::Grow { from, to } => (
            EventType::Normal,
            reasons::DISK_GROWN,
            format!(
                "The data volume is {percent}% full: asked it to grow from {from}Gi to {to}Gi \
                 (the platform's limit is {limit}Gi)"
            ),
        ),
        Decision::AtLimit { size } => (
            EventType::Warning,
            reasons::DISK_GROWTH_LIMIT_REACHED,
            format!(
                "The data volume is {percent}% full at {size}Gi, and the platform's limit for \
                 growing it is {limit}Gi; delete data, or ask the platform team for a higher \
                 disk.autoGrow.maxSizeGi"
            ),
        ),
    };
    events::publish(
        &context.recorder,
        &cluster.object_ref(&()),
        type_,
        reason,
        "GrowDisk",
        note,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_size_gi: i32, step_percent: i32) -> AutoGrowSettings {
        AutoGrowSettings {
            max_size_gi,
            step_percent,
        }
    }

    fn usage(size_gib: i64, used_percent: i32) -> DiskUsage {
        let total_bytes = size_gib * GIB * 97 / 100;
        DiskUsage {
            used_bytes: total_bytes * i64::from(used_percent) / 100,
            total_bytes,
            used_percent,
        }
    }

    #[test]
    fn a_full_volume_grows_by_its_step_up_to_the_limit() {
        let grow = |size, limit, step| {
            decide(
                &settings(limit, step),
                85,
                size,
                Some(&usage(i64::from(size), 80)),
                Some(&usage(i64::from(size), 90)),
            )
        };
        assert_eq!(grow(10, 100, 50), Decision::Grow { from: 10, to: 15 });
        assert_eq!(
            grow(1, 100, 50),
            Decision::Grow { from: 1, to: 2 },
            "a whole GiB"
        );
        assert_eq!(
            grow(3, 100, 10),
            Decision::Grow { from: 3, to: 4 },
            "at least 1 GiB"
        );
        assert_eq!(
            grow(10, 12, 50),
            Decision::Grow { from: 10, to: 12 },
            "never above the limit"
        );
        assert_eq!(
            grow(12, 12, 50),
            Decision::AtLimit { size: 12 },
            "newly full at the limit"
        );
        assert_eq!(
            grow(20, 12, 50),
            Decision::AtLimit { size: 20 },
            "the owner made it larger"
        );
    }

    #[test]
    fn nothing_grows_when_off_not_full_or_not_yet_grown() {
        let full = usage(10, 90);
        assert_eq!(
            decide(&settings(0, 50), 85, 10, None, Some(&full)),
            Decision::Nothing,
            "off by default"
        );
        assert_eq!(
            decide(&settings(100, 50), 85, 10, None, Some(&usage(10, 84))),
            Decision::Nothing,
            "not full"
        );
        assert_eq!(
            decide(&settings(100, 50), 85, 10, None, None),
            Decision::Nothing,
            "no report"
        );
        // Asked for 15 GiB, the filesystem still has 10: wait, do not ask again.
        assert_eq!(
            decide(&settings(100, 50), 85, 15, Some(&full), Some(&full)),
            Decision::Nothing
        );
    }

    #[test]
    fn the_limit_is_reported_once_per_filling() {
        let full = usage(12, 90);
        let at_limit =
            |before: Option<&DiskUsage>| decide(&settings(12, 50), 85, 12, before, Some(&full));
        assert_eq!(
            at_limit(Some(&usage(12, 80))),
            Decision::AtLimit { size: 12 }
        );
        assert_eq!(
            at_limit(Some(&usage(8, 95))),
            Decision::AtLimit { size: 12 },
            "grown, still full"
        );
        assert_eq!(at_limit(Some(&full)), Decision::Nothing, "already said");
    }

    #[test]
    fn the_grown_size_shows_only_above_the_spec() {
        assert_eq!(effective_size(10, Some(15)), 15);
        assert_eq!(effective_size(20, Some(15)), 20);
        assert_eq!(effective_size(10, None), 10);
        assert_eq!(shown_growth(10, Some(15)), Some(15));
        assert_eq!(shown_growth(20, Some(15)), None);
    }
}
