//! The workload controllers against the sandbox over HTTPS: StatefulSets, Deployments (with the
//! real `kubectl rollout status`) and Jobs, with a stand-in kubelet writing pod status.

mod cluster;

use std::time::Duration;

use cluster::{Cluster, Outcome, deployment, eventually, object, set_pod_status};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_sandbox::controllers::ControllerOptions;

fn stateful_set(name: &str, replicas: i32, retention: &str) -> StatefulSet {
    stateful_set_with_policy(name, replicas, retention, "Retain")
}

fn stateful_set_with_policy(
    name: &str,
    replicas: i32,
    when_deleted: &str,
    when_scaled: &str,
) -> StatefulSet {
    object(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": format!("{name}-hl"),
            "selector": {"matchLabels": {"app": name}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": when_scaled},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "pg", "image": "postgres", "command": ["postgres"]}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }],
        },
    }))
}

async fn pod_names(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("pods listed")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn statefulset_starts_pods_in_order_with_claims_and_reports_status() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Leave).await;
    let sets: Api<StatefulSet> = cluster.api();
    let pods = cluster.pods();
    let claims: Api<PersistentVolumeClaim> = cluster.api();
    let set = sets
        .create(&PostParams::default(), &stateful_set("web", 3, "Retain"))
        .await
        .expect("created");
    let set_uid = set.meta().uid.clone().expect("uid");

    for ordinal in 0..3 {
        let name = format!("web-{ordinal}");
        eventually(&format!("{name} is created"), 10, || async {
            pods.get_opt(&name).await.expect("get").is_some()
        })
        .await;
        // OrderedReady: the next ordinal waits until this one is Running and Ready.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            pods.get_opt(&format!("web-{}", ordinal + 1))
                .await
                .expect("get")
                .map(|p| p.name_any()),
            None,
            "web-{} must wait for {name} to be ready",
            ordinal + 1
        );
        let pod = pods.get(&name).await.expect("pod");
        let labels = pod.labels();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels
                .get("statefulset.kubernetes.io/pod-name")
                .map(String::as_str),
            Some(name.as_str())
        );
        assert_eq!(
            labels.get("apps.kubernetes.io/pod-index"),
            Some(&ordinal.to_string())
        );
        assert!(labels.contains_key("controller-revision-hash"));
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("StatefulSet", set_uid.as_str(), Some(true))
        );
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("web-hl"));
        let claim_name = format!("data-web-{ordinal}");
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .expect("the claim template's volume");
        assert_eq!(
            volume
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some(claim_name.as_str())
        );
        let claim = claims.get(&claim_name).await.expect("claim created");
        assert_eq!(
            claim.labels().get("app").map(String::as_str),
            Some("web"),
            "claims carry the selector's labels"
        );
        assert!(
            claim.owner_references().is_empty(),
            "retained claims are not owned"
        );
        set_pod_status(&pods, &name, "Running", true).await;
    }

    eventually("the status counts three ready replicas", 10, || async {
        let status = sets
            .get("web")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        status.replicas == 3
            && status.ready_replicas == Some(3)
            && status.available_replicas == Some(3)
            && status.current_replicas == Some(3)
            && status.updated_replicas == Some(3)
            && status.observed_generation == Some(1)
            && status.current_revision.is_some()
            && status.current_revision == status.update_revision
    })
    .await;
    let status = sets.get("web").await.expect("get").status.expect("status");
    let revision = status.update_revision.expect("revision");
    assert!(revision.starts_with("web-"), "{revision}");
    let revisions: Api<ControllerRevision> = cluster.api();
    assert!(
        revisions.get_opt(&revision).await.expect("get").is_some(),
        "a ControllerRevision records the revision"
    );

    // Idle once settled: nothing more is written.
    let settled = cluster.sandbox.resource_version();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cluster.sandbox.resource_version(),
        settled,
        "the controllers write nothing while nothing changes"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn statefulset_rolls_from_the_highest_ordinal_replaces_lost_pods_and_scales_down_in_reverse()
{
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let sets: Api<StatefulSet> = cluster.api();
    let pods = cluster.pods();
    sets.create(&PostParams::default(), &stateful_set("db", 3, "Retain"))
        .await
        .expect("created");
    eventually("three ready replicas", 10, || async {
        let status = sets
            .get("db")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        status.ready_replicas == Some(3)
    })
    .await;
    let old_revision = sets
        .get("db")
        .await
        .expect("get")
        .status
        .and_then(|s| s.current_revision)
        .expect("revision");

    // Watch the order in which pods come back at the new revision.
    let watch = watcher(pods.clone(), watcher::Config::default().labels("app=db"))
        .applied_objects()
        .boxed();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}});
    sets.patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("template changed");
    let order = tokio::time::timeout(Duration::from_secs(15), async {
        let mut order: Vec<String> = Vec::new();
        let mut watch = watch;
        while let Some(Ok(pod)) = watch.next().await {
            let revision = pod.labels().get("controller-revision-hash").cloned();
            if revision.as_deref() != Some(old_revision.as_str())
                && !order.contains(&pod.name_any())
            {
                order.push(pod.name_any());
                if order.len() == 3 {
                    break;
                }
            }
        }
        order
    })
    .await
    .expect("all three pods rolled");
    assert_eq!(order, ["db-2", "db-1", "db-0"], "highest ordinal first");
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .await;
    assert!(ok, "rollout status: {out} {err}");
    // The API server defaults the partition to 0, so kubectl reports a partitioned rollout,
    // exactly as against a real cluster.
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    eventually("the rollout completes in status", 10, || async {
        let status = sets
            .get("db")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        status.updated_replicas == Some(3)
            && status.ready_replicas == Some(3)
            && status.current_revision == status.update_revision
            && status.current_revision.as_deref() != Some(old_revision.as_str())
            && status.observed_generation == Some(2)
    })
    .await;

    // A deleted pod comes back under the same name; so does a failed one.
    let lost = pods.get("db-1").await.expect("pod");
    pods.delete("db-1", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("db-1 is recreated", 10, || async {
        pods.get_opt("db-1")
            .await
            .expect("get")
            .is_some_and(|p| p.metadata.uid != lost.metadata.uid)
    })
    .await;
    let failed = pods.get("db-0").await.expect("pod");
    set_pod_status(&pods, "db-0", "Failed", false).await;
    eventually("the failed db-0 is replaced", 10, || async {
        pods.get_opt("db-0").await.expect("get").is_some_and(|p| {
            p.metadata.uid != failed.metadata.uid
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
        })
    })
    .await;

    // Scale down: db-2 goes before db-1, and db-0 stays.
    let mut watch = watcher(pods.clone(), watcher::Config::default().labels("app=db")).boxed();
    while let Some(event) = watch.next().await {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            break;
        }
    }
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scaled");
    let deleted_order = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen: Vec<String> = Vec::new();
        while let Some(event) = watch.next().await {
            if let Ok(watcher::Event::Delete(pod)) = event {
                seen.push(pod.name_any());
                if seen.len() == 2 {
                    break;
                }
            }
        }
        seen
    })
    .await
    .expect("two pods deleted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pod_names(&pods, "app=db").await, ["db-0"], "db-0 stays");
    assert_eq!(deleted_order, ["db-2", "db-1"], "reverse ordinal order");
    cluster.stop().await;
}

