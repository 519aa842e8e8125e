//! `tusk wal-push` and `tusk wal-fetch`: PostgreSQL's archive_command and restore_command.

use clap::Args;

/// Arguments of `tusk wal-push`.
#[derive(Debug, Args)]
pub struct WalPushArgs {}

/// Arguments of `tusk wal-fetch`.
#[derive(Debug, Args)]
pub struct WalFetchArgs {}

/// Runs `tusk wal-push`.
pub async fn push(_args: WalPushArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("wal-push"))
}

/// Runs `tusk wal-fetch`.
pub async fn fetch(_args: WalFetchArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("wal-fetch"))
}
