//! `tusk restore`: bootstrap a data directory from a backup.

use clap::{Args, Subcommand};

/// Subcommands of `tusk restore`.
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Stream a backup into an empty data directory.
    Run(RunArgs),
}

/// Arguments of `tusk restore run`.
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Runs one `tusk restore` subcommand.
pub async fn run(command: RestoreCommand) -> anyhow::Result<()> {
    match command {
        RestoreCommand::Run(_) => Err(super::not_built_yet("restore run")),
    }
}