#[tokio::test]
async fn deleting_a_statefulset_removes_its_pods_and_claims_under_the_delete_policy() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let sets: Api<StatefulSet> = cluster.api();
    let pods = cluster.pods();
    let claims: Api<PersistentVolumeClaim> = cluster.api();
    sets.create(
        &PostParams::default(),
        &stateful_set_with_policy("gone", 2, "Delete", "Delete"),
    )
    .await
    .expect("created");
    sets.create(&PostParams::default(), &stateful_set("kept", 1, "Retain"))
        .await
        .expect("created");
    eventually("both sets are ready", 10, || async {
        let ready = |s: StatefulSet| s.status.and_then(|s| s.ready_replicas);
        ready(sets.get("gone").await.expect("get")) == Some(2)
            && ready(sets.get("kept").await.expect("get")) == Some(1)
    })
    .await;
    let owned = claims.get("data-gone-0").await.expect("claim");
    assert_eq!(
        owned.owner_references()[0].kind,
        "StatefulSet",
        "whenDeleted=Delete claims are owned by the set"
    );
    // whenScaled=Delete: the claim of a removed ordinal goes with its pod.
    sets.patch(
        "gone",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scaled");
    eventually("the scaled-away claim is collected", 10, || async {
        claims.get_opt("data-gone-1").await.expect("get").is_none()
    })
    .await;
    assert!(claims.get_opt("data-gone-0").await.expect("get").is_some());
    sets.delete("gone", &DeleteParams::default())
        .await
        .expect("deleted");
    sets.delete("kept", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("pods and owned claims are collected", 10, || async {
        pod_names(&pods, "app in (gone,kept)").await.is_empty()
            && claims.get_opt("data-gone-0").await.expect("get").is_none()
            && claims.get_opt("data-gone-1").await.expect("get").is_none()
    })
    .await;
    assert!(
        claims.get_opt("data-kept-0").await.expect("get").is_some(),
        "retained claims outlive their set"
    );
    cluster.stop().await;
}

async fn active_pods(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .expect("pods listed")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test]
async fn deployment_keeps_its_replicas_and_rolls_out_a_new_template() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let sets: Api<ReplicaSet> = cluster.api();
    let pods = cluster.pods();
    deployments
        .create(&PostParams::default(), &deployment("api", 3, "v1"))
        .await
        .expect("created");
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "deployment/api", "--timeout=20s"])
        .await;
    assert!(ok, "rollout status: {out} {err}");
    assert!(out.contains("successfully rolled out"), "{out}");
    let first = active_pods(&pods, "app=api").await;
    assert_eq!(first.len(), 3);
    let owner = &first[0].owner_references()[0];
    assert_eq!(owner.kind, "ReplicaSet");
    let first_set = sets.get(&owner.name).await.expect("replica set");
    assert_eq!(first_set.owner_references()[0].kind, "Deployment");
    let hash = first_set
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(owner.name, format!("api-{hash}"));

    // A lost pod is replaced, and the Deployment is whole and Available again.
    pods.delete(&first[0].name_any(), &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("three pods again", 10, || async {
        let now = active_pods(&pods, "app=api").await;
        now.len() == 3 && !now.iter().any(|p| p.metadata.uid == first[0].metadata.uid)
    })
    .await;
    eventually("Available with three available replicas", 10, || async {
        let status = deployments
            .get("api")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        let available = status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Available")
                && c.status.as_deref() == Some("True")
                && c.reason.as_deref() == Some("MinimumReplicasAvailable")
        });
        available && status.available_replicas == Some(3)
    })
    .await;

    // Scaling up and back down keeps exactly the asked-for count.
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scaled");
    eventually("five pods", 10, || async {
        active_pods(&pods, "app=api").await.len() == 5
    })
    .await;
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scaled");
    eventually("three pods", 10, || async {
        active_pods(&pods, "app=api").await.len() == 3
    })
    .await;

    // A new template: a new ReplicaSet takes over, the old one is scaled to zero.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "v2"}]}}}});
    deployments
        .patch("api", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patched");
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "deployment/api", "--timeout=20s"])
        .await;
    assert!(ok, "rollout status: {out} {err}");
    let status = deployments
        .get("api")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas,
            status.observed_generation
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0), Some(4))
    );
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .expect("Progressing");
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let old = sets.get(&first_set.name_any()).await.expect("old set");
    assert_eq!(
        old.spec.replicas,
        Some(0),
        "the old ReplicaSet is scaled down"
    );
    let now = active_pods(&pods, "app=api").await;
    assert_eq!(now.len(), 3);
    for pod in &now {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone());
        assert_eq!(
            image.as_deref(),
            Some("v2"),
            "{} runs the new template",
            pod.name_any()
        );
    }
    let (ok, out, err) = cluster
        .kubectl(&["get", "replicasets", "-l", "app=api"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "two ReplicaSets listed: {out}");

    let settled = cluster.sandbox.resource_version();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cluster.sandbox.resource_version(),
        settled,
        "a rolled-out Deployment's controllers write nothing more"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_deployment_that_never_becomes_ready_exceeds_its_progress_deadline() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Unready).await;
    let deployments: Api<Deployment> = cluster.api();
    let mut stuck = deployment("stuck", 2, "v1");
    stuck.spec.progress_deadline_seconds = Some(1);
    deployments
        .create(&PostParams::default(), &stuck)
        .await
        .expect("created");
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=15s"])
        .await;
    assert!(!ok, "the rollout cannot succeed: {out}");
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    // Pods still starting count as progress and may briefly reset the clock; once they stop
    // changing, the verdict stays.
    eventually("Progressing is False for good", 10, || async {
        let status = deployments
            .get("stuck")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        let timed_out = status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        timed_out && status.unavailable_replicas == Some(2)
    })
    .await;
    cluster.stop().await;
}

