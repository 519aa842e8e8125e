//! The restore_test controller: on each PostgresRestoreTest's schedule, restores the cluster's
//! newest PostgresBackup into a throwaway PostgresCluster, has a Job check it, records the
//! outcome (status, an Event, metrics) and deletes the throwaway, whatever the result.
//!
//! A run goes: `RestoreTestStarted` (the throwaway is created), `Recovered` (its PostgreSQL
//! accepts connections: the time to recover is recorded), `CheckStarted` (the check Job and its
//! own ServiceAccount are created), then `RestoreTestPassed`, or `RestoreTestFailed` as a
//! Warning with a reason: NoBackup, NameTaken, RestoreFailed, Timeout, CheckFailed,
//! DataTooOld or Interrupted.
//!
//! The operator never connects to the throwaway: the check runs in the tenant's namespace and
//! reports on the test's status, a claim the operator records only for the run it names. It
//! judges the data's age itself. Every cluster it deletes is one the test controls, whatever
//! the status says. While a run is in progress the test is requeued every few seconds (its
//! throwaway's changes wake it too); otherwise it sleeps until the next run.

pub mod build;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::cluster::ClusterPhase;
use tusk_api::conditions::{FALSE, TRUE, types};
use tusk_api::restore_test::{
    PostgresRestoreTestStatus, RestoreCheckReport, RestoreTestResult, RestoreTestRun,
};
use tusk_api::{PostgresBackup, PostgresCluster, PostgresRestoreTest, names, restore_test};

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::controllers::cluster;
use crate::error::{Error, Result, is_conflict, is_not_found};
use crate::events;
use crate::metrics::RestoreTestLabels;

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "restore-test";

/// How often a run in progress is looked at.
const RUN_POLL: Duration = Duration::from_secs(5);

/// Event reasons of restore tests.
pub mod reasons {
    /// A run started: the throwaway cluster was created.
    pub const STARTED: &str = "RestoreTestStarted";
    /// The throwaway's PostgreSQL accepts connections.
    pub const RECOVERED: &str = "Recovered";
    /// The check Job was created.
    pub const CHECK_STARTED: &str = "CheckStarted";
    /// A run passed.
    pub const PASSED: &str = "RestoreTestPassed";
    /// A run failed (a Warning); the note gives the reason.
    pub const FAILED: &str = "RestoreTestFailed";
}

/// Reasons of a run's result and of the Degraded condition.
pub mod results {
    /// Every check passed.
    pub const PASSED: &str = "Passed";
    /// The cluster has no PostgresBackup to restore.
    pub const NO_BACKUP: &str = "NoBackup";
    /// A PostgresCluster of the throwaway's name exists and is not this test's.
    pub const NAME_TAKEN: &str = "NameTaken";
    /// The throwaway reported itself Degraded while restoring.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// The throwaway did not restore, start and pass its checks within timeoutMinutes.
    pub const TIMEOUT: &str = "Timeout";
    /// The check Job failed, or pg_amcheck found corruption.
    pub const CHECK_FAILED: &str = "CheckFailed";
    /// The restored data is older than maxDataAgeMinutes.
    pub const DATA_TOO_OLD: &str = "DataTooOld";
    /// The throwaway disappeared before the run ended.
    pub const INTERRUPTED: &str = "Interrupted";
    /// The source cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// No run has finished yet.
    pub const PENDING: &str = "Pending";
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let forget = forget_deleted_tests(client.clone(), context.metrics.clone());
    let controller = Controller::new(
        Api::<PostgresRestoreTest>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<PostgresCluster>::all(client.clone()),
        watcher::Config::default().labels(restore_test::RESTORE_TEST_LABEL),
    )
    .reconcile_all_on(context.clock.jumps())
    // Restore tests are schedules too, and as rare.
    .with_config(Config::default().concurrency(context.config.concurrency.backup_schedule))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|_| futures::future::ready(()));
    // The metrics watch ends with the controller.
    tokio::select! {
        () = controller => {}
        () = forget => {}
    }
}

