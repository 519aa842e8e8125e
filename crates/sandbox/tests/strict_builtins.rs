//! Built-in kinds decoded and validated as kube-apiserver does: duplicate fields under each
//! `fieldValidation`, `metadata.managedFields` in an apply body, and the 422s of the fields
//! tusk's objects set. (kubectl's unknown fields are in kubectl.rs, the Python client's in
//! client_libraries.rs.)

mod common;

use common::kubectl::{kubectl_ok, kubectl_with_input};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::client::Body;
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

/// A raw request's answer: status code, `Warning` header texts, JSON body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

/// Sends `body` to `uri` with `fieldValidation=<validation>`.
async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    validation: &str,
    body: &str,
) -> Answer {
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{uri}?fieldValidation={validation}"))
        .header("content-type", content_type)
        .body(Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let response = client.send(request).await.expect("answered");
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    Answer {
        code,
        warnings,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn deployment(name: &str, selector: Value, labels: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    })
}

/// A key given twice in a JSON body is a strict decoding error too, named by its path; under
/// Warn it is a warning and the last value wins, under Ignore nothing is said.
#[tokio::test]
async fn duplicate_fields_are_refused_under_strict_and_reported_under_warn() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let body = r#"{"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "twice", "labels": {"a": "1"}, "labels": {"a": "2"}},
        "data": {"k": "v"}, "colour": "blue"}"#;
    let uri = "/api/v1/namespaces/default/configmaps";

    let strict = send(&client, "POST", uri, "Strict", body).await;
    assert_eq!(strict.code, 400, "{}", strict.body);
    assert_eq!(strict.body["reason"], "BadRequest");
    assert_eq!(
        strict.body["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: duplicate field \"metadata.labels\", unknown field \"colour\""
    );

    let warned = send(&client, "POST", uri, "Warn", body).await;
    assert_eq!(warned.code, 201, "{}", warned.body);
    assert_eq!(
        warned.warnings,
        [
            r#"299 - "duplicate field \"metadata.labels\"""#,
            r#"299 - "unknown field \"colour\"""#
        ]
    );
    assert_eq!(warned.body["metadata"]["labels"]["a"], "2");
    assert!(warned.body.get("colour").is_none());

    let object = format!("{uri}/twice");
    let patch = r#"{"data": {"k": "w"}, "data": {"k": "x"}}"#;
    let patched = send(&client, "PATCH", &object, "Strict", patch).await;
    assert_eq!(patched.code, 400, "{}", patched.body);
    assert!(
        patched.body["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("strict decoding error: duplicate field \"data\""),
        "{}",
        patched.body
    );

    let ignored = send(&client, "PATCH", &object, "Ignore", patch).await;
    assert_eq!(ignored.code, 200, "{}", ignored.body);
    assert!(ignored.warnings.is_empty());
    assert_eq!(ignored.body["data"]["k"], "x");
    sandbox.shutdown().await;
}

/// kube-apiserver's apply refuses a body carrying `metadata.managedFields`.
#[tokio::test]
async fn an_apply_body_with_managed_fields_is_refused() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(client);
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned", "managedFields": [
            {"manager": "me", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}
        ]},
        "data": {"k": "v"},
    });
    let error = maps
        .patch("owned", &PatchParams::apply("me"), &Patch::Apply(&body))
        .await
        .expect_err("refused");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (400, "BadRequest", "metadata.managedFields must be nil")
    );
    assert!(maps.get_opt("owned").await.expect("get").is_none());

    let mut without = body.clone();
    without["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    maps.patch("owned", &PatchParams::apply("me"), &Patch::Apply(&without))
        .await
        .expect("applied without managedFields");
    sandbox.shutdown().await;
}

/// The 422 a refused write gets: message and the causes' fields.
async fn invalid<T>(result: Result<T, kube::Error>) -> (String, Vec<(String, String)>) {
    let error = result.err().expect("refused");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{}",
        status.message
    );
    let causes = status
        .details
        .map(|d| d.causes.into_iter().map(|c| (c.field, c.reason)).collect())
        .unwrap_or_default();
    (status.message, causes)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid typed object")
}

