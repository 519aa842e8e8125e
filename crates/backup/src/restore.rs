//! Restore: the backup object streamed through DARE decryption, decompression and untar into an
//! empty data directory, then the recovery settings PostgreSQL needs.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::compress::decompressing_reader;
use crate::parallel::{OrderedReader, OrderedStage, worker_count};
use crate::pipe::ChunkReader;
use crate::sink::{StoredObject, hex_digest};
use crate::store::{BackupStore, StoreError};
use crate::unpack::Unpacker;

/// A data directory holding this file is an unfinished or failed restore; the instance
/// supervisor never starts PostgreSQL on it. A failed restore writes its error into the file
/// (see [`recorded_failure`]); a restore that was interrupted (its process killed) leaves the
/// file as it was written first, and can start over (see [`clear_interrupted`]).
pub const RESTORE_INCOMPLETE_MARKER: &str = "tusk-restore-incomplete";
/// How the marker of a failed restore starts; the error follows.
const FAILED_PREFIX: &str = "failed: ";

/// How the restored server reaches consistency and where it stops.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The passphrase the backup was encrypted with. Never logged.
    pub passphrase: Vec<u8>,
    /// Stop replaying WAL at this time, then promote: RFC 3339 in any form (`Z`, an offset,
    /// fractional seconds), which is given to PostgreSQL as UTC with a numeric offset, the
    /// form its `recovery_target_time` accepts at startup; or PostgreSQL's own syntax.
    pub target_time: Option<String>,
    /// Stop replaying WAL once this location (such as "0/3000060") is replayed, then promote.
    pub target_lsn: Option<String>,
    /// Without a target: replay every archived segment (the latest state) instead of
    /// stopping as soon as the backup is consistent (the backup as it was taken).
    pub latest: bool,
    /// The object's size as recorded when it was stored; a different size is refused before
    /// a byte is unpacked.
    pub expected_size: Option<u64>,
    /// The SHA-256 of the object as recorded when it was stored (lowercase hex); the restore
    /// fails, leaving no data behind, when the bytes read do not hash to it.
    pub expected_sha256: Option<String>,
    /// The command PostgreSQL runs to fetch archived WAL, with `%f` and `%p`, e.g.
    /// `'/usr/local/bin/tusk' wal-fetch --wal-prefix ns/c/wal %f %p`. Needed for a target time
    /// and for backups taken without their WAL.
    pub restore_command: Option<String>,
    /// Counts the bytes of the object downloaded so far, for whoever reports the restore's
    /// progress. The unpacking follows the download closely (a few chunks behind).
    pub downloaded_bytes: Arc<AtomicU64>,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Bytes of tar stream unpacked.
    pub tar_bytes: u64,
    /// Whether PostgreSQL will replay archived WAL (recovery.signal was written).
    pub recovery_configured: bool,
}

/// Failures of a restore. Whatever the failure, the data directory is left holding only
/// [`RESTORE_INCOMPLETE_MARKER`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target directory holds files already.
    #[error("data directory {0} is not empty; restore only into an empty directory")]
    NotEmpty(PathBuf),
    /// Preparing or writing the data directory failed.
    #[error("writing {path}: {source}")]
    DataDir {
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Fetching the backup object failed.
    #[error("fetching the backup: {0}")]
    Fetch(#[from] StoreError),
    /// Decrypting, decompressing or unpacking failed: a wrong passphrase, a corrupted or
    /// truncated object.
    #[error("the backup object is unreadable (wrong passphrase, corrupted or truncated): {0}")]
    Unreadable(#[source] io::Error),
    /// The backup has no WAL and no WAL archive was given to fetch it from.
    #[error(
        "the backup carries no WAL (the cluster archived it) and no restore command was given, so PostgreSQL could never reach a consistent state"
    )]
    NoWal,
    /// The stored object is not the one the backup recorded (another backup's object copied
    /// over it, a truncated or altered object).
    #[error("the backup object does not match what was recorded when it was stored: {0}")]
    Mismatch(String),
    /// The unpacking thread panicked or was cancelled.
    #[error("the restore stopped unexpectedly: {0}")]
    Stage(String),
}

