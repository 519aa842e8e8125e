//! The programs that run inside tusk's pods.
//!
//! - [`supervisor`]: `tusk instance`, PostgreSQL's supervisor in every database pod. It
//!   bootstraps the data directory (initdb or a restore), owns the settings tusk depends on,
//!   runs `postgres` as a child, serves the health endpoints and reloads PostgreSQL when the
//!   mounted configuration changes.
//! - [`tunnel`]: `tusk tunnel`, the TCP forwarder that runs in a customer's cluster so that
//!   applications there reach the database.

pub mod supervisor;
pub mod tunnel;

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// A future that completes at the first SIGTERM (the kubelet stopping the pod) or SIGINT.
/// The handlers are installed before this returns, so no signal is missed after it.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
