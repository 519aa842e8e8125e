//! One rule for a cluster that is `Degraded` for several reasons at once.
//!
//! A failure of the instance itself (it crash-loops, cannot start, cannot be scheduled, or
//! PostgreSQL refused its parameters; set by [`super::status`] and [`super::parameters`]) is the
//! most pressing problem: the database does not serve, or does not serve the spec. Besides it,
//! a serving cluster can be in trouble for several reasons at once, each added here by the
//! module that sees it ([`super::disk`], [`super::health`], the certificate checks). None hides
//! another:
//!
//! - the condition's reason is the most severe active problem: the instance's own failure,
//!   then, in this order, [`RANKED`]: `DiskFull` (PostgreSQL stops when the volume is full),
//!   `VolumeExpansionRefused` and `VolumeExpansionFailed` (the volume keeps the size it has,
//!   full or not),
//!   `ArchivingFailing` (WAL piles up on the volume, and point-in-time recovery stops at the last
//!   archived segment), `CertificateNotRenewed` (clients refuse the certificate once it
//!   expires), `InvalidCertificateSecret` (the previous certificate keeps serving),
//!   `BackupStale`;
//! - the message is the most severe problem's message, then one line per other problem,
//!   `Also <Reason>: <message>`, in the same order. A cluster with one problem has its message
//!   alone.
//!
//! Every message is a single line (control characters become spaces), so the lines of the
//! condition always tell the problems apart, whatever a message quotes from the tenant's
//! database. Each problem keeps its own Events: a Warning of its reason when it appears or its
//! message changes, a Normal `Recovered` when it clears ([`report`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource as _;
use kube::runtime::events::EventType;
use tusk_api::PostgresCluster;
use tusk_api::cluster::{ClusterPhase, PostgresClusterStatus};
use tusk_api::conditions::{TRUE, reasons, types};
use tusk_api::instance::printable;

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::events;

/// The problems of a serving cluster, most severe first. A reason not listed here is the
/// instance's own failure, which comes before all of them.
pub const RANKED: [&str; 7] = [
    reasons::DISK_FULL,
    reasons::VOLUME_EXPANSION_REFUSED,
    reasons::VOLUME_EXPANSION_FAILED,
    reasons::ARCHIVING_FAILING,
    reasons::CERTIFICATE_NOT_RENEWED,
    reasons::INVALID_CERTIFICATE_SECRET,
    reasons::BACKUP_STALE,
];

/// What starts the line of each problem after the first.
const ALSO: &str = "Also ";

/// The most of one problem's message kept.
const MAX_MESSAGE: usize = 4096;

/// One reason the cluster is `Degraded`, with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The condition reason.
    pub reason: String,
    /// Its message: one line.
    pub message: String,
}

/// Where `reason` ranks: the instance's own failures first, then [`RANKED`] in order.
fn rank(reason: &str) -> usize {
    RANKED
        .iter()
        .position(|ranked| *ranked == reason)
        .map_or(0, |position| position + 1)
}

/// The problems a `Degraded` condition names, most severe first; none when it does not hold.
pub fn problems(condition: Option<&Condition>) -> Vec<Problem> {
    let Some(condition) = condition.filter(|condition| condition.status == TRUE) else {
        return Vec::new();
    };
    let mut lines = condition.message.split('\n');
    let mut found = vec![Problem {
        reason: condition.reason.clone(),
        message: lines.next().unwrap_or_default().to_owned(),
    }];
    for line in lines {
        let named = line
            .strip_prefix(ALSO)
            .and_then(|rest| rest.split_once(": "))
            .filter(|(reason, _)| RANKED.contains(reason));
        match named {
            Some((reason, message)) => found.push(Problem {
                reason: reason.to_owned(),
                message: message.to_owned(),
            }),
            // Not a line this module wrote: part of the message before it.
            None => {
                if let Some(last) = found.last_mut() {
                    last.message.push(' ');
                    last.message.push_str(line);
                }
            }
        }
    }
    found
}

/// The message of the problem of `reason` the status's `Degraded` condition names, if it does.
pub fn message_of(status: Option<&PostgresClusterStatus>, reason: &str) -> Option<String> {
    let condition = status.and_then(|status| conditions::find(&status.conditions, types::DEGRADED));
    problems(condition)
        .into_iter()
        .find(|problem| problem.reason == reason)
        .map(|problem| problem.message)
}