fn job(name: &str, extra: serde_json::Value) -> Job {
    let mut value = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}},
        },
    });
    if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
        for (key, field) in extra {
            spec.insert(key.clone(), field.clone());
        }
    }
    object(value)
}

/// The Job's condition of `type_` when it is true.
fn true_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The reason and message of the Job's condition of `type_` when it is true.
fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    true_condition(job, type_).map(|c| {
        (
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        )
    })
}

#[tokio::test]
async fn job_completes_when_its_pods_succeed() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Succeed).await;
    let jobs: Api<Job> = cluster.api();
    let pods = cluster.pods();
    let created = jobs
        .create(
            &PostParams::default(),
            &job("once", json!({"completions": 2, "parallelism": 1})),
        )
        .await
        .expect("created");
    eventually("the job is Complete", 10, || async {
        condition(&jobs.get("once").await.expect("get"), "Complete").is_some()
    })
    .await;
    let done = jobs.get("once").await.expect("get");
    let status = done.status.clone().expect("status");
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(status.failed, Some(0));
    assert_eq!(status.active, Some(0));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(condition(&done, "SuccessCriteriaMet").is_some());
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.unwrap_or_default().is_empty());
    let uid = created.meta().uid.clone().expect("uid");
    let ran = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=once"))
        .await
        .expect("listed")
        .items;
    assert_eq!(ran.len(), 2, "one pod per completion");
    for pod in &ran {
        let labels = pod.labels();
        assert_eq!(labels.get("job-name").map(String::as_str), Some("once"));
        assert_eq!(labels.get("controller-uid"), Some(&uid));
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
        assert!(pod.name_any().starts_with("once-") && pod.name_any().len() == "once-".len() + 5);
        assert!(
            pod.finalizers().is_empty(),
            "the tracking finalizer is released once counted"
        );
    }
    let (ok, out, err) = cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/once",
            "--timeout=5s",
        ])
        .await;
    assert!(ok, "{out} {err}");
    let selector = done
        .spec
        .and_then(|s| s.selector)
        .expect("a generated selector");
    assert_eq!(
        selector
            .match_labels
            .unwrap_or_default()
            .get("batch.kubernetes.io/controller-uid"),
        Some(&uid)
    );

    // Deleting the Job, as kubectl does, takes its pods with it.
    let (ok, out, err) = cluster.kubectl(&["delete", "job", "once"]).await;
    assert!(ok, "{out} {err}");
    eventually("the Job's pods are collected", 10, || async {
        pods.list(&ListParams::default().labels("job-name=once"))
            .await
            .expect("listed")
            .items
            .is_empty()
    })
    .await;
    cluster.stop().await;
}