fn data_dir_error(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Restores the object at `key` into `data_dir`, which must be empty or absent. Returns only
/// after the DARE final package verified.
pub async fn restore(
    store: &BackupStore,
    key: &str,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreOutcome, RestoreError> {
    prepare_data_dir(data_dir)?;
    let result = restore_into(store, key, data_dir, options).await;
    match result {
        Ok(outcome) => {
            // Everything restored is on disk (restore_into synced it) before the marker goes,
            // and the marker's removal is on disk before the restore reports done.
            fs::remove_file(data_dir.join(RESTORE_INCOMPLETE_MARKER))
                .map_err(data_dir_error(data_dir))?;
            fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(data_dir_error(data_dir))?;
            Ok(outcome)
        }
        Err(error) => {
            if let Err(cleanup) = remove_all_but_marker(data_dir) {
                tracing::error!(data_dir = %data_dir.display(), %cleanup, "cannot clear the failed restore; the marker file still blocks it");
            }
            // The cause outlives this process: every later start reports it.
            let marker = data_dir.join(RESTORE_INCOMPLETE_MARKER);
            if let Err(write) = fs::write(&marker, format!("{FAILED_PREFIX}{error}\n")) {
                tracing::error!(marker = %marker.display(), %write, "cannot record why the restore failed");
            }
            Err(error)
        }
    }
}

/// Why the restore into `data_dir` failed, if a failed restore left its marker there. `None`
/// when there is no marker, or when the restore was interrupted rather than failed.
pub fn recorded_failure(data_dir: &Path) -> Option<String> {
    let marker = fs::read_to_string(data_dir.join(RESTORE_INCOMPLETE_MARKER)).ok()?;
    marker
        .strip_prefix(FAILED_PREFIX)
        .map(|cause| cause.trim_end().to_owned())
}

/// Empties `data_dir` (a volume's `lost+found` aside), marker included, after a restore that was
/// interrupted, so that the restore can start over. A failed restore is left alone: it would
/// fail again the same way.
pub fn clear_interrupted(data_dir: &Path) -> io::Result<()> {
    if recorded_failure(data_dir).is_some() {
        return Err(io::Error::other(
            "the restore failed; it is not cleared to start over",
        ));
    }
    remove_all_but_marker(data_dir)?;
    match fs::remove_file(data_dir.join(RESTORE_INCOMPLETE_MARKER)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Checks the directory is empty (a volume's `lost+found` aside), sets PostgreSQL's mode and
/// writes the marker before any byte of data.
fn prepare_data_dir(data_dir: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(data_dir).map_err(data_dir_error(data_dir))?;
    for entry in fs::read_dir(data_dir).map_err(data_dir_error(data_dir))? {
        let entry = entry.map_err(data_dir_error(data_dir))?;
        if entry.file_name() != "lost+found" {
            return Err(RestoreError::NotEmpty(data_dir.to_owned()));
        }
    }
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(data_dir_error(data_dir))?;
    let marker = data_dir.join(RESTORE_INCOMPLETE_MARKER);
    fs::write(
        &marker,
        b"a tusk restore into this directory has not completed\n",
    )
    .map_err(data_dir_error(&marker))?;
    Ok(())
}

fn remove_all_but_marker(data_dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == RESTORE_INCOMPLETE_MARKER || name == "lost+found" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

async fn restore_into(
    store: &BackupStore,
    key: &str,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreOutcome, RestoreError> {
    let object = store
        .object_store()
        .get(&ObjectPath::from(key))
        .await
        .map_err(|error| StoreError::request("downloading", key, error))?;
    if let Some(expected) = options.expected_size
        && object.meta.size != expected
    {
        return Err(RestoreError::Mismatch(format!(
            "it holds {} bytes, the backup recorded {expected}",
            object.meta.size
        )));
    }
    let (sender, receiver) = mpsc::channel::<io::Result<bytes::Bytes>>(8);
    let unpacker = {
        let data_dir = data_dir.to_owned();
        let passphrase = options.passphrase.clone();
        tokio::task::spawn_blocking(move || {
            unpack(ChunkReader::new(receiver), &passphrase, &data_dir)
        })
    };
    let downloaded = forward_download(object, key, sender, &options.downloaded_bytes).await;
    let tar_bytes = unpacker
        .await
        .map_err(|error| RestoreError::Stage(error.to_string()))??;
    if let Some(expected) = &options.expected_sha256
        && downloaded.sha256 != *expected
    {
        return Err(RestoreError::Mismatch(
            "its SHA-256 differs from the one recorded".to_owned(),
        ));
    }
    if let Some(expected) = options.expected_size
        && downloaded.size != expected
    {
        return Err(RestoreError::Mismatch(format!(
            "{} bytes were read, the backup recorded {expected}",
            downloaded.size
        )));
    }

    let has_wal = has_wal_segments(&data_dir.join("pg_wal")).map_err(data_dir_error(data_dir))?;
    let recovery_configured = if options.target_time.is_some()
        || options.target_lsn.is_some()
        || options.latest
        || !has_wal
    {
        let Some(restore_command) = &options.restore_command else {
            return Err(RestoreError::NoWal);
        };
        let target = match (&options.target_time, &options.target_lsn) {
            (Some(time), _) => RecoveryTarget::Time(postgres_target_time(time)),
            (None, Some(lsn)) => RecoveryTarget::Lsn(lsn.clone()),
            (None, None) if options.latest => RecoveryTarget::Latest,
            (None, None) => RecoveryTarget::Consistent,
        };
        write_recovery_settings(data_dir, restore_command, &target)?;
        true
    } else {
        false
    };
    sync_tree(data_dir).map_err(data_dir_error(data_dir))?;
    Ok(RestoreOutcome {
        tar_bytes,
        recovery_configured,
    })
}

/// The tar stream inside an encrypted backup object: the passphrase envelope, then the DARE
/// packages opened on every core, then the gzip members or zstd frames decompressed on every
/// core too (a backup written as one gzip stream or one zstd frame, before, on one core). Plaintext comes out in stream order and only from packages
/// whose tag verified; the reader ends cleanly only after the final package verified.
fn tar_stream(
    input: impl Read + Send + 'static,
    passphrase: &[u8],
) -> io::Result<Box<dyn Read + Send>> {
    let mut packages = tusk_dare::envelope::decrypt_reader(input, passphrase)?.into_packages();
    let mut opener = packages.opener();
    let stage = OrderedStage::start(
        "dare",
        worker_count(),
        move || packages.next_package(),
        move |package| opener.open(package).map_err(io::Error::from),
    )?;
    decompressing_reader(OrderedReader::new(stage))
}

/// Decrypts, decompresses and unpacks, then reads to the very end so the decompressor checks
/// its trailer and the DARE reader sees (and verifies) the final package.
fn unpack(stream: ChunkReader, passphrase: &[u8], data_dir: &Path) -> Result<u64, RestoreError> {
    let decompressed = tar_stream(stream, passphrase).map_err(RestoreError::Unreadable)?;
    let writeback = EarlyWriteback::start(data_dir).map_err(data_dir_error(data_dir))?;
    let counted = CountingReader {
        inner: decompressed,
        count: 0,
        writeback: &writeback,
    };
    let mut archive = tar::Archive::new(counted);
    archive.set_preserve_permissions(true);
    Unpacker::new(data_dir)
        .unpack_all(&mut archive)
        .map_err(unpack_error)?;
    let mut counted = archive.into_inner();
    io::copy(&mut counted, &mut io::sink()).map_err(RestoreError::Unreadable)?;
    let count = counted.count;
    writeback.finish().map_err(data_dir_error(data_dir))?;
    Ok(count)
}

/// Tar bytes unpacked between two requests to write the data directory's filesystem back.
const WRITEBACK_STEP: u64 = 64 * 1024 * 1024;

/// Writes what the restore has unpacked so far to disk while it goes on unpacking, so that the
/// disk works while the cores decrypt and decompress, and the final fsyncs ([`sync_tree`]) find
/// little left to write. Left alone, the kernel would hold most of a restore in dirty pages and
/// write it only when the fsyncs ask, after the last byte was unpacked. A thread of its own
/// runs `syncfs(2)` on the data directory's filesystem each time [`WRITEBACK_STEP`] more bytes
/// were unpacked (requests made while one runs are merged), so the unpacking never waits for
/// the disk. The data directory is a volume of its own in a pod; elsewhere (`tusk restore run`
/// on a shared filesystem) the other data written meanwhile goes to disk early too, which costs
/// nothing but the I/O.
struct EarlyWriteback {
    requests: Option<std::sync::mpsc::SyncSender<()>>,
    flusher: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl EarlyWriteback {
    fn start(data_dir: &Path) -> io::Result<Self> {
        let directory = fs::File::open(data_dir)?;
        // One request waiting is enough: it covers everything unpacked before it runs.
        let (requests, received) = std::sync::mpsc::sync_channel::<()>(1);
        let flusher = std::thread::Builder::new()
            .name("writeback".to_owned())
            .spawn(move || {
                while received.recv().is_ok() {
                    nix::unistd::syncfs(&directory).map_err(io::Error::from)?;
                }
                Ok(())
            })?;
        Ok(EarlyWriteback {
            requests: Some(requests),
            flusher: Some(flusher),
        })
    }

    /// Asks for a writeback unless one is already waiting to run.
    fn request(&self) {
        if let Some(requests) = &self.requests {
            // Full: a request is waiting already. Gone: the flusher failed, and `finish` says why.
            let _ = requests.try_send(());
        }
    }

    /// Stops the flusher and reports a write error it met (the fsyncs that follow would
    /// report it too, but a failed write must never be mistaken for a restore that worked).
    fn finish(mut self) -> io::Result<()> {
        self.requests = None;
        match self.flusher.take().map(|flusher| flusher.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writeback thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for EarlyWriteback {
    fn drop(&mut self) {
        // A restore that failed stops the flusher without waiting for it.
        self.requests = None;
    }
}

/// The tar crate names the file it was unpacking and keeps the cause (a DARE or gzip failure)
/// only as the error's source; the restore's message carries both.
fn unpack_error(error: io::Error) -> RestoreError {
    let mut message = error.to_string();
    let mut cause = error.get_ref().and_then(|inner| inner.source());
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    RestoreError::Unreadable(io::Error::new(error.kind(), message))
}

/// Turns an encrypted backup object read from `input` into its tar stream on `output`
/// (decrypt, then decompress, both on every core) with no store and no server: the
/// disaster-recovery path. Fails unless the DARE stream is complete and authentic; `output` may
/// then hold a prefix of the tar.
pub fn decrypt_to_tar(
    input: impl Read + Send + 'static,
    passphrase: &[u8],
    output: &mut impl Write,
) -> Result<u64, RestoreError> {
    let mut decompressed = tar_stream(input, passphrase).map_err(RestoreError::Unreadable)?;
    let mut buffer = vec![0u8; crate::pipe::CHUNK_SIZE];
    let mut written = 0u64;
    loop {
        let read = match decompressed.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(RestoreError::Unreadable(error)),
        };
        output
            .write_all(&buffer[..read])
            .map_err(|source| RestoreError::DataDir {
                path: PathBuf::from("<output>"),
                source,
            })?;
        written += read as u64;
    }
    output.flush().map_err(|source| RestoreError::DataDir {
        path: PathBuf::from("<output>"),
        source,
    })?;
    Ok(written)
}

/// Streams the object at `key` from the store through [`decrypt_to_tar`] into `output`.
pub async fn download_tar<W: Write + Send + 'static>(
    store: &BackupStore,
    key: &str,
    passphrase: &[u8],
    mut output: W,
) -> Result<u64, RestoreError> {
    let object = store
        .object_store()
        .get(&ObjectPath::from(key))
        .await
        .map_err(|error| StoreError::request("downloading", key, error))?;
    let (sender, receiver) = mpsc::channel::<io::Result<bytes::Bytes>>(8);
    let writer = {
        let passphrase = passphrase.to_vec();
        tokio::task::spawn_blocking(move || {
            decrypt_to_tar(ChunkReader::new(receiver), &passphrase, &mut output)
        })
    };
    forward_download(object, key, sender, &AtomicU64::default()).await;
    writer
        .await
        .map_err(|error| RestoreError::Stage(error.to_string()))?
}

/// Feeds a download into a blocking stage's channel; a download error becomes the stage's
/// read error, so the stage fails rather than seeing a clean end. Returns the size and digest
/// of what was forwarded.
async fn forward_download(
    object: object_store::GetResult,
    key: &str,
    sender: mpsc::Sender<io::Result<bytes::Bytes>>,
    progress: &AtomicU64,
) -> StoredObject {
    let mut chunks = download_stream(object);
    let mut digest = Sha256::new();
    let mut size = 0u64;
    // The store's chunks are gathered into batches of DOWNLOAD_BATCH bytes: a hand-over per
    // network frame (or per 8 KiB read of a file) wakes the decrypting thread tens of thousands
    // of times per GiB, which costs more CPU than the decryption.
    let mut batch = bytes::BytesMut::new();
    loop {
        let next = chunks.next().await;
        let chunk = match next {
            Some(Ok(bytes)) => {
                digest.update(&bytes);
                size += bytes.len() as u64;
                progress.store(size, Ordering::Relaxed);
                batch.extend_from_slice(&bytes);
                if batch.len() < DOWNLOAD_BATCH {
                    continue;
                }
                Ok(batch.split().freeze())
            }
            Some(Err(error)) => Err(io::Error::other(
                StoreError::request("downloading", key, error).to_string(),
            )),
            None if batch.is_empty() => break,
            None => Ok(batch.split().freeze()),
        };
        // The store's error goes after every byte read before it.
        if chunk.is_err()
            && !batch.is_empty()
            && sender.send(Ok(batch.split().freeze())).await.is_err()
        {
            break;
        }
        let failed = chunk.is_err();
        if sender.send(chunk).await.is_err() || failed {
            // The stage stopped (its error says why) or now has the download error.
            break;
        }
    }
    StoredObject {
        size,
        sha256: hex_digest(digest),
    }
}

/// Bytes handed to the decrypting stage at a time.
const DOWNLOAD_BATCH: usize = 1024 * 1024;

/// The object's bytes as a stream. A file store's object is read DOWNLOAD_BATCH bytes at a
/// time, each read on the blocking pool; object_store's own stream reads files 8 KiB at a time,
/// with a hop to the blocking pool for each.
fn download_stream(
    object: object_store::GetResult,
) -> futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>> {
    let (file, path) = match object.payload {
        object_store::GetResultPayload::File(file, path) => (file, path),
        object_store::GetResultPayload::Stream(stream) => return stream,
    };
    let range = object.range;
    let read_error =
        move |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
            store: "LocalFileSystem",
            source,
        };
    futures::stream::try_unfold((file, range.start), move |(mut file, offset)| {
        let path = path.clone();
        async move {
            if offset >= range.end {
                return Ok(None);
            }
            tokio::task::spawn_blocking(move || {
                use std::io::{Seek as _, SeekFrom};
                let wanted = (range.end - offset).min(DOWNLOAD_BATCH as u64);
                let mut buffer = Vec::with_capacity(wanted as usize);
                let read = file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| (&mut file).take(wanted).read_to_end(&mut buffer));
                match read {
                    // A file shorter than its metadata said ends the stream early; the
                    // restore's size check names it.
                    Ok(0) => Ok(None),
                    Ok(read) => Ok(Some((
                        bytes::Bytes::from(buffer),
                        (file, offset + read as u64),
                    ))),
                    Err(error) => Err(read_error(
                        format!("reading {}: {error}", path.display()).into(),
                    )),
                }
            })
            .await
            .map_err(|error| read_error(Box::new(error)))?
        }
    })
    .boxed()
}

struct CountingReader<'a, R> {
    inner: R,
    count: u64,
    /// Told each time another [`WRITEBACK_STEP`] bytes went by.
    writeback: &'a EarlyWriteback,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        let before = self.count;
        self.count += read as u64;
        if before / WRITEBACK_STEP != self.count / WRITEBACK_STEP {
            self.writeback.request();
        }
        Ok(read)
    }
}

/// Threads that fsync restored files: an fsync waits on the disk rather than a core, and
/// several in flight let the filesystem commit them together.
const SYNC_THREADS: usize = 8;

/// Flushes every file and directory under `root` (symbolic links and a volume's lost+found
/// aside) to disk, as
/// PostgreSQL's own `initdb --sync-only` would, so that a crash after the restore reported done
/// cannot leave a data directory with missing or partial files.
pub fn sync_tree(root: &Path) -> io::Result<()> {
    let mut files = Vec::new();
    let mut directories = vec![root.to_owned()];
    let mut walked = 0;
    while walked < directories.len() {
        for entry in fs::read_dir(&directories[walked])? {
            let entry = entry?;
            let kind = entry.file_type()?;
            // A volume's lost+found is not ours, and often not readable by us.
            if walked == 0 && entry.file_name() == "lost+found" {
                continue;
            }
            if kind.is_dir() {
                directories.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        walked += 1;
    }
    // Files first, then the directories that name them.
    for paths in [files, directories] {
        let share = paths.len().div_ceil(SYNC_THREADS).max(1);
        std::thread::scope(|scope| {
            let syncers: Vec<_> = paths
                .chunks(share)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .try_for_each(|path| fs::File::open(path)?.sync_all())
                    })
                })
                .collect();
            syncers.into_iter().try_for_each(|syncer| {
                syncer
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("an fsync thread panicked")))
            })
        })?;
    }
    Ok(())
}

/// Whether pg_wal holds at least one WAL segment (a 24-hex-digit name).
fn has_wal_segments(pg_wal: &Path) -> io::Result<bool> {
    if !pg_wal.is_dir() {
        return Ok(false);
    }
    for entry in fs::read_dir(pg_wal)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Quotes a value for postgresql.conf.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Where WAL replay stops.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RecoveryTarget {
    /// As soon as the backup is consistent: the database as it was when the backup ended.
    Consistent,
    /// At the end of the archive: the latest state.
    Latest,
    /// After the last transaction committed at or before this time (PostgreSQL's syntax).
    Time(String),
    /// Once this WAL location is replayed.
    Lsn(String),
}

/// An RFC 3339 time as PostgreSQL's `recovery_target_time` accepts it at startup: UTC with a
/// numeric offset. PostgreSQL checks the setting before it has loaded its time-zone
/// abbreviations, so `Z` is refused and the server never starts. A value that is not RFC 3339
/// is passed on unchanged for PostgreSQL to judge.
pub fn postgres_target_time(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(timestamp) => {
            let utc = timestamp.to_zoned(jiff::tz::TimeZone::UTC);
            if utc.subsec_nanosecond() == 0 {
                utc.strftime("%Y-%m-%d %H:%M:%S+00").to_string()
            } else {
                utc.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
            }
        }
        Err(_) => time.to_owned(),
    }
}

/// Appends the recovery settings to postgresql.auto.conf (which wins over postgresql.conf) and
/// creates recovery.signal.
fn write_recovery_settings(
    data_dir: &Path,
    restore_command: &str,
    target: &RecoveryTarget,
) -> Result<(), RestoreError> {
    let auto_conf = data_dir.join("postgresql.auto.conf");
    let mut settings = String::from("\n# Written by tusk restore.\n");
    settings.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(restore_command)
    ));
    match target {
        RecoveryTarget::Consistent => {
            settings.push_str("recovery_target = 'immediate'\n");
            settings.push_str("recovery_target_action = 'promote'\n");
        }
        RecoveryTarget::Time(time) => {
            settings.push_str(&format!("recovery_target_time = {}\n", conf_quote(time)));
            settings.push_str("recovery_target_action = 'promote'\n");
        }
        RecoveryTarget::Lsn(lsn) => {
            settings.push_str(&format!("recovery_target_lsn = {}\n", conf_quote(lsn)));
            settings.push_str("recovery_target_action = 'promote'\n");
        }
        RecoveryTarget::Latest => {
            // No target: replay the whole archive, then promote.
        }
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto_conf)
        .map_err(data_dir_error(&auto_conf))?;
    file.write_all(settings.as_bytes())
        .map_err(data_dir_error(&auto_conf))?;
    let signal = data_dir.join("recovery.signal");
    fs::write(&signal, b"").map_err(data_dir_error(&signal))?;
    Ok(())
}

