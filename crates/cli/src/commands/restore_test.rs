//! `tusk restore-test`: the check Job of a PostgresRestoreTest.

use anyhow::Context;
use clap::{Args, Subcommand};
use tusk_backup::restore_check::run_check;

/// Subcommands of `tusk restore-test`.
#[derive(Debug, Subcommand)]
pub enum RestoreTestCommand {
    /// Check a restore test's throwaway cluster (pg_amcheck on every database, the last
    /// replayed transaction) and report on the test's status: what the check Job runs. The
    /// connection comes from PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE, the namespace
    /// from POD_NAMESPACE.
    Check(CheckArgs),
}

/// Arguments of `tusk restore-test check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The PostgresRestoreTest to report on.
    #[arg(long)]
    pub test: String,
    /// The uid of the throwaway cluster being checked, which the report names.
    #[arg(long)]
    pub run_id: String,
}

/// Runs one `tusk restore-test` subcommand. The check fails (exit 1) when it reports a
/// problem, after writing the report.
pub async fn run(command: RestoreTestCommand) -> anyhow::Result<()> {
    tusk_operator::install_crypto_provider();
    match command {
        RestoreTestCommand::Check(args) => {
            let namespace = std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|namespace| !namespace.is_empty())
                .context("environment variable POD_NAMESPACE is not set")?;
            let client = crate::kube_client::client()
                .await
                .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
            let report = run_check(client, &namespace, &args.test, &args.run_id).await?;
            if let Some(error) = report.error {
                anyhow::bail!("the check could not run: {error}");
            }
            if !report.amcheck_passed {
                anyhow::bail!("pg_amcheck found problems: {}", report.amcheck_output);
            }
            tracing::info!(test = %args.test, "pg_amcheck found every database sound");
            Ok(())
        }
    }
}
