//! The backup pipeline: pg_basebackup → parallel compression → DARE encryption → multipart
//! upload, each stage on its own thread(s) and joined by bounded channels, so memory stays
//! bounded and nothing touches the local disk whatever the database size.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::compress::{CompressWriter, Compression};
use crate::pipe::{ChunkReader, ChunkWriter};
use crate::sink::{self, SinkError, UploadStarted};
use crate::source::{self, BaseBackup, PgConnection, SourceError, WalMode, WalRange};
use crate::store::BackupStore;

/// Chunks waiting between two stages. With 256 KiB chunks this keeps a few MiB in flight.
const CHANNEL_DEPTH: usize = 8;

/// What to back up and how.
#[derive(Clone)]
pub struct BackupOptions {
    /// How to compress the tar stream.
    pub compression: Compression,
    /// The passphrase the object is encrypted with. Never logged.
    pub passphrase: Vec<u8>,
    /// Whether the backup carries its WAL or relies on the archive.
    pub wal: WalMode,
    /// The label pg_basebackup records in backup_label.
    pub label: String,
    /// pg_basebackup to run; found on PATH or in the usual places when unset.
    pub pg_basebackup: Option<std::path::PathBuf>,
}

/// Bytes read from pg_basebackup against the database size; shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// Bytes of the tar stream read so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The expected total: the databases' size, once known.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A finished backup.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The object key.
    pub key: String,
    /// The stored (compressed and encrypted) size in bytes.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// The size of the tar stream pg_basebackup produced.
    pub tar_bytes: u64,
    /// Start and stop LSN and timeline.
    pub wal_range: WalRange,
    /// The server's version, e.g. "15.8".
    pub postgres_version: String,
    /// How long the backup took.
    pub duration: Duration,
}

/// Failures of a backup, named by the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading from PostgreSQL failed (connection, pg_basebackup, malformed stream).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Compression failed.
    #[error("compressing the backup failed: {0}")]
    Compress(#[source] io::Error),
    /// Encryption failed.
    #[error("encrypting the backup failed: {0}")]
    Encrypt(#[source] io::Error),
    /// Uploading failed; the upload was aborted.
    #[error("uploading the backup failed: {0}")]
    Upload(#[from] SinkError),
    /// A stage's thread panicked or was cancelled.
    #[error("a backup stage stopped unexpectedly: {0}")]
    Stage(String),
}

/// Takes one backup of the server behind `connection` and stores it at `key`.
pub async fn run_backup(
    connection: &PgConnection,
    store: &BackupStore,
    key: &str,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupOutcome, BackupError> {
    run_identified_backup(connection, store, key, options, progress, None).await
}

/// [`run_backup`], telling `upload_started` the multipart upload's id before any data is sent,
/// so that the upload can be aborted by someone else if this process dies.
pub async fn run_identified_backup(
    connection: &PgConnection,
    store: &BackupStore,
    key: &str,
    options: &BackupOptions,
    progress: Arc<Progress>,
    upload_started: Option<UploadStarted>,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    let server = source::server_info(connection).await?;
    progress
        .total
        .store(server.database_bytes, Ordering::Relaxed);
    tracing::info!(%key, version = %server.version, database_bytes = server.database_bytes, "starting the backup");

    let (upload_sender, upload_receiver) = mpsc::channel(CHANNEL_DEPTH);
    let upload = {
        let store = store.clone();
        let key = key.to_owned();
        tokio::spawn(
            async move { sink::upload(&store, &key, upload_receiver, upload_started).await },
        )
    };

    let producer = {
        let connection = connection.clone();
        let options = options.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            produce(&connection, &options, &progress, upload_sender)
        })
    };

    let produced = producer
        .await
        .map_err(|error| BackupError::Stage(error.to_string()))
        .and_then(|result| result);
    let uploaded = upload
        .await
        .map_err(|error| BackupError::Stage(error.to_string()))
        .and_then(|result| result.map_err(BackupError::Upload));

    match (produced, uploaded) {
        (Ok((tar_bytes, wal_range)), Ok(stored)) => Ok(BackupOutcome {
            key: key.to_owned(),
            stored_bytes: stored.size,
            sha256: stored.sha256,
            tar_bytes,
            wal_range,
            postgres_version: server.version,
            duration: started.elapsed(),
        }),
        // The upload's own failure is the cause; the producer then only saw a closed pipe.
        (_, Err(BackupError::Upload(error))) if error.is_own_failure() => {
            Err(BackupError::Upload(error))
        }
        (Err(error), _) => Err(error),
        (Ok(_), Err(error)) => Err(error),
    }
}

/// Bytes of pg_basebackup's output handed on at a time. pg_basebackup writes a few KiB at a
/// time: handing each write to the inspector and the compressor on its own would wake their
/// threads hundreds of thousands of times per GiB. A quarter MiB makes that a few thousand,
/// and the inspector's queue costs little memory.
const READ_BATCH: usize = 256 * 1024;

/// Reads until `buffer` is full or pg_basebackup's output ends; the bytes read.
fn read_batch(base_backup: &mut BaseBackup, buffer: &mut [u8]) -> Result<usize, BackupError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match base_backup.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(SourceError::Read(error).into()),
        }
    }
    Ok(filled)
}

