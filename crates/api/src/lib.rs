//! tusk's API: the six custom resource kinds of group `postgres.tusk.dev/v1`, and the names,
//! labels, finalizers and condition vocabulary that every other tusk crate shares.
//!
//! This crate does no I/O and depends on no other tusk crate, so that the operator, the backup
//! Job and the CLI all agree on one definition of each resource.
//!
//! Admission rules live in the generated CRDs themselves (OpenAPI ranges and enums, and CEL
//! `x-kubernetes-validations`), so a bad spec is refused by the API server before any controller
//! sees it.

// Each `#[kube(printcolumn(type_ = "string", ...))]` repeats the same key/value pairs on purpose;
// clippy mistakes those for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod backup_request;
pub mod backup_schedule;
pub mod cluster;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod finalizers;
pub mod instance;
pub mod labels;
pub mod names;
pub mod remote_cluster;
pub mod restore_progress;
pub mod restore_test;
pub mod tunnel_request;

pub use backup::{PostgresBackup, PostgresBackupSpec, PostgresBackupStatus};
pub use backup_request::{
    PostgresBackupRequest, PostgresBackupRequestSpec, PostgresBackupRequestStatus,
};
pub use backup_schedule::{
    PostgresBackupSchedule, PostgresBackupScheduleSpec, PostgresBackupScheduleStatus,
};
pub use cluster::{PostgresCluster, PostgresClusterSpec, PostgresClusterStatus};
pub use crd::{crds, crds_yaml};
pub use remote_cluster::{
    PostgresRemoteCluster, PostgresRemoteClusterSpec, PostgresRemoteClusterStatus,
};
pub use restore_test::{PostgresRestoreTest, PostgresRestoreTestSpec, PostgresRestoreTestStatus};

/// The API group of every tusk resource.
pub const GROUP: &str = "postgres.tusk.dev";

/// The only served and stored version.
pub const VERSION: &str = "v1";

/// The `kubectl get` category that lists every tusk resource at once (`kubectl get tusk`).
pub const CATEGORY: &str = "tusk";