/// Removes the metrics series of restore tests that are deleted, or that went while the watch
/// was down, so that they are bounded by the tests that exist. (Without a finalizer, a deleted
/// test is never reconciled again: only a watch sees it go.)
async fn forget_deleted_tests(client: kube::Client, metrics: crate::metrics::Metrics) {
    let (tests, writer) = reflector::store();
    let events = reflector(
        writer,
        watcher(
            Api::<PostgresRestoreTest>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) = event {
            metrics.retain_restore_tests(|test| {
                tests
                    .get(&ObjectRef::new(&test.name).within(&test.namespace))
                    .is_some()
            });
        }
    }
}

fn error_policy(test: Arc<PostgresRestoreTest>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(test = %test.name_any(), namespace = ?test.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(30))
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// When the next run starts: right after creation for the first, then `interval` hours after
/// the previous run's start (never earlier than an hour after it).
pub fn next_run(
    interval_hours: i32,
    created_at: Timestamp,
    last_started_at: Option<Timestamp>,
) -> Timestamp {
    match last_started_at {
        None => created_at,
        Some(last) => last + SignedDuration::from_hours(i64::from(interval_hours.max(1))),
    }
}

/// A finished run's result, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `Passed` or `Failed`.
    pub result: RestoreTestResult,
    /// One of [`results`].
    pub reason: &'static str,
    /// A sentence for a person.
    pub message: String,
}

impl Outcome {
    fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            result: RestoreTestResult::Failed,
            reason,
            message: message.into(),
        }
    }
}

/// Judges a check report. `data_as_of` is when the restored data's newest transaction
/// committed, as far as anyone can tell: the last commit recovery replayed, else the end of
/// the backup.
pub fn judge(
    report: &RestoreCheckReport,
    data_as_of: Option<Timestamp>,
    max_data_age_minutes: Option<i32>,
    now: Timestamp,
) -> Outcome {
    if let Some(error) = &report.error {
        return Outcome::failed(
            results::CHECK_FAILED,
            format!("The check could not run: {error}"),
        );
    }
    if !report.amcheck_passed {
        return Outcome::failed(
            results::CHECK_FAILED,
            format!(
                "pg_amcheck found the restored data unsound: {}",
                report.amcheck_output
            ),
        );
    }
    if let Some(limit) = max_data_age_minutes {
        let limit = SignedDuration::from_mins(i64::from(limit));
        match data_as_of {
            Some(as_of) if now.duration_since(as_of) > limit => {
                let age = now.duration_since(as_of).as_secs() / 60;
                return Outcome::failed(
                    results::DATA_TOO_OLD,
                    format!(
                        "The restored data is from {as_of}, {age} minutes old; maxDataAgeMinutes allows {} minutes",
                        limit.as_secs() / 60
                    ),
                );
            }
            Some(_) => {}
            None => {
                return Outcome::failed(
                    results::DATA_TOO_OLD,
                    "The age of the restored data cannot be told, and maxDataAgeMinutes is set",
                );
            }
        }
    }
    Outcome {
        result: RestoreTestResult::Passed,
        reason: results::PASSED,
        message: "The newest backup restored, PostgreSQL started and pg_amcheck found every database sound".to_owned(),
    }
}

struct Run<'a> {
    context: &'a Context,
    test: &'a PostgresRestoreTest,
    namespace: String,
    now: Timestamp,
    previous: PostgresRestoreTestStatus,
    status: PostgresRestoreTestStatus,
}

