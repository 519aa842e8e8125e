//! CronJobs through the real kubectl, as kube-controller-manager's cronjob controller runs
//! them. A schedule runs at most once a minute; rather than wait for one, the tests set
//! `status.lastScheduleTime` back, as after a controller that was down, so the latest missed
//! time is due at once (what kube does on start). The timing rules themselves (zones, the
//! next time) are unit tests of the controller.

mod cluster;

use cluster::{Cluster, Outcome, eventually};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tusk_sandbox::controllers::ControllerOptions;

fn manifest(name: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "* * * * *"
  timeZone: Etc/UTC
  suspend: true
  concurrencyPolicy: {policy}
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata: {{labels: {{made-by: {name}}}}}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: main, image: busybox, command: [date]}}]
"#
    )
}

async fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl(args).await;
    assert!(ok, "kubectl {args:?}: {out} {err}");
    out
}

/// Sets the CronJob's last schedule an hour back and resumes it: the latest minute is due.
async fn resume_after_a_missed_run(cluster: &Cluster, name: &str) {
    resume_after_missing(cluster, name, jiff::SignedDuration::from_hours(1)).await;
}

/// Sets the CronJob's last schedule `missed` back and resumes it.
async fn resume_after_missing(cluster: &Cluster, name: &str, missed: jiff::SignedDuration) {
    let last = jiff::Timestamp::now() - missed;
    let last = jiff::Timestamp::from_second(last.as_second()).expect("time");
    let patch = format!(r#"{{"status":{{"lastScheduleTime":"{last}"}}}}"#);
    let cron_job = format!("cronjob/{name}");
    kubectl_ok(
        cluster,
        &[
            "patch",
            &cron_job,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    )
    .await;
    kubectl_ok(
        cluster,
        &[
            "patch",
            &cron_job,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    )
    .await;
}

async fn jobs_of(cluster: &Cluster, name: &str) -> Vec<Job> {
    let jobs: Api<Job> = cluster.api();
    jobs.list(&ListParams::default().labels(&format!("made-by={name}")))
        .await
        .expect("jobs listed")
        .items
        .into_iter()
        .filter(|job| job.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test]
async fn a_cronjob_runs_its_due_schedule_and_manual_runs_and_keeps_its_history() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Succeed).await;
    cluster.apply(&manifest("report", "Allow")).await;
    let cron_jobs: Api<CronJob> = cluster.api();

    // A manual run (kubectl create job --from) is the CronJob's Job: it shows as active,
    // then its success as the last successful time. Suspended, nothing is scheduled.
    let out = kubectl_ok(
        &cluster,
        &["create", "job", "--from=cronjob/report", "by-hand"],
    )
    .await;
    assert_eq!(out.trim(), "job.batch/by-hand created");
    eventually("the manual run succeeded and was seen", 15, || async {
        let status = cron_jobs
            .get("report")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        status.last_successful_time.is_some() && status.active.is_none()
    })
    .await;
    assert!(
        cron_jobs
            .get("report")
            .await
            .expect("get")
            .status
            .unwrap_or_default()
            .last_schedule_time
            .is_none(),
        "a suspended CronJob schedules nothing"
    );

    // Resumed after a missed minute: that minute's Job is made at once, named after it.
    resume_after_a_missed_run(&cluster, "report").await;
    let minute = jiff::Timestamp::now().as_second() / 60;
    eventually("the scheduled job", 10, || async {
        jobs_of(&cluster, "report")
            .await
            .iter()
            .any(|job| job.name_any().starts_with("report-"))
    })
    .await;
    let scheduled = jobs_of(&cluster, "report")
        .await
        .into_iter()
        .find(|job| job.name_any().starts_with("report-"))
        .expect("scheduled job");
    let job_minute: i64 = scheduled.name_any()["report-".len()..]
        .parse()
        .expect("minute");
    assert!(
        (minute - 1..=minute).contains(&job_minute),
        "{job_minute} vs {minute}"
    );
    let stamp = scheduled.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"].clone();
    let stamp: jiff::Timestamp = stamp.parse().expect("RFC 3339 time");
    assert_eq!(stamp.as_second(), job_minute * 60);
    let status = cron_jobs
        .get("report")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(stamp));

    // Once it has succeeded too, one successful Job is kept: the newer.
    eventually("only the scheduled job is kept", 15, || async {
        let names: Vec<String> = jobs_of(&cluster, "report")
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names == [scheduled.name_any()]
    })
    .await;
    let row = kubectl_ok(&cluster, &["get", "cj", "report", "--no-headers"]).await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..6], ["report", "*", "*", "*", "*", "*"], "{row}");
    assert_eq!(&cells[6..9], ["Etc/UTC", "False", "0"], "{row}");
    let events = kubectl_ok(
        &cluster,
        &[
            "get",
            "events",
            "-o",
            "wide",
            "--field-selector",
            "involvedObject.kind=CronJob",
        ],
    )
    .await;
    for reason in ["SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"] {
        assert!(events.contains(reason), "{reason} missing: {events}");
    }
    assert!(events.contains("cronjob-controller"), "{events}");
    cluster.stop().await;
}

