//! Scheduled restore tests on `tusk dev`, with real PostgreSQL and the S3 server: a customer's
//! PostgresRestoreTest restores the newest backup into a throwaway cluster, checks it with
//! pg_amcheck, records the time to recover and the result, and deletes the throwaway, leaving
//! nothing in the store; a tampered backup fails the run with a reason and a Warning Event.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Dev, Kubectl, files_under};

/// Waits for the restore test's current run to end, and returns its `status.lastRun`. While
/// waiting, checks that the throwaway never gets a backup schedule of its own.
fn finished_run(tenant: &Kubectl, test: &str, throwaway: &str) -> Value {
    let schedule = format!("{throwaway}-default");
    tenant.until(
        &format!("restore test {test} to finish a run"),
        Duration::from_secs(180),
        || {
            assert!(
                tenant.get_json(&["pgbs", &schedule]).is_none(),
                "the throwaway cluster got a backup schedule"
            );
            let run = tenant
                .get_json(&["pgrt", test])
                .map(|test| test["status"]["lastRun"].clone())
                .ok_or("no restore test")?;
            match run["result"].as_str() {
                Some("Passed" | "Failed") => Ok(run),
                _ => Err(run.to_string()),
            }
        },
    )
}

/// Waits until the throwaway cluster is gone and nothing is left under its prefix.
fn throwaway_gone(dev: &Dev, tenant: &Kubectl, throwaway: &str) {
    let marker = format!("/shop/{throwaway}/");
    tenant.until(
        &format!("throwaway cluster {throwaway} and its objects to be deleted"),
        Duration::from_secs(60),
        || {
            if tenant.get_json(&["pgc", throwaway]).is_some() {
                return Err("the throwaway cluster still exists".to_owned());
            }
            let left: Vec<_> = files_under(&dev.s3_dir())
                .into_iter()
                .filter(|path| path.to_string_lossy().contains(&marker))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("objects left: {left:?}"))
            }
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_test_proves_the_newest_backup_restores_and_a_tampered_one_fails_loudly() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "elephant"},
        "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready("elephant");
    let (phase, message) = shop.backup("elephant", "first");
    assert_eq!(phase, "Succeeded", "{message}");

    // A customer asks for a daily restore test; the first runs right away.
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresRestoreTest",
        "metadata": {"name": "nightly"},
        "spec": {"cluster": {"name": "elephant"}, "interval": 24,
                 "maxDataAgeMinutes": 60, "timeoutMinutes": 3}
    }));
    let run = finished_run(&shop, "nightly", "nightly-restore-test");
    assert_eq!(run["result"], "Passed", "{run}");
    assert_eq!(run["reason"], "Passed");
    assert_eq!(run["backup"], "first");
    assert_eq!(run["throwawayCluster"], "nightly-restore-test");
    let recovery = run["recoverySeconds"]
        .as_i64()
        .expect("the time to recover is recorded");
    assert!((0..180).contains(&recovery), "{recovery}");
    eprintln!("time to recover on tusk dev: {recovery} s");
    assert!(run["dataAsOf"].is_string(), "{run}");
    let test = shop
        .get_json(&["pgrt", "nightly"])
        .expect("the restore test");
    assert!(test["status"]["nextRunAt"].is_string(), "{test}");
    assert!(test["status"]["report"].is_null(), "the report is consumed");
    let ready = test["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|condition| condition["type"] == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready["status"], "True", "{ready}");
    let reasons: Vec<String> = shop
        .events_about("nightly")
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    for reason in [
        "RestoreTestStarted",
        "Recovered",
        "CheckStarted",
        "RestoreTestPassed",
    ] {
        assert!(reasons.iter().any(|seen| seen == reason), "{reasons:?}");
    }
    throwaway_gone(&dev, &shop, "nightly-restore-test");
    // The source keeps its own backup untouched, and the throwaway took none.
    let backups = shop.get_json(&["pgb"]).expect("backups");
    let names: Vec<&str> = backups["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|backup| backup["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["first"]);

    // The newest backup's object is damaged in the store (same size, other bytes): the next
    // restore test fails with a reason, a Degraded condition and a Warning Event.
    let key = shop.get_json(&["pgb", "first"]).expect("the backup")["spec"]["s3"]["path"]
        .as_str()
        .expect("a key")
        .to_owned();
    let object = dev.s3_dir().join("tusk-backups").join(&key);
    let mut bytes = std::fs::read(&object).expect("the object");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0xff;
    }
    std::fs::write(&object, &bytes).expect("tampered");
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresRestoreTest",
        "metadata": {"name": "tampered"},
        "spec": {"cluster": {"name": "elephant"}, "interval": 24, "timeoutMinutes": 1}
    }));
    let run = finished_run(&shop, "tampered", "tampered-restore-test");
    assert_eq!(run["result"], "Failed", "{run}");
    let reason = run["reason"].as_str().expect("a reason");
    eprintln!("tampered backup: {reason}: {}", run["message"]);
    // The instance refuses the object before PostgreSQL starts and never becomes Ready: the
    // cluster says so (RestoreFailed) or the deadline does (Timeout).
    assert!(
        reason == "RestoreFailed" || reason == "Timeout",
        "{reason}: {run}"
    );
    assert!(run["recoverySeconds"].is_null(), "{run}");
    let test = shop
        .get_json(&["pgrt", "tampered"])
        .expect("the restore test");
    let degraded = test["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|condition| condition["type"] == "Degraded")
        .expect("a Degraded condition")
        .clone();
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], reason);
    let warning = shop
        .events_about("tampered")
        .into_iter()
        .find(|(type_, reason, _)| type_ == "Warning" && reason == "RestoreTestFailed");
    let (_, _, note) = warning.expect("a Warning Event");
    assert!(note.starts_with(reason), "{note}");
    throwaway_gone(&dev, &shop, "tampered-restore-test");
}
