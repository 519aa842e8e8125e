//! The storage rules of kube-apiserver, through the real kubectl: the sandbox serves a default
//! StorageClass that allows expansion, a claim created without a class gets the default one
//! (the DefaultStorageClass admission plugin), and a claim's request grows only when it is
//! bound and its class allows expansion (the PersistentVolumeClaimResize admission plugin, with
//! its messages).

mod common;

use common::kubectl::{kubectl, kubectl_ok, kubectl_with_input};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

/// What the resize admission plugin says of a class that does not allow expansion.
const NOT_RESIZABLE: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";

fn claim(name: &str, class: Option<&str>) -> Value {
    let mut claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    claim
}

async fn apply(sandbox: &Sandbox, object: &Value) {
    let (code, _, stderr) = kubectl_with_input(
        sandbox,
        object.to_string().as_bytes(),
        &["apply", "-f", "-"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
}

async fn class_of(sandbox: &Sandbox, claim: &str) -> String {
    kubectl_ok(
        sandbox,
        &[
            "get",
            "pvc",
            claim,
            "-o",
            "jsonpath={.spec.storageClassName}",
        ],
    )
    .await
}

/// Marks a claim bound, as a provisioner does (this sandbox runs no runtime).
async fn bind(claims: &Api<PersistentVolumeClaim>, name: &str) {
    claims
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})),
        )
        .await
        .expect("bound");
}

/// `kubectl patch` growing a claim to 2Gi: whether it succeeded, and kubectl's error output.
async fn grow(sandbox: &Sandbox, name: &str) -> (bool, String) {
    let (ok, _, stderr) = kubectl(
        sandbox,
        &[
            "patch",
            "pvc",
            name,
            "--type=merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ],
    )
    .await;
    (ok, stderr.trim().to_owned())
}

#[tokio::test]
async fn claims_get_the_default_class_and_grow_only_where_their_class_allows() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client);

    // The sandbox's own class: default, and its volumes may grow.
    let class: Value = serde_json::from_str(
        &kubectl_ok(&sandbox, &["get", "storageclass", "standard", "-o", "json"]).await,
    )
    .expect("JSON");
    assert_eq!(
        class.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class"),
        Some(&json!("true")),
        "{class}"
    );
    assert_eq!(class["allowVolumeExpansion"], json!(true), "{class}");

    // A claim without a class gets the default one; an empty class asks for none and keeps it.
    apply(&sandbox, &claim("plain", None)).await;
    assert_eq!(class_of(&sandbox, "plain").await, "standard");
    apply(&sandbox, &claim("classless", Some(""))).await;
    assert_eq!(class_of(&sandbox, "classless").await, "");

    // A class whose volumes cannot grow.
    apply(
        &sandbox,
        &json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fixed"},
            "provisioner": "example.com/fixed",
            "allowVolumeExpansion": false,
        }),
    )
    .await;
    apply(&sandbox, &claim("pinned", Some("fixed"))).await;

    // Not bound yet: nothing may grow, whatever the class. kube-apiserver's validation answers
    // first, as for an unbound claim.
    let (grown, message) = grow(&sandbox, "plain").await;
    assert!(!grown, "an unbound claim grew");
    assert!(
        message.contains("spec is immutable after creation"),
        "{message}"
    );

    for name in ["plain", "classless", "pinned"] {
        bind(&claims, name).await;
    }
    let (grown, message) = grow(&sandbox, "plain").await;
    assert!(
        grown,
        "a bound claim of the default class did not grow: {message}"
    );
    for refused in ["pinned", "classless"] {
        let (grown, message) = grow(&sandbox, refused).await;
        assert!(!grown, "{refused} grew");
        assert_eq!(
            message,
            format!(
                "Error from server (Forbidden): persistentvolumeclaims \"{refused}\" is forbidden: {NOT_RESIZABLE}"
            )
        );
    }
    // A refused growth leaves the claim as it was.
    assert_eq!(
        kubectl_ok(
            &sandbox,
            &[
                "get",
                "pvc",
                "pinned",
                "-o",
                "jsonpath={.spec.resources.requests.storage}"
            ],
        )
        .await,
        "1Gi"
    );

    // The class allows expansion once its owner says so.
    kubectl_ok(
        &sandbox,
        &[
            "patch",
            "storageclass",
            "fixed",
            "--type=merge",
            "-p",
            r#"{"allowVolumeExpansion":true}"#,
        ],
    )
    .await;
    let (grown, message) = grow(&sandbox, "pinned").await;
    assert!(grown, "{message}");

    // Of two default classes, the newer is chosen.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    apply(
        &sandbox,
        &json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "newer", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "example.com/newer",
        }),
    )
    .await;
    apply(&sandbox, &claim("later", None)).await;
    assert_eq!(class_of(&sandbox, "later").await, "newer");
    sandbox.shutdown().await;
}
