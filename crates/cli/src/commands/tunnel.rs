//! `tusk tunnel`.

use clap::Args;

/// Arguments of `tusk tunnel`.
#[derive(Debug, Args)]
pub struct TunnelArgs {}

/// Runs `tusk tunnel`.
pub async fn run(_args: TunnelArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("tunnel"))
}