#[tokio::test]
async fn job_fails_once_its_backoff_limit_is_exceeded() {
    let options = ControllerOptions::default().job_backoff(Duration::from_millis(50));
    let cluster = Cluster::start(options, false, Outcome::Fail).await;
    let jobs: Api<Job> = cluster.api();
    let pods = cluster.pods();
    jobs.create(
        &PostParams::default(),
        &job("flaky", json!({"backoffLimit": 2})),
    )
    .await
    .expect("created");
    eventually("the job Failed", 15, || async {
        condition(&jobs.get("flaky").await.expect("get"), "Failed").is_some()
    })
    .await;
    let failed = jobs.get("flaky").await.expect("get");
    assert_eq!(
        condition(&failed, "Failed").map(|c| c.0).as_deref(),
        Some("BackoffLimitExceeded")
    );
    let status = failed.status.expect("status");
    assert_eq!(
        (status.failed, status.succeeded, status.active),
        (Some(3), Some(0), Some(0))
    );
    let ran = pods
        .list(&ListParams::default().labels("job-name=flaky"))
        .await
        .expect("listed")
        .items;
    assert_eq!(ran.len(), 3, "the first try and backoffLimit retries");
    cluster.stop().await;
}

#[tokio::test]
async fn job_past_its_active_deadline_fails_and_stops_its_pods() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let jobs: Api<Job> = cluster.api();
    let pods = cluster.pods();
    // startTime has whole-second precision: a two-second deadline leaves the pods at least
    // one second of running.
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 4}),
        ),
    )
    .await
    .expect("created");
    eventually("two pods run", 5, || async {
        active_pods(&pods, "job-name=slow").await.len() == 2
    })
    .await;
    eventually("the job Failed", 10, || async {
        condition(&jobs.get("slow").await.expect("get"), "Failed").is_some()
    })
    .await;
    let failed = jobs.get("slow").await.expect("get");
    assert_eq!(
        condition(&failed, "Failed").map(|c| c.0).as_deref(),
        Some("DeadlineExceeded")
    );
    let status = failed.status.expect("status");
    assert_eq!(status.active, Some(0));
    assert_eq!(status.failed, Some(2), "the stopped pods count as failed");
    assert!(active_pods(&pods, "job-name=slow").await.is_empty());
    cluster.stop().await;
}

