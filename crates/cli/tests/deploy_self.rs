//! tusk deploys itself: `kubectl apply -k deploy/` on a sandbox whose local runtime runs pods,
//! with no operator in this process. The shipped Deployment's replicas run `tusk operator`
//! with their ServiceAccount token, elect one leader, and take `elephant` to Ready.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;
use tusk_sandbox::s3::{S3Options, S3Server};

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        let mut input = input;
        input.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`kubectl {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("waited {limit:?} for {what}; instead: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_deploy_runs_the_operator_which_elects_a_leader_and_serves_elephant() {
    let temp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(temp.path().join("s3"), S3Options::default())
        .await
        .unwrap();
    s3.create_bucket("tusk-backups").unwrap();
    let sandbox = Sandbox::builder()
        .runtime(
            RuntimeOptions::new(temp.path().join("runtime"))
                .tusk_executable(TUSK)
                .pod_network(std::net::Ipv4Addr::new(127, 48, 0, 0), 16),
        )
        .start()
        .await
        .unwrap();
    let kubeconfig: PathBuf = sandbox.kubeconfig_path().to_owned();
    let deploy = format!("{ROOT}/deploy");

    kubectl(&kubeconfig, &["apply", "-k", &deploy], None).unwrap();
    // What the platform team adds for its store: the keys, and here an S3 endpoint of its own.
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tusk-backup-store", "namespace": "tusk-system"},
        "data": {
            "access-key-id": base64(s3.access_key()),
            "secret-access-key": base64(s3.secret_key()),
        }
    });
    kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some(&secret.to_string()),
    )
    .unwrap();
    kubectl(
        &kubeconfig,
        &[
            "set",
            "env",
            "-n",
            "tusk-system",
            "deployment/tusk-operator",
            &format!("TUSK_STORE_ENDPOINT={}", s3.endpoint()),
            "TUSK_STORE_ALLOW_HTTP=true",
        ],
        None,
    )
    .unwrap();
    kubectl(
        &kubeconfig,
        &[
            "rollout",
            "status",
            "-n",
            "tusk-system",
            "deployment/tusk-operator",
            "--timeout=180s",
        ],
        None,
    )
    .unwrap_or_else(|error| {
        let pods = kubectl(
            &kubeconfig,
            &["describe", "pods", "-n", "tusk-system"],
            None,
        )
        .unwrap_or_default();
        panic!("the operator Deployment never became available: {error}\n{pods}")
    });

    let pods = kubectl(
        &kubeconfig,
        &[
            "get",
            "pods",
            "-n",
            "tusk-system",
            "-l",
            "app.kubernetes.io/name=tusk-operator",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    )
    .unwrap();
    let replicas: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(replicas.len(), 2, "running operator pods: {pods}");
    let leader = until(
        "one replica to hold the Lease",
        Duration::from_secs(60),
        || {
            let holder = kubectl(
                &kubeconfig,
                &[
                    "get",
                    "lease",
                    "-n",
                    "tusk-system",
                    "tusk-operator",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )?;
            if replicas.contains(&holder.as_str()) {
                Ok(holder)
            } else {
                Err(format!("holder {holder:?}, replicas {replicas:?}"))
            }
        },
    );

    kubectl(
        &kubeconfig,
        &["apply", "-f", &format!("{ROOT}/examples/elephant.yaml")],
        None,
    )
    .unwrap();
    until("elephant to become Ready", Duration::from_secs(120), || {
        let phase = kubectl(
            &kubeconfig,
            &["get", "pgc", "elephant", "-o", "jsonpath={.status.phase}"],
            None,
        )?;
        if phase == "Ready" {
            Ok(())
        } else {
            let logs = kubectl(
                &kubeconfig,
                &["logs", "-n", "tusk-system", &leader, "--tail=20"],
                None,
            )
            .unwrap_or_default();
            Err(format!("phase {phase:?}; the leader's log:\n{logs}"))
        }
    });
    let logs = kubectl(&kubeconfig, &["logs", "-n", "tusk-system", &leader], None).unwrap();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the shipped ClusterRole lacks a permission:\n{logs}"
    );
    sandbox.shutdown().await;
    s3.shutdown().await;
}

fn base64(text: &str) -> String {
    let output = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 runs");
    String::from_utf8(output.stdout).unwrap()
}
