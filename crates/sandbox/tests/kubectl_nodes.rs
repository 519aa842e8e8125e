//! Cordoning and draining the local runtime's Node with the real kubectl: the scheduler keeps
//! new pods off a cordoned node (kube-scheduler's NodeUnschedulable filter), `kubectl drain
//! --ignore-daemonsets --delete-emptydir-data` evicts through `pods/eviction`, which a
//! PodDisruptionBudget holds back with kube-apiserver's 429, and `uncordon` lets what waits
//! run.

mod common;

use common::kubectl::{apply, kubectl, kubectl_ok};
use common::{eventually, sandbox_with_runtime};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const NODE: &str = "tusk-sandbox";

/// A Deployment whose pods keep scratch data in an emptyDir, a DaemonSet, and a budget that
/// keeps one web pod up.
const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      volumes: [{name: scratch, emptyDir: {}}]
      containers:
      - {name: main, image: busybox, command: [sleep, "1000"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      containers: [{name: main, image: busybox, command: [sleep, "1000"]}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"#;

const LATE_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  containers: [{name: main, image: busybox, command: [sleep, "1000"]}]
"#;

/// The pods labelled `selector` that run on the node (bound and not being deleted).
async fn bound(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .expect("pods listed")
        .items
        .into_iter()
        .filter(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE)
        })
        .collect()
}

#[tokio::test]
async fn cordon_keeps_pods_off_and_drain_evicts_within_the_disruption_budget() {
    let (sandbox, _root) = sandbox_with_runtime().await;
    let client = sandbox.client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    apply(&sandbox, WORKLOADS).await;
    for workload in ["deployment/web", "ds/agent"] {
        kubectl_ok(&sandbox, &["rollout", "status", workload, "--timeout=60s"]).await;
    }
    eventually("the budget allows one disruption", 20, || async {
        let allowed = kubectl_ok(
            &sandbox,
            &[
                "get",
                "pdb",
                "web",
                "-o",
                "jsonpath={.status.disruptionsAllowed}",
            ],
        )
        .await;
        allowed == "1"
    })
    .await;

    // Cordoned, the node takes no new pod; the scheduler says why.
    let out = kubectl_ok(&sandbox, &["cordon", NODE]).await;
    assert_eq!(out.trim(), format!("node/{NODE} cordoned"));
    apply(&sandbox, LATE_POD).await;
    eventually("the late pod is unschedulable", 20, || async {
        let message = kubectl_ok(
            &sandbox,
            &[
                "get",
                "pod",
                "late",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}"#,
            ],
        )
        .await;
        message.contains("1 node(s) were unschedulable")
    })
    .await;
    let events = kubectl_ok(
        &sandbox,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=late,reason=FailedScheduling",
        ],
    )
    .await;
    assert!(events.contains("node(s) were unschedulable"), "{events}");

    // The budget lets one web pod go, then answers 429 until the drain gives up.
    let (ok, out, err) = kubectl(
        &sandbox,
        &[
            "drain",
            NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=15s",
        ],
    )
    .await;
    assert!(!ok, "the budget stops the drain: {out} {err}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert_eq!(
        bound(&pods, "app=web").await.len(),
        1,
        "one web pod was evicted"
    );

    // Without the budget the drain finishes; the daemon stays.
    kubectl_ok(&sandbox, &["delete", "pdb", "web"]).await;
    let out = kubectl_ok(
        &sandbox,
        &[
            "drain",
            NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(out.contains(&format!("node/{NODE} drained")), "{out}");
    assert!(bound(&pods, "app=web").await.is_empty());
    assert_eq!(bound(&pods, "app=agent").await.len(), 1, "the daemon stays");
    let status = kubectl_ok(&sandbox, &["get", "node", NODE, "--no-headers"]).await;
    assert!(status.contains("Ready,SchedulingDisabled"), "{status}");

    // Uncordoned, everything that waited runs.
    kubectl_ok(&sandbox, &["uncordon", NODE]).await;
    kubectl_ok(
        &sandbox,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    kubectl_ok(
        &sandbox,
        &["wait", "--for=condition=Ready", "pod/late", "--timeout=60s"],
    )
    .await;
    sandbox.shutdown().await;
}