/// The checks of a pod spec, wherever one appears (a Pod, a workload's template).
#[tokio::test]
async fn pod_specs_are_validated_with_kube_apiservers_messages() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let post = PostParams::default();

    let (message, causes) = invalid(
        deployments
            .create(
                &post,
                &typed(deployment(
                    "mismatch",
                    json!({"app": "web"}),
                    json!({"app": "other", "tier": "db"}),
                    json!([{"name": "web", "image": "nginx"}]),
                )),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        "Deployment.apps \"mismatch\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\", \"tier\":\"db\"}: `selector` does not match template `labels`"
    );
    assert_eq!(
        causes,
        [(
            "spec.template.metadata.labels".to_string(),
            "FieldValueInvalid".to_string()
        )]
    );

    let (message, causes) = invalid(
        pods.create(
            &post,
            &typed(json!({
                "metadata": {"name": "names"},
                "spec": {"containers": [
                    {"name": "pg", "image": "postgres"},
                    {"name": "pg", "image": "postgres"},
                    {"name": "Side_car", "image": "busybox"},
                ]},
            })),
        )
        .await,
    )
    .await;
    assert_eq!(
        causes,
        [
            (
                "spec.containers[1].name".into(),
                "FieldValueDuplicate".into()
            ),
            ("spec.containers[2].name".into(), "FieldValueInvalid".into()),
        ]
    );
    assert!(
        message.starts_with("Pod \"names\" is invalid: [spec.containers[1].name: Duplicate value: \"pg\", spec.containers[2].name: Invalid value: \"Side_car\": a lowercase RFC 1123 label must consist of"),
        "{message}"
    );

    let (message, causes) = invalid(
        deployments
            .create(
                &post,
                &typed(deployment(
                    "mounts",
                    json!({"app": "db"}),
                    json!({"app": "db"}),
                    json!([{
                        "name": "pg", "image": "postgres",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "resources": {"requests": {"memory": "2Gi", "cpu": "500m"}, "limits": {"memory": "1Gi", "cpu": 1}},
                    }]),
                )),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        "Deployment.apps \"mounts\" is invalid: [spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"data\", spec.template.spec.containers[0].resources.requests: Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi]"
    );
    assert_eq!(
        causes
            .iter()
            .map(|(_, reason)| reason.as_str())
            .collect::<Vec<_>>(),
        ["FieldValueNotFound", "FieldValueInvalid"]
    );

    // The same spec with the volume and requests within limits is accepted.
    let mut valid = deployment(
        "mounts",
        json!({"app": "db"}),
        json!({"app": "db"}),
        json!([{
            "name": "pg", "image": "postgres",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"requests": {"memory": "1Gi", "cpu": "500m"}, "limits": {"memory": "1Gi", "cpu": 1}},
        }]),
    );
    valid["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    deployments
        .create(&post, &typed(valid))
        .await
        .expect("a valid Deployment is created");
    sandbox.shutdown().await;
}

/// The fields an update may not change: a pod's spec outside images (and a few more), a
/// StatefulSet's spec outside replicas, template and its update policies, a Job's template, a
/// Deployment's selector.
#[tokio::test]
async fn immutable_fields_are_refused_on_update() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let post = PostParams::default();
    let merge = |patch: Value| Patch::Merge(patch);
    let params = PatchParams::default();

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &post,
        &typed(json!({
            "metadata": {"name": "db"},
            "spec": {"containers": [{"name": "pg", "image": "postgres:16", "command": ["postgres"]}]},
        })),
    )
    .await
    .expect("pod created");
    let containers = |image: &str, command: &str| json!({"spec": {"containers": [{"name": "pg", "image": image, "command": [command]}]}});
    let (message, causes) = invalid(
        pods.patch("db", &params, &merge(containers("postgres:16", "sh")))
            .await,
    )
    .await;
    assert!(
        message.starts_with("Pod \"db\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"),
        "{message}"
    );
    assert_eq!(causes, [("spec".into(), "FieldValueForbidden".into())]);
    let updated = pods
        .patch("db", &params, &merge(containers("postgres:17", "postgres")))
        .await
        .expect("an image change is allowed");
    assert_eq!(
        updated.spec.expect("spec").containers[0].image.as_deref(),
        Some("postgres:17")
    );

    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    sets.create(
        &post,
        &typed(json!({
            "metadata": {"name": "pg"},
            "spec": {
                "serviceName": "pg", "replicas": 1,
                "selector": {"matchLabels": {"app": "pg"}},
                "template": {"metadata": {"labels": {"app": "pg"}},
                    "spec": {"containers": [{"name": "pg", "image": "postgres"}]}},
            },
        })),
    )
    .await
    .expect("StatefulSet created");
    let (message, _) = invalid(
        sets.patch(
            "pg",
            &params,
            &merge(json!({"spec": {"serviceName": "other"}})),
        )
        .await,
    )
    .await;
    assert_eq!(
        message,
        "StatefulSet.apps \"pg\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
    );
    sets.patch(
        "pg",
        &params,
        &merge(json!({"spec": {"replicas": 2, "minReadySeconds": 5}})),
    )
    .await
    .expect("replicas and minReadySeconds may change");

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &post,
        &typed(json!({
            "metadata": {"name": "once"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "run", "image": "busybox", "command": ["true"]}]}}},
        })),
    )
    .await
    .expect("Job created");
    let (message, causes) = invalid(
        jobs.patch(
            "once",
            &params,
            &merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "run", "image": "busybox", "command": ["false"]}]}}}})),
        )
        .await,
    )
    .await;
    assert!(
        message.contains("spec.template: Invalid value: "),
        "{message}"
    );
    assert!(message.ends_with(": field is immutable"), "{message}");
    assert_eq!(
        causes,
        [("spec.template".into(), "FieldValueInvalid".into())]
    );

    let deployments: Api<Deployment> = Api::default_namespaced(client);
    deployments
        .create(
            &post,
            &typed(deployment(
                "web",
                json!({"app": "web"}),
                json!({"app": "web", "tier": "front"}),
                json!([{"name": "web", "image": "nginx"}]),
            )),
        )
        .await
        .expect("Deployment created");
    let (_, causes) = invalid(
        deployments
            .patch(
                "web",
                &params,
                &merge(json!({"spec": {"selector": {"matchLabels": {"tier": "front"}}}})),
            )
            .await,
    )
    .await;
    assert_eq!(
        causes,
        [("spec.selector".into(), "FieldValueInvalid".into())]
    );
    sandbox.shutdown().await;
}

