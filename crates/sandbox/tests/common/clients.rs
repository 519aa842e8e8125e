//! The official client libraries, run as their users run them: the Python client (`kubernetes`
//! from PyPI) and the JavaScript one (`@kubernetes/client-node` from npm), which scripts/test
//! installs under target/test-tools.

use std::path::PathBuf;

use tokio::process::Command;
use tusk_sandbox::Sandbox;

fn test_tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools")
}

/// The Python with the client installed: `TUSK_TEST_PYTHON`, or the virtual environment
/// scripts/test creates.
fn python_executable() -> PathBuf {
    std::env::var_os("TUSK_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| test_tools().join("python/bin/python"))
}

/// The directory whose `node_modules` holds the JavaScript client: `TUSK_TEST_NODE`, or the
/// one scripts/test installs it into.
fn node_project() -> PathBuf {
    std::env::var_os("TUSK_TEST_NODE")
        .map(Into::into)
        .unwrap_or_else(|| test_tools().join("node"))
}

async fn run(client: &str, command: &mut Command) -> String {
    let output = command.output().await.unwrap_or_else(|error| {
        panic!("the {client} client's interpreter does not run ({error}); scripts/test installs it")
    });
    assert!(
        output.status.success(),
        "the {client} client failed: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `script` (without blocking the sandbox serving it) with the Python client configured
/// from the sandbox's kubeconfig (as `config`), and returns what it printed.
pub async fn python(sandbox: &Sandbox, script: &str) -> String {
    let prelude = format!(
        "from kubernetes import client, config\nconfig.load_kube_config({:?})\n",
        sandbox.kubeconfig_path().display().to_string()
    );
    run(
        "Python",
        Command::new(python_executable())
            .arg("-c")
            .arg(prelude + script),
    )
    .await
}

/// Runs the ES module `script` with Node, the JavaScript client importable as `k8s` and a
/// `KubeConfig` loaded the default way (`KUBECONFIG`, the sandbox's) as `kc`, and returns what
/// it printed.
pub async fn node(sandbox: &Sandbox, script: &str) -> String {
    let prelude = "import * as k8s from '@kubernetes/client-node';\n\
                   const kc = new k8s.KubeConfig();\n\
                   kc.loadFromDefault();\n";
    run(
        "JavaScript",
        Command::new("node")
            .args(["--input-type=module", "-e"])
            .arg(format!("{prelude}{script}"))
            // An ES module finds its imports from the working directory up.
            .current_dir(node_project())
            .env("KUBECONFIG", sandbox.kubeconfig_path()),
    )
    .await
}
