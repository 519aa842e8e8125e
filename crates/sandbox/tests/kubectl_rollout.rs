//! `kubectl rollout undo` and `rollout history` against the Deployment controller, with a
//! stand-in kubelet making pods ready.

mod cluster;

use cluster::{Cluster, Outcome, deployment, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use tusk_sandbox::controllers::ControllerOptions;

async fn sets(cluster: &Cluster) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = cluster.api();
    api.list(&ListParams::default().labels("app=web"))
        .await
        .expect("listed")
        .items
}

fn image(set: &ReplicaSet) -> String {
    set.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

async fn rolled_out(cluster: &Cluster) {
    let (ok, out, err) = cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");
}

/// The Deployment controller finds a ReplicaSet by its template's hash: `kubectl rollout undo`
/// puts an earlier template back, so its ReplicaSet is scaled up again rather than a new one
/// made; it becomes the newest revision (the Deployment's too) and remembers the revision it
/// had (`deployment.kubernetes.io/revision-history`), which `kubectl rollout history` then
/// lists with the change cause the Deployment carried.
#[tokio::test]
async fn rollout_undo_reuses_the_earlier_replica_set() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let mut web = deployment("web", 2, "nginx:1");
    web.annotations_mut()
        .insert("kubernetes.io/change-cause".into(), "first".into());
    deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("created");
    rolled_out(&cluster).await;
    let (ok, _, err) = cluster
        .kubectl(&["set", "image", "deployment/web", "main=nginx:2"])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = cluster
        .kubectl(&[
            "annotate",
            "deployment/web",
            "--overwrite",
            "kubernetes.io/change-cause=second",
        ])
        .await;
    assert!(ok, "{err}");
    rolled_out(&cluster).await;
    let first: Vec<String> = sets(&cluster)
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(first.len(), 2, "{first:?}");

    let (ok, out, err) = cluster
        .kubectl(&["rollout", "undo", "deployment/web"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    rolled_out(&cluster).await;
    eventually(
        "the earlier ReplicaSet is the newest revision",
        30,
        || async {
            let sets = sets(&cluster).await;
            sets.iter().any(|set| {
                image(set) == "nginx:1"
                    && set.spec.replicas == Some(2)
                    && set
                        .annotations()
                        .get("deployment.kubernetes.io/revision")
                        .map(String::as_str)
                        == Some("3")
            })
        },
    )
    .await;
    let after = sets(&cluster).await;
    let mut names: Vec<String> = after.iter().map(ResourceExt::name_any).collect();
    names.sort();
    let mut before = first.clone();
    before.sort();
    if names != before {
        let (_, sets, _) = cluster.kubectl(&["get", "rs", "-o", "json"]).await;
        let (_, web, _) = cluster
            .kubectl(&["get", "deployment", "web", "-o", "json"])
            .await;
        panic!("no new ReplicaSet: {names:?}\n{sets}\n{web}");
    }
    let reused = after
        .iter()
        .find(|s| image(s) == "nginx:1")
        .expect("nginx:1");
    assert_eq!(
        reused
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    let stored = deployments.get("web").await.expect("deployment");
    assert_eq!(
        stored
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );

    let (ok, history, err) = cluster
        .kubectl(&["rollout", "history", "deployment/web"])
        .await;
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|line| !line.starts_with("REVISION"))
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [vec!["2", "second"], vec!["3", "first"]], "{history}");
    let (ok, detail, err) = cluster
        .kubectl(&["rollout", "history", "deployment/web", "--revision=3"])
        .await;
    assert!(ok, "{err}");
    assert!(detail.contains("nginx:1"), "{detail}");
    cluster.stop().await;
}
