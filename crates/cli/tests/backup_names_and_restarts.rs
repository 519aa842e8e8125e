//! Two things a customer meets only by chance, on `tusk dev` with the real kubectl, PostgreSQL
//! and the S3 server: a cluster and a schedule with long names get their scheduled backups, and a restore
//! whose instance is killed halfway recovers to a cluster holding exactly the backup's rows.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/owner_sql.rs"]
mod shared;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::{Dev, Kubectl};

const NAMESPACE: &str = "shop";

/// Creates a cluster and waits for it to be Ready.
fn ready_cluster(shop: &Kubectl, name: &str) {
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"displayName": "a cluster", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready(name);
}

/// A cron expression in UTC that fires once, at the first whole minute at least `lead` from now.
fn cron_in(lead: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let at = (now + lead.as_secs()).div_ceil(60) * 60;
    format!("{} {} * * *", (at / 60) % 60, (at / 3600) % 24)
}

/// Whether Events about `name` include one of `reason`.
fn has_event(shop: &Kubectl, name: &str, reason: &str) -> Result<(), String> {
    let events = shop.events_about(name);
    events
        .iter()
        .any(|(_, seen, _)| seen == reason)
        .then_some(())
        .ok_or(format!("{events:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_long_name_gets_its_scheduled_backup() {
    let dev = Dev::start();
    let shop = dev.tenant(NAMESPACE, false).await;
    // Longer than the 17 characters that once made every scheduled Job name too long, and
    // than the 23 past which tusk dev's S3 server once could not store a backup (it named a
    // file after the base64 of the whole object key, beyond the file system's 255 bytes).
    let cluster = "northern-sales-store-of-the-eastern-bays";
    assert!(cluster.len() >= 40);
    ready_cluster(&shop, cluster);

    // A schedule named as long as an object name may be, firing within the next two minutes.
    let schedule = format!("{cluster}-nightly-at-two-in-the-morning-after-the-close");
    assert!(schedule.len() > 63);
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule",
        "metadata": {"name": schedule},
        "spec": {"cluster": {"name": cluster}, "schedule": cron_in(Duration::from_secs(40))}
    }));
    let request = shop.until(
        "the schedule to create its backup request",
        Duration::from_secs(150),
        || {
            shop.get_json(&["pgbs", &schedule])
                .and_then(|schedule| {
                    schedule["status"]["lastRequest"]
                        .as_str()
                        .map(str::to_owned)
                })
                .ok_or_else(|| {
                    let status = shop.get_json(&["pgbs", &schedule]).unwrap_or_default();
                    let events = shop.events_about(&schedule);
                    format!("no request; status {}, Events {events:?}", status["status"])
                })
        },
    );
    let (phase, message) = shop.outcome_of(&request);
    let store_log: Vec<String> = dev
        .printed()
        .lines()
        .filter(|line| line.contains("store"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        phase, "Succeeded",
        "{message}; tusk dev's store lines: {store_log:#?}"
    );
    let job = shop.get_json(&["pgbr", &request]).expect("the request")["status"]["jobName"]
        .as_str()
        .expect("a Job name")
        .to_owned();
    assert!(job.len() <= 63, "{job}");
    let backup = shop.get_json(&["pgb", &request]).expect("the backup");
    assert_eq!(backup["spec"]["cluster"]["name"], cluster, "{backup}");
    shop.until("the schedule's Event", Duration::from_secs(30), || {
        has_event(&shop, &schedule, "BackupScheduled")
    });
    shop.until("the request's Event", Duration::from_secs(30), || {
        has_event(&shop, &request, "BackupSucceeded")
    });
}

/// Runs SQL as the cluster's owner through its Service.
fn owner_sql(admin: &Kubectl, cluster: &str, sql: &str) -> Result<String, String> {
    shared::owner_sql(admin, NAMESPACE, cluster, sql)
}

/// The process group of the container running `tusk instance` in `pod`: the sandbox starts each
/// container as the leader of its own group, so killing the group is the node killing it.
fn instance_group(pod: &str) -> Option<i32> {
    let hostname = format!("HOSTNAME={pod}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let is_pod = environ.split(|b| *b == 0).any(|v| v == hostname.as_bytes());
            let is_instance = cmdline.split(|b| *b == 0).any(|arg| arg == b"instance");
            let leader = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                .is_ok_and(|group| group.as_raw() == pid);
            (is_pod && is_instance && leader).then_some(pid)
        })
}

/// Kills every process of the instance container of `pod` at once, as a node crash would.
fn kill_instance(pod: &str) {
    let group = instance_group(pod).expect("the instance container is running");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("the container is killed");
}

