//! `kubectl explain` for the built-in kinds and custom resources, from the sandbox's OpenAPI v3
//! documents (kube-apiserver publishes every served kind in `/openapi/v3/<group-version>`,
//! found by its `x-kubernetes-group-version-kind`), and what else kubectl reads there: whether
//! the server validates fields, and how `kubectl apply` patches a built-in kind.

mod common;

use common::kubectl::{kubectl, kubectl_ok};
use common::sandbox_with_crds;
use tusk_sandbox::Sandbox;

/// `kubectl explain pods.spec.containers` prints the field's type, kube-apiserver's description
/// of it and the fields of a Container.
#[tokio::test]
async fn explain_describes_a_builtin_field_and_its_fields() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let out = kubectl_ok(&sandbox, &["explain", "pods.spec.containers"]).await;
    for expected in [
        "KIND:       Pod",
        "VERSION:    v1",
        "FIELD: containers <[]Container>",
        "List of containers belonging to the pod.",
        "image\t<string>",
        "livenessProbe\t<Probe>",
        "name\t<string> -required-",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}

/// `kubectl explain deployment.spec --recursive` walks every `$ref` down to the containers'
/// fields, for a kind of a named group.
#[tokio::test]
async fn explain_recursive_follows_references_in_a_group() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let out = kubectl_ok(&sandbox, &["explain", "deployment.spec", "--recursive"]).await;
    for expected in [
        "GROUP:      apps",
        "KIND:       Deployment",
        "FIELD: spec <DeploymentSpec>",
        "strategy\t<DeploymentStrategy>",
        "template\t<PodTemplateSpec> -required-",
        "containers\t<[]Container> -required-",
        "readinessProbe\t<Probe>",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    // Every other group's kinds are explained too, by short name and resource name alike.
    for (resource, kind) in [
        ("cj.spec.jobTemplate", "KIND:       CronJob"),
        ("ingresses.spec.rules", "KIND:       Ingress"),
        ("hpa.spec.metrics", "KIND:       HorizontalPodAutoscaler"),
        ("clusterroles.rules", "KIND:       ClusterRole"),
        ("nodes.spec.taints", "KIND:       Node"),
        (
            "selfsubjectaccessreviews.spec",
            "KIND:       SelfSubjectAccessReview",
        ),
        ("crd.spec.versions", "KIND:       CustomResourceDefinition"),
    ] {
        let out = kubectl_ok(&sandbox, &["explain", resource]).await;
        assert!(out.contains(kind), "{kind:?} missing from:\n{out}");
    }
    let (ok, _, stderr) = kubectl(&sandbox, &["explain", "pods.spec.nonsense"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("field \"nonsense\" does not exist"),
        "{stderr}"
    );
}

/// Custom resources keep being explained from their CRD's schema, next to the built-in kinds.
#[tokio::test]
async fn explain_still_describes_custom_resources() {
    let (sandbox, _client) = sandbox_with_crds().await;
    let out = kubectl_ok(&sandbox, &["explain", "pgc.spec"]).await;
    assert!(out.contains("KIND:       PostgresCluster"), "{out}");
    assert!(out.contains("memorySize"), "{out}");
    let out = kubectl_ok(&sandbox, &["explain", "pgc.metadata.labels"]).await;
    assert!(out.contains("FIELD: labels <map[string]string>"), "{out}");
}

/// With the built-in kinds in `/openapi/v3`, kubectl still leaves field validation to the
/// server (the kinds' PATCH operations list `fieldValidation`), so `--validate=strict` gets
/// kube-apiserver's strict decoding error and nothing is created.
#[tokio::test]
async fn strict_validation_of_builtins_stays_on_the_server() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let directory = tempfile::tempdir().expect("temp dir");
    let path = manifest(
        &directory,
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndata:\n  a: b\ncolour: blue\n",
    );
    let (ok, _, stderr) = kubectl(
        &sandbox,
        &["apply", "--validate=strict", "-v=6", "-f", &path],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("fieldValidation=Strict"), "{stderr}");
    assert!(
        stderr.contains(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"colour\""
        ),
        "{stderr}"
    );
    let (found, _, _) = kubectl(&sandbox, &["get", "configmap", "typo"]).await;
    assert!(!found, "nothing is created");
}

/// `kubectl apply` of a built-in kind merges lists by their keys, as against kube-apiserver:
/// a container dropped from the manifest is deleted from the Deployment. (Had the documents
/// offered strategic merge patches without the Go types' merge keys, kubectl would send the
/// list without its `$setElementOrder` and deletions, and the container would stay.)
#[tokio::test]
async fn apply_merges_builtin_lists_by_their_keys() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let deployment = |containers: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n{containers}"
        )
    };
    let directory = tempfile::tempdir().expect("temp dir");
    let both = manifest(
        &directory,
        "both.yaml",
        &deployment("      - {name: a, image: busybox}\n      - {name: b, image: busybox}\n"),
    );
    kubectl_ok(&sandbox, &["apply", "-f", &both]).await;
    let one = manifest(
        &directory,
        "one.yaml",
        &deployment("      - {name: a, image: busybox}\n"),
    );
    let (ok, _, stderr) = kubectl(&sandbox, &["apply", "-f", &one]).await;
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let names = kubectl_ok(
        &sandbox,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}",
        ],
    )
    .await;
    assert_eq!(names, "a");
}

/// Writes a manifest into `directory` and returns its path.
fn manifest(directory: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = directory.path().join(name);
    std::fs::write(&path, text).expect("manifest written");
    path.display().to_string()
}
