//! Event reasons and a small helper around the one [`Recorder`] in the context.
//!
//! Notes are sentences a person can act on, and never contain a secret value.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Event reasons (PascalCase).
pub mod reasons {
    /// A backup Job was started for a request.
    pub const BACKUP_STARTED: &str = "BackupStarted";
    /// A backup request succeeded.
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    /// A backup request failed.
    pub const BACKUP_FAILED: &str = "BackupFailed";
    /// A finalizer step is running.
    pub const FINALIZER: &str = "Finalizer";
    /// A step failed; the note is the failure's message.
    pub const ERROR: &str = "Error";
    /// The spec, or something it names, cannot be used as written; the note says which field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A schedule created a backup request.
    pub const BACKUP_SCHEDULED: &str = "BackupScheduled";
    /// A schedule deleted a backup beyond its `keep`.
    pub const BACKUP_PRUNED: &str = "BackupPruned";
    /// A persistent volume claim was asked to grow.
    pub const VOLUME_EXPANDING: &str = "VolumeExpanding";
    /// A remote cluster cannot be reached.
    pub const UNREACHABLE: &str = "Unreachable";
    /// The tunnel in a remote cluster was created or updated.
    pub const TUNNEL_READY: &str = "TunnelReady";
    /// The tunnel could not be cleaned up because the remote cluster's kubeconfig is gone.
    pub const CLEANUP_SKIPPED: &str = "CleanupSkipped";
    /// A PostgresBackup names a location that is not where tusk stores its cluster's backups:
    /// tusk neither deletes nor restores anything on its word.
    pub const LOCATION_MISMATCH: &str = "LocationMismatch";
    /// A backup Job's report did not match what the object store holds.
    pub const BACKUP_UNVERIFIED: &str = "BackupUnverified";
    /// A cluster's CA or server certificate could not be made, read or stored.
    pub const CERTIFICATE_FAILED: &str = "CertificateFailed";
    /// A cluster got its first server certificate.
    pub const CERTIFICATE_ISSUED: &str = "CertificateIssued";
    /// A cluster's server certificate was replaced (it was due, a name or the CA changed, or
    /// the Secret it is brought in changed); PostgreSQL loads it without a restart.
    pub const CERTIFICATE_RENEWED: &str = "CertificateRenewed";
    /// A deleted PostgresBackup's data was removed from the object store.
    pub const BACKUP_DATA_DELETED: &str = "BackupDataDeleted";
}

/// Publishes an Event about `regarding`. A failure to publish is logged and otherwise ignored:
/// an Event is a courtesy to a person, never a reason to fail a reconcile.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, regarding).await {
        tracing::warn!(
            %error,
            reason,
            object = regarding.name.as_deref().unwrap_or_default(),
            "cannot publish an Event"
        );
    }
}
