//! The real kubectl (/usr/bin/kubectl, Debian package `kubectl`) against the sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kubectl::{kubectl, kubectl_ok};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::process::Command;
use tusk_sandbox::Sandbox;

/// The CRDs as `tusk crds` prints them, written where kubectl can read them.
fn crd_manifests(dir: &Path) -> PathBuf {
    let path = dir.join("crds.yaml");
    std::fs::write(&path, tusk_api::crds_yaml().expect("CRDs render")).expect("written");
    path
}

#[tokio::test]
async fn kubectl_applies_gets_describes_watches_and_deletes() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let crds = crd_manifests(dir.path());
    kubectl_ok(&sandbox, &["apply", "-f", crds.to_str().expect("utf-8")]).await;

    // Client-side apply, then again server-side: both accepted, the second a no-op or merge.
    let applied = kubectl_ok(&sandbox, &["apply", "-R", "-f", "examples/"]).await;
    assert!(
        applied.contains("postgrescluster.postgres.tusk.dev/elephant created"),
        "{applied}"
    );
    let applied = kubectl_ok(&sandbox, &["apply", "-R", "-f", "examples/"]).await;
    assert!(
        applied.contains("postgrescluster.postgres.tusk.dev/elephant unchanged"),
        "{applied}"
    );
    let applied = kubectl_ok(
        &sandbox,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-R",
            "-f",
            "examples/",
        ],
    )
    .await;
    assert!(applied.contains("serverside-applied"), "{applied}");

    // Our printer columns come through the Table.
    let crd_columns = tusk_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "PostgresCluster")
        .and_then(|c| c.spec.versions[0].additional_printer_columns.clone())
        .unwrap_or_default();
    let table = kubectl_ok(&sandbox, &["get", "postgresclusters"]).await;
    let header = table.lines().next().unwrap_or_default().to_string();
    assert!(header.starts_with("NAME"), "{table}");
    for column in crd_columns.iter().filter(|c| c.priority.unwrap_or(0) == 0) {
        assert!(
            header.contains(&column.name.to_uppercase()),
            "{header} lacks {}",
            column.name
        );
    }
    assert!(table.contains("elephant"));

    let yaml = kubectl_ok(
        &sandbox,
        &["get", "postgrescluster", "elephant", "-o", "yaml"],
    )
    .await;
    assert!(
        yaml.contains("memorySize: 2") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    // describe lists the Events, a repeated one as a series.
    let client = sandbox.client().await.expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = maps
        .patch("described", &PatchParams::apply("test"), &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "described"}})))
        .await
        .expect("created");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tusk-test".into(),
            instance: None,
        },
    );
    let reference: ObjectReference = map.object_ref(&());
    let event = Event {
        type_: EventType::Warning,
        reason: "Repeated".into(),
        note: Some("It happened again".into()),
        action: "Test".into(),
        secondary: None,
    };
    for _ in 0..5 {
        recorder
            .publish(&event, &reference)
            .await
            .expect("published");
    }
    let described = kubectl_ok(&sandbox, &["describe", "configmap", "described"]).await;
    assert!(described.contains("Events:"), "{described}");
    assert!(
        described.contains("Repeated") && described.contains("It happened again"),
        "{described}"
    );
    assert!(described.contains("(x5 over"), "{described}");

    // get -w sees a change.
    let relabel = |attempt: u64| {
        let maps = maps.clone();
        async move {
            let labels = serde_json::json!({"metadata": {"labels": {"stage": format!("changed-{attempt}")}}});
            maps.patch("described", &PatchParams::default(), &Patch::Merge(labels))
                .await
                .expect("changed");
        }
    };
    let jsonpath = "jsonpath={.metadata.labels.stage}{\"\\n\"}";
    let args = ["get", "configmap", "described", "-w", "-o", jsonpath];
    let changed = |line: &str| line.starts_with("changed-");
    let seen = watched(&sandbox, &args, 1, relabel, changed).await;
    assert!(seen.contains("changed"), "kubectl get -w printed {seen:?}");

    // delete waits while a finalizer holds the object, and returns once it is gone.
    maps.patch(
        "described",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["tusk.dev/hold"]}})),
    )
    .await
    .expect("finalizer added");
    let (ok, _, stderr) = kubectl(
        &sandbox,
        &["delete", "configmap", "described", "--timeout=2s"],
    )
    .await;
    assert!(!ok, "delete must wait for the finalizer");
    assert!(stderr.contains("timed out"), "{stderr}");
    let release = {
        let maps = maps.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            maps.patch(
                "described",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await
        })
    };
    let deleted = kubectl_ok(
        &sandbox,
        &["delete", "configmap", "described", "--timeout=20s"],
    )
    .await;
    assert!(deleted.contains("deleted"), "{deleted}");
    release.await.expect("joined").expect("finalizer removed");
    assert!(maps.get_opt("described").await.expect("get").is_none());
    sandbox.shutdown().await;
}

