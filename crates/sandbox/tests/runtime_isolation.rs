//! The local runtime keeps pods apart from each other and from the host: each pod's attack is
//! run as a tenant would run it (a pod with a shell or python3), and the test looks at what a
//! user would observe: the pod's own log, its Events, and the host's files.
//!
//! A temporary directory stands in for the host's files (never the real /dev or /etc).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

/// The first uid of the range the runtime gives pods (runtime/users.rs).
const POD_UID_RANGE: std::ops::Range<u32> = 1_900_000_000..2_100_000_000;

fn runs_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn start_on(root: &Path, data: Option<&Path>) -> (Sandbox, Client) {
    let mut builder = Sandbox::builder().runtime(
        RuntimeOptions::new(root)
            .crash_loop_backoff(Duration::from_secs(2), Duration::from_secs(4)),
    );
    if let Some(data) = data {
        builder = builder.data_dir(data);
    }
    let sandbox = builder.start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    (sandbox, client)
}

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), "default")
}

/// A pod running `sh -c script`, with `container` merged into its container and `spec` into
/// its spec.
fn shell_pod(name: &str, script: &str, container: Value, spec: Value) -> Pod {
    let mut container_json =
        json!({"name": "main", "image": "ignored", "command": ["sh", "-c", script]});
    merge(&mut container_json, container);
    let mut spec_json = json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "containers": [container_json],
    });
    merge(&mut spec_json, spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec_json})).expect("pod")
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (key, value) in extra {
            target.insert(key, value);
        }
    }
}

async fn create(client: &Client, pod: &Pod) -> Pod {
    pods(client)
        .create(&PostParams::default(), pod)
        .await
        .expect("pod created")
}

async fn create_secret(client: &Client, name: &str, data: Value) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .expect("secret"),
        )
        .await
        .expect("secret created");
}