#[tokio::test]
async fn forbid_skips_a_run_while_one_is_active_and_replace_stops_it() {
    // Jobs never finish: the manual run stays active.
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Leave).await;
    cluster.apply(&manifest("forbidden", "Forbid")).await;
    cluster.apply(&manifest("replaced", "Replace")).await;
    kubectl_ok(
        &cluster,
        &[
            "create",
            "job",
            "--from=cronjob/forbidden",
            "forbidden-by-hand",
        ],
    )
    .await;
    kubectl_ok(
        &cluster,
        &[
            "create",
            "job",
            "--from=cronjob/replaced",
            "replaced-by-hand",
        ],
    )
    .await;
    let cron_jobs: Api<CronJob> = cluster.api();
    eventually("both manual runs are active", 10, || async {
        let mut active = 0;
        for name in ["forbidden", "replaced"] {
            let status = cron_jobs
                .get(name)
                .await
                .expect("get")
                .status
                .unwrap_or_default();
            active += status.active.map_or(0, |a| a.len());
        }
        active == 2
    })
    .await;

    resume_after_a_missed_run(&cluster, "replaced").await;
    eventually("the running job is replaced", 10, || async {
        let names: Vec<String> = jobs_of(&cluster, "replaced")
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.len() == 1 && names[0].starts_with("replaced-") && names[0] != "replaced-by-hand"
    })
    .await;

    resume_after_a_missed_run(&cluster, "forbidden").await;
    eventually("the controller says why it skips the run", 10, || async {
        let (_, events, _) = cluster
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=forbidden,reason=JobAlreadyActive",
            ])
            .await;
        events.contains("prior execution is running")
    })
    .await;
    let names: Vec<String> = jobs_of(&cluster, "forbidden")
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        names,
        ["forbidden-by-hand"],
        "no second run while one is active"
    );
    cluster.stop().await;
}

/// The `TooManyMissedTimes` Events of the CronJob `name`, as (type, message).
async fn too_many_missed_events(cluster: &Cluster, name: &str) -> Vec<(String, String)> {
    let selector = format!("involvedObject.name={name},reason=TooManyMissedTimes");
    let listed = kubectl_ok(
        cluster,
        &["get", "events", "--field-selector", &selector, "-o", "json"],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_string();
            (text("type"), text("message"))
        })
        .collect()
}

/// kube-controller-manager counts the scheduled times missed since the last schedule, or
/// since `now - startingDeadlineSeconds` when that is later: more than 100 is a
/// `TooManyMissedTimes` Warning, and the latest time is run all the same. A deadline that
/// leaves fewer in the window runs the latest time without a warning.
#[tokio::test]
async fn many_missed_times_warn_unless_the_starting_deadline_bounds_them() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Leave).await;
    cluster.apply(&manifest("late", "Allow")).await;
    cluster.apply(&manifest("bounded", "Allow")).await;
    kubectl_ok(
        &cluster,
        &[
            "patch",
            "cronjob/bounded",
            "--type=merge",
            "-p",
            r#"{"spec":{"startingDeadlineSeconds":600}}"#,
        ],
    )
    .await;
    // Three hours of a minutely schedule: 180 missed times, 10 of them within the deadline.
    for name in ["late", "bounded"] {
        resume_after_missing(&cluster, name, jiff::SignedDuration::from_hours(3)).await;
    }
    eventually("both run their latest time", 10, || async {
        !jobs_of(&cluster, "late").await.is_empty()
            && !jobs_of(&cluster, "bounded").await.is_empty()
    })
    .await;
    eventually("the warning is recorded", 10, || async {
        !too_many_missed_events(&cluster, "late").await.is_empty()
    })
    .await;
    assert_eq!(
        too_many_missed_events(&cluster, "late").await,
        [(
            "Warning".to_string(),
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".to_string()
        )]
    );
    assert_eq!(too_many_missed_events(&cluster, "bounded").await, []);
    for name in ["late", "bounded"] {
        assert_eq!(
            jobs_of(&cluster, name).await.len(),
            1,
            "only the latest time runs"
        );
    }
    cluster.stop().await;
}
