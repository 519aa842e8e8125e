//! `kubectl exec`, `cp`, `attach` and `port-forward` against the sandbox's local runtime: the
//! WebSocket protocols kubectl 1.33 speaks (channels for exec and attach, SPDY tunnelled in a
//! WebSocket for port-forward), served as kube-apiserver and the kubelet serve them.

mod common;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, LogParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tusk_sandbox::Sandbox;

use common::kubectl::{kubectl, kubectl_command, kubectl_ok, kubectl_with_input};
use common::{run_pod, sandbox_with_runtime};

/// A sandbox with a runtime, and the directory it keeps pods in.
struct Cluster {
    sandbox: Sandbox,
    client: Client,
    _root: tempfile::TempDir,
}

async fn start() -> Cluster {
    let (sandbox, root) = sandbox_with_runtime().await;
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

/// A pod whose one container runs `script` in sh, with an emptyDir at /data and `extra` merged
/// into the container.
fn shell_pod(name: &str, script: &str, extra: Value) -> Value {
    let mut container = json!({
        "name": "main",
        "image": "ignored",
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    });
    if let (Some(container), Value::Object(extra)) = (container.as_object_mut(), extra) {
        container.extend(extra);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [container],
        },
    })
}

/// What a process sees of its environment, one line, printed by the container itself and by a
/// command exec'd into it.
const WHOAMI: &str = r#"echo "seen: $GREETING in $(pwd) as $(id -u)""#;

/// kubelet behaviour: an exec'd command runs as a process of the container (its environment,
/// working directory and user), with its stdout, stderr and exit code back to kubectl.
#[tokio::test]
async fn kubectl_exec_runs_a_command_as_the_container_would_with_its_output_and_exit_code() {
    let cluster = start().await;
    let pod = shell_pod(
        "shell",
        &format!("{WHOAMI}; exec sleep 3600"),
        json!({"env": [{"name": "GREETING", "value": "hello"}], "workingDir": "/data"}),
    );
    run_pod(&cluster.client, pod, "seen:").await;
    let log = pods(&cluster.client)
        .logs("shell", &LogParams::default())
        .await
        .expect("log");
    let seen_by_container = log.lines().next().expect("a line").to_string();
    assert!(seen_by_container.contains("hello"), "{seen_by_container}");

    let (code, stdout, stderr) = kubectl_with_input(
        &cluster.sandbox,
        b"",
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            &format!("{WHOAMI}; echo complaint >&2; exit 3"),
        ],
    )
    .await;
    assert_eq!(stdout.trim(), seen_by_container, "stderr: {stderr}");
    assert!(stderr.contains("complaint"), "{stderr}");
    assert_eq!(
        code,
        Some(3),
        "kubectl exits with the command's code: {stderr}"
    );

    let stdout = kubectl_ok(&cluster.sandbox, &["exec", "shell", "--", "true"]).await;
    assert_eq!(stdout, "");

    let (ok, _, stderr) = kubectl(
        &cluster.sandbox,
        &["exec", "shell", "--", "no-such-program"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("executable file not found"), "{stderr}");

    let (ok, _, stderr) = kubectl(
        &cluster.sandbox,
        &["exec", "shell", "-c", "nope", "--", "true"],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("container nope is not valid for pod shell"),
        "{stderr}"
    );
}

