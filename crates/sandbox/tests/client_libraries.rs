//! The official Python client (`kubernetes` from PyPI, which scripts/test installs into
//! target/test-tools/python) against the sandbox, used as its users write it.

mod common;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tusk_sandbox::Sandbox;

use common::clients::python;

/// The Python client's writes of built-in kinds are decoded strictly when it asks
/// (`fieldValidation=Strict`), and validated as kube-apiserver validates them.
#[tokio::test]
async fn python_client_sees_strict_decoding_and_validation_of_built_in_kinds() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = python(
        &sandbox,
        r#"
import json
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError
# The typed API refuses unknown fields on the client; the dynamic one sends what it is given.
deployments = DynamicClient(client.ApiClient()).resources.get(api_version="apps/v1", kind="Deployment")
def deployment(name, labels, extra):
    spec = {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    spec.update(extra)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}
def create(body, validation):
    return deployments.create(body=body, namespace="default", query_params=[("fieldValidation", validation)])
for body in [deployment("typo", {"app": "web"}, {"replica": 3}), deployment("mismatch", {"app": "db"}, {})]:
    try:
        create(body, "Strict")
        print("created")
    except DynamicApiError as error:
        status = json.loads(error.body)
        print(error.status, status["reason"], status["message"])
create(deployment("lenient", {"app": "web"}, {"replica": 3}), "Ignore")
print(deployments.get(name="lenient", namespace="default").spec.replicas)
"#,
    )
    .await;
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(
        lines,
        [
            "400 BadRequest Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\"",
            "422 Invalid Deployment.apps \"mismatch\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`",
            "1",
        ]
    );
    sandbox.shutdown().await;
}

/// The Python client's models leave `apiVersion` and `kind` out unless the caller sets them
/// (its leader election creates its Lease so); kube-apiserver decodes a built-in kind's body
/// with the endpoint's kind and version as defaults, while a custom kind's still needs its
/// `kind`.
#[tokio::test]
async fn python_client_creates_and_replaces_objects_without_api_version_or_kind() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    python(
        &sandbox,
        r#"
core = client.CoreV1Api()
core.create_namespaced_config_map("default", client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="settings"), data={"mode": "fast"}))
current = core.read_namespaced_config_map("settings", "default")
core.replace_namespaced_config_map("settings", "default", client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="settings", resource_version=current.metadata.resource_version),
    data={"mode": "careful"}))
client.CoordinationV1Api().create_namespaced_lease("default", client.V1Lease(
    metadata=client.V1ObjectMeta(name="leader"),
    spec=client.V1LeaseSpec(holder_identity="replica-1", lease_duration_seconds=15)))
"#,
    )
    .await;
    let kube = sandbox.client().await.expect("client");
    let map = Api::<ConfigMap>::namespaced(kube.clone(), "default")
        .get("settings")
        .await
        .expect("the ConfigMap exists");
    assert_eq!(
        map.data.unwrap_or_default().get("mode").map(String::as_str),
        Some("careful")
    );
    let lease = Api::<Lease>::namespaced(kube.clone(), "default")
        .get("leader")
        .await
        .expect("the Lease exists");
    let spec = lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-1"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    let stored = kube
        .request::<serde_json::Value>(
            http::Request::get("/apis/coordination.k8s.io/v1/namespaces/default/leases/leader")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("read raw");
    assert_eq!(stored["kind"], "Lease");
    assert_eq!(stored["apiVersion"], "coordination.k8s.io/v1");

    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let crds: Api<kube::api::DynamicObject> = Api::all_with(
        kube,
        &kube::api::ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
    );
    crds.create(
        &Default::default(),
        &serde_json::from_value(crd).expect("a CRD"),
    )
    .await
    .expect("CRD created");
    // The CRD's endpoint serves once the CRD is established: until then, 404.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let answer = python(
            &sandbox,
            r#"
from kubernetes.client.rest import ApiException
try:
    client.CustomObjectsApi().create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", {"metadata": {"name": "w"}})
    print("created")
except ApiException as error:
    print(error.status)
"#,
        )
        .await;
        if answer.trim() != "404" || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        refused.trim(),
        "400",
        "a custom kind's body without kind is refused"
    );
}

/// The Python client's watch, list and apply against the sandbox's resourceVersion semantics
/// as kube-apiserver's: a watch resumed from a compacted resourceVersion raises the 410 its
/// ERROR event carries; a bookmark arrives before the watch's timeout; a paginated list is one
/// snapshot; invalid `resourceVersionMatch` combinations are refused with 422.
#[tokio::test]
async fn python_client_sees_expired_watches_bookmarks_and_consistent_pages() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = python(
        &sandbox,
        r#"
import json, time
from kubernetes import watch
from kubernetes.client.rest import ApiException
core = client.CoreV1Api()
def create(name):
    return core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name), data={"key": "v1"})).metadata.resource_version
first = create("c1")
for name in ["c2", "c3", "c4"]:
    last = create(name)
page = core.list_namespaced_config_map("default", limit=2)
print([m.metadata.name for m in page.items])
core.delete_namespaced_config_map("c3", "default")
create("c25")
rest = core.list_namespaced_config_map("default", limit=10, _continue=page.metadata._continue)
# The namespace's kube-root-ca.crt sorts after the test's maps.
print([m.metadata.name for m in rest.items if m.metadata.name != "kube-root-ca.crt"], rest.metadata.resource_version == page.metadata.resource_version)
started = time.monotonic()
for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
        resource_version=last, allow_watch_bookmarks=True, timeout_seconds=4):
    # Changes replay at once; the bookmark comes about two seconds before the timeout.
    print(event["type"], round(time.monotonic() - started))
