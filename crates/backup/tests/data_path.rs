//! The data path against a real PostgreSQL server and the embedded S3 server (a real
//! S3-protocol server with SigV4 and multipart uploads).

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use support::{Postgres, S3, temp_dir};
use tusk_backup::source::SourceError;
use tusk_backup::wal::{self, BackupPosition, PushOutcome, WalError};
use tusk_backup::{
    BackupError, BackupOptions, Compression, Progress, RESTORE_INCOMPLETE_MARKER, RestoreError,
    RestoreOptions, WalMode, restore, run_backup,
};

const PASSPHRASE: &[u8] = b"correct horse battery staple";

fn options(compression: Compression) -> BackupOptions {
    BackupOptions {
        compression,
        passphrase: PASSPHRASE.to_vec(),
        wal: WalMode::Include,
        label: "tusk test".into(),
        pg_basebackup: None,
    }
}

fn restore_options() -> RestoreOptions {
    RestoreOptions {
        passphrase: PASSPHRASE.to_vec(),
        ..RestoreOptions::default()
    }
}

async fn object_bytes(store: &tusk_backup::BackupStore, key: &str) -> bytes::Bytes {
    store
        .object_store()
        .get(&ObjectPath::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_database_round_trips_through_s3() {
    let source = Postgres::init(&[]);
    source.pgbench_init(2);
    let s3 = S3::start().await;
    let store = s3.store("tusk");
    let key = store.key("project/elephant/base/first.tar.gz.dare");
    let progress = Arc::new(Progress::default());

    let outcome = run_backup(
        &source.connection(),
        &store,
        &key,
        &options(Compression::default()),
        progress.clone(),
    )
    .await
    .unwrap();

    assert_eq!(key, "tusk/project/elephant/base/first.tar.gz.dare");
    assert_eq!(outcome.wal_range.timeline, 1);
    assert_eq!(source.psql("SHOW server_version"), outcome.postgres_version);
    assert!(outcome.wal_range.start_lsn.contains('/'));
    assert_eq!(progress.done(), outcome.tar_bytes);
    assert!(
        progress.total() > 20 << 20,
        "database size {}",
        progress.total()
    );
    let listed = store.list("tusk/project/elephant/base").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, outcome.stored_bytes);
    assert!(outcome.stored_bytes < outcome.tar_bytes / 2);
    assert_eq!(s3.server.pending_multipart_uploads().unwrap(), 0);

    // Interoperability: salt(32) | DARE 2.0 stream, which decrypts to a gzip'd tar that the
    // real tar lists.
    let object = object_bytes(&store, &key).await;
    assert_eq!(object[32], 0x20, "DARE version byte after the 32-byte salt");
    let decrypted = tusk_dare::envelope::decrypt_reader(&object[..], PASSPHRASE).unwrap();
    let mut tar_stream = Vec::new();
    flate2::read::MultiGzDecoder::new(decrypted)
        .read_to_end(&mut tar_stream)
        .unwrap();
    assert_eq!(tar_stream.len() as u64, outcome.tar_bytes);
    let mut tar = Command::new("tar")
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = tar.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar_stream));
    let listing = tar.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for expected in [
        "PG_VERSION",
        "global/pg_control",
        "backup_label",
        "backup_manifest",
    ] {
        assert!(
            listing.lines().any(|line| line == expected),
            "{expected} in\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with("pg_wal/0000000100"))
    );

    // Restore into a fresh directory and compare everything pg_dumpall sees.
    let target = temp_dir();
    let data_dir = target.path().join("restored");
    let restored = restore(&store, &key, &data_dir, &restore_options())
        .await
        .unwrap();
    assert!(!restored.recovery_configured);
    assert_eq!(restored.tar_bytes, outcome.tar_bytes);
    assert!(!data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());
    let copy = Postgres::on_data_dir(&data_dir, &[], &[]);
    assert_eq!(copy.psql("SELECT count(*) FROM pgbench_accounts"), "200000");
    let (restored_dump, source_dump) = (copy.dumpall(), source.dumpall());
    if restored_dump != source_dump {
        let differing: Vec<_> = restored_dump
            .lines()
            .zip(source_dump.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!("pg_dumpall differs: {differing:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_backup_restores_too() {
    let source = Postgres::init(&[]);
    source.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let s3 = S3::start().await;
    let store = s3.store("");
    let key = "zstd.tar.zst.dare";
    run_backup(
        &source.connection(),
        &store,
        key,
        &options(Compression::Zstd { level: 3 }),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let target = temp_dir();
    let data_dir = target.path().join("data");
    restore(&store, key, &data_dir, &restore_options())
        .await
        .unwrap();
    let copy = Postgres::on_data_dir(&data_dir, &[], &[]);
    assert_eq!(copy.psql("SELECT sum(id) FROM t"), "500500");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_backups_object_under_this_key_is_refused_before_postgres_starts() {
    let source = Postgres::init(&[]);
    source.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let s3 = S3::start().await;
    let store = s3.store("");
    let backup = |key: &'static str| {
        let store = store.clone();
        let connection = source.connection();
        async move {
            run_backup(
                &connection,
                &store,
                key,
                &options(Compression::Gzip { level: 1 }),
                Arc::new(Progress::default()),
            )
            .await
            .unwrap()
        }
    };
    let older = backup("older.tar.gz.dare").await;
    source.psql("INSERT INTO t SELECT g FROM generate_series(1001, 5000) g");
    let newer = backup("newer.tar.gz.dare").await;
    assert_ne!(older.sha256, newer.sha256);
    // Someone copies the newer backup's object over the older one's key: both decrypt with the
    // cluster's passphrase, so only what was recorded can tell them apart.
    let swapped = object_bytes(&store, "newer.tar.gz.dare").await;
    store
        .object_store()
        .put(&ObjectPath::from("older.tar.gz.dare"), swapped.into())
        .await
        .unwrap();
    let target = temp_dir();

    // A different size is refused before a byte is unpacked.
    let data_dir = target.path().join("by-size");
    let recorded = RestoreOptions {
        expected_size: Some(older.stored_bytes),
        expected_sha256: Some(older.sha256.clone()),
        ..restore_options()
    };
    let error = restore(&store, "older.tar.gz.dare", &data_dir, &recorded)
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::Mismatch(_)), "{error}");
    assert!(!data_dir.join("PG_VERSION").exists());

    // The same size with other bytes is refused once they are read, and nothing is left.
    let data_dir = target.path().join("by-digest");
    let same_size = RestoreOptions {
        expected_size: Some(newer.stored_bytes),
        expected_sha256: Some(older.sha256.clone()),
        ..restore_options()
    };
    let error = restore(&store, "older.tar.gz.dare", &data_dir, &same_size)
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::Mismatch(_)), "{error}");
    assert!(data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());
    assert!(!data_dir.join("PG_VERSION").exists());

    // The object that matches its record restores.
    let data_dir = target.path().join("matching");
    let matching = RestoreOptions {
        expected_size: Some(newer.stored_bytes),
        expected_sha256: Some(newer.sha256.clone()),
        ..restore_options()
    };
    restore(&store, "newer.tar.gz.dare", &data_dir, &matching)
        .await
        .unwrap();
    assert!(data_dir.join("PG_VERSION").exists());
    // Whoever reports the restore's progress saw every byte of the object, and no more.
    assert_eq!(
        matching
            .downloaded_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        newer.stored_bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_object_is_refused_and_the_directory_marked_unusable() {
    let source = Postgres::init(&[]);
    let s3 = S3::start().await;
    let store = s3.store("");
    run_backup(
        &source.connection(),
        &store,
        "good.tar.gz.dare",
        &options(Compression::Gzip { level: 1 }),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let mut object = object_bytes(&store, "good.tar.gz.dare").await.to_vec();
    // Flip one byte well into the stream: earlier packages decrypt and unpack fine, so files
    // are on disk when the bad package is met.
    let middle = object.len() * 3 / 4;
    object[middle] ^= 0x01;
    store
        .object_store()
        .put(&ObjectPath::from("bad.tar.gz.dare"), object.into())
        .await
        .unwrap();

    let target = temp_dir();
    let data_dir = target.path().join("data");
    let error = restore(&store, "bad.tar.gz.dare", &data_dir, &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::Unreadable(_)), "{error}");
    assert!(data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());
    assert!(!data_dir.join("PG_VERSION").exists());
    assert!(!data_dir.join("global").exists());

    // A truncated object (cut at a package boundary or not) is refused the same way.
    let whole = object_bytes(&store, "good.tar.gz.dare").await;
    store
        .object_store()
        .put(
            &ObjectPath::from("short.tar.gz.dare"),
            whole.slice(..whole.len() - 65568).into(),
        )
        .await
        .unwrap();
    let data_dir = target.path().join("data-short");
    let error = restore(&store, "short.tar.gz.dare", &data_dir, &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::Unreadable(_)), "{error}");
    assert!(data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());

    // And so is a wrong passphrase.
    let data_dir = target.path().join("data-wrong-passphrase");
    let wrong = RestoreOptions {
        passphrase: b"not the passphrase".to_vec(),
        ..RestoreOptions::default()
    };
    let error = restore(&store, "good.tar.gz.dare", &data_dir, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::Unreadable(_)), "{error}");
    assert!(data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_unreachable_mid_upload_fails_and_leaves_no_object_or_upload() {
    let source = Postgres::init(&[]);
    source.pgbench_init(3);
    let s3 = S3::start().await;
    let store = s3.store("");
    let root = s3.server.root().to_owned();

    // Black the server out as soon as the first part has landed, for longer than a request's
    // retries but shorter than the abort's.
    let blackout = {
        let server_root = root.clone();
        async move {
            loop {
                let part_landed = std::fs::read_dir(&server_root)
                    .unwrap()
                    .filter_map(Result::ok)
                    .any(|entry| entry.file_name().to_string_lossy().contains(".part-"));
                if part_landed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Uncompressed, so there are many parts and the upload is still going when we strike.
    let connection = source.connection();
    let uncompressed = options(Compression::Gzip { level: 0 });
    let backup = run_backup(
        &connection,
        &store,
        "cut.tar.gz.dare",
        &uncompressed,
        Arc::new(Progress::default()),
    );
    tokio::pin!(backup);
    let result = tokio::select! {
        result = &mut backup => panic!("the backup ended before any part was uploaded: {result:?}"),
        () = blackout => {
            s3.server.set_reachable(false);
            let restore_reachability = async {
                tokio::time::sleep(Duration::from_secs(6)).await;
                s3.server.set_reachable(true);
                std::future::pending::<()>().await;
            };
            tokio::select! {
                result = &mut backup => result,
                () = restore_reachability => unreachable!(),
            }
        }
    };
    s3.server.set_reachable(true);

    let error = result.unwrap_err();
    assert!(matches!(error, BackupError::Upload(_)), "{error}");
    assert!(!store.exists("cut.tar.gz.dare").await.unwrap());
    assert_eq!(s3.server.pending_multipart_uploads().unwrap(), 0, "{error}");
    let leftover_parts: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".part-"))
        .collect();
    assert!(leftover_parts.is_empty(), "{leftover_parts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_fails_with_the_connection_error_and_uploads_nothing() {
    let mut source = Postgres::init(&[]);
    let connection = source.connection();
    source.stop();
    let s3 = S3::start().await;
    let store = s3.store("");
    let error = run_backup(
        &connection,
        &store,
        "never.tar.gz.dare",
        &options(Compression::default()),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, BackupError::Source(SourceError::Connect { .. })),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", connection.port)),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(store.list("").await.unwrap().is_empty());
    assert_eq!(s3.server.pending_multipart_uploads().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_archive_pushes_fetches_and_refuses_conflicts() {
    let s3 = S3::start().await;
    let store = s3.store("archive");
    let prefix = "archive/ns/c/wal";
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("000000010000000000000003");
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::write(&segment, &content).unwrap();

    assert_eq!(
        wal::push(&store, prefix, &segment, PASSPHRASE)
            .await
            .unwrap(),
        PushOutcome::Stored
    );
    assert!(
        store
            .exists("archive/ns/c/wal/000000010000000000000003.gz.dare")
            .await
            .unwrap()
    );
    assert_eq!(
        wal::push(&store, prefix, &segment, PASSPHRASE)
            .await
            .unwrap(),
        PushOutcome::AlreadyArchived
    );
    // Other content of any length is a conflict, including the archived content with a byte
    // more or a byte less (the comparison streams both sides and must reach both ends).
    let mut longer = content.clone();
    longer.push(0);
    for other in [
        b"different content".to_vec(),
        longer,
        content[..content.len() - 1].to_vec(),
    ] {
        std::fs::write(&segment, &other).unwrap();
        let error = wal::push(&store, prefix, &segment, PASSPHRASE)
            .await
            .unwrap_err();
        assert!(
            matches!(error, WalError::Conflict(_)),
            "{} bytes: {error}",
            other.len()
        );
    }

    let fetched = dir.path().join("RECOVERYXLOG");
    wal::fetch(
        &store,
        prefix,
        "000000010000000000000003",
        &fetched,
        PASSPHRASE,
    )
    .await
    .unwrap();
    assert!(std::fs::read(&fetched).unwrap() == content);
    let error = wal::fetch(
        &store,
        prefix,
        "000000010000000000000009",
        &fetched,
        PASSPHRASE,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, WalError::NotArchived(_)), "{error}");

    for name in [
        "00000002.history",
        "000000010000000000000004.partial",
        "000000010000000000000002.00000028.backup",
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        wal::push(&store, prefix, &path, PASSPHRASE).await.unwrap();
        let back = dir.path().join("back");
        wal::fetch(&store, prefix, name, &back, PASSPHRASE)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), name.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_cleanup_keeps_what_remaining_backups_need() {
    let s3 = S3::start().await;
    let store = s3.store("");
    let prefix = "ns/c/wal";
    for name in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
        "000000020000000000000004",
        "000000010000000000000002.00000028.backup",
        "00000002.history",
    ] {
        store
            .object_store()
            .put(
                &ObjectPath::from(format!("{prefix}/{name}.gz.dare")),
                "x".into(),
            )
            .await
            .unwrap();
    }
    let report = wal::cleanup(
        &store,
        prefix,
        &[
            BackupPosition {
                timeline: 2,
                start_lsn: "0/4000028".into(),
            },
            BackupPosition {
                timeline: 1,
                start_lsn: "0/3000060".into(),
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(report.deleted, 3);
    let mut left: Vec<String> = store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.key)
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "ns/c/wal/000000010000000000000003.gz.dare",
            "ns/c/wal/00000002.history.gz.dare",
            "ns/c/wal/000000020000000000000004.gz.dare",
        ]
    );
    let report = wal::cleanup(&store, prefix, &[]).await.unwrap();
    assert_eq!(report.deleted, 3);
    assert!(store.list(prefix).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_an_error_with_the_stores_message_not_an_empty_store() {
    let s3 = S3::start().await;
    let store = s3.store("ns/c");
    let key = "ns/c/base/b1.tar.gz.dare";
    store
        .object_store()
        .put(&ObjectPath::from(key), "x".into())
        .await
        .unwrap();
    s3.server.delete_bucket(&s3.bucket).unwrap();

    // Were a missing bucket read as "nothing there", a finalizer would release a backup whose
    // data still exists somewhere, and a WAL fetch would end recovery early.
    let deleting = store.delete_object(key).await.unwrap_err();
    assert!(
        deleting
            .to_string()
            .contains("The specified bucket does not exist"),
        "{deleting}"
    );
    assert!(!deleting.is_not_found());
    let listing = store.list("ns/c").await.unwrap_err();
    assert!(
        listing
            .to_string()
            .contains("The specified bucket does not exist"),
        "{listing}"
    );

    s3.server.create_bucket(&s3.bucket).unwrap();
    store.delete_object(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
    assert!(store.list("ns/c").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_fetches_the_next_segments_ahead_into_the_spool() {
    let s3 = S3::start().await;
    let store = s3.store("archive");
    let prefix = "archive/ns/p/wal";
    let dir = tempfile::tempdir().unwrap();
    let archive = wal::WalArchive::new(store.clone(), prefix, PASSPHRASE);
    let names = [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
    ];
    for (index, name) in names.iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![index as u8 + 1; 100_000]).unwrap();
        assert_eq!(archive.push(&path).await.unwrap(), PushOutcome::Stored);
    }

    let pg_wal = dir.path().join("pg_wal");
    let spool = pg_wal.join(wal::PREFETCH_SPOOL);
    std::fs::create_dir_all(&pg_wal).unwrap();
    let destination = pg_wal.join("RECOVERYXLOG");
    let reader = wal::WalArchive::new(store.clone(), prefix, PASSPHRASE);
    reader
        .fetch_prefetching(names[0], &destination, &spool, 2)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&destination).unwrap(), vec![1u8; 100_000]);

    // The next two came along (across the log boundary): with the store emptied, the next
    // calls still get them, from the spool, and leave it empty.
    store.delete_prefix(prefix).await.unwrap();
    for (index, name) in names.iter().enumerate().skip(1) {
        reader
            .fetch_prefetching(name, &destination, &spool, 2)
            .await
            .unwrap_or_else(|error| panic!("{name} was not fetched ahead: {error}"));
        assert_eq!(
            std::fs::read(&destination).unwrap(),
            vec![index as u8 + 1; 100_000]
        );
    }
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Past the end of the archive, the segment is missing as before.
    let error = reader
        .fetch_prefetching("000000010000000100000001", &destination, &spool, 2)
        .await
        .unwrap_err();
    assert!(matches!(error, WalError::NotArchived(_)), "{error}");
}

/// A WAL object that does not verify (cut short, a byte changed) is refused by `wal-fetch`, and
/// nothing is left where PostgreSQL looks: the segment is streamed to a temporary file and only
/// renamed into place once the whole object verified.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_wal_object_is_refused_and_leaves_no_file_behind() {
    let s3 = S3::start().await;
    let store = s3.store("archive");
    let prefix = "archive/ns/d/wal";
    let name = "000000010000000000000007";
    let key = format!("{prefix}/{name}.gz.dare");
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(name);
    // Two MiB that compress badly, so the object spans many DARE packages and download chunks.
    let mut state = 7u64;
    let content: Vec<u8> = (0..2_000_000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    std::fs::write(&segment, &content).unwrap();
    wal::push(&store, prefix, &segment, PASSPHRASE)
        .await
        .unwrap();
    let sealed = object_bytes(&store, &key).await;

    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let destination = pg_wal.join("RECOVERYXLOG");
    let mut flipped = sealed.to_vec();
    flipped[sealed.len() - 40] ^= 1;
    for (what, damaged) in [
        ("cut short", sealed.slice(..sealed.len() - 1000)),
        ("cut at a package boundary", sealed.slice(..80 + 65_568)),
        ("a byte changed near the end", bytes::Bytes::from(flipped)),
    ] {
        store
            .object_store()
            .put(&ObjectPath::from(key.as_str()), damaged.into())
            .await
            .unwrap();
        let error = wal::fetch(&store, prefix, name, &destination, PASSPHRASE)
            .await
            .unwrap_err();
        assert!(matches!(error, WalError::Codec { .. }), "{what}: {error}");
        let left: Vec<_> = std::fs::read_dir(&pg_wal)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }

    // The intact object still arrives whole.
    store
        .object_store()
        .put(&ObjectPath::from(key.as_str()), sealed.into())
        .await
        .unwrap();
    wal::fetch(&store, prefix, name, &destination, PASSPHRASE)
        .await
        .unwrap();
    assert!(std::fs::read(&destination).unwrap() == content);
}