/// kubelet behaviour: stdin reaches the command and its end closes the command's input (the
/// v5 channel protocol's close signal), which `kubectl cp` needs both ways.
#[tokio::test]
async fn kubectl_exec_takes_stdin_and_kubectl_cp_copies_both_ways() {
    let cluster = start().await;
    run_pod(
        &cluster.client,
        shell_pod("files", "echo started; exec sleep 3600", json!({})),
        "started",
    )
    .await;
    let (code, stdout, stderr) = kubectl_with_input(
        &cluster.sandbox,
        b"line one\nline two\n",
        &["exec", "-i", "files", "--", "tee", "/data/from-stdin"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "line one\nline two\n");
    let stored = kubectl_ok(
        &cluster.sandbox,
        &["exec", "files", "--", "cat", "/data/from-stdin"],
    )
    .await;
    assert_eq!(stored, "line one\nline two\n");

    let local = tempfile::tempdir().expect("local dir");
    let upload = local.path().join("upload.txt");
    let content: String = (0..5000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(&upload, &content).expect("write");
    let upload_arg = upload.display().to_string();
    kubectl_ok(
        &cluster.sandbox,
        &["cp", &upload_arg, "files:/data/copied.txt"],
    )
    .await;
    let inside = kubectl_ok(
        &cluster.sandbox,
        &["exec", "files", "--", "cat", "/data/copied.txt"],
    )
    .await;
    assert_eq!(inside, content);

    let download = local.path().join("download.txt");
    let download_arg = download.display().to_string();
    kubectl_ok(
        &cluster.sandbox,
        &["cp", "files:/data/copied.txt", &download_arg],
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(Path::new(&download)).expect("read"),
        content
    );
}

/// kube-apiserver behaviour: exec is authorized as `create` on `pods/exec` (the SPDY POST
/// always was; a WebSocket GET is since 1.35), so `get` alone does not exec; and a pod no
/// kubelet runs cannot be exec'd into.
#[tokio::test]
async fn kubectl_exec_needs_create_on_pods_exec_and_a_pod_the_runtime_runs() {
    let cluster = start().await;
    run_pod(
        &cluster.client,
        shell_pod("guarded", "echo started; exec sleep 3600", json!({})),
        "started",
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), "default");
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "tenant"}})).expect("account");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("account created");
    let token = accounts
        .create_token_request(
            "tenant",
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"audiences": []}})).expect("request"),
        )
        .await
        .expect("token")
        .status
        .and_then(|status| status.token)
        .expect("a token");
    let grant = |verbs: &[&str]| {
        json!({
            "metadata": {"name": "exec"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": verbs},
            ],
        })
    };
    let roles: Api<Role> = Api::namespaced(cluster.client.clone(), "default");
    let role: Role = serde_json::from_value(grant(&["get"])).expect("role");
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "exec"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": "default"}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(cluster.client.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    // The token goes before `--`, where kubectl still reads flags.
    let as_tenant = format!("--token={token}");
    let exec = [
        as_tenant.as_str(),
        "exec",
        "guarded",
        "--",
        "echo",
        "inside",
    ];
    let (ok, stdout, stderr) = kubectl(&cluster.sandbox, &exec).await;
    assert!(!ok, "get on pods/exec alone ran a command: {stdout}");
    assert!(
        stderr.contains(r#"cannot create resource "pods/exec""#),
        "{stderr}"
    );

    let mut role: Role = roles.get("exec").await.expect("role");
    role.rules = serde_json::from_value(grant(&["create"])["rules"].clone()).expect("rules");
    roles
        .replace("exec", &PostParams::default(), &role)
        .await
        .expect("role updated");
    let (ok, stdout, stderr) = kubectl(&cluster.sandbox, &exec).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "inside\n");

    // Bound to a node this sandbox does not run: no kubelet to run anything there.
    let elsewhere = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "elsewhere"},
        "spec": {"nodeName": "another-node", "containers": [{"name": "main", "image": "x", "command": ["sleep", "3600"]}]},
    });
    pods(&cluster.client)
        .create(
            &PostParams::default(),
            &serde_json::from_value(elsewhere).expect("pod"),
        )
        .await
        .expect("pod");
    let (ok, stdout, stderr) = kubectl(
        &cluster.sandbox,
        &["exec", "elsewhere", "--", "echo", "ran"],
    )
    .await;
    assert!(!ok, "exec ran in a pod no runtime runs: {stdout}");
    assert!(stderr.contains("another-node"), "{stderr}");
}

/// Starts `kubectl port-forward` and returns it with the local port it listens on.
/// `websockets: false` makes kubectl use its older protocol, the connection upgraded to SPDY.
async fn port_forward(
    sandbox: &Sandbox,
    target: &str,
    port: &str,
    websockets: bool,
) -> (tokio::process::Child, u16) {
    let mut child = kubectl_command(sandbox, &["port-forward", target, &format!(":{port}")])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .spawn()
        .expect("kubectl port-forward starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kubectl port-forward says where it listens")
        .expect("read")
        .expect("a line");
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output: {line}"));
    // Keep reading its output, or kubectl blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, local)
}

/// One request over the forwarded port: a line out, what comes back until the pod closes.
async fn exchange(port: u16, line: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    stream.write_all(line.as_bytes()).await.expect("writes");
    stream.shutdown().await.expect("half-closes");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut answer))
        .await
        .expect("the pod answers")
        .expect("reads");
    answer
}

/// A pod answering each connection on port 7000 with "echo: <what it read>", from its address.
fn echo_pod(name: &str) -> Value {
    let server = r#"
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ['POD_IP'], 7000))
s.listen()
print('listening', flush=True)
while True:
    c, _ = s.accept()
    data = b''
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.sendall(b'echo: ' + data)
    c.close()
