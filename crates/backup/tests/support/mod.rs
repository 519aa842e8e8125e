//! Shared helpers of the data-path tests: a throwaway PostgreSQL server on a free port and the
//! embedded S3 server.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (as in CI) every
//! PostgreSQL program runs as the unprivileged `postgres` user, which must exist.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tusk_backup::store::{BackupStore, StoreConfig};
use tusk_sandbox::s3::{S3Options, S3Server};

/// The directory holding PostgreSQL's server programs.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries: install the postgresql Debian package")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort();
    let major = majors.pop().expect("no /usr/lib/postgresql/<major>");
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

/// The uid/gid PostgreSQL programs run as: `postgres` when we are root, else ourselves.
fn postgres_identity() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .expect("looking up the postgres user")
        .expect("tests run as root need a `postgres` user (useradd --system postgres)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A command for a PostgreSQL program, run as the postgres user when we are root.
pub fn pg_command(program: &str) -> Command {
    let mut command = Command::new(pg_bin_dir().join(program));
    if let Some((uid, gid)) = postgres_identity() {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C").env_remove("PGPASSWORD");
    command
}

/// Gives `path` (recursively) to the postgres user when we are root.
pub fn give_to_postgres(path: &Path) {
    if let Some((uid, gid)) = postgres_identity() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A temporary directory the postgres user can use.
pub fn temp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    give_to_postgres(dir.path());
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A PostgreSQL server running on 127.0.0.1 on a free port; stopped when dropped.
pub struct Postgres {
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Postgres {
    /// initdb a fresh cluster (trust authentication on loopback) and start it with `settings`
    /// (`name=value` pairs passed as `-c`).
    pub fn init(settings: &[String]) -> Self {
        Self::init_with_env(settings, &[])
    }

    /// Like [`Postgres::init`], with extra environment for the server (and so for its
    /// archive_command).
    pub fn init_with_env(settings: &[String], env: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        let data_dir = dir.path().join("data");
        check(
            pg_command("initdb")
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ])
                .arg("-D")
                .arg(&data_dir)
                .output()
                .unwrap(),
            "initdb",
        );
        let mut server = Self {
            data_dir,
            port: 0,
            child: None,
            _dir: Some(dir),
        };
        server.start_with_env(settings, env);
        server
    }

    /// Starts PostgreSQL on an existing data directory (e.g. a restored one).
    pub fn on_data_dir(data_dir: &Path, settings: &[String], env: &[(&str, &str)]) -> Self {
        give_to_postgres(data_dir);
        let mut server = Self {
            data_dir: data_dir.to_owned(),
            port: 0,
            child: None,
            _dir: None,
        };
        server.start_with_env(settings, env);
        server
    }

    fn start_with_env(&mut self, settings: &[String], env: &[(&str, &str)]) {
        self.port = free_port();
        let socket_dir = self.data_dir.parent().unwrap().to_owned();
        let mut command = pg_command("postgres");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for setting in settings {
            command.arg("-c").arg(setting);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let log = socket_dir.join(format!("postgres-{}.log", self.port));
        command.stderr(std::fs::File::create(&log).unwrap());
        self.child = Some(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(pg_bin_dir().join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .output()
                .unwrap();
            if ready.status.success() {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connection settings for the backup code.
    pub fn connection(&self) -> tusk_backup::PgConnection {
        tusk_backup::PgConnection {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "postgres".into(),
            password: None,
            ..Default::default()
        }
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        check(
            Command::new(pg_bin_dir().join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql)
                .output()
                .unwrap(),
            "psql",
        )
        .trim()
        .to_owned()
    }

    /// pgbench -i at `scale`.
    pub fn pgbench_init(&self, scale: u32) {
        check(
            Command::new(pg_bin_dir().join("pgbench"))
                .args(["-i", "-q", "-h", "127.0.0.1", "-U", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-s")
                .arg(scale.to_string())
                .arg("postgres")
                .output()
                .unwrap(),
            "pgbench -i",
        );
    }

    /// The whole cluster as pg_dumpall prints it, minus the `\restrict` lines, which carry a
    /// random key per run.
    pub fn dumpall(&self) -> String {
        let dump = check(
            Command::new(pg_bin_dir().join("pg_dumpall"))
                .args(["-h", "127.0.0.1", "-U", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .output()
                .unwrap(),
            "pg_dumpall",
        );
        dump.lines()
            .filter(|line| !line.starts_with("\\restrict ") && !line.starts_with("\\unrestrict "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until PostgreSQL reports `segment` (or a later file) archived.
    pub fn wait_until_archived(&self, segment: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let archived =
                self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if archived.as_str() >= segment {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{segment} was never archived (last: {archived}; failures: {})",
                self.psql(
                    "SELECT failed_count || ' ' || coalesce(last_failed_wal, '') \
                     FROM pg_stat_archiver"
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the server has left recovery (after a PITR restore, promotion).
    pub fn wait_until_promoted(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.psql("SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "the server stayed in recovery");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The embedded S3 server with one bucket, and a store configuration pointing at it.
pub struct S3 {
    pub server: S3Server,
    pub bucket: String,
    _dir: tempfile::TempDir,
}

impl S3 {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path().join("s3"), S3Options::default())
            .await
            .unwrap();
        let bucket = "backups".to_owned();
        server.create_bucket(&bucket).unwrap();
        Self {
            server,
            bucket,
            _dir: dir,
        }
    }

    pub fn config(&self, prefix: &str) -> StoreConfig {
        StoreConfig {
            url: format!("s3://{}/{prefix}", self.bucket),
            endpoint: Some(self.server.endpoint().to_owned()),
            region: None,
            access_key_id: Some(self.server.access_key().to_owned()),
            secret_access_key: Some(self.server.secret_key().to_owned()),
            allow_http: true,
        }
    }

    pub fn store(&self, prefix: &str) -> BackupStore {
        BackupStore::new(&self.config(prefix)).unwrap()
    }

    /// The environment `tusk` commands read to reach this store.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "TUSK_STORE_URL".into(),
                format!("s3://{}/{prefix}", self.bucket),
            ),
            (
                "TUSK_STORE_ENDPOINT".into(),
                self.server.endpoint().to_owned(),
            ),
            ("TUSK_STORE_ALLOW_HTTP".into(), "true".into()),
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.server.access_key().to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.server.secret_key().to_owned(),
            ),
        ]
    }
}