/// The data directory of the only cluster restoring in `dev`: the `pgdata` directory below tusk
/// dev's directory that holds a restore's marker.
fn restoring_data_dir(dev: &Dev) -> Option<PathBuf> {
    // Only the claims' volumes (`tusk dev`'s runtime keeps each at `runtime/volumes/<uid>`)
    // are looked at: a walk of the whole data directory (the store, the source cluster's files)
    // takes long enough on a loaded machine to miss the unpack.
    let volumes = dev.kubeconfig().parent()?.join("runtime").join("volumes");
    std::fs::read_dir(volumes)
        .ok()?
        .flatten()
        .map(|volume| volume.path().join("pgdata"))
        .find(|data_dir| marker_in(data_dir))
}

/// Waits for the restoring data directory to hold PostgreSQL's files beside the marker. The unpack
/// of this test's backup lasts about a second on a fast machine, so the directory is looked at
/// every few milliseconds (a look is three `stat` calls per volume) rather than at `until`'s
/// half-second pace, which a fast unpack can fall between.
fn half_unpacked_data_dir(dev: &Dev, shop: &Kubectl) -> PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if let Some(dir) = restoring_data_dir(dev)
            .filter(|dir| dir.join("PG_VERSION").exists() && dir.join("base").exists())
        {
            return dir;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cluster = shop.ok(&[
        "get",
        "pgc",
        "copy",
        "-o",
        "jsonpath={.status.phase}: {.status.conditions[?(@.type==\"Degraded\")].message}",
    ]);
    panic!(
        "waited 120s for the restore to start unpacking; no half-unpacked data directory was \
         seen, and the copy says {cluster:?}"
    );
}

fn marker_in(data_dir: &Path) -> bool {
    data_dir
        .join(tusk_backup::RESTORE_INCOMPLETE_MARKER)
        .exists()
}

/// About 60 MB of text: enough that unpacking the backup takes long enough to be interrupted.
const FILLER: &str = "CREATE TABLE filler AS SELECT g AS id, \
     (SELECT string_agg(md5(random()::text || s), '') \
      FROM generate_series(1, 12 + 0 * g) AS s) AS body \
     FROM generate_series(1, 150000) AS g";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_during_and_after_the_unpack_recovers_with_the_backups_rows() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant(NAMESPACE, false).await;
    ready_cluster(&shop, "source");
    owner_sql(&admin, "source", FILLER).expect("the filler is written");
    owner_sql(
        &admin,
        "source",
        "CREATE TABLE marks AS SELECT generate_series(1, 1234) AS n",
    )
    .expect("the rows are written");
    let (phase, message) = shop.backup("source", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");

    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "copy"},
        "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 1,
                 "restore": {"backup": {"name": "nightly"}}}
    }));

    // Killed during the unpack: the data directory holds PostgreSQL's files and the marker.
    let data_dir = half_unpacked_data_dir(&dev, &shop);
    kill_instance("copy-0");
    assert!(
        marker_in(&data_dir),
        "the unpack finished before the kill; the test proves nothing"
    );

    // Killed again once the data is unpacked (the marker is gone) and before the cluster is
    // Ready: PostgreSQL is recovering, or the owner role is not yet in place.
    shop.until(
        "the restarted restore to finish unpacking",
        Duration::from_secs(120),
        || {
            (!marker_in(&data_dir) && data_dir.join("PG_VERSION").exists())
                .then_some(())
                .ok_or_else(|| "still unpacking".to_owned())
        },
    );
    let phase = shop.ok(&["get", "pgc", "copy", "-o", "jsonpath={.status.phase}"]);
    kill_instance("copy-0");
    assert_ne!(
        phase, "Ready",
        "the restore was Ready before the second kill"
    );

    // Two kills mean two unpacks and the kubelet's back-off (10 s, then 20 s) before the third
    // start: on a loaded machine that is longer than a first start, so this waits longer, and
    // says why the cluster is not Ready if it never gets there.
    shop.until(
        "the twice-killed restore to become Ready",
        Duration::from_secs(200),
        || {
            let seen = shop.ok(&[
                "get",
                "pgc",
                "copy",
                "-o",
                "jsonpath={.status.phase}: {.status.conditions[?(@.type==\"Degraded\")].message}",
            ]);
            seen.starts_with("Ready:").then_some(()).ok_or(seen)
        },
    );
    let rows = shop.until("the owner to log in", Duration::from_secs(30), || {
        owner_sql(&admin, "copy", "SELECT count(*), sum(n) FROM marks")
    });
    assert_eq!(rows, "1234|761995");
    assert_eq!(
        owner_sql(&admin, "copy", "SELECT count(*) FROM filler").expect("the filler"),
        "150000"
    );
}
