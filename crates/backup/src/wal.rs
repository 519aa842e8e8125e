//! The WAL archive: `tusk wal-push` (archive_command, or the long-lived archiver of
//! [`crate::wal_archiver`]) and `tusk wal-fetch` (restore_command) store each file
//! gzip-compressed and DARE-encrypted (the version-2 envelope: one scrypt per [`WalArchive`],
//! not per file) at `<wal prefix>/<name>.gz.dare`; reading takes both envelope versions.
//! Recovery fetches segments ahead in parallel ([`WalArchive::fetch_prefetching`]). Also the
//! cleanup the backup controller runs when backups are deleted.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use tusk_dare::envelope::{MasterKey, Opener};
use zeroize::Zeroizing;

use crate::pipe::{CHUNK_SIZE, ChunkReader};
use crate::store::{BackupStore, StoreError};

/// Suffix of every archived WAL file.
pub const WAL_SUFFIX: &str = ".gz.dare";
/// The directory in `pg_wal` where `tusk wal-fetch` keeps segments fetched ahead.
pub const PREFETCH_SPOOL: &str = ".tusk-prefetch";

/// Failures of the WAL archive.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The name is not one PostgreSQL archives (segment, .partial, .backup or .history).
    #[error("{0:?} is not a WAL file name")]
    InvalidName(String),
    /// Reading or writing the local file failed.
    #[error("{path}: {source}")]
    Local {
        /// The local path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The archive has no such file: PostgreSQL takes this as the end of the archive.
    #[error("{0} is not in the WAL archive")]
    NotArchived(String),
    /// A file of that name is archived with different content. Archiving must not overwrite it:
    /// this usually means two clusters write to the same archive.
    #[error(
        "{0} is already archived with different content; refusing to overwrite it (are two clusters archiving to the same prefix?)"
    )]
    Conflict(String),
    /// Compressing and encrypting, or decrypting and decompressing, failed.
    #[error("{name}: {source}")]
    Codec {
        /// The WAL file.
        name: String,
        /// Why (for decryption: a wrong passphrase or a corrupted object).
        #[source]
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked.
    #[error("the WAL task stopped unexpectedly: {0}")]
    Stage(String),
}

/// Whether `name` is a file PostgreSQL archives: a 24-hex-digit segment, optionally `.partial`,
/// a `<segment>.<offset>.backup` history file, or `<timeline>.history`.
pub fn is_wal_file_name(name: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(timeline) = name.strip_suffix(".history") {
        return hex(timeline, 8);
    }
    if let Some(segment) = name.strip_suffix(".partial") {
        return hex(segment, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest
            .split_once('.')
            .is_some_and(|(segment, offset)| hex(segment, 24) && hex(offset, 8));
    }
    hex(name, 24)
}

/// Whether `name` is a plain WAL segment (24 hex digits): the files recovery asks for in order.
fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())
}

/// The `count` segment names after `name` on its timeline.
fn following_segments(name: &str, count: u32) -> impl Iterator<Item = String> {
    let timeline = name[..8].to_owned();
    let first = segment_number(name).unwrap_or_default();
    let per_log = 0x1_0000_0000 / WAL_SEGMENT_SIZE;
    (1..=u64::from(count)).map(move |offset| {
        let segment = first + offset;
        format!(
            "{timeline}{:08X}{:08X}",
            segment / per_log,
            segment % per_log
        )
    })
}

fn object_key(wal_prefix: &str, name: &str) -> String {
    format!("{}/{name}{WAL_SUFFIX}", wal_prefix.trim_end_matches('/'))
}

/// What `push` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was stored.
    Stored,
    /// An identical file was archived already (PostgreSQL retries after a crash).
    AlreadyArchived,
}