for query in [{"resource_version_match": "Exact"}, {"resource_version": "0", "resource_version_match": "Exact"}]:
    try:
        core.list_namespaced_config_map("default", **query)
    except ApiException as error:
        print(error.status, json.loads(error.body)["message"])
print(first)
"#,
    )
    .await;
    let lines: Vec<&str> = answer.lines().collect();
    let first = lines.last().expect("the first resourceVersion").to_string();
    assert_eq!(
        lines[..lines.len() - 1],
        [
            "['c1', 'c2']",
            "['c3', 'c4'] True",
            "DELETED 0",
            "ADDED 0",
            "BOOKMARK 2",
            "422 ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            "422 ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ]
    );
    sandbox.compact_watch_history();
    let expired = python(
        &sandbox,
        &format!(
            r#"
from kubernetes import watch
from kubernetes.client.rest import ApiException
try:
    for event in watch.Watch().stream(client.CoreV1Api().list_namespaced_config_map, "default",
            resource_version="{first}", timeout_seconds=5):
        print(event["type"])
except ApiException as error:
    print(error.status, error.reason)
"#
        ),
    )
    .await;
    assert_eq!(
        expired.trim(),
        format!(
            "410 Expired: too old resource version: {first} ({})",
            sandbox.resource_version()
        )
    );
    sandbox.shutdown().await;
}

/// The Python client's server-side apply: a second manager applying the same value shares
/// the field; one applying another value gets 409 with a `FieldManagerConflict` cause naming
/// the field and its manager.
#[tokio::test]
async fn python_client_sees_shared_ownership_and_apply_conflicts() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = python(
        &sandbox,
        r#"
import json
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError
maps = DynamicClient(client.ApiClient()).resources.get(api_version="v1", kind="ConfigMap")
def settings(value):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": value}}
maps.server_side_apply(body=settings("fast"), namespace="default", field_manager="owner")
shared = maps.server_side_apply(body=settings("fast"), namespace="default", field_manager="second")
print(sorted((m.manager, m.operation) for m in shared.metadata.managedFields))
try:
    maps.server_side_apply(body=settings("slow"), namespace="default", field_manager="third")
except DynamicApiError as error:
    status = json.loads(error.body)
    print(error.status, sorted((c["reason"], c["message"], c["field"]) for c in status["details"]["causes"]))
"#,
    )
    .await;
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(
        lines,
        [
            "[('owner', 'Apply'), ('second', 'Apply')]",
            "409 [('FieldManagerConflict', 'conflict with \"owner\"', '.data.mode'), ('FieldManagerConflict', 'conflict with \"second\"', '.data.mode')]",
        ]
    );
    sandbox.shutdown().await;
}

/// The Python client installs a ValidatingAdmissionPolicy and its binding, and a write the
/// policy rejects raises the 422 kube-apiserver answers, with its message.
#[tokio::test]
async fn python_client_sees_admission_policies_deny() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = python(
        &sandbox,
        r#"
import json
from kubernetes.client.rest import ApiException
admission = client.AdmissionregistrationV1Api()
admission.create_validating_admission_policy(client.V1ValidatingAdmissionPolicy(
    metadata=client.V1ObjectMeta(name="small-maps"),
    spec=client.V1ValidatingAdmissionPolicySpec(
        match_constraints=client.V1MatchResources(resource_rules=[client.V1NamedRuleWithOperations(
            api_groups=[""], api_versions=["v1"], operations=["CREATE", "UPDATE"], resources=["configmaps"])]),
        validations=[client.V1Validation(expression="size(object.data) <= 2", message="at most two keys")])))
admission.create_validating_admission_policy_binding(client.V1ValidatingAdmissionPolicyBinding(
    metadata=client.V1ObjectMeta(name="small-maps-everywhere"),
    spec=client.V1ValidatingAdmissionPolicyBindingSpec(policy_name="small-maps", validation_actions=["Deny"])))
core = client.CoreV1Api()
core.create_namespaced_config_map("default", client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="small"), data={"a": "1"}))
try:
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="large"), data={"a": "1", "b": "2", "c": "3"}))
    print("created")
except ApiException as error:
    status = json.loads(error.body)
    print(error.status, status["reason"], status["message"])
"#,
    )
    .await;
    assert_eq!(
        answer.trim(),
        "422 Invalid configmaps \"large\" is forbidden: ValidatingAdmissionPolicy 'small-maps' with binding 'small-maps-everywhere' denied request: at most two keys"
    );
    sandbox.shutdown().await;
}

/// The Python client decodes a delete's answer as the OpenAPI document types it: a V1Service
/// and a V1Pod, since kube-apiserver returns the deleted object for those kinds
/// (`ReturnDeletedObject`), and a Status for a ConfigMap.
#[tokio::test]
async fn python_client_reads_deleted_services_and_pods() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let answer = python(
        &sandbox,
        r#"
core = client.CoreV1Api()
core.create_namespaced_service("default", client.V1Service(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80)])))
core.create_namespaced_pod("default", client.V1Pod(
    metadata=client.V1ObjectMeta(name="solo"),
    spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="nginx")])))
core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings")))
service = core.delete_namespaced_service("web", "default")
print(type(service).__name__, service.metadata.name, service.spec.ports[0].port)
pod = core.delete_namespaced_pod("solo", "default", grace_period_seconds=0)
print(type(pod).__name__, pod.metadata.name)
status = core.delete_namespaced_config_map("settings", "default")
print(status["kind"], status["details"]["name"])
"#,
    )
    .await;
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(
        lines,
        ["V1Service web 80", "V1Pod solo", "Status settings"],
        "{answer}"
    );
    sandbox.shutdown().await;
}
