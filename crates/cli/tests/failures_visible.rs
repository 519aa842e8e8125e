//! Failures visible on the PostgresCluster, on `tusk dev` with real PostgreSQL and the S3
//! server: when the instance cannot run, the cluster's conditions say why with PostgreSQL's own
//! line, a Warning Event on the cluster says it too, a Normal Event says when it cleared, and
//! the operator does not hammer the API server meanwhile. A typo on a running cluster is
//! checked by PostgreSQL before it takes effect: it is reported the same way, and the database
//! keeps serving with its running configuration.

// Shared with the tenant_isolation suite, whose helpers these tests do not all need.
#[path = "shared/cluster_conditions.rs"]
mod cluster_conditions;
#[path = "shared/events.rs"]
mod events;
#[path = "shared/owner_sql.rs"]
mod shared;
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster_conditions::{VISIBLE_WITHIN, condition, wait_degraded, wait_recovered};
use events::wait_event;
use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::{Dev, Kubectl, files_under};
use tusk_api::PostgresCluster;

fn cluster(name: &str, parameters: Value) -> Value {
    json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"displayName": name, "memorySize": 1, "postgresDiskSize": 1, "parameters": parameters}
    })
}

/// The writes to the cluster and to the Events about it during `window`, as a watch sees them
/// (each create or update is one), each described: the fields a write of the cluster changed,
/// the reason, count and note of an Event.
async fn writes_during(dev: &Dev, namespace: &str, cluster: &str, window: Duration) -> Vec<String> {
    let client = dev.admin_client().await;
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), namespace);
    let events: Api<Event> = Api::namespaced(client, namespace);
    let selector = format!("metadata.name={cluster}");
    // The cluster as first listed is not a write, but what the first write is compared with.
    let cluster_changes = watcher(clusters, watcher::Config::default().fields(&selector))
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(watcher::Event::InitApply(object)) => Some((false, object_json(&object))),
                Ok(watcher::Event::Apply(object)) => Some((true, object_json(&object))),
                _ => None,
            })
        })
        .boxed();
    let event_changes = watcher(events, watcher::Config::default())
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(watcher::Event::Apply(event))
                    if event.regarding.as_ref().is_some_and(|regarding| {
                        regarding.kind.as_deref() == Some("PostgresCluster")
                            && regarding.name.as_deref() == Some(cluster)
                    }) =>
                {
                    Some((true, json!({"event": event})))
                }
                _ => None,
            })
        })
        .boxed();
    let mut changes = futures::stream::select(cluster_changes, event_changes);
    let deadline = tokio::time::Instant::now() + window;
    let mut writes = Vec::new();
    let mut last_cluster: Option<Value> = None;
    while let Ok(Some((counted, change))) = tokio::time::timeout_at(deadline, changes.next()).await
    {
        if let Some(event) = change.get("event") {
            writes.push(format!(
                "Event {} {} (count {}): {}",
                event["type"].as_str().unwrap_or_default(),
                event["reason"].as_str().unwrap_or_default(),
                event["series"]["count"].as_i64().unwrap_or(1),
                event["note"].as_str().unwrap_or_default(),
            ));
            continue;
        }
        if counted {
            let mut changed = Vec::new();
            changed_paths(
                last_cluster.as_ref().unwrap_or(&Value::Null),
                &change,
                "",
                &mut changed,
            );
            writes.push(format!("PostgresCluster: {}", changed.join(", ")));
        }
        last_cluster = Some(change);
    }
    writes
}

