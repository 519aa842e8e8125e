//! A customer watching a restore on `tusk dev`, with the real kubectl, PostgreSQL and S3 server:
//! while the cluster is `Restoring`, its status, `kubectl get` and `kubectl describe` show how
//! far the restore got (bytes of the base backup, then the WAL location replayed), never more
//! than the backup holds and never going backwards; once Ready, the progress is gone.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/owner_sql.rs"]
mod shared;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Dev;
use tusk_api::restore_progress::Lsn;

const NAMESPACE: &str = "shop";

/// Rows of the filler table: about 400 MB of text, which compresses to about half, a base
/// backup big enough that downloading and unpacking it takes several of the operator's
/// progress reads (every two seconds). Since the restore unpacks on every core, 170 MB went by
/// between two reads on a fast machine, and the test saw only the end of the replay.
const FILLER_ROWS: u32 = 1_000_000;

/// One look at the restoring cluster.
#[derive(Debug)]
struct Seen {
    stage: String,
    bytes_done: Option<i64>,
    bytes_total: Option<i64>,
    replayed: Option<Lsn>,
    summary: String,
}

fn seen(progress: &Value) -> Seen {
    Seen {
        stage: progress["stage"].as_str().unwrap_or_default().to_owned(),
        bytes_done: progress["bytesDone"].as_i64(),
        bytes_total: progress["bytesTotal"].as_i64(),
        replayed: progress["replayedLSN"].as_str().and_then(Lsn::parse),
        summary: progress["summary"].as_str().unwrap_or_default().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_shows_its_progress_until_it_is_ready() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "source"},
        "spec": {"displayName": "source", "memorySize": 1, "postgresDiskSize": 2}
    }));
    shop.wait_ready("source");
    let started = Instant::now();
    shared::owner_sql(
        &admin,
        NAMESPACE,
        "source",
        &shared::filler_sql(FILLER_ROWS, 12),
    )
    .expect("the filler is written");
    eprintln!("filler written in {:?}", started.elapsed());
    let started = Instant::now();
    let (phase, message) = shop.backup("source", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");
    eprintln!("backup taken in {:?}", started.elapsed());
    let backup = shop
        .get_json(&["postgresbackup", "nightly"])
        .expect("the PostgresBackup");
    let backup_size = backup["spec"]["size"].as_i64().expect("a recorded size");
    let stop_lsn = backup["spec"]["stopLsn"]
        .as_str()
        .and_then(Lsn::parse)
        .expect("a recorded stop LSN");

    let started = Instant::now();
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "copy"},
        "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 2,
                 "restore": {"backup": {"name": "nightly"}}}
    }));

    // Watch as a customer would, until Ready.
    let mut progress = Vec::new();
    let mut printed = None;
    let mut described = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "the restore was not Ready in time; saw {progress:?}"
        );
        let Some(copy) = shop.get_json(&["pgc", "copy"]) else {
            continue;
        };
        let status = &copy["status"];
        if status["phase"] == "Ready" {
            break;
        }
        if status["restoreProgress"].is_object() {
            assert_eq!(status["phase"], "Restoring", "{status}");
            progress.push(seen(&status["restoreProgress"]));
            if printed.is_none() {
                printed = Some(shop.ok(&["get", "pgc", "copy"]));
                described = Some(shop.ok(&["describe", "pgc", "copy"]));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("restored in {:?}; saw {progress:#?}", started.elapsed());

    assert!(
        !progress.is_empty(),
        "the status never showed the restore's progress before Ready"
    );
    for step in &progress {
        match step.stage.as_str() {
            "BaseBackup" => {
                assert_eq!(step.bytes_total, Some(backup_size), "{step:?}");
                let done = step.bytes_done.expect("bytes done");
                assert!((0..=backup_size).contains(&done), "{step:?}");
                assert!(step.summary.starts_with("base backup "), "{step:?}");
            }
            "WalReplay" => {
                let replayed = step.replayed.expect("a replayed location");
                assert!(replayed.0 > 0, "{step:?}");
                assert!(
                    step.summary.ends_with(&format!(" of {stop_lsn}")),
                    "the target is the backup's end: {step:?}"
                );
            }
            other => panic!("unknown stage {other}: {step:?}"),
        }
    }
    // It never goes backwards: bytes grow, then replay starts and its location grows.
    for pair in progress.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let ordered = match (before.stage.as_str(), after.stage.as_str()) {
            ("BaseBackup", "BaseBackup") => before.bytes_done <= after.bytes_done,
            ("WalReplay", "WalReplay") => before.replayed <= after.replayed,
            ("BaseBackup", "WalReplay") => true,
            _ => false,
        };
        assert!(
            ordered,
            "progress went backwards: {before:?} then {after:?}"
        );
    }
    let first = &progress[0];
    let last = progress.last().expect("a step");
    assert!(
        first.stage != last.stage
            || first.bytes_done < last.bytes_done
            || first.replayed < last.replayed,
        "the progress never moved: {progress:?}"
    );
    let printed = printed.expect("kubectl get ran");
    assert!(
        printed.contains("RESTORE")
            && (printed.contains("base backup ") || printed.contains("WAL replayed to ")),
        "{printed}"
    );
    let described = described.expect("kubectl describe ran");
    assert!(
        described.contains("Restoring the data from a backup: "),
        "{described}"
    );

    // Ready: the progress is gone, and the data is the backup's.
    let copy = shop.get_json(&["pgc", "copy"]).expect("the cluster");
    assert!(
        copy["status"].get("restoreProgress").is_none(),
        "{}",
        copy["status"]
    );
    let printed = shop.ok(&["get", "pgc", "copy"]);
    assert!(
        !printed.contains("base backup") && !printed.contains("WAL replayed"),
        "{printed}"
    );
    let rows = shop.until("the owner to log in", Duration::from_secs(30), || {
        shared::owner_sql(&admin, NAMESPACE, "copy", "SELECT count(*) FROM filler")
    });
    assert_eq!(rows, FILLER_ROWS.to_string());
}
