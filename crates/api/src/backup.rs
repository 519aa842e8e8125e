//! PostgresBackup: a finished backup and where its data lives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterReference, SecretKeySelector, TriggeredBy};

/// A finished backup: where it is stored, how it is encrypted, and what it contains. Deleting it
/// deletes its data from object storage first, unless its deletionPolicy is Retain.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresBackup",
    plural = "postgresbackups",
    singular = "postgresbackup",
    shortname = "pgb",
    category = "tusk",
    namespaced,
    status = "PostgresBackupStatus",
    derive = "PartialEq",
    doc = "A finished backup of a PostgresCluster, stored encrypted in object storage.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".spec.size",
        description = "Stored size in bytes"
    ),
    printcolumn(
        name = "Triggered By",
        type_ = "string",
        json_path = ".spec.triggeredBy"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".spec.runDuration"),
    printcolumn(
        name = "Start LSN",
        type_ = "string",
        json_path = ".spec.startLsn",
        priority = 1
    ),
    printcolumn(
        name = "Stop LSN",
        type_ = "string",
        json_path = ".spec.stopLsn",
        priority = 1
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.deletionPolicy",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupSpec {
    /// The PostgresCluster, in this namespace, this is a backup of. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: ClusterReference,

    /// Human-readable name shown by the platform.
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub display_name: String,

    /// Who asked for the backup: a user, or the cluster's own daily schedule. Set by tusk.
    #[serde(default)]
    pub triggered_by: TriggeredBy,

    /// How the stored object is encrypted. Never contains the passphrase itself. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("encryption is immutable"))]
    pub encryption: BackupEncryption,

    /// Where the backup is stored. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("s3 is immutable"))]
    pub s3: S3Location,

    /// How the tar stream was compressed before encryption.
    #[serde(default)]
    pub compression: Compression,

    /// Size of the stored object in bytes. A restore refuses an object of any other size.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub size: i64,

    /// SHA-256 of the stored object, lowercase hex. A restore refuses an object whose bytes do
    /// not hash to it, before PostgreSQL starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,

    /// How long the backup took, such as "1m23.4s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub run_duration: Option<String>,

    /// WAL location where the backup started, such as "0/2000028".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub start_lsn: Option<String>,

    /// WAL location where the backup ended; a restore is consistent from here on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub stop_lsn: Option<String>,

    /// The PostgreSQL timeline the backup was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeline: Option<i64>,

    /// Version of the PostgreSQL server that was backed up, such as "15.18". A restore needs the
    /// same major version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub postgres_version: Option<String>,

    /// What deleting this resource does to the stored data: Delete removes it, Retain keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// How a backup is encrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupEncryption {
    /// The encryption format. Only `dare` (MinIO's DARE 2.0 behind a scrypt passphrase envelope)
    /// exists.
    #[serde(default)]
    pub algorithm: EncryptionAlgorithm,

    /// The Secret key holding the passphrase, in this namespace.
    pub passphrase_secret_ref: SecretKeySelector,
}

/// Encryption formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionAlgorithm {
    /// MinIO's DARE 2.0 stream format behind the `ncrypt` scrypt passphrase envelope.
    #[default]
    Dare,
}

/// Where a backup is stored in an S3-compatible (or other object_store-supported) store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// The bucket (or container) holding the object.
    #[schemars(length(min = 1, max = 255))]
    pub bucket: String,

    /// The store's endpoint URL. Absent for the provider's default endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,

    /// The object's key within the bucket.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
}

/// Compression applied to the tar stream before encryption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, compressed in parallel.
    #[default]
    Gzip,
    /// Zstandard.
    Zstd,
}

/// What deleting a PostgresBackup does to its stored data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the stored data, then the resource.
    #[default]
    Delete,
    /// Keep the stored data; only the resource goes.
    Retain,
}

/// What tusk last observed of a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// Whether the WAL that only this backup needed has been deleted during its deletion.
    #[serde(default)]
    pub wal_cleanup_done: bool,

    /// Conditions of the backup, such as a failing deletion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
