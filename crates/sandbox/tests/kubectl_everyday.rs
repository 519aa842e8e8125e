//! The everyday kubectl commands not covered by a test of their own: every `get` output format,
//! `diff`, `edit` (through `KUBE_EDITOR`), `patch` of each type, `label` and `annotate`,
//! `rollout restart`, `wait`, `delete` with the orphan and background cascades, `events` and
//! `api-versions`. Each test names the kube-apiserver behaviour the command relies on.

mod cluster;

use std::os::unix::fs::PermissionsExt;

use cluster::{Cluster, Outcome, deployment, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use tusk_sandbox::controllers::ControllerOptions;

/// A sandbox with the workload controllers and a stand-in kubelet that makes pods ready.
async fn start() -> Cluster {
    Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await
}

/// [`start`], with the Deployment `web` of `replicas` pods of `nginx:1` created.
async fn start_with_web(replicas: i32) -> (Cluster, Api<Deployment>) {
    let cluster = start().await;
    let deployments: Api<Deployment> = cluster.api();
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", replicas, "nginx:1"),
        )
        .await
        .expect("created");
    (cluster, deployments)
}

/// kubectl's stdout, once it has succeeded.
async fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cluster.kubectl(args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

/// Writes `text` to `name` in `directory` and returns its path.
fn write(directory: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = directory.path().join(name);
    std::fs::write(&path, text).expect("file written");
    path.display().to_string()
}

fn settings(mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: {mode}\n"
    )
}

/// kube-apiserver answers `as=Table` for the default and `-o wide`, and the full object for
/// every other format, which kubectl then prints on its side: `-o name` from kind and name,
/// `jsonpath`, `custom-columns` and `go-template` from the object's fields, `yaml` and `json`
/// as the stored object with its server-set metadata.
#[tokio::test]
async fn kubectl_get_prints_every_output_format() {
    let cluster = start().await;
    kubectl_ok(
        &cluster,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
    )
    .await;
    let get = |format: &'static str| {
        let cluster = &cluster;
        async move { kubectl_ok(cluster, &["get", "configmap", "settings", "-o", format]).await }
    };
    assert_eq!(get("name").await, "configmap/settings\n");
    assert_eq!(get("jsonpath={.data.mode}").await, "fast");
    assert_eq!(get("go-template={{.data.mode}}").await, "fast");
    assert_eq!(
        get("custom-columns=NAME:.metadata.name,MODE:.data.mode").await,
        "NAME       MODE\nsettings   fast\n"
    );
    let table = kubectl_ok(&cluster, &["get", "configmap", "settings"]).await;
    let wide = get("wide").await;
    // The same columns and values, but for AGE, which may tick between the two calls.
    let without_age = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|line| {
                let mut fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                if fields.last().is_some_and(|last| last != "AGE") {
                    fields.pop();
                }
                fields
            })
            .collect()
    };
    assert_eq!(
        without_age(&table),
        without_age(&wide),
        "a ConfigMap has no wide-only columns:\n{table}\n{wide}"
    );
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("settings   1 ")),
        "{table}"
    );

    let from_yaml: Value = serde_yaml_ng::from_str(&get("yaml").await).expect("YAML");
    let from_json: Value = serde_json::from_str(&get("json").await).expect("JSON");
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_json["apiVersion"], "v1");
    assert_eq!(from_json["kind"], "ConfigMap");
    assert_eq!(from_json["data"]["mode"], "fast");
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(
            from_json["metadata"][field]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "metadata.{field} is set: {from_json}"
        );
    }

    // A list: every format goes over the items (the namespace's root CA map is one of them).
    let names = kubectl_ok(&cluster, &["get", "configmaps", "-o", "name"]).await;
    assert_eq!(names, "configmap/kube-root-ca.crt\nconfigmap/settings\n");
    let ranged = kubectl_ok(
        &cluster,
        &[
            "get",
            "configmaps",
            "-o",
            "go-template={{range .items}}{{.metadata.name}};{{end}}",
        ],
    )
    .await;
    assert_eq!(ranged, "kube-root-ca.crt;settings;");
    let list: Value =
        serde_json::from_str(&kubectl_ok(&cluster, &["get", "configmaps", "-o", "json"]).await)
            .expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    // `api-versions` lists every group version discovery serves.
    let versions = kubectl_ok(&cluster, &["api-versions"]).await;
    for version in ["v1", "apps/v1", "batch/v1", "events.k8s.io/v1", "policy/v1"] {
        assert!(
            versions.lines().any(|line| line == version),
            "{version}: {versions}"
        );
    }
    cluster.stop().await;
}