async fn reconcile(test: Arc<PostgresRestoreTest>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    if test.meta().deletion_timestamp.is_some() {
        // The throwaway and its Job are the test's children: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = test.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresRestoreTest",
        field: "namespace",
    })?;
    // The cached copy may predate this controller's own last status write (a throwaway's
    // event can arrive first), and that status decides what is deleted: read it afresh.
    let tests: Api<PostgresRestoreTest> = Api::namespaced(context.client.clone(), &namespace);
    let Some(test) = tests
        .get_opt(&test.name_any())
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresRestoreTest",
            name: test.name_any(),
            source,
        })?
    else {
        return Ok(Action::await_change());
    };
    if test.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let test_uid = test.uid().ok_or(Error::MissingObjectKey {
        kind: "PostgresRestoreTest",
        field: "uid",
    })?;
    let previous = test.status.clone().unwrap_or_default();
    let mut run = Run {
        context: &context,
        test: &test,
        namespace,
        now: context.clock.now(),
        status: PostgresRestoreTestStatus {
            observed_generation: test.metadata.generation,
            ..previous.clone()
        },
        previous,
    };
    let clusters: Api<PostgresCluster> = Api::namespaced(context.client.clone(), &run.namespace);
    let throwaway_name = restore_test::throwaway_cluster(&test.name_any());
    let throwaway = clusters
        .get_opt(&throwaway_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresCluster",
            name: throwaway_name.clone(),
            source,
        })?
        .filter(|cluster| build::controlled_by(&cluster.metadata, &test_uid));

    let action = match throwaway {
        Some(throwaway) => follow(&mut run, &clusters, throwaway).await?,
        None => {
            if run_in_progress(&run.status) {
                finish(
                    &mut run,
                    &clusters,
                    None,
                    Outcome::failed(
                        results::INTERRUPTED,
                        format!(
                            "The throwaway cluster {throwaway_name} disappeared before the run ended"
                        ),
                    ),
                )
                .await?;
            }
            schedule(&mut run, &clusters).await?
        }
    };
    write_status(&run).await?;
    Ok(action)
}

fn run_in_progress(status: &PostgresRestoreTestStatus) -> bool {
    status
        .last_run
        .as_ref()
        .is_some_and(|run| run.result == RestoreTestResult::Running)
}

/// No run in progress: start one when due, else sleep until it is.
async fn schedule(run: &mut Run<'_>, clusters: &Api<PostgresCluster>) -> Result<Action> {
    let test = run.test;
    let requested = test
        .annotations()
        .get(restore_test::RUN_NOW_ANNOTATION)
        .map(|value| names::label_value(value))
        .filter(|value| run.status.last_run_request.as_ref() != Some(value));
    let created_at = test
        .metadata
        .creation_timestamp
        .clone()
        .map_or(run.now, |time| time.0);
    let last_started = run.status.last_run.as_ref().map(|run| run.started_at.0);
    let next = next_run(test.spec.interval, created_at, last_started);
    if requested.is_none() {
        if test.spec.suspend {
            run.status.next_run_at = None;
            return Ok(Action::await_change());
        }
        if run.now < next {
            run.status.next_run_at = Some(Time(next));
            return Ok(Action::requeue(
                until(run.now, next).max(Duration::from_secs(1)),
            ));
        }
    }
    if requested.is_some() {
        run.status.last_run_request = requested;
    }
    start(run, clusters).await?;
    let started = run.status.last_run.as_ref().map(|run| run.started_at.0);
    run.status.next_run_at =
        (!test.spec.suspend).then(|| Time(next_run(test.spec.interval, created_at, started)));
    Ok(if run_in_progress(&run.status) {
        Action::requeue(RUN_POLL)
    } else {
        Action::requeue(until(
            run.now,
            next_run(test.spec.interval, created_at, started),
        ))
    })
}

