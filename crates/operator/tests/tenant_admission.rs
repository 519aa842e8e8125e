//! What a tenant may write into tusk's resources, checked where a tenant meets it: the real
//! kubectl against the sandbox API server with tusk's CRDs, and the operator behind it for
//! what slips past admission.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Operator, elephant, eventually, namespace};
use tusk_api::{
    PostgresBackupRequest, PostgresBackupSchedule, PostgresBackupScheduleSpec, PostgresCluster,
    common::ClusterReference, labels,
};
use tusk_operator::clock::ManualClock;

const NS: &str = "project-a";

/// Runs `kubectl apply` of `manifest` against the sandbox; returns (success, stderr). kubectl
/// runs on a blocking thread so that the sandbox, on this test's runtime, can answer it.
async fn kubectl_apply(sandbox: &tusk_sandbox::Sandbox, manifest: &str) -> (bool, String) {
    let kubeconfig = sandbox.kubeconfig_path().to_owned();
    let manifest = manifest.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("manifest.yaml");
        std::fs::write(&file, manifest).unwrap();
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["apply", "-n", NS, "-f"])
            .arg(&file)
            .output()
            .expect("kubectl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn cluster_manifest(name: &str, parameters: &str) -> String {
    format!(
        "apiVersion: postgres.tusk.dev/v1
kind: PostgresCluster
metadata:
  name: {name}
spec:
  displayName: {name}
  memorySize: 1
  postgresDiskSize: 1
  parameters:
{parameters}"
    )
}

#[tokio::test]
async fn kubectl_is_refused_parameters_off_the_allow_list_with_a_refused_setting_named() {
    let (sandbox, client) = support::sandbox().await;
    namespace(&client, NS).await;

    let (ok, stderr) = kubectl_apply(
        &sandbox,
        &cluster_manifest(
            "tuned",
            "    work_mem: 64MB\n    shared_preload_libraries: pg_stat_statements\n    timezone: Europe/Berlin\n",
        ),
    )
    .await;
    assert!(ok, "an allowed cluster is refused: {stderr}");

    let (ok, stderr) = kubectl_apply(
        &sandbox,
        &cluster_manifest(
            "hostile",
            "    include_dir: /etc\n    fsync: \"off\"\n    work_mem: 64MB\n",
        ),
    )
    .await;
    assert!(!ok, "a cluster with include_dir and fsync was admitted");
    // The message names one of the refused settings (see docs/parameters.md).
    assert!(
        stderr.contains("spec.parameters")
            && (stderr.contains("include_dir") || stderr.contains("fsync")),
        "{stderr}"
    );
    assert!(!stderr.contains("work_mem"), "{stderr}");

    for (parameters, named) in [
        ("    search_path: /var/lib/postgresql\n", "no file paths"),
        (
            "    shared_preload_libraries: /tmp/evil.so\n",
            "shared_preload_libraries",
        ),
        ("    timezone: ../../../etc/passwd\n", "time zone"),
        ("    Port: \"5433\"\n", "Port"),
    ] {
        let (ok, stderr) = kubectl_apply(&sandbox, &cluster_manifest("hostile", parameters)).await;
        assert!(!ok, "{parameters} was admitted");
        assert!(stderr.contains(named), "{parameters}: {stderr}");
    }
    let clusters: Api<PostgresCluster> = Api::namespaced(client, NS);
    assert!(clusters.get_opt("hostile").await.unwrap().is_none());
}

#[tokio::test]
async fn kubectl_is_refused_a_schedule_that_runs_more_than_once_an_hour() {
    let (sandbox, client) = support::sandbox().await;
    namespace(&client, NS).await;
    let schedule = |cron: &str| {
        format!(
            "apiVersion: postgres.tusk.dev/v1
kind: PostgresBackupSchedule
metadata:
  name: frequent
spec:
  cluster:
    name: elephant
  schedule: \"{cron}\"
"
        )
    };
    for cron in ["* * * * *", "*/10 * * * *", "0,30 * * * *", "0 * * * * *"] {
        let (ok, stderr) = kubectl_apply(&sandbox, &schedule(cron)).await;
        assert!(!ok, "{cron} was admitted");
        assert!(
            stderr.contains("spec.schedule") && stderr.contains("at most once an hour"),
            "{cron}: {stderr}"
        );
    }
    let (ok, stderr) = kubectl_apply(&sandbox, &schedule("17 * * * *")).await;
    assert!(ok, "an hourly schedule is refused: {stderr}");
}