/// `kubectl diff` sends the manifest as a server-side dry run (`dryRun=All`): kube-apiserver
/// answers with the object it would store and stores nothing. kubectl exits 1 when there is a
/// difference and 0 when there is none.
#[tokio::test]
async fn kubectl_diff_shows_what_apply_would_change_and_changes_nothing() {
    let cluster = start().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let fast = write(&directory, "fast.yaml", &settings("fast"));
    let slow = write(&directory, "slow.yaml", &settings("slow"));

    let (ok, out, err) = cluster.kubectl(&["diff", "-f", &fast]).await;
    assert!(!ok, "a new object is a difference: {out}{err}");
    assert!(out.contains("+  mode: fast"), "{out}");
    let maps: Api<ConfigMap> = cluster.api();
    assert!(
        maps.get_opt("settings").await.expect("read").is_none(),
        "a dry run creates nothing"
    );

    kubectl_ok(&cluster, &["apply", "--server-side", "-f", &fast]).await;
    let (ok, out, err) = cluster
        .kubectl(&["diff", "--server-side", "-f", &fast])
        .await;
    assert!(ok, "no difference after applying it: {out}{err}");
    assert_eq!(out, "");

    let before = maps.get("settings").await.expect("stored");
    for args in [
        vec!["diff", "-f", slow.as_str()],
        vec!["diff", "--server-side", "-f", slow.as_str()],
    ] {
        let (ok, out, err) = cluster.kubectl(&args).await;
        assert!(!ok, "{args:?}: {out}{err}");
        assert!(
            out.contains("-  mode: fast") && out.contains("+  mode: slow"),
            "{args:?}: {out}"
        );
    }
    let after = maps.get("settings").await.expect("stored");
    assert_eq!(after.data, before.data, "a dry run changes nothing");
    assert_eq!(after.resource_version(), before.resource_version());
    cluster.stop().await;
}