/// Starts a run: restores the newest backup into the throwaway, or records why it cannot.
async fn start(run: &mut Run<'_>, clusters: &Api<PostgresCluster>) -> Result<()> {
    let test = run.test;
    let source_name = &test.spec.cluster.name;
    let throwaway_name = restore_test::throwaway_cluster(&test.name_any());
    run.status.last_run = Some(RestoreTestRun {
        started_at: Time(run.now),
        finished_at: None,
        backup: None,
        throwaway_cluster: None,
        recovery_seconds: None,
        data_as_of: None,
        result: RestoreTestResult::Running,
        reason: None,
        message: None,
    });
    let Some(source) = clusters
        .get_opt(source_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresCluster",
            name: source_name.clone(),
            source,
        })?
    else {
        let outcome = Outcome::failed(
            results::CLUSTER_NOT_FOUND,
            format!("PostgresCluster {source_name} does not exist"),
        );
        return finish(run, clusters, None, outcome).await;
    };
    let Some(backup) =
        cluster::newest_backup(&run.context.client, &run.namespace, source_name).await?
    else {
        let outcome = Outcome::failed(
            results::NO_BACKUP,
            format!("PostgresCluster {source_name} has no PostgresBackup to restore"),
        );
        return finish(run, clusters, None, outcome).await;
    };
    if let Some(last_run) = run.status.last_run.as_mut() {
        last_run.backup = Some(backup.name_any());
        last_run.throwaway_cluster = Some(throwaway_name.clone());
    }
    let throwaway = build::throwaway_cluster(test, &source, &backup)?;
    match clusters.create(&PostParams::default(), &throwaway).await {
        Ok(_) => {}
        Err(error) if is_conflict(&error) => {
            let outcome = Outcome::failed(
                results::NAME_TAKEN,
                format!(
                    "A PostgresCluster named {throwaway_name} already exists and is not this restore test's; rename or delete it"
                ),
            );
            return finish(run, clusters, None, outcome).await;
        }
        Err(source) => {
            return Err(Error::Create {
                kind: "PostgresCluster",
                name: throwaway_name,
                source,
            });
        }
    }
    publish(
        run,
        EventType::Normal,
        reasons::STARTED,
        format!(
            "Restoring PostgresBackup {} of {source_name} into throwaway cluster {throwaway_name}",
            backup.name_any()
        ),
    )
    .await;
    Ok(())
}

