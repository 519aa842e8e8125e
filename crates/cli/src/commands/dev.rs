//! `tusk dev`.

use clap::Args;

/// Arguments of `tusk dev`.
#[derive(Debug, Args)]
pub struct DevArgs {}

/// Runs `tusk dev`.
pub async fn run(_args: DevArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("dev"))
}