/// kube-apiserver stores a Secret's `stringData` in `data` (a key in both takes the
/// `stringData` value) and never stores `stringData` itself, on create and on update alike.
#[tokio::test]
async fn a_secrets_string_data_is_stored_in_its_data() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let secrets: Api<Secret> = Api::namespaced(sandbox.client().await.expect("client"), "default");
    let created = secrets
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": "login"},
                "data": {"user": "b2xk", "kept": "a2VwdA=="},
                "stringData": {"user": "new", "password": "s3cret"},
            })),
        )
        .await
        .expect("created");
    let data = |secret: &Secret| {
        let mut pairs: Vec<(String, Vec<u8>)> = secret
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(key, ByteString(bytes))| (key, bytes))
            .collect();
        pairs.sort();
        pairs
    };
    let expected = vec![
        ("kept".to_owned(), b"kept".to_vec()),
        ("password".to_owned(), b"s3cret".to_vec()),
        ("user".to_owned(), b"new".to_vec()),
    ];
    assert_eq!(data(&created), expected);
    assert_eq!(created.string_data, None, "stringData is never stored");
    let read = secrets.get("login").await.expect("read");
    assert_eq!((data(&read), read.string_data.clone()), (expected, None));

    let mut update = read.clone();
    update.string_data = Some([("kept".to_owned(), "changed".to_owned())].into());
    let updated = secrets
        .replace("login", &PostParams::default(), &update)
        .await
        .expect("updated");
    assert!(
        data(&updated).contains(&("kept".to_owned(), b"changed".to_vec())),
        "{:?}",
        data(&updated)
    );
    assert_eq!(updated.string_data, None);
    sandbox.shutdown().await;
}