/// A run in progress: waits for the throwaway to be Ready, starts the check, and records the
/// check's report, a failure or the timeout.
async fn follow(
    run: &mut Run<'_>,
    clusters: &Api<PostgresCluster>,
    throwaway: PostgresCluster,
) -> Result<Action> {
    let throwaway_name = throwaway.name_any();
    if throwaway.metadata.deletion_timestamp.is_some() {
        // The run ended; its throwaway is going (its finalizer empties its prefix).
        return Ok(Action::requeue(RUN_POLL));
    }
    if !run_in_progress(&run.status) {
        // Recorded, but the deletion did not happen (or the status was lost): finish it now.
        delete_throwaway(run, clusters, &throwaway_name).await?;
        return Ok(Action::requeue(RUN_POLL));
    }
    let started_at = run
        .status
        .last_run
        .as_ref()
        .map_or(run.now, |run| run.started_at.0);
    let run_id = throwaway.uid().unwrap_or_default();

    // A report counts only for this run's throwaway, once its check could have started.
    let recovered = run
        .status
        .last_run
        .as_ref()
        .is_some_and(|run| run.recovery_seconds.is_some());
    let report = run
        .status
        .report
        .clone()
        .filter(|report| recovered && report.run_id == run_id);
    if let Some(report) = report {
        let data_as_of = match &report.last_replayed_commit {
            Some(commit) => Some(commit.0),
            None => backup_end(run).await?,
        };
        if let Some(last_run) = run.status.last_run.as_mut() {
            last_run.data_as_of = data_as_of.map(Time);
        }
        let outcome = judge(
            &report,
            data_as_of,
            run.test.spec.max_data_age_minutes,
            run.now,
        );
        finish(run, clusters, Some(&throwaway_name), outcome).await?;
        return Ok(Action::requeue(RUN_POLL));
    }

    let throwaway_status = throwaway.status.clone().unwrap_or_default();
    if let Some(degraded) = conditions::find(&throwaway_status.conditions, types::DEGRADED)
        .filter(|condition| condition.status == TRUE)
    {
        let outcome = Outcome::failed(
            results::RESTORE_FAILED,
            format!(
                "The throwaway cluster {throwaway_name} is Degraded ({}): {}",
                degraded.reason, degraded.message
            ),
        );
        finish(run, clusters, Some(&throwaway_name), outcome).await?;
        return Ok(Action::requeue(RUN_POLL));
    }

    let jobs: Api<Job> = Api::namespaced(run.context.client.clone(), &run.namespace);
    let job_name = restore_test::check_job(&throwaway_name);
    let job = jobs.get_opt(&job_name).await.map_err(|source| Error::Get {
        kind: "Job",
        name: job_name.clone(),
        source,
    })?;
    if let Some(failure) = job.as_ref().and_then(job_failure) {
        let outcome = Outcome::failed(
            results::CHECK_FAILED,
            format!("The check Job {job_name} failed without a report: {failure}"),
        );
        finish(run, clusters, Some(&throwaway_name), outcome).await?;
        return Ok(Action::requeue(RUN_POLL));
    }

    let deadline =
        started_at + SignedDuration::from_mins(i64::from(run.test.spec.timeout_minutes()));
    if run.now >= deadline {
        let phase = throwaway_status
            .phase
            .map_or_else(|| "no phase yet".to_owned(), |phase| format!("{phase:?}"));
        let outcome = Outcome::failed(
            results::TIMEOUT,
            format!(
                "The run did not finish within timeoutMinutes ({}) (throwaway cluster {throwaway_name}: {phase}{})",
                run.test.spec.timeout_minutes(),
                if job.is_some() {
                    ", check running"
                } else {
                    ", never accepted connections"
                }
            ),
        );
        finish(run, clusters, Some(&throwaway_name), outcome).await?;
        return Ok(Action::requeue(RUN_POLL));
    }

    if throwaway_status.phase == Some(ClusterPhase::Ready) {
        let ready_at = conditions::find(&throwaway_status.conditions, types::READY)
            .filter(|condition| condition.status == TRUE)
            .map_or(run.now, |condition| condition.last_transition_time.0);
        let recovery = ready_at.duration_since(started_at).as_secs().max(0);
        let first_seen = run
            .status
            .last_run
            .as_ref()
            .is_some_and(|run| run.recovery_seconds.is_none());
        if first_seen {
            if let Some(last_run) = run.status.last_run.as_mut() {
                last_run.recovery_seconds = Some(recovery);
            }
            publish(
                run,
                EventType::Normal,
                reasons::RECOVERED,
                format!("Throwaway cluster {throwaway_name} accepts connections {recovery} seconds after the run started"),
            )
            .await;
        }
        if job.is_none() {
            start_check(run, &throwaway).await?;
        }
    }
    let remaining = until(run.now, deadline).max(Duration::from_secs(1));
    Ok(Action::requeue(RUN_POLL.min(remaining)))
}

/// Why a Job failed, if it did.
fn job_failure(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| {
            (condition.type_ == "Failed" || condition.type_ == "FailureTarget")
                && condition.status == TRUE
        })
        .map(|condition| {
            let reason = condition.reason.clone().unwrap_or_default();
            match condition.message.as_deref() {
                Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                _ => reason,
            }
        })
}

/// When the restored backup ended: its PostgresBackup was recorded right after. `None` when
/// the backup is gone.
async fn backup_end(run: &Run<'_>) -> Result<Option<Timestamp>> {
    let Some(name) = run
        .status
        .last_run
        .as_ref()
        .and_then(|run| run.backup.clone())
    else {
        return Ok(None);
    };
    let backups: Api<PostgresBackup> = Api::namespaced(run.context.client.clone(), &run.namespace);
    let backup = backups.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "PostgresBackup",
        name,
        source,
    })?;
    Ok(backup.and_then(|backup| backup.metadata.creation_timestamp.map(|time| time.0)))
}

