//! `tusk wal-push` and `tusk wal-fetch`: PostgreSQL's archive_command and restore_command, and
//! `tusk wal-archiver`, the long-lived archiver `wal-push --archiver-socket` hands segments to.
//!
//! They read the store from TUSK_STORE_URL and friends and the passphrase from
//! TUSK_BACKUP_PASSPHRASE (or --passphrase-file). The archive lives at `--wal-prefix`, else
//! TUSK_WAL_PREFIX, else `<store prefix>/<POD_NAMESPACE>/<TUSK_CLUSTER>/<TUSK_CLUSTER_UID>/wal`.
//! `wal-push --archiver-socket` needs none of that: the archiver holds it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tusk_api::instance::ARCHIVE_ERROR_PREFIX;
use tusk_backup::wal::{self, PushOutcome, WalArchive};
use tusk_backup::wal_archiver;
use tusk_backup::{BackupStore, StoreConfig};

/// Arguments of `tusk wal-push`.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The archive's prefix in the store.
    #[arg(long, env = "TUSK_WAL_PREFIX")]
    pub wal_prefix: Option<String>,
    /// A file holding the backup passphrase; TUSK_BACKUP_PASSPHRASE otherwise.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Hand the file to the `tusk wal-archiver` (or `tusk instance`) listening on this Unix
    /// socket and wait until it is stored, instead of archiving it in this process.
    #[arg(long, conflicts_with_all = ["wal_prefix", "passphrase_file"])]
    pub archiver_socket: Option<PathBuf>,
    /// The WAL file to archive (PostgreSQL's %p).
    pub path: PathBuf,
}

/// Arguments of `tusk wal-archiver`.
#[derive(Debug, Args)]
pub struct WalArchiverArgs {
    /// The archive's prefix in the store.
    #[arg(long, env = "TUSK_WAL_PREFIX")]
    pub wal_prefix: Option<String>,
    /// A file holding the backup passphrase; TUSK_BACKUP_PASSPHRASE otherwise.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// The Unix socket to listen on (created with mode 0600; an old socket file is replaced).
    #[arg(long)]
    pub socket: PathBuf,
    /// The server's WAL directory (`<data directory>/pg_wal`): requested files are read from
    /// here only.
    #[arg(long)]
    pub wal_dir: PathBuf,
}

/// Arguments of `tusk wal-compress` (hidden: what `bench/wal` measures compression alone with).
#[derive(Debug, Args)]
pub struct WalCompressArgs {
    /// WAL files to compress; the output is counted and dropped.
    pub paths: Vec<PathBuf>,
}

/// Arguments of `tusk wal-fetch`.
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The archive's prefix in the store.
    #[arg(long, env = "TUSK_WAL_PREFIX")]
    pub wal_prefix: Option<String>,
    /// A file holding the backup passphrase; TUSK_BACKUP_PASSPHRASE otherwise.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// When PostgreSQL recovers (the destination is in `pg_wal`), also fetch this many
    /// segments after the requested one, in parallel, into `pg_wal/.tusk-prefetch`, where the
    /// next calls find them; 0 turns this off.
    #[arg(long, default_value_t = 2)]
    pub prefetch: u32,
    /// The archived file's name (PostgreSQL's %f).
    pub name: String,
    /// Where to write it (PostgreSQL's %p).
    pub destination: PathBuf,
}

/// `<store prefix>/<POD_NAMESPACE>/<TUSK_CLUSTER>/<TUSK_CLUSTER_UID>/wal`, when all are set.
pub fn default_wal_prefix(store: &BackupStore) -> Option<String> {
    let variable = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let namespace = variable("POD_NAMESPACE")?;
    let cluster = variable("TUSK_CLUSTER")?;
    let uid = variable("TUSK_CLUSTER_UID")?;
    Some(tusk_api::names::wal_prefix(
        &tusk_api::names::cluster_storage_prefix(store.prefix(), &namespace, &cluster, &uid),
    ))
}

fn store_and_prefix(wal_prefix: Option<String>) -> anyhow::Result<(BackupStore, String)> {
    let store = BackupStore::new(&StoreConfig::from_env()?)?;
    let prefix = wal_prefix
        .or_else(|| default_wal_prefix(&store))
        .context("no WAL prefix: pass --wal-prefix, or set TUSK_WAL_PREFIX, or POD_NAMESPACE, TUSK_CLUSTER and TUSK_CLUSTER_UID")?;
    Ok((store, prefix))
}

/// Runs `tusk wal-push`.
pub async fn push(args: WalPushArgs) -> anyhow::Result<()> {
    // TLS to the API server and to an https object store needs rustls' provider chosen.
    tusk_operator::install_crypto_provider();
    // The instance shows this line on the cluster while archiving fails: it names the file.
    let name = args
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    push_file(args)
        .await
        .with_context(|| format!("{ARCHIVE_ERROR_PREFIX}{name}"))
}