/// The restore_command for PostgreSQL: this very binary (an absolute path, which works in a pod
/// whose PATH differs from the one PostgreSQL gets) or `tusk` on PATH.
pub fn wal_fetch_command(wal_prefix: &str) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|path| path.to_str().map(str::to_owned))
        .unwrap_or_else(|| "tusk".to_owned());
    format!(
        "{} wal-fetch --wal-prefix {} %f %p",
        shell_quote(&binary),
        shell_quote(wal_prefix)
    )
}

fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_empty_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("PG_VERSION"), "15").unwrap();
        assert!(matches!(
            prepare_data_dir(dir.path()),
            Err(RestoreError::NotEmpty(_))
        ));
        assert!(dir.path().join("PG_VERSION").exists());
        assert!(!dir.path().join(RESTORE_INCOMPLETE_MARKER).exists());
    }

    #[test]
    fn an_interrupted_restore_starts_over_and_a_failed_one_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        // Killed in the middle of unpacking: the marker as first written, half the files.
        prepare_data_dir(&data).unwrap();
        fs::create_dir_all(data.join("base/1")).unwrap();
        fs::write(data.join("base/1/1259"), "half").unwrap();
        fs::create_dir(data.join("lost+found")).unwrap();
        assert_eq!(recorded_failure(&data), None);
        clear_interrupted(&data).unwrap();
        let left: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("lost+found")]);
        prepare_data_dir(&data).expect("a cleared directory takes a new restore");

        // A failure is recorded in the marker and is not cleared away.
        fs::write(
            data.join(RESTORE_INCOMPLETE_MARKER),
            format!("{FAILED_PREFIX}the backup object's SHA-256 differs\n"),
        )
        .unwrap();
        assert_eq!(
            recorded_failure(&data).as_deref(),
            Some("the backup object's SHA-256 differs")
        );
        assert!(clear_interrupted(&data).is_err());
        assert!(data.join(RESTORE_INCOMPLETE_MARKER).exists());
    }

    #[test]
    fn recovery_settings_are_quoted_and_signalled() {
        let dir = tempfile::tempdir().unwrap();
        write_recovery_settings(
            dir.path(),
            "/bin/tusk wal-fetch --wal-prefix 'a b' %f %p",
            &RecoveryTarget::Time("2026-11-23 20:00:00+00".into()),
        )
        .unwrap();
        let conf = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            conf.contains("restore_command = '/bin/tusk wal-fetch --wal-prefix ''a b'' %f %p'"),
            "{conf}"
        );
        assert!(conf.contains("recovery_target_time = '2026-11-23 20:00:00+00'"));
        assert!(conf.contains("recovery_target_action = 'promote'"));
        assert!(dir.path().join("recovery.signal").exists());

        let consistent = tempfile::tempdir().unwrap();
        write_recovery_settings(consistent.path(), "x", &RecoveryTarget::Consistent).unwrap();
        let conf = fs::read_to_string(consistent.path().join("postgresql.auto.conf")).unwrap();
        assert!(conf.contains("recovery_target = 'immediate'"), "{conf}");
    }

    #[test]
    fn every_rfc3339_form_becomes_a_time_postgresql_accepts_at_startup() {
        for (given, expected) in [
            ("2026-12-01T21:42:35Z", "2026-12-01 21:42:35+00"),
            ("2026-12-01T23:42:35+02:00", "2026-12-01 21:42:35+00"),
            ("2026-12-01T21:42:35.25Z", "2026-12-01 21:42:35.250000+00"),
            ("2026-12-01 21:42:35+00", "2026-12-01 21:42:35+00"),
        ] {
            assert_eq!(postgres_target_time(given), expected, "{given}");
        }
    }

    #[test]
    fn fetch_command_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("ns/c/wal"), "ns/c/wal");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert!(wal_fetch_command("ns/c/wal").ends_with(" wal-fetch --wal-prefix ns/c/wal %f %p"));
    }

    #[tokio::test]
    async fn a_file_stores_object_is_downloaded_whole_in_batches_and_in_order() {
        use futures::TryStreamExt as _;
        use object_store::PutPayload;
        use object_store::local::LocalFileSystem;

        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let content: Vec<u8> = (0..3 * DOWNLOAD_BATCH + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let key = ObjectPath::from("backup.tar.dare");
        store
            .put(&key, PutPayload::from(content.clone()))
            .await
            .unwrap();

        let object = store.get(&key).await.unwrap();
        assert!(matches!(
            object.payload,
            object_store::GetResultPayload::File(..)
        ));
        let chunks: Vec<bytes::Bytes> = download_stream(object).try_collect().await.unwrap();
        let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
        assert_eq!(
            sizes,
            [DOWNLOAD_BATCH, DOWNLOAD_BATCH, DOWNLOAD_BATCH, 12_345]
        );
        assert!(chunks.concat() == content);

        // What the decrypting stage is handed: the same bytes, in batches, and the digest of
        // the whole object.
        let (sender, mut receiver) = mpsc::channel(8);
        let object = store.get(&key).await.unwrap();
        let forwarding = tokio::spawn(async move {
            forward_download(object, "backup.tar.dare", sender, &AtomicU64::default()).await
        });
        let mut forwarded = Vec::new();
        while let Some(chunk) = receiver.recv().await {
            forwarded.extend_from_slice(&chunk.unwrap());
        }
        let stored = forwarding.await.unwrap();
        assert!(forwarded == content);
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(stored.sha256, hex_digest(Sha256::new_with_prefix(&content)));
    }
}
