//! `tusk`: PostgreSQL as a managed service on Kubernetes.
//!
//! This binary only parses arguments and hands each subcommand to the crate that implements it.
//! Every subcommand lives in its own module under `commands/`.

mod commands;
mod kube_client;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// PostgreSQL as a managed service on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "tusk", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all controllers against the current kubeconfig or the in-cluster config.
    Operator(Box<commands::operator::OperatorArgs>),
    /// Take a backup (what the backup Job runs), or read one back without Kubernetes.
    #[command(subcommand)]
    Backup(commands::backup::BackupCommand),
    /// Restore a backup into an empty data directory.
    #[command(subcommand)]
    Restore(commands::restore::RestoreCommand),
    /// Check a restore test's throwaway cluster (what the check Job runs).
    #[command(subcommand)]
    RestoreTest(commands::restore_test::RestoreTestCommand),
    /// Archive one WAL segment (PostgreSQL's archive_command).
    WalPush(commands::wal::WalPushArgs),
    /// Fetch one archived WAL segment (PostgreSQL's restore_command).
    WalFetch(commands::wal::WalFetchArgs),
    /// Run the long-lived WAL archiver that `wal-push --archiver-socket` hands segments to.
    WalArchiver(commands::wal::WalArchiverArgs),
    /// Compress WAL files as the archive does, without encryption or store (for `bench/wal`).
    #[command(hide = true)]
    WalCompress(commands::wal::WalCompressArgs),
    /// Supervise PostgreSQL inside a database pod.
    Instance(commands::instance::InstanceArgs),
    /// Forward TCP connections to a database (runs in a customer's cluster).
    Tunnel(commands::tunnel::TunnelArgs),
    /// Route every database's TLS connections by name, from one endpoint, without terminating TLS.
    Router(commands::router::RouterArgs),
    /// Print tusk's CustomResourceDefinitions as multi-document YAML.
    Crds(commands::crds::CrdsArgs),
    /// Run the whole platform on this machine: API server, local runtime, S3 and the operator.
    Dev(commands::dev::DevArgs),
    /// Run the sandbox Kubernetes API server alone.
    Sandbox(commands::sandbox::SandboxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tusk: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tusk: {error:#}");
            if error
                .downcast_ref::<commands::wal::RecoveryMustStop>()
                .is_some()
            {
                ExitCode::from(commands::wal::RECOVERY_MUST_STOP)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Operator(args) => commands::operator::run(*args).await,
        Command::Backup(command) => commands::backup::run(command).await,
        Command::Restore(command) => commands::restore::run(command).await,
        Command::RestoreTest(command) => commands::restore_test::run(command).await,
        Command::WalPush(args) => commands::wal::push(args).await,
        Command::WalFetch(args) => commands::wal::fetch(args).await,
        Command::WalArchiver(args) => commands::wal::archiver(args).await,
        Command::WalCompress(args) => commands::wal::compress(args),
        Command::Instance(args) => commands::instance::run(args).await,
        Command::Tunnel(args) => commands::tunnel::run(args).await,
        Command::Router(args) => commands::router::run(args).await,
        Command::Crds(args) => commands::crds::run(args),
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Sandbox(args) => commands::sandbox::run(args).await,
    }
}
