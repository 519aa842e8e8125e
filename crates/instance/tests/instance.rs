//! `tusk instance` against a real PostgreSQL 15: bootstrap, health, reload, shutdown, refusal.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Instance, OWNER, OWNER_PASSWORD, REPLICATION, REPLICATION_PASSWORD};
use tusk_backup::{
    BackupOptions, BackupStore, Compression, PgConnection, Progress, StoreConfig, WalMode,
    run_backup,
};
use tusk_instance::supervisor::{self, InstanceError, RestoreSource};

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_fresh_instance_serves_its_roles_and_stops_cleanly() {
    let mut instance = Instance::start("work_mem = '4MB'\n");
    instance.wait_ready().await;
    assert_eq!(
        common::http_status(instance.health(), "/livez").await,
        Some(200)
    );

    let superuser = instance.management("postgres").await;
    let is_superuser: bool = superuser
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(is_superuser);
    assert_eq!(
        show(&superuser, "listen_addresses").await,
        instance.config.listen_host.to_string()
    );
    assert_eq!(show(&superuser, "work_mem").await, "4MB");
    assert_eq!(show(&superuser, "wal_level").await, "replica");
    assert_eq!(show(&superuser, "archive_mode").await, "off");
    assert_eq!(
        show(&superuser, "password_encryption").await,
        "scram-sha-256"
    );

    let app = instance.owner().await;
    app.batch_execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")
        .await
        .expect("the owner cannot create tables in its database");
    let app_is_superuser: bool = app
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!app_is_superuser);
    let wrong = instance.connect(OWNER, "not-the-password", OWNER).await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    drop((superuser, app));

    let pid = instance
        .postmaster_pid()
        .expect("no postmaster.pid while running");
    assert!(common::process_exists(pid));
    instance
        .stop()
        .await
        .expect("the supervisor failed to stop");
    assert!(
        !common::process_exists(pid),
        "postgres (pid {pid}) is still running after the supervisor returned"
    );
    assert!(instance.postmaster_pid().is_none());
    assert_eq!(
        common::http_status(instance.health(), "/livez").await,
        None,
        "the health endpoint outlived the supervisor"
    );

    // Starting again reuses the data directory: no initdb, the data is still there.
    instance.restart();
    instance.wait_ready().await;
    let app = instance.owner().await;
    let body: String = app
        .query_one("SELECT body FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "kept");
    drop(app);
    instance.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_configuration_is_reloaded_and_a_dead_postgres_fails_the_supervisor() {
    let mut instance = Instance::start("work_mem = '4MB'\n");
    instance.wait_ready().await;
    let client = instance.owner().await;
    assert_eq!(show(&client, "work_mem").await, "4MB");

    // The kubelet replaces a ConfigMap file rather than writing into it.
    let config_file = &instance.config.config_file;
    let replacement = config_file.with_extension("new");
    std::fs::write(&replacement, "work_mem = '12MB'\n").unwrap();
    std::fs::rename(&replacement, config_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A reload reaches each session between statements, so ask on a fresh one each time.
        let fresh = instance.owner().await;
        if show(&fresh, "work_mem").await == "12MB" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new work_mem never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(client);

    // Nobody asked postgres to stop: its death is the supervisor's failure.
    let pid = instance.postmaster_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match instance.finished().await {
        Err(InstanceError::PostgresExited(_)) => {}
        other => panic!("expected the supervisor to fail with postgres, got {other:?}"),
    }
}

/// Replaces the mounted configuration as the kubelet does, and waits until the instance's
/// report at `/parameters` contains `expected`.
async fn offer_configuration(instance: &Instance, content: &str, expected: &str) -> String {
    let config_file = &instance.config.config_file;
    let replacement = config_file.with_extension("new");
    std::fs::write(&replacement, content).unwrap();
    std::fs::rename(&replacement, config_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = common::http_get(instance.health(), "/parameters").await;
        if let Some((200, body)) = &report
            && body.contains(expected)
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the report never said {expected}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_configuration_postgresql_refuses_never_reaches_the_running_server() {
    let mut instance = Instance::start("work_mem = '4MB'\n");
    instance.wait_ready().await;
    let pid = instance.postmaster_pid().unwrap();

    let report = offer_configuration(
        &instance,
        "work_mem = 'banana'\nshared_buffers = '64MB'\n",
        r#""outcome":"Refused""#,
    )
    .await;
    assert!(
        report.contains(
            r#"{"name":"work_mem","message":"invalid value for parameter \"work_mem\": \"banana\""#
        ),
        "{report}"
    );
    // The running configuration stays in force, and nothing restarted.
    let fresh = instance.owner().await;
    assert_eq!(show(&fresh, "work_mem").await, "4MB");
    assert_eq!(instance.postmaster_pid(), Some(pid));

    // A restart meanwhile (the pod was deleted) starts with the configuration PostgreSQL
    // accepted last, and the refusal is still reported.
    instance.stop().await.expect("a clean stop");
    instance.restart();
    instance.wait_ready().await;
    let fresh = instance.owner().await;
    assert_eq!(show(&fresh, "work_mem").await, "4MB");
    let report = common::http_get(instance.health(), "/parameters").await;
    assert!(
        report
            .as_ref()
            .is_some_and(|(status, body)| *status == 200 && body.contains(r#""outcome":"Refused""#)),
        "{report:?}"
    );

    // A valid one is loaded, and what needs a restart says so.
    let report = offer_configuration(
        &instance,
        "work_mem = '12MB'\nshared_buffers = '64MB'\n",
        r#""outcome":"Loaded""#,
    )
    .await;
    assert!(
        report.contains(r#""pendingRestart":["shared_buffers"]"#),
        "{report}"
    );
    let fresh = instance.owner().await;
    assert_eq!(show(&fresh, "work_mem").await, "12MB");
    instance.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn a_data_directory_marked_by_a_failed_restore_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let config = common::instance_config(root.path(), "");
    std::fs::create_dir(&config.data_dir).unwrap();
    std::fs::write(
        config
            .data_dir
            .join(tusk_backup::restore::RESTORE_INCOMPLETE_MARKER),
        b"",
    )
    .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        supervisor::run(config.clone(), std::future::pending()),
    )
    .await
    .expect("the supervisor did not refuse promptly");
    match result {
        Err(InstanceError::RestoreIncomplete(dir)) => assert_eq!(dir, config.data_dir),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(common::postmaster_pid(&config.data_dir).is_none());
    assert!(!config.data_dir.join("PG_VERSION").exists());
}

#[tokio::test]
async fn an_instance_bootstraps_from_a_backup_refuses_a_failed_restore_and_resumes_an_interrupted_one()
 {
    // A source cluster with some data, backed up with tusk-backup into a file:// store.
    let mut source = Instance::start("");
    source.wait_ready().await;
    let app = source.owner().await;
    app.batch_execute("CREATE TABLE orders AS SELECT generate_series(1, 1000) AS id")
        .await
        .unwrap();
    drop(app);
    let store_dir = tempfile::tempdir().unwrap();
    let store_config = StoreConfig {
        url: format!("file://{}", store_dir.path().display()),
        ..StoreConfig::default()
    };
    let store = BackupStore::new(&store_config).unwrap();
    let key = tusk_api::names::base_backup_key(
        &tusk_api::names::cluster_storage_prefix(store.prefix(), "ns", "source", "source-uid"),
        "nightly-uid",
    );
    let passphrase = b"the source cluster's passphrase".to_vec();
    // The backup Job's login: the replication role, no superuser.
    let connection = PgConnection {
        host: source.config.listen_host.to_string(),
        port: 5432,
        user: REPLICATION.to_owned(),
        password: Some(REPLICATION_PASSWORD.to_owned()),
        ..Default::default()
    };
    let options = BackupOptions {
        compression: Compression::Gzip { level: 1 },
        passphrase: passphrase.clone(),
        wal: WalMode::Include,
        label: "instance test".to_owned(),
        pg_basebackup: None,
    };
    run_backup(
        &connection,
        &store,
        &key,
        &options,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    source.stop().await.unwrap();

    let restore_source = |passphrase: Vec<u8>| RestoreSource {
        store: store_config.clone(),
        key: key.clone(),
        passphrase,
        target_time: None,
        target_lsn: None,
        latest: false,
        expected_size: None,
        expected_sha256: None,
        wal_prefix: None,
        wal_passphrase_env: None,
    };

    // A wrong passphrase fails the restore, and the directory stays refused afterwards.
    let failed_root = tempfile::tempdir().unwrap();
    let mut failed = common::instance_config(failed_root.path(), "");
    failed.restore = Some(restore_source(b"not the passphrase".to_vec()));
    let first = supervisor::run(failed.clone(), std::future::pending()).await;
    assert!(
        matches!(first, Err(InstanceError::Restore(_))),
        "expected a failed restore, got {first:?}"
    );
    // Every later start refuses it, and still says why it failed.
    let second = supervisor::run(failed.clone(), std::future::pending()).await;
    match second {
        Err(InstanceError::RestoreFailedEarlier { cause, .. }) => {
            assert!(cause.contains("wrong passphrase"), "{cause}");
        }
        other => panic!("expected a refusal naming the cause, got {other:?}"),
    }

    // A restore killed in the middle of unpacking left its marker (as first written) and part
    // of the files: the next start throws them away and restores again, and the right
    // passphrase brings the data back.
    let root = tempfile::tempdir().unwrap();
    let mut config = common::instance_config(root.path(), "");
    config.restore = Some(restore_source(passphrase));
    std::fs::create_dir_all(config.data_dir.join("base/1")).unwrap();
    std::fs::write(config.data_dir.join("base/1/1259"), b"half a file").unwrap();
    std::fs::write(
        config
            .data_dir
            .join(tusk_backup::restore::RESTORE_INCOMPLETE_MARKER),
        b"a tusk restore into this directory has not completed\n",
    )
    .unwrap();
    // This cluster's own credentials, not the source's, open the restored database.
    config.owner.password = "the new cluster's owner password".to_owned();
    let new_owner = config.owner.clone();
    let mut restored = Instance::start_with(root, config);
    restored.wait_ready().await;
    assert!(
        restored
            .connect(OWNER, OWNER_PASSWORD, OWNER)
            .await
            .is_err(),
        "the source cluster's owner password still works"
    );
    let app = restored
        .connect(&new_owner.name, &new_owner.password, OWNER)
        .await
        .expect("the new owner password does not open the restored cluster");
    let count: i64 = app
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);
    drop(app);
    restored.stop().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_while_bootstrapping_starts_nothing_and_the_next_start_recovers() {
    let root = tempfile::tempdir().unwrap();
    let config = common::instance_config(root.path(), "");
    let health = SocketAddr::new(config.listen_host, config.health_port);
    // initdb takes well over this, so the request arrives while it runs. Meanwhile the health
    // port already says "live, not ready": a restore as long as a large backup must not fail
    // the liveness probe (the kubelet would restart it, and the restore, over and over).
    let probes_while_bootstrapping = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        (
            common::http_status(health, "/livez").await,
            common::http_status(health, "/readyz").await,
        )
    };
    let (result, probed) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            supervisor::run(
                config.clone(),
                tokio::time::sleep(Duration::from_millis(300)),
            ),
            probes_while_bootstrapping,
        )
    })
    .await
    .expect("the supervisor ignored the shutdown request while bootstrapping");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        probed,
        (Some(200), Some(503)),
        "(livez, readyz) while bootstrapping"
    );
    assert!(!config.data_dir.join("PG_VERSION").exists());
    assert_eq!(common::http_status(health, "/livez").await, None);

    let mut instance = Instance::start_with(root, config);
    instance.wait_ready().await;
    instance
        .connect(OWNER, OWNER_PASSWORD, OWNER)
        .await
        .expect("the instance started after an interrupted bootstrap is not usable");
    instance.stop().await.unwrap();
}

#[tokio::test]
async fn a_data_directory_too_deep_for_a_socket_still_admits_the_supervisor() {
    // A sandbox pod's data directory lies deep in its root; a socket there would be too long.
    let root = tempfile::tempdir().unwrap();
    let mut config = common::instance_config(root.path(), "");
    let deep = root.path().join("d".repeat(100));
    std::fs::create_dir(&deep).unwrap();
    std::fs::set_permissions(&deep, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    config.data_dir = deep.join("pgdata");
    let mut instance = Instance::start_with(root, config);
    // Readiness is the management role's query through the socket.
    instance.wait_ready().await;
    instance.owner().await;
    instance.stop().await.unwrap();
}

/// psql run in the container as the instance's own user, with nothing but the container's
/// `PGHOST` and `PGUSER` (as `kubectl exec <pod> -- psql` runs it), reaching the server over
/// the socket directory given, as the management role.
fn psql_in_the_container(socket_dir: &std::path::Path, uid: Option<u32>) -> (bool, String) {
    let mut command = std::process::Command::new("psql");
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_user, inet_server_addr() IS NULL",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(supervisor::env::SOCKET_DIR, socket_dir)
        .env("PGUSER", common::MANAGEMENT);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
    }
    let output = command.output().expect("psql runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The socket goes where the container's `PGHOST` says (a pod's emptyDir, mode 0777 as the
/// kubelet makes it), so that psql run in the container connects as on a database server; the
/// socket itself is the PostgreSQL user's alone, so no other user of the machine connects.
#[tokio::test]
async fn psql_in_the_container_finds_the_socket_where_pghost_says_and_no_one_else_can_use_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let mut config = common::instance_config(root.path(), "");
    let socket_dir = root.path().join("run");
    std::fs::create_dir(&socket_dir).unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    config.socket_dir = Some(socket_dir.clone());
    let mut instance = Instance::start_with(root, config);
    instance.wait_ready().await;
    let socket = socket_dir.join(".s.PGSQL.5432");
    let mode = std::fs::metadata(&socket)
        .expect("the socket is in the PGHOST directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the socket is open to others");
    let (connected, answer) = psql_in_the_container(&socket_dir, None);
    assert!(connected, "{answer}");
    assert_eq!(answer.trim(), "postgres|t");
    // Another user of the machine (another pod's, on tusk dev) cannot even connect.
    let (connected, answer) = psql_in_the_container(&socket_dir, Some(65534));
    assert!(!connected, "another user reached the server: {answer}");
    assert!(answer.contains("Permission denied"), "{answer}");
    instance.stop().await.unwrap();
}
