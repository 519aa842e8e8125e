//! Helpers shared by the sandbox integration tests.

#![allow(dead_code)]

pub mod clients;
pub mod kubectl;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, LogParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::Value;
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

/// A sandbox with tusk's CRDs installed and a client for it.
pub async fn sandbox_with_crds() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    install_crds(&client).await;
    (sandbox, client)
}

pub async fn install_crds(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in tusk_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD accepted");
    }
}

/// A sandbox whose local runtime runs pods, and the directory it keeps them in (which must
/// outlive the sandbox).
pub async fn sandbox_with_runtime() -> (Sandbox, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("runtime dir");
    let sandbox = Sandbox::builder()
        .runtime(RuntimeOptions::new(root.path()))
        .start()
        .await
        .expect("sandbox starts");
    (sandbox, root)
}

/// Creates the pod `pod` (JSON) in `default` and waits, up to a minute, until its log shows
/// `ready`; returns the pod as it is then.
pub async fn run_pod(client: &Client, pod: Value, ready: &str) -> Pod {
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    poll_until(&format!("pod {name} to log {ready:?}"), 60, || {
        let pods = &pods;
        let name = &name;
        async move {
            let log = pods
                .logs(name, &LogParams::default())
                .await
                .unwrap_or_default();
            log.contains(ready).then_some(())
        }
    })
    .await;
    pods.get(&name).await.expect("pod")
}

/// A kube client for the sandbox that presents `token` instead of the admin's.
pub async fn client_with_token(sandbox: &Sandbox, token: &str) -> Client {
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig");
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.to_string().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    Client::try_from(config).expect("client")
}

/// The Api of a tusk kind in `default`.
pub fn tusk_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("postgres.tusk.dev", "v1", kind);
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// The API error's code, reason and causes' fields, or panics if it is not an API error.
pub fn api_error(error: Error) -> (u16, String, Vec<String>) {
    match error {
        Error::Api(status) => {
            let fields = status
                .details
                .as_ref()
                .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
                .unwrap_or_default();
            (status.code, status.reason.clone(), fields)
        }
        other => panic!("expected an API error, got {other}"),
    }
}

pub fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("valid object")
}

/// Polls `check` every 50 ms until it gives a value, and returns that value; fails the test
/// after `seconds`, naming `what` it waited for.
pub async fn poll_until<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out after {seconds}s waiting for: {what}");
}

/// Polls `check` every 50 ms until it holds; fails the test after `seconds`, naming `what` it
/// waited for.
pub async fn eventually<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(what, seconds, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}
