//! `tusk backup run`: the backup Job. Reads its PostgresBackupRequest, streams the backup,
//! reports progress in the request's status, records the PostgresBackup and ends the request
//! as Succeeded or Failed with a reason a person can act on.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tusk_api::backup::{BackupEncryption, PostgresBackup, PostgresBackupSpec, S3Location};
use tusk_api::backup_request::{BackupProgress, BackupRequestPhase, PostgresBackupRequest};
use tusk_api::common::SecretKeySelector;
use tusk_api::{PostgresCluster, names};

use crate::backup::{BackupOptions, BackupOutcome, Progress, run_backup};
use crate::compress::Compression;
use crate::source::{PgConnection, WalMode};
use crate::store::{BackupStore, StoreConfig};

/// How often progress is written to the request's status.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Everything the Job reads from its environment.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// The request's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// The request's name.
    pub request: String,
    /// The PostgresCluster's uid, for the PostgresBackup's ownerReference (`TUSK_CLUSTER_UID`).
    pub cluster_uid: String,
    /// Whether the cluster archives WAL (`TUSK_WAL_ARCHIVING`).
    pub wal_archiving: bool,
    /// The compression (`TUSK_BACKUP_COMPRESSION`, `TUSK_BACKUP_COMPRESSION_LEVEL`).
    pub compression: Compression,
    /// Where to store the backup.
    pub store: StoreConfig,
    /// How to reach PostgreSQL.
    pub connection: PgConnection,
    /// The pod's name (`HOSTNAME`), recorded as status.jobName's source.
    pub job_name: Option<String>,
}

/// The passphrase, kept apart from [`JobSettings`] so that settings can be printed.
pub struct Passphrase(pub Vec<u8>);

/// Failures of the backup Job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A required environment variable is missing or unusable.
    #[error("{0}")]
    Setting(String),
    /// Reading the request failed.
    #[error("cannot read PostgresBackupRequest {namespace}/{name}: {source}")]
    ReadRequest {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Updating the request's status failed.
    #[error("cannot update the status of PostgresBackupRequest {name}: {source}")]
    UpdateStatus {
        /// The request.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The backup itself failed; the request was marked Failed with this message.
    #[error("{0}")]
    Backup(String),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn required_env(name: &str) -> Result<String, JobError> {
    env(name).ok_or_else(|| JobError::Setting(format!("environment variable {name} is not set")))
}

impl JobSettings {
    /// Reads the settings the operator puts in the Job's environment.
    pub fn from_env(request: String) -> Result<(Self, Passphrase), JobError> {
        let wal_archiving = match env("TUSK_WAL_ARCHIVING").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(JobError::Setting(format!(
                    "TUSK_WAL_ARCHIVING must be true or false, not {other:?}"
                )));
            }
        };
        let compression = Compression::from_settings(
            env("TUSK_BACKUP_COMPRESSION").as_deref(),
            env("TUSK_BACKUP_COMPRESSION_LEVEL").as_deref(),
        )
        .map_err(JobError::Setting)?;
        let passphrase = required_env("TUSK_BACKUP_PASSPHRASE")?;
        let settings = Self {
            namespace: required_env("POD_NAMESPACE")?,
            request,
            cluster_uid: required_env("TUSK_CLUSTER_UID")?,
            wal_archiving,
            compression,
            store: StoreConfig::from_env().map_err(|error| JobError::Setting(error.to_string()))?,
            connection: PgConnection::from_env()
                .map_err(|error| JobError::Setting(error.to_string()))?,
            job_name: env("HOSTNAME"),
        };
        Ok((settings, Passphrase(passphrase.into_bytes())))
    }
}

fn now() -> serde_json::Value {
    serde_json::to_value(Time(jiff::Timestamp::now())).unwrap_or(serde_json::Value::Null)
}

async fn patch_status(
    api: &Api<PostgresBackupRequest>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), JobError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
    .map_err(|source| JobError::UpdateStatus {
        name: name.to_owned(),
        source,
    })
}

