//! `tusk sandbox`: the sandbox Kubernetes API server, standalone.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

/// Arguments of `tusk sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write the kubeconfig (mode 0600) that kubectl and the operator use.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Keep objects in this directory across restarts (default: in memory only).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also run pods, as local processes, keeping their directories, volumes and logs here
    /// (default: pods are stored but nothing runs them). Containers a killed earlier run left
    /// behind are ended when it starts.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
}

/// Runs `tusk sandbox` until SIGINT or SIGTERM.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let mut builder = Sandbox::builder()
        .port(args.port)
        .kubeconfig_path(&args.kubeconfig);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(dir) = &args.runtime_dir {
        builder = builder.runtime(RuntimeOptions::new(dir));
    }
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let sandbox = builder.start().await.context("cannot start the sandbox")?;
    tracing::info!(url = sandbox.url(), kubeconfig = %args.kubeconfig.display(), "sandbox API server listening");
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the sandbox API server");
    sandbox.shutdown().await;
    Ok(())
}
