//! The CronJob controller: makes a Job at each time the schedule (standard five-field cron,
//! in `timeZone` or the controller's local zone) names, as kube-controller-manager's
//! cronjob controller does: `concurrencyPolicy` Allow, Forbid or Replace, `suspend`,
//! `startingDeadlineSeconds`, the history limits, and `status.active`,
//! `status.lastScheduleTime` and `status.lastSuccessfulTime`.
//!
//! The schedule is evaluated from a clock the reconciler is given, so that the timing rules
//! are tested without waiting for minutes to pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::{Context, ReconcileError, blocking_owner, controller_uid, write_status};

/// The annotation naming the time a scheduled Job was due, in the CronJob's zone.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// kube's controller looks again this long after the next scheduled time.
const AFTER_DUE: Duration = Duration::from_millis(100);

pub(super) fn controller(client: &Client) -> Controller<CronJob> {
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .owns(Api::<Job>::all(client.clone()), watcher::Config::default())
}

/// A cron schedule as kube accepts it: five fields (or a `@daily`-style name).
pub(crate) fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|error| error.to_string())
}

/// kube-controller-manager warns (`TooManyMissedTimes`) when more scheduled times than this
/// were missed since the last schedule (or the deadline window); it still runs the latest.
const MANY_MISSED: i64 = 100;

/// When a CronJob is due: the latest scheduled time not after `now` and after `earliest`
/// (the last schedule, or the creation), the first one after `now`, and whether more than
/// [`MANY_MISSED`] times were missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    pub missed: Option<Timestamp>,
    pub next: Option<Timestamp>,
    pub too_many_missed: bool,
}

/// The schedule's due times as seen at `now`, in `zone`.
pub(crate) fn due(cron: &Cron, zone: &TimeZone, earliest: Timestamp, now: Timestamp) -> Due {
    let at = now.to_zoned(zone.clone());
    let missed = cron
        .find_previous_occurrence(&at, true)
        .ok()
        .map(|t| t.timestamp())
        .filter(|t| *t > earliest);
    let next = cron
        .find_next_occurrence(&at, false)
        .ok()
        .map(|t| t.timestamp());
    Due {
        missed,
        next,
        too_many_missed: missed_count(cron, zone, earliest, now) > MANY_MISSED,
    }
}

/// How many scheduled times passed between `earliest` and `now`, counted as kube's controller
/// counts them: the time from the first to `now` over the gap between the first two.
fn missed_count(cron: &Cron, zone: &TimeZone, earliest: Timestamp, now: Timestamp) -> i64 {
    let after = |t: Timestamp| {
        cron.find_next_occurrence(&t.to_zoned(zone.clone()), false)
            .ok()
            .map(|t| t.timestamp())
    };
    let Some(first) = after(earliest) else {
        return 0;
    };
    let Some(second) = after(first) else {
        return i64::from(first <= now);
    };
    if now < second {
        return i64::from(first <= now);
    }
    let gap = first.duration_until(second).as_secs();
    if gap < 1 {
        return 0;
    }
    first.duration_until(now).as_secs() / gap + 1
}