#[tokio::test]
async fn a_suspended_job_runs_nothing_until_resumed() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Succeed).await;
    let jobs: Api<Job> = cluster.api();
    let pods = cluster.pods();
    jobs.create(
        &PostParams::default(),
        &job("later", json!({"suspend": true})),
    )
    .await
    .expect("created");
    eventually("the job is Suspended", 10, || async {
        condition(&jobs.get("later").await.expect("get"), "Suspended").is_some()
    })
    .await;
    assert!(
        active_pods(&pods, "job-name=later").await.is_empty(),
        "no pod runs while suspended"
    );
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resumed");
    eventually("the resumed job completes", 10, || async {
        condition(&jobs.get("later").await.expect("get"), "Complete").is_some()
    })
    .await;
    let resumed = jobs.get("later").await.expect("get");
    let suspended = resumed
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Suspended")
        .expect("the Suspended condition stays, turned False");
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_recreate_deployment_stops_every_old_pod_before_starting_new_ones() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let pods = cluster.pods();
    let mut recreate = deployment("re", 2, "v1");
    recreate.spec.strategy = Some(object(json!({"type": "Recreate"})));
    deployments
        .create(&PostParams::default(), &recreate)
        .await
        .expect("created");
    eventually("two ready pods", 10, || async {
        deployments
            .get("re")
            .await
            .expect("get")
            .status
            .and_then(|s| s.available_replicas)
            == Some(2)
    })
    .await;
    let mut watch = watcher(pods.clone(), watcher::Config::default().labels("app=re")).boxed();
    let mut live: std::collections::BTreeMap<String, String> = Default::default();
    while let Some(event) = watch.next().await {
        match event {
            Ok(watcher::Event::InitApply(pod)) => {
                let hash = pod.labels().get("pod-template-hash").cloned();
                live.insert(pod.name_any(), hash.unwrap_or_default());
            }
            Ok(watcher::Event::InitDone) => break,
            _ => {}
        }
    }
    let old_hash = live.values().next().cloned().expect("old pods");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "v2"}]}}}});
    deployments
        .patch("re", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patched");
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watch.next().await {
            match event {
                Ok(watcher::Event::Apply(pod)) => {
                    let hash = pod.labels().get("pod-template-hash").cloned();
                    let hash = hash.unwrap_or_default();
                    if hash != old_hash {
                        assert!(
                            !live.values().any(|h| *h == old_hash),
                            "a new pod started while old ones remained: {live:?}"
                        );
                    }
                    live.insert(pod.name_any(), hash);
                }
                Ok(watcher::Event::Delete(pod)) => {
                    live.remove(&pod.name_any());
                }
                _ => {}
            }
            if live.len() == 2 && live.values().all(|h| *h != old_hash) {
                break;
            }
        }
    })
    .await
    .expect("the new pods replaced the old ones");
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "deployment/re", "--timeout=20s"])
        .await;
    assert!(ok, "rollout status: {out} {err}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_parallel_statefulset_starts_all_its_pods_at_once() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Leave).await;
    let sets: Api<StatefulSet> = cluster.api();
    let pods = cluster.pods();
    let mut parallel = stateful_set("par", 3, "Retain");
    parallel.spec.pod_management_policy = Some("Parallel".into());
    sets.create(&PostParams::default(), &parallel)
        .await
        .expect("created");
    // No pod is ever Ready here, yet all three exist: Parallel does not wait on predecessors.
    eventually("all three pods exist", 10, || async {
        pod_names(&pods, "app=par").await == ["par-0", "par-1", "par-2"]
    })
    .await;
    let status = sets
        .get("par")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(status.ready_replicas.unwrap_or(0), 0);
    cluster.stop().await;
}