/// Runs the Job: the request ends Succeeded or Failed unless the API server itself is
/// unreachable (the operator's backup_request controller then fails it when the Job fails).
pub async fn run_job(
    client: Client,
    settings: &JobSettings,
    passphrase: &Passphrase,
) -> Result<(), JobError> {
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), &settings.namespace);
    let request =
        requests
            .get(&settings.request)
            .await
            .map_err(|source| JobError::ReadRequest {
                namespace: settings.namespace.clone(),
                name: settings.request.clone(),
                source,
            })?;
    if request
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(BackupRequestPhase::is_finished)
    {
        tracing::info!(request = %settings.request, "the request has already finished; nothing to do");
        return Ok(());
    }
    let job_name = names::backup_job(&settings.request);
    patch_status(
        &requests,
        &settings.request,
        json!({
            "phase": BackupRequestPhase::Running,
            "startedAt": now(),
            "jobName": job_name,
            "message": "Backing up",
        }),
    )
    .await?;

    match take_backup(&client, settings, passphrase, &request, &requests).await {
        Ok(backup_name) => {
            patch_status(
                &requests,
                &settings.request,
                json!({
                    "phase": BackupRequestPhase::Succeeded,
                    "finishedAt": now(),
                    "backupName": backup_name,
                    "message": format!("Backup {backup_name} is complete"),
                }),
            )
            .await
        }
        Err(message) => {
            tracing::error!(request = %settings.request, %message, "backup failed");
            patch_status(
                &requests,
                &settings.request,
                json!({
                    "phase": BackupRequestPhase::Failed,
                    "finishedAt": now(),
                    "message": message,
                }),
            )
            .await?;
            Err(JobError::Backup(message))
        }
    }
}

/// Streams the backup and records it; the error is the message for the request's status.
async fn take_backup(
    client: &Client,
    settings: &JobSettings,
    passphrase: &Passphrase,
    request: &PostgresBackupRequest,
    requests: &Api<PostgresBackupRequest>,
) -> Result<String, String> {
    let cluster = request.spec.cluster.name.clone();
    let store = BackupStore::new(&settings.store)
        .map_err(|error| format!("Backup storage is misconfigured: {error}"))?;
    let key = names::base_backup_key(
        store.prefix(),
        &settings.namespace,
        &cluster,
        &settings.request,
    );
    let options = BackupOptions {
        compression: settings.compression,
        passphrase: passphrase.0.clone(),
        wal: if settings.wal_archiving {
            WalMode::FromArchive
        } else {
            WalMode::Include
        },
        label: format!("tusk {}/{}", settings.namespace, settings.request),
        pg_basebackup: None,
    };
    let progress = Arc::new(Progress::default());
    let reporter = {
        let progress = progress.clone();
        let requests = requests.clone();
        let name = settings.request.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                ticks.tick().await;
                let current = BackupProgress::new(progress.done(), progress.total());
                if let Err(error) =
                    patch_status(&requests, &name, json!({ "progress": current })).await
                {
                    // Progress is advisory; the backup goes on.
                    tracing::warn!(%error, "cannot report progress");
                }
            }
        })
    };
    let outcome = run_backup(&settings.connection, &store, &key, &options, progress).await;
    reporter.abort();
    let outcome = outcome.map_err(|error| format!("Backup failed: {error}"))?;
    let _ = patch_status(
        requests,
        &settings.request,
        json!({ "progress": BackupProgress::complete(outcome.tar_bytes) }),
    )
    .await;

    let backup = backup_resource(settings, request, &store, &outcome);
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), &settings.namespace);
    match backups.create(&PostParams::default(), &backup).await {
        Ok(_) => Ok(settings.request.clone()),
        // A retried Job whose first attempt got this far: the resource describes this object.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(settings.request.clone()),
        Err(error) => {
            // Without its PostgresBackup nothing would ever delete the object: remove it now.
            if let Err(cleanup) = store.delete_object(&key).await {
                tracing::error!(%key, %cleanup, "cannot delete the unrecorded backup object");
            }
            Err(format!("Cannot record the PostgresBackup: {error}"))
        }
    }
}

