//! `kubectl scale` and the `/scale` subresource (autoscaling/v1 Scale) of Deployments,
//! ReplicaSets, StatefulSets and custom resources that declare one, with the workload
//! controllers converging on the new replica count.

mod cluster;

use cluster::{Cluster, Outcome, deployment, eventually, object};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tusk_sandbox::controllers::ControllerOptions;

async fn running_pods(cluster: &Cluster, selector: &str) -> usize {
    cluster
        .pods()
        .list(&ListParams::default().labels(selector))
        .await
        .expect("pods listed")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

fn get_raw(value: &str) -> Value {
    serde_json::from_str(value).expect("JSON")
}

/// kube-apiserver's scale subresource: GET shows `spec.replicas`, `status.replicas` and the
/// selector as a string; `kubectl scale` (a merge patch of the Scale) sets the workload's
/// `spec.replicas`, bumping its generation, and the controller converges; an update carrying
/// a stale resourceVersion is a 409 Conflict; a negative count is a 422 on the Scale.
#[tokio::test]
async fn kubectl_scale_sets_the_replicas_of_deployments_and_statefulsets() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let web = deployment("web", 1, "nginx");
    deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("created");
    eventually("one web pod", 30, || async {
        running_pods(&cluster, "app=web").await == 1
    })
    .await;

    let (ok, scaled, stderr) = cluster
        .kubectl(&["scale", "deployment/web", "--replicas=3"])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(scaled.trim(), "deployment.apps/web scaled");
    eventually("three web pods", 30, || async {
        running_pods(&cluster, "app=web").await == 3
    })
    .await;
    let stored = deployments.get("web").await.expect("deployment");
    assert_eq!(stored.metadata.generation, Some(2), "a spec change");
    let (ok, rollout, stderr) = cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(ok, "{stderr}");
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    let (ok, raw, stderr) = cluster
        .kubectl(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ])
        .await;
    assert!(ok, "{stderr}");
    let scale = get_raw(&raw);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(
        scale["metadata"]["uid"],
        json!(stored.metadata.uid),
        "the Deployment's"
    );

    // kubectl's own precondition is checked against what the Scale says (a GET of it).
    let (ok, _, stderr) = cluster
        .kubectl(&[
            "scale",
            "deployment/web",
            "--replicas=1",
            "--current-replicas=2",
        ])
        .await;
    assert!(
        !ok && stderr.contains("Expected replicas to be 2, was 3"),
        "{stderr}"
    );
    // kube-apiserver's optimistic concurrency on the Scale: a stale resourceVersion is a 409.
    let stale: Scale = object(json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
        "spec": {"replicas": 1},
    }));
    let error = deployments
        .replace_scale("web", &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let negative: Scale = object(json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": -1},
    }));
    let error = deployments
        .replace_scale("web", &PostParams::default(), &negative)
        .await
        .expect_err("a negative count");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Scale.autoscaling \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        deployments
            .get("web")
            .await
            .expect("deployment")
            .spec
            .replicas,
        Some(3),
        "refused writes change nothing"
    );

    let (ok, _, stderr) = cluster
        .kubectl(&["scale", "deployment/web", "--replicas=0"])
        .await;
    assert!(ok, "{stderr}");
    eventually("no web pod", 30, || async {
        running_pods(&cluster, "app=web").await == 0
    })
    .await;

    let sets: Api<StatefulSet> = cluster.api();
    let db: StatefulSet = object(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "pg", "image": "postgres"}]},
            },
        },
    }));
    sets.create(&PostParams::default(), &db)
        .await
        .expect("created");
    let (ok, _, stderr) = cluster
        .kubectl(&["scale", "statefulset", "db", "--replicas=2"])
        .await;
    assert!(ok, "{stderr}");
    eventually("two db pods", 30, || async {
        running_pods(&cluster, "app=db").await == 2
    })
    .await;
    let names: Vec<String> = cluster
        .pods()
        .list(&ListParams::default().labels("app=db"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(names.contains(&"db-1".to_string()), "{names:?}");
    cluster.stop().await;
}

/// The scale subresource of a custom resource is where its CRD's `subresources.scale` points:
/// `specReplicasPath`, `statusReplicasPath` and `labelSelectorPath`.
#[tokio::test]
async fn a_custom_resource_with_a_scale_subresource_is_scaled_at_its_declared_paths() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let crd: CustomResourceDefinition = object(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "pools", "singular": "pool", "kind": "Pool"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"instances": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {
                        "ready": {"type": "integer"},
                        "selector": {"type": "string"},
                    }},
                }}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.instances",
                    "statusReplicasPath": ".status.ready",
                    "labelSelectorPath": ".status.selector",
                }},
            }],
        },
    }));
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("pool.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: example.com/v1\nkind: Pool\nmetadata:\n  name: blue\nspec:\n  instances: 1\n",
    )
    .expect("written");
    let manifest = manifest.display().to_string();
    let mut created = false;
    for _ in 0..50 {
        // The CRD's resources are served once it is established.
        let (ok, _, _) = cluster.kubectl(&["apply", "-f", &manifest]).await;
        if ok {
            created = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(created, "the Pool was created");
    let (ok, _, stderr) = cluster
        .kubectl(&["scale", "pool/blue", "--replicas=4"])
        .await;
    assert!(ok, "{stderr}");
    let (ok, instances, stderr) = cluster
        .kubectl(&["get", "pool", "blue", "-o", "jsonpath={.spec.instances}"])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(instances, "4");
    let (ok, raw, stderr) = cluster
        .kubectl(&[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/pools/blue/scale",
        ])
        .await;
    assert!(ok, "{stderr}");
    let scale = get_raw(&raw);
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 0, "no status yet");
    cluster.stop().await;
}
