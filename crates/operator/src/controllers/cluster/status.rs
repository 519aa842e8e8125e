//! A cluster's status, computed from what was applied and observed. Pure, so every transition
//! is unit-tested.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use tusk_api::cluster::{ClusterPhase, LastBackup, PostgresClusterStatus};
use tusk_api::conditions::{FALSE, TRUE, reasons, types};
use tusk_api::{PostgresCluster, names};

use crate::conditions::{self, DesiredCondition};

/// What the status is computed from.
pub struct Observed<'a> {
    /// The cluster.
    pub cluster: &'a PostgresCluster,
    /// Its StatefulSet as the API server returned it after the apply.
    pub stateful_set: &'a StatefulSet,
    /// PVCs that were just asked to grow.
    pub expanding_volumes: &'a [String],
    /// The newest backup of the cluster.
    pub last_backup: Option<LastBackup>,
    /// The current time.
    pub now: Timestamp,
}

/// The status the cluster should have.
pub fn compute(observed: &Observed<'_>) -> PostgresClusterStatus {
    let cluster = observed.cluster;
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;

    let sts_generation = observed.stateful_set.metadata.generation;
    let sts_status = observed.stateful_set.status.clone().unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0) >= 1;
    let rolled_out = sts_status.observed_generation.is_some()
        && sts_status.observed_generation >= sts_generation
        && sts_status.update_revision.is_some()
        && sts_status.current_revision == sts_status.update_revision
        && sts_status.updated_replicas.unwrap_or(0) >= 1;
    let was_ready = conditions::find(&previous.conditions, types::READY)
        .is_some_and(|condition| condition.status == TRUE);
    let restoring = cluster.spec.restore.is_some();

    let (phase, desired) = if ready && rolled_out && observed.expanding_volumes.is_empty() {
        (
            ClusterPhase::Ready,
            [
                DesiredCondition::new(
                    types::READY,
                    TRUE,
                    reasons::AVAILABLE,
                    "PostgreSQL accepts connections",
                ),
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::RECONCILED,
                    "The cluster matches its spec",
                ),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    } else if ready || (was_ready && !rolled_out) {
        let message = if observed.expanding_volumes.is_empty() {
            "A change to the spec is rolling out".to_owned()
        } else {
            format!("Growing volumes {}", observed.expanding_volumes.join(", "))
        };
        (
            ClusterPhase::Updating,
            [
                if ready {
                    DesiredCondition::new(
                        types::READY,
                        TRUE,
                        reasons::AVAILABLE,
                        "PostgreSQL accepts connections",
                    )
                } else {
                    DesiredCondition::new(
                        types::READY,
                        FALSE,
                        reasons::UPDATING,
                        "The instance restarts with the new spec",
                    )
                },
                DesiredCondition::new(types::PROGRESSING, TRUE, reasons::UPDATING, message),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    } else if was_ready {
        (
            ClusterPhase::Degraded,
            [
                DesiredCondition::new(
                    types::READY,
                    FALSE,
                    reasons::INSTANCE_UNAVAILABLE,
                    "The PostgreSQL instance is not ready; see the pod's Events and logs",
                ),
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::RECONCILED,
                    "The cluster matches its spec",
                ),
                DesiredCondition::new(
                    types::DEGRADED,
                    TRUE,
                    reasons::INSTANCE_UNAVAILABLE,
                    "The PostgreSQL instance stopped accepting connections",
                ),
            ],
        )
    } else {
        let (phase, reason, message) = if restoring {
            (
                ClusterPhase::Restoring,
                reasons::RESTORING,
                "Restoring the data from a backup",
            )
        } else if sts_status.replicas > 0 {
            (
                ClusterPhase::Creating,
                reasons::STARTING,
                "PostgreSQL is starting",
            )
        } else {
            (
                ClusterPhase::Creating,
                reasons::CREATING,
                "The instance is being created",
            )
        };
        (
            phase,
            [
                DesiredCondition::new(types::READY, FALSE, reason, message),
                DesiredCondition::new(types::PROGRESSING, TRUE, reason, message),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    };

    PostgresClusterStatus {
        phase: Some(phase),
        conditions: conditions::merge(&previous.conditions, &desired, generation, observed.now),
        observed_generation: generation,
        endpoint: Some(format!(
            "{}.{namespace}.svc:{}",
            names::read_write_service(name),
            names::POSTGRES_PORT
        )),
        last_backup: observed.last_backup.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use std::collections::BTreeMap;
    use tusk_api::PostgresClusterSpec;

    fn cluster() -> PostgresCluster {
        let mut cluster = PostgresCluster::new(
            "elephant",
            PostgresClusterSpec {
                display_name: "e".into(),
                memory_size: 1,
                postgres_disk_size: 1,
                wal_archiving: false,
                postgres_version: Some("15".into()),
                parameters: BTreeMap::new(),
                restore: None,
            },
        );
        cluster.metadata.namespace = Some("project-a".into());
        cluster.metadata.generation = Some(3);
        cluster
    }

    fn sts(ready: i32, current: &str, update: &str) -> StatefulSet {
        StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(ready),
                updated_replicas: Some(1),
                observed_generation: Some(2),
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn status(cluster: &PostgresCluster, sts: &StatefulSet, now: i64) -> PostgresClusterStatus {
        compute(&Observed {
            cluster,
            stateful_set: sts,
            expanding_volumes: &[],
            last_backup: None,
            now: at(now),
        })
    }

    fn condition<'a>(status: &'a PostgresClusterStatus, type_: &str) -> &'a str {
        &conditions::find(&status.conditions, type_).unwrap().status
    }

    #[test]
    fn a_new_cluster_is_creating_then_ready() {
        let mut cluster = cluster();
        let creating = status(&cluster, &StatefulSet::default(), 10);
        assert_eq!(creating.phase, Some(ClusterPhase::Creating));
        assert_eq!(condition(&creating, types::READY), FALSE);
        assert_eq!(condition(&creating, types::PROGRESSING), TRUE);
        assert_eq!(
            creating.endpoint.as_deref(),
            Some("elephant-rw.project-a.svc:5432")
        );
        assert_eq!(creating.observed_generation, Some(3));

        cluster.status = Some(creating);
        let ready = status(&cluster, &sts(1, "a", "a"), 20);
        assert_eq!(ready.phase, Some(ClusterPhase::Ready));
        assert_eq!(condition(&ready, types::READY), TRUE);
        assert_eq!(condition(&ready, types::PROGRESSING), FALSE);

        // Nothing changed: the status is identical, so no write is needed.
        cluster.status = Some(ready.clone());
        assert_eq!(status(&cluster, &sts(1, "a", "a"), 30), ready);
    }

    #[test]
    fn a_lost_instance_degrades_the_cluster_and_a_rollout_is_updating() {
        let mut cluster = cluster();
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 1));
        let degraded = status(&cluster, &sts(0, "a", "a"), 2);
        assert_eq!(degraded.phase, Some(ClusterPhase::Degraded));
        assert_eq!(condition(&degraded, types::DEGRADED), TRUE);

        let updating = status(&cluster, &sts(0, "a", "b"), 2);
        assert_eq!(updating.phase, Some(ClusterPhase::Updating));
        assert_eq!(condition(&updating, types::PROGRESSING), TRUE);
    }

    #[test]
    fn growing_volumes_show_as_progressing() {
        let mut cluster = cluster();
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 1));
        let growing = compute(&Observed {
            cluster: &cluster,
            stateful_set: &sts(1, "a", "a"),
            expanding_volumes: &["data-elephant-0".into()],
            last_backup: None,
            now: at(2),
        });
        assert_eq!(growing.phase, Some(ClusterPhase::Updating));
        let progressing = conditions::find(&growing.conditions, types::PROGRESSING).unwrap();
        assert!(progressing.message.contains("data-elephant-0"));
    }
}