/// The status with the problem of `reason` added to `Degraded` under the module's rule (its
/// message replaces an earlier one of the same reason), and phase `Degraded`. `Ready` and
/// `Progressing` are left as they are: they say whether the database serves.
pub fn add(
    mut status: PostgresClusterStatus,
    reason: &'static str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> PostgresClusterStatus {
    let mut found = problems(conditions::find(&status.conditions, types::DEGRADED));
    found.retain(|problem| problem.reason != reason);
    found.push(Problem {
        reason: reason.to_owned(),
        message: printable(message, MAX_MESSAGE),
    });
    // Stable: of the instance's own failures (one at a time), the first stays first.
    found.sort_by_key(|problem| rank(&problem.reason));
    let top = &found[0];
    let mut combined = top.message.clone();
    for other in &found[1..] {
        combined.push('\n');
        combined.push_str(&format!("{ALSO}{}: {}", other.reason, other.message));
    }
    status.conditions = conditions::merge(
        &status.conditions,
        &[DesiredCondition::new(
            types::DEGRADED,
            TRUE,
            reason,
            combined,
        )],
        generation,
        now,
    );
    // The most severe reason, which may be the instance's own (not a `&'static str`).
    if let Some(condition) = status
        .conditions
        .iter_mut()
        .find(|condition| condition.type_ == types::DEGRADED)
    {
        condition.reason = top.reason.clone();
    }
    status.phase = Some(ClusterPhase::Degraded);
    status
}

/// What a problem's Events say besides its message.
#[derive(Clone, Copy, Debug)]
pub struct Signal {
    /// The condition reason, and the reason of the Warning Event.
    pub reason: &'static str,
    /// The Events' action.
    pub action: &'static str,
    /// The note of the Normal `Recovered` Event when the problem clears.
    pub recovered: &'static str,
}

/// The Event a problem's change from the cluster's recorded status to `after` calls for: a
/// Warning with the problem's message when it appears or its message changes, a Normal
/// `Recovered` when it clears.
pub fn event_for(
    signal: &Signal,
    before: Option<&PostgresClusterStatus>,
    after: &PostgresClusterStatus,
) -> Option<(EventType, &'static str, String)> {
    let was = message_of(before, signal.reason);
    let is = message_of(Some(after), signal.reason);
    match (was, is) {
        (was, Some(message)) if was.as_ref() != Some(&message) => {
            Some((EventType::Warning, signal.reason, message))
        }
        (Some(_), None) => Some((
            EventType::Normal,
            reasons::RECOVERED,
            signal.recovered.to_owned(),
        )),
        _ => None,
    }
}