/// Whether a Job has finished (Complete or Failed), and if it succeeded, when.
fn finished(job: &Job) -> Option<(bool, Option<Timestamp>)> {
    let status = job.status.as_ref()?;
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if condition("Complete") {
        Some((true, status.completion_time.as_ref().map(|t| t.0)))
    } else if condition("Failed") {
        Some((false, None))
    } else {
        None
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".to_string()),
        kind: Some("Job".to_string()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// When a Job started, for ordering the history.
fn started(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

pub(super) async fn reconcile(
    cron_job: Arc<CronJob>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    reconcile_at(cron_job, context, Timestamp::now()).await
}

/// Reconciles as if the time were `now`.
async fn reconcile_at(
    cron_job: Arc<CronJob>,
    context: Arc<Context>,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    if cron_job.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let events = &context.cronjob_events;
    let name = cron_job.name_any();
    let namespace = cron_job.namespace().unwrap_or_default();
    let spec = cron_job.spec.clone();
    let me = cron_job.object_ref(&());
    let owner = cron_job
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the CronJob has no uid".into()))?;
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let children: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|job| controller_uid(job).as_deref() == Some(owner.uid.as_str()))
        .collect();

    let old = cron_job.status.clone().unwrap_or_default();
    let was_active = |job: &Job| {
        old.active
            .iter()
            .flatten()
            .any(|r| r.uid == job.metadata.uid)
    };
    let mut status = CronJobStatus {
        active: None,
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: old.last_successful_time.clone(),
    };
    let mut active: Vec<&Job> = Vec::new();
    let (mut succeeded, mut failed): (Vec<&Job>, Vec<&Job>) = (Vec::new(), Vec::new());
    for job in &children {
        match finished(job) {
            None if job.metadata.deletion_timestamp.is_none() => active.push(job),
            None => {}
            Some((success, completed)) => {
                if was_active(job) {
                    let condition = if success { "Complete" } else { "Failed" };
                    let message = format!(
                        "Saw completed job: {}, condition: {condition}",
                        job.name_any()
                    );
                    events.record(&me, false, "SawCompletedJob", &message).await;
                }
                if success {
                    if let Some(completed) = completed {
                        let later = status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|last| last.0 < completed);
                        if later {
                            status.last_successful_time = Some(Time(completed));
                        }
                    }
                    succeeded.push(job);
                } else {
                    failed.push(job);
                }
            }
        }
    }

    // Finished Jobs beyond the history limits go, oldest first.
    for (mut jobs, limit) in [
        (succeeded, spec.successful_jobs_history_limit.unwrap_or(3)),
        (failed, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let keep = usize::try_from(limit).unwrap_or(0);
        if jobs.len() <= keep {
            continue;
        }
        jobs.sort_by_key(|job| started(job));
        let surplus = jobs.len() - keep;
        for job in &jobs[..surplus] {
            delete_job(&jobs_api, job).await?;
            let message = format!("Deleted job {}", job.name_any());
            events
                .record(&me, false, "SuccessfulDelete", &message)
                .await;
        }
    }

    let api: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    // The status as it stands, with `active` as the running Jobs.
    let (api_ref, name_ref, current) = (&api, &name, cron_job.status.as_ref());
    let save = move |status: CronJobStatus, active: &[&Job]| {
        let mut status = status;
        status.active = (!active.is_empty())
            .then(|| active.iter().map(|job| reference(job)).collect::<Vec<_>>());
        async move { write_status(api_ref, name_ref, current, &status).await }
    };

    let (cron, zone) = match schedule_in_zone(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(found) => found,
        Err((reason, message)) => {
            // Nothing can be scheduled until the spec changes: say so, keep the status true.
            events.record(&me, true, reason, &message).await;
            save(status, &active).await?;
            return Ok(Action::await_change());
        }
    };

    let created_at = cron_job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map_or(created_at, |t| t.0);
    let deadline = spec.starting_deadline_seconds;
    if let Some(seconds) = deadline {
        earliest = earliest.max(now - jiff::SignedDuration::from_secs(seconds));
    }
    let due = due(&cron, &zone, earliest, now);
    let requeue = || match due.next {
        Some(next) => {
            let wait = now.duration_until(next).unsigned_abs() + AFTER_DUE;
            Action::requeue(wait)
        }
        None => Action::await_change(),
    };

    if due.too_many_missed && spec.suspend != Some(true) {
        let message = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
        events
            .record(&me, true, "TooManyMissedTimes", message)
            .await;
    }
    let scheduled = match due.missed {
        Some(scheduled) if spec.suspend != Some(true) => scheduled,
        _ => {
            save(status, &active).await?;
            return Ok(requeue());
        }
    };
    if spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty() {
        // This run is skipped; the next is looked at when it is due.
        let message =
            "Not starting job because prior execution is running and concurrency policy is Forbid";
        events.record(&me, false, "JobAlreadyActive", message).await;
        save(status, &active).await?;
        return Ok(requeue());
    }
    if spec.concurrency_policy.as_deref() == Some("Replace") {
        for job in active.drain(..) {
            delete_job(&jobs_api, job).await?;
            let message = format!("Deleted job {}", job.name_any());
            events
                .record(&me, false, "SuccessfulDelete", &message)
                .await;
        }
    }

    let template = spec.job_template.clone();
    let mut metadata = template.metadata.clone().unwrap_or_default();
    let job_name = format!("{name}-{}", scheduled.as_second() / 60);
    metadata.name = Some(job_name.clone());
    metadata.generate_name = None;
    metadata.namespace = Some(namespace.clone());
    metadata.owner_references = Some(vec![blocking_owner(owner)]);
    let stamp = scheduled
        .to_zoned(zone.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z");
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SCHEDULED_AT.to_string(), stamp.to_string());
    let job = Job {
        metadata,
        spec: template.spec,
        status: None,
    };
    let new_job = match jobs_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            let message = format!("Created job {job_name}");
            events
                .record(&me, false, "SuccessfulCreate", &message)
                .await;
            Some(created)
        }
        // Made already, by an earlier pass that could not record it.
        Err(kube::Error::Api(status)) if status.code == 409 => None,
        Err(error) => return Err(error.into()),
    };
    let mut all_active = active;
    if let Some(job) = &new_job {
        all_active.push(job);
    }
    status.last_schedule_time = Some(Time(scheduled));
    save(status, &all_active).await?;
    Ok(requeue())
}

/// The CronJob's schedule and the zone it is read in (`timeZone`, or the controller's own),
/// or the Warning Event's reason and message that say why there is none.
fn schedule_in_zone(
    schedule: &str,
    time_zone: Option<&str>,
) -> Result<(Cron, TimeZone), (&'static str, String)> {
    let cron = parse_schedule(schedule).map_err(|error| {
        let message = format!("unparseable schedule: {schedule:?} : {error}");
        ("UnparseableSchedule", message)
    })?;
    let zone = match time_zone {
        None => TimeZone::system(),
        Some(zone) => TimeZone::get(zone).map_err(|error| {
            let message = format!("invalid timeZone: {zone:?}: {error}");
            ("UnknownTimeZone", message)
        })?,
    };
    Ok((cron, zone))
}

/// Deletes a Job and, in the background, its pods.
async fn delete_job(api: &Api<Job>, job: &Job) -> Result<(), kube::Error> {
    match api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn the_latest_missed_time_and_the_next_are_found_in_the_zone() {
        let cron = parse_schedule("30 9 * * *").expect("schedule");
        let utc = TimeZone::UTC;
        let due_now = due(
            &cron,
            &utc,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T10:00:00Z"),
        );
        assert_eq!(due_now.missed, Some(at("2026-01-02T09:30:00Z")));
        assert_eq!(due_now.next, Some(at("2026-01-03T09:30:00Z")));
        // Already run at that time: nothing is due.
        let done = due(
            &cron,
            &utc,
            at("2026-01-02T09:30:00Z"),
            at("2026-01-02T10:00:00Z"),
        );
        assert_eq!(done.missed, None);
        // 09:30 in Tokyo is 00:30 UTC.
        let tokyo = TimeZone::get("Asia/Tokyo").expect("zone");
        let there = due(
            &cron,
            &tokyo,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T01:00:00Z"),
        );
        assert_eq!(there.missed, Some(at("2026-01-02T00:30:00Z")));
    }

    #[test]
    fn kube_schedules_parse_and_others_do_not() {
        for schedule in ["*/5 * * * *", "0 3 * * 1-5", "@hourly", "0 0 1 JAN *"] {
            assert!(parse_schedule(schedule).is_ok(), "{schedule}");
        }
        for schedule in ["* * * * * *", "61 * * * *", "", "every minute"] {
            assert!(parse_schedule(schedule).is_err(), "{schedule}");
        }
    }
}
