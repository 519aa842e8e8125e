//! What a backup leaves behind when it does not finish, on `tusk dev` with the real kubectl,
//! PostgreSQL and the S3 server: a backup whose process is killed mid-upload leaves no
//! multipart upload once its request has ended, a backup waiting for WAL that cannot be
//! archived fails with the archiver's error rather than "no progress", and deleting the only
//! other backup while one is in flight leaves the new backup restorable.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/owner_sql.rs"]
mod shared;
#[path = "shared/wal_segments.rs"]
mod wal_segments;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Dev, Kubectl};

const NAMESPACE: &str = "shop";

/// About 150 MB of text that compresses to roughly half: a dozen parts of 8 MiB, which takes
/// long enough to back up that the backup can be caught halfway.
const FILLER: &str = "CREATE TABLE filler AS SELECT g AS id, \
     (SELECT string_agg(md5(random()::text || s), '') \
      FROM generate_series(1, 30 + 0 * g) AS s) AS body \
     FROM generate_series(1, 150000) AS g";

/// Creates a cluster that archives WAL and waits for it to be Ready.
fn ready_cluster(shop: &Kubectl, name: &str) {
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {
            "displayName": name, "memorySize": 1, "postgresDiskSize": 1, "walArchiving": true
        }
    }));
    shop.wait_ready(name);
}

/// Runs SQL as the cluster's owner through its Service, as a customer's psql would.
fn owner_sql(admin: &Kubectl, cluster: &str, sql: &str) -> String {
    shared::owner_sql(admin, NAMESPACE, cluster, sql).unwrap_or_else(|error| panic!("{error}"))
}

/// The S3 server's bookkeeping of unfinished multipart uploads: one `.upload-<id>.json` per
/// upload and one `.upload_id-<id>.part-<n>` per part, in its root directory.
fn unfinished_uploads(s3_dir: &Path) -> (usize, usize) {
    let mut uploads = 0;
    let mut parts = 0;
    for entry in std::fs::read_dir(s3_dir)
        .expect("the S3 directory")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".upload-") && name.ends_with(".json") {
            uploads += 1;
        } else if name.starts_with(".upload_id-") && name.contains(".part-") {
            parts += 1;
        }
    }
    (uploads, parts)
}