/// `kubectl edit` GETs the object, hands it to `KUBE_EDITOR`, and PATCHes the difference
/// (a strategic merge patch for a built-in kind) with the read resourceVersion as a
/// precondition. kube-apiserver validates the result as it would any update: a Deployment's
/// `spec.replicas` may not be negative (`must be greater than or equal to 0`), and kubectl
/// shows the 422's causes to the editor.
#[tokio::test]
async fn kubectl_edit_saves_what_the_editor_wrote_and_reports_what_the_server_refused() {
    let (cluster, deployments) = start_with_web(1).await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let editor = |name: &str, script: &str| {
        let path = write(&directory, name, &format!("#!/bin/sh\nset -e\n{script}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("editor made executable");
        path
    };
    let edit = |editor: String| {
        let cluster = &cluster;
        async move {
            let mut command = cluster.kubectl_command(&["edit", "deployment/web"]);
            command.env("KUBE_EDITOR", editor);
            let output = command.output().await.expect("kubectl runs");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    let (ok, out, err) = edit(editor(
        "scale.sh",
        "sed -i 's/replicas: 1$/replicas: 3/' \"$1\"",
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/web edited");
    let edited = deployments.get("web").await.expect("read");
    assert_eq!(edited.spec.replicas, Some(3));
    assert_eq!(edited.metadata.generation, Some(2));

    let (ok, _, err) = edit(editor("nothing.sh", "true")).await;
    assert!(ok, "{err}");
    assert_eq!(err.trim(), "Edit cancelled, no changes made.");

    // Refused, kubectl opens the editor again with the server's causes in the header; an
    // editor that changes nothing more ends the edit.
    let seen = directory.path().join("seen.yaml");
    let (ok, out, err) = edit(editor(
        "negative.sh",
        &format!(
            "sed -i 's/replicas: 3$/replicas: -1/' \"$1\"\ncp \"$1\" {}",
            seen.display()
        ),
    ))
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("error: deployments.apps \"web\" is invalid")
            && err.contains("Edit cancelled, no valid changes were saved."),
        "{err}"
    );
    let header = std::fs::read_to_string(&seen).expect("the editor saw the file");
    assert!(
        header.contains("# deployments.apps \"web\" was not valid:")
            && header.contains(
                "# * spec.replicas: Invalid value: -1: must be greater than or equal to 0"
            ),
        "{header}"
    );
    let kept = deployments.get("web").await.expect("read");
    assert_eq!(kept.spec.replicas, Some(3));
    cluster.stop().await;
}

/// `kubectl patch` with each patch type kube-apiserver accepts for a built-in kind: a strategic
/// merge patch (the default) merges the containers list by name, a JSON merge patch replaces
/// the list whole, and a JSON patch applies its operations in order, refusing the whole patch
/// when a `test` fails, with apimachinery's generic 422 (no object named, the patch library's
/// error as the cause).
#[tokio::test]
async fn kubectl_patch_applies_strategic_merge_and_json_patches() {
    let (cluster, deployments) = start_with_web(1).await;
    let containers = || async {
        deployments
            .get("web")
            .await
            .expect("read")
            .spec
            .template
            .spec
            .map(|pod| {
                pod.containers
                    .into_iter()
                    .map(|c| format!("{}={}", c.name, c.image.unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let sidecar =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}"#;

    let out = kubectl_ok(&cluster, &["patch", "deployment", "web", "-p", sidecar]).await;
    assert_eq!(out.trim(), "deployment.apps/web patched");
    assert_eq!(containers().await, ["main=nginx:1", "sidecar=busybox"]);
    let out = kubectl_ok(&cluster, &["patch", "deployment", "web", "-p", sidecar]).await;
    assert_eq!(out.trim(), "deployment.apps/web patched (no change)");

    kubectl_ok(
        &cluster,
        &["patch", "deployment", "web", "--type=merge", "-p", sidecar],
    )
    .await;
    assert_eq!(containers().await, ["sidecar=busybox"]);

    kubectl_ok(
        &cluster,
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":2}]"#,
        ],
    )
    .await;
    let (ok, out, err) = cluster
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/paused","value":true},{"op":"test","path":"/spec/replicas","value":1}]"#,
        ])
        .await;
    assert!(!ok, "a failed test refuses the patch: {out}");
    assert!(
        err.starts_with("The request is invalid: ")
            && err.contains("testing value /spec/replicas failed: test failed"),
        "{err}"
    );
    let spec = deployments.get("web").await.expect("read").spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.paused, None, "nothing of a refused patch is kept");
    cluster.stop().await;
}

/// `kubectl label` and `annotate` patch `metadata.labels` and `metadata.annotations`; a
/// `--resource-version` precondition that no longer holds is kube-apiserver's 409 Conflict.
#[tokio::test]
async fn kubectl_label_and_annotate_set_replace_and_remove_keys() {
    let cluster = start().await;
    kubectl_ok(&cluster, &["create", "configmap", "settings"]).await;
    let maps: Api<ConfigMap> = cluster.api();

    let out = kubectl_ok(&cluster, &["label", "configmap", "settings", "tier=gold"]).await;
    assert_eq!(out.trim(), "configmap/settings labeled");
    let (ok, _, err) = cluster
        .kubectl(&["label", "configmap", "settings", "tier=silver"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("'tier' already has a value (gold), and --overwrite is false"),
        "{err}"
    );
    kubectl_ok(
        &cluster,
        &[
            "label",
            "configmap",
            "settings",
            "tier=silver",
            "--overwrite",
        ],
    )
    .await;
    let selected = kubectl_ok(
        &cluster,
        &["get", "configmaps", "-l", "tier=silver", "-o", "name"],
    )
    .await;
    assert_eq!(selected, "configmap/settings\n");

    let out = kubectl_ok(
        &cluster,
        &["annotate", "configmap", "settings", "owner=team-a"],
    )
    .await;
    assert_eq!(out.trim(), "configmap/settings annotated");
    let stale = maps.get("settings").await.expect("read").resource_version();
    kubectl_ok(
        &cluster,
        &[
            "annotate",
            "configmap",
            "settings",
            "owner=team-b",
            "--overwrite",
        ],
    )
    .await;
    let (ok, _, err) = cluster
        .kubectl(&[
            "annotate",
            "configmap",
            "settings",
            "owner=team-c",
            "--overwrite",
            &format!("--resource-version={}", stale.unwrap_or_default()),
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains(
            "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified"
        ),
        "{err}"
    );

    let out = kubectl_ok(&cluster, &["label", "configmap", "settings", "tier-"]).await;
    assert_eq!(out.trim(), "configmap/settings unlabeled");
    kubectl_ok(&cluster, &["annotate", "configmap", "settings", "owner-"]).await;
    let map = maps.get("settings").await.expect("read");
    assert!(!map.labels().contains_key("tier"), "{:?}", map.labels());
    assert!(
        !map.annotations().contains_key("owner"),
        "{:?}",
        map.annotations()
    );
    cluster.stop().await;
}

/// `kubectl rollout restart` patches the pod template's `kubectl.kubernetes.io/restartedAt`
/// annotation, which kube-controller-manager's Deployment controller rolls out as a new
/// template (a second ReplicaSet); `rollout status` waits for it and `rollout history` lists
/// both revisions. `kubectl wait` reads the Deployment's `Available` condition and
/// `status.readyReplicas`, and waits for the old pods to go.
#[tokio::test]
async fn kubectl_rollout_restart_rolls_a_new_template_and_wait_sees_it_done() {
    let (cluster, deployments) = start_with_web(2).await;
    let out = kubectl_ok(
        &cluster,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=30s",
        ],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/web condition met");
    let first = kubectl_ok(&cluster, &["get", "pods", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(first.lines().count(), 2, "{first}");

    let out = kubectl_ok(&cluster, &["rollout", "restart", "deployment/web"]).await;
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    let restarted = deployments.get("web").await.expect("read");
    let annotations = restarted
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        annotations
            .get("kubectl.kubernetes.io/restartedAt")
            .is_some_and(|at| at.parse::<jiff::Timestamp>().is_ok()),
        "{annotations:?}"
    );
    let out = kubectl_ok(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets: Api<ReplicaSet> = cluster.api();
    let listed = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listed")
        .items;
    assert_eq!(listed.len(), 2, "a new ReplicaSet for the new template");
    let history = kubectl_ok(&cluster, &["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|line| !line.starts_with("REVISION"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    let ready = kubectl_ok(
        &cluster,
        &[
            "wait",
            "--for=jsonpath={.status.updatedReplicas}=2",
            "deployment/web",
            "--timeout=30s",
        ],
    )
    .await;
    assert_eq!(ready.trim(), "deployment.apps/web condition met");
    let old: Vec<&str> = first.lines().collect();
    let mut args = vec!["wait", "--for=delete", "--timeout=30s"];
    args.extend(old.iter().copied());
    kubectl_ok(&cluster, &args).await;
    let now = kubectl_ok(&cluster, &["get", "pods", "-l", "app=web", "-o", "name"]).await;
    assert!(now.lines().all(|pod| !old.contains(&pod)), "{now}");

    // `kubectl events` lists core/v1 events; `--for` narrows them to the Deployment's.
    let events = kubectl_ok(&cluster, &["events", "--for", "deployment/web"]).await;
    let header: Vec<&str> = events
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{events}"
    );
    assert!(
        events
            .lines()
            .skip(1)
            .all(|line| line.contains("Deployment/web")),
        "{events}"
    );
    assert!(events.contains("ScalingReplicaSet"), "{events}");
    cluster.stop().await;
}

/// `--cascade=orphan` is `propagationPolicy=Orphan`: kube-apiserver gives the owner the
/// `orphan` finalizer and the garbage collector strips the dependents' ownerReferences before
/// the owner goes, so the ReplicaSet and its pods stay. `--cascade=background` (the default)
/// deletes the owner at once and the collector then deletes its dependents.
#[tokio::test]
async fn kubectl_delete_orphans_or_collects_the_dependents() {
    let (cluster, deployments) = start_with_web(2).await;
    let pods = cluster.pods();
    let count = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods listed")
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .count()
    };
    eventually("two pods", 30, || async { count().await == 2 }).await;

    let out = kubectl_ok(
        &cluster,
        &["delete", "deployment", "web", "--cascade=orphan"],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps \"web\" deleted");
    assert!(deployments.get_opt("web").await.expect("read").is_none());
    let sets: Api<ReplicaSet> = cluster.api();
    let orphaned = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listed")
        .items;
    assert_eq!(orphaned.len(), 1, "the ReplicaSet stays");
    assert!(
        orphaned[0].owner_references().is_empty(),
        "{:?}",
        orphaned[0].owner_references()
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(count().await, 2, "the pods stay too");

    let name = orphaned[0].name_any();
    let out = kubectl_ok(
        &cluster,
        &["delete", "replicaset", &name, "--cascade=background"],
    )
    .await;
    assert_eq!(out.trim(), format!("replicaset.apps \"{name}\" deleted"));
    eventually("the collector deletes the pods", 30, || async {
        count().await == 0
    })
    .await;
    cluster.stop().await;
}
