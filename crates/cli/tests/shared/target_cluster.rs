//! The cluster an end-to-end test runs on, for the tests that include it with `#[path]` beside
//! `tenant_isolation/support.rs`.
//!
//! With `TUSK_E2E_KUBECONFIG` naming a kubeconfig, the test runs on that cluster, a real one
//! whose API server it neither starts nor stops; otherwise it starts a sandbox of its own
//! (`tusk sandbox`, or `tusk dev` for a test that needs tusk running) and stops it afterwards. Either way the test then does the same thing: it
//! works in a fresh namespace, deleted when it ends, and installs the images `TUSK_E2E_IMAGE`
//! names (deploy/'s own image when unset). docs/testing.md describes the mode.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Dev, Kubectl, interrupt};

/// The variable naming the kubeconfig of a real cluster to run on.
pub const KUBECONFIG_VARIABLE: &str = "TUSK_E2E_KUBECONFIG";
/// The variable naming the image to install in place of deploy/'s.
pub const IMAGE_VARIABLE: &str = "TUSK_E2E_IMAGE";
/// The image deploy/ names.
pub const DEPLOY_IMAGE: &str = "ghcr.io/tusk-dev/tusk-postgres:15";

/// A sandbox this test started, stopped when the test ends.
struct OwnSandbox {
    child: Child,
    _dir: tempfile::TempDir,
}

/// What a test started to run on when no cluster was named.
enum Own {
    /// A bare API server (`tusk sandbox`).
    Sandbox(OwnSandbox),
    /// `tusk dev`: the sandbox with tusk installed and running on it, taken out by
    /// [`TargetCluster::take_dev`] when the test stops it itself.
    Dev(Option<Dev>),
}

/// The cluster a test runs on, and the namespace it has there.
pub struct TargetCluster {
    kubeconfig: PathBuf,
    namespace: String,
    own: Option<Own>,
}

impl TargetCluster {
    /// The cluster `TUSK_E2E_KUBECONFIG` names, or a sandbox started for this test; with a
    /// fresh namespace created on it.
    pub fn start() -> Self {
        let (kubeconfig, own) =
            match std::env::var_os(KUBECONFIG_VARIABLE).filter(|value| !value.is_empty()) {
                Some(path) => (PathBuf::from(path), None),
                None => {
                    let (kubeconfig, own) = start_sandbox();
                    (kubeconfig, Some(Own::Sandbox(own)))
                }
            };
        Self::with_namespace(kubeconfig, own)
    }

    /// The cluster `TUSK_E2E_KUBECONFIG` names, where tusk must be installed and running, or
    /// `tusk dev` started for this test; with a fresh namespace created on it.
    #[allow(dead_code)] // deploy.rs installs tusk itself, on a bare sandbox
    pub fn start_with_tusk() -> Self {
        let (kubeconfig, own) =
            match std::env::var_os(KUBECONFIG_VARIABLE).filter(|value| !value.is_empty()) {
                Some(path) => (PathBuf::from(path), None),
                None => {
                    let dev = Dev::start();
                    (dev.kubeconfig(), Some(Own::Dev(Some(dev))))
                }
            };
        Self::with_namespace(kubeconfig, own)
    }

    fn with_namespace(kubeconfig: PathBuf, own: Option<Own>) -> Self {
        let target = Self {
            kubeconfig,
            namespace: fresh_namespace_name(),
            own,
        };
        target
            .cluster_kubectl()
            .ok(&["create", "namespace", &target.namespace]);
        target
    }

    /// The `tusk dev` this test started, when it runs on one: for what only a sandbox on this
    /// machine lets a test look at (its processes, its files).
    #[allow(dead_code)] // deploy.rs runs on a bare sandbox
    pub fn dev(&self) -> Option<&Dev> {
        match &self.own {
            Some(Own::Dev(dev)) => dev.as_ref(),
            _ => None,
        }
    }

    /// Takes the `tusk dev` this test started out, to stop it and look at what it left.
    #[allow(dead_code)] // deploy.rs runs on a bare sandbox
    pub fn take_dev(&mut self) -> Option<Dev> {
        match &mut self.own {
            Some(Own::Dev(dev)) => dev.take(),
            _ => None,
        }
    }

    /// The kubeconfig of the cluster.
    #[allow(dead_code)] // deploy.rs goes through kubectl only
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Whether the cluster is one `TUSK_E2E_KUBECONFIG` named rather than this test's own.
    pub fn is_foreign(&self) -> bool {
        self.own.is_none()
    }

    /// The namespace the test has to itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The image to install: `TUSK_E2E_IMAGE`, or deploy/'s own.
    pub fn image(&self) -> String {
        std::env::var(IMAGE_VARIABLE)
            .ok()
            .filter(|image| !image.is_empty())
            .unwrap_or_else(|| DEPLOY_IMAGE.to_string())
    }

    /// kubectl on the cluster, in the test's namespace.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::for_kubeconfig(self.kubeconfig.clone(), Some(self.namespace.clone()))
    }

    /// kubectl on the cluster, for cluster-scoped objects.
    pub fn cluster_kubectl(&self) -> Kubectl {
        Kubectl::for_kubeconfig(self.kubeconfig.clone(), None)
    }
}

impl Drop for TargetCluster {
    fn drop(&mut self) {
        // A real cluster keeps running: the namespace goes, and with it everything the test
        // put there.
        if self.is_foreign() {
            let _ = self.cluster_kubectl().run(&[
                "delete",
                "namespace",
                &self.namespace,
                "--ignore-not-found",
                "--timeout=120s",
            ]);
        }
        // A `tusk dev` stops when dropped.
        if let Some(Own::Sandbox(own)) = self.own.as_mut() {
            interrupt(&mut own.child);
        }
    }
}

/// A namespace name no earlier run used: `tusk-e2e-` and the time and process it was made in.
fn fresh_namespace_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("tusk-e2e-{:x}-{}", nanos & 0xffff_ffff, std::process::id())
}

/// Starts `tusk sandbox` in a temporary directory and waits until it answers.
fn start_sandbox() -> (PathBuf, OwnSandbox) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .arg("sandbox")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tusk sandbox starts");
    let mut own = OwnSandbox { child, _dir: dir };
    let kubectl = Kubectl::for_kubeconfig(kubeconfig.clone(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answered =
            kubeconfig.is_file() && kubectl.run(&["get", "namespace", "default"]).is_ok();
        if answered {
            return (kubeconfig, own);
        }
        if Instant::now() >= deadline {
            let _ = own.child.kill();
            let _ = own.child.wait();
            panic!("tusk sandbox did not answer within a minute");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
