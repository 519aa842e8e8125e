//! `tusk restore`: bootstrap a data directory from a backup.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tusk_backup::restore::wal_fetch_command;
use tusk_backup::{BackupStore, RestoreOptions, StoreConfig, restore};

/// Subcommands of `tusk restore`.
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Stream a backup into an empty data directory.
    Run(RunArgs),
}

/// Arguments of `tusk restore run`. The store comes from TUSK_STORE_URL and friends.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The data directory to fill; must be empty or absent.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The backup object's key in the store.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    pub backup_key: Option<String>,
    /// The backup object as a URL (s3://bucket/key), instead of --backup-key.
    #[arg(long)]
    pub url: Option<String>,
    /// Recover up to this time (RFC 3339, e.g. "2026-11-23T20:00:00Z", or PostgreSQL's
    /// "2026-11-23 20:00:00+00"), then promote. Without it, and without --latest, the backup
    /// is restored as it was taken: recovery stops as soon as it is consistent.
    #[arg(long, conflicts_with_all = ["latest", "target_lsn"])]
    pub target_time: Option<String>,
    /// Recover up to and including this WAL location (such as "0/3000060"), then promote.
    #[arg(long, conflicts_with = "latest")]
    pub target_lsn: Option<String>,
    /// Replay every archived WAL segment after the backup: the latest state.
    #[arg(long)]
    pub latest: bool,
    /// The object's size as recorded; a different object is refused before it is unpacked.
    #[arg(long)]
    pub expected_size: Option<u64>,
    /// The object's SHA-256 as recorded (lowercase hex); the restore fails if the bytes differ.
    #[arg(long)]
    pub expected_sha256: Option<String>,
    /// Where the cluster's WAL is archived; PostgreSQL fetches from there with
    /// `tusk wal-fetch`. Defaults as for `tusk wal-fetch`.
    #[arg(long, env = "TUSK_WAL_PREFIX")]
    pub wal_prefix: Option<String>,
    /// A file holding the backup passphrase; TUSK_BACKUP_PASSPHRASE otherwise.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// Runs one `tusk restore` subcommand.
pub async fn run(command: RestoreCommand) -> anyhow::Result<()> {
    // TLS to the API server and to an https object store needs rustls' provider chosen.
    tusk_operator::install_crypto_provider();
    match command {
        RestoreCommand::Run(args) => {
            let passphrase = super::backup::passphrase(args.passphrase_file.as_deref())?;
            let mut config = StoreConfig::from_env().or_else(|error| match &args.url {
                Some(_) => Ok(StoreConfig::default()),
                None => Err(error),
            })?;
            let key = match (&args.url, &args.backup_key) {
                (Some(url), _) => {
                    let parsed = url::Url::parse(url).context("--url must be s3://bucket/key")?;
                    config.url = format!(
                        "{}://{}",
                        parsed.scheme(),
                        parsed.host_str().unwrap_or_default()
                    );
                    parsed.path().trim_start_matches('/').to_owned()
                }
                (None, Some(key)) => key.clone(),
                (None, None) => anyhow::bail!("give --backup-key or --url"),
            };
            let store = BackupStore::new(&config)?;
            let wal_prefix = args
                .wal_prefix
                .clone()
                .or_else(|| super::wal::default_wal_prefix(&store));
            let options = RestoreOptions {
                passphrase,
                target_time: args.target_time,
                target_lsn: args.target_lsn,
                latest: args.latest,
                expected_size: args.expected_size,
                expected_sha256: args.expected_sha256,
                restore_command: wal_prefix.as_deref().map(wal_fetch_command),
                ..RestoreOptions::default()
            };
            let outcome = restore(&store, &key, &args.data_dir, &options).await?;
            tracing::info!(
                data_dir = %args.data_dir.display(),
                tar_bytes = outcome.tar_bytes,
                recovery = outcome.recovery_configured,
                "restore complete"
            );
            Ok(())
        }
    }
}
