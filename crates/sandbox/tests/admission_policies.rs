//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding
//! (admissionregistration.k8s.io/v1) as kube-apiserver 1.30+ serves them: CEL over `object`,
//! `oldObject`, `request` and `params`, bindings that deny or warn, matched by resource rules
//! and namespace selectors, refusals worded as kube-apiserver's ValidatingAdmissionPolicy
//! plugin words them.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

mod common;

async fn start() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    (sandbox, client)
}

async fn create<K>(client: &Client, value: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(value).expect("valid"),
        )
        .await
        .expect("created")
}

/// A policy on ConfigMaps: no `password` key; `owner` never changes once set; `size` at most
/// the `max` of the params the binding names.
async fn install_policy(client: &Client) {
    create::<ValidatingAdmissionPolicy>(
        client,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "settings-rules"},
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]
                }]},
                "matchConditions": [{"name": "not-the-params", "expression": "object.metadata.name != 'limits'"}],
                "validations": [
                    {
                        "expression": "!has(object.data) || !('password' in object.data)",
                        "messageExpression": "'configmap ' + object.metadata.name + ' holds a password (written by ' + request.userInfo.username + ')'"
                    },
                    {
                        "expression": "request.operation != 'UPDATE' || !has(oldObject.data) || !('owner' in oldObject.data) || (has(object.data) && 'owner' in object.data && object.data.owner == oldObject.data.owner)",
                        "message": "the owner cannot change",
                        "reason": "Forbidden"
                    },
                    {"expression": "!has(object.data) || !('size' in object.data) || int(object.data.size) <= int(params.data.max)"}
                ]
            }
        }),
    )
    .await;
}

async fn bind(client: &Client, name: &str, actions: &[&str], environment: &str) {
    create::<ValidatingAdmissionPolicyBinding>(
        client,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": "settings-rules",
                "validationActions": actions,
                "paramRef": {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"},
                "matchResources": {"namespaceSelector": {"matchLabels": {"environment": environment}}}
            }
        }),
    )
    .await;
}

async fn namespace(client: &Client, name: &str, environment: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"environment": environment}}}),
            )
            .expect("namespace"),
        )
        .await
        .expect("namespace created");
}

fn config_map(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("config map")
}

/// The Status of a refused write: code, reason, message.
fn refusal(error: kube::Error) -> (u16, String, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason, status.message),
        other => panic!("an API error: {other}"),
    }
}

/// A `Deny` binding refuses, with kube-apiserver's message ("<resource> \"<name>\" is
/// forbidden: ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request:
/// <message>") and code (422 Invalid, or the validation's own reason), what a validation
/// rejects, in the namespaces its selector matches; params, oldObject, request and
/// messageExpression all count; missing params deny under `parameterNotFoundAction: Deny`.
#[tokio::test]
async fn a_deny_binding_refuses_what_the_policy_rejects() {
    let (sandbox, client) = start().await;
    install_policy(&client).await;
    bind(
        &client,
        "settings-rules-production",
        &["Deny"],
        "production",
    )
    .await;
    namespace(&client, "shop", "production").await;
    namespace(&client, "playground", "development").await;
    let shop: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let playground: Api<ConfigMap> = Api::namespaced(client.clone(), "playground");
    let defaults: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let (code, reason, message) = refusal(
        shop.create(
            &PostParams::default(),
            &config_map("plain", json!({"size": "1"})),
        )
        .await
        .expect_err("no params yet"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "configmaps \"plain\" is forbidden: ValidatingAdmissionPolicy 'settings-rules' with binding 'settings-rules-production' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
    );
    defaults
        .create(
            &PostParams::default(),
            &config_map("limits", json!({"max": "10"})),
        )
        .await
        .expect("the params (the policy's matchCondition leaves them alone)");

    let (code, reason, message) = refusal(
        shop.create(
            &PostParams::default(),
            &config_map("leaky", json!({"password": "hunter2"})),
        )
        .await
        .expect_err("a password"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "configmaps \"leaky\" is forbidden: ValidatingAdmissionPolicy 'settings-rules' with binding 'settings-rules-production' denied request: configmap leaky holds a password (written by kubernetes-admin)"
    );
    playground
        .create(
            &PostParams::default(),
            &config_map("leaky", json!({"password": "hunter2"})),
        )
        .await
        .expect("the binding's namespace selector leaves development alone");

    let (_, _, message) = refusal(
        shop.create(
            &PostParams::default(),
            &config_map("big", json!({"size": "11"})),
        )
        .await
        .expect_err("over the params' max"),
    );
    assert!(
        message.ends_with("denied request: failed expression: !has(object.data) || !('size' in object.data) || int(object.data.size) <= int(params.data.max)"),
        "{message}"
    );
    shop.create(
        &PostParams::default(),
        &config_map("owned", json!({"owner": "alice", "size": "3"})),
    )
    .await
    .expect("within the rules");
    let (code, reason, message) = refusal(
        shop.patch(
            "owned",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"owner": "mallory"}})),
        )
        .await
        .expect_err("the owner changes"),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{message}");
    assert!(
        message.ends_with("denied request: the owner cannot change"),
        "{message}"
    );
    shop.patch(
        "owned",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"size": "4"}})),
    )
    .await
    .expect("other changes pass");
    shop.delete("owned", &DeleteParams::default())
        .await
        .expect("the policy does not match DELETE");
    sandbox.shutdown().await;
}

