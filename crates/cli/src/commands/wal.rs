//! `tusk wal-push` and `tusk wal-fetch`: PostgreSQL's archive_command and restore_command.
//!
//! Both read the store from TUSK_STORE_URL and friends and the passphrase from
//! TUSK_BACKUP_PASSPHRASE (or --passphrase-file). The archive lives at `--wal-prefix`, else
//! TUSK_WAL_PREFIX, else `<store prefix>/<POD_NAMESPACE>/<TUSK_CLUSTER>/<TUSK_CLUSTER_UID>/wal`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tusk_api::instance::ARCHIVE_ERROR_PREFIX;
use tusk_backup::wal::{self, PushOutcome};
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
    /// The WAL file to archive (PostgreSQL's %p).
    pub path: PathBuf,
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
    wal::fetch(&store, &prefix, &args.name, &args.destination, &passphrase).await?;
    Ok(())
}

/// The exit status of a `wal-fetch` that failed for any reason but the end of the archive.
/// PostgreSQL aborts recovery when restore_command exits above 125 (as for a shell's "command
/// not found"), instead of taking the failure for the end of the archive.
pub const RECOVERY_MUST_STOP: u8 = 255;

/// A `wal-fetch` failure that must stop recovery; `main` exits with [`RECOVERY_MUST_STOP`].
#[derive(Debug, thiserror::Error)]
#[error("{0}; recovery must stop here rather than treat this as the end of the archive")]
pub struct RecoveryMustStop(String);
