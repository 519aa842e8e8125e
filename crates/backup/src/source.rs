//! Source stage: `pg_basebackup` as a child process writing one tar stream to stdout, plus the
//! facts about the server a backup records.

use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// How to reach the PostgreSQL server being backed up.
#[derive(Clone, Default)]
pub struct PgConnection {
    /// Host name, address, or a Unix socket directory (starting with '/').
    pub host: String,
    /// Port.
    pub port: u16,
    /// User; needs the REPLICATION attribute (a superuser has it).
    pub user: String,
    /// Password, if the server asks for one. Never logged.
    pub password: Option<String>,
    /// The address to connect to when `host` is the name to verify (libpq's `hostaddr`).
    pub hostaddr: Option<String>,
    /// The CA certificate (PEM file) the server's certificate must chain to. With it, the
    /// connection is TLS and the server must prove it is `host` (libpq's
    /// `sslmode=verify-full`); without it, there is no TLS (for a Unix socket).
    pub ssl_root_cert: Option<PathBuf>,
    /// The client certificate (PEM file) to show the server, with [`PgConnection::ssl_key`]
    /// (libpq's `sslcert`): tusk's own roles log in with one instead of a password.
    pub ssl_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM file; libpq's `sslkey`).
    pub ssl_key: Option<PathBuf>,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hostaddr", &self.hostaddr)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .finish()
    }
}

/// Failures of the source stage.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A connection setting has an unusable value.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The setting at fault.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {host}:{port}: {}", error_chain(.source))]
    Connect {
        /// The host tried.
        host: String,
        /// The port tried.
        port: u16,
        /// The driver's error, which says what went wrong (refused, authentication, ...).
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query about the server failed.
    #[error("querying the server ({query}) failed: {}", error_chain(.source))]
    Query {
        /// What was asked.
        query: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `pg_basebackup` was not found.
    #[error(
        "pg_basebackup not found (looked on PATH, in `pg_config --bindir` and /usr/lib/postgresql/*/bin)"
    )]
    BinaryNotFound,
    /// `pg_basebackup` could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading `pg_basebackup`'s output failed.
    #[error("reading pg_basebackup's output failed: {0}")]
    Read(#[source] io::Error),
    /// `pg_basebackup` exited with an error.
    #[error("pg_basebackup failed ({status}): {stderr}")]
    Failed {
        /// The exit status.
        status: std::process::ExitStatus,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// The tar stream has no `backup_manifest` with a WAL range, so the backup's LSNs are unknown.
    #[error(
        "the backup stream has no backup_manifest with WAL-Ranges; cannot tell its start and stop LSN"
    )]
    NoManifest,
    /// The TLS settings cannot be used (no CA file, an unreadable or empty one).
    #[error("TLS: {0}")]
    Tls(String),
    /// The tar stream is malformed.
    #[error("the backup stream is not a valid tar archive: {0}")]
    Tar(#[source] io::Error),
}

