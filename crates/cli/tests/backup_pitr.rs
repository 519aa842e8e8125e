//! The `tusk` binary's data-path commands end to end: PostgreSQL archiving through
//! `tusk wal-push`, `tusk restore run` to a point in time with PostgreSQL fetching WAL through
//! `tusk wal-fetch`, and the disaster-recovery tools `tusk backup decrypt` and `download`.

#[path = "../../backup/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::{Postgres, S3, temp_dir};
use tusk_backup::{BackupOptions, Compression, Progress, WalMode, run_backup};

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const PASSPHRASE: &str = "pitr passphrase";
const WAL_PREFIX: &str = "tusk/ns/elephant/wal";

fn tusk(env: &[(String, String)]) -> Command {
    let mut command = Command::new(TUSK);
    command
        .envs(
            env.iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .env("TUSK_BACKUP_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "warn");
    command
}

fn tar_lists(archive: &Path) -> String {
    let output = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_restore_through_the_wal_archive() {
    let s3 = S3::start().await;
    let env = s3.env("tusk");
    let mut server_env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    server_env.push(("TUSK_BACKUP_PASSPHRASE", PASSPHRASE));
    server_env.push(("RUST_LOG", "warn"));
    let archive_command = format!("{TUSK} wal-push --wal-prefix {WAL_PREFIX} %p");
    let source = Postgres::init_with_env(
        &[
            "archive_mode=on".into(),
            format!("archive_command={archive_command}"),
        ],
        &server_env,
    );
    source.psql("CREATE TABLE events (label text, at timestamptz DEFAULT clock_timestamp())");

    // An archived cluster's backup carries no WAL: the restore must fetch it from the archive.
    let store = s3.store("tusk");
    let key = "tusk/ns/elephant/base/nightly.tar.gz.dare";
    run_backup(
        &source.connection(),
        &store,
        key,
        &BackupOptions {
            compression: Compression::default(),
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            wal: WalMode::FromArchive,
            label: "pitr".into(),
            pg_basebackup: None,
        },
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();

    source.psql("INSERT INTO events (label) VALUES ('t1')");
    std::thread::sleep(Duration::from_millis(500));
    // One instant in the forms customers write: RFC 3339 in UTC with `Z` and fractional
    // seconds, and with an offset.
    let forms = source.psql(
        "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ' ' || \
         to_char(t AT TIME ZONE 'Etc/GMT-2', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+02:00\"') \
         FROM (SELECT clock_timestamp() AS t) AS now",
    );
    let (target_utc, target_offset) = forms.split_once(' ').expect("two forms");
    let target_lsn = source.psql("SELECT pg_current_wal_insert_lsn()");
    std::thread::sleep(Duration::from_millis(500));
    source.psql("INSERT INTO events (label) VALUES ('t2')");
    let last_segment = source.psql("SELECT pg_walfile_name(pg_switch_wal())");
    source.wait_until_archived(&last_segment);

    // Pushing an already archived segment again succeeds; fetching a missing one fails.
    let archived = source.data_dir.join("pg_wal").join(&last_segment);
    if archived.exists() {
        let again = tusk(&env)
            .args(["wal-push", "--wal-prefix", WAL_PREFIX])
            .arg(&archived)
            .output()
            .unwrap();
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let missing = tusk(&env)
        .args([
            "wal-fetch",
            "--wal-prefix",
            WAL_PREFIX,
            "0000000100000000000000FE",
        ])
        .arg(scratch.path().join("x"))
        .output()
        .unwrap();
    // The end of the archive, as PostgreSQL must read it: exit status 1.
    assert_eq!(missing.status.code(), Some(1));
    assert!(!scratch.path().join("x").exists());

    let target_dir = temp_dir();
    let restore_to = |name: &str, options: &[&str]| {
        let data_dir = target_dir.path().join(name);
        let restored = tusk(&env)
            .args([
                "restore",
                "run",
                "--backup-key",
                key,
                "--wal-prefix",
                WAL_PREFIX,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(options)
            .output()
            .unwrap();
        assert!(
            restored.status.success(),
            "{}",
            String::from_utf8_lossy(&restored.stderr)
        );
        assert!(data_dir.join("recovery.signal").exists());
        data_dir
    };
    let rows_after_recovery = |data_dir: &Path| {
        let mut copy = Postgres::on_data_dir(data_dir, &["archive_mode=off".into()], &server_env);
        copy.wait_until_promoted();
        let rows =
            copy.psql("SELECT coalesce(string_agg(label, ',' ORDER BY label), '') FROM events");
        copy.stop();
        rows
    };

    // To a point in time, in every RFC 3339 form: t1 committed before it, t2 after.
    for (name, target) in [("utc", target_utc), ("offset", target_offset)] {
        let data_dir = restore_to(name, &["--target-time", target]);
        assert_eq!(rows_after_recovery(&data_dir), "t1", "target {target}");
    }
    // To a WAL location written after t1 and before t2.
    let data_dir = restore_to("lsn", &["--target-lsn", &target_lsn]);
    assert_eq!(rows_after_recovery(&data_dir), "t1", "target {target_lsn}");
    // No target: the backup as it was taken, before t1; --latest: everything archived.
    assert_eq!(rows_after_recovery(&restore_to("as-taken", &[])), "");
    let latest = restore_to("latest", &["--latest"]);
    assert_eq!(rows_after_recovery(&latest), "t1,t2");
    // And the whole of it, every database, role and row, is the source's.
    let mut copy = Postgres::on_data_dir(&latest, &["archive_mode=off".into()], &server_env);
    copy.wait_until_promoted();
    assert!(
        copy.dumpall() == source.dumpall(),
        "pg_dumpall of the restored cluster differs from the source's"
    );
    copy.stop();

    // A corrupted segment after the consistency point is not the end of the archive:
    // wal-fetch says so with a status above 125, and PostgreSQL stops recovery instead of
    // promoting a history cut short.
    {
        use object_store::ObjectStoreExt;
        store
            .object_store()
            .put(
                &object_store::path::Path::from(format!("{WAL_PREFIX}/{last_segment}.gz.dare")),
                object_store::PutPayload::from_static(b"not a sealed WAL segment"),
            )
            .await
            .unwrap();
    }
    let corrupted = tusk(&env)
        .args(["wal-fetch", "--wal-prefix", WAL_PREFIX, &last_segment])
        .arg(scratch.path().join("y"))
        .output()
        .unwrap();
    assert_eq!(
        corrupted.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&corrupted.stderr)
    );
    let data_dir = restore_to("corrupted", &["--latest"]);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // No connections before promotion: a server that starts at all has promoted.
        Postgres::on_data_dir(
            &data_dir,
            &["archive_mode=off".into(), "hot_standby=off".into()],
            &server_env,
        )
    }));
    let failure = match started {
        Ok(_) => panic!("PostgreSQL promoted on an archive with a corrupted segment"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(failure.contains("recovery must stop"), "{failure}");
}

#[tokio::test(flavor = "multi_thread")]
async fn decrypt_and_download_turn_an_object_into_a_tar_without_a_server() {
    let s3 = S3::start().await;
    let env = s3.env("");
    let source = Postgres::init(&[]);
    let store = s3.store("");
    let key = "dr/base/b.tar.gz.dare";
    run_backup(
        &source.connection(),
        &store,
        key,
        &BackupOptions {
            compression: Compression::Gzip { level: 1 },
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            wal: WalMode::Include,
            label: "dr".into(),
            pg_basebackup: None,
        },
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let passphrase_file = dir.path().join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();

    // download: straight from the store to a tar file.
    let downloaded = dir.path().join("downloaded.tar");
    let output = tusk(&[])
        .args([
            "backup",
            "download",
            "--url",
            &format!("s3://{}/{key}", s3.bucket),
        ])
        .args(["--endpoint", s3.server.endpoint()])
        .env("AWS_ACCESS_KEY_ID", s3.server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.server.secret_key())
        .arg("--passphrase-file")
        .arg(&passphrase_file)
        .arg(&downloaded)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = tar_lists(&downloaded);
    assert!(
        listing.lines().any(|line| line == "PG_VERSION"),
        "{listing}"
    );

    // decrypt: object file in, tar on stdout.
    let object = dir.path().join("b.tar.gz.dare");
    let bytes = object_store::ObjectStoreExt::get(
        store.object_store().as_ref(),
        &object_store::path::Path::from(key),
    )
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    std::fs::write(&object, &bytes).unwrap();
    let decrypted = dir.path().join("decrypted.tar");
    let status = tusk(&env)
        .args(["backup", "decrypt", "--passphrase-file"])
        .arg(&passphrase_file)
        .arg(&object)
        .stdout(std::fs::File::create(&decrypted).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(tar_lists(&decrypted), listing);

    // A wrong passphrase fails and leaves no output file behind.
    std::fs::write(&passphrase_file, "wrong").unwrap();
    let refused = dir.path().join("refused.tar");
    let output = tusk(&env)
        .args(["backup", "decrypt", "--passphrase-file"])
        .arg(&passphrase_file)
        .arg(&object)
        .arg(&refused)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!refused.exists());
}
