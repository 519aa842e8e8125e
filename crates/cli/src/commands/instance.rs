//! `tusk instance`.

use clap::Args;

/// Arguments of `tusk instance`.
#[derive(Debug, Args)]
pub struct InstanceArgs {}

/// Runs `tusk instance`.
pub async fn run(_args: InstanceArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("instance"))
}
