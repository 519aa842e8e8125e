//! `tusk sandbox`.

use clap::Args;

/// Arguments of `tusk sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {}

/// Runs `tusk sandbox`.
pub async fn run(_args: SandboxArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("sandbox"))
}
