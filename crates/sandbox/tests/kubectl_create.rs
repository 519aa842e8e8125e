//! `kubectl create <kind>` against the sandbox. kubectl (1.32 and later) sends these bodies as
//! `application/vnd.kubernetes.protobuf`, as client-go does for every built-in kind, and
//! kube-apiserver stores what they say.

mod common;

use common::kubectl::kubectl_as;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use tusk_sandbox::Sandbox;

async fn create(sandbox: &Sandbox, args: &[&str]) -> String {
    let args = [&["create"], args].concat();
    let (ok, stdout, stderr) = kubectl_as(sandbox, None, &args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

#[tokio::test]
async fn kubectl_create_makes_each_built_in_kind_with_what_it_was_given() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let dir = tempfile::tempdir().expect("temp dir");

    let out = create(&sandbox, &["namespace", "shop"]).await;
    assert_eq!(out.trim(), "namespace/shop created");
    let namespace = Api::<Namespace>::all(client.clone())
        .get("shop")
        .await
        .expect("namespace");
    assert!(namespace.metadata.uid.is_some(), "the server set the uid");
    assert!(namespace.metadata.creation_timestamp.is_some());

    // Bytes that are not UTF-8 survive: protobuf carries them raw, JSON as base64.
    let key = dir.path().join("key.bin");
    let key_bytes = [0_u8, 1, 2, 0xfe, 0xff, b'\n'];
    std::fs::write(&key, key_bytes).expect("written");
    let from_file = format!("--from-file=tls.key={}", key.display());
    create(
        &sandbox,
        &[
            "secret",
            "generic",
            "db",
            "-n",
            "shop",
            "--from-literal=password=s3cr3t pass",
            &from_file,
        ],
    )
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), "shop")
        .get("db")
        .await
        .expect("secret");
    let data = secret.data.expect("data");
    assert_eq!(data["password"].0, b"s3cr3t pass");
    assert_eq!(data["tls.key"].0, key_bytes);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    create(
        &sandbox,
        &[
            "configmap",
            "settings",
            "-n",
            "shop",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ],
    )
    .await;
    let map = Api::<ConfigMap>::namespaced(client.clone(), "shop")
        .get("settings")
        .await
        .expect("configmap");
    let data = map.data.expect("data");
    assert_eq!(data["mode"], "fast");
    assert_eq!(data["empty"], "", "an empty value is kept in a map");

    create(
        &sandbox,
        &[
            "deployment",
            "web",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=3",
            "--port=8080",
        ],
    )
    .await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .expect("deployment");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .and_then(|labels| labels.get("app"))
            .map(String::as_str),
        Some("web")
    );
    let container = &spec.template.spec.expect("pod spec").containers[0];
    assert_eq!(container.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(
        container.ports.as_ref().expect("ports")[0].container_port,
        8080
    );

    // Zero replicas is a value, not an absence: the Deployment must not default it to one.
    create(
        &sandbox,
        &[
            "deployment",
            "idle",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=0",
        ],
    )
    .await;
    let idle = Api::<Deployment>::namespaced(client.clone(), "shop")
        .get("idle")
        .await
        .expect("deployment");
    assert_eq!(idle.spec.replicas, Some(0));

    create(
        &sandbox,
        &[
            "job",
            "once",
            "-n",
            "shop",
            "--image=busybox:1.36",
            "--",
            "sh",
            "-c",
            "echo hi",
        ],
    )
    .await;
    let job = Api::<Job>::namespaced(client.clone(), "shop")
        .get("once")
        .await
        .expect("job");
    let pod = job.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.containers[0].command.as_deref(),
        Some(["sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()].as_slice())
    );

    create(&sandbox, &["serviceaccount", "robot", "-n", "shop"]).await;
    Api::<ServiceAccount>::namespaced(client.clone(), "shop")
        .get("robot")
        .await
        .expect("service account");

    create(
        &sandbox,
        &[
            "role",
            "reader",
            "-n",
            "shop",
            "--verb=get,list",
            "--resource=configmaps,pods",
        ],
    )
    .await;
    let role = Api::<Role>::namespaced(client.clone(), "shop")
        .get("reader")
        .await
        .expect("role");
    let rule = &role.rules.expect("rules")[0];
    assert_eq!(rule.verbs, ["get", "list"]);
    assert_eq!(
        rule.resources.as_deref(),
        Some(["configmaps".to_owned(), "pods".to_owned()].as_slice())
    );
    assert_eq!(
        rule.api_groups.as_deref(),
        Some([String::new()].as_slice()),
        "the core group is \"\""
    );

    create(
        &sandbox,
        &[
            "rolebinding",
            "read",
            "-n",
            "shop",
            "--role=reader",
            "--serviceaccount=shop:robot",
        ],
    )
    .await;
    let binding = Api::<RoleBinding>::namespaced(client.clone(), "shop")
        .get("read")
        .await
        .expect("binding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "reader");
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "robot")
    );
    assert_eq!(subject.namespace.as_deref(), Some("shop"));

    create(
        &sandbox,
        &["service", "clusterip", "web", "-n", "shop", "--tcp=80:8080"],
    )
    .await;
    let service = Api::<Service>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .expect("service");
    let port = &service.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
    assert_eq!(port.protocol.as_deref(), Some("TCP"));

    // A token for the service account acts as it: the binding lets it read configmaps in
    // shop, and nothing lets it read secrets.
    let token = create(
        &sandbox,
        &["token", "robot", "-n", "shop", "--duration=10m"],
    )
    .await;
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (ok, out, err) = kubectl_as(
        &sandbox,
        Some(token),
        &["get", "configmap", "settings", "-n", "shop", "-o", "name"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap/settings");
    let (ok, _, err) = kubectl_as(
        &sandbox,
        Some(token),
        &["get", "secret", "db", "-n", "shop"],
    )
    .await;
    assert!(!ok && err.contains("forbidden"), "{err}");

    // Creating one again is refused as kube-apiserver refuses it.
    let (ok, _, err) = kubectl_as(&sandbox, None, &["create", "namespace", "shop"]).await;
    assert!(!ok);
    assert!(
        err.contains("AlreadyExists") && err.contains("namespaces \"shop\" already exists"),
        "{err}"
    );
    sandbox.shutdown().await;
}
