//! What `tusk dev` says right after it is stopped and started again, with the real kubectl,
//! PostgreSQL and the S3 server: a readiness wait does not pass before PostgreSQL answers, and
//! a cluster restored long ago does not say it is restoring again.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/owner_sql.rs"]
mod shared;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Dev, Kubectl};

const NAMESPACE: &str = "shop";

fn owner_sql(admin: &Kubectl, cluster: &str, sql: &str) -> Result<String, String> {
    shared::owner_sql(admin, NAMESPACE, cluster, sql)
}

/// The phases of a cluster as `kubectl get` shows them, polled from a thread: across a
/// restart of `tusk dev` (a watch would end with the old process), while the API answers.
struct PhasePoller {
    phases: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl PhasePoller {
    fn start(kubeconfig: PathBuf, cluster: &'static str) -> Self {
        let phases = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (phases.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let output = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["--namespace", NAMESPACE, "get", "pgc", cluster])
                    .args(["-o", "jsonpath={.status.phase}", "--request-timeout=2s"])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output();
                if let Ok(output) = output
                    && output.status.success()
                {
                    let phase = String::from_utf8_lossy(&output.stdout).into_owned();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.last() != Some(&phase) {
                        seen.push(phase);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { phases, stop }
    }

    /// The phases seen so far, each change once.
    fn phases(&self) -> Vec<String> {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for PhasePoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_readiness_waits_for_postgres_and_a_restored_cluster_is_not_restoring() {
    let mut dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "source"},
        "spec": {"displayName": "source", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready("source");
    shop.until("the owner to log in", Duration::from_secs(30), || {
        owner_sql(
            &admin,
            "source",
            "CREATE TABLE marks AS SELECT generate_series(1, 321) AS n",
        )
    });
    let (phase, message) = shop.backup("source", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "copy"},
        "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 1,
                 "restore": {"backup": {"name": "nightly"}}}
    }));
    shop.until(
        "the restored cluster to become Ready",
        Duration::from_secs(200),
        || {
            let phase = shop.run(&["get", "pgc", "copy", "-o", "jsonpath={.status.phase}"])?;
            (phase == "Ready").then_some(()).ok_or(phase)
        },
    );

    let phases = PhasePoller::start(dev.kubeconfig(), "copy");
    dev.restart();
    // As soon as `tusk dev` says it runs again, as a person would wait (through the
    // administrator's kubeconfig, which the new run rewrote with its port).
    admin.ok(&[
        "--namespace",
        NAMESPACE,
        "wait",
        "--for=condition=Ready",
        "pgc/source",
        "pgc/copy",
        "--timeout=300s",
    ]);
    // At once: Ready means PostgreSQL answers, with the data from before the stop.
    for cluster in ["source", "copy"] {
        let rows =
            owner_sql(&admin, cluster, "SELECT count(*) FROM marks").unwrap_or_else(|error| {
                panic!(
                    "{cluster} passed the wait for Ready, but PostgreSQL does not answer: {error}"
                )
            });
        assert_eq!(rows, "321", "{cluster}");
    }
    // The restored cluster went through the restart without restoring anything, and not
    // without showing that its instance was down.
    let seen = phases.phases();
    assert!(
        seen.iter().all(|phase| phase != "Restoring"),
        "the restored cluster showed these phases across the restart: {seen:?}"
    );
    assert!(
        seen.iter().any(|phase| phase != "Ready"),
        "the restored cluster never left Ready across the restart: {seen:?}"
    );
}
