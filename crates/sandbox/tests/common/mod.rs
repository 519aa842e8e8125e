//! Helpers shared by the sandbox integration tests.

#![allow(dead_code)]

pub mod clients;
pub mod kubectl;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::Value;
use tusk_sandbox::Sandbox;

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
