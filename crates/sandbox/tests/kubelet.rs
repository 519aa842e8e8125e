//! The local runtime (the kubelet stand-in), seen as a user sees a kubelet: pods running real
//! local programs, their status, Events and logs read back over HTTPS with kube-rs and the
//! real kubectl.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

/// A sandbox with a runtime, and the directories it keeps.
struct Cluster {
    sandbox: Sandbox,
    client: Client,
    _root: tempfile::TempDir,
}

fn options(root: &Path) -> RuntimeOptions {
    // A short back-off keeps crash loops quick while still showing CrashLoopBackOff.
    RuntimeOptions::new(root).crash_loop_backoff(Duration::from_secs(2), Duration::from_secs(4))
}

async fn start() -> Cluster {
    let root = tempfile::tempdir().expect("runtime dir");
    let sandbox = Sandbox::builder()
        .runtime(options(root.path()))
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    Cluster {
        sandbox,
        client,
        _root: root,
    }
}

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), "default")
}

/// A pod with one container running `sh -c script`, no service-account token, and a short
/// grace period; `extra` is merged into the pod spec and the container.
fn shell_pod(name: &str, script: &str, container: Value, spec: Value) -> Pod {
    let mut container_json =
        json!({"name": "main", "image": "ignored", "command": ["sh", "-c", script]});
    merge(&mut container_json, container);
    let mut spec_json = json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 2,
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

async fn create(client: &Client, pod: &Pod) {
    pods(client)
        .create(&PostParams::default(), pod)
        .await
        .expect("pod created");
}

/// Creates the ConfigMap `name` in `default` with `data`.
async fn create_config_map(client: &Client, name: &str, data: Value) {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("map"),
    )
    .await
    .expect("map created");
}

/// Polls until `check` accepts the pod, or panics after a while.
async fn wait_for(client: &Client, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let api = pods(client);
    let mut last = None;
    for _ in 0..200 {
        if let Ok(pod) = api.get(name).await {
            if check(&pod) {
                return pod;
            }
            last = Some(pod);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for pod {name} to be {what}; last seen: {}",
        serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap_or_default()
    );
}

async fn wait_until_gone(client: &Client, name: &str) {
    let api = pods(client);
    for _ in 0..200 {
        if api.get_opt(name).await.expect("get").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {name} was never removed");
}

async fn wait_for_log(client: &Client, name: &str, needle: &str) -> String {
    let api = pods(client);
    let mut text = String::new();
    for _ in 0..200 {
        text = api
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log of {name} never showed {needle:?}; it was:\n{text}");
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn container_status(pod: &Pod) -> Value {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    serde_json::to_value(statuses.first()).unwrap_or(Value::Null)
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

async fn event_reasons(client: &Client, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let selector = format!("involvedObject.name={pod}");
    events
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Runs kubectl without blocking the runtime the sandbox serves it from.
async fn kubectl_output(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.sandbox.kubeconfig_path())
        // A cache of this sandbox's own: kubectl keys its discovery cache by port alone.
        .env(
            "KUBECACHEDIR",
            cluster
                .sandbox
                .kubeconfig_path()
                .with_file_name("kubectl-cache"),
        )
        .args(args)
        .output()
        .await
        .expect("kubectl runs")
}

async fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let output = kubectl_output(cluster, args).await;
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn process_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} was never written", path.display());
}

/// Where the runtime keeps volume `volume` of the pod `name`: the test reads what the pod
/// wrote there (a hostPath would do it on a real node, but the runtime refuses hostPaths).
async fn volume_dir(client: &Client, root: &Path, name: &str, volume: &str) -> PathBuf {
    let pod = pods(client).get(name).await.expect("pod");
    let uid = pod.metadata.uid.expect("uid");
    root.join("pods").join(uid).join("volumes").join(volume)
}

/// A ClusterIP in the sandbox's service range (127.128.0.0/10), different in each test
/// process, should anything bind it.
fn service_ip() -> Ipv4Addr {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let offset = (nanos ^ std::process::id().rotate_left(11)) % ((1 << 22) - 2) + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 128, 0, 0)) + offset)
}