/// What `kubectl get ... -w` printed by the time a row `expected_row` accepts appeared (or
/// ten attempts at `change` passed), with `change` made once the object was printed.
async fn watched<F: std::future::Future<Output = ()>>(
    sandbox: &Sandbox,
    args: &[&str],
    first_lines: usize,
    change: impl Fn(u64) -> F,
    expected_row: impl Fn(&str) -> bool,
) -> String {
    let mut watch = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .env("KUBECACHEDIR", common::kubectl::discovery_cache(sandbox))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl get -w");
    let mut stdout = watch.stdout.take().expect("stdout");
    let mut seen = String::new();
    // The first `first_lines` (the object as it was got) come before the change.
    let first_row = |seen: &str| seen.lines().count() >= first_lines;
    read_until(&mut stdout, &mut seen, first_row, Duration::from_secs(10)).await;
    // kubectl prints a single object it got, then watches it from resourceVersion "0" and
    // skips that watch's first (synthetic ADDED) event, as on a real cluster: a change made
    // before the watch is open is folded into the skipped event. So the change is made again,
    // each time a little different, until a row shows it. kubectl writes a row cell by cell,
    // so the watch is read until the whole row expected has arrived, not only its first cells.
    for attempt in 0..10 {
        change(attempt).await;
        let row_seen = |seen: &str| seen.lines().any(&expected_row);
        read_until(&mut stdout, &mut seen, row_seen, Duration::from_secs(2)).await;
        if seen.lines().any(&expected_row) {
            break;
        }
    }
    let _ = watch.kill().await;
    seen
}

/// Appends what `stdout` prints to `seen` until `done` says so, or `within` passed.
async fn read_until(
    stdout: &mut tokio::process::ChildStdout,
    seen: &mut String,
    done: impl Fn(&str) -> bool,
    within: Duration,
) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    while !done(seen) && tokio::time::Instant::now() < deadline {
        let mut buffer = [0u8; 1024];
        if let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_secs(1), stdout.read(&mut buffer)).await
        {
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    }
}