/// One WAL archive (a store, a prefix and the passphrase), for as many pushes and fetches as
/// its owner makes. Objects are written in the version-2 envelope under one master key, derived
/// (scrypt, 16 MiB and tenths of a second of CPU) at the first push and never again; reading
/// remembers the master key of each salt it met. A long-lived owner (the archiver of
/// `tusk instance`) therefore pays the key derivation once, not per segment.
pub struct WalArchive {
    store: BackupStore,
    prefix: String,
    passphrase: Zeroizing<Vec<u8>>,
    master: tokio::sync::OnceCell<Arc<MasterKey>>,
    opener: Arc<Opener>,
}

impl std::fmt::Debug for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalArchive")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl WalArchive {
    /// The archive at `wal_prefix` in `store`, sealed with `passphrase`.
    pub fn new(store: BackupStore, wal_prefix: &str, passphrase: &[u8]) -> Self {
        WalArchive {
            store,
            prefix: wal_prefix.to_owned(),
            passphrase: Zeroizing::new(passphrase.to_vec()),
            master: tokio::sync::OnceCell::new(),
            opener: Arc::new(Opener::new(passphrase)),
        }
    }

    /// The archive's prefix in the store.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Archives the file at `path` (PostgreSQL's `%p`) under its file name. Returns once the
    /// object is stored (or found archived with the same content); refuses to overwrite an
    /// object of that name with other content, or one this passphrase cannot read.
    ///
    /// The file is streamed through compression and encryption, so only the sealed object is
    /// held in memory (once), never the segment beside it.
    pub async fn push(&self, path: &Path) -> Result<PushOutcome, WalError> {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|name| is_wal_file_name(name))
            .ok_or_else(|| WalError::InvalidName(path.display().to_string()))?
            .to_owned();
        let key = object_key(&self.prefix, &name);
        let location = ObjectPath::from(key.as_str());

        match self.same_as_archived(&key, &name, path).await {
            Ok(true) => return Ok(PushOutcome::AlreadyArchived),
            Ok(false) => return Err(WalError::Conflict(name)),
            Err(WalError::NotArchived(_)) => {}
            // An object that this passphrase cannot read is not ours to overwrite either.
            Err(WalError::Codec { .. }) => return Err(WalError::Conflict(name)),
            Err(error) => return Err(error),
        }

        let master = self.master().await?;
        let source = path.to_owned();
        let sealed = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&source).map_err(|error| WalError::Local {
                path: source.clone(),
                source: error,
            })?;
            seal(file, &master).map_err(|source| WalError::Codec { name, source })
        })
        .await
        .map_err(|error| WalError::Stage(error.to_string()))??;
        self.store
            .object_store()
            .put(&location, sealed.into())
            .await
            .map_err(|error| StoreError::request("archiving", &key, error))?;
        Ok(PushOutcome::Stored)
    }

    /// Fetches the archived `name` (PostgreSQL's `%f`) into `destination` (`%p`). The file
    /// appears whole or not at all: it is streamed into a temporary file beside `destination`
    /// as it downloads, a few chunks at a time, and renamed only once the object's last DARE
    /// package verified and its gzip stream ended.
    pub async fn fetch(&self, name: &str, destination: &Path) -> Result<(), WalError> {
        if !is_wal_file_name(name) {
            return Err(WalError::InvalidName(name.to_owned()));
        }
        let key = object_key(&self.prefix, name);
        let local = |source| WalError::Local {
            path: destination.to_owned(),
            source,
        };
        let file_name = destination
            .file_name()
            .ok_or_else(|| local(io::Error::other("not a file path")))?;
        let temporary =
            destination.with_file_name(format!(".{}.tusk-fetch", file_name.to_string_lossy()));
        let file = tokio::fs::File::create(&temporary)
            .await
            .map_err(local)?
            .into_std()
            .await;
        let written = self
            .open_archived(&key, name, io::BufWriter::with_capacity(CHUNK_SIZE, file))
            .await
            .and_then(|mut writer| writer.flush().map_err(local));
        if let Err(error) = written {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(error);
        }
        tokio::fs::rename(&temporary, destination)
            .await
            .map_err(local)?;
        Ok(())
    }

    /// [`WalArchive::fetch`] for recovery, which asks for one segment after another: a segment
    /// found in `spool` (fetched and verified ahead by an earlier call) is moved into place
    /// without touching the store; otherwise the segment and the `ahead` segments after it are
    /// fetched in parallel, the requested one into `destination` and the others into `spool`
    /// for the next calls. A segment fetched ahead that is not archived (the end of the
    /// archive) or cannot be read is skipped: the call that asks for it reports that. Spooled
    /// segments before `name` are left over from an earlier recovery and are removed.
    pub async fn fetch_prefetching(
        &self,
        name: &str,
        destination: &Path,
        spool: &Path,
        ahead: u32,
    ) -> Result<(), WalError> {
        if !is_segment_name(name) || ahead == 0 {
            return self.fetch(name, destination).await;
        }
        let local = |path: &Path| {
            let path = path.to_owned();
            move |source| WalError::Local { path, source }
        };
        tokio::fs::create_dir_all(spool)
            .await
            .map_err(local(spool))?;
        let mut spooled = Vec::new();
        let mut entries = tokio::fs::read_dir(spool).await.map_err(local(spool))?;
        while let Some(entry) = entries.next_entry().await.map_err(local(spool))? {
            if let Some(file) = entry.file_name().to_str() {
                if is_segment_name(file) && file < name {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                } else {
                    spooled.push(file.to_owned());
                }
            }
        }
        if spooled.iter().any(|file| file == name) {
            tokio::fs::rename(spool.join(name), destination)
                .await
                .map_err(local(destination))?;
            return Ok(());
        }
        let next: Vec<String> = following_segments(name, ahead)
            .filter(|next| !spooled.contains(next))
            .collect();
        let spooled_paths: Vec<_> = next.iter().map(|next| spool.join(next)).collect();
        let requested = self.fetch(name, destination);
        let prefetched = futures::future::join_all(
            next.iter()
                .zip(&spooled_paths)
                .map(|(next, path)| self.fetch(next, path)),
        );
        let (requested, prefetched) = tokio::join!(requested, prefetched);
        for (next, outcome) in next.iter().zip(prefetched) {
            match outcome {
                Ok(()) | Err(WalError::NotArchived(_)) => {}
                Err(error) => tracing::debug!(file = %next, %error, "prefetching failed"),
            }
        }
        requested
    }

    /// The master key for writing, derived at the first call.
    async fn master(&self) -> Result<Arc<MasterKey>, WalError> {
        self.master
            .get_or_try_init(|| async {
                let passphrase = self.passphrase.clone();
                tokio::task::spawn_blocking(move || MasterKey::generate(&passphrase))
                    .await
                    .map_err(|error| WalError::Stage(error.to_string()))?
                    .map(Arc::new)
                    .map_err(|error| WalError::Codec {
                        name: "the archive's master key".to_owned(),
                        source: error.into(),
                    })
            })
            .await
            .cloned()
    }

    /// Whether the archived object `key` holds exactly the local file at `path`, compared as
    /// both stream by; [`WalError::NotArchived`] when there is no such object.
    async fn same_as_archived(&self, key: &str, name: &str, path: &Path) -> Result<bool, WalError> {
        let local = tokio::fs::File::open(path)
            .await
            .map_err(|source| WalError::Local {
                path: path.to_owned(),
                source,
            })?
            .into_std()
            .await;
        let mut comparison = self
            .open_archived(key, name, Comparison::new(local))
            .await?;
        comparison
            .matches_to_the_end()
            .map_err(|source| WalError::Local {
                path: path.to_owned(),
                source,
            })
    }

    /// Downloads the object `key`, decrypts (either envelope version) and decompresses it into
    /// `sink` on a blocking thread, and hands `sink` back once the whole object verified. At
    /// most [`DOWNLOAD_CHUNKS_IN_FLIGHT`] downloaded chunks wait between the two sides: the
    /// object is never held whole. A sink that saw some plaintext of an object that then fails
    /// must be thrown away.
    async fn open_archived<W: Write + Send + 'static>(
        &self,
        key: &str,
        name: &str,
        mut sink: W,
    ) -> Result<W, WalError> {
        let mut download = match self.store.object_store().get(&ObjectPath::from(key)).await {
            Ok(result) => result.into_stream(),
            Err(error) if crate::store::is_missing_object(&error) => {
                return Err(WalError::NotArchived(name.to_owned()));
            }
            Err(error) => return Err(StoreError::request("downloading", key, error).into()),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(DOWNLOAD_CHUNKS_IN_FLIGHT);
        let opener = Arc::clone(&self.opener);
        let opening = tokio::task::spawn_blocking(move || {
            open(ChunkReader::new(receiver), &opener, &mut sink).map(|()| sink)
        });
        let mut download_failed = None;
        while let Some(chunk) = download.next().await {
            match chunk {
                Ok(chunk) => {
                    if sender.send(Ok(chunk)).await.is_err() {
                        // The reader stopped on an error of its own, reported below.
                        break;
                    }
                }
                Err(error) => {
                    let _ = sender
                        .send(Err(io::Error::other("the download failed")))
                        .await;
                    download_failed = Some(StoreError::request("downloading", key, error));
                    break;
                }
            }
        }
        drop(sender);
        let opened = opening
            .await
            .map_err(|error| WalError::Stage(error.to_string()))?;
        if let Some(error) = download_failed {
            return Err(error.into());
        }
        opened.map_err(|source| WalError::Codec {
            name: name.to_owned(),
            source,
        })
    }
}