#[tokio::test]
async fn a_finished_job_and_its_pods_are_deleted_once_its_ttl_has_passed() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Succeed).await;
    let jobs: Api<Job> = cluster.api();
    let pods = cluster.pods();
    jobs.create(
        &PostParams::default(),
        &job("brief", json!({"ttlSecondsAfterFinished": 3})),
    )
    .await
    .expect("created");
    jobs.create(
        &PostParams::default(),
        &job("kept", json!({"ttlSecondsAfterFinished": 3600})),
    )
    .await
    .expect("created");
    eventually("both Jobs are Complete", 10, || async {
        condition(&jobs.get("brief").await.expect("get"), "Complete").is_some()
            && condition(&jobs.get("kept").await.expect("get"), "Complete").is_some()
    })
    .await;
    // The TTL counts from the Complete condition's recorded time (whole seconds), not from when
    // this test happened to see it: under load that can be a second or more later.
    let brief = jobs.get("brief").await.expect("get");
    let finished = true_condition(&brief, "Complete")
        .and_then(|c| c.last_transition_time.as_ref())
        .expect("the Complete condition has a time")
        .0;
    let brief_pods = ListParams::default().labels("job-name=brief");
    assert_eq!(pods.list(&brief_pods).await.expect("listed").items.len(), 1);

    eventually("the Job with a 3-second TTL is gone", 10, || async {
        jobs.get_opt("brief").await.expect("get").is_none()
    })
    .await;
    let gone = jiff::Timestamp::now();
    assert!(
        gone.as_second() >= finished.as_second() + 3,
        "deleted at {gone}, before its TTL ran out (Complete at {finished})"
    );
    eventually("its pod goes with it", 10, || async {
        pods.list(&brief_pods)
            .await
            .expect("listed")
            .items
            .is_empty()
    })
    .await;
    assert!(jobs.get_opt("kept").await.expect("get").is_some());
    assert_eq!(
        pods.list(&ListParams::default().labels("job-name=kept"))
            .await
            .expect("listed")
            .items
            .len(),
        1,
        "a Job whose TTL has not passed keeps its pod"
    );

    // Shortening the TTL of a finished Job applies at once, as on a real cluster.
    jobs.patch(
        "kept",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttlSecondsAfterFinished": 0}})),
    )
    .await
    .expect("patched");
    eventually("the Job whose TTL was shortened is gone", 10, || async {
        jobs.get_opt("kept").await.expect("get").is_none()
    })
    .await;
    cluster.stop().await;
}

/// kube-controller-manager keeps at most `revisionHistoryLimit` old ControllerRevisions of a
/// StatefulSet besides the ones still in use, deleting the oldest first: after six templates
/// with a limit of two, revisions 4, 5 and 6 remain.
#[tokio::test]
async fn a_statefulsets_revision_history_is_truncated_to_its_limit() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let sets: Api<StatefulSet> = cluster.api();
    let mut set = stateful_set("history", 1, "Retain");
    set.spec.revision_history_limit = Some(2);
    sets.create(&PostParams::default(), &set)
        .await
        .expect("created");
    let revisions: Api<ControllerRevision> = cluster.api();
    let rolled_out = |generation: i64| {
        let sets = sets.clone();
        async move {
            let status = sets
                .get("history")
                .await
                .expect("get")
                .status
                .unwrap_or_default();
            status.observed_generation == Some(generation)
                && status.updated_replicas == Some(1)
                && status.ready_replicas == Some(1)
                && status.current_revision == status.update_revision
        }
    };
    eventually("the first template rolled out", 10, || rolled_out(1)).await;
    for change in 2..=6 {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"change": change.to_string()}}}}});
        sets.patch("history", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("template changed");
        eventually("the new template rolled out", 15, || rolled_out(change)).await;
    }
    eventually(
        "the history holds the newest revisions only",
        10,
        || async {
            let mut kept: Vec<i64> = revisions
                .list(&ListParams::default().labels("app=history"))
                .await
                .expect("listed")
                .items
                .iter()
                .filter_map(|r| r.revision)
                .collect();
            kept.sort_unstable();
            kept == [4, 5, 6]
        },
    )
    .await;
    cluster.stop().await;
}