async fn wait_for_log(client: &Client, name: &str, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..300 {
        text = pods(client)
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = pods(client).get(name).await.ok().and_then(|p| p.status);
    let events = events(client, name).await;
    panic!(
        "the log of {name} never showed {needle:?}; it was:\n{text}\nstatus: {}\nevents: {events:#?}",
        serde_json::to_string_pretty(&status).unwrap_or_default()
    );
}

/// The pod's Events as `reason: message`.
async fn events(client: &Client, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect()
}

/// Waits for the pod's event saying `needle`, or for the host's files to change (the attack
/// worked), whichever comes first; the host is checked first.
async fn wait_for_refusal(client: &Client, pod: &str, needle: &str, host: &Path) -> String {
    let mut seen = Vec::new();
    for _ in 0..300 {
        assert_eq!(host_contents(host), untouched(), "the host's files changed");
        seen = events(client, pod).await;
        if let Some(found) = seen.iter().find(|e| e.contains(needle)) {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no event of {pod} says {needle:?}; its events: {seen:#?}");
}

async fn wait_until_gone(client: &Client, name: &str) {
    for _ in 0..300 {
        if pods(client).get_opt(name).await.expect("get").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {name} was never removed");
}

fn container_waiting_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// A directory standing in for the host's files, with one file the attacks aim at.
fn host_dir() -> tempfile::TempDir {
    let host = tempfile::tempdir().expect("host stand-in");
    std::fs::write(host.path().join("precious"), "host data\n").expect("host file");
    host
}

/// Everything in the host stand-in, with the content of each file; symlinks show as such.
fn host_contents(host: &Path) -> BTreeSet<(String, String)> {
    std::fs::read_dir(host)
        .expect("the host directory is still there")
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
            let content = if meta.file_type().is_symlink() {
                format!("symlink to {:?}", std::fs::read_link(entry.path()))
            } else if meta.is_dir() {
                "a directory".to_string()
            } else {
                std::fs::read_to_string(entry.path()).unwrap_or_default()
            };
            (name, content)
        })
        .collect()
}

fn untouched() -> BTreeSet<(String, String)> {
    [("precious".to_string(), "host data\n".to_string())].into()
}

fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join("pods")
        .join(pod.metadata.uid.as_deref().expect("uid"))
}

/// A value of `key=value` in a log line.
fn field(log: &str, key: &str) -> String {
    log.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {log:?}"))
        .to_string()
}

#[tokio::test]
async fn pods_run_as_users_of_their_own_and_cannot_read_each_other() {
    if !runs_as_root() {
        eprintln!("skipped: only a runtime running as root can give pods users of their own");
        return;
    }
    let root = tempfile::tempdir().expect("runtime dir");
    let (sandbox, client) = start_on(root.path(), None).await;
    // The victim holds a store key in its environment, as PostgreSQL's pod does, and files.
    let victim = create(
        &client,
        &shell_pod(
            "victim",
            "echo private > \"$DATA/private\"; echo private > \"$TUSK_SANDBOX_POD_ROOT/private\"; \
             echo \"uid=$(id -u) pid=$$$$\"; exec sleep 60",
            json!({
                "env": [
                    {"name": "AWS_SECRET_ACCESS_KEY", "value": "victim-store-key"},
                    {"name": "DATA", "value": "/data"},
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }),
            // The same runAsUser as every PostgreSQL pod: it must not make them one user.
            json!({
                "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                "volumes": [{"name": "data", "emptyDir": {}}],
            }),
        ),
    )
    .await;
    let log = wait_for_log(&client, "victim", "pid=").await;
    let victim_uid: u32 = field(&log, "uid").parse().expect("uid");
    let victim_pid = field(&log, "pid");
    let victim_dir = pod_dir(root.path(), &victim);
    let program = r#"
import os
print("uid=%d" % os.getuid())
targets = [
    ("environ", "/proc/%s/environ" % os.environ["VICTIM_PID"]),
    ("root", os.environ["VICTIM_DIR"] + "/root/private"),
    ("volume", os.environ["VICTIM_DIR"] + "/volumes/data/private"),
]
for what, path in targets:
    try:
        data = open(path, "rb").read()
        print("%s: read %d bytes" % (what, len(data)))
    except OSError as error:
        print("%s: %s" % (what, type(error).__name__))
"#;
    let attacker: Pod = serde_json::from_value(json!({
        "metadata": {"name": "attacker"},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
            "containers": [{
                "name": "main",
                "image": "python:3",
                "command": ["python3", "-c", program],
                "env": [
                    {"name": "VICTIM_PID", "value": victim_pid},
                    {"name": "VICTIM_DIR", "value": victim_dir.to_str().expect("utf-8")},
                ],
            }],
        },
    }))
    .expect("pod");
    create(&client, &attacker).await;
    let log = wait_for_log(&client, "attacker", "volume: ").await;
    let attacker_uid: u32 = field(&log, "uid").parse().expect("uid");
    assert_ne!(victim_uid, attacker_uid, "two pods, two users");
    for uid in [victim_uid, attacker_uid] {
        assert!(
            POD_UID_RANGE.contains(&uid),
            "{uid} is in the pods' range, not a host user's"
        );
    }
    let lines: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "environ: PermissionError",
            "root: PermissionError",
            "volume: PermissionError"
        ],
        "{log}"
    );
    // The user is a real one while the pod runs (programs look themselves up), and goes
    // with the pod.
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(victim_uid))
        .expect("lookup")
        .expect("the victim's user exists while it runs");
    assert!(user.name.starts_with("tusk"), "{}", user.name);
    pods(&client)
        .delete("victim", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until_gone(&client, "victim").await;
    let mut gone = false;
    for _ in 0..100 {
        gone = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(victim_uid))
            .expect("lookup")
            .is_none();
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the victim's user went with it");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_symlink_planted_over_a_mount_point_is_not_followed_after_a_restart() {
    let root = tempfile::tempdir().expect("runtime dir");
    let data = tempfile::tempdir().expect("data dir");
    let host = host_dir();
    let (sandbox, client) = start_on(root.path(), Some(data.path())).await;
    create_secret(&client, "creds", json!({"key": "v1"})).await;
    // The mount's parent directory becomes a symlink to the host: a runtime that sets the
    // mount up again through it would remove the host's `precious` and put its link there.
    let script = "APP=\"$TUSK_SANDBOX_POD_ROOT/etc/app\"; \
                  if [ ! -L \"$APP\" ]; then rm -rf \"$APP\" && ln -s \"$HOST\" \"$APP\" && echo planted; fi; \
                  exec sleep 60";
    create(
        &client,
        &shell_pod(
            "planter",
            script,
            json!({
                "env": [{"name": "HOST", "value": host.path().to_str().expect("utf-8")}],
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/app/precious"}],
            }),
            json!({"volumes": [{"name": "creds", "secret": {"secretName": "creds"}}]}),
        ),
    )
    .await;
    wait_for_log(&client, "planter", "planted").await;
    sandbox.shutdown().await;

    let (sandbox, client) = start_on(root.path(), Some(data.path())).await;
    let refused = wait_for_refusal(&client, "planter", "symlink", host.path()).await;
    assert!(refused.starts_with("FailedMount: "), "{refused}");
    assert_eq!(host_contents(host.path()), untouched());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_pod_cannot_redirect_the_secret_update_swap() {
    let root = tempfile::tempdir().expect("runtime dir");
    let host = host_dir();
    let (sandbox, client) = start_on(root.path(), None).await;
    create_secret(&client, "creds", json!({"key": "v1"})).await;
    // The volume's real directory is where the mount point's symlink leads. Pointing its
    // `..data` at the host would make the next update remove the host directory as the
    // previous version; a file in the current version's directory would be the runtime's to
    // write through.
    let script = "VOL=$(readlink \"$TUSK_SANDBOX_POD_ROOT/etc/creds\"); \
                  if ln -sfn \"$HOST\" \"$VOL/..data\" 2>/dev/null; then echo data:swapped; else echo data:denied; fi; \
                  if ln -s \"$HOST/precious\" \"$VOL/..data/planted\" 2>/dev/null; then echo version:written; else echo version:denied; fi; \
                  echo done; exec sleep 60";
    let pod = create(
        &client,
        &shell_pod(
            "swapper",
            script,
            json!({
                "env": [{"name": "HOST", "value": host.path().to_str().expect("utf-8")}],
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}],
            }),
            json!({"volumes": [{"name": "creds", "secret": {"secretName": "creds"}}]}),
        ),
    )
    .await;
    let log = wait_for_log(&client, "swapper", "done").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"key": "v2"}})),
        )
        .await
        .expect("secret updated");
    let key = pod_dir(root.path(), &pod).join("volumes/creds/key");
    let mut content = String::new();
    for _ in 0..100 {
        content = std::fs::read_to_string(&key).unwrap_or_default();
        if content == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(content, "v2", "the update reached the pod");
    assert_eq!(host_contents(host.path()), untouched());
    // A runtime that cannot switch users runs pods as itself: they could change the volume,
    // and only the runtime's own care keeps the host safe (checked above).
    if runs_as_root() {
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            ["data:denied", "version:denied", "done"],
            "the pod cannot change its secret volume"
        );
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn deleting_a_pod_follows_none_of_its_symlinks() {
    let root = tempfile::tempdir().expect("runtime dir");
    let host = host_dir();
    let (sandbox, client) = start_on(root.path(), None).await;
    let script = "ln -s \"$HOST\" \"$SCRATCH/host\"; ln -s \"$HOST/precious\" \"$SCRATCH/precious\"; \
                  ln -s \"$HOST\" \"$TUSK_SANDBOX_POD_ROOT/host\"; mkdir -p \"$SCRATCH/deep\"; \
                  ln -s \"$HOST\" \"$SCRATCH/deep/host\"; echo planted; exec sleep 60";
    let pod = create(
        &client,
        &shell_pod(
            "doomed",
            script,
            json!({
                "env": [
                    {"name": "HOST", "value": host.path().to_str().expect("utf-8")},
                    {"name": "SCRATCH", "value": "/scratch"},
                ],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }),
            json!({"volumes": [{"name": "scratch", "emptyDir": {}}]}),
        ),
    )
    .await;
    wait_for_log(&client, "doomed", "planted").await;
    pods(&client)
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until_gone(&client, "doomed").await;
    let dir = pod_dir(root.path(), &pod);
    for _ in 0..50 {
        if !dir.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir.exists(), "the pod's directory went");
    assert_eq!(host_contents(host.path()), untouched());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_host_path_volume_is_refused() {
    let root = tempfile::tempdir().expect("runtime dir");
    let host = host_dir();
    let (sandbox, client) = start_on(root.path(), None).await;
    create(
        &client,
        &shell_pod(
            "host-reader",
            "cat /host/precious; echo owned > /host/precious",
            json!({"volumeMounts": [{"name": "host", "mountPath": "/host"}]}),
            json!({"volumes": [{"name": "host", "hostPath": {"path": host.path().to_str().expect("utf-8")}}]}),
        ),
    )
    .await;
    let refused = wait_for_refusal(&client, "host-reader", "hostPath", host.path()).await;
    assert_eq!(
        refused,
        "FailedMount: MountVolume.SetUp failed for volume \"host\" : hostPath volumes are not \
         allowed: the sandbox runs pods on the host itself, so a hostPath would expose the \
         host's files"
    );
    let pod = pods(&client).get("host-reader").await.expect("pod");
    assert_eq!(phase(&pod), "Pending");
    assert_eq!(
        container_waiting_reason(&pod).as_deref(),
        Some("ContainerCreating")
    );
    assert_eq!(host_contents(host.path()), untouched());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn paths_with_dot_dot_are_refused() {
    let root = tempfile::tempdir().expect("runtime dir");
    let host = host_dir();
    let (sandbox, client) = start_on(root.path(), None).await;
    // Enough `..` to climb from any volume directory to `/`, then down into the host.
    let climb = "../".repeat(64);
    let into_host = |name: &str| {
        format!(
            "{climb}{}/{name}",
            host.path().to_str().expect("utf-8").trim_start_matches('/')
        )
    };
    create(
        &client,
        &shell_pod(
            "sub-path",
            "ls /data",
            json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": into_host("by-sub-path")}]}),
            json!({"volumes": [{"name": "data", "emptyDir": {}}]}),
        ),
    )
    .await;
    create(
        &client,
        &shell_pod(
            "mount-path",
            "ls /data",
            json!({"volumeMounts": [{"name": "data", "mountPath": format!("/{}", into_host("by-mount-path"))}]}),
            json!({"volumes": [{"name": "data", "emptyDir": {}}]}),
        ),
    )
    .await;
    let sub_path = wait_for_refusal(&client, "sub-path", "invalid subPath", host.path()).await;
    assert!(
        sub_path.starts_with(
            "FailedMount: MountVolume.SetUp failed for volume \"data\" : invalid subPath: "
        ) && sub_path.ends_with("must not contain '..'"),
        "{sub_path}"
    );
    let mount_path =
        wait_for_refusal(&client, "mount-path", "invalid mountPath", host.path()).await;
    assert!(
        mount_path.ends_with("must not contain '..'"),
        "{mount_path}"
    );
    for name in ["sub-path", "mount-path"] {
        let pod = pods(&client).get(name).await.expect("pod");
        assert_eq!(phase(&pod), "Pending", "{name}");
    }
    assert_eq!(host_contents(host.path()), untouched());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_users_of_a_removed_runtime_directory_are_removed_by_the_next_runtime() {
    if !runs_as_root() {
        eprintln!("skipped: only a runtime running as root gives pods users of their own");
        return;
    }
    let first_root = tempfile::tempdir().expect("runtime dir");
    let (sandbox, client) = start_on(first_root.path(), None).await;
    create(
        &client,
        &shell_pod(
            "left",
            "echo \"uid=$(id -u)\"; exec sleep 60",
            json!({}),
            json!({}),
        ),
    )
    .await;
    let log = wait_for_log(&client, "left", "uid=").await;
    let uid: u32 = field(&log, "uid").parse().expect("uid");
    // A shutdown keeps the pod, and its user, for the next run in the same directory...
    sandbox.shutdown().await;
    let lookup = || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .expect("lookup")
            .is_some()
    };
    assert!(lookup(), "the user stays while its pod may resume");
    // ...which never comes once the directory is gone, as a test's temporary one goes.
    drop(first_root);
    let second_root = tempfile::tempdir().expect("runtime dir");
    let (sandbox, _client) = start_on(second_root.path(), None).await;
    let mut still_there = true;
    for _ in 0..100 {
        still_there = lookup();
        if !still_there {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!still_there, "the next runtime removed the orphaned user");
    sandbox.shutdown().await;
}