/// Installs tusk's CRDs with the schedule's admission rules taken out, as an API server that
/// predates them (or skips CEL) would serve them.
async fn without_schedule_admission(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = tusk_api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "PostgresBackupSchedule")
        .unwrap();
    let mut value = serde_json::to_value(&crd).unwrap();
    let field = value
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/schedule")
        .unwrap()
        .as_object_mut()
        .unwrap();
    field.remove("x-kubernetes-validations");
    field.remove("pattern");
    crd = serde_json::from_value(value).unwrap();
    crds.patch(
        crd.metadata.name.as_deref().unwrap(),
        &PatchParams::apply("test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_operator_never_runs_a_schedule_twice_within_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    without_schedule_admission(&client).await;
    let s3 = support::s3(dir.path()).await;
    let mut config = support::config(&client, &s3).await;
    config.backup_job.stall_timeout = Duration::from_secs(6 * 3600);
    namespace(&client, NS).await;
    let clock = ManualClock::new(Timestamp::now());
    let operator = Operator::start_with(
        config,
        client.clone(),
        "test-operator",
        Arc::new(clock.clone()),
    );
    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &elephant())
        .await
        .unwrap();
    let schedules: Api<PostgresBackupSchedule> = Api::namespaced(client.clone(), NS);
    let mut every_minute = PostgresBackupSchedule::new(
        "every-minute",
        PostgresBackupScheduleSpec {
            cluster: ClusterReference::new("elephant"),
            interval: None,
            schedule: Some("* * * * *".into()),
            keep: None,
            suspend: false,
            triggered_by: Default::default(),
        },
    );
    every_minute.metadata.namespace = Some(NS.into());
    schedules
        .create(&PostParams::default(), &every_minute)
        .await
        .expect("without its admission rules the API server takes the schedule");

    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NS);
    let of_schedule = ListParams::default().labels(&format!("{}=every-minute", labels::SCHEDULE));
    let finish_all = || async {
        let listed = requests.list(&of_schedule).await.unwrap().items;
        for request in &listed {
            let name = request.metadata.name.clone().unwrap();
            requests
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Failed"}})),
                )
                .await
                .unwrap();
        }
        listed.len()
    };
    let next_due = || async {
        let schedule = schedules.get("every-minute").await.ok()?;
        schedule.status?.next_run_at.map(|time| time.0)
    };

    let first_due = eventually("the first run is planned", next_due).await;
    clock.set(first_due + SignedDuration::from_secs(1));
    eventually("the first request is created", || async {
        (finish_all().await == 1).then_some(())
    })
    .await;
    // Every minute for most of an hour the expression is due again, and nothing runs.
    for _ in 0..5 {
        clock.advance(SignedDuration::from_mins(10));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            finish_all().await,
            1,
            "a second request within an hour of the first"
        );
    }
    let planned = eventually("the next run is planned an hour on", next_due).await;
    assert!(
        planned >= first_due + SignedDuration::from_hours(1),
        "planned {planned}, first run {first_due}"
    );
    clock.set(first_due + SignedDuration::from_secs(1) + SignedDuration::from_hours(1));
    eventually(
        "the second request comes an hour after the first",
        || async { (finish_all().await == 2).then_some(()) },
    )
    .await;
    let times: Vec<Timestamp> = requests
        .list(&of_schedule)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|request| {
            request
                .metadata
                .annotations
                .as_ref()?
                .get("postgres.tusk.dev/scheduled-at")?
                .parse()
                .ok()
        })
        .collect::<Vec<_>>();
    assert_eq!(times.len(), 2);
    let gap = times[0].duration_since(times[1]).abs();
    assert!(gap >= SignedDuration::from_hours(1), "{gap:?}");
    operator.stop().await;
}