/// An object as JSON, without the fields every write changes.
fn object_json(object: &PostgresCluster) -> Value {
    let mut value = serde_json::to_value(object).expect("a cluster is JSON");
    if let Some(metadata) = value["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    value
}

/// The paths of the values that differ between `before` and `after`, each with its new value.
fn changed_paths(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for key in old
                .keys()
                .chain(new.keys().filter(|key| !old.contains_key(*key)))
            {
                let inner = format!("{path}.{key}");
                changed_paths(
                    old.get(key).unwrap_or(&Value::Null),
                    new.get(key).unwrap_or(&Value::Null),
                    &inner,
                    out,
                );
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (index, (old, new)) in old.iter().zip(new).enumerate() {
                changed_paths(old, new, &format!("{path}[{index}]"), out);
            }
        }
        (old, new) if old != new => out.push(format!("{path}={new}")),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_parameter_is_reported_on_the_cluster_and_clears_when_fixed() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&cluster("banana", json!({"shared_buffers": "banana"})));

    let started = Instant::now();
    let message = wait_degraded(
        &shop,
        "banana",
        "InvalidParameter",
        r#"invalid value for parameter "shared_buffers": "banana""#,
    );
    println!("InvalidParameter after {:?}: {message}", started.elapsed());

    // While it persists, the operator writes a few times a minute at most: each crash of the
    // instance (the kubelet's back-off spaces them) counts once more on the Warning Event; the
    // status, which has not changed, is not written.
    let writes = writes_during(&dev, "shop", "banana", Duration::from_secs(60)).await;
    println!("writes in a minute of persistent failure: {writes:#?}");
    assert!(
        writes.len() <= 3,
        "{} writes in a minute: {writes:#?}",
        writes.len()
    );

    // What `kubectl describe` shows is what docs/troubleshooting.md shows: every line of the
    // doc's example is in the real output, but for ages, times and identities.
    let described = shop.ok(&["describe", "pgc", "banana"]);
    println!("{described}");
    let real: Vec<String> = described.lines().filter_map(stable).collect();
    let documented = documented_describe();
    assert!(documented.len() > 20, "{documented:?}");
    for line in &documented {
        assert!(
            real.contains(line),
            "docs/troubleshooting.md shows {line:?}, which kubectl describe does not:\n{described}"
        );
    }
    // The crashes are counted on one Event.
    assert!(
        described
            .lines()
            .any(|line| line.contains("InvalidParameter") && line.contains("(x")),
        "no repeated InvalidParameter Event:\n{described}"
    );

    shop.ok(&[
        "patch",
        "pgc",
        "banana",
        "--type=merge",
        "-p",
        r#"{"spec":{"parameters":{"shared_buffers":"128MB"}}}"#,
    ]);
    // The fix reaches the instance at its next restart, after the crash-loop back-off.
    wait_recovered(&shop, "banana", Duration::from_secs(240), "");
}

/// The block of docs/troubleshooting.md that shows `kubectl describe` of a crash-looping
/// cluster (the one after the line `<!-- kubectl describe of a crash loop -->`), each line as
/// [`stable`] keeps it.
fn documented_describe() -> Vec<String> {
    let doc = include_str!("../../../docs/troubleshooting.md");
    let (_, after) = doc
        .split_once("<!-- kubectl describe of a crash loop -->\n```\n")
        .expect("the example in docs/troubleshooting.md");
    let (block, _) = after.split_once("\n```").expect("the example's end");
    block.lines().filter_map(stable).collect()
}

/// A line of `kubectl describe` without what changes from one run to the next: lines of
/// times, identities and versions are dropped, and the ages and counts of Events removed.
/// Blank lines are dropped too.
fn stable(line: &str) -> Option<String> {
    const CHANGING: [&str; 6] = [
        "Creation Timestamp:",
        "UID:",
        "Resource Version:",
        "Last Transition Time:",
        "Finished At:",
        // The PostgreSQL installed where the test runs.
        "Postgres Version:",
    ];
    let trimmed = line.trim();
    if trimmed.is_empty() || CHANGING.iter().any(|key| trimmed.starts_with(key)) {
        return None;
    }
    let age = |word: &str| {
        let word = word.trim_start_matches("(x").trim_matches(['(', ')']);
        !word.is_empty()
            && word.chars().next().is_some_and(|c| c.is_ascii_digit())
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || "smhd".contains(c))
    };
    Some(
        trimmed
            .split_whitespace()
            .filter(|word| !age(word) && *word != "over")
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_size_no_node_has_is_unschedulable_and_clears_when_lowered() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    let mut mammoth = cluster("mammoth", json!({}));
    mammoth["spec"]["memorySize"] = json!(1024);
    shop.apply_json(&mammoth);

    // The scheduler says no node has 1 TiB; nothing starts, so nothing crash-loops.
    let message = wait_degraded(&shop, "mammoth", "Unschedulable", "Insufficient memory");
    println!("Unschedulable: {message}");
    let node = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "pod",
        "mammoth-0",
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    assert_eq!(node, "", "the pod was placed on a node");

    // Lowering memorySize is enough: the pod that never ran is replaced.
    shop.ok(&[
        "patch",
        "pgc",
        "mammoth",
        "--type=merge",
        "-p",
        r#"{"spec":{"memorySize":1}}"#,
    ]);
    shop.wait_ready("mammoth");
    wait_event(
        &shop,
        "mammoth",
        ("Normal", "Recovered", ""),
        Duration::from_secs(10),
    );
}

/// The postmaster.pid of the only cluster in `dev`, in its volume under tusk dev's directory.
fn postmaster_pid_file(dev: &Dev) -> PathBuf {
    let data = dev
        .kubeconfig()
        .parent()
        .expect("tusk dev's directory")
        .to_owned();
    files_under(&data)
        .into_iter()
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name == "postmaster.pid")
                && path
                    .parent()
                    .and_then(|parent| parent.file_name())
                    .is_some_and(|name| name == "pgdata")
        })
        .expect("the running cluster's postmaster.pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postgresql_leaves_a_warning_event_on_the_cluster() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");

    let pid_file = postmaster_pid_file(&dev);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("postgres is killed");

    wait_event(
        &shop,
        "elephant",
        ("Warning", "CrashLoop", "SIGKILL"),
        VISIBLE_WITHIN,
    );
    shop.wait_ready("elephant");
}

