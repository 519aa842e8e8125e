//! DaemonSets through the real kubectl, as kube-controller-manager's daemon controller runs
//! them: one pod per Node its node selector and tolerations admit, the DESIRED / CURRENT /
//! READY / UP-TO-DATE / AVAILABLE counts, and a rolling update `kubectl rollout status ds/x`
//! waits for. The Nodes are API objects only; a stand-in kubelet makes every pod Ready.

mod cluster;

use std::collections::BTreeMap;

use cluster::{Cluster, Outcome, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tusk_sandbox::controllers::ControllerOptions;

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {kubernetes.io/os: linux}
      containers: [{name: main, image: agent:v1}]
"#;

/// Registers a Node object named `name` with `labels` and `taints`.
async fn node(cluster: &Cluster, name: &str, labels: serde_json::Value, taints: serde_json::Value) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node created");
}

/// The daemon pods that are not being deleted, by the node their affinity requires.
async fn daemons(pods: &Api<Pod>) -> BTreeMap<String, Pod> {
    pods.list(&ListParams::default().labels("app=agent"))
        .await
        .expect("pods listed")
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| {
            let node = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.affinity.as_ref())
                .and_then(|a| {
                    let terms = &a
                        .node_affinity
                        .as_ref()?
                        .required_during_scheduling_ignored_during_execution
                        .as_ref()?
                        .node_selector_terms;
                    terms
                        .first()?
                        .match_fields
                        .as_ref()?
                        .first()?
                        .values
                        .as_ref()?
                        .first()
                        .cloned()
                });
            (node.expect("a daemon pod requires its node"), pod)
        })
        .collect()
}

async fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl(args).await;
    assert!(ok, "kubectl {args:?}: {out} {err}");
    out
}

#[tokio::test]
async fn a_daemonset_runs_one_pod_per_admitted_node_and_rolls_out_node_by_node() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let linux = json!({"kubernetes.io/os": "linux"});
    node(&cluster, "n1", linux.clone(), json!([])).await;
    node(&cluster, "n2", linux.clone(), json!([])).await;
    // Not selected, and tainted: neither gets a daemon.
    node(
        &cluster,
        "win",
        json!({"kubernetes.io/os": "windows"}),
        json!([]),
    )
    .await;
    let taint = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
    node(&cluster, "db", linux.clone(), taint).await;

    cluster.apply(DAEMONSET).await;
    let out = kubectl_ok(
        &cluster,
        &["rollout", "status", "ds/agent", "--timeout=30s"],
    )
    .await;
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let pods = cluster.pods();
    let placed = daemons(&pods).await;
    assert_eq!(placed.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    let row = kubectl_ok(&cluster, &["get", "ds", "agent", "--no-headers"]).await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..7],
        ["agent", "2", "2", "2", "2", "2", "kubernetes.io/os=linux"]
    );

    // Cordoning does not move a daemon; a new node gets one, a lost daemon comes back.
    kubectl_ok(&cluster, &["cordon", "n1"]).await;
    node(&cluster, "n3", linux.clone(), json!([])).await;
    eventually("a daemon on n3", 10, || async {
        daemons(&pods).await.len() == 3
    })
    .await;
    assert!(
        daemons(&pods).await.contains_key("n1"),
        "the cordoned node keeps its daemon"
    );
    let lost = daemons(&pods).await["n2"].name_any();
    kubectl_ok(&cluster, &["delete", "pod", &lost]).await;
    eventually("n2 has a new daemon", 10, || async {
        daemons(&pods)
            .await
            .get("n2")
            .is_some_and(|pod| pod.name_any() != lost)
    })
    .await;

    // A new template replaces the daemons node by node; rollout status waits for all.
    kubectl_ok(&cluster, &["set", "image", "ds/agent", "main=agent:v2"]).await;
    let out = kubectl_ok(
        &cluster,
        &["rollout", "status", "ds/agent", "--timeout=30s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let placed = daemons(&pods).await;
    assert_eq!(placed.len(), 3);
    let generation = kubectl_ok(
        &cluster,
        &[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    )
    .await;
    for (node, pod) in &placed {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone());
        assert_eq!(image.as_deref(), Some("agent:v2"), "the daemon of {node}");
        assert_eq!(
            pod.labels().get("pod-template-generation"),
            Some(&generation)
        );
    }
    let row = kubectl_ok(&cluster, &["get", "ds", "agent", "--no-headers"]).await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..6], ["3", "3", "3", "3", "3"], "{row}");

    // A node that stops matching the selector loses its daemon.
    kubectl_ok(
        &cluster,
        &[
            "label",
            "node",
            "n3",
            "kubernetes.io/os=windows",
            "--overwrite",
        ],
    )
    .await;
    eventually("n3 has no daemon", 10, || async {
        !daemons(&pods).await.contains_key("n3")
    })
    .await;
    let events = kubectl_ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=DaemonSet",
            "-o",
            "wide",
        ],
    )
    .await;
    assert!(
        events.contains("SuccessfulCreate") && events.contains("daemonset-controller"),
        "{events}"
    );
    cluster.stop().await;
}

