//! The kinds every cluster serves, through the real kubectl: discovery lists them, kubectl
//! stores and reads them with their server-side columns, `kubectl apply --prune` finds every
//! kind of its default allow-list, and the local runtime's machine is the cluster's Node.

mod common;

use std::time::Duration;

use common::kubectl::{kubectl, kubectl_ok};
use tusk_sandbox::Sandbox;

/// One manifest of each kind added for kubectl's everyday commands.
const MANIFESTS: &str = r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 0
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: main, image: nginx}]}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota}
spec: {hard: {pods: "10"}}
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec: {limits: [{type: Container, default: {cpu: 500m}}]}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: disk}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  hostPath: {path: /tmp/disk}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: main, image: agent}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: main, image: busybox}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local}
provisioner: tusk.dev/local
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: critical}
value: 1000000
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: checks}
webhooks: []
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: kube-system, name: metrics-server}
"#;

/// The first line of `kubectl get <kind> <name>` after the header, split into cells.
async fn row(sandbox: &Sandbox, kind: &str, name: &str) -> Vec<String> {
    let table = kubectl_ok(sandbox, &["get", kind, name]).await;
    let line = table.lines().nth(1).unwrap_or_default();
    // Cells are aligned under the header's words; split on runs of two spaces or more.
    let cells: Vec<String> = line
        .split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::to_string)
        .collect();
    assert!(!cells.is_empty(), "no row for {kind} {name}: {table}");
    cells
}

/// kube-apiserver serves these kinds in every cluster; kubectl finds them by kind, plural and
/// short name, stores them, and prints them with the columns kube-apiserver's printers define.
#[tokio::test]
async fn every_kind_a_cluster_serves_is_stored_and_printed_with_its_columns() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let resources = kubectl_ok(&sandbox, &["api-resources", "--no-headers"]).await;
    for (name, short) in [
        ("nodes", "no"),
        ("replicationcontrollers", "rc"),
        ("resourcequotas", "quota"),
        ("limitranges", "limits"),
        ("persistentvolumes", "pv"),
        ("daemonsets", "ds"),
        ("cronjobs", "cj"),
        ("ingresses", "ing"),
        ("storageclasses", "sc"),
        ("priorityclasses", "pc"),
        ("horizontalpodautoscalers", "hpa"),
        ("certificatesigningrequests", "csr"),
    ] {
        assert!(
            resources.lines().any(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.first() == Some(&name) && words.get(1) == Some(&short)
            }),
            "{name} ({short}) missing from api-resources:\n{resources}"
        );
    }
    for name in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "apiservices",
        "selfsubjectaccessreviews",
        "tokenreviews",
    ] {
        assert!(
            resources.lines().any(|line| line.starts_with(name)),
            "{name} missing from api-resources"
        );
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("kinds.yaml");
    std::fs::write(&manifest, MANIFESTS).expect("written");
    let applied = kubectl_ok(&sandbox, &["apply", "-f", &manifest.display().to_string()]).await;
    assert_eq!(applied.lines().count(), 12, "{applied}");

    let class = row(&sandbox, "sc", "local").await;
    assert_eq!(
        &class[..5],
        [
            "local",
            "tusk.dev/local",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
    let cron = row(&sandbox, "cj", "nightly").await;
    assert_eq!(&cron[..5], ["nightly", "0 3 * * *", "<none>", "False", "0"]);
    assert_eq!(cron[5], "<none>", "never scheduled");
    let ingress = row(&sandbox, "ing", "web").await;
    assert_eq!(&ingress[..3], ["web", "<none>", "shop.example.com"]);
    let pv = row(&sandbox, "pv", "disk").await;
    assert_eq!(&pv[..4], ["disk", "1Gi", "RWO", "Retain"]);
    let hpa = row(&sandbox, "hpa", "web").await;
    assert_eq!(&hpa[..5], ["web", "Deployment/web", "<none>", "1", "5"]);
    let priority = row(&sandbox, "pc", "critical").await;
    assert_eq!(&priority[..3], ["critical", "1000000", "false"]);
    let rc = row(&sandbox, "rc", "legacy").await;
    assert_eq!(&rc[..4], ["legacy", "0", "0", "0"]);
    let webhooks = row(&sandbox, "validatingwebhookconfigurations", "checks").await;
    assert_eq!(&webhooks[..2], ["checks", "0"]);
    let service = row(&sandbox, "apiservice", "v1beta1.metrics.k8s.io").await;
    assert_eq!(
        &service[..2],
        ["v1beta1.metrics.k8s.io", "kube-system/metrics-server"]
    );
    sandbox.shutdown().await;
}

/// `kubectl apply --prune` without an allow-list lists every kind of its default list
/// (ConfigMap, Endpoints, Namespace, PVC, PV, Pod, ReplicationController, Secret, Service,
/// Job, CronJob, Ingress, DaemonSet, Deployment, ReplicaSet, StatefulSet); one the server
/// does not serve makes it fail outright. It deletes what the label selects and the
/// manifests no longer name.
#[tokio::test]
async fn kubectl_apply_prune_with_its_default_allow_list_deletes_what_is_gone() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("app.yaml");
    let map = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{app: shop}}\n"
        )
    };
    std::fs::write(&manifest, format!("{}---\n{}", map("one"), map("two"))).expect("written");
    let path = manifest.display().to_string();
    kubectl_ok(
        &sandbox,
        &["apply", "--prune", "-l", "app=shop", "-f", &path],
    )
    .await;
    std::fs::write(&manifest, map("one")).expect("written");
    let (ok, out, stderr) = kubectl(
        &sandbox,
        &["apply", "--prune", "-l", "app=shop", "-f", &path],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(out.contains("configmap/two pruned"), "{out}");
    let left = kubectl_ok(
        &sandbox,
        &["get", "configmaps", "-l", "app=shop", "-o", "name"],
    )
    .await;
    assert_eq!(left.trim(), "configmap/one");
    sandbox.shutdown().await;
}

/// The kubelet registers its machine as a Node with a Ready condition and its capacity;
/// `kubectl cordon` marks it unschedulable, which the STATUS column shows.
#[tokio::test]
async fn the_runtime_is_the_clusters_node_and_can_be_cordoned() {
    let (sandbox, _root) = common::sandbox_with_runtime().await;
    let mut nodes = String::new();
    for _ in 0..100 {
        nodes = kubectl_ok(&sandbox, &["get", "nodes", "--no-headers"]).await;
        if nodes.contains(" Ready ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cells: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(
        &cells[..3],
        ["tusk-sandbox", "Ready", "control-plane"],
        "{nodes}"
    );
    assert!(cells[4].starts_with("v1."), "the kubelet version: {nodes}");
    let cpus = kubectl_ok(
        &sandbox,
        &[
            "get",
            "node",
            "tusk-sandbox",
            "-o",
            "jsonpath={.status.capacity.cpu}",
        ],
    )
    .await;
    let expected = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(cpus, expected.to_string());

    let cordoned = kubectl_ok(&sandbox, &["cordon", "tusk-sandbox"]).await;
    assert_eq!(cordoned.trim(), "node/tusk-sandbox cordoned");
    let status = kubectl_ok(&sandbox, &["get", "node", "tusk-sandbox", "--no-headers"]).await;
    assert!(status.contains("Ready,SchedulingDisabled"), "{status}");
    kubectl_ok(&sandbox, &["uncordon", "tusk-sandbox"]).await;
    let status = kubectl_ok(&sandbox, &["get", "node", "tusk-sandbox", "--no-headers"]).await;
    assert!(!status.contains("SchedulingDisabled"), "{status}");
    sandbox.shutdown().await;
}
