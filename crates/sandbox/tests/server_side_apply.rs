//! Server-side apply as kube-apiserver does it (k8s.io/apimachinery's managedfields and
//! structured-merge-diff): shared ownership, conflicts with their `details.causes`, and the
//! move from kubectl's client-side apply, through kube-rs and the real kubectl.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

mod common;

async fn start() -> (Sandbox, Client, Api<ConfigMap>) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let maps = Api::namespaced(client.clone(), "default");
    (sandbox, client, maps)
}

fn configuration(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": data})
}

async fn apply(
    maps: &Api<ConfigMap>,
    manager: &str,
    data: Value,
) -> Result<ConfigMap, kube::Error> {
    maps.patch(
        "settings",
        &PatchParams::apply(manager),
        &Patch::Apply(configuration(data)),
    )
    .await
}

/// The managers of the stored object, with the operation of each.
fn managers(map: &ConfigMap) -> Vec<(String, String)> {
    map.managed_fields()
        .iter()
        .map(|entry| {
            (
                entry.manager.clone().unwrap_or_default(),
                entry.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn data(map: &ConfigMap) -> Vec<(String, String)> {
    map.data.clone().unwrap_or_default().into_iter().collect()
}

/// Two managers that apply the same value share the field: neither conflicts, and the field
/// stays while either still applies it (structured-merge-diff's shared ownership).
#[tokio::test]
async fn managers_applying_the_same_value_share_the_field() {
    let (sandbox, _client, maps) = start().await;
    apply(&maps, "first", json!({"shared": "same", "mine": "1"}))
        .await
        .expect("first applies");
    let both = apply(&maps, "second", json!({"shared": "same"}))
        .await
        .expect("the same value is no conflict");
    assert_eq!(
        managers(&both),
        [
            ("first".into(), "Apply".into()),
            ("second".into(), "Apply".into())
        ]
    );
    let first_left = apply(&maps, "first", json!({"mine": "1"}))
        .await
        .expect("first stops applying the shared field");
    assert_eq!(
        data(&first_left),
        [
            ("mine".into(), "1".into()),
            ("shared".into(), "same".into())
        ],
        "second still applies it, so it stays"
    );
    let second_left = apply(&maps, "second", json!({}))
        .await
        .expect("second stops applying it too");
    assert_eq!(data(&second_left), [("mine".to_string(), "1".to_string())]);
    sandbox.shutdown().await;
}

/// An apply that changes a field another manager owns is refused with 409 Conflict, a message
/// naming the manager and the field, and one `details.causes` entry per field (reason
/// `FieldManagerConflict`, message `conflict with "<manager>"`, field as structured-merge-diff
/// prints paths); `force` takes the field over.
#[tokio::test]
async fn a_conflict_names_each_field_and_its_manager_in_details_causes() {
    let (sandbox, _client, maps) = start().await;
    apply(&maps, "owner", json!({"a": "1", "b": "2"}))
        .await
        .expect("owner applies");
    let error = apply(&maps, "intruder", json!({"a": "x", "b": "y"}))
        .await
        .expect_err("a conflict");
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 2 conflicts: conflicts with \"owner\":\n- .data.a\n- .data.b"
    );
    let causes: Vec<(String, String, String)> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| (c.reason, c.message, c.field))
        .collect();
    assert_eq!(
        causes,
        [
            (
                "FieldManagerConflict".to_string(),
                "conflict with \"owner\"".to_string(),
                ".data.a".to_string()
            ),
            (
                "FieldManagerConflict".to_string(),
                "conflict with \"owner\"".to_string(),
                ".data.b".to_string()
            ),
        ]
    );
    let forced = maps
        .patch(
            "settings",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(configuration(json!({"a": "x"}))),
        )
        .await
        .expect("force takes the field over");
    assert_eq!(
        data(&forced),
        [("a".into(), "x".into()), ("b".into(), "2".into())]
    );
    sandbox.shutdown().await;
}

/// kubectl's success and what it printed (stdout, then stderr).
async fn kubectl(sandbox: &Sandbox, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = common::kubectl::kubectl(sandbox, args).await;
    (ok, stdout + &stderr)
}

/// kubectl documents the move from client-side to server-side apply: `kubectl apply
/// --server-side` on an object last applied client-side takes over, without conflict, the
/// fields whose value is still the client-side applied one (kube-apiserver's
/// lastAppliedManager), keeps the last-applied annotation current (lastAppliedUpdater), and
/// kubectl then moves the `kubectl-client-side-apply` manager's fields to its own (rewriting
/// managedFields with a JSON patch, which the server must take as the new ownership). A field
/// someone else changed since still conflicts, and another manager than `kubectl` gets no
/// such ease.
#[tokio::test]
async fn kubectl_moves_from_client_side_to_server_side_apply_without_conflicts() {
    let (sandbox, _client, maps) = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("settings.json");
    let manifest = manifest.to_str().expect("a UTF-8 path");
    let write = |data: Value| {
        std::fs::write(
            manifest,
            serde_json::to_vec(&configuration(data)).expect("json"),
        )
        .expect("written")
    };
    write(json!({"mode": "fast", "size": "small"}));
    let (ok, output) = kubectl(&sandbox, &["apply", "-f", manifest]).await;
    assert!(ok, "{output}");
    let client_side = maps.get("settings").await.expect("created");
    assert_eq!(
        managers(&client_side),
        [("kubectl-client-side-apply".into(), "Update".into())]
    );

    write(json!({"mode": "careful", "size": "small"}));
    let (ok, output) = kubectl(
        &sandbox,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            manifest,
        ],
    )
    .await;
    assert!(!ok, "another manager conflicts: {output}");
    assert!(
        output.contains("conflict with \"kubectl-client-side-apply\" using v1"),
        "{output}"
    );

    let (ok, output) = kubectl(&sandbox, &["apply", "--server-side", "-f", manifest]).await;
    assert!(ok, "kubectl's own move is no conflict: {output}");
    let server_side = maps.get("settings").await.expect("there");
    assert_eq!(
        data(&server_side),
        [
            ("mode".into(), "careful".into()),
            ("size".into(), "small".into())
        ]
    );
    let mut moved = managers(&server_side);
    moved.sort();
    assert_eq!(
        moved,
        [
            ("kubectl".into(), "Apply".into()),
            ("kubectl-last-applied".into(), "Apply".into())
        ],
        "kubectl moved the client-side manager's fields to its own (and the annotation to \
         kubectl-last-applied, as on a real cluster)"
    );
    let last_applied: Value = serde_json::from_str(
        server_side
            .annotations()
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .expect("the annotation stays"),
    )
    .expect("JSON");
    assert_eq!(last_applied["data"]["mode"], "careful");

    // A client-side apply again, then someone else changes a field: that field conflicts.
    write(json!({"mode": "careful", "size": "large"}));
    let (ok, output) = kubectl(&sandbox, &["apply", "-f", manifest]).await;
    assert!(ok, "{output}");
    maps.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"size": "huge"}})),
    )
    .await
    .expect("someone else changes size");
    write(json!({"mode": "careful", "size": "medium"}));
    let (ok, output) = kubectl(&sandbox, &["apply", "--server-side", "-f", manifest]).await;
    assert!(
        !ok,
        "a field changed by another manager conflicts: {output}"
    );
    assert!(output.contains(".data.size"), "{output}");
    sandbox.shutdown().await;
}