/// The revisions `rollout history` prints, with their change causes.
async fn history(cluster: &Cluster) -> Vec<(String, String)> {
    let out = kubectl_ok(cluster, &["rollout", "history", "ds/agent"]).await;
    out.lines()
        .skip_while(|line| !line.starts_with("REVISION"))
        .skip(1)
        .filter_map(|line| {
            let (revision, cause) = line.split_once(char::is_whitespace)?;
            Some((revision.to_string(), cause.trim().to_string()))
        })
        .collect()
}

/// kube-controller-manager's daemon controller keeps a ControllerRevision of each template
/// (`<daemonset>-<hash>`, labelled with the hash and carrying the DaemonSet's annotations), so
/// `kubectl rollout history ds` lists them with their change causes and `rollout undo ds`
/// patches an earlier template back; the template it returns to keeps its revision object,
/// renumbered as the newest.
#[tokio::test]
async fn rollout_history_and_undo_work_on_a_daemonset() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    node(
        &cluster,
        "n1",
        json!({"kubernetes.io/os": "linux"}),
        json!([]),
    )
    .await;
    cluster
        .apply(&DAEMONSET.replace(
            "metadata: {name: agent}",
            "metadata: {name: agent, annotations: {kubernetes.io/change-cause: first}}",
        ))
        .await;
    let rolled_out = || async {
        let out = kubectl_ok(
            &cluster,
            &["rollout", "status", "ds/agent", "--timeout=30s"],
        )
        .await;
        assert!(out.contains("successfully rolled out"), "{out}");
    };
    rolled_out().await;
    kubectl_ok(
        &cluster,
        &[
            "annotate",
            "ds/agent",
            "--overwrite",
            "kubernetes.io/change-cause=second",
        ],
    )
    .await;
    kubectl_ok(&cluster, &["set", "image", "ds/agent", "main=agent:v2"]).await;
    rolled_out().await;
    eventually("two revisions", 10, || async {
        history(&cluster).await.len() == 2
    })
    .await;
    assert_eq!(
        history(&cluster).await,
        [
            ("1".to_string(), "first".to_string()),
            ("2".to_string(), "second".to_string())
        ]
    );
    let first = kubectl_ok(
        &cluster,
        &["rollout", "history", "ds/agent", "--revision=1"],
    )
    .await;
    assert!(first.contains("agent:v1"), "{first}");

    let out = kubectl_ok(&cluster, &["rollout", "undo", "ds/agent"]).await;
    assert_eq!(out.trim(), "daemonset.apps/agent rolled back");
    rolled_out().await;
    let pods = cluster.pods();
    eventually("the daemon runs the first template again", 10, || async {
        daemons(&pods).await.get("n1").is_some_and(|pod| {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers[0].image.as_deref())
                == Some("agent:v1")
        })
    })
    .await;
    eventually("the first revision is the newest", 10, || async {
        history(&cluster).await
            == [
                ("2".to_string(), "second".to_string()),
                ("3".to_string(), "first".to_string()),
            ]
    })
    .await;
    let names = kubectl_ok(
        &cluster,
        &[
            "get",
            "controllerrevisions",
            "-l",
            "app=agent",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(names.lines().count(), 2, "{names}");
    let hash = daemons(&pods).await["n1"].labels()["controller-revision-hash"].clone();
    assert!(
        names
            .lines()
            .any(|name| name == format!("controllerrevision.apps/agent-{hash}")),
        "the daemon's label names its revision: {names}"
    );
    cluster.stop().await;
}