/// Waits up to [`VISIBLE_WITHIN`] until the cluster's condition `type_` is `True` for `reason`
/// with a message containing `line`; returns the message.
fn wait_condition(
    shop: &Kubectl,
    cluster: &str,
    (type_, reason, line): (&str, &str, &str),
) -> String {
    shop.until(
        &format!("{cluster} {type_} for {reason}"),
        VISIBLE_WITHIN,
        || match condition(shop, cluster, type_) {
            Some((status, seen, message))
                if status == "True" && seen == reason && message.contains(line) =>
            {
                Ok(message)
            }
            other => Err(format!("{other:?}")),
        },
    )
}

/// Backs up shop's elephant as `nightly` and returns where the store keeps the backup's
/// object on disk.
fn backed_up_object(dev: &Dev, shop: &Kubectl) -> PathBuf {
    let (phase, message) = shop.backup("elephant", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");
    let backup = shop.get_json(&["pgb", "nightly"]).expect("the backup");
    let key = backup["spec"]["s3"]["path"].as_str().expect("a key");
    dev.s3_dir().join("tusk-backups").join(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_is_reported_as_restore_failed() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    let object = backed_up_object(&dev, &shop);

    // Someone with access to the store swaps bytes of the backup object.
    let mut bytes = std::fs::read(&object).expect("the object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, bytes).expect("the object is tampered with");

    let mut restored = cluster("restored", json!({}));
    restored["spec"]["restore"] = json!({"backup": {"name": "nightly"}});
    shop.apply_json(&restored);
    let message = wait_degraded(&shop, "restored", "RestoreFailed", "restor");
    println!("RestoreFailed: {message}");
    assert!(
        condition(&shop, "restored", "Ready").is_some_and(|ready| ready.0 == "False"),
        "never promoted to Ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_targets_the_backup_cannot_meet_are_refused_or_fail_loudly() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    let mut source = cluster("elephant", json!({}));
    source["spec"]["walArchiving"] = json!(true);
    shop.apply_json(&source);
    shop.wait_ready("elephant");
    let (phase, message) = shop.backup("elephant", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");

    // Before the backup's end: refused before anything is made.
    let mut too_early = cluster("too-early", json!({}));
    too_early["spec"]["restore"] = json!({"backup": {"name": "nightly"}, "targetLSN": "0/1"});
    shop.apply_json(&too_early);
    let refusal = shop.until("too-early refused", VISIBLE_WITHIN, || {
        match condition(&shop, "too-early", "InvalidSpec") {
            Some((status, _, message)) if status == "True" => Ok(message),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(refusal.contains("spec.restore.targetLSN"), "{refusal}");
    wait_event(
        &shop,
        "too-early",
        ("Warning", "InvalidSpec", "spec.restore.targetLSN"),
        Duration::from_secs(10),
    );
    assert!(
        shop.get_json(&["statefulset", "too-early"]).is_none(),
        "a StatefulSet was made for a restore that cannot be met"
    );

    // Beyond the archived WAL: PostgreSQL's own refusal, and never Ready.
    let mut too_late = cluster("too-late", json!({}));
    too_late["spec"]["restore"] =
        json!({"backup": {"name": "nightly"}, "targetTime": "2999-01-01T00:00:00Z"});
    shop.apply_json(&too_late);
    let message = wait_degraded(
        &shop,
        "too-late",
        "RestoreFailed",
        "recovery ended before configured recovery target was reached",
    );
    println!("RestoreFailed: {message}");
    assert!(
        condition(&shop, "too-late", "Ready").is_some_and(|ready| ready.0 == "False"),
        "promoted short of its target"
    );
}

/// `{.status.observedGeneration}` and `{.metadata.generation}` of a cluster.
fn generations(kubectl: &Kubectl, cluster: &str) -> (i64, i64) {
    let object = kubectl.get_json(&["pgc", cluster]).expect("the cluster");
    (
        object["status"]["observedGeneration"].as_i64().unwrap_or(0),
        object["metadata"]["generation"].as_i64().unwrap_or(0),
    )
}

/// What shows that the instance was not restarted: the pod's uid, its container's restart
/// count, and PostgreSQL's own start time.
fn incarnation(admin: &Kubectl) -> (String, String, String) {
    let pod = |path: &str| {
        admin.ok(&[
            "--namespace",
            "shop",
            "get",
            "pod",
            "elephant-0",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    (
        pod("{.metadata.uid}"),
        pod("{.status.containerStatuses[0].restartCount}"),
        shared::owner_sql(
            admin,
            "shop",
            "elephant",
            "SELECT pg_postmaster_start_time()",
        )
        .expect("the database serves"),
    )
}

fn set_parameter(shop: &Kubectl, name: &str, value: Value) {
    patch_spec(shop, json!({"parameters": {name: value}}));
}

/// Merges `spec` into elephant's spec, as `kubectl patch --type=merge` does.
fn patch_spec(shop: &Kubectl, spec: Value) {
    shop.ok(&[
        "patch",
        "pgc",
        "elephant",
        "--type=merge",
        "-p",
        &json!({ "spec": spec }).to_string(),
    ]);
}

/// Sets `setting` of shop's elephant to `value` and checks that it is refused with `line` while
/// the database keeps serving: `Degraded` `InvalidParameter` and a Warning Event within
/// [`VISIBLE_WITHIN`], the instance not restarted (`before` is its [`incarnation`]), `Ready`,
/// `observedGeneration` held, the running value unchanged.
fn refused_while_serving(
    shop: &Kubectl,
    admin: &Kubectl,
    before: &(String, String, String),
    (setting, value): (&str, &str),
    line: &str,
) {
    let (observed, _) = generations(shop, "elephant");
    set_parameter(shop, setting, json!(value));
    let started = Instant::now();
    let message = wait_condition(shop, "elephant", ("Degraded", "InvalidParameter", line));
    println!(
        "{setting}: InvalidParameter after {:?}: {message}",
        started.elapsed()
    );
    wait_event(
        shop,
        "elephant",
        ("Warning", "InvalidParameter", line),
        Duration::from_secs(10),
    );
    // Give a roll, had one been started, the time to take the pod down.
    std::thread::sleep(Duration::from_secs(10));
    serving_as_before(
        shop,
        admin,
        before,
        observed,
        &format!("a refused {setting}"),
    );
    let running = shared::owner_sql(admin, "shop", "elephant", &format!("SHOW {setting}"))
        .expect("the database serves");
    assert_ne!(running, value);
}

/// Checks that shop's elephant keeps serving the spec it served, despite `what`: `Ready`,
/// `observedGeneration` still `observed`, the instance not restarted (`before` is its
/// [`incarnation`]).
fn serving_as_before(
    shop: &Kubectl,
    admin: &Kubectl,
    before: &(String, String, String),
    observed: i64,
    what: &str,
) {
    assert_eq!(
        &incarnation(admin),
        before,
        "the instance was restarted for {what}"
    );
    let ready = condition(shop, "elephant", "Ready").expect("a Ready condition");
    assert_eq!(ready.0, "True", "the database keeps serving: {ready:?}");
    assert_eq!(
        generations(shop, "elephant").0,
        observed,
        "observedGeneration claims the spec is in force despite {what}"
    );
}

/// Removes `setting` from shop's elephant and checks that `Degraded` clears, with a Normal
/// `Recovered` Event, and that the spec is in force again.
fn removed_and_recovered(shop: &Kubectl, setting: &str) {
    set_parameter(shop, setting, Value::Null);
    shop.until(
        &format!("elephant in force after fixing {setting}"),
        VISIBLE_WITHIN,
        || {
            let degraded = condition(shop, "elephant", "Degraded");
            let (observed, generation) = generations(shop, "elephant");
            match &degraded {
                Some((status, _, _)) if status == "False" && observed == generation => Ok(()),
                _ => Err(format!("{degraded:?}, observed {observed} of {generation}")),
            }
        },
    );
    wait_event(
        shop,
        "elephant",
        ("Normal", "Recovered", ""),
        Duration::from_secs(10),
    );
}

/// Tenant shop's and the admin's kubectl once shop's elephant is ready, with the elephant's
/// [`incarnation`].
async fn serving_elephant(dev: &Dev) -> (Kubectl, Kubectl, (String, String, String)) {
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    let before = incarnation(&admin);
    (shop, admin, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_on_a_running_cluster_is_refused_by_postgresql_and_the_database_keeps_serving() {
    let dev = Dev::start();
    let (shop, admin, before) = serving_elephant(&dev).await;

    // A restart-only setting and a reload-only one: each typo is PostgreSQL's to refuse.
    for setting in ["shared_buffers", "work_mem"] {
        let line = format!(r#"invalid value for parameter "{setting}": "banana""#);
        refused_while_serving(&shop, &admin, &before, (setting, "banana"), &line);
        removed_and_recovered(&shop, setting);
    }
    assert_eq!(incarnation(&admin), before, "the instance was restarted");
    // Two refusals of one reason with different messages are two Events, not one counted twice.
    let described = shop.ok(&["describe", "pgc", "elephant"]);
    for setting in ["shared_buffers", "work_mem"] {
        let line = format!(r#"invalid value for parameter "{setting}": "banana""#);
        assert!(
            described
                .lines()
                .any(|event| event.contains("InvalidParameter") && event.contains(&line)),
            "no InvalidParameter Event about {setting}:\n{described}"
        );
    }

    // A valid restart-only change is applied by a restart, once PostgreSQL accepted it.
    set_parameter(&shop, "shared_buffers", json!("200MB"));
    shop.until("shared_buffers in force", Duration::from_secs(120), || {
        let shown = shared::owner_sql(&admin, "shop", "elephant", "SHOW shared_buffers")?;
        let (observed, generation) = generations(&shop, "elephant");
        (shown == "200MB" && observed == generation)
            .then_some(())
            .ok_or(format!("{shown}, observed {observed} of {generation}"))
    });
    shop.wait_ready("elephant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_beyond_memory_size_is_refused_and_the_database_keeps_serving() {
    let dev = Dev::start();
    let (shop, admin, before) = serving_elephant(&dev).await;

    // PostgreSQL accepts 2 GB of shared_buffers; in a pod limited to 1 GiB the kernel would
    // kill it once it used them. Refused before the instance sees it.
    refused_while_serving(
        &shop,
        &admin,
        &before,
        ("shared_buffers", "2GB"),
        "shared_buffers (2048 MiB) and wal_buffers (16 MiB) take 2064 MiB of shared memory, \
         at least the pod's memory limit of 1 GiB",
    );
    // Nor is it written where a restart of the instance would take it up.
    let conf = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "configmap",
        "elephant-config",
        "-o",
        "jsonpath={.data.postgresql\\.conf}",
    ]);
    assert!(conf.contains("shared_buffers"), "{conf}");
    assert!(!conf.contains("2GB"), "{conf}");
    removed_and_recovered(&shop, "shared_buffers");
}

/// Writes about `bytes` into shop's elephant as a new table of rows of about 1 KiB (too short
/// to be compressed); returns how many rows.
fn fill(admin: &Kubectl, table: &str, bytes: i64) -> i64 {
    let rows = bytes / 1024;
    shared::owner_sql(
        admin,
        "shop",
        "elephant",
        &format!(
            "CREATE TABLE {table} AS SELECT g, repeat('x', 1000) AS payload \
             FROM generate_series(1, {rows}) g"
        ),
    )
    .expect("the data is written");
    rows
}

/// Restarts shop's elephant when its claim waits for that to grow its filesystem, as
/// Kubernetes asks of a volume whose driver only grows it offline (`tusk dev` not run as root).
fn restart_pending_pod(admin: &Kubectl) {
    let pending = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "pvc",
        "-o",
        "jsonpath={.items[*].status.conditions[*].type}",
    ]);
    if pending.contains("FileSystemResizePending") {
        admin.ok(&["--namespace", "shop", "delete", "pod", "elephant-0"]);
    }
}

/// `status.disk` of a cluster as `(usedBytes, totalBytes, usedPercent)`.
fn disk(kubectl: &Kubectl, cluster: &str) -> Option<(i64, i64, i64)> {
    let object = kubectl.get_json(&["pgc", cluster])?;
    let disk = &object["status"]["disk"];
    Some((
        disk["usedBytes"].as_i64()?,
        disk["totalBytes"].as_i64()?,
        disk["usedPercent"].as_i64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_data_volume_is_reported_as_disk_full_and_clears_when_it_grows() {
    // The local runtime gives a claim a filesystem of the size it asks (1 GiB here), as a
    // cloud disk is, so that a real database fills it by writing data. The threshold is
    // lowered to 20% so that it fills quickly.
    const GIB: i64 = 1 << 30;
    let mut dev = Dev::start_with(&["--disk-full-percent", "20"]);
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");

    // The figure is the volume's own: 1 GiB, less what ext4 keeps for itself (its inode tables
    // and 1% reserved, about 4% in all, whether the kernel or fuse2fs mounts it).
    let (used, total, percent) = shop.until("elephant's disk usage", VISIBLE_WITHIN, || {
        disk(&shop, "elephant").ok_or("no status.disk yet".to_owned())
    });
    println!("before: {used} of {total} bytes, {percent}%");
    assert!(
        total <= GIB && total > GIB * 8 / 10,
        "{total} bytes: not the claim's 1 GiB"
    );
    assert!(percent < 20, "{percent}% before any data was written");
    let degraded = condition(&shop, "elephant", "Degraded").expect("a Degraded condition");
    assert_eq!(degraded.0, "False", "{degraded:?}");

    // Enough to pass 20% even without its WAL, and to reach about 30% with it.
    let rows = fill(&admin, "filler", (total * 3 / 10 - used) / 2);

    let message = wait_condition(&shop, "elephant", ("Degraded", "DiskFull", ""));
    println!("DiskFull: {message}");
    assert!(message.contains("at or above 20%"), "{message}");
    let (_, _, percent) = disk(&shop, "elephant").expect("status.disk");
    assert!(percent >= 20, "{percent}%");
    let phase = shop.ok(&["get", "pgc", "elephant", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Degraded", "the phase agrees with the conditions");
    let ready = condition(&shop, "elephant", "Ready").expect("a Ready condition");
    assert_eq!(ready.0, "True", "the database still serves: {ready:?}");
    wait_event(
        &shop,
        "elephant",
        ("Warning", "DiskFull", "at or above 20%"),
        Duration::from_secs(10),
    );

    // The customer grows the disk to 3 GiB, where the same data is about 11%: the claim grows,
    // and so does the filesystem (online where the runtime may; otherwise once the pod
    // restarts, as Kubernetes asks of a claim with FileSystemResizePending). The volume is
    // allocated on the host, so the test asks no more than it needs.
    patch_spec(&shop, json!({"postgresDiskSize": 3}));
    shop.until(
        "elephant no longer DiskFull",
        Duration::from_secs(120),
        || {
            restart_pending_pod(&admin);
            match condition(&shop, "elephant", "Degraded") {
                Some((status, _, _)) if status == "False" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    wait_event(
        &shop,
        "elephant",
        ("Normal", "Recovered", "The data volume has room again"),
        Duration::from_secs(10),
    );
    let (_, total, _) = disk(&shop, "elephant").expect("status.disk");
    assert!(
        total <= 3 * GIB && total > 3 * GIB * 8 / 10,
        "{total} bytes: not the grown claim's 3 GiB"
    );

    // The volume and its data outlive `tusk dev`.
    dev.restart();
    let shop = dev.tenant("shop", false).await;
    shop.wait_ready("elephant");
    let count = shop.until("the data after a restart", VISIBLE_WITHIN, || {
        shared::owner_sql(
            &dev.admin(),
            "shop",
            "elephant",
            "SELECT count(*) FROM filler",
        )
    });
    assert_eq!(
        count,
        rows.to_string(),
        "the rows written before the restart"
    );
    let (_, total, _) = shop.until("elephant's disk usage", VISIBLE_WITHIN, || {
        disk(&shop, "elephant").ok_or("no status.disk yet".to_owned())
    });
    assert!(total > 3 * GIB * 8 / 10, "{total} bytes after a restart");
    drop(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_grows_by_itself_up_to_the_platforms_limit() {
    // The platform lets the operator grow full volumes up to 2 GiB; full is 20% here, so that
    // a few hundred MB fill a volume.
    const GIB: i64 = 1 << 30;
    let dev = Dev::start_with(&[
        "--disk-full-percent",
        "20",
        "--disk-auto-grow-max-size-gi",
        "2",
    ]);
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    let usage = || {
        shop.until("elephant's disk usage", VISIBLE_WITHIN, || {
            disk(&shop, "elephant").ok_or("no status.disk yet".to_owned())
        })
    };

    // Full at 1 GiB: the operator asks for 2 GiB (1 GiB plus 50%, in whole GiB).
    let (used, total, _) = usage();
    fill(&admin, "filler", (total * 3 / 10 - used) / 2);
    wait_event(
        &shop,
        "elephant",
        (
            "Normal",
            "DiskGrown",
            "asked it to grow from 1Gi to 2Gi (the platform's limit is 2Gi)",
        ),
        VISIBLE_WITHIN * 2,
    );
    wait_grown(&shop, &admin);
    let grown = shop.ok(&[
        "get",
        "pgc",
        "elephant",
        "-o",
        "jsonpath={.status.autoGrownDiskSize}",
    ]);
    assert_eq!(grown, "2", "status.autoGrownDiskSize");
    // The filesystem grew too, and has room again.
    shop.until("room on the grown volume", Duration::from_secs(180), || {
        restart_pending_pod(&admin);
        match (
            disk(&shop, "elephant"),
            condition(&shop, "elephant", "Degraded"),
        ) {
            (Some((_, total, _)), Some((status, _, _)))
                if total > 2 * GIB * 8 / 10 && status == "False" =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });

    // Full again at the limit: a Warning, and no growth past it.
    let (used, total, _) = usage();
    fill(&admin, "more", (total * 3 / 10 - used) / 2);
    wait_event(
        &shop,
        "elephant",
        (
            "Warning",
            "DiskGrowthLimitReached",
            "full at 2Gi, and the platform's limit for growing it is 2Gi",
        ),
        VISIBLE_WITHIN * 2,
    );
    wait_condition(
        &shop,
        "elephant",
        ("Degraded", "DiskFull", "at or above 20%"),
    );
    assert_eq!(claim_size(&admin).0, "2Gi", "grown past the limit");
}

/// The data claim's storage request and capacity, as `(request, capacity)`.
fn claim_size(admin: &Kubectl) -> (String, String) {
    let claim = admin
        .get_json(&["--namespace", "shop", "pvc", "data-elephant-0"])
        .expect("the data claim");
    let text = |pointer: &str| {
        claim
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (
        text("/spec/resources/requests/storage"),
        text("/status/capacity/storage"),
    )
}

/// Asks shop's elephant for a 2Gi disk and checks that the growth is reported as `reason`
/// with `line` while the database keeps serving: `Degraded` and a Warning Event within
/// [`VISIBLE_WITHIN`], `Ready`, `observedGeneration` held, the claim asking `request` and still
/// holding 1Gi, the instance not restarted. Returns the condition's message.
fn grown_only_in_the_spec(
    shop: &Kubectl,
    admin: &Kubectl,
    (reason, line): (&str, &str),
    request: &str,
) -> String {
    let before = incarnation(admin);
    let (observed, _) = generations(shop, "elephant");
    patch_spec(shop, json!({"postgresDiskSize": 2}));
    let message = wait_condition(shop, "elephant", ("Degraded", reason, line));
    println!("{reason}: {message}");
    wait_event(
        shop,
        "elephant",
        ("Warning", reason, line),
        Duration::from_secs(10),
    );
    let phase = shop.ok(&["get", "pgc", "elephant", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Degraded", "the phase agrees with the conditions");
    serving_as_before(shop, admin, &before, observed, "a disk size not had");
    assert_eq!(claim_size(admin), (request.to_owned(), "1Gi".to_owned()));
    message
}

/// Waits until shop's elephant's data claim has grown to 2Gi, restarting its pod where the
/// volume grows only unmounted.
fn wait_grown(shop: &Kubectl, admin: &Kubectl) {
    shop.until("the claim grown to 2Gi", Duration::from_secs(120), || {
        restart_pending_pod(admin);
        match claim_size(admin) {
            (request, capacity) if request == "2Gi" && capacity == "2Gi" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growth_the_platforms_storage_class_refuses_is_reported_and_the_database_keeps_serving() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    // The claim has the cluster's default class, which the platform now keeps from growing.
    let class = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "pvc",
        "data-elephant-0",
        "-o",
        "jsonpath={.spec.storageClassName}",
    ]);
    assert_eq!(class, "standard");
    let expansion = |allowed: bool| {
        admin.ok(&[
            "patch",
            "storageclass",
            "standard",
            "--type=merge",
            "-p",
            &json!({"allowVolumeExpansion": allowed}).to_string(),
        ]);
    };
    expansion(false);
    let refusal = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";
    let message = grown_only_in_the_spec(&shop, &admin, ("VolumeExpansionRefused", refusal), "1Gi");
    assert!(message.contains("2Gi"), "{message}");

    // The platform allows expansion: the claim grows and the refusal clears.
    expansion(true);
    wait_grown(&shop, &admin);
    wait_recovered(
        &shop,
        "elephant",
        VISIBLE_WITHIN,
        "no longer refused the size asked",
    );
}

/// A small filesystem of its own mounted on `dir` for as long as it lives: the host's disk as
/// the sandbox's volumes see it, so that a test can fill it. The runtime mounts its volumes'
/// images inside it the same way (a loop device as root, fuse2fs otherwise).
struct SmallHostDisk {
    dir: PathBuf,
}

impl SmallHostDisk {
    /// Formats an image of `bytes` at `image` and mounts it on `dir`.
    fn mount(image: &std::path::Path, dir: &std::path::Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).expect("the mount point");
        std::fs::File::create(image)
            .and_then(|file| file.set_len(bytes))
            .expect("the host disk's image");
        let run = |program: &str, arguments: &[&std::ffi::OsStr]| {
            let output = std::process::Command::new(program)
                .args(arguments)
                .output()
                .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
            assert!(output.status.success(), "{program}: {output:?}");
        };
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", "-E", "root_owner"]
                .map(std::ffi::OsStr::new)
                .into_iter()
                .chain([image.as_os_str()])
                .collect::<Vec<_>>(),
        );
        if nix::unistd::geteuid().is_root() {
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_os_str(),
                    dir.as_os_str(),
                ],
            );
        } else {
            run("fuse2fs", &[image.as_os_str(), dir.as_os_str()]);
        }
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The bytes free on it.
    fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for SmallHostDisk {
    fn drop(&mut self) {
        let (program, arguments): (&str, &[&str]) = if nix::unistd::geteuid().is_root() {
            ("umount", &["-l"])
        } else {
            ("fusermount", &["-u", "-z"])
        };
        let _ = std::process::Command::new(program)
            .args(arguments)
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growth_the_host_has_no_room_for_is_reported_and_clears_once_it_has() {
    // The sandbox keeps its claims' volumes in <data dir>/runtime/volumes; there, a host disk
    // of 2.5 GiB, most of which other data (the ballast) takes once the 1 GiB volume is made.
    const GIB: u64 = 1 << 30;
    let temp = tempfile::tempdir().expect("a temporary directory");
    // Declared before the sandbox, so that it is unmounted after the sandbox stops.
    let host_disk = SmallHostDisk::mount(
        &temp.path().join("host-disk.img"),
        &temp.path().join("dev/runtime/volumes"),
        5 * GIB / 2,
    );
    let dev = Dev::start_in(temp, &[]);
    let shop = dev.tenant("shop", false).await;
    let admin = dev.admin();
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    let ballast = host_disk.dir.join("ballast");
    let ballast_bytes = host_disk.free().saturating_sub(GIB / 2);
    let fallocated = std::process::Command::new("fallocate")
        .args(["-l", &ballast_bytes.to_string()])
        .arg(&ballast)
        .status()
        .expect("fallocate runs");
    assert!(fallocated.success());
    println!("the host disk has {} bytes free", host_disk.free());
    assert!(host_disk.free() < GIB, "room left for the growth");
    // The API server lets the claim grow; the host cannot give it the room.
    let message = grown_only_in_the_spec(
        &shop,
        &admin,
        ("VolumeExpansionFailed", "No space left on device"),
        "2Gi",
    );
    assert!(
        message.contains("data-elephant-0") && message.contains("2Gi"),
        "{message}"
    );
    // The claim says it as Kubernetes' resizer does.
    let claim = admin
        .get_json(&["--namespace", "shop", "pvc", "data-elephant-0"])
        .expect("the data claim");
    assert_eq!(
        claim["status"]["allocatedResourceStatuses"]["storage"], "ControllerResizeInfeasible",
        "{claim:#}"
    );
    let claim_events = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data-elephant-0,reason=VolumeResizeFailed",
        "-o",
        "jsonpath={.items[*].type}",
    ]);
    assert!(claim_events.contains("Warning"), "{claim_events:?}");

    // While it persists, nothing is written about the cluster: the claim's retries that fail
    // alike change nothing.
    let writes = writes_during(&dev, "shop", "elephant", Duration::from_secs(30)).await;
    println!("writes in 30 s of a failing growth: {writes:#?}");
    assert!(writes.len() <= 1, "{writes:#?}");

    // The host gets the room: the claim grows at the next retry and the failure clears.
    std::fs::remove_file(&ballast).expect("the ballast goes");
    wait_grown(&shop, &admin);
    wait_recovered(
        &shop,
        "elephant",
        VISIBLE_WITHIN,
        "have grown to the size asked",
    );
    let claim = admin
        .get_json(&["--namespace", "shop", "pvc", "data-elephant-0"])
        .expect("the data claim");
    assert!(
        claim["status"]["allocatedResourceStatuses"].is_null(),
        "{claim:#}"
    );
    let (observed, generation) = generations(&shop, "elephant");
    assert_eq!(observed, generation, "the grown disk is in force");
}

/// Makes the store unable to delete the object at `path` (`stuck`) or able again: immutable
/// for a runtime running as root, whom no permission stops; otherwise its directory read-only.
fn stuck_in_store(path: &std::path::Path, stuck: bool) {
    if nix::unistd::geteuid().is_root() {
        let status = std::process::Command::new("chattr")
            .arg(if stuck { "+i" } else { "-i" })
            .arg(path)
            .status()
            .expect("chattr runs");
        assert!(status.success(), "chattr: {status}");
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        let directory = path.parent().expect("the object's directory");
        let mode = if stuck { 0o555 } else { 0o755 };
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(mode))
            .expect("the directory's mode");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_the_store_refuses_is_reported_as_deletion_blocked_and_ends_once_it_can() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&cluster("elephant", json!({})));
    shop.wait_ready("elephant");
    let object = backed_up_object(&dev, &shop);
    stuck_in_store(&object, true);

    shop.ok(&["delete", "pgc", "elephant", "--wait=false"]);
    let message = wait_condition(
        &shop,
        "elephant",
        ("DeletionBlocked", "DeletionBlocked", "object store"),
    );
    println!("DeletionBlocked: {message}");
    assert!(message.contains("object store"), "{message}");
    wait_event(
        &shop,
        "elephant",
        (
            "Warning",
            "DeletionBlocked",
            "cannot be removed from the object store",
        ),
        Duration::from_secs(10),
    );
    // Retried, and still blocked: the cluster stays.
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        shop.get_json(&["pgc", "elephant"]).is_some(),
        "the cluster went while its data is still in the store"
    );
    assert!(object.exists(), "the stuck object is gone");

    stuck_in_store(&object, false);
    shop.until("elephant deleted", VISIBLE_WITHIN, || {
        match shop.get_json(&["pgc", "elephant"]) {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    });
    assert!(!object.exists(), "the backup object outlived its cluster");
}
