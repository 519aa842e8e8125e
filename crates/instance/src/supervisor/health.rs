//! The kubelet's view of the instance: `/livez` and `/readyz`.
//!
//! The port is served from the supervisor's first moment, while it still prepares the data
//! directory (a restore downloads a whole backup, which can take hours): a port that answered
//! only once PostgreSQL ran would fail the liveness probe during a long restore, and the kubelet
//! would restart the container and the restore over and over.
//!
//! - `/livez` is 200 while the supervisor prepares the data directory, and then while its
//!   `postgres` child is alive. It does not touch the database, so a busy server is not
//!   restarted for being slow.
//! - `/readyz` is 503 while the data directory is prepared, and 200 when PostgreSQL accepts the management role over the Unix socket, is
//!   not in recovery, and the supervisor has finished bootstrapping (the owner role, its
//!   database and the replication role are in place).
//! - `/parameters` is what became of the last configuration the instance was given (see
//!   [`super::parameters`]), as JSON; 503 until the server has started.
//! - `/archiver` is the WAL archiver's state (see [`super::archiver`]), as JSON; 404 when the
//!   cluster does not archive WAL, 503 while the server cannot be asked.
//! - `/disk` is how full the filesystem of the data directory is (`statvfs(3)`, as `df`
//!   measures it), as JSON; 500 when it cannot be measured.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tusk_api::instance::{ARCHIVER_PATH, DISK_PATH, DiskReport, PARAMETERS_PATH, ParameterReport};

use super::database::Connection;
use super::postgres_log::PostgresLog;

/// What the health endpoints report on, shared with the supervisor.
#[derive(Debug)]
pub struct HealthState {
    /// Set while the `postgres` child process runs.
    pub postgres_running: AtomicBool,
    /// Set once the owner role, its database and the replication role are in place.
    pub bootstrapped: AtomicBool,
    /// How to reach the server.
    pub connection: Connection,
    /// What became of the last configuration, once the server has started.
    pub parameters: Mutex<Option<ParameterReport>>,
    /// PostgreSQL's stderr, which carries the archive command's errors, when WAL is archived.
    pub archive_log: Option<Arc<PostgresLog>>,
    /// The data directory, whose filesystem `/disk` measures.
    pub data_dir: PathBuf,
}

impl HealthState {
    /// A state in which nothing is running yet, for the server whose data is in `data_dir`.
    pub fn new(connection: Connection, data_dir: PathBuf) -> Self {
        Self {
            postgres_running: AtomicBool::new(false),
            bootstrapped: AtomicBool::new(false),
            connection,
            parameters: Mutex::new(None),
            archive_log: None,
            data_dir,
        }
    }

    /// This state, reporting on the WAL archiver from `log` (PostgreSQL's stderr).
    pub fn archiving(mut self, log: Arc<PostgresLog>) -> Self {
        self.archive_log = Some(log);
        self
    }

    /// Replaces the configuration report.
    pub fn report_parameters(&self, report: ParameterReport) {
        *self.parameters.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }
}

/// What the health port reports on: nothing but the supervisor's progress until PostgreSQL is
/// about to start, then its [`HealthState`].
#[derive(Debug, Default)]
pub struct HealthSlot(std::sync::OnceLock<Arc<HealthState>>);

impl HealthSlot {
    /// From now on, the endpoints report on `state`. Only the first call counts.
    pub fn fill(&self, state: Arc<HealthState>) {
        let _ = self.0.set(state);
    }

    fn get(&self) -> Option<&Arc<HealthState>> {
        self.0.get()
    }
}

/// The answer of every endpoint but `/livez` while the data directory is prepared.
fn preparing() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "preparing the data directory\n",
    )
        .into_response()
}

/// The router serving the endpoints, from the supervisor's start.
pub fn router(slot: Arc<HealthSlot>) -> Router {
    Router::new()
        .route("/livez", get(liveness))
        .route("/readyz", get(readiness))
        .route(PARAMETERS_PATH, get(parameters))
        .route(ARCHIVER_PATH, get(archiver))
        .route(DISK_PATH, get(disk))
        .with_state(slot)
}

async fn liveness(State(slot): State<Arc<HealthSlot>>) -> (StatusCode, &'static str) {
    let Some(state) = slot.get() else {
        return (StatusCode::OK, "preparing the data directory\n");
    };
    if state.postgres_running.load(Ordering::SeqCst) {
        (StatusCode::OK, "postgres is running\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "postgres is not running\n")
    }
}

async fn readiness(State(slot): State<Arc<HealthSlot>>) -> (StatusCode, &'static str) {
    let Some(state) = slot.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "preparing the data directory\n",
        );
    };
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

async fn parameters(State(slot): State<Arc<HealthSlot>>) -> Response {
    let Some(state) = slot.get() else {
        return preparing();
    };
    let report = state
        .parameters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match report {
        Some(report) => axum::Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "postgres has not started yet\n",
        )
            .into_response(),
    }
}

async fn archiver(State(slot): State<Arc<HealthSlot>>) -> Response {
    let Some(state) = slot.get() else {
        return preparing();
    };
    let Some(log) = &state.archive_log else {
        return (StatusCode::NOT_FOUND, "WAL archiving is off\n").into_response();
    };
    match super::archiver::report(&state.connection, log.last_archive_error()).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => {
            tracing::debug!(%error, "cannot read the archiver's state");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the archiver's state\n",
            )
                .into_response()
        }
    }
}

async fn disk(State(slot): State<Arc<HealthSlot>>) -> Response {
    let Some(state) = slot.get() else {
        return preparing();
    };
    match measure_disk(&state.data_dir) {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot measure the data volume");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot measure the data volume\n",
            )
                .into_response()
        }
    }
}

/// How full the filesystem holding `dir` is: blocks in use (all but the free ones) and blocks
/// an unprivileged user can still take, as `df` counts them.
pub fn measure_disk(dir: &std::path::Path) -> nix::Result<DiskReport> {
    let stats = nix::sys::statvfs::statvfs(dir)?;
    let blocks = |count: u64| count.saturating_mul(stats.fragment_size());
    Ok(DiskReport {
        used_bytes: blocks(stats.blocks().saturating_sub(stats.blocks_free())),
        available_bytes: blocks(stats.blocks_available()),
    })
}