/// How many downloaded chunks may wait for the thread that decrypts and decompresses them.
const DOWNLOAD_CHUNKS_IN_FLIGHT: usize = 4;

/// A `Write` that compares what is written with a local file, as both stream by.
struct Comparison {
    local: io::BufReader<std::fs::File>,
    differs: bool,
    buffer: Vec<u8>,
}

impl Comparison {
    fn new(local: std::fs::File) -> Self {
        Comparison {
            local: io::BufReader::with_capacity(CHUNK_SIZE, local),
            differs: false,
            buffer: Vec::new(),
        }
    }

    /// Whether everything written matched the file and the file has nothing more.
    fn matches_to_the_end(&mut self) -> io::Result<bool> {
        let mut rest = [0u8; 1];
        Ok(!self.differs && self.local.read(&mut rest)? == 0)
    }
}

impl Write for Comparison {
    fn write(&mut self, written: &[u8]) -> io::Result<usize> {
        if !self.differs {
            self.buffer.resize(written.len(), 0);
            let mut filled = 0;
            while filled < written.len() {
                match self.local.read(&mut self.buffer[filled..])? {
                    0 => break,
                    read => filled += read,
                }
            }
            self.differs = self.buffer[..filled] != *written;
        }
        Ok(written.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Archives the file at `path` (PostgreSQL's `%p`) under its file name: [`WalArchive::push`]
/// for a single file (the key derivation runs for it alone).
pub async fn push(
    store: &BackupStore,
    wal_prefix: &str,
    path: &Path,
    passphrase: &[u8],
) -> Result<PushOutcome, WalError> {
    WalArchive::new(store.clone(), wal_prefix, passphrase)
        .push(path)
        .await
}

/// Fetches the archived `name` (PostgreSQL's `%f`) into `destination` (`%p`):
/// [`WalArchive::fetch`] for a single file.
pub async fn fetch(
    store: &BackupStore,
    wal_prefix: &str,
    name: &str,
    destination: &Path,
    passphrase: &[u8],
) -> Result<(), WalError> {
    WalArchive::new(store.clone(), wal_prefix, passphrase)
        .fetch(name, destination)
        .await
}

/// gzip (level 6), then DARE in the version-2 envelope under `master`, of what `content`
/// reads: the sealed object.
fn seal(mut content: std::fs::File, master: &MasterKey) -> io::Result<Vec<u8>> {
    // Room for the largest object the file can make (deflate's stored blocks, gzip's framing,
    // DARE's 32 bytes per 64 KiB, the envelope's header), so the buffer never moves, and never
    // exists twice, while it grows. Capacity never written costs address space, not memory.
    let length = usize::try_from(content.metadata()?.len()).unwrap_or(usize::MAX);
    let bound = length
        .saturating_add(length / 512)
        .saturating_add(64 * 1024);
    let encryptor = master.encrypt_writer(Vec::with_capacity(bound))?;
    compress(&mut content, encryptor)?.finish()
}

/// Compresses one WAL file, read from `content`, into `output` exactly as the archive does
/// before encrypting it (gzip level 6). Public so `bench/wal` can time compression alone and
/// report what archiving costs beyond it.
pub fn compress<R: Read, W: Write>(content: &mut R, output: W) -> io::Result<W> {
    let mut compressor = flate2::write::GzEncoder::new(output, flate2::Compression::new(6));
    io::copy(content, &mut compressor)?;
    compressor.finish()
}

/// Decrypts (either envelope version) and decompresses an archived object read from `sealed`
/// into `sink`, returning only once the DARE stream's final package verified.
fn open(sealed: impl Read, opener: &Opener, sink: &mut impl Write) -> io::Result<()> {
    let decryptor = opener.decrypt_reader(sealed)?;
    let mut decompressor = flate2::read::MultiGzDecoder::new(decryptor);
    io::copy(&mut decompressor, sink)?;
    // Read the decryptor to its end so the final package is verified even if gzip stopped early.
    let mut decryptor = decompressor.into_inner();
    io::copy(&mut decryptor, &mut io::sink())?;
    Ok(())
}

/// Where a remaining backup starts in the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPosition {
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// Its start LSN, e.g. "0/2000028".
    pub start_lsn: String,
}

/// What `cleanup` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalCleanupReport {
    /// Archived files deleted.
    pub deleted: usize,
    /// Archived files kept.
    pub kept: usize,
}

/// The default WAL segment size; tusk does not change it at initdb.
const WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

fn parse_lsn(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// The segment number (position in the WAL, timeline aside) a WAL file name refers to;
/// `None` for history files, which are tiny and always kept.
fn segment_number(name: &str) -> Option<u64> {
    if name.ends_with(".history") || name.len() < 24 {
        return None;
    }
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let segment = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    let per_log = 0x1_0000_0000 / WAL_SEGMENT_SIZE;
    Some(log * per_log + segment)
}

/// Deletes the archived WAL no remaining backup needs: every segment before the segment in which
/// the oldest remaining backup starts (whatever its timeline: WAL before that position is never
/// replayed). Timeline history files are kept. With no remaining backup, the whole prefix goes.
pub async fn cleanup(
    store: &BackupStore,
    wal_prefix: &str,
    keep_from: &[BackupPosition],
) -> Result<WalCleanupReport, StoreError> {
    if keep_from.is_empty() {
        let deleted = store.delete_prefix(wal_prefix).await?;
        return Ok(WalCleanupReport { deleted, kept: 0 });
    }
    let Some(oldest_needed) = keep_from
        .iter()
        .map(|position| parse_lsn(&position.start_lsn).map(|lsn| lsn / WAL_SEGMENT_SIZE))
        .collect::<Option<Vec<_>>>()
        .and_then(|segments| segments.into_iter().min())
    else {
        // An unreadable position: deleting anything could break that backup.
        let kept = store.list(wal_prefix).await?.len();
        return Ok(WalCleanupReport { deleted: 0, kept });
    };
    let mut report = WalCleanupReport::default();
    for object in store.list(wal_prefix).await? {
        let name = object
            .key
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(WAL_SUFFIX);
        match segment_number(name) {
            Some(segment) if is_wal_file_name(name) && segment < oldest_needed => {
                store.delete_object(&object.key).await?;
                report.deleted += 1;
            }
            _ => report.kept += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_names_are_recognised() {
        for name in [
            "000000010000000000000003",
            "000000020000000A000000FF.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            assert!(is_wal_file_name(name), "{name}");
        }
        for name in [
            "../etc/passwd",
            "00000001000000000000000G",
            "archive_status",
            "",
        ] {
            assert!(!is_wal_file_name(name), "{name}");
        }
    }

    #[test]
    fn prefetching_follows_the_segments_of_one_timeline() {
        let next: Vec<String> = following_segments("0000000200000001000000FE", 3).collect();
        assert_eq!(
            next,
            [
                "0000000200000001000000FF",
                "000000020000000200000000",
                "000000020000000200000001"
            ]
        );
        assert!(is_segment_name("0000000200000001000000FE"));
        assert!(!is_segment_name("00000002.history"));
    }

    #[test]
    fn segment_numbers_follow_lsns() {
        assert_eq!(segment_number("000000010000000000000003"), Some(3));
        assert_eq!(segment_number("000000020000000100000000"), Some(256));
        assert_eq!(segment_number("00000002.history"), None);
        assert_eq!(
            parse_lsn("1/2000028").map(|lsn| lsn / WAL_SEGMENT_SIZE),
            Some(258)
        );
    }

    fn opened(sealed: &[u8], opener: &Opener) -> io::Result<Vec<u8>> {
        let mut content = Vec::new();
        open(sealed, opener, &mut content)?;
        Ok(content)
    }

    /// An unnamed temporary file holding `content`, read from its start.
    fn file_holding(content: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        file
    }

    #[test]
    fn sealed_wal_round_trips_and_a_wrong_passphrase_fails() {
        let content: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(i) >> 7) as u8)
            .collect();
        let master = MasterKey::generate(b"pass").unwrap();
        let sealed = seal(file_holding(&content), &master).unwrap();
        assert_eq!(opened(&sealed, &Opener::new(b"pass")).unwrap(), content);
        assert!(opened(&sealed, &Opener::new(b"other")).is_err());
        // Cut anywhere, the object is refused rather than read as a shorter segment.
        for cut in [sealed.len() - 1, sealed.len() / 2, 100] {
            assert!(
                opened(&sealed[..cut], &Opener::new(b"pass")).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_comparison_sees_any_difference_in_content_or_length() {
        let compare = |local: &[u8], written: &[&[u8]]| {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(local).unwrap();
            std::io::Seek::rewind(&mut file).unwrap();
            let mut comparison = Comparison::new(file);
            for piece in written {
                comparison.write_all(piece).unwrap();
            }
            comparison.matches_to_the_end().unwrap()
        };
        assert!(compare(b"abcdef", &[b"abc", b"def"]));
        assert!(!compare(b"abcdef", &[b"abc", b"deF"]));
        assert!(!compare(b"abcdef", &[b"abc", b"de"]));
        assert!(!compare(b"abcde", &[b"abc", b"def"]));
        assert!(compare(b"", &[]));
    }

    /// `bench/wal` times `compress` as the archive's compression: what a sealed object
    /// decrypts to must be exactly its output.
    #[test]
    fn a_sealed_segment_holds_exactly_what_compress_writes() {
        let content: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let master = MasterKey::generate(b"pass").unwrap();
        let sealed = seal(file_holding(&content), &master).unwrap();
        let mut decrypted = Vec::new();
        Opener::new(b"pass")
            .decrypt_reader(&sealed[..])
            .unwrap()
            .read_to_end(&mut decrypted)
            .unwrap();
        // Read from a file as the seal reads it: deflate's blocks depend on how its input
        // arrives, not only on the bytes.
        let compressed = compress(&mut file_holding(&content), Vec::new()).unwrap();
        assert_eq!(decrypted, compressed);
    }

    #[test]
    fn wal_archived_before_the_version_2_envelope_still_opens() {
        let content = b"an old segment".to_vec();
        let encryptor = tusk_dare::envelope::encrypt_writer(Vec::new(), b"pass").unwrap();
        let mut compressor = flate2::write::GzEncoder::new(encryptor, flate2::Compression::new(6));
        compressor.write_all(&content).unwrap();
        let sealed = compressor.finish().unwrap().finish().unwrap();
        assert_eq!(opened(&sealed, &Opener::new(b"pass")).unwrap(), content);
    }
}
