//! A serving cluster's health signals on `tusk dev`, with real PostgreSQL, the S3 server and
//! the real kubectl: the WAL archiver's figures advance in `status.archiving` and in the
//! operator's `/metrics`; archiving that keeps failing (the store refuses the segments) makes
//! the cluster `Degraded` with reason `ArchivingFailing`, naming the segment and the archive
//! command's error, with a Warning Event; once the store takes the segments again, the
//! condition clears with a Normal Event. (Stale backups need a clock that can be moved:
//! crates/operator/tests/health_signals.rs.)

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/events.rs"]
mod events;
#[path = "shared/owner_sql.rs"]
mod shared;
#[path = "shared/wal_segments.rs"]
mod wal_segments;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Dev, Kubectl};

const NAMESPACE: &str = "shop";
const CLUSTER: &str = "ledger";
/// How long archiving may fail before it is reported, as the operator is told.
const FAILING_AFTER: &str = "15s";
/// How long a failure may take to reach the cluster.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// About 30 MB of WAL: at least one segment completes, so the archiver has work.
const FILL: &str = "CREATE TABLE fill_{n} AS SELECT g, repeat('x', 120) AS body \
     FROM generate_series(1, 200000) AS g";

fn owner_sql(admin: &Kubectl, sql: &str) -> String {
    shared::owner_sql(admin, NAMESPACE, CLUSTER, sql).unwrap_or_else(|error| panic!("{error}"))
}

fn fill(admin: &Kubectl, n: usize) {
    owner_sql(admin, &FILL.replace("{n}", &n.to_string()));
}

fn archiving(shop: &Kubectl) -> Value {
    shop.get_json(&["pgc", CLUSTER])
        .map(|cluster| cluster["status"]["archiving"].clone())
        .unwrap_or(Value::Null)
}

