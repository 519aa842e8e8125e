//! Condition types and reasons, in one place so that controllers, tests and dashboards agree.

/// Condition types.
pub mod types {
    /// The resource is serving (a cluster accepts connections, a tunnel forwards).
    pub const READY: &str = "Ready";
    /// The operator is still moving the resource towards its spec.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that the operator cannot fix by itself; the message says what.
    pub const DEGRADED: &str = "Degraded";
    /// The resource's spec cannot be honoured as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Deleting the resource's external data is failing.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
}

/// Condition reasons (PascalCase, as Kubernetes expects).
pub mod reasons {
    /// Children are being created.
    pub const CREATING: &str = "Creating";
    /// Children exist but PostgreSQL is not accepting connections yet.
    pub const STARTING: &str = "Starting";
    /// Everything matches the spec.
    pub const AVAILABLE: &str = "Available";
    /// A spec change is rolling out.
    pub const UPDATING: &str = "Updating";
    /// Data is being restored from a backup.
    pub const RESTORING: &str = "Restoring";
    /// Nothing is in progress.
    pub const RECONCILED: &str = "Reconciled";
    /// The instance is not ready although it should be.
    pub const INSTANCE_UNAVAILABLE: &str = "InstanceUnavailable";
    /// The spec refers to something that does not exist or cannot be used.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A remote cluster cannot be reached.
    pub const UNREACHABLE: &str = "Unreachable";
    /// A remote cluster's kubeconfig asks for something the operator never does (run a plugin,
    /// read a file, use a proxy, contact a metadata address); the message names the field.
    pub const REFUSED_KUBECONFIG: &str = "RefusedKubeconfig";

    // Why a cluster's instance is not running; the message is the container's termination
    // message (PostgreSQL's decisive line, then the supervisor's error). docs/troubleshooting.md
    // says what to do about each.

    /// The instance's container keeps exiting and is restarted with a back-off.
    pub const CRASH_LOOP: &str = "CrashLoop";
    /// PostgreSQL refused a setting of `spec.parameters` (or derived from `memorySize`) at
    /// startup.
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    /// Restoring `spec.restore` failed; the data directory is not used until the cluster is
    /// recreated.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// The instance's pod cannot be placed on a node.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The instance's image cannot be pulled.
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    /// The instance's container cannot be created or started at all.
    pub const CANNOT_START: &str = "CannotStart";
    /// The data volume is fuller than the operator's `disk.fullPercent`; the message says how
    /// full.
    pub const DISK_FULL: &str = "DiskFull";
    /// A failure above cleared: the instance runs again, or its volume has room again.
    pub const RECOVERED: &str = "Recovered";
    /// An Event: the operator asked a full data volume to grow (the platform's
    /// `disk.autoGrow`).
    pub const DISK_GROWN: &str = "DiskGrown";
    /// An Event: a full data volume is at the platform's limit for growing it.
    pub const DISK_GROWTH_LIMIT_REACHED: &str = "DiskGrowthLimitReached";
    /// The platform refused to grow the data volumes to `spec.postgresDiskSize` (the message
    /// is the API server's refusal, typically a StorageClass without `allowVolumeExpansion`);
    /// the volumes and the running database stay as they are.
    pub const VOLUME_EXPANSION_REFUSED: &str = "VolumeExpansionRefused";
    /// The storage system could not carry out the growth of a data volume the API server
    /// accepted (the claim's `allocatedResourceStatuses` says so; the message is the claim's
    /// own, from its `ControllerResizeError` or `NodeResizeError` condition, typically no room
    /// on the storage backend); the volume keeps its size and the database keeps serving.
    pub const VOLUME_EXPANSION_FAILED: &str = "VolumeExpansionFailed";
    /// A deleted cluster's data cannot be removed from the object store (the message is the
    /// store's error); the cluster stays until it can.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";

    // Health signals of a serving cluster (docs/troubleshooting.md says what to do).

    /// WAL archiving has failed for longer than the operator's `archiving.failingAfter`; the
    /// message names the segment, since when, and the archive command's error.
    pub const ARCHIVING_FAILING: &str = "ArchivingFailing";
    /// The newest backup is older than twice the interval of the cluster's backup schedule.
    pub const BACKUP_STALE: &str = "BackupStale";
    /// The server certificate is past its renewal time and a new one cannot be issued (or the
    /// Secret named in `spec.tls.certificateSecret` holds one past its renewal time); the
    /// database keeps serving the old one until it expires. The message says when it expires
    /// and why it cannot be renewed.
    pub const CERTIFICATE_NOT_RENEWED: &str = "CertificateNotRenewed";
    /// The Secret named in `spec.tls.certificateSecret` cannot be served (missing, not
    /// `kubernetes.io/tls`, too large, a key that is not the certificate's, a certificate that
    /// does not verify against its `ca.crt`); the database keeps serving the certificate it has.
    pub const INVALID_CERTIFICATE_SECRET: &str = "InvalidCertificateSecret";
}

/// The status value of a condition that holds.
pub const TRUE: &str = "True";
/// The status value of a condition that does not hold.
pub const FALSE: &str = "False";
/// The status value of a condition that cannot be determined.
pub const UNKNOWN: &str = "Unknown";
