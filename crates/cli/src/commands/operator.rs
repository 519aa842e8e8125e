//! `tusk operator`.

use clap::Args;

/// Arguments of `tusk operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {}

/// Runs `tusk operator`.
pub async fn run(_args: OperatorArgs) -> anyhow::Result<()> {
    Err(super::not_built_yet("operator"))
}