/// Publishes on `cluster` the Event of [`event_for`], if one is called for.
pub async fn report(
    context: &Context,
    cluster: &PostgresCluster,
    signal: &Signal,
    after: &PostgresClusterStatus,
) {
    let Some((type_, reason, note)) = event_for(signal, cluster.status.as_ref(), after) else {
        return;
    };
    events::publish(
        &context.recorder,
        &cluster.object_ref(&()),
        type_,
        reason,
        signal.action,
        note,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::conditions::FALSE;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    fn ready() -> PostgresClusterStatus {
        PostgresClusterStatus {
            phase: Some(ClusterPhase::Ready),
            conditions: conditions::merge(
                &[],
                &[
                    DesiredCondition::new(
                        types::DEGRADED,
                        FALSE,
                        reasons::RECONCILED,
                        "Nothing is wrong",
                    ),
                    DesiredCondition::new(types::READY, TRUE, reasons::AVAILABLE, "Serving"),
                ],
                Some(1),
                at(1),
            ),
            ..PostgresClusterStatus::default()
        }
    }

    fn crash_looping() -> PostgresClusterStatus {
        let mut status = ready();
        status.phase = Some(ClusterPhase::Degraded);
        status.conditions = conditions::merge(
            &status.conditions,
            &[DesiredCondition::new(
                types::DEGRADED,
                TRUE,
                reasons::CRASH_LOOP,
                "PANIC:  could not write to file \"pg_wal/xlogtemp.42\": No space left on device",
            )],
            Some(1),
            at(5),
        );
        status
    }

    fn degraded(status: &PostgresClusterStatus) -> &Condition {
        conditions::find(&status.conditions, types::DEGRADED).unwrap()
    }

    #[test]
    fn one_problem_is_the_condition_alone() {
        let status = add(ready(), reasons::BACKUP_STALE, "stale", Some(1), at(2));
        let condition = degraded(&status);
        assert_eq!(
            (
                condition.status.as_str(),
                condition.reason.as_str(),
                condition.message.as_str()
            ),
            (TRUE, reasons::BACKUP_STALE, "stale")
        );
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        // Ready says whether the database serves: it still does.
        let ready = conditions::find(&status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, TRUE);
    }

    #[test]
    fn every_problem_is_named_the_most_severe_first() {
        // Added in any order, the most severe is the reason; the others follow, one a line.
        let status = add(
            ready(),
            reasons::BACKUP_STALE,
            "no backup since Monday",
            Some(1),
            at(2),
        );
        let status = add(
            status,
            reasons::DISK_FULL,
            "The data volume is 90% full",
            Some(1),
            at(3),
        );
        let status = add(
            status,
            reasons::ARCHIVING_FAILING,
            "000000010000000000000003 cannot be archived",
            Some(1),
            at(4),
        );
        let condition = degraded(&status);
        assert_eq!(condition.reason, reasons::DISK_FULL);
        assert_eq!(
            condition.message,
            "The data volume is 90% full\n\
             Also ArchivingFailing: 000000010000000000000003 cannot be archived\n\
             Also BackupStale: no backup since Monday"
        );
        // It became Degraded at the first problem; later ones do not move the time.
        assert_eq!(condition.last_transition_time.0, at(2));

        // The instance's own failure comes first and keeps its reason; nothing is hidden.
        let crashing = add(
            crash_looping(),
            reasons::DISK_FULL,
            "The data volume is 100% full",
            Some(1),
            at(6),
        );
        let condition = degraded(&crashing);
        assert_eq!(condition.reason, reasons::CRASH_LOOP);
        assert_eq!(condition.last_transition_time.0, at(5));
        assert_eq!(
            problems(Some(condition)),
            [
                Problem {
                    reason: reasons::CRASH_LOOP.into(),
                    message: degraded(&crash_looping()).message.clone(),
                },
                Problem {
                    reason: reasons::DISK_FULL.into(),
                    message: "The data volume is 100% full".into(),
                },
            ]
        );
        // A problem added again replaces its message.
        let again = add(
            crashing,
            reasons::DISK_FULL,
            "The data volume is 99% full",
            Some(1),
            at(7),
        );
        assert_eq!(
            message_of(Some(&again), reasons::DISK_FULL).as_deref(),
            Some("The data volume is 99% full")
        );
        assert_eq!(problems(Some(degraded(&again))).len(), 2);
    }

    #[test]
    fn a_message_cannot_pass_for_another_problem() {
        let forged = "archive failed\nAlso DiskFull: The data volume is 99% full";
        let status = add(ready(), reasons::ARCHIVING_FAILING, forged, Some(1), at(2));
        assert_eq!(
            problems(Some(degraded(&status)))
                .iter()
                .map(|problem| problem.reason.as_str())
                .collect::<Vec<_>>(),
            [reasons::ARCHIVING_FAILING]
        );
        assert_eq!(message_of(Some(&status), reasons::DISK_FULL), None);
    }

    #[test]
    fn each_problem_has_its_warning_and_its_recovery() {
        let archiving = Signal {
            reason: reasons::ARCHIVING_FAILING,
            action: "ArchiveWAL",
            recovered: "WAL archiving works again",
        };
        let stale = Signal {
            reason: reasons::BACKUP_STALE,
            action: "BackUp",
            recovered: "A recent backup exists again",
        };
        let healthy = ready();
        let failing = add(
            healthy.clone(),
            reasons::ARCHIVING_FAILING,
            "a",
            Some(1),
            at(2),
        );
        assert_eq!(
            event_for(&archiving, Some(&healthy), &failing),
            Some((EventType::Warning, reasons::ARCHIVING_FAILING, "a".into()))
        );
        assert_eq!(event_for(&archiving, Some(&failing), &failing), None);
        // Another problem that appears beside it is news of its own; archiving's is not.
        let both = add(failing.clone(), reasons::BACKUP_STALE, "s", Some(1), at(3));
        assert_eq!(event_for(&archiving, Some(&failing), &both), None);
        assert_eq!(
            event_for(&stale, Some(&failing), &both),
            Some((EventType::Warning, reasons::BACKUP_STALE, "s".into()))
        );
        // Behind the instance's own failure, a problem still appears and clears.
        let crash_and_archiving = add(
            crash_looping(),
            reasons::ARCHIVING_FAILING,
            "b",
            Some(1),
            at(4),
        );
        assert_eq!(
            event_for(&archiving, Some(&crash_looping()), &crash_and_archiving),
            Some((EventType::Warning, reasons::ARCHIVING_FAILING, "b".into()))
        );
        assert_eq!(
            event_for(&archiving, Some(&crash_and_archiving), &crash_looping()),
            Some((
                EventType::Normal,
                reasons::RECOVERED,
                "WAL archiving works again".into()
            ))
        );
        // A changed message is a new Warning.
        let changed = add(
            both.clone(),
            reasons::ARCHIVING_FAILING,
            "c",
            Some(1),
            at(5),
        );
        assert_eq!(
            event_for(&archiving, Some(&both), &changed),
            Some((EventType::Warning, reasons::ARCHIVING_FAILING, "c".into()))
        );
        assert_eq!(event_for(&stale, Some(&both), &changed), None);
        // First look at a cluster: a problem is news, no problem is not.
        assert!(event_for(&stale, None, &both).is_some());
        assert_eq!(event_for(&stale, None, &healthy), None);
    }
}