/// A `Warn` binding lets the write through with a Warning header kubectl prints:
/// "Validation failed for ValidatingAdmissionPolicy '<policy>' with binding '<binding>':
/// <message>".
#[tokio::test]
async fn a_warn_binding_lets_the_write_through_with_a_warning() {
    let (sandbox, client) = start().await;
    install_policy(&client).await;
    bind(
        &client,
        "settings-rules-development",
        &["Warn", "Audit"],
        "development",
    )
    .await;
    namespace(&client, "playground", "development").await;
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &config_map("limits", json!({"max": "10"})),
        )
        .await
        .expect("params");
    let (ok, _, stderr) = common::kubectl::kubectl(
        &sandbox,
        &[
            "create",
            "configmap",
            "leaky",
            "--namespace=playground",
            "--from-literal=password=hunter2",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'settings-rules' with binding 'settings-rules-development': configmap leaky holds a password (written by kubernetes-admin)"),
        "{stderr}"
    );
    let stored = Api::<ConfigMap>::namespaced(client.clone(), "playground")
        .get("leaky")
        .await
        .expect("stored");
    assert_eq!(stored.name_any(), "leaky");
    sandbox.shutdown().await;
}

/// kube-apiserver refuses a policy whose expression does not compile, and a binding without
/// validationActions, with 422 and the field.
#[tokio::test]
async fn invalid_policies_and_bindings_are_refused() {
    let (sandbox, client) = start().await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let error = policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "broken"},
                "spec": {
                    "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
                    "validations": [{"expression": "object.data.(("}]
                }
            }))
            .expect("policy"),
        )
        .await
        .expect_err("does not compile");
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}")
    };
    assert_eq!(status.code, 422);
    let fields: Vec<String> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, ["spec.validations[0].expression"]);

    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let error = bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "b"}, "spec": {"policyName": "p"}}),
            )
            .expect("binding"),
        )
        .await
        .expect_err("no validationActions");
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io \"b\" is invalid: spec.validationActions: Required value"
    );
    sandbox.shutdown().await;
}

/// kubectl sends a policy and its binding as protobuf; they are stored as sent and enforced.
#[tokio::test]
async fn kubectl_applies_a_policy_and_its_binding() {
    let (sandbox, client) = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("policy.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: labelled-maps
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "has(object.metadata.labels) && 'team' in object.metadata.labels"
    message: "every ConfigMap names its team"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: labelled-maps
spec:
  policyName: labelled-maps
  validationActions: [Deny]
"#,
    )
    .expect("written");
    let (ok, stdout, stderr) = common::kubectl::kubectl(
        &sandbox,
        &["apply", "-f", manifest.to_str().expect("a UTF-8 path")],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "validatingadmissionpolicy.admissionregistration.k8s.io/labelled-maps created"
        ),
        "{stdout}"
    );
    let policy = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get("labelled-maps")
        .await
        .expect("stored");
    let rules = policy
        .spec
        .and_then(|spec| spec.match_constraints)
        .and_then(|constraints| constraints.resource_rules)
        .unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources, Some(vec!["configmaps".to_string()]));
    let (ok, _, stderr) = common::kubectl::kubectl(
        &sandbox,
        &["create", "configmap", "anonymous", "--from-literal=a=1"],
    )
    .await;
    assert!(!ok, "refused");
    assert!(
        stderr.contains("ValidatingAdmissionPolicy 'labelled-maps' with binding 'labelled-maps' denied request: every ConfigMap names its team"),
        "{stderr}"
    );
    sandbox.shutdown().await;
}