/// The cluster's condition of `type_` as `(status, reason, message)`.
fn condition(shop: &Kubectl, type_: &str) -> (String, String, String) {
    let cluster = shop.get_json(&["pgc", CLUSTER]).unwrap_or(Value::Null);
    let found = cluster["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null);
    let text = |field: &str| found[field].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

/// The operator's `/metrics`, at the address it logged.
fn metrics(dev: &Dev) -> String {
    let printed = dev.printed();
    let line = printed
        .lines()
        .find(|line| line.contains("serving /metrics"))
        .expect("the operator logs where it serves /metrics");
    let plain = strip_ansi(line);
    let address = plain
        .split_once("address=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the address");
    let mut stream = TcpStream::connect(address).expect("the metrics port");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    response
}

fn strip_ansi(text: &str) -> String {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The value of the cluster's series `name` in `/metrics`.
fn metric(dev: &Dev, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{namespace=\"{NAMESPACE}\",name=\"{CLUSTER}\"}} ");
    metrics(dev)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_wal_archiving_degrades_the_cluster_and_clears_once_the_store_takes_wal_again() {
    let dev = Dev::start_with(&[
        "--archiving-failing-after",
        FAILING_AFTER,
        "--archiving-check-interval",
        "2s",
    ]);
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": CLUSTER},
        "spec": {"displayName": CLUSTER, "memorySize": 1, "postgresDiskSize": 1, "walArchiving": true}
    }));
    shop.wait_ready(CLUSTER);

    // The figures advance as WAL is archived, in the status and in /metrics.
    fill(&admin, 1);
    let first = shop.until(
        "a first archived segment in the status",
        VISIBLE_WITHIN,
        || {
            let state = archiving(&shop);
            match state["archivedCount"].as_i64() {
                Some(count) if count > 0 && state["lastArchivedWal"].is_string() => Ok(state),
                _ => Err(state.to_string()),
            }
        },
    );
    fill(&admin, 2);
    let first_count = first["archivedCount"].as_i64().unwrap_or_default();
    let first_wal = first["lastArchivedWal"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let advanced = shop.until("the archiver's figures to advance", VISIBLE_WITHIN, || {
        let state = archiving(&shop);
        let wal = state["lastArchivedWal"].as_str().unwrap_or_default();
        (state["archivedCount"].as_i64().unwrap_or_default() > first_count
            && wal > first_wal.as_str())
        .then_some(state.clone())
        .ok_or(state.to_string())
    });
    assert_eq!(advanced["failedCount"], 0, "{advanced}");
    assert!(advanced["lagSegments"].as_i64().is_some(), "{advanced}");
    let archived = metric(&dev, "tusk_operator_cluster_wal_archived").expect("the archived series");
    assert!(archived >= first_count as f64 + 1.0, "{archived}");
    assert_eq!(
        metric(&dev, "tusk_operator_cluster_wal_archiving_failing"),
        Some(0.0)
    );
    assert_eq!(condition(&shop, "Degraded").0, "False");

    // Break archiving as a foreign archive in the cluster's prefix does: the next segments are
    // already there with other content, which the archive command refuses to overwrite.
    let wal_dir = wal_segments::archive_dir(&dev, &shop, NAMESPACE, CLUSTER);
    let blocked = owner_sql(&admin, "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let mut planted = Vec::new();
    let mut segment = blocked.clone();
    for _ in 0..4 {
        let path = wal_dir.join(format!("{segment}.gz.dare"));
        std::fs::write(&path, b"another cluster's WAL").expect("a planted segment");
        planted.push(path);
        segment = wal_segments::next_segment(&segment);
    }
    fill(&admin, 3);

    // Not at once: a failure is reported only once it lasts.
    let failing = shop.until("the archiver to fail", VISIBLE_WITHIN, || {
        let state = archiving(&shop);
        state["failingSince"]
            .is_string()
            .then_some(state.clone())
            .ok_or(state.to_string())
    });
    assert_eq!(failing["lastFailedWal"], blocked.as_str(), "{failing}");
    assert_eq!(
        condition(&shop, "Degraded").0,
        "False",
        "reported before it lasted"
    );

    let message = shop.until(
        "Degraded for ArchivingFailing",
        VISIBLE_WITHIN,
        || match condition(&shop, "Degraded") {
            (status, reason, message) if status == "True" && reason == "ArchivingFailing" => {
                Ok(message)
            }
            seen => Err(format!("{seen:?}")),
        },
    );
    assert!(
        message.contains(&blocked) && message.contains("already archived with different content"),
        "the message names neither the segment nor the store's refusal: {message}"
    );
    let since = archiving(&shop)["failingSince"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(&since),
        "the message does not say since when: {message}"
    );
    let phase = shop.ok(&["get", "pgc", CLUSTER, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Degraded", "the phase agrees with the conditions");
    assert_eq!(
        condition(&shop, "Ready").0,
        "True",
        "the database still serves"
    );
    events::wait_event(
        &shop,
        CLUSTER,
        ("Warning", "ArchivingFailing", &blocked),
        Duration::from_secs(20),
    );
    let state = archiving(&shop);
    assert!(
        state["failedCount"].as_i64().unwrap_or_default() > 0,
        "{state}"
    );
    assert!(
        state["lagSegments"].as_i64().unwrap_or_default() >= 1,
        "{state}"
    );
    assert_eq!(
        metric(&dev, "tusk_operator_cluster_wal_archiving_failing"),
        Some(1.0)
    );
    assert!(metric(&dev, "tusk_operator_cluster_wal_archive_lag_bytes").unwrap_or_default() > 0.0);

    // The store takes the segments again: PostgreSQL's next attempt succeeds (it waits up to a
    // minute between rounds of attempts).
    for path in &planted {
        std::fs::remove_file(path).expect("the planted segment is removed");
    }
    shop.until(
        "Degraded to clear",
        Duration::from_secs(150),
        || match condition(&shop, "Degraded") {
            (status, _, _) if status == "False" => Ok(()),
            seen => Err(format!("{seen:?} {}", archiving(&shop))),
        },
    );
    events::wait_event(
        &shop,
        CLUSTER,
        ("Normal", "Recovered", "WAL archiving works again"),
        Duration::from_secs(20),
    );
    let state = archiving(&shop);
    assert!(state["failingSince"].is_null(), "{state}");
    assert!(
        state["lastArchivedWal"].as_str().unwrap_or_default() >= blocked.as_str(),
        "{state}"
    );
    assert_eq!(
        metric(&dev, "tusk_operator_cluster_wal_archiving_failing"),
        Some(0.0)
    );
}
