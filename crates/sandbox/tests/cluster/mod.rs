//! Helpers of the workload and service tests: a sandbox with the controllers (and proxy)
//! running against it over HTTPS, and a stand-in kubelet that writes pod status through the
//! status subresource as the real one would.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

pub use common::eventually;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rand::RngExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tusk_sandbox::Sandbox;
use tusk_sandbox::controllers::{self, ControllerOptions};

/// What the stand-in kubelet does with a new pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Leaves it Pending, for the test to drive.
    Leave,
    /// Running and Ready.
    Ready,
    /// Running but not Ready.
    Unready,
    /// Runs to completion: Succeeded.
    Succeed,
    /// Exits with an error: Failed.
    Fail,
}

type Policy = Arc<Mutex<Outcome>>;

/// A sandbox with the controllers, optionally the proxy, and a stand-in kubelet.
pub struct Cluster {
    pub sandbox: Sandbox,
    pub client: Client,
    policy: Policy,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Starts everything; new pods get `outcome` from the stand-in kubelet.
    pub async fn start(options: ControllerOptions, proxy: bool, outcome: Outcome) -> Self {
        let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
        let client = sandbox.client().await.expect("client");
        let shutdown = CancellationToken::new();
        let policy = Arc::new(Mutex::new(outcome));
        let mut tasks = vec![
            tokio::spawn(controllers::run(client.clone(), options, shutdown.clone())),
            tokio::spawn(kubelet(client.clone(), policy.clone(), shutdown.clone())),
        ];
        if proxy {
            tasks.push(tokio::spawn(tusk_sandbox::proxy::run(
                client.clone(),
                shutdown.clone(),
            )));
        }
        Self {
            sandbox,
            client,
            policy,
            shutdown,
            tasks,
        }
    }

    /// What the stand-in kubelet does with pods from now on.
    pub fn set_outcome(&self, outcome: Outcome) {
        *self.policy.lock().expect("policy lock") = outcome;
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Runs kubectl against the sandbox.
    pub async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        common::kubectl::kubectl(&self.sandbox, args).await
    }

    /// Applies the manifest `yaml` with kubectl.
    pub async fn apply(&self, yaml: &str) {
        common::kubectl::apply(&self.sandbox, yaml).await;
    }

    /// A kubectl command against the sandbox, to be given more settings and then run.
    pub fn kubectl_command(&self, args: &[&str]) -> tokio::process::Command {
        common::kubectl::kubectl_command(&self.sandbox, args)
    }

    /// Stops the controllers, the proxy and the sandbox.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.sandbox.shutdown().await;
    }
}

/// A random pod address in 127.64.0.0/10, as the local runtime hands them out.
pub fn pod_ip() -> Ipv4Addr {
    let offset: u32 = rand::rng().random_range(1..(1 << 22) - 1);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 64, 0, 0)) + offset)
}

fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("now")
        .to_string()
}

/// The status the kubelet writes for a pod in `phase`, ready or not, at `ip`.
pub fn pod_status(phase: &str, ready: bool, ip: Option<Ipv4Addr>) -> Value {
    let ready = if ready { "True" } else { "False" };
    let at = now();
    let mut status = json!({
        "phase": phase,
        "startTime": at,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": at},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
            {"type": "Ready", "status": ready, "lastTransitionTime": at},
        ],
    });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status
}

/// Writes a pod's status through the status subresource, keeping its address.
pub async fn set_pod_status(pods: &Api<Pod>, name: &str, phase: &str, ready: bool) {
    let pod = pods.get(name).await.expect("pod exists");
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(pod_ip);
    let patch = json!({"status": pod_status(phase, ready, Some(ip))});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("pod status written");
}

/// The stand-in kubelet: starts new pods per the policy, and finishes deleted ones (terminal
/// phase, then the final grace-period-0 delete).
async fn kubelet(client: Client, policy: Policy, shutdown: CancellationToken) {
    let all: Api<Pod> = Api::all(client.clone());
    let stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .take_until(shutdown.cancelled_owned());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(pod) = event else { continue };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let terminal = phase == "Succeeded" || phase == "Failed";
        if pod.metadata.deletion_timestamp.is_some() {
            if !terminal {
                let patch = json!({"status": pod_status("Failed", false, None)});
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some();
        if phase != "Pending" || started {
            continue;
        }
        let outcome = *policy.lock().expect("policy lock");
        let status = match outcome {
            Outcome::Leave => continue,
            Outcome::Ready => pod_status("Running", true, Some(pod_ip())),
            Outcome::Unready => pod_status("Running", false, Some(pod_ip())),
            Outcome::Succeed => pod_status("Succeeded", false, Some(pod_ip())),
            Outcome::Fail => pod_status("Failed", false, Some(pod_ip())),
        };
        let _ = pods
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await;
    }
}

/// A Deployment of `replicas` pods labelled `app: <name>`, each one container of `image`.
pub fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }))
}

/// An object from JSON, for brevity in tests.
pub fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("valid object")
}
