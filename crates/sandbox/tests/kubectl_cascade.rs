//! `kubectl delete --cascade=foreground` against the workload controllers and the garbage
//! collector: the owner stays until every dependent that blocks it is gone.

mod cluster;

use cluster::{Cluster, Outcome, deployment, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tusk_sandbox::controllers::ControllerOptions;

/// The workload controllers own what they create as metav1.NewControllerRef does, with
/// `blockOwnerDeletion`, so the garbage collector's foregroundDeletion finalizer keeps a
/// Deployment, and its ReplicaSet, until the pods are gone, terminating ones included (here
/// held by a finalizer of their own); once they go, so do the owners.
#[tokio::test]
async fn foreground_deletion_waits_for_terminating_pods() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let mut web = deployment("web", 2, "nginx");
    if let Some(metadata) = web.spec.template.metadata.as_mut() {
        metadata.finalizers = Some(vec!["example.com/hold".into()]);
    }
    deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("created");
    let pods = cluster.pods();
    let listed = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods listed")
            .items
    };
    eventually("two pods", 30, || async { listed().await.len() == 2 }).await;
    let pod: Pod = listed().await.remove(0);
    let owner = &pod.owner_references()[0];
    assert_eq!(owner.block_owner_deletion, Some(true), "{owner:?}");

    let (ok, out, err) = cluster
        .kubectl(&[
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps \"web\" deleted");
    eventually("the pods are terminating", 30, || async {
        let pods = listed().await;
        pods.len() == 2 && pods.iter().all(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let held = deployments.get("web").await.expect("the Deployment waits");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        held.finalizers()
            .contains(&"foregroundDeletion".to_string()),
        "{:?}",
        held.finalizers()
    );
    let sets: Api<ReplicaSet> = cluster.api();
    let sets_left = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listed")
        .items;
    assert_eq!(sets_left.len(), 1, "the ReplicaSet waits too");

    for pod in listed().await {
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    }
    eventually("the Deployment goes with its pods", 30, || async {
        deployments.get_opt("web").await.expect("read").is_none()
    })
    .await;
    assert!(listed().await.is_empty());
    cluster.stop().await;
}
