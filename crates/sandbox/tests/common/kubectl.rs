//! The real kubectl (/usr/bin/kubectl, Debian package `kubectl`) run against a sandbox.

use std::path::{Path, PathBuf};

use tokio::process::Command;
use tusk_sandbox::Sandbox;

/// The repository's root, where kubectl runs (so that manifests can be named by their path).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// kubectl's exit status, stdout and stderr, with the sandbox's kubeconfig.
pub async fn kubectl(sandbox: &Sandbox, args: &[&str]) -> (bool, String, String) {
    kubectl_as(sandbox, None, args).await
}

/// kubectl's stdout; panics with its stderr when it fails.
pub async fn kubectl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(sandbox, args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
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
