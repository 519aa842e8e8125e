//! A cluster whose instance cannot start at all, on `tusk dev`: the platform's tusk executable,
//! which the node runs as the instance container's program (as a node runs an image's
//! entrypoint), cannot be executed. The kubelet reports the start error on the pod; the
//! PostgresCluster says `CannotStart` with that error and a Warning Event on the cluster, and
//! clears once the executable can run again.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[path = "shared/cluster_conditions.rs"]
mod cluster_conditions;
#[path = "shared/events.rs"]
mod events;
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster_conditions::{condition, wait_degraded, wait_recovered};
use serde_json::json;
use support::Dev;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_start_is_reported_on_the_cluster_and_clears_when_fixed() {
    // The platform's executable, where every pod's user may reach it (so the node runs it in
    // place rather than a copy of its own).
    let platform = tempfile::tempdir().expect("a temporary directory");
    set_mode(platform.path(), 0o755);
    let executable = platform.path().join("tusk");
    std::fs::copy(env!("CARGO_BIN_EXE_tusk"), &executable).expect("a copy of tusk");
    set_mode(&executable, 0o755);
    // On tusk dev the data volume is the host's filesystem, whose fullness is no concern here.
    let dev = Dev::start_from(
        &executable,
        tempfile::tempdir().expect("a temporary directory"),
        &["--disk-full-percent", "100"],
    );
    let shop = dev.tenant("shop", false).await;

    // The executable loses its execute permission, as one installed with the wrong mode does:
    // `tusk dev` runs on, but no container can exec it.
    set_mode(&executable, 0o644);
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "stuck"},
        "spec": {"displayName": "stuck", "memorySize": 1, "postgresDiskSize": 1}
    }));

    let started = Instant::now();
    let refusal = format!("exec: \"{}\": permission denied", executable.display());
    let message = wait_degraded(&shop, "stuck", "CannotStart", &refusal);
    println!("CannotStart after {:?}: {message}", started.elapsed());
    let progressing = condition(&shop, "stuck", "Progressing").expect("a Progressing condition");
    assert_eq!(
        (progressing.0.as_str(), progressing.1.as_str()),
        ("False", "CannotStart")
    );
    // What the kubelet says on the pod (which the tenant may not read): the start error as
    // the last state, and its Warning.
    let admin = dev.admin();
    let last = admin.run(&[
        "-n",
        "shop",
        "get",
        "pod",
        "stuck-0",
        "-o",
        "jsonpath={.status.containerStatuses[0].lastState.terminated.reason}",
    ]);
    assert_eq!(last.as_deref(), Ok("StartError"));
    admin.until(
        "the kubelet's Failed Event on stuck-0",
        Duration::from_secs(10),
        || {
            let events = admin.run(&[
                "-n",
                "shop",
                "get",
                "events.events.k8s.io",
                "--field-selector",
                "regarding.name=stuck-0",
                "-o",
                r#"jsonpath={range .items[*]}{.type} {.reason} {.note}{"\n"}{end}"#,
            ])?;
            events
                .lines()
                .any(|line| line.starts_with("Warning Failed Error: ") && line.contains(&refusal))
                .then_some(())
                .ok_or(events)
        },
    );

    // The platform repairs the executable: the next retry of the crash-loop back-off starts
    // the instance, and the cluster recovers.
    set_mode(&executable, 0o755);
    wait_recovered(
        &shop,
        "stuck",
        Duration::from_secs(180),
        "The instance runs again",
    );
}
