//! The runtime's Node object: the kubelet registers its machine as a Node and keeps its status
//! current, so that `kubectl get nodes`, `describe node` and `cordon` see the one node the
//! sandbox has.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{NODE_NAME, Node};
use crate::apiserver::{KUBERNETES_MAJOR, KUBERNETES_MINOR, go_arch};

/// How often the status is written again, as the kubelet's `nodeStatusReportFrequency`.
const REPORT_INTERVAL: Duration = Duration::from_secs(300);
/// Pods the kubelet admits by default (`maxPods`).
const MAX_PODS: &str = "110";

/// Registers the Node (keeping one that exists, with its labels and `spec.unschedulable`)
/// and reports its status until the runtime stops.
pub(crate) async fn register(node: std::sync::Arc<Node>) {
    let nodes: Api<NodeObject> = Api::all(node.client.clone());
    let object = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": go_arch(),
                "node-role.kubernetes.io/control-plane": "",
            },
        },
    });
    match serde_json::from_value::<NodeObject>(object) {
        Ok(object) => match nodes.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => tracing::warn!(%error, "the runtime could not register its Node"),
        },
        Err(error) => tracing::warn!(%error, "the runtime's Node object is malformed"),
    }
    let started = jiff::Timestamp::now().to_string();
    loop {
        let status = json!({"status": status(&started)});
        if let Err(error) = nodes
            .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::debug!(%error, "the runtime could not report its Node's status");
        }
        tokio::select! {
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// The Node's status: Ready since the runtime started, this machine's capacity and software.
fn status(started: &str) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = memory_kib().map_or_else(String::new, |kib| format!("{kib}Ki"));
    let capacity = json!({"cpu": cpus.to_string(), "memory": memory, "pods": MAX_PODS});
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": started,
        })
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_default();
    let version = format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0");
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": kernel,
            "osImage": os_image(),
            "containerRuntimeVersion": format!("tusk://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": std::env::consts::OS,
            "architecture": go_arch(),
        },
    })
}

/// `MemTotal` of /proc/meminfo, in KiB.
fn memory_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `PRETTY_NAME` of /etc/os-release, as the kubelet reports the OS image.
fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|release| {
            release.lines().find_map(|line| {
                line.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Unknown".to_string())
}
