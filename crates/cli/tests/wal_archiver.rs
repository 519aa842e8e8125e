//! The long-lived WAL archiver end to end: PostgreSQL's archive_command is
//! `tusk wal-push --archiver-socket`, handing each segment to `tusk wal-archiver`, which holds
//! the store, the passphrase and a master key derived once. A killed archiver loses no segment,
//! every object opens with the passphrase alone, and a request cannot make the archiver upload
//! a file outside the WAL directory.

#[path = "../../backup/tests/support/mod.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Postgres, S3, give_to_postgres, temp_dir};

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const PASSPHRASE: &str = "archiver passphrase";
const WAL_PREFIX: &str = "tusk/ns/archived/wal";

/// The uid/gid PostgreSQL runs as in these tests: `postgres` when we are root.
fn postgres_identity() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn tusk(env: &[(String, String)]) -> Command {
    let mut command = Command::new(TUSK);
    command
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("TUSK_BACKUP_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "warn");
    command
}

/// Runs `command` as PostgreSQL's user.
fn as_postgres(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = postgres_identity() {
        command.uid(uid).gid(gid);
    }
    command
}

/// `tusk wal-archiver` as PostgreSQL's user (whose requests alone it serves).
fn start_archiver(env: &[(String, String)], socket: &Path, wal_dir: &Path) -> Archiver {
    let mut command = tusk(env);
    as_postgres(&mut command);
    command
        .args(["wal-archiver", "--wal-prefix", WAL_PREFIX, "--socket"])
        .arg(socket)
        .arg("--wal-dir")
        .arg(wal_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = Archiver(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the archiver never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn archived_count(server: &Postgres) -> i64 {
    server
        .psql("SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap()
}

/// Fills the current segment with some rows and switches to the next; returns the finished
/// segment's name.
fn write_segment(server: &Postgres) -> String {
    server.psql("INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 2000) AS g");
    server.psql("SELECT pg_walfile_name(pg_switch_wal())")
}

/// The WAL segment names archived under the prefix, sorted.
async fn archived_segments(s3: &S3) -> Vec<String> {
    s3.store("tusk")
        .list(WAL_PREFIX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|object| {
            let name = object.key.rsplit('/').next()?.strip_suffix(".gz.dare")?;
            (name.len() == 24).then(|| name.to_owned())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn segment_number(name: &str) -> u64 {
    u64::from_str_radix(&name[8..16], 16).unwrap() * 256
        + u64::from_str_radix(&name[16..], 16).unwrap()
}

/// Asserts that a command succeeded, showing what it printed otherwise.
fn assert_succeeded(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `tusk wal-archiver`, killed when dropped (also when a test fails).
struct Archiver(Child);

impl Drop for Archiver {
    fn drop(&mut self) {
        kill(self);
    }
}

fn kill(archiver: &mut Archiver) {
    let child = &mut archiver.0;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_archiver_loses_no_segment_and_every_object_opens_with_the_passphrase() {
    let s3 = S3::start().await;
    let env = s3.env("tusk");
    let run_dir = temp_dir();
    let socket = run_dir.path().join(".s.tusk-wal");
    // archive_command needs neither the store nor the passphrase: nothing secret reaches
    // PostgreSQL's environment.
    let archive_command = format!("{TUSK} wal-push --archiver-socket {} %p", socket.display());
    let server = Postgres::init_with_env(
        &[
            "archive_mode=on".into(),
            format!("archive_command={archive_command}"),
            "archive_timeout=0".into(),
        ],
        &[("RUST_LOG", "warn")],
    );
    server.psql("CREATE TABLE filler (id int, label text)");
    let wal_dir = server.data_dir.join("pg_wal");
    let mut archiver = start_archiver(&env, &socket, &wal_dir);

    let first = write_segment(&server);
    server.wait_until_archived(&first);

    // Kill the archiver while PostgreSQL has several segments waiting, with one in flight.
    let before = archived_count(&server);
    for _ in 0..6 {
        write_segment(&server);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived_count(&server) < before + 2 {
        assert!(Instant::now() < deadline, "archiving stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let failed_before: i64 = server
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    kill(&mut archiver);
    // While it is down, archiving fails and PostgreSQL keeps the segments.
    let last = write_segment(&server);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .parse::<i64>()
        .unwrap()
        <= failed_before
    {
        assert!(
            Instant::now() < deadline,
            "no failure while the archiver was down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restarted archiver (a new master key, a new salt) picks up where PostgreSQL is.
    let mut archiver = start_archiver(&env, &socket, &wal_dir);
    server.wait_until_archived(&last);
    let after_restart = write_segment(&server);
    server.wait_until_archived(&after_restart);
    kill(&mut archiver);

    // No gap from the first segment to the last.
    let segments = archived_segments(&s3).await;
    let numbers: Vec<u64> = segments.iter().map(|name| segment_number(name)).collect();
    let from = numbers
        .iter()
        .position(|&n| n == segment_number(&first))
        .unwrap_or_else(|| panic!("{first} is not in the archive: {segments:?}"));
    let to = numbers
        .iter()
        .position(|&n| n == segment_number(&after_restart))
        .unwrap_or_else(|| panic!("{after_restart} is not in the archive: {segments:?}"));
    for pair in numbers[from..=to].windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a segment is missing: {segments:?}");
    }

    // Every object, from both archiver lifetimes, opens with the passphrase alone: through
    // wal-fetch in a fresh process, and through `tusk backup decrypt`.
    let scratch = tempfile::tempdir().unwrap();
    let passphrase_file = scratch.path().join("passphrase");
    std::fs::write(&passphrase_file, PASSPHRASE).unwrap();
    let store = s3.store("tusk");
    let mut salts = std::collections::BTreeSet::new();
    for name in &segments[from..=to] {
        let fetched = scratch.path().join(name);
        let output = tusk(&env)
            .args(["wal-fetch", "--wal-prefix", WAL_PREFIX, name])
            .arg(&fetched)
            .output()
            .unwrap();
        assert_succeeded(&output, name);
        let segment = std::fs::read(&fetched).unwrap();
        assert_eq!(segment.len(), 16 * 1024 * 1024, "{name}");

        let object = download(&store, &format!("{WAL_PREFIX}/{name}.gz.dare")).await;
        assert_eq!(&object[..16], b"tusk.envelope.v2", "{name}");
        salts.insert(object[16..48].to_vec());
        let sealed = scratch.path().join(format!("{name}.gz.dare"));
        std::fs::write(&sealed, &object).unwrap();
        let decrypted = Command::new(TUSK)
            .args(["backup", "decrypt", "--passphrase-file"])
            .arg(&passphrase_file)
            .arg(&sealed)
            .arg("-")
            .output()
            .unwrap();
        assert_succeeded(&decrypted, "tusk backup decrypt");
        assert!(
            decrypted.stdout == segment,
            "{name}: decrypt differs from wal-fetch"
        );
    }
    // One salt (one scrypt) per archiver lifetime, not per segment.
    assert!(
        (1..=2).contains(&salts.len()),
        "{} salts for {} segments",
        salts.len(),
        to - from + 1
    );
}

async fn download(store: &tusk_backup::BackupStore, key: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    store
        .object_store()
        .get(&object_store::path::Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Sends one raw request to the archiver as PostgreSQL's user and returns the answer.
fn raw_request(socket: &Path, request: &str) -> String {
    let output = as_postgres(&mut Command::new("python3"))
        .arg("-c")
        .arg(
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect(sys.argv[1])\n\
             s.sendall(sys.argv[2].encode())\n\
             s.shutdown(socket.SHUT_WR)\n\
             sys.stdout.write(s.makefile().read())\n",
        )
        .arg(socket)
        .arg(request)
        .output()
        .unwrap();
    assert_succeeded(&output, "the raw request");
    String::from_utf8(output.stdout).unwrap()
}

/// Sends one raw request as this process's user, whatever the archiver does with it.
fn raw_request_as_self(socket: &Path, request: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_cannot_make_the_archiver_upload_a_file_outside_the_wal_directory() {
    let s3 = S3::start().await;
    let env = s3.env("tusk");
    let run_dir = temp_dir();
    let data_dir: PathBuf = run_dir.path().join("data");
    let wal_dir = data_dir.join("pg_wal");
    std::fs::create_dir_all(&wal_dir).unwrap();
    // A file with a WAL file's name beside the WAL directory, and a real one in it.
    let outside = "000000010000000000000099";
    std::fs::write(data_dir.join(outside), b"not for the archive").unwrap();
    let inside = "000000010000000000000001";
    std::fs::write(wal_dir.join(inside), vec![7u8; 8192]).unwrap();
    give_to_postgres(run_dir.path());
    let socket = run_dir.path().join(".s.tusk-wal");
    let mut archiver = start_archiver(&env, &socket, &wal_dir);

    for attack in [
        format!("../{outside}\n"),
        format!("{}\n", data_dir.join(outside).display()),
        "../postgresql.conf\n".to_owned(),
        format!("pg_wal/../../data/{outside}\n"),
    ] {
        let answer = raw_request(&socket, &attack);
        assert!(
            answer.starts_with("error ") && answer.contains("is not a WAL file name"),
            "{attack:?} was answered {answer:?}"
        );
    }
    assert!(archived_segments(&s3).await.is_empty());

    // A plain name is archived, by the client PostgreSQL runs.
    let output = as_postgres(&mut tusk(&[]))
        .env_remove("TUSK_BACKUP_PASSPHRASE")
        .args(["wal-push", "--archiver-socket"])
        .arg(&socket)
        .arg(wal_dir.join(inside))
        .output()
        .unwrap();
    assert_succeeded(&output, "wal-push --archiver-socket");
    assert_eq!(archived_segments(&s3).await, [inside]);

    // The same name with other content is refused, and the client says so the way the
    // instance reports it.
    std::fs::write(wal_dir.join(inside), vec![8u8; 8192]).unwrap();
    let output = as_postgres(&mut tusk(&[]))
        .args(["wal-push", "--archiver-socket"])
        .arg(&socket)
        .arg(wal_dir.join(inside))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("tusk: cannot archive {inside}: "))
            && stderr.contains("already archived with different content"),
        "{stderr}"
    );

    // Only PostgreSQL's user is served: as root, another user's request goes unanswered.
    if postgres_identity().is_some() {
        assert_eq!(raw_request_as_self(&socket, &format!("{inside}\n")), "");
    }
    kill(&mut archiver);
}