/// An error and its causes on one line: tokio-postgres puts the useful part ("Connection
/// refused", "password authentication failed") in the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl PgConnection {
    /// Reads PGHOST (default /var/run/postgresql), PGHOSTADDR, PGPORT (5432), PGUSER
    /// (postgres), PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY, as libpq
    /// does. PGSSLMODE may be `verify-full` (which needs PGSSLROOTCERT) or `disable`: tusk
    /// verifies the server or does not use TLS at all, nothing in between. PGSSLCERT and
    /// PGSSLKEY go together.
    pub fn from_env() -> Result<Self, SourceError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let port = match var("PGPORT") {
            None => 5432,
            Some(port) => port.parse().map_err(|_| SourceError::InvalidSetting {
                setting: "PGPORT",
                reason: format!("{port:?} is not a port number"),
            })?,
        };
        let (ssl_cert, ssl_key) = (var("PGSSLCERT"), var("PGSSLKEY"));
        if ssl_cert.is_some() != ssl_key.is_some() {
            return Err(SourceError::InvalidSetting {
                setting: "PGSSLCERT",
                reason: "a client certificate needs both PGSSLCERT and PGSSLKEY".to_owned(),
            });
        }
        Ok(Self {
            ssl_cert: ssl_cert.map(PathBuf::from),
            ssl_key: ssl_key.map(PathBuf::from),
            host: var("PGHOST").unwrap_or_else(|| "/var/run/postgresql".to_owned()),
            port,
            user: var("PGUSER").unwrap_or_else(|| "postgres".to_owned()),
            password: var("PGPASSWORD"),
            hostaddr: var("PGHOSTADDR"),
            ssl_root_cert: match var("PGSSLMODE").as_deref() {
                None | Some("disable") => None,
                Some("verify-full") => Some(PathBuf::from(var("PGSSLROOTCERT").ok_or(
                    SourceError::InvalidSetting {
                        setting: "PGSSLROOTCERT",
                        reason: "sslmode verify-full needs the CA certificate's file".to_owned(),
                    },
                )?)),
                Some(other) => {
                    return Err(SourceError::InvalidSetting {
                        setting: "PGSSLMODE",
                        reason: format!("{other:?} is neither verify-full nor disable"),
                    });
                }
            },
        })
    }

    /// Opens a connection to the `postgres` database; the driver task ends once the client is
    /// dropped.
    async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SourceError> {
        self.open("postgres", "tusk-backup").await
    }

    /// Opens a connection to `dbname` as `application`, over verified TLS when
    /// [`PgConnection::ssl_root_cert`] is set; the driver task ends once the client is dropped.
    pub async fn open(
        &self,
        dbname: &str,
        application: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SourceError> {
        let connect_error = |source| SourceError::Connect {
            host: self.host.clone(),
            port: self.port,
            source,
        };
        // The connection's own result no longer matters once the client is gone.
        let (client, driver) = match &self.ssl_root_cert {
            Some(ca_file) => {
                let client = self.ssl_cert.as_deref().zip(self.ssl_key.as_deref());
                let tls = crate::pg_tls::verifying_connector_with_client(ca_file, client)
                    .map_err(|error| SourceError::Tls(error.to_string()))?;
                let (client, connection) = self
                    .config(dbname, application)
                    .connect(tls)
                    .await
                    .map_err(connect_error)?;
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                (client, driver)
            }
            None => {
                let (client, connection) = self
                    .config(dbname, application)
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(connect_error)?;
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                (client, driver)
            }
        };
        Ok((client, driver))
    }

    fn config(&self, dbname: &str, application: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name(application)
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(password) = &self.password {
            config.password(password);
        }
        if let Some(address) = self.hostaddr.as_deref().and_then(|a| a.parse().ok()) {
            config.hostaddr(address);
        }
        if self.ssl_root_cert.is_some() {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        config
    }

    /// Points a libpq program at this server through its environment (never its arguments,
    /// which other users of the machine can read).
    pub fn apply_to(&self, command: &mut Command) {
        command
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env_remove("PGPASSWORD")
            .env_remove("PGDATABASE")
            .env_remove("PGHOSTADDR")
            .env_remove("PGSSLROOTCERT")
            .env_remove("PGSSLCERT")
            .env_remove("PGSSLKEY");
        if let (Some(cert), Some(key)) = (&self.ssl_cert, &self.ssl_key) {
            command.env("PGSSLCERT", cert).env("PGSSLKEY", key);
        }
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        if let Some(address) = &self.hostaddr {
            command.env("PGHOSTADDR", address);
        }
        match &self.ssl_root_cert {
            Some(ca_file) => {
                command
                    .env("PGSSLMODE", "verify-full")
                    .env("PGSSLROOTCERT", ca_file);
            }
            None => {
                command.env("PGSSLMODE", "disable");
            }
        }
    }
}

/// What a backup records about the server, read before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// `server_version`, e.g. "15.8".
    pub version: String,
    /// The sum of `pg_database_size` over all databases: the denominator of progress.
    pub database_bytes: u64,
    /// Whether the server archives WAL (`archive_mode` on and an archive command set).
    pub archives_wal: bool,
}

/// Connects and reads [`ServerInfo`]; also the check that the server is reachable at all.
pub async fn server_info(connection: &PgConnection) -> Result<ServerInfo, SourceError> {
    let (client, driver) = connection.connect().await?;
    let query = |query: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(query, &[])
                .await
                .map_err(|source| SourceError::Query { query, source })
        }
    };
    let version: String = query("SHOW server_version").await?.get(0);
    let database_bytes: i64 = query("SELECT sum(pg_database_size(oid))::bigint FROM pg_database")
        .await?
        .get(0);
    let archive_mode: String = query("SHOW archive_mode").await?.get(0);
    drop(client);
    // The connection ends once the client is dropped; its result no longer matters.
    let _ = driver.await;
    Ok(ServerInfo {
        version,
        database_bytes: database_bytes.max(0).unsigned_abs(),
        archives_wal: archive_mode != "off",
    })
}

/// The archiver's failure, read from `pg_stat_archiver` when the last attempt to archive WAL
/// failed (no success since): the segment, when, and how many attempts have failed. A backup
/// that takes its WAL from the archive waits at its end for that WAL, so this is why it stalls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiverFailure {
    /// The segment that last failed to archive.
    pub wal: String,
    /// When it last failed, RFC 3339 in UTC.
    pub at: String,
    /// Failed attempts since the server started.
    pub failed_count: i64,
}

impl std::fmt::Display for ArchiverFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL is not being archived: archiving segment {} failed at {} ({} failed attempts); \
             the archive command's error is in the cluster's PostgreSQL log",
            self.wal, self.at, self.failed_count
        )
    }
}