/// Creates the check Job and its ServiceAccount, Role and RoleBinding.
async fn start_check(run: &mut Run<'_>, throwaway: &PostgresCluster) -> Result<()> {
    let client = &run.context.client;
    let namespace = &run.namespace;
    let (account, role, binding) = build::check_rbac(run.test, throwaway)?;
    create_if_missing(
        &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        &account,
    )
    .await?;
    create_if_missing(&Api::<Role>::namespaced(client.clone(), namespace), &role).await?;
    create_if_missing(
        &Api::<RoleBinding>::namespaced(client.clone(), namespace),
        &binding,
    )
    .await?;
    let job = build::check_job(run.test, throwaway, &run.context.config)?;
    let job_name = job.name_any();
    if create_if_missing(&Api::<Job>::namespaced(client.clone(), namespace), &job).await? {
        publish(
            run,
            EventType::Normal,
            reasons::CHECK_STARTED,
            format!(
                "Started Job {job_name} to run pg_amcheck on throwaway cluster {}",
                throwaway.name_any()
            ),
        )
        .await;
    }
    Ok(())
}

/// Creates `object` unless it exists; whether it was created.
async fn create_if_missing<K>(api: &Api<K>, object: &K) -> Result<bool>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(error) if is_conflict(&error) => Ok(false),
        Err(source) => Err(Error::Create {
            kind: std::any::type_name::<K>()
                .rsplit("::")
                .next()
                .unwrap_or("object"),
            name: object.name_any(),
            source,
        }),
    }
}

/// Records a run's outcome (status, conditions, Event, metrics) and deletes its throwaway.
async fn finish(
    run: &mut Run<'_>,
    clusters: &Api<PostgresCluster>,
    throwaway: Option<&str>,
    outcome: Outcome,
) -> Result<()> {
    let now = run.now;
    let Some(last_run) = run.status.last_run.as_mut() else {
        return Ok(());
    };
    last_run.finished_at = Some(Time(now));
    last_run.result = outcome.result;
    last_run.reason = Some(outcome.reason.to_owned());
    last_run.message = Some(outcome.message.clone());
    let started_at = last_run.started_at.0;
    let recovery = last_run.recovery_seconds;
    let passed = outcome.result == RestoreTestResult::Passed;
    if passed {
        run.status.last_success_at = Some(Time(started_at));
    }
    run.status.report = None;
    let desired = if passed {
        [
            DesiredCondition::new(types::READY, TRUE, results::PASSED, &outcome.message),
            DesiredCondition::new(
                types::DEGRADED,
                FALSE,
                results::PASSED,
                "The last restore test passed",
            ),
        ]
    } else {
        [
            DesiredCondition::new(
                types::READY,
                FALSE,
                outcome.reason,
                "The last restore test failed; see Degraded",
            ),
            DesiredCondition::new(types::DEGRADED, TRUE, outcome.reason, &outcome.message),
        ]
    };
    run.status.conditions = conditions::merge(
        &run.status.conditions,
        &desired,
        run.test.metadata.generation,
        now,
    );
    run.context.metrics.restore_test_finished(
        RestoreTestLabels {
            namespace: run.namespace.clone(),
            name: run.test.name_any(),
        },
        passed,
        outcome.reason,
        recovery,
        started_at,
    );
    if passed {
        publish(run, EventType::Normal, reasons::PASSED, outcome.message).await;
    } else {
        publish(
            run,
            EventType::Warning,
            reasons::FAILED,
            format!("{}: {}", outcome.reason, outcome.message),
        )
        .await;
    }
    if let Some(throwaway) = throwaway {
        delete_throwaway(run, clusters, throwaway).await?;
    }
    Ok(())
}

