//! The kubelet's view of the instance: `/livez` and `/readyz`.
//!
//! - `/livez` is 200 while the supervisor runs and its `postgres` child is alive. It does not
//!   touch the database, so a busy server is not restarted for being slow.
//! - `/readyz` is 200 when PostgreSQL accepts the management role over the Unix socket, is
//!   not in recovery, and the supervisor has finished bootstrapping (the owner role, its
//!   database and the replication role are in place).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::database::Connection;

/// What the health endpoints report on, shared with the supervisor.
#[derive(Debug)]
pub struct HealthState {
    /// Set while the `postgres` child process runs.
    pub postgres_running: AtomicBool,
    /// Set once the owner role, its database and the replication role are in place.
    pub bootstrapped: AtomicBool,
    /// How to reach the server.
    pub connection: Connection,
}

impl HealthState {
    /// A state in which nothing is running yet.
    pub fn new(connection: Connection) -> Self {
        Self {
            postgres_running: AtomicBool::new(false),
            bootstrapped: AtomicBool::new(false),
            connection,
        }
    }
}

/// The router serving both endpoints.
pub fn router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/livez", get(liveness))
        .route("/readyz", get(readiness))
        .with_state(state)
}

async fn liveness(State(state): State<Arc<HealthState>>) -> (StatusCode, &'static str) {
    if state.postgres_running.load(Ordering::SeqCst) {
        (StatusCode::OK, "postgres is running\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "postgres is not running\n")
    }
}

async fn readiness(State(state): State<Arc<HealthState>>) -> (StatusCode, &'static str) {
    if !state.postgres_running.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "postgres is not running\n");
    }
    match state.connection.is_primary().await {
        Ok(true) if state.bootstrapped.load(Ordering::SeqCst) => (StatusCode::OK, "ready\n"),
        Ok(true) => (StatusCode::SERVICE_UNAVAILABLE, "bootstrapping\n"),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "in recovery\n"),
        Err(error) => {
            tracing::debug!(%error, "readiness check cannot query postgres");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not accepting connections\n",
            )
        }
    }
}
