//! The long-lived WAL archiver and the archive_command that hands it segments.
//!
//! `tusk wal-push` run per segment would derive the passphrase's key (scrypt: 16 MiB and about
//! 0.2 s of CPU) for every 16 MiB segment. Instead `tusk instance` runs [`serve`] for the life of
//! the server, holding one [`WalArchive`] whose master key is derived once, and PostgreSQL's
//! archive_command becomes `tusk wal-push --archiver-socket <socket> %p`: a small client
//! ([`request`]) that sends the segment's file name over a Unix socket and waits for the answer.
//!
//! The protocol is one request per connection: the client writes the WAL file name and a
//! newline; the archiver reads the file from its own WAL directory (never a path the client
//! names), archives it, and answers one line: [`STORED`], [`ALREADY_ARCHIVED`], or
//! `error <message>`. The answer comes only once the object is in the store, so PostgreSQL
//! never sees success for a segment that is not stored. If either side dies mid-request, the
//! client sees no answer and exits non-zero; PostgreSQL retries the segment, and the retry finds
//! either nothing (and stores it) or the same content (and answers [`ALREADY_ARCHIVED`]), never
//! a different object of that name (the conflict rule of [`WalArchive::push`]).
//!
//! No secret crosses the socket, and the client needs none: the passphrase and the store's
//! credentials stay in the archiver.
//!
//! Memory: segments are archived one at a time, each streamed from its file through gzip and
//! DARE into the one buffer that holds the sealed object until it is stored, and the key
//! derivation's table is 16 MiB ([`tusk_dare::kdf`]); the archiver stays well within 64 MiB
//! (47 MiB peak measured for a debug build under a pgbench load, 112 MiB before).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::wal::{PushOutcome, WalArchive, WalError, is_wal_file_name};

/// The archiver's socket's file name, beside PostgreSQL's own socket (and no longer than
/// `.s.PGSQL.<port>`, so it fits wherever that fits).
pub const SOCKET_NAME: &str = ".s.tusk-wal";
/// The answer for a segment that was stored.
pub const STORED: &str = "stored";
/// The answer for a segment that was archived with the same content already.
pub const ALREADY_ARCHIVED: &str = "already archived";
/// How an error answer starts.
const ERROR_PREFIX: &str = "error ";
/// The longest request line: a WAL file name is at most 40 bytes.
const MAX_REQUEST: usize = 256;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of the archive_command's client.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The archiver could not be reached or the connection broke.
    #[error("the WAL archiver at {socket} did not answer: {source}")]
    Unreachable {
        /// The archiver's socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The archiver closed the connection without answering (it stopped mid-request).
    #[error("the WAL archiver closed the connection before the file was stored")]
    NoAnswer,
    /// The archiver could not archive the file.
    #[error("{0}")]
    Refused(String),
}

/// Listens on `socket`, replacing a socket file a previous archiver left, readable and writable
/// by its owner only; with `owner` (uid, gid), the socket is handed to that user (PostgreSQL's,
/// when the archiver runs as root).
pub fn bind(socket: &Path, owner: Option<(u32, u32)>) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(socket) {
        Ok(metadata) if metadata.file_type().is_socket() => std::fs::remove_file(socket)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(socket, Some(uid), Some(gid))?;
    }
    Ok(listener)
}

/// Serves archive requests on `listener` forever, archiving files of `wal_dir` (the data
/// directory's `pg_wal`) into `archive`. When `peer_uid` is given, only processes of that user
/// (PostgreSQL's) are served.
pub async fn serve(
    listener: UnixListener,
    archive: Arc<WalArchive>,
    wal_dir: PathBuf,
    peer_uid: Option<u32>,
) -> io::Result<()> {
    let wal_dir = Arc::new(wal_dir);
    // PostgreSQL archives one file at a time; one at a time here too keeps a retry of a file
    // whose first request is still being served from racing it.
    let serial = Arc::new(tokio::sync::Mutex::new(()));
    loop {
        let (stream, _) = listener.accept().await?;
        if let Some(uid) = peer_uid {
            match stream.peer_cred() {
                Ok(credentials) if credentials.uid() == uid => {}
                _ => {
                    tracing::warn!("refused a WAL archive request from another user");
                    continue;
                }
            }
        }
        let archive = Arc::clone(&archive);
        let wal_dir = Arc::clone(&wal_dir);
        let serial = Arc::clone(&serial);
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &archive, &wal_dir, &serial).await {
                tracing::debug!(%error, "a WAL archive request ended early");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    archive: &WalArchive,
    wal_dir: &Path,
    serial: &tokio::sync::Mutex<()>,
) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(reader).take(MAX_REQUEST as u64);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let name = line.trim_end_matches('\n');
    let reply = match archive_one(archive, wal_dir, name, serial).await {
        Ok(PushOutcome::Stored) => {
            tracing::info!(file = name, "archived");
            STORED.to_owned()
        }
        Ok(PushOutcome::AlreadyArchived) => {
            tracing::info!(file = name, "already archived with the same content");
            ALREADY_ARCHIVED.to_owned()
        }
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            tracing::warn!(file = name, error = %message, "archiving failed");
            format!("{ERROR_PREFIX}{message}")
        }
    };
    writer.write_all(format!("{reply}\n").as_bytes()).await?;
    writer.shutdown().await
}

async fn archive_one(
    archive: &WalArchive,
    wal_dir: &Path,
    name: &str,
    serial: &tokio::sync::Mutex<()>,
) -> Result<PushOutcome, WalError> {
    // Only a WAL file name, looked up in the archiver's own WAL directory: a request cannot
    // name another file for the archiver to read and upload.
    if !is_wal_file_name(name) {
        return Err(WalError::InvalidName(name.to_owned()));
    }
    let _turn = serial.lock().await;
    archive.push(&wal_dir.join(name)).await
}

/// Asks the archiver at `socket` to archive the WAL file `name` and waits until it is stored.
pub async fn request(socket: &Path, name: &str) -> Result<PushOutcome, RequestError> {
    let unreachable = |source| RequestError::Unreachable {
        socket: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(unreachable)?;
    stream
        .write_all(format!("{name}\n").as_bytes())
        .await
        .map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .take(64 * 1024)
        .read_line(&mut answer)
        .await
        .map_err(unreachable)?;
    let Some(answer) = answer.strip_suffix('\n') else {
        return Err(RequestError::NoAnswer);
    };
    match answer {
        STORED => Ok(PushOutcome::Stored),
        ALREADY_ARCHIVED => Ok(PushOutcome::AlreadyArchived),
        other => Err(RequestError::Refused(
            other.strip_prefix(ERROR_PREFIX).unwrap_or(other).to_owned(),
        )),
    }
}
