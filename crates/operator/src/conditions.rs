//! Setting status conditions so that `lastTransitionTime` only moves when a condition's status
//! actually changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as a controller computes it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// The condition type, one of `tusk_api::conditions::types`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// A PascalCase reason, one of `tusk_api::conditions::reasons`.
    pub reason: &'static str,
    /// A sentence for a person.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_` with the given status, reason and message.
    pub fn new(
        type_: &'static str,
        status: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges `desired` into `current`: a condition whose status is unchanged keeps its
/// `lastTransitionTime`; a new or changed one gets `now`. Conditions of other types are kept.
pub fn merge(
    current: &[Condition],
    desired: &[DesiredCondition],
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = current
        .iter()
        .filter(|existing| !desired.iter().any(|d| d.type_ == existing.type_))
        .cloned()
        .collect();
    for wanted in desired {
        let previous = current.iter().find(|c| c.type_ == wanted.type_);
        let last_transition_time = match previous {
            Some(previous) if previous.status == wanted.status => {
                previous.last_transition_time.clone()
            }
            _ => Time(now),
        };
        merged.push(Condition {
            type_: wanted.type_.to_owned(),
            status: wanted.status.to_owned(),
            reason: wanted.reason.to_owned(),
            message: wanted.message.clone(),
            observed_generation,
            last_transition_time,
        });
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::conditions::{FALSE, TRUE, reasons, types};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let first = merge(
            &[],
            &[DesiredCondition::new(
                types::READY,
                FALSE,
                reasons::STARTING,
                "starting",
            )],
            Some(1),
            at(100),
        );
        let second = merge(
            &first,
            &[DesiredCondition::new(
                types::READY,
                FALSE,
                reasons::STARTING,
                "still starting",
            )],
            Some(2),
            at(200),
        );
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].message, "still starting");
        assert_eq!(second[0].observed_generation, Some(2));

        let third = merge(
            &second,
            &[DesiredCondition::new(
                types::READY,
                TRUE,
                reasons::AVAILABLE,
                "ready",
            )],
            Some(2),
            at(300),
        );
        assert_eq!(third[0].last_transition_time, Time(at(300)));
    }

    #[test]
    fn other_condition_types_are_kept() {
        let first = merge(
            &[],
            &[DesiredCondition::new(
                types::DEGRADED,
                TRUE,
                reasons::DISK_FULL,
                "x",
            )],
            None,
            at(1),
        );
        let second = merge(
            &first,
            &[DesiredCondition::new(
                types::READY,
                TRUE,
                reasons::AVAILABLE,
                "y",
            )],
            None,
            at(2),
        );
        assert_eq!(second.len(), 2);
        assert!(find(&second, types::DEGRADED).is_some());
    }
}