/// A claim needs access modes kube-apiserver knows and a positive storage request written as
/// a quantity; afterwards its spec is fixed, except that a bound claim's request may grow (and
/// shrink back, but not to its volume's capacity).
#[tokio::test]
async fn claims_are_validated_with_kube_apiservers_messages() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let post = PostParams::default();
    let claim = |name: &str, spec: Value| typed(json!({"metadata": {"name": name}, "spec": spec}));

    let (message, causes) = invalid(claims.create(&post, &claim("bare", json!({}))).await).await;
    assert_eq!(
        message,
        "PersistentVolumeClaim \"bare\" is invalid: [spec.accessModes: Required value: at least 1 access mode is required, spec.resources[storage]: Required value]"
    );
    assert_eq!(
        causes,
        [
            ("spec.accessModes".into(), "FieldValueRequired".into()),
            (
                "spec.resources[storage]".into(),
                "FieldValueRequired".into()
            ),
        ]
    );

    let (message, _) = invalid(
        claims
            .create(
                &post,
                &claim(
                    "odd",
                    json!({"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "0"}}}),
                ),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        "PersistentVolumeClaim \"odd\" is invalid: [spec.accessModes: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\", spec.resources[storage]: Invalid value: \"0\": must be greater than zero]"
    );

    // A request that is no quantity cannot even be decoded.
    let malformed = r#"{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lots"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "lots"}}}}"#;
    let answer = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        "Strict",
        malformed,
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.body);
    assert_eq!(
        answer.body["message"],
        "PersistentVolumeClaim in version \"v1\" cannot be handled as a PersistentVolumeClaim: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    assert!(claims.get_opt("lots").await.expect("get").is_none());

    let spec = |mode: &str, storage: &str| json!({"spec": {"accessModes": [mode], "resources": {"requests": {"storage": storage}}}});
    claims
        .create(
            &post,
            &typed(
                json!({"metadata": {"name": "data"}, "spec": spec("ReadWriteOnce", "1Gi")["spec"]}),
            ),
        )
        .await
        .expect("a valid claim is created");
    let params = PatchParams::default();
    let forbidden_spec = "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n";
    let (message, causes) = invalid(
        claims
            .patch("data", &params, &Patch::Merge(spec("ReadWriteMany", "1Gi")))
            .await,
    )
    .await;
    // kube-apiserver appends go-cmp's diff of its internal structs; the sandbox writes the
    // same shape (Go field names, `-`/`+` lines, elided unchanged fields). What differs: cmp
    // shows a few unchanged fields around a change where the sandbox elides them all, and cmp
    // puts a space or a no-break space after `-`/`+` at random, so no client can match it.
    assert_eq!(
        message,
        format!(
            "{forbidden_spec}  core.PersistentVolumeClaimSpec{{\n- \tAccessModes: []core.PersistentVolumeAccessMode{{\"ReadWriteOnce\"}},\n+ \tAccessModes: []core.PersistentVolumeAccessMode{{\"ReadWriteMany\"}},\n  \t... // 8 identical fields\n  }}"
        )
    );
    assert_eq!(causes, [("spec".into(), "FieldValueForbidden".into())]);
    // Nothing has bound the claim yet: its request cannot change either.
    let (message, _) = invalid(
        claims
            .patch("data", &params, &Patch::Merge(spec("ReadWriteOnce", "2Gi")))
            .await,
    )
    .await;
    assert!(message.starts_with(forbidden_spec), "{message}");

    // Bound to a volume of 1Gi, the claim may grow.
    claims
        .patch_status(
            "data",
            &params,
            &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})),
        )
        .await
        .expect("bound");
    let grown = claims
        .patch("data", &params, &Patch::Merge(spec("ReadWriteOnce", "2Gi")))
        .await
        .expect("a bound claim's request may grow");
    assert_eq!(
        grown
            .spec
            .and_then(|s| s.resources?.requests?.get("storage").cloned()),
        Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "2Gi".into()
        ))
    );
    let (message, causes) = invalid(
        claims
            .patch("data", &params, &Patch::Merge(spec("ReadWriteOnce", "1Gi")))
            .await,
    )
    .await;
    assert_eq!(
        message,
        "PersistentVolumeClaim \"data\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
    );
    assert_eq!(
        causes,
        [(
            "spec.resources.requests.storage".into(),
            "FieldValueForbidden".into()
        )]
    );
    sandbox.shutdown().await;
}