async fn push_file(args: WalPushArgs) -> anyhow::Result<()> {
    if let Some(socket) = &args.archiver_socket {
        let name = args
            .path
            .file_name()
            .and_then(|name| name.to_str())
            .context("not a WAL file path")?;
        wal_archiver::request(socket, name).await?;
        return Ok(());
    }
    let passphrase = super::backup::passphrase(args.passphrase_file.as_deref())?;
    let (store, prefix) = store_and_prefix(args.wal_prefix)?;
    match wal::push(&store, &prefix, &args.path, &passphrase).await? {
        PushOutcome::Stored => tracing::info!(path = %args.path.display(), "archived"),
        PushOutcome::AlreadyArchived => {
            tracing::info!(path = %args.path.display(), "already archived with the same content")
        }
    }
    Ok(())
}

/// Runs `tusk wal-archiver` until it is killed.
pub async fn archiver(args: WalArchiverArgs) -> anyhow::Result<()> {
    // TLS to an https object store needs rustls' provider chosen.
    tusk_operator::install_crypto_provider();
    let passphrase = super::backup::passphrase(args.passphrase_file.as_deref())?;
    let (store, prefix) = store_and_prefix(args.wal_prefix)?;
    let listener = wal_archiver::bind(&args.socket, None)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), %prefix, "WAL archiver listening");
    let archive = Arc::new(WalArchive::new(store, &prefix, &passphrase));
    // PostgreSQL runs as this process's user, who owns the socket: only that user's requests
    // are served.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&args.socket)?);
    wal_archiver::serve(listener, archive, args.wal_dir, Some(uid)).await?;
    Ok(())
}

/// Runs `tusk wal-compress`: reads each file and compresses it as the archive does, with no
/// encryption and no store, then prints the byte counts. `bench/wal` times this process to
/// tell what archiving costs beyond compression.
pub fn compress(args: WalCompressArgs) -> anyhow::Result<()> {
    let mut read = 0;
    let mut written = 0;
    for path in &args.paths {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        read += file.metadata()?.len();
        written += wal::compress(&mut file, CountingSink::default())?.bytes;
    }
    println!(
        "{} files, {read} bytes in, {written} bytes out",
        args.paths.len()
    );
    Ok(())
}

/// A writer that only counts what it is given.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
}

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `tusk wal-fetch`. A file missing from the archive exits 1, which tells PostgreSQL the
/// archive ends there. Every other failure (an unreadable, corrupted or tampered segment, an
/// unreachable store, a missing passphrase) must not read as that end: PostgreSQL would promote
/// on a shortened history. Those exit with [`RECOVERY_MUST_STOP`], which PostgreSQL treats as
/// fatal, stopping recovery loudly.
pub async fn fetch(args: WalFetchArgs) -> anyhow::Result<()> {
    match fetch_segment(args).await {
        Ok(()) => Ok(()),
        Err(error)
            if matches!(
                error.downcast_ref::<wal::WalError>(),
                Some(wal::WalError::NotArchived(_))
            ) =>
        {
            Err(error)
        }
        Err(error) => Err(anyhow::Error::new(RecoveryMustStop(format!("{error:#}")))),
    }
}

async fn fetch_segment(args: WalFetchArgs) -> anyhow::Result<()> {
    // TLS to the API server and to an https object store needs rustls' provider chosen.
    tusk_operator::install_crypto_provider();
    let passphrase = super::backup::passphrase(args.passphrase_file.as_deref())?;
    let (store, prefix) = store_and_prefix(args.wal_prefix)?;
    let archive = WalArchive::new(store, &prefix, &passphrase);
    match prefetch_spool(&args.destination) {
        Some(spool) => {
            archive
                .fetch_prefetching(&args.name, &args.destination, &spool, args.prefetch)
                .await?
        }
        None => archive.fetch(&args.name, &args.destination).await?,
    }
    Ok(())
}

/// The directory segments fetched ahead wait in: `pg_wal/.tusk-prefetch` when the destination
/// is in a `pg_wal` directory (PostgreSQL's `pg_wal/RECOVERYXLOG`), where base backups never
/// copy from.
fn prefetch_spool(destination: &std::path::Path) -> Option<PathBuf> {
    let dir = destination.parent()?;
    (dir.file_name()? == "pg_wal").then(|| dir.join(wal::PREFETCH_SPOOL))
}

/// The exit status of a `wal-fetch` that failed for any reason but the end of the archive.
/// PostgreSQL aborts recovery when restore_command exits above 125 (as for a shell's "command
/// not found"), instead of taking the failure for the end of the archive.
pub const RECOVERY_MUST_STOP: u8 = 255;

/// A `wal-fetch` failure that must stop recovery; `main` exits with [`RECOVERY_MUST_STOP`].
#[derive(Debug, thiserror::Error)]
#[error("{0}; recovery must stop here rather than treat this as the end of the archive")]
pub struct RecoveryMustStop(String);