/// The process ids of the backup program serving `request`.
fn backup_processes(request: &str) -> Vec<i32> {
    let output = Command::new("ps")
        .args(["-eo", "pid=,args="])
        .output()
        .expect("ps runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("backup run --request") && line.ends_with(request))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_mid_upload_leaves_no_multipart_upload_once_its_request_ends() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    ready_cluster(&shop, "elephant");
    owner_sql(&admin, "elephant", FILLER);

    let request = "killed-mid-upload";
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
        "metadata": {"name": request}, "spec": {"cluster": {"name": "elephant"}}
    }));
    let s3_dir = dev.s3_dir();
    let recorded = shop.until(
        "the backup to record its upload and send a part",
        Duration::from_secs(180),
        || {
            let upload = shop
                .get_json(&["pgbr", request])
                .map(|request| request["status"]["upload"].clone())
                .filter(|upload| !upload.is_null())
                .ok_or("no upload recorded")?;
            let (_, parts) = unfinished_uploads(&s3_dir);
            if parts == 0 {
                return Err(format!("upload {upload} has no part yet"));
            }
            Ok(upload)
        },
    );
    let processes = backup_processes(request);
    assert!(!processes.is_empty(), "no backup process found");
    for pid in processes {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // A killed process aborts nothing: its upload and parts are still in the store.
    let (uploads, parts) = unfinished_uploads(&s3_dir);
    assert!(
        uploads == 1 && parts > 0,
        "right after the kill the store should hold the upload {recorded} and its parts, found {uploads} uploads and {parts} parts"
    );

    let (phase, message) = shop.outcome_of(request);
    assert_eq!(phase, "Failed", "{message}");
    shop.until(
        "the killed backup's upload to be aborted",
        Duration::from_secs(60),
        || match unfinished_uploads(&s3_dir) {
            (0, 0) => Ok(()),
            (uploads, parts) => Err(format!("{uploads} uploads and {parts} parts remain")),
        },
    );
    let status = shop.get_json(&["pgbr", request]).expect("the request")["status"].clone();
    assert!(
        status["upload"].is_null(),
        "the record stays after the abort: {status}"
    );
    let key = recorded["key"].as_str().expect("a key");
    assert!(
        !s3_dir.join("tusk-backups").join(key).exists(),
        "a killed backup left an object at {key}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_waiting_for_wal_that_cannot_be_archived_fails_with_the_archivers_error() {
    let dev = Dev::start_with(&["--backup-stall-timeout", "45s"]);
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    ready_cluster(&shop, "stalled");

    // Break archiving as a foreign archive in the cluster's prefix does: the next segments are
    // already there with other content, which wal-push refuses to overwrite.
    let wal_dir = wal_segments::archive_dir(&dev, &shop, NAMESPACE, "stalled");
    std::fs::create_dir_all(&wal_dir).expect("the WAL directory");
    let mut segment = owner_sql(
        &admin,
        "stalled",
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    );
    let first_blocked = segment.clone();
    for _ in 0..4 {
        std::fs::write(
            wal_dir.join(format!("{segment}.gz.dare")),
            b"another cluster's WAL",
        )
        .expect("a planted segment");
        segment = wal_segments::next_segment(&segment);
    }
    owner_sql(&admin, "stalled", "CREATE TABLE t AS SELECT 1 AS x");

    let request = "waits-for-wal";
    let (phase, message) = shop.backup("stalled", request);
    assert_eq!(phase, "Failed", "{message}");
    assert!(
        message.contains("WAL is not being archived") && message.contains(&first_blocked[..16]),
        "the failure does not name the archiver's error: {message}"
    );
    let warning = shop
        .events_about(request)
        .into_iter()
        .find(|(type_, reason, _)| type_ == "Warning" && reason == "BackupFailed")
        .expect("a BackupFailed Warning Event");
    assert!(
        warning.2.contains("WAL is not being archived"),
        "the Event does not name the cause: {warning:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_only_other_backup_while_one_is_in_flight_keeps_the_new_one_restorable() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    ready_cluster(&shop, "source");
    owner_sql(&admin, "source", FILLER);
    let (phase, message) = shop.backup("source", "first");
    assert_eq!(phase, "Succeeded", "{message}");
    owner_sql(
        &admin,
        "source",
        "CREATE TABLE marks AS SELECT generate_series(1, 1234) AS n",
    );

    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
        "metadata": {"name": "second"}, "spec": {"cluster": {"name": "source"}}
    }));
    shop.until(
        "the second backup to be uploading",
        Duration::from_secs(120),
        || {
            let status = shop
                .get_json(&["pgbr", "second"])
                .map(|request| request["status"].clone())
                .ok_or("no request")?;
            (!status["upload"].is_null())
                .then_some(())
                .ok_or(format!("{status}"))
        },
    );
    // The segment the second backup started in must be in the archive before the first backup
    // is deleted: fill it and the next with WAL, then wait for the archiver to pass them.
    let before = owner_sql(
        &admin,
        "source",
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    );
    owner_sql(
        &admin,
        "source",
        "CREATE TABLE churn AS SELECT g, md5(g::text) FROM generate_series(1, 500000) AS g",
    );
    shop.until(
        "the second backup's first segments to be archived",
        Duration::from_secs(60),
        || {
            let archived = owner_sql(
                &admin,
                "source",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            (archived.as_str() >= before.as_str())
                .then_some(())
                .ok_or(format!("archived up to {archived:?}, waiting for {before}"))
        },
    );
    shop.ok(&["delete", "pgb", "first", "--wait=true", "--timeout=60s"]);
    let phase = shop.ok(&["get", "pgbr", "second", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(
        phase, "Running",
        "the second backup finished before the first was deleted; the test proves nothing"
    );
    let (phase, message) = shop.outcome_of("second");
    assert_eq!(phase, "Succeeded", "{message}");

    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "copy"},
        "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 1,
                 "restore": {"backup": {"name": "second"}}}
    }));
    shop.wait_ready("copy");
    assert_eq!(
        owner_sql(&admin, "copy", "SELECT count(*) FROM marks"),
        "1234"
    );
}