/// kube-apiserver answers a watch with `as=Table` with one Table per event (column
/// definitions on the first only), so `kubectl get -w` keeps every column on every row: a
/// pod's STATUS, a custom kind's printer columns.
#[tokio::test]
async fn kubectl_get_watch_keeps_the_columns_of_every_row() {
    use k8s_openapi::api::core::v1::Pod;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &Default::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "watched"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }))
        .expect("a pod"),
    )
    .await
    .expect("pod created");
    let running = |attempt: u64| {
        let pods = pods.clone();
        async move {
            let status = serde_json::json!({"status": {"phase": "Running", "message": format!("attempt {attempt}")}});
            pods.patch_status("watched", &PatchParams::default(), &Patch::Merge(status))
                .await
                .expect("status written");
        }
    };
    let has_every_column =
        |row: &str| row.contains("Running") && row.split_whitespace().count() == 5;
    let seen = watched(
        &sandbox,
        &["get", "pods", "-w"],
        2,
        running,
        has_every_column,
    )
    .await;
    let header = seen.lines().next().unwrap_or_default();
    assert!(
        header.split_whitespace().collect::<Vec<_>>()
            == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "kubectl get -w printed {seen:?}"
    );
    assert!(
        seen.lines().any(has_every_column),
        "the changed pod's row lost its columns: {seen:?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let crds = crd_manifests(dir.path());
    kubectl_ok(&sandbox, &["apply", "-f", crds.to_str().expect("utf-8")]).await;
    kubectl_ok(&sandbox, &["apply", "-f", "examples/my-backup.yaml"]).await;
    let requests: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client,
        "default",
        &kube::api::ApiResource {
            group: "postgres.tusk.dev".into(),
            version: "v1".into(),
            api_version: "postgres.tusk.dev/v1".into(),
            kind: "PostgresBackupRequest".into(),
            plural: "postgresbackuprequests".into(),
        },
    );
    let progressing = |attempt: u64| {
        let requests = requests.clone();
        async move {
            let status = serde_json::json!({"status": {"phase": "Running", "progress": {"bytesDone": 420 + attempt, "bytesTotal": 1000, "percent": 42}}});
            requests
                .patch_status("my-backup", &PatchParams::default(), &Patch::Merge(status))
                .await
                .expect("status written");
        }
    };
    let has_printer_columns =
        |row: &str| row.contains("Running") && row.contains("elephant") && row.contains("42");
    let seen = watched(
        &sandbox,
        &["get", "pgbr", "my-backup", "-w"],
        2,
        progressing,
        has_printer_columns,
    )
    .await;
    let header = seen.lines().next().unwrap_or_default();
    assert!(
        header.contains("PHASE") && header.contains("PROGRESS %"),
        "kubectl get pgbr -w printed {seen:?}"
    );
    assert!(
        seen.lines().any(has_printer_columns),
        "the backup request's row lost its printer columns: {seen:?}"
    );
    sandbox.shutdown().await;
}

/// `kubectl apply --dry-run=server -k deploy/` passes every check the sandbox makes (the CEL
/// cost budgets of the CRDs included) and stores nothing; the real apply then installs it.
#[tokio::test]
async fn deploy_passes_a_server_side_dry_run_that_stores_nothing() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    // Like kube-apiserver, the sandbox refuses namespaced objects, dry run or not, in a namespace
    // that does not exist: the namespace is created for real first.
    kubectl_ok(&sandbox, &["apply", "-f", "deploy/namespace.yaml"]).await;
    let dry = kubectl_ok(&sandbox, &["apply", "--dry-run=server", "-k", "deploy/"]).await;
    let lines: Vec<&str> = dry.lines().collect();
    assert!(lines.len() >= 10, "{dry}");
    assert!(
        lines.iter().all(|line| line.ends_with("(server dry run)")),
        "{dry}"
    );
    assert!(
        dry.contains(
            "customresourcedefinition.apiextensions.k8s.io/postgresclusters.postgres.tusk.dev created (server dry run)"
        ),
        "{dry}"
    );
    assert!(
        dry.contains("deployment.apps/tusk-operator created (server dry run)"),
        "{dry}"
    );
    let stored = kubectl_ok(
        &sandbox,
        &["get", "-k", "deploy/", "--ignore-not-found", "-o", "name"],
    )
    .await;
    assert_eq!(
        stored.trim(),
        "namespace/tusk-system",
        "a dry run stored objects"
    );

    let applied = kubectl_ok(&sandbox, &["apply", "-k", "deploy/"]).await;
    assert_eq!(applied.lines().count(), lines.len(), "{applied}");
    let stored = kubectl_ok(&sandbox, &["get", "-k", "deploy/", "-o", "name"]).await;
    assert_eq!(stored.lines().count(), lines.len(), "{stored}");
    sandbox.shutdown().await;
}