/// The blocking part: reads pg_basebackup, feeds the compressor (whose writer thread encrypts
/// into the upload channel) and the tar inspector, and commits the stream only when
/// pg_basebackup succeeded and the manifest was found.
fn produce(
    connection: &PgConnection,
    options: &BackupOptions,
    progress: &Progress,
    upload_sender: mpsc::Sender<crate::pipe::UploadMessage>,
) -> Result<(u64, WalRange), BackupError> {
    // pg_basebackup first: its start (connecting, the checkpoint) then overlaps the key
    // derivation, a few tenths of a second on one core. It waits on the full pipe meanwhile.
    let mut base_backup = BaseBackup::start(
        connection,
        options.wal,
        &options.label,
        options.pg_basebackup.as_deref(),
    )?;
    let encryptor =
        tusk_dare::envelope::encrypt_writer(ChunkWriter::new(upload_sender), &options.passphrase)
            .map_err(BackupError::Encrypt)?;
    let mut compressor =
        CompressWriter::new(options.compression, encryptor).map_err(BackupError::Compress)?;

    // Two batches waiting are enough for a reader that only walks tar headers.
    let (inspect_sender, inspect_receiver) = mpsc::channel::<io::Result<Bytes>>(2);
    let inspector =
        std::thread::spawn(move || source::inspect_tar(ChunkReader::new(inspect_receiver)));
    let mut inspect_sender = Some(inspect_sender);

    let mut buffer = vec![0u8; READ_BATCH];
    let mut tar_bytes = 0u64;
    loop {
        let read = read_batch(&mut base_backup, &mut buffer)?;
        if read == 0 {
            break;
        }
        tar_bytes += read as u64;
        progress.done.fetch_add(read as u64, Ordering::Relaxed);
        let chunk = Bytes::copy_from_slice(&buffer[..read]);
        if let Some(sender) = &inspect_sender
            && sender.blocking_send(Ok(chunk)).is_err()
        {
            // The inspector stopped on a malformed stream; its error is collected below.
            inspect_sender = None;
        }
        compressor
            .write_all(&buffer[..read])
            .map_err(BackupError::Compress)?;
    }
    base_backup.wait()?;
    drop(inspect_sender);
    let wal_range = inspector
        .join()
        .map_err(|_| BackupError::Stage("the tar inspector panicked".into()))??;

    let encryptor = compressor.finish().map_err(BackupError::Compress)?;
    let chunk_writer = encryptor.finish().map_err(BackupError::Encrypt)?;
    chunk_writer.finish().map_err(BackupError::Encrypt)?;
    Ok((tar_bytes, wal_range))
}
