//! PostgresBackupRequest: "back this cluster up now".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::Compression;
use crate::common::{ClusterReference, TriggeredBy};

/// Asks for one backup of a cluster now. A Job takes the backup and reports its progress here;
/// tusk then checks the stored object and records it as a PostgresBackup of the same name.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresBackupRequest",
    plural = "postgresbackuprequests",
    singular = "postgresbackuprequest",
    shortname = "pgbr",
    category = "tusk",
    namespaced,
    status = "PostgresBackupRequestStatus",
    derive = "PartialEq",
    doc = "A request to back a PostgresCluster up now.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress %",
        type_ = "integer",
        json_path = ".status.progress.percent",
        description = "Percent of the database read so far"
    ),
    printcolumn(name = "Backup", type_ = "string", json_path = ".status.backupName"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupRequestSpec {
    /// The PostgresCluster, in this namespace, to back up. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: ClusterReference,
}

/// The progress and outcome of a backup request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupRequestStatus {
    /// Where the request is in its life: Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRequestPhase>,

    /// When the backup Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the request reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// How much of the database has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,

    /// A sentence for a person: what happened, and for a failure, what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The Job taking the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,

    /// The PostgresBackup created on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Who asked for the backup, as tusk determined it: `system` for a request of the
    /// cluster's own daily schedule, `user` for every other. Recorded on the PostgresBackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,

    /// What the backup Job stored, as it reports it. tusk records a PostgresBackup only after
    /// checking this against the object store: the object must be at the key tusk expects for
    /// this request, with this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<BackupResult>,

    /// The multipart upload the backup Job is writing, recorded before any data is sent, so
    /// that tusk can abort it when the request fails, even if the Job was killed. tusk aborts
    /// only an upload whose key lies under the cluster's own prefix, and clears this field once
    /// the upload is completed or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadInProgress>,

    /// Why the backup is not making progress, as the Job last saw it: for a backup waiting for
    /// WAL to be archived, the archiver's last failure. A stalled backup fails with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub stall_cause: Option<String>,
}

/// An unfinished multipart upload in the object store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadInProgress {
    /// The object's key in the store.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// The id the store gave the upload.
    #[schemars(length(min = 1, max = 1024))]
    pub upload_id: String,
}

/// A finished backup as the Job reports it, before tusk has checked it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// The object's key in the store.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// The stored size in bytes.
    #[schemars(range(min = 0))]
    pub size: i64,
    /// SHA-256 of the stored bytes, lowercase hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// How the tar stream was compressed.
    #[serde(default)]
    pub compression: Compression,
    /// WAL location where the backup started.
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub start_lsn: String,
    /// WAL location where the backup ended.
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub stop_lsn: String,
    /// The timeline the backup was taken on.
    #[schemars(range(min = 1))]
    pub timeline: i64,
    /// The server's version, such as "15.8".
    #[schemars(length(max = 64))]
    pub postgres_version: String,
    /// How long the backup took, such as "1m23s".
    #[schemars(length(max = 64))]
    pub run_duration: String,
}

/// Where a backup request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupRequestPhase {
    /// Accepted; the Job has not started yet.
    Pending,
    /// The Job is streaming the backup.
    Running,
    /// The backup is stored and its PostgresBackup exists.
    Succeeded,
    /// The backup did not complete; the message says why.
    Failed,
}

impl BackupRequestPhase {
    /// Whether the request has ended, successfully or not.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// How much of the database a running backup has read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    /// Bytes of the database read so far.
    #[schemars(range(min = 0))]
    pub bytes_done: i64,
    /// Estimated size of the database in bytes.
    #[schemars(range(min = 0))]
    pub bytes_total: i64,
    /// bytesDone as a whole percentage of bytesTotal, from 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

impl BackupProgress {
    /// Progress after `bytes_done` of an estimated `bytes_total`. The estimate can be exceeded
    /// (the database grows while it is read), so the percentage is capped below 100 until the
    /// backup has actually finished.
    pub fn new(bytes_done: u64, bytes_total: u64) -> Self {
        // An estimate that turned out short grows with what was read: never more done than
        // the total.
        let bytes_total = bytes_total.max(bytes_done);
        let percent = bytes_done
            .saturating_mul(100)
            .checked_div(bytes_total)
            .map_or(0, |percent| percent.min(99));
        Self {
            bytes_done: i64::try_from(bytes_done).unwrap_or(i64::MAX),
            bytes_total: i64::try_from(bytes_total).unwrap_or(i64::MAX),
            percent: percent as i32,
        }
    }

    /// Progress of a finished backup: everything read, 100 percent.
    pub fn complete(bytes: u64) -> Self {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        Self {
            bytes_done: bytes,
            bytes_total: bytes,
            percent: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BackupProgress;

    #[test]
    fn progress_never_claims_completion_before_the_end() {
        assert_eq!(BackupProgress::new(0, 0).percent, 0);
        assert_eq!(BackupProgress::new(50, 200).percent, 25);
        let over = BackupProgress::new(300, 200);
        assert_eq!(over.percent, 99);
        assert!(over.bytes_done <= over.bytes_total);
        assert_eq!(BackupProgress::complete(300).percent, 100);
    }
}
