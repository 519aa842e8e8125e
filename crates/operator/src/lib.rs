//! tusk's operator: six controllers that turn tusk's custom resources into running, backed-up
//! PostgreSQL, and clean up outside the cluster when they go.
//!
//! [`run`] is the whole operator: the HTTP server for metrics and probes, leader election, and
//! the controllers (only while this replica leads). `tusk operator` and `tusk dev` call it; tests
//! call [`run_with`] to drive the clock and name the replica.

pub mod clock;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controllers;
pub mod error;
pub mod events;
pub mod job_identity;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod ssa;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::OperatorConfig;
use crate::context::Context;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::server::Readiness;

/// How the operator stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP server's address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The configured address.
        address: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// This replica stopped being the leader (it could not renew its Lease in time). It exits
    /// so that it restarts as a standby with no stale state.
    #[error("lost leadership of Lease {namespace}/{name}")]
    LeadershipLost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
    },
}

/// Options of [`run_with`] that production never changes.
#[derive(Clone)]
pub struct RunOptions {
    /// This replica's name in the Lease and in Events. Default: `$POD_NAME`, `$HOSTNAME`, or a
    /// random name.
    pub identity: String,
    /// The clock schedules and stall detection use.
    pub clock: Arc<dyn Clock>,
}

impl Default for RunOptions {
    fn default() -> Self {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("tusk-operator-{:08x}", rand::random::<u32>()));
        Self {
            identity,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Selects rustls' ring backend for the process, unless a provider is already installed. The
/// kube client and the object store client between them enable two backends, and rustls then
/// refuses to guess.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the operator until `shutdown` completes.
pub async fn run(
    config: OperatorConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_with(config, client, RunOptions::default(), shutdown).await
}

/// Runs the operator with explicit options until `shutdown` completes.
pub async fn run_with(
    config: OperatorConfig,
    client: kube::Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    install_crypto_provider();
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };

    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let (address, server) = server::serve(
        config.http_address,
        metrics.clone(),
        readiness.clone(),
        stopped(stop.clone()),
    )
    .await
    .map_err(|source| RunError::Listen {
        address: config.http_address,
        source,
    })?;
    tracing::info!(%address, identity = %options.identity, "serving /metrics, /healthz and /readyz");

    let election = config.leader_election.clone();
    let context = Arc::new(Context::new(
        client.clone(),
        config,
        metrics,
        options.clock.clone(),
        &options.identity,
    ));
    readiness.set_ready();

    let result = if election.enabled {
        let mut elector = LeaderElector::new(
            client,
            &election.lease_namespace,
            &election.lease_name,
            &options.identity,
            election.lease_duration,
        );
        lead_when_elected(&mut elector, &election, context, stop.clone()).await
    } else {
        run_controllers(context, stopped(stop.clone())).await;
        Ok(())
    };
    let _ = server.await;
    result
}

async fn lead_when_elected(
    elector: &mut LeaderElector,
    election: &config::LeaderElectionSettings,
    context: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    // Stand by until elected.
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot read or take the leader Lease"),
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            () = tokio::time::sleep(election.renew_interval) => {}
        }
    }
    tracing::info!(
        identity = elector.identity(),
        "elected leader; starting the controllers"
    );

    let (leading_sender, leading) = watch::channel(true);
    let controllers = tokio::spawn(run_controllers(context, {
        let mut leading = leading.clone();
        async move {
            let _ = leading.wait_for(|leading| !*leading).await;
        }
    }));
    let mut last_renewal = Instant::now();
    // Stop leading a little before the Lease could expire, so that a successor never overlaps.
    let give_up_after = election
        .lease_duration
        .saturating_sub(election.renew_interval / 2)
        .max(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break Ok(()),
            () = tokio::time::sleep(election.renew_interval) => {}
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewal = Instant::now(),
            Ok(false) => {
                break Err(RunError::LeadershipLost {
                    namespace: election.lease_namespace.clone(),
                    name: election.lease_name.clone(),
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the leader Lease");
                if last_renewal.elapsed() > give_up_after {
                    break Err(RunError::LeadershipLost {
                        namespace: election.lease_namespace.clone(),
                        name: election.lease_name.clone(),
                    });
                }
            }
        }
    };
    let _ = leading_sender.send(false);
    let _ = controllers.await;
    if outcome.is_ok()
        && let Err(error) = elector.release().await
    {
        tracing::warn!(%error, "cannot release the leader Lease; a standby takes over when it expires");
    }
    drop(leading);
    outcome
}

/// Runs all six controllers until `shutdown` completes.
pub async fn run_controllers(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = sender.send(true);
    });
    let stopped = || {
        let mut receiver = receiver.clone();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    };
    use controllers::*;
    tokio::join!(
        cluster::run(context.clone(), stopped()),
        remote_cluster::run(context.clone(), stopped()),
        backup_request::run(context.clone(), stopped()),
        backup_schedule::run(context.clone(), stopped()),
        backup::run(context.clone(), stopped()),
        restore_test::run(context.clone(), stopped()),
    );
}