"#;
    let mut pod = shell_pod(
        name,
        "exec python3 -c \"$SERVER\"",
        json!({
            "env": [
                {"name": "SERVER", "value": server},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
            "ports": [{"containerPort": 7000}],
        }),
    );
    pod["spec"]["containers"][0]["name"] = json!("server");
    pod
}

/// kubelet behaviour: `kubectl port-forward pod/<p>` and `svc/<s>` (kubectl resolves the
/// Service to a pod and its targetPort), tunnelled in a WebSocket or over a SPDY upgrade, carry
/// each local connection to the pod's port, both
/// ways and to its end; a port nothing listens on is reported on the error stream.
#[tokio::test]
async fn kubectl_port_forward_reaches_the_pods_port_directly_and_through_its_service() {
    let cluster = start().await;
    run_pod(&cluster.client, echo_pod("echo"), "listening").await;
    let (_forward, local) = port_forward(&cluster.sandbox, "pod/echo", "7000", true).await;
    assert_eq!(exchange(local, "first").await, "echo: first");
    let big = "x".repeat(300_000);
    assert_eq!(exchange(local, &big).await, format!("echo: {big}"));

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo-rw"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 5432, "targetPort": 7000}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(cluster.client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    let (_forward, local) = port_forward(&cluster.sandbox, "svc/echo-rw", "5432", true).await;
    assert_eq!(
        exchange(local, "through the service").await,
        "echo: through the service"
    );

    // kubectl before 1.31, or told so: SPDY over the upgraded connection itself.
    let (_forward, local) = port_forward(&cluster.sandbox, "pod/echo", "7000", false).await;
    assert_eq!(exchange(local, "over spdy").await, "echo: over spdy");

    let mut closed = kubectl_command(&cluster.sandbox, &["port-forward", "pod/echo", ":7999"])
        .spawn()
        .expect("starts");
    let mut stdout = BufReader::new(closed.stdout.take().expect("stdout")).lines();
    let line = stdout.next_line().await.expect("read").expect("a line");
    let local: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("a port");
    let _ = TcpStream::connect(("127.0.0.1", local))
        .await
        .expect("connects");
    let output = tokio::time::timeout(Duration::from_secs(30), closed.wait_with_output())
        .await
        .expect("kubectl gives up on the connection");
    let stderr = String::from_utf8_lossy(&output.expect("output").stderr).into_owned();
    assert!(stderr.contains("error forwarding port 7999"), "{stderr}");
}

/// kubelet behaviour: `kubectl exec -t` gives the command a terminal (kubectl needs one of its
/// own for that: `script` provides it), which is the command's controlling terminal.
#[tokio::test]
async fn kubectl_exec_with_a_terminal_gives_the_command_one() {
    let cluster = start().await;
    run_pod(
        &cluster.client,
        shell_pod("term", "echo started; exec sleep 3600", json!({})),
        "started",
    )
    .await;
    let kubectl =
        "kubectl exec -it term -- sh -c 'tty; test -t 0 && echo interactive; ps -o tty= -p $$'";
    let output = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", kubectl, "/dev/null"])
        .env("KUBECONFIG", cluster.sandbox.kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .output()
        .await
        .expect("script runs (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The terminal may echo a control character kubectl writes to it, such as a NUL shown as
    // `^@`, at the start of a line.
    let lines: Vec<&str> = stdout
        .lines()
        .map(|line| line.trim().trim_start_matches("^@"))
        .collect();
    let terminal = lines
        .iter()
        .find_map(|line| line.strip_prefix("/dev/"))
        .filter(|name| name.starts_with("pts/"))
        .unwrap_or_else(|| panic!("the command has no terminal: {stdout}"));
    assert!(lines.contains(&"interactive"), "{stdout}");
    // Its controlling terminal: ps names it as pts/N.
    assert!(lines.contains(&terminal), "{stdout}");
}

/// kubelet behaviour: `kubectl attach` streams what the container writes from then on.
#[tokio::test]
async fn kubectl_attach_streams_what_the_container_writes_from_now_on() {
    let cluster = start().await;
    run_pod(
        &cluster.client,
        shell_pod(
            "ticker",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            json!({}),
        ),
        "tick 3",
    )
    .await;
    let mut attach = kubectl_command(&cluster.sandbox, &["attach", "ticker"])
        .spawn()
        .expect("kubectl attach starts");
    let mut lines = BufReader::new(attach.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the container keeps writing")
            .expect("read")
            .expect("a line");
        if line.starts_with("tick ") {
            seen.push(line);
        }
    }
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|line| line.trim_start_matches("tick ").parse().ok())
        .collect();
    assert!(
        numbers[0] >= 3,
        "attach replayed the log from its start: {seen:?}"
    );
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{seen:?}"
    );
}