/// Deletes the throwaway, which is known to be this test's; its Job goes with it, and its
/// storage finalizer deletes whatever it stored.
async fn delete_throwaway(
    run: &Run<'_>,
    clusters: &Api<PostgresCluster>,
    throwaway: &str,
) -> Result<()> {
    match clusters
        .delete(throwaway, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "PostgresCluster",
            name: throwaway.to_owned(),
            source,
        }),
    }
    .inspect(|()| {
        tracing::info!(test = %run.test.name_any(), throwaway, "deleting the throwaway cluster");
    })
}

async fn publish(run: &Run<'_>, type_: EventType, reason: &str, note: String) {
    events::publish(
        &run.context.recorder,
        &run.test.object_ref(&()),
        type_,
        reason,
        "RestoreTest",
        note,
    )
    .await;
}

async fn write_status(run: &Run<'_>) -> Result<()> {
    let mut status = run.status.clone();
    if status.conditions.is_empty() {
        status.conditions = conditions::merge(
            &[],
            &[DesiredCondition::new(
                types::READY,
                conditions_unknown(),
                results::PENDING,
                "No restore test has finished yet",
            )],
            run.test.metadata.generation,
            run.now,
        );
    }
    if status == run.previous && run.test.status.is_some() {
        return Ok(());
    }
    let mut body = serde_json::to_value(&status).map_err(|source| Error::Serialize {
        kind: "PostgresRestoreTestStatus",
        source,
    })?;
    // A merge patch leaves absent fields in place: clear the consumed report and a suspended
    // schedule's next run explicitly.
    if status.report.is_none() {
        body["report"] = serde_json::Value::Null;
    }
    if status.next_run_at.is_none() {
        body["nextRunAt"] = serde_json::Value::Null;
    }
    let api: Api<PostgresRestoreTest> = Api::namespaced(run.context.client.clone(), &run.namespace);
    api.patch_status(
        &run.test.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "PostgresRestoreTest",
        name: run.test.name_any(),
        source,
    })?;
    Ok(())
}

fn conditions_unknown() -> &'static str {
    tusk_api::conditions::UNKNOWN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn report() -> RestoreCheckReport {
        RestoreCheckReport {
            run_id: "uid".into(),
            amcheck_passed: true,
            amcheck_output: String::new(),
            last_replayed_commit: None,
            error: None,
        }
    }

    #[test]
    fn the_first_run_is_right_away_and_later_ones_follow_the_interval() {
        let created = at("2026-01-01T00:00:00Z");
        assert_eq!(next_run(24, created, None), created);
        assert_eq!(
            next_run(6, created, Some(at("2026-01-01T00:00:05Z"))),
            at("2026-01-01T06:00:05Z")
        );
    }

    #[test]
    fn a_report_passes_only_when_sound_and_recent_enough() {
        let now = at("2026-01-01T12:00:00Z");
        assert_eq!(judge(&report(), None, None, now).reason, results::PASSED);
        let corrupt = RestoreCheckReport {
            amcheck_passed: false,
            amcheck_output: "heap table \"app.public.t\": invalid line pointer".into(),
            ..report()
        };
        let outcome = judge(&corrupt, None, None, now);
        assert_eq!(outcome.reason, results::CHECK_FAILED);
        assert!(outcome.message.contains("invalid line pointer"));
        let recent = Some(at("2026-01-01T11:30:00Z"));
        assert_eq!(
            judge(&report(), recent, Some(60), now).reason,
            results::PASSED
        );
        let outcome = judge(&report(), recent, Some(10), now);
        assert_eq!(outcome.reason, results::DATA_TOO_OLD);
        assert!(
            outcome.message.contains("30 minutes old"),
            "{}",
            outcome.message
        );
        assert_eq!(
            judge(&report(), None, Some(10), now).reason,
            results::DATA_TOO_OLD
        );
        let broken = RestoreCheckReport {
            error: Some("connection refused".into()),
            ..report()
        };
        assert_eq!(
            judge(&broken, recent, None, now).reason,
            results::CHECK_FAILED
        );
    }
}