/// A Service's ports: names required when there are several, numbers in range, protocols
/// kube-apiserver knows, target ports that are numbers or port names, no port twice; its type
/// one of four, and an ExternalName Service names a host and has no cluster IP.
#[tokio::test]
async fn services_are_validated_with_kube_apiservers_messages() {
    use k8s_openapi::api::core::v1::Service;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let services: Api<Service> = Api::default_namespaced(sandbox.client().await.expect("client"));
    let post = PostParams::default();
    let service =
        |name: &str, spec: Value| typed(json!({"metadata": {"name": name}, "spec": spec}));

    let (message, _) = invalid(
        services
            .create(
                &post,
                &service(
                    "ports",
                    json!({"ports": [
                        {"port": 5432},
                        {"port": 70000, "protocol": "tcp", "targetPort": "pg--x"},
                    ]}),
                ),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        "Service \"ports\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value, spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive, spec.ports[1].protocol: Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\", spec.ports[1].targetPort: Invalid value: \"pg--x\": must not contain consecutive hyphens]"
    );

    let (message, causes) = invalid(
        services
            .create(
                &post,
                &service(
                    "twice",
                    json!({"ports": [
                        {"name": "pg", "port": 5432, "nodePort": 30432},
                        {"name": "pg", "port": 5432, "targetPort": 6432},
                    ]}),
                ),
            )
            .await,
    )
    .await;
    assert_eq!(
        causes,
        [
            ("spec.ports[1].name".into(), "FieldValueDuplicate".into()),
            (
                "spec.ports[0].nodePort".into(),
                "FieldValueForbidden".into()
            ),
            ("spec.ports[1]".into(), "FieldValueDuplicate".into()),
        ]
    );
    assert!(
        message.contains(
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ),
        "{message}"
    );

    let (message, _) = invalid(
        services
            .create(
                &post,
                &service("odd", json!({"type": "Internal", "ports": [{"port": 80}]})),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        "Service \"odd\" is invalid: spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );
    let (message, _) = invalid(
        services
            .create(&post, &service("nowhere", json!({"type": "ExternalName"})))
            .await,
    )
    .await;
    assert_eq!(
        message,
        "Service \"nowhere\" is invalid: spec.externalName: Required value"
    );

    // A ClusterIP Service turned into an ExternalName one gives up its address.
    let created = services
        .create(
            &post,
            &service("db", json!({"ports": [{"name": "pg", "port": 5432}]})),
        )
        .await
        .expect("a valid Service is created");
    assert!(created.spec.and_then(|s| s.cluster_ip).is_some());
    let moved = services
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
            ),
        )
        .await
        .expect("a Service may become an ExternalName one");
    let spec = moved.spec.expect("spec");
    assert_eq!(
        (spec.type_.as_deref(), spec.cluster_ip, spec.cluster_ips),
        (Some("ExternalName"), None, None)
    );

    // Back to ClusterIP, it gets an address again, as kube-apiserver's allocator gives one to
    // a Service leaving the ExternalName type.
    let back = services
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP", "externalName": null}})),
        )
        .await
        .expect("an ExternalName Service may become a ClusterIP one");
    let spec = back.spec.expect("spec");
    let address = spec.cluster_ip.clone().expect("a cluster IP is allocated");
    let parsed: std::net::Ipv4Addr = address.parse().expect("an IPv4 address");
    assert_eq!(parsed.octets()[0], 127, "{address}");
    assert!((128..192).contains(&parsed.octets()[1]), "{address}");
    assert_eq!(spec.cluster_ips, Some(vec![address.clone()]));
    assert_eq!(
        (
            spec.ip_families,
            spec.ip_family_policy.as_deref(),
            spec.internal_traffic_policy.as_deref()
        ),
        (
            Some(vec!["IPv4".to_string()]),
            Some("SingleStack"),
            Some("Cluster")
        )
    );

    // A Service leaving ExternalName may ask for its address, but not one another holds.
    services
        .create(
            &post,
            &service(
                "alias",
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
            ),
        )
        .await
        .expect("an ExternalName Service is created");
    let (message, _) = invalid(
        services
            .patch(
                "alias",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {
                    "type": "ClusterIP", "externalName": null, "clusterIP": address,
                    "ports": [{"name": "pg", "port": 5432}],
                }})),
            )
            .await,
    )
    .await;
    assert_eq!(
        message,
        format!(
            "Service \"alias\" is invalid: spec.clusterIPs: Invalid value: [\"{address}\"]: failed to allocate IP {address}: provided IP is already allocated"
        )
    );
    sandbox.shutdown().await;
}