#[tokio::test]
async fn env_from_secrets_config_maps_fields_and_service_links() {
    let cluster = start().await;
    let client = &cluster.client;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret created");
    create_config_map(client, "settings", json!({"mode": "fast", "LEVEL": "3"})).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "my-db"}, "spec": {"clusterIP": service_ip().to_string(), "ports": [{"port": 5432}]}}))
                .expect("service"),
        )
        .await
        .expect("service created");
    let script = "echo \"secret=$PASSWORD mode=$MODE level=$LEVEL name=$NAME ip=$IP ref=$REF \
                  kube=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT db=$MY_DB_SERVICE_HOST:$MY_DB_SERVICE_PORT \
                  app=$APP\"; sleep 30";
    let pod = shell_pod(
        "env",
        script,
        json!({
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "MISSING", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": true}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "REF", "value": "$(NAME)-$(MODE)-$$(NAME)-$(UNDEFINED)"},
            ],
        }),
        json!({}),
    );
    let mut pod = pod;
    pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    create(client, &pod).await;
    let running = wait_for(client, "env", "running", |p| phase(p) == "Running").await;
    let ip = pod_ip(&running).expect("a pod IP");
    assert!(
        ip.is_loopback() && ip.octets()[1] & 0xc0 == 64,
        "{ip} is in 127.64.0.0/10"
    );
    let log = wait_for_log(client, "env", "secret=").await;
    let db_ip = service.spec.and_then(|s| s.cluster_ip).expect("cluster IP");
    let expected = format!(
        "secret=hunter2 mode=fast level=3 name=env ip={ip} ref=env-fast-$(NAME)-$(UNDEFINED) kube=127.0.0.1:{} db={db_ip}:5432 app=web",
        cluster.sandbox.addr().port()
    );
    assert_eq!(log.trim(), expected);
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("tusk-sandbox")
    );
    assert_eq!(condition(&running, "PodScheduled").as_deref(), Some("True"));
    let reasons = event_reasons(client, "env").await;
    for reason in ["Scheduled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_missing_secret_holds_the_container_with_a_config_error() {
    let cluster = start().await;
    let client = &cluster.client;
    let pod = shell_pod(
        "needs-secret",
        "echo \"got $TOKEN\"; sleep 30",
        json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]}),
        json!({}),
    );
    create(client, &pod).await;
    let waiting = wait_for(client, "needs-secret", "waiting on its secret", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(phase(&waiting), "Pending");
    assert_eq!(
        container_status(&waiting)["state"]["waiting"]["message"],
        "secret \"later\" not found"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "later"}, "stringData": {"token": "t0k"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret created");
    wait_for_log(client, "needs-secret", "got t0k").await;
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn secret_and_config_map_volumes_are_files_that_follow_updates() {
    let cluster = start().await;
    let client = &cluster.client;
    create_config_map(client, "conf", json!({"app.conf": "v=1", "other": "x"})).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "tls"}, "stringData": {"key": "s3cr3t"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret created");
    // The paths reach the script through env and args, which the runtime rebases.
    let script = "cat \"$1\"; echo; stat -L -c %a \"$KEY\"; cat \"$KEY\"; echo; \
                  ls \"$CONF_DIR\"; while true; do cat \"$CONF_DIR/renamed.conf\"; echo; sleep 0.2; done";
    let pod = shell_pod(
        "files",
        script,
        json!({
            "args": ["sh", "/etc/app/renamed.conf"],
            "env": [
                {"name": "KEY", "value": "/etc/tls/key"},
                {"name": "CONF_DIR", "value": "/etc/app"},
            ],
            "volumeMounts": [
                {"name": "conf", "mountPath": "/etc/app"},
                {"name": "tls", "mountPath": "/etc/tls"},
            ],
        }),
        json!({"volumes": [
            {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "app.conf", "path": "renamed.conf"}]}},
            {"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o600}},
        ]}),
    );
    create(client, &pod).await;
    let log = wait_for_log(client, "files", "renamed.conf\n").await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[..5],
        ["v=1", "600", "s3cr3t", "renamed.conf", "v=1"],
        "{log}"
    );
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    maps.patch(
        "conf",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"app.conf": "v=2"}})),
    )
    .await
    .expect("map updated");
    wait_for_log(client, "files", "v=2").await;
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn claims_bind_grow_and_keep_their_data_across_pods() {
    let cluster = start().await;
    let client = &cluster.client;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }))
            .expect("claim"),
        )
        .await
        .expect("claim created");
    let capacity = |claim: &PersistentVolumeClaim| {
        let status = claim.status.clone().unwrap_or_default();
        (
            status.phase.unwrap_or_default(),
            status
                .capacity
                .and_then(|c| c.get("storage").map(|q| q.0.clone()))
                .unwrap_or_default(),
        )
    };
    let mut seen = (String::new(), String::new());
    for _ in 0..100 {
        seen = capacity(&claims.get("data").await.expect("claim"));
        if seen.0 == "Bound" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ("Bound".to_string(), "1Gi".to_string()));
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .expect("claim grown");
    for _ in 0..100 {
        seen = capacity(&claims.get("data").await.expect("claim"));
        if seen.1 == "2Gi" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ("Bound".to_string(), "2Gi".to_string()));
    // The volume's blocks are taken on the host when it is made and grown, as a provisioned
    // disk's are: a host disk that fills up later cannot fail the pod's writes.
    let uid = claims
        .get("data")
        .await
        .expect("claim")
        .metadata
        .uid
        .expect("uid");
    let image = cluster
        ._root
        .path()
        .join("volumes")
        .join(format!("{uid}.img"));
    let allocated = std::os::unix::fs::MetadataExt::blocks(
        &std::fs::metadata(&image).expect("the volume's image"),
    ) * 512;
    assert!(
        allocated >= 2 << 30,
        "{allocated} bytes of the host's disk for a claim of 2Gi"
    );

    let volume = json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}], "restartPolicy": "Never"});
    let mount = |script_env: &str| json!({"env": [{"name": "FILE", "value": script_env}], "volumeMounts": [{"name": "data", "mountPath": "/var/lib/data"}]});
    create(
        client,
        &shell_pod(
            "writer",
            "echo kept > \"$FILE\"",
            mount("/var/lib/data/f"),
            volume.clone(),
        ),
    )
    .await;
    wait_for(client, "writer", "Succeeded", |p| phase(p) == "Succeeded").await;
    pods(client)
        .delete("writer", &DeleteParams::default())
        .await
        .expect("writer deleted");
    wait_until_gone(client, "writer").await;
    create(
        client,
        &shell_pod(
            "reader",
            "cat \"$FILE\"; stat -f -c '%b %S' \"$(dirname \"$FILE\")\"",
            mount("/var/lib/data/f"),
            volume,
        ),
    )
    .await;
    wait_for(client, "reader", "Succeeded", |p| phase(p) == "Succeeded").await;
    let log = pods(client)
        .logs("reader", &LogParams::default())
        .await
        .expect("log");
    let (kept, filesystem) = log.split_once('\n').expect("two lines");
    assert_eq!(kept, "kept", "{log}");
    // The pod sees a filesystem of the claim's grown size (less what ext4 keeps for itself),
    // not the host's disk.
    let size: Vec<u64> = filesystem
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    let bytes = size[0] * size[1];
    assert!(
        bytes <= 2 << 30 && bytes > (2 << 30) * 9 / 10,
        "{bytes} bytes: not the claim's 2Gi"
    );
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn each_pod_has_its_own_address_and_http_readiness() {
    let cluster = start().await;
    let client = &cluster.client;
    for name in ["web-a", "web-b"] {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "web",
                    "image": "python:3",
                    "command": ["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                }],
            },
        }))
        .expect("pod");
        create(client, &pod).await;
    }
    let mut addresses = Vec::new();
    for name in ["web-a", "web-b"] {
        let ready = wait_for(client, name, "Ready", |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
        assert_eq!(container_status(&ready)["ready"], true);
        addresses.push(pod_ip(&ready).expect("pod IP"));
    }
    assert_ne!(addresses[0], addresses[1]);
    // Probes that keep passing change nothing, so nothing is written.
    let settled = pods(client).get("web-a").await.expect("pod");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = pods(client).get("web-a").await.expect("pod");
    assert_eq!(
        settled.metadata.resource_version,
        later.metadata.resource_version
    );
    let table = kubectl(&cluster, &["get", "pod", "web-a", "--no-headers"]).await;
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(columns[..4], ["web-a", "1/1", "Running", "0"], "{table}");
    for address in addresses {
        let mut stream = tokio::net::TcpStream::connect((address, 8080))
            .await
            .expect("the server listens on its pod IP");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    }
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn readiness_follows_an_exec_probe() {
    let cluster = start().await;
    let client = &cluster.client;
    let script = "sleep 1; touch \"$FLAG\"; sleep 2; rm \"$FLAG\"; sleep 30";
    let pod = shell_pod(
        "flag",
        script,
        json!({
            "env": [{"name": "FLAG", "value": "/state/ready"}],
            "volumeMounts": [{"name": "state", "mountPath": "/state"}],
            "readinessProbe": {"exec": {"command": ["test", "-e", "/state/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
        }),
        json!({"volumes": [{"name": "state", "emptyDir": {}}]}),
    );
    create(client, &pod).await;
    let running = wait_for(client, "flag", "running", |p| phase(p) == "Running").await;
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));
    wait_for(client, "flag", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    let unready = wait_for(client, "flag", "not Ready again", |p| {
        condition(p, "Ready").as_deref() == Some("False")
    })
    .await;
    assert_eq!(container_status(&unready)["ready"], false);
    assert!(
        event_reasons(client, "flag")
            .await
            .iter()
            .any(|r| r == "Unhealthy")
    );
    cluster.sandbox.shutdown().await;
}

/// The kubelet's prober ticks every period and triggers only readiness at once when a
/// container has started: a liveness probe's first check comes a period after the start, so a
/// server that takes a moment to listen is not reported unhealthy for it.
#[tokio::test]
async fn liveness_is_first_probed_a_period_after_the_start_and_readiness_at_once() {
    let cluster = start().await;
    let client = &cluster.client;
    let never = json!({"tcpSocket": {"port": 9}, "periodSeconds": 4, "failureThreshold": 1});
    let pod = shell_pod(
        "slow",
        "exec sleep 30",
        json!({"livenessProbe": never, "readinessProbe": never}),
        json!({"terminationGracePeriodSeconds": 1}),
    );
    create(client, &pod).await;
    let restarted = wait_for(client, "slow", "restarted", |p| {
        container_status(p)["restartCount"].as_i64() >= Some(1)
    })
    .await;
    let status = container_status(&restarted);
    let started: jiff::Timestamp = status["lastState"]["terminated"]["startedAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the first run's start in {status}"));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let first_failure = |kind: &str| {
        let events = &events;
        let kind = kind.to_owned();
        async move {
            events
                .list(&ListParams::default().fields("involvedObject.name=slow"))
                .await
                .expect("events")
                .items
                .into_iter()
                .filter(|e| e.message.as_deref().is_some_and(|m| m.starts_with(&kind)))
                .filter_map(|e| e.first_timestamp.map(|t| t.0))
                .min()
                .unwrap_or_else(|| panic!("no \"{kind}\" Event"))
        }
    };
    let liveness = first_failure("Liveness probe failed").await;
    let readiness = first_failure("Readiness probe failed").await;
    // Timestamps are whole seconds: a period of 4 s shows as at least 3.
    let liveness_after = liveness.duration_since(started).as_secs();
    assert!(
        liveness_after >= 3,
        "liveness first probed {liveness_after}s after the start (period 4s)"
    );
    assert!(
        readiness < liveness,
        "readiness first failed at {readiness}, not before liveness at {liveness}"
    );
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let cluster = start().await;
    let client = &cluster.client;
    let pod = shell_pod(
        "sick",
        "echo instance; exec sleep 30",
        json!({"livenessProbe": {"tcpSocket": {"port": 9}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1}}),
        json!({"terminationGracePeriodSeconds": 1}),
    );
    create(client, &pod).await;
    let restarted = wait_for(client, "sick", "restarted", |p| {
        container_status(p)["restartCount"].as_i64() >= Some(1)
    })
    .await;
    let status = container_status(&restarted);
    // sleep dies of the SIGTERM: 128 + 15.
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 143,
        "{status}"
    );
    let reasons = event_reasons(client, "sick").await;
    for reason in ["Unhealthy", "Killing"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let previous = pods(client)
        .logs(
            "sick",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("previous log");
    assert_eq!(previous, "instance\n");
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn restart_policies_decide_the_phase() {
    let cluster = start().await;
    let client = &cluster.client;
    create(
        client,
        &shell_pod(
            "once",
            "echo failing; exit 3",
            json!({}),
            json!({"restartPolicy": "Never"}),
        ),
    )
    .await;
    create(client, &shell_pod("loop", "exit 1", json!({}), json!({}))).await;
    create(
        client,
        &shell_pod(
            "missing",
            "",
            json!({"command": ["no-such-program"]}),
            json!({"restartPolicy": "Never"}),
        ),
    )
    .await;
    let not_started = wait_for(client, "missing", "Failed", |p| phase(p) == "Failed").await;
    let terminated = &container_status(&not_started)["state"]["terminated"];
    assert_eq!(terminated["reason"], "StartError");
    assert_eq!(terminated["exitCode"], 128);
    assert_eq!(
        terminated["message"],
        "failed to start container \"main\": exec: \"no-such-program\": executable file not found in $PATH"
    );
    let failed = wait_for(client, "once", "Failed", |p| phase(p) == "Failed").await;
    let terminated = &container_status(&failed)["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(container_status(&failed)["restartCount"], 0);
    let looping = wait_for(client, "loop", "in CrashLoopBackOff", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(phase(&looping), "Running");
    assert!(container_status(&looping)["restartCount"].as_i64() >= Some(1));
    assert_eq!(
        container_status(&looping)["lastState"]["terminated"]["exitCode"],
        1
    );
    assert!(
        event_reasons(client, "loop")
            .await
            .iter()
            .any(|r| r == "BackOff")
    );
    cluster.sandbox.shutdown().await;
}

/// A program the container cannot run, as a script from a ConfigMap volume whose files are
/// not executable (mode 0644 by default): the kubelet records the start error as the container's
/// waiting reason `RunContainerError`, keeps the failed start as its last state, publishes a
/// Warning `Failed` Event, and retries it with the crash-loop back-off.
#[tokio::test]
async fn a_program_that_cannot_be_executed_waits_with_run_container_error() {
    let cluster = start().await;
    let client = &cluster.client;
    create_config_map(
        client,
        "scripts",
        json!({"run.sh": "#!/bin/sh\necho hello\n"}),
    )
    .await;
    create(
        client,
        &shell_pod(
            "noexec",
            "",
            json!({"command": ["/scripts/run.sh"], "volumeMounts": [{"name": "scripts", "mountPath": "/scripts"}]}),
            json!({"volumes": [{"name": "scripts", "configMap": {"name": "scripts"}}]}),
        ),
    )
    .await;
    let expected =
        "failed to start container \"main\": exec: \"/scripts/run.sh\": permission denied";
    let refused = wait_for(client, "noexec", "waiting with RunContainerError", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "RunContainerError"
    })
    .await;
    let status = container_status(&refused);
    assert_eq!(status["state"]["waiting"]["message"], expected);
    let last = &status["lastState"]["terminated"];
    assert_eq!(
        (&last["reason"], &last["exitCode"], &last["message"]),
        (&json!("StartError"), &json!(128), &json!(expected))
    );
    assert_eq!(phase(&refused), "Running");
    assert_eq!(status["ready"], false);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = events
        .list(&ListParams::default().fields("involvedObject.name=noexec"))
        .await
        .expect("events")
        .items
        .into_iter()
        .find(|event| event.reason.as_deref() == Some("Failed"))
        .expect("a Failed Event");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message, Some(format!("Error: {expected}")));
    // Retried, and between retries in the crash-loop back-off, still with the failed start.
    let looping = wait_for(client, "noexec", "in CrashLoopBackOff", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    let status = container_status(&looping);
    assert!(status["restartCount"].as_i64() >= Some(1), "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "StartError");
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn deletion_is_graceful_then_forced() {
    let cluster = start().await;
    let client = &cluster.client;
    let mount = json!({"env": [{"name": "OUT", "value": "/out"}], "volumeMounts": [{"name": "out", "mountPath": "/out"}]});
    // Only the trap exits 0: a pod that ends Succeeded ran it.
    let polite = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let stubborn = "trap '' TERM; echo $$$$ > \"$OUT/stubborn\"; while true; do sleep 0.1; done";
    create(
        client,
        &shell_pod(
            "polite",
            polite,
            mount.clone(),
            json!({"volumes": [{"name": "out", "emptyDir": {}}], "terminationGracePeriodSeconds": 10}),
        ),
    )
    .await;
    create(
        client,
        &shell_pod(
            "stubborn",
            stubborn,
            mount,
            json!({"volumes": [{"name": "out", "emptyDir": {}}], "terminationGracePeriodSeconds": 1}),
        ),
    )
    .await;
    for name in ["polite", "stubborn"] {
        wait_for(client, name, "running", |p| phase(p) == "Running").await;
    }
    let out = volume_dir(client, cluster._root.path(), "stubborn", "out").await;
    let pid: u32 = wait_for_file(&out.join("stubborn"))
        .await
        .trim()
        .parse()
        .expect("pid");
    assert!(process_alive(pid));
    let marked = pods(client)
        .delete("polite", &DeleteParams::default())
        .await
        .expect("deleted")
        .left()
        .expect("a pod still being deleted");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(10));
    // Its last state before it goes: terminal, by the exit code of the trap.
    let from = marked
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");
    let watch = WatchParams::default()
        .fields("metadata.name=polite")
        .timeout(20);
    let mut events = Box::pin(pods(client).watch(&watch, &from).await.expect("watch"));
    let mut last_phase = String::new();
    while let Some(event) = events.try_next().await.expect("watch event") {
        match event {
            WatchEvent::Modified(pod) => last_phase = phase(&pod).to_string(),
            WatchEvent::Deleted(pod) => {
                last_phase = phase(&pod).to_string();
                break;
            }
            _ => {}
        }
    }
    assert_eq!(last_phase, "Succeeded");
    wait_until_gone(client, "polite").await;

    let started = std::time::Instant::now();
    pods(client)
        .delete("stubborn", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until_gone(client, "stubborn").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the grace period was waited for"
    );
    assert!(
        !process_alive(pid),
        "SIGKILL ended the process that ignored SIGTERM"
    );
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn kubectl_logs_reads_tails_and_follows() {
    let cluster = start().await;
    let client = &cluster.client;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "chatty", "labels": {"app": "chatty"}},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [
                {"name": "count", "image": "busybox", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 3; echo late; echo oops >&2"]},
                {"name": "idle", "image": "busybox", "command": ["sh", "-c", "echo idle; sleep 30"]},
            ],
        },
    }))
    .expect("pod");
    create(client, &pod).await;
    wait_for(client, "chatty", "running", |p| phase(p) == "Running").await;
    wait_for_log_container(client, "chatty", "count", "line 5").await;
    assert_eq!(
        kubectl(&cluster, &["logs", "chatty", "-c", "count", "--tail", "2"]).await,
        "line 4\nline 5\n"
    );
    // A byte limit cuts the output, mid-line too, after the tail is chosen.
    assert_eq!(
        kubectl(
            &cluster,
            &[
                "logs",
                "chatty",
                "-c",
                "count",
                "--tail",
                "2",
                "--limit-bytes",
                "9"
            ]
        )
        .await,
        "line 4\nli"
    );
    // Following returns once the container exits, with everything it wrote.
    assert_eq!(
        kubectl(&cluster, &["logs", "chatty", "-c", "count", "-f"]).await,
        "line 1\nline 2\nline 3\nline 4\nline 5\nlate\noops\n"
    );
    // As the kubelet: each line with the time the runtime read it (RFC 3339, nine digits of
    // nanoseconds), and `--since-time` (whole seconds, as kubectl sends it) skips lines before.
    let stamped = kubectl(&cluster, &["logs", "chatty", "-c", "count", "--timestamps"]).await;
    let lines: Vec<(jiff::Timestamp, &str)> = stamped
        .lines()
        .map(|line| {
            let (time, text) = line.split_once(' ').expect("a timestamp, then the line");
            assert_eq!(time.len(), "2026-01-01T00:00:00.000000000Z".len(), "{line}");
            (time.parse().expect("RFC 3339"), text)
        })
        .collect();
    let texts: Vec<&str> = lines.iter().map(|(_, text)| *text).collect();
    assert_eq!(
        texts,
        [
            "line 1", "line 2", "line 3", "line 4", "line 5", "late", "oops"
        ]
    );
    let late = lines[5].0;
    assert!(
        late.duration_since(lines[4].0).as_secs_f64() >= 1.0,
        "{stamped}"
    );
    let since = jiff::Timestamp::from_second(late.as_second()).expect("a time");
    assert_eq!(
        kubectl(
            &cluster,
            &[
                "logs",
                "chatty",
                "-c",
                "count",
                &format!("--since-time={since}")
            ]
        )
        .await,
        "late\noops\n"
    );
    assert_eq!(
        kubectl(
            &cluster,
            &["logs", "chatty", "-c", "count", "--since=1h", "--tail=3"]
        )
        .await,
        "line 5\nlate\noops\n"
    );
    assert_eq!(
        kubectl(&cluster, &["logs", "chatty", "-c", "idle"]).await,
        "idle\n"
    );
    let output = kubectl_output(&cluster, &["logs", "chatty", "-c", "idle", "--previous"]).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("previous terminated container \"idle\" in pod \"chatty\" not found"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // kubectl asks for each container's log in turn (`--all-containers`), says whose each
    // line is (`--prefix`), and finds pods by label (`-l`) with a list first. kubectl keeps
    // its requests in a Go map, so the containers come in either order; each container's
    // lines stay whole and in order.
    let count = "[pod/chatty/count] line 1\n[pod/chatty/count] line 2\n[pod/chatty/count] line 3\n\
                 [pod/chatty/count] line 4\n[pod/chatty/count] line 5\n[pod/chatty/count] late\n\
                 [pod/chatty/count] oops\n";
    let idle = "[pod/chatty/idle] idle\n";
    let all = kubectl(
        &cluster,
        &["logs", "chatty", "--all-containers", "--prefix"],
    )
    .await;
    assert!(
        all == format!("{count}{idle}") || all == format!("{idle}{count}"),
        "{all}"
    );
    assert_eq!(
        kubectl(&cluster, &["logs", "-l", "app=chatty", "-c", "idle"]).await,
        "idle\n"
    );
    cluster.sandbox.shutdown().await;
}

async fn wait_for_log_container(client: &Client, name: &str, container: &str, needle: &str) {
    let params = LogParams {
        container: Some(container.to_string()),
        ..LogParams::default()
    };
    for _ in 0..100 {
        if pods(client)
            .logs(name, &params)
            .await
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log of {name}/{container} never showed {needle:?}");
}

#[tokio::test]
async fn run_as_user_runs_unprivileged_and_can_write_its_volumes() {
    let cluster = start().await;
    let client = &cluster.client;
    let pod = shell_pod(
        "user",
        "id -u; touch \"$DATA/written\" && echo wrote",
        json!({
            "env": [{"name": "DATA", "value": "/data"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }),
        json!({
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
            "volumes": [{"name": "data", "emptyDir": {}}],
        }),
    );
    create(client, &pod).await;
    wait_for(client, "user", "Succeeded", |p| phase(p) == "Succeeded").await;
    let log = pods(client)
        .logs("user", &LogParams::default())
        .await
        .expect("log");
    let mut lines = log.lines();
    let uid: u32 = lines.next().expect("uid line").parse().expect("uid");
    let runtime_uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("own uid");
    if runtime_uid == 0 {
        assert_ne!(uid, 0, "PostgreSQL-style programs must not run as root");
    } else {
        assert_eq!(uid, runtime_uid);
    }
    assert_eq!(lines.next(), Some("wrote"));
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_missing_service_account_token_fails_the_mount() {
    let cluster = start().await;
    let client = &cluster.client;
    let pod = shell_pod(
        "tokenless",
        "echo started; sleep 30",
        json!({}),
        json!({"automountServiceAccountToken": true, "serviceAccountName": "nobody-here"}),
    );
    create(client, &pod).await;
    for _ in 0..100 {
        if event_reasons(client, "tokenless")
            .await
            .iter()
            .any(|r| r == "FailedMount")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        event_reasons(client, "tokenless")
            .await
            .iter()
            .any(|r| r == "FailedMount")
    );
    let pod = pods(client).get("tokenless").await.expect("pod");
    assert_eq!(phase(&pod), "Pending");
    assert_eq!(
        container_status(&pod)["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    assert_eq!(
        pods(client)
            .logs("tokenless", &LogParams::default())
            .await
            .ok(),
        None
    );
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_every_process_and_a_restart_resumes_the_pods() {
    let root = tempfile::tempdir().expect("runtime dir");
    let data = tempfile::tempdir().expect("data dir");
    let start_on = |root: PathBuf, data: PathBuf| async move {
        let sandbox = Sandbox::builder()
            .data_dir(data)
            .runtime(options(&root))
            .start()
            .await
            .expect("sandbox starts");
        let client = sandbox.client().await.expect("client");
        (sandbox, client)
    };
    let (sandbox, client) = start_on(root.path().to_path_buf(), data.path().to_path_buf()).await;
    // The pid is written last: once it is there, the run has counted itself in the emptyDir.
    let script = "echo x >> \"$KEEP/count\"; echo \"run $(wc -l < \"$KEEP/count\")\"; \
                  echo $$$$ > \"$OUT/pid\"; sleep 30 & wait";
    let pod = shell_pod(
        "durable",
        script,
        json!({
            "env": [{"name": "OUT", "value": "/out"}, {"name": "KEEP", "value": "/keep"}],
            "volumeMounts": [{"name": "out", "mountPath": "/out"}, {"name": "keep", "mountPath": "/keep"}],
        }),
        json!({"volumes": [{"name": "out", "emptyDir": {}}, {"name": "keep", "emptyDir": {}}], "terminationGracePeriodSeconds": 1}),
    );
    create(&client, &pod).await;
    wait_for(&client, "durable", "running", |p| phase(p) == "Running").await;
    let out = volume_dir(&client, root.path(), "durable", "out").await;
    let first_pid: u32 = wait_for_file(&out.join("pid"))
        .await
        .trim()
        .parse()
        .expect("pid");
    assert!(process_alive(first_pid));
    std::fs::remove_file(out.join("pid")).expect("pid file removed");
    sandbox.shutdown().await;
    assert!(!process_alive(first_pid), "shutdown stopped the container");

    let (sandbox, client) = start_on(root.path().to_path_buf(), data.path().to_path_buf()).await;
    let resumed = wait_for(&client, "durable", "restarted", |p| {
        container_status(p)["restartCount"] == 1 && phase(p) == "Running"
    })
    .await;
    assert!(container_status(&resumed)["lastState"]["terminated"].is_object());
    let second_pid: u32 = wait_for_file(&out.join("pid"))
        .await
        .trim()
        .parse()
        .expect("pid");
    assert!(process_alive(second_pid));
    // The emptyDir kept what the first run wrote, as a node reboot keeps it.
    assert_eq!(wait_for_log(&client, "durable", "run").await, "run 2\n");
    let previous = pods(&client)
        .logs(
            "durable",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("previous log");
    assert_eq!(previous, "run 1\n");
    sandbox.shutdown().await;
    assert!(!process_alive(second_pid));
}

#[tokio::test]
async fn a_pod_reaches_the_api_server_with_its_service_account_token() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let cluster = start().await;
    let client = &cluster.client;
    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            }))
            .expect("role"),
        )
        .await
        .expect("role created");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "default-reads-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
            }))
            .expect("binding"),
        )
        .await
        .expect("binding created");
    // Only the mounted files and the injected variables: what in-cluster clients use.
    let program = r#"
import json, os, ssl, urllib.request
sa = os.environ["SA"]
namespace = open(sa + "/namespace").read()
token = open(sa + "/token").read()
context = ssl.create_default_context(cafile=sa + "/ca.crt")
url = "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], namespace, os.environ["HOSTNAME"])
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
pod = json.load(urllib.request.urlopen(request, context=context))
print(namespace, pod["metadata"]["name"])
"#;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "token-reader"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "python:3",
                "command": ["python3", "-c", program],
                "env": [{"name": "SA", "value": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            }],
        },
    }))
    .expect("pod");
    create(client, &pod).await;
    let done = wait_for(client, "token-reader", "finished", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let log = pods(client)
        .logs("token-reader", &LogParams::default())
        .await
        .expect("log");
    assert_eq!(phase(&done), "Succeeded", "{log}");
    assert_eq!(log, "default token-reader\n");
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn init_containers_run_to_completion_first() {
    let cluster = start().await;
    let client = &cluster.client;
    let shared = json!({
        "env": [{"name": "SHARED", "value": "/shared"}],
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
    });
    let mut init = json!({"name": "prepare", "image": "busybox", "command": ["sh", "-c", "sleep 1; echo prepared > \"$SHARED/flag\""]});
    merge(&mut init, shared.clone());
    let pod = shell_pod(
        "staged",
        "cat \"$SHARED/flag\"",
        shared,
        json!({
            "restartPolicy": "Never",
            "initContainers": [init],
            "volumes": [{"name": "shared", "emptyDir": {}}],
        }),
    );
    create(client, &pod).await;
    let pending = wait_for(client, "staged", "initializing", |p| {
        condition(p, "Initialized").as_deref() == Some("False")
    })
    .await;
    assert_eq!(phase(&pending), "Pending");
    assert_eq!(
        container_status(&pending)["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    let ready = pending
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.message.clone());
    assert_eq!(
        ready.as_deref(),
        Some("containers with unready status: [main]")
    );
    let done = wait_for(client, "staged", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(condition(&done, "Initialized").as_deref(), Some("True"));
    let init_status = serde_json::to_value(
        done.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.clone())
            .unwrap_or_default(),
    )
    .expect("statuses");
    assert_eq!(init_status[0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(
        pods(client)
            .logs("staged", &LogParams::default())
            .await
            .expect("log"),
        "prepared\n"
    );
    let init_log = LogParams {
        container: Some("prepare".to_string()),
        ..LogParams::default()
    };
    assert_eq!(
        pods(client)
            .logs("staged", &init_log)
            .await
            .expect("init log"),
        ""
    );
    cluster.sandbox.shutdown().await;
}

#[tokio::test]
async fn tusk_and_postgres_commands_resolve_locally() {
    let root = tempfile::tempdir().expect("runtime dir");
    // `echo` stands in for the tusk executable: it shows the arguments it was given.
    let sandbox = Sandbox::builder()
        .runtime(options(root.path()).tusk_executable("/bin/echo"))
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "programs"},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "containers": [
                {"name": "tusk", "image": "tusk", "command": ["tusk"], "args": ["instance", "--data", "/data/pg"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "postgres", "image": "postgres", "command": ["postgres", "--version"]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }))
    .expect("pod");
    create(&client, &pod).await;
    let done = wait_for(&client, "programs", "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let pod_uid = done.metadata.uid.clone().expect("uid");
    let log = |container: &str| LogParams {
        container: Some(container.to_string()),
        ..LogParams::default()
    };
    let tusk = pods(&client)
        .logs("programs", &log("tusk"))
        .await
        .expect("log");
    // The mount path in the arguments is rebased under the pod's own root, which the pod's
    // processes name through a short link, so that a Unix socket there fits in a socket path.
    let rebased = tusk
        .strip_prefix("instance --data ")
        .and_then(|rest| rest.strip_suffix("/data/pg\n"))
        .unwrap_or_else(|| panic!("not a rebased /data/pg: {tusk}"));
    assert!(
        rebased.starts_with("/tmp/tusk-") && rebased.len() <= 24,
        "the pod's root is not named through a short link: {rebased}"
    );
    assert_eq!(
        std::fs::read_link(rebased).expect("the link lives as long as the pod"),
        root.path().join("pods").join(&pod_uid).join("root")
    );
    let postgres = pods(&client)
        .logs("programs", &log("postgres"))
        .await
        .expect("log");
    assert!(postgres.starts_with("postgres (PostgreSQL) "), "{postgres}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_stopped_pod_held_by_a_finalizer_goes_when_it_is_removed() {
    let cluster = start().await;
    let client = &cluster.client;
    let mut pod = shell_pod(
        "held",
        "exec sleep 30",
        json!({}),
        json!({"terminationGracePeriodSeconds": 1}),
    );
    pod.metadata.finalizers = Some(vec!["example.com/hold".to_string()]);
    create(client, &pod).await;
    wait_for(client, "held", "running", |p| phase(p) == "Running").await;
    pods(client)
        .delete("held", &DeleteParams::default())
        .await
        .expect("deleted");
    // The kubelet's own delete (grace 0) is done once the containers are terminated.
    let stopped = wait_for(client, "held", "stopped", |p| {
        p.metadata.deletion_grace_period_seconds == Some(0)
    })
    .await;
    assert_eq!(phase(&stopped), "Failed", "SIGTERM ended sleep with 143");
    pods(client)
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    wait_until_gone(client, "held").await;
    cluster.sandbox.shutdown().await;
}

/// The kubelet's Events are core/v1 Events from client-go's recorder: `source` names the
/// kubelet and the node, `firstTimestamp`/`lastTimestamp` bound them, and a repeat counts up
/// on the same Event (`count`), so `kubectl get events --sort-by=.lastTimestamp` lists them.
#[tokio::test]
async fn kubelet_events_carry_their_source_times_and_count() {
    let cluster = start().await;
    let client = &cluster.client;
    create(client, &shell_pod("repeat", "exit 1", json!({}), json!({}))).await;
    wait_for(client, "repeat", "restarted twice", |p| {
        container_status(p)["restartCount"].as_i64() >= Some(2)
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let listed = events
        .list(&ListParams::default().fields("involvedObject.name=repeat"))
        .await
        .expect("events")
        .items;
    let kubelet: Vec<&Event> = listed
        .iter()
        .filter(|e| e.reason.as_deref() != Some("Scheduled"))
        .collect();
    assert!(!kubelet.is_empty(), "no kubelet events: {listed:?}");
    for event in &kubelet {
        let source = event.source.clone().unwrap_or_default();
        assert_eq!(source.component.as_deref(), Some("kubelet"), "{event:?}");
        assert_eq!(source.host.as_deref(), Some("tusk-sandbox"), "{event:?}");
        assert!(
            event.first_timestamp.is_some() && event.last_timestamp.is_some(),
            "{event:?}"
        );
        assert!(event.count >= Some(1), "{event:?}");
    }
    let started: Vec<&&Event> = kubelet
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Started"))
        .collect();
    assert_eq!(started.len(), 1, "a repeat makes no new Event: {started:?}");
    assert!(
        started[0].count >= Some(2),
        "the repeated start counts up: {:?}",
        started[0]
    );
    assert!(
        started[0].last_timestamp.as_ref().map(|t| t.0)
            >= started[0].first_timestamp.as_ref().map(|t| t.0)
    );
    let sorted = kubectl(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=repeat",
            "--sort-by=.lastTimestamp",
        ],
    )
    .await;
    assert!(
        sorted.contains("Started") && sorted.contains("BackOff"),
        "kubectl get events --sort-by=.lastTimestamp printed {sorted:?}"
    );
    cluster.sandbox.shutdown().await;
}