/// Reads `pg_stat_archiver` and returns the archiver's failure if archiving is failing now
/// (its last attempt failed), `None` if it works or was never tried.
pub async fn archiver_failure(
    connection: &PgConnection,
) -> Result<Option<ArchiverFailure>, SourceError> {
    const QUERY: &str = "SELECT last_failed_wal, \
         to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
         failed_count \
         FROM pg_stat_archiver \
         WHERE last_failed_time IS NOT NULL \
         AND last_failed_time >= coalesce(last_archived_time, '-infinity')";
    let (client, driver) = connection.connect().await?;
    let row = client
        .query_opt(QUERY, &[])
        .await
        .map_err(|source| SourceError::Query {
            query: "pg_stat_archiver",
            source,
        })?;
    drop(client);
    let _ = driver.await;
    Ok(row.map(|row| ArchiverFailure {
        wal: row.get::<_, Option<String>>(0).unwrap_or_default(),
        at: row.get::<_, Option<String>>(1).unwrap_or_default(),
        failed_count: row.get(2),
    }))
}

/// Finds a PostgreSQL client program: on PATH, then in `pg_config --bindir`, then in the
/// newest /usr/lib/postgresql/<major>/bin (Debian's layout).
pub fn find_pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let candidate = Path::new(&dir).join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin").join(name)))
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    majors.sort();
    majors.pop().map(|(_, path)| path)
}

/// Whether the backup carries the WAL it needs to be consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalMode {
    /// `-X fetch`: the WAL written during the backup is inside the tar.
    Include,
    /// `-X none`: the cluster archives WAL; a restore fetches it from the archive.
    FromArchive,
}

/// A running `pg_basebackup` whose stdout is the tar stream. Killed if dropped before
/// [`BaseBackup::wait`].
pub struct BaseBackup {
    child: Option<Child>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
}

/// Keep this much of pg_basebackup's stderr for the error message.
const STDERR_TAIL: usize = 4096;

/// The size asked for pg_basebackup's output pipe.
const PIPE_SIZE: i32 = 1024 * 1024;

impl BaseBackup {
    /// Starts `pg_basebackup --checkpoint=fast -Ft -D - -X fetch|none`.
    pub fn start(
        connection: &PgConnection,
        wal: WalMode,
        label: &str,
        binary: Option<&Path>,
    ) -> Result<Self, SourceError> {
        let binary = match binary {
            Some(binary) => binary.to_owned(),
            None => find_pg_binary("pg_basebackup").ok_or(SourceError::BinaryNotFound)?,
        };
        let mut command = Command::new(&binary);
        command
            .args([
                "--checkpoint=fast",
                "--format=tar",
                "--pgdata=-",
                "--no-password",
            ])
            .arg(match wal {
                WalMode::Include => "--wal-method=fetch",
                WalMode::FromArchive => "--wal-method=none",
            })
            .arg(format!("--label={label}"))
            // Messages in English, whatever the image's locale: they end up in status.message.
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        connection.apply_to(&mut command);
        let mut child = command.spawn().map_err(|source| SourceError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SourceError::Spawn {
                binary,
                source: io::Error::other("no pipe to the child"),
            });
        };
        // A pipe holds 64 KiB by default: pg_basebackup would stop at each 64 KiB until the
        // backup's reader comes back for them. 1 MiB (the most an unprivileged process may
        // ask for by default) lets it run ahead; where it is refused, the default serves.
        let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let stderr = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stderr.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                text.extend_from_slice(&buffer[..read]);
                if text.len() > 2 * STDERR_TAIL {
                    text.drain(..text.len() - STDERR_TAIL);
                }
            }
            let text = String::from_utf8_lossy(&text);
            let text = text.trim();
            let start = text.len().saturating_sub(STDERR_TAIL);
            let start = (start..text.len())
                .find(|index| text.is_char_boundary(*index))
                .unwrap_or(text.len());
            text[start..].to_owned()
        });
        Ok(Self {
            child: Some(child),
            stdout,
            stderr: Some(stderr),
        })
    }

    /// Waits for pg_basebackup to exit and turns a failure into an error with its message.
    pub fn wait(mut self) -> Result<(), SourceError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(SourceError::Read)?;
        let stderr = self
            .stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(SourceError::Failed { status, stderr })
        }
    }
}