/// A CRD whose rule walks a map of strings with no maxLength, as PostgresCluster's parameters
/// once were.
fn parameters_crd(value_bounds: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {{kind: Widget, plural: widgets}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              parameters:
                type: object
                maxProperties: 256
                additionalProperties: {{type: string{value_bounds}}}
                x-kubernetes-validations:
                - rule: "self.all(k, !self[k].contains('\\n'))"
                  message: a parameter value may not contain a line break
"#
    )
}

#[tokio::test]
async fn a_crd_over_the_cel_cost_budget_is_refused_with_kube_apiservers_message() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("widgets.yaml");
    let path_text = path.to_str().expect("utf-8").to_string();

    std::fs::write(&path, parameters_crd("")).expect("written");
    let (ok, _, stderr) = kubectl(&sandbox, &["apply", "-f", &path_text]).await;
    assert!(!ok, "an over-budget CRD was accepted");
    assert!(
        stderr.contains(
            "The CustomResourceDefinition \"widgets.example.com\" is invalid: spec.validation.openAPIV3Schema.properties[spec].properties[parameters].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 8.1x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        ),
        "{stderr}"
    );
    let (ok, _, _) = kubectl(&sandbox, &["get", "crd", "widgets.example.com"]).await;
    assert!(!ok, "the refused CRD was stored");

    // The same rule over values of at most 1024 characters is accepted.
    std::fs::write(&path, parameters_crd(", maxLength: 1024")).expect("written");
    kubectl_ok(&sandbox, &["apply", "-f", &path_text]).await;
    sandbox.shutdown().await;
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.display().to_string()
}

const MISSPELLED_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replica: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        imagePullPolicyy: Always
"#;

/// kubectl's default (`--validate=strict`) refuses a misspelled field with kube-apiserver's
/// message and stores nothing; `--validate=warn` creates the object without the unknown fields
/// and prints a warning for each; `--validate=false` drops them silently.
#[tokio::test]
async fn kubectl_apply_refuses_a_misspelled_field_and_warns_when_asked_to() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "web.yaml", MISSPELLED_DEPLOYMENT);

    let (ok, _, stderr) = kubectl(&sandbox, &["apply", "-f", &path]).await;
    assert!(!ok, "a misspelled field was accepted");
    assert!(
        stderr.contains(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\", unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""
        ),
        "{stderr}"
    );
    let (found, _, _) = kubectl(&sandbox, &["get", "deployment", "web"]).await;
    assert!(!found, "the refused Deployment was stored");

    let (ok, _, stderr) = kubectl(&sandbox, &["apply", "--validate=warn", "-f", &path]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning: unknown field \"spec.replica\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "Warning: unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""
        ),
        "{stderr}"
    );
    let client = sandbox.client().await.expect("client");
    let stored = Api::<Deployment>::default_namespaced(client)
        .get("web")
        .await
        .expect("created under Warn");
    assert_eq!(
        stored.spec.replicas,
        Some(1),
        "the misspelled replicas was dropped"
    );

    let ignored =
        MISSPELLED_DEPLOYMENT.replace("name: web\n  namespace", "name: quiet\n  namespace");
    let path = write(dir.path(), "quiet.yaml", &ignored);
    let (ok, _, stderr) = kubectl(&sandbox, &["apply", "--validate=false", "-f", &path]).await;
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_value_other_than_all_is_refused_and_nothing_is_stored() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bogus", "namespace": "default"},
    });
    let request = http::Request::post("/api/v1/namespaces/default/configmaps?dryRun=Bogus")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            serde_json::to_vec(&body).expect("JSON"),
        ))
        .expect("request");
    let response = client.send(request).await.expect("answered");
    assert_eq!(response.status().as_u16(), 422);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let status: serde_json::Value = serde_json::from_slice(&bytes).expect("a Status");
    assert_eq!(
        status["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: [\"Bogus\"]: supported values: \"All\""
    );
    assert_eq!(status["details"]["causes"][0]["field"], "dryRun");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(maps.get_opt("bogus").await.expect("get").is_none());
    sandbox.shutdown().await;
}
