//! The error every reconcile can return. Each variant names the step that failed, and its name
//! is the `error` label of the `tusk_operator_reconcile_errors_total` metric.
//!
//! No variant carries a secret value: messages name objects and keys, never their contents.

use kube::runtime::finalizer;

/// A reconcile step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no name or namespace; the API server never sends such an object.
    #[error("{kind} has no {field}")]
    MissingObjectKey {
        /// The kind of object.
        kind: &'static str,
        /// `metadata.name` or `metadata.namespace`.
        field: &'static str,
    },

    /// Reading an object from the API server failed.
    #[error("cannot read {kind} {name}: {source}")]
    Get {
        /// The kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Listing objects failed.
    #[error("cannot list {kind}: {source}")]
    List {
        /// The kind of object.
        kind: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Server-side apply of a child object failed.
    #[error("cannot apply {kind} {name}: {source}")]
    ApplyChild {
        /// The kind of child.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Creating an object failed.
    #[error("cannot create {kind} {name}: {source}")]
    Create {
        /// The kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Patching an object failed.
    #[error("cannot patch {kind} {name}: {source}")]
    Patch {
        /// The kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Deleting an object failed.
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        /// The kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Writing an object's status failed.
    #[error("cannot update the status of {kind} {name}: {source}")]
    PatchStatus {
        /// The kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// A Secret the operator needs lacks a key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: String,
    },

    /// A schedule's cron expression cannot be parsed or never fires.
    #[error("schedule {schedule:?} is not a usable cron expression: {message}")]
    InvalidSchedule {
        /// The expression.
        schedule: String,
        /// What is wrong with it.
        message: String,
    },

    /// Serializing a desired object failed.
    #[error("cannot serialize {kind}: {source}")]
    Serialize {
        /// The kind of object.
        kind: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// Building the object store client for a backup's bucket failed.
    #[error("cannot open the object store: {0}")]
    StoreConfig(String),

    /// The object store refused to delete a backup's data. The message is the store's own.
    #[error("{0}")]
    StoreDelete(String),

    /// Reading an object back from the store failed. The message is the store's own.
    #[error("{0}")]
    StoreRead(String),

    /// Deleting WAL that no remaining backup needs failed. The message is the store's own.
    #[error("{0}")]
    WalCleanup(String),

    /// A deleted cluster's instance pods have not stopped, so its store prefix is not swept yet
    /// (they could still archive WAL into it).
    #[error(
        "{0} instance pod(s) of the cluster have not stopped yet; the store is cleaned once they have, so that no WAL they archive is left behind"
    )]
    InstancesStillRunning(usize),

    /// The kubeconfig of a customer's cluster cannot be used.
    #[error("the kubeconfig in Secret {secret} cannot be used: {message}")]
    RemoteKubeconfig {
        /// The Secret's name.
        secret: String,
        /// What is wrong (never the kubeconfig's content).
        message: String,
    },

    /// The customer's cluster did not answer or refused a request. Its own words are shortened:
    /// the tenant chooses them.
    #[error(
        "the remote cluster refused or did not answer while {action}: {}",
        crate::controllers::remote_cluster::remote_error_summary(.source)
    )]
    RemoteUnreachable {
        /// What the operator was doing.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// A cluster's CA or server certificate could not be made or read.
    #[error("TLS certificates: {0}")]
    Tls(String),
    /// Adding or removing a finalizer, or the cleanup behind it, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// The variant's name, used as the `error` metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingObjectKey { .. } => "MissingObjectKey",
            Error::Get { .. } => "Get",
            Error::List { .. } => "List",
            Error::ApplyChild { .. } => "ApplyChild",
            Error::Create { .. } => "Create",
            Error::Patch { .. } => "Patch",
            Error::Delete { .. } => "Delete",
            Error::PatchStatus { .. } => "PatchStatus",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::InvalidSchedule { .. } => "InvalidSchedule",
            Error::Serialize { .. } => "Serialize",
            Error::StoreConfig(_) => "StoreConfig",
            Error::StoreDelete(_) => "StoreDelete",
            Error::StoreRead(_) => "StoreRead",
            Error::WalCleanup(_) => "WalCleanup",
            Error::InstancesStillRunning(_) => "InstancesStillRunning",
            Error::RemoteKubeconfig { .. } => "RemoteKubeconfig",
            Error::RemoteUnreachable { .. } => "RemoteUnreachable",
            Error::Tls(_) => "Tls",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.metric_label()
                }
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
                    "Finalizer"
                }
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => "Finalizer",
            },
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(error: finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(error))
    }
}

/// A shorthand for reconcile results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a kube error is the API server's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether a kube error is the API server's 409.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
