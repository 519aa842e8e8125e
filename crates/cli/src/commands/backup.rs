//! `tusk backup`: the backup Job's entry point and the disaster-recovery tools.

use clap::{Args, Subcommand};

/// Subcommands of `tusk backup`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take the backup that a PostgresBackupRequest asks for (what the backup Job runs).
    Run(RunArgs),
    /// Decrypt a backup object into a tar stream, with no Kubernetes and no server.
    Decrypt(DecryptArgs),
    /// Fetch a backup object from the object store and decrypt it.
    Download(DownloadArgs),
}

/// Arguments of `tusk backup run`.
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Arguments of `tusk backup decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {}

/// Arguments of `tusk backup download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {}

/// Runs one `tusk backup` subcommand.
pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Run(_) => Err(super::not_built_yet("backup run")),
        BackupCommand::Decrypt(_) => Err(super::not_built_yet("backup decrypt")),
        BackupCommand::Download(_) => Err(super::not_built_yet("backup download")),
    }
}
