//! The real kubectl (/usr/bin/kubectl, Debian package `kubectl`) run against a sandbox, from the
//! repository's root so that manifests are named as the docs name them.

use std::path::{Path, PathBuf};

use tokio::process::Command;
use tusk_sandbox::Sandbox;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// kubectl's discovery cache for this sandbox alone. kubectl keys its cache by host and port
/// and trusts it for hours, and the port of a finished test's sandbox is soon given to another
/// one serving other kinds: through a shared cache, kubectl would not know this one's custom
/// kinds ("the server doesn't have a resource type").
pub fn discovery_cache(sandbox: &Sandbox) -> PathBuf {
    sandbox.kubeconfig_path().with_file_name("kubectl-cache")
}

/// kubectl's exit status, stdout and stderr; `token` replaces the kubeconfig's credentials.
pub async fn kubectl_as(
    sandbox: &Sandbox,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .env("KUBECACHEDIR", discovery_cache(sandbox))
        .current_dir(repo());
    if let Some(token) = token {
        command.arg(format!("--token={token}"));
    }
    let output = command
        .output()
        .await
        .expect("kubectl runs (install the Debian package `kubectl`)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// kubectl's exit status, stdout and stderr, as the sandbox's administrator.
pub async fn kubectl(sandbox: &Sandbox, args: &[&str]) -> (bool, String, String) {
    kubectl_as(sandbox, None, args).await
}

/// Applies the manifest `yaml` (written to a temporary file) with `kubectl apply -f`.
pub async fn apply(sandbox: &Sandbox, yaml: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("manifest.yaml");
    std::fs::write(&path, yaml).expect("manifest written");
    kubectl_ok(sandbox, &["apply", "-f", &path.display().to_string()]).await;
}

/// kubectl's stdout, once it has succeeded.
pub async fn kubectl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(sandbox, args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

/// A kubectl command for the sandbox, to be spawned and read while it runs (`port-forward`,
/// `attach`); it dies with its handle.
pub fn kubectl_command(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .env("KUBECACHEDIR", discovery_cache(sandbox))
        .current_dir(repo())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// kubectl's exit code, stdout and stderr, as the sandbox's administrator, given `input` on its
/// standard input.
pub async fn kubectl_with_input(
    sandbox: &Sandbox,
    input: &[u8],
    args: &[&str],
) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = kubectl_command(sandbox, args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs (install the Debian package `kubectl`)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .await
            .expect("kubectl reads its input");
    }
    let output = child.wait_with_output().await.expect("kubectl ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
