//! What a finished backup leaves behind over time, on `tusk dev` with the real kubectl,
//! PostgreSQL and the S3 server: its Job and pod go once their TTL has passed while the request
//! keeps its result, and deleting the backup removes every file the store kept for it with
//! Normal Events only.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use support::Dev;

const NAMESPACE: &str = "shop";
/// The Events about the PostgresBackup (its request has the same name).
const BACKUP_EVENTS: &str = "regarding.kind=PostgresBackup,regarding.name=nightly";

/// Every file and directory below `dir`, the store's own bookkeeping included, relative to it.
fn everything_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.insert(path.strip_prefix(dir).unwrap_or(&path).to_owned());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backup_leaves_its_result_and_nothing_else() {
    let ttl = Duration::from_secs(5);
    let dev = Dev::start_with(&["--backup-job-ttl", "5s"]);
    let shop = dev.tenant(NAMESPACE, false).await;
    let admin = dev.admin();
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "ledger"},
        "spec": {"displayName": "ledger", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready("ledger");
    let store_before = everything_under(&dev.s3_dir());

    let (phase, message) = shop.backup("ledger", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");

    // The Job and its pod go once the TTL has passed, counted as the TTL controller counts it:
    // from the Job's completion time, not from when a poll happens to see the request's
    // success. The request keeps its result.
    let job = "nightly-backup";
    // The request says Succeeded once the backup is stored, which can be a moment before the
    // Job controller sees the pod end and completes the Job.
    let completed = shop.until("the Job to complete", Duration::from_secs(30), || {
        let completed = admin.run(&[
            "get",
            "job",
            job,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.status.completionTime}",
        ])?;
        humantime::parse_rfc3339(completed.trim())
            .map_err(|error| format!("completion time {completed:?}: {error}"))
    });
    let gone_at = shop.until(
        "the succeeded backup's Job and pod to be deleted",
        Duration::from_secs(60),
        || {
            let jobs = admin.run(&["get", "jobs", "-n", NAMESPACE, "-o", "name"])?;
            let pods = admin.run(&[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                &format!("job-name={job}"),
                "-o",
                "name",
            ])?;
            if jobs.contains(job) || !pods.trim().is_empty() {
                return Err(format!("jobs: {jobs}; pods: {pods}"));
            }
            Ok(SystemTime::now())
        },
    );
    // The completion time is written in whole seconds, rounded down, so this bound holds
    // exactly for a controller that waits out the TTL.
    let lived = gone_at.duration_since(completed).unwrap_or_default();
    assert!(
        lived >= ttl,
        "the Job went {lived:?} after it completed, before its TTL of {ttl:?}"
    );
    let request = shop.get_json(&["pgbr", "nightly"]).expect("the request");
    assert_eq!(request["status"]["phase"], "Succeeded", "{request}");
    assert_eq!(request["status"]["backupName"], "nightly", "{request}");

    // Deleting the backup removes its data with Normal Events only.
    shop.ok(&["delete", "pgb", "nightly", "--wait=true", "--timeout=60s"]);
    assert!(shop.get_json(&["pgb", "nightly"]).is_none());
    let events = shop.until(
        "the Event that the backup's data is deleted",
        Duration::from_secs(30),
        || {
            let events = shop.events_regarding(BACKUP_EVENTS);
            events
                .iter()
                .any(|(type_, reason, _)| type_ == "Normal" && reason == "BackupDataDeleted")
                .then_some(events.clone())
                .ok_or(format!("{events:?}"))
        },
    );
    // Let a late, repeated reconcile of the gone backup show itself.
    std::thread::sleep(Duration::from_secs(5));
    let events = [events, shop.events_regarding(BACKUP_EVENTS)].concat();
    let warnings: Vec<_> = events
        .iter()
        .filter(|(type_, _, _)| type_ != "Normal")
        .collect();
    assert!(
        warnings.is_empty(),
        "a deletion that worked warned: {warnings:?}"
    );
    let printed = dev.printed();
    assert!(
        !printed
            .lines()
            .any(|line| line.contains("reconcile failed") && line.contains("backup=nightly")),
        "a deletion that worked was logged as a failure:\n{printed}"
    );

    // Nothing the store kept for the backup is left: no data, no metadata, no directory.
    let left: Vec<_> = everything_under(&dev.s3_dir())
        .difference(&store_before)
        .cloned()
        .collect();
    assert!(
        left.is_empty(),
        "the store kept after the deletion: {left:?}"
    );
}