/// A duration as people read it: "42s", "3m7s", "1h2m3s".
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// The PostgresBackup describing a finished backup, owned by its cluster.
pub fn backup_resource(
    settings: &JobSettings,
    request: &PostgresBackupRequest,
    store: &BackupStore,
    outcome: &BackupOutcome,
) -> PostgresBackup {
    let cluster = &request.spec.cluster.name;
    let owner = OwnerReference {
        api_version: PostgresCluster::api_version(&()).into_owned(),
        kind: PostgresCluster::kind(&()).into_owned(),
        name: cluster.clone(),
        uid: settings.cluster_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let spec = PostgresBackupSpec {
        cluster: request.spec.cluster.clone(),
        display_name: settings.request.clone(),
        triggered_by: request.spec.triggered_by,
        encryption: BackupEncryption {
            passphrase_secret_ref: SecretKeySelector {
                name: names::credentials_secret(cluster),
                key: names::secret_keys::BACKUP_PASSPHRASE.to_owned(),
            },
            ..BackupEncryption::default()
        },
        s3: S3Location {
            bucket: store.bucket().to_owned(),
            endpoint: store.endpoint().map(str::to_owned),
            path: outcome.key.clone(),
        },
        compression: settings.compression.as_api(),
        size: i64::try_from(outcome.stored_bytes).unwrap_or(i64::MAX),
        run_duration: Some(format_duration(outcome.duration)),
        start_lsn: Some(outcome.wal_range.start_lsn.clone()),
        stop_lsn: Some(outcome.wal_range.stop_lsn.clone()),
        timeline: Some(i64::from(outcome.wal_range.timeline)),
        postgres_version: Some(outcome.postgres_version.clone()),
        deletion_policy: Default::default(),
    };
    PostgresBackup {
        metadata: ObjectMeta {
            name: Some(settings.request.clone()),
            namespace: Some(settings.namespace.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::WalRange;
    use tusk_api::backup_request::PostgresBackupRequestSpec;
    use tusk_api::common::{ClusterReference, TriggeredBy};

    #[test]
    fn backup_resource_is_owned_by_the_cluster_and_names_its_object() {
        let settings = JobSettings {
            namespace: "project-a".into(),
            request: "nightly-1".into(),
            cluster_uid: "0b1c-uid".into(),
            wal_archiving: true,
            compression: Compression::default(),
            store: StoreConfig::default(),
            connection: PgConnection::default(),
            job_name: None,
        };
        let request = PostgresBackupRequest::new(
            "nightly-1",
            PostgresBackupRequestSpec {
                cluster: ClusterReference::new("elephant"),
                triggered_by: TriggeredBy::System,
            },
        );
        let store = BackupStore::new(&StoreConfig {
            url: "s3://backups/tusk".into(),
            endpoint: Some("http://minio:9000".into()),
            ..StoreConfig::default()
        })
        .unwrap();
        let outcome = BackupOutcome {
            key: "tusk/project-a/elephant/base/nightly-1.tar.gz.dare".into(),
            stored_bytes: 1234,
            tar_bytes: 99999,
            wal_range: WalRange {
                timeline: 2,
                start_lsn: "0/5000028".into(),
                stop_lsn: "0/5000100".into(),
            },
            postgres_version: "15.8".into(),
            duration: Duration::from_secs(42),
        };
        let backup = backup_resource(&settings, &request, &store, &outcome);
        let owner = &backup.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("PostgresCluster", "elephant", "0b1c-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(backup.spec.s3.bucket, "backups");
        assert_eq!(
            backup.spec.s3.endpoint.as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(backup.spec.s3.path, outcome.key);
        assert_eq!(
            backup.spec.encryption.passphrase_secret_ref.name,
            "elephant-credentials"
        );
        assert_eq!(
            backup.spec.encryption.passphrase_secret_ref.key,
            "backup-passphrase"
        );
        assert_eq!(backup.spec.size, 1234);
        assert_eq!(backup.spec.timeline, Some(2));
        assert_eq!(backup.spec.start_lsn.as_deref(), Some("0/5000028"));
        assert_eq!(backup.spec.triggered_by, TriggeredBy::System);
        assert_eq!(backup.spec.run_duration.as_deref(), Some("42s"));
        assert_eq!(format_duration(Duration::from_secs(3727)), "1h2m7s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m7s");
    }
}