/// Quantities are stored in the canonical form kube-apiserver's `Quantity` serializes to,
/// whatever form they were written in: what `kubectl get -o yaml` shows after an apply.
#[tokio::test]
async fn quantities_are_stored_in_canonical_form() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sized
spec:
  containers:
  - name: main
    image: postgres
    resources:
      requests: {cpu: "0.5", memory: 1024Mi}
      limits: {cpu: 2000m, memory: 1.5Gi}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: sized
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 2048Mi}
"#;
    let (code, _, stderr) =
        kubectl_with_input(&sandbox, manifest.as_bytes(), &["apply", "-f", "-"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pod = kubectl_ok(
        &sandbox,
        &[
            "get",
            "pod",
            "sized",
            "-o",
            "jsonpath={.spec.containers[0].resources}",
        ],
    )
    .await;
    let resources: Value = serde_json::from_str(&pod).expect("JSON");
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1536Mi"}})
    );
    let yaml = kubectl_ok(&sandbox, &["get", "pvc", "sized", "-o", "yaml"]).await;
    // The spec holds the canonical form; only kubectl's last-applied annotation keeps the
    // text as written, as on a real cluster.
    let spec: serde_yaml_ng::Value = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml)
        .expect("kubectl prints YAML")["spec"]["resources"]["requests"]["storage"]
        .clone();
    assert_eq!(spec.as_str(), Some("2Gi"), "{yaml}");
    sandbox.shutdown().await;
}

/// A container's ports, probes and enums, and the restart policies a workload's pods may have.
#[tokio::test]
async fn container_ports_probes_and_enums_are_validated() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let post = PostParams::default();

    let (message, causes) = invalid(
        pods.create(
            &post,
            &typed(json!({
                "metadata": {"name": "pg"},
                "spec": {
                    "restartPolicy": "Sometimes",
                    "containers": [{
                        "name": "pg", "image": "postgres", "imagePullPolicy": "Daily",
                        "ports": [
                            {"name": "pg", "containerPort": 5432},
                            {"name": "pg", "containerPort": 5433},
                            {"containerPort": 0, "protocol": "QUIC"},
                        ],
                        "livenessProbe": {"successThreshold": 2, "periodSeconds": -1},
                        "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 5432}},
                    }],
                },
            })),
        )
        .await,
    )
    .await;
    assert_eq!(
        causes,
        [
            (
                "spec.containers[0].ports[1].name".into(),
                "FieldValueDuplicate".into()
            ),
            (
                "spec.containers[0].ports[2].containerPort".into(),
                "FieldValueRequired".into()
            ),
            (
                "spec.containers[0].ports[2].protocol".into(),
                "FieldValueNotSupported".into()
            ),
            (
                "spec.containers[0].imagePullPolicy".into(),
                "FieldValueNotSupported".into()
            ),
            (
                "spec.containers[0].livenessProbe".into(),
                "FieldValueRequired".into()
            ),
            (
                "spec.containers[0].livenessProbe.periodSeconds".into(),
                "FieldValueInvalid".into()
            ),
            (
                "spec.containers[0].livenessProbe.successThreshold".into(),
                "FieldValueInvalid".into()
            ),
            (
                "spec.containers[0].readinessProbe.tcpSocket".into(),
                "FieldValueForbidden".into()
            ),
            ("spec.restartPolicy".into(), "FieldValueNotSupported".into()),
        ]
    );
    for expected in [
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        "spec.containers[0].imagePullPolicy: Unsupported value: \"Daily\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
        "spec.containers[0].ports[1].name: Duplicate value: \"pg\"",
        "spec.containers[0].ports[2].protocol: Unsupported value: \"QUIC\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from {message}"
        );
    }

    // A Job's pods restart on failure or never; left unset, the policy is Always.
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let (message, _) = invalid(
        jobs.create(
            &post,
            &typed(json!({
                "metadata": {"name": "once"},
                "spec": {"template": {"spec": {"containers": [{"name": "run", "image": "busybox"}]}}},
            })),
        )
        .await,
    )
    .await;
    assert_eq!(
        message,
        "Job.batch \"once\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
    );
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    let mut web = deployment(
        "web",
        json!({"app": "web"}),
        json!({"app": "web"}),
        json!([{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/"}}}]),
    );
    web["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let (message, _) = invalid(deployments.create(&post, &typed(web.clone())).await).await;
    assert_eq!(
        message,
        "Deployment.apps \"web\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
    );
    web["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    deployments
        .create(&post, &typed(web))
        .await
        .expect("a Deployment with valid ports and probes is created");
    sandbox.shutdown().await;
}