impl Read for BaseBackup {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for BaseBackup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where a base backup starts and stops in the WAL, from its `backup_manifest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// The LSN of the backup's checkpoint, e.g. "0/2000028".
    pub start_lsn: String,
    /// The LSN at which the backup is consistent.
    pub stop_lsn: String,
}

/// The manifest's "WAL-Ranges" are near its end; keep this much of its tail.
const MANIFEST_TAIL: usize = 64 * 1024;

/// Reads a pg_basebackup tar stream to its end and returns the WAL range that its
/// `backup_manifest` (which pg_basebackup appends when writing a tar to stdout) records.
pub fn inspect_tar(stream: impl Read + Seek) -> Result<WalRange, SourceError> {
    let mut archive = tar::Archive::new(stream);
    let mut range = None;
    // Skipping by seek: the files' contents are dropped, not copied out a few KiB at a time.
    for entry in archive.entries_with_seek().map_err(SourceError::Tar)? {
        let mut entry = entry.map_err(SourceError::Tar)?;
        let is_manifest = entry
            .path()
            .map(|path| path.as_ref() == Path::new("backup_manifest"))
            .unwrap_or(false);
        if !is_manifest {
            continue;
        }
        let mut tail = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = entry.read(&mut buffer).map_err(SourceError::Tar)?;
            if read == 0 {
                break;
            }
            tail.extend_from_slice(&buffer[..read]);
            if tail.len() > 2 * MANIFEST_TAIL {
                tail.drain(..tail.len() - MANIFEST_TAIL);
            }
        }
        range = parse_manifest_wal_range(&String::from_utf8_lossy(&tail));
    }
    // Drain what follows the end-of-archive blocks so the writer never sees a closed pipe.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(SourceError::Tar)?;
    range.ok_or(SourceError::NoManifest)
}

#[derive(serde::Deserialize)]
struct ManifestWalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start_lsn: String,
    #[serde(rename = "End-LSN")]
    end_lsn: String,
}

/// Parses the `"WAL-Ranges": [...]` array out of (the tail of) a backup manifest. A backup
/// that spans a timeline switch lists several ranges; it starts in the last one listed and
/// ends in the first.
fn parse_manifest_wal_range(manifest_tail: &str) -> Option<WalRange> {
    let start = manifest_tail.find("\"WAL-Ranges\"")?;
    let after_key = &manifest_tail[start..];
    let open = after_key.find('[')?;
    let close = after_key[open..].find(']')? + open;
    let ranges: Vec<ManifestWalRange> = serde_json::from_str(&after_key[open..=close]).ok()?;
    let first = ranges.first()?;
    let last = ranges.last()?;
    Some(WalRange {
        timeline: first.timeline,
        start_lsn: last.start_lsn.clone(),
        stop_lsn: first.end_lsn.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_range_is_read_from_the_manifest_tail() {
        let tail = r#"{ "Path": "global/pg_control", "Size": 8192 } ],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(
            parse_manifest_wal_range(tail),
            Some(WalRange {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                stop_lsn: "0/2000100".into()
            })
        );
        assert_eq!(parse_manifest_wal_range("{}"), None);
    }

    #[test]
    fn the_manifest_is_found_behind_files_skipped_across_chunks() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, size) in [("base/1/1259", 300_001), ("base/1/2608", 8192)] {
            let mut header = tar::Header::new_ustar();
            header.set_size(size as u64);
            header.set_cksum();
            builder
                .append_data(&mut header, name, &vec![7u8; size][..])
                .unwrap();
        }
        let manifest = r#"{ "WAL-Ranges": [
{ "Timeline": 3, "Start-LSN": "0/5000028", "End-LSN": "0/5000100" }
] }"#;
        let mut header = tar::Header::new_ustar();
        header.set_size(manifest.len() as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, "backup_manifest", manifest.as_bytes())
            .unwrap();
        let bytes = bytes::Bytes::from(builder.into_inner().unwrap());
        // Chunks of an odd size, so that headers and skips straddle them.
        let chunks: Vec<_> = (0..bytes.len())
            .step_by(4099)
            .map(|start| bytes.slice(start..(start + 4099).min(bytes.len())))
            .collect();
        let (sender, receiver) = tokio::sync::mpsc::channel(chunks.len());
        for chunk in chunks {
            sender.try_send(Ok(chunk)).unwrap();
        }
        drop(sender);
        let range = inspect_tar(crate::pipe::ChunkReader::new(receiver)).unwrap();
        assert_eq!(range.timeline, 3);
        assert_eq!(range.start_lsn, "0/5000028");
        assert_eq!(range.stop_lsn, "0/5000100");
    }

    #[test]
    fn tar_without_manifest_is_reported() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_cksum();
        builder
            .append_data(&mut header, "PG_VERSION", &b"15\n"[..])
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        assert!(matches!(
            inspect_tar(io::Cursor::new(&bytes[..])),
            Err(SourceError::NoManifest)
        ));
    }

    #[test]
    fn debug_hides_the_password() {
        let connection = PgConnection {
            password: Some("hunter2-secret".into()),
            ..PgConnection::default()
        };
        assert!(!format!("{connection:?}").contains("hunter2-secret"));
    }
}
