//! `tusk backup run`: the backup Job. Reads its PostgresBackupRequest, streams the backup under
//! the key tusk expects for that request, and reports progress and what it stored in the
//! request's status, or ends it Failed with a reason a person can act on. Its token may touch
//! nothing else: the operator checks the stored object and records the PostgresBackup.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tusk_api::backup_request::{
    BackupProgress, BackupRequestPhase, BackupResult, PostgresBackupRequest, UploadInProgress,
};
use tusk_api::names;

use crate::backup::{BackupOptions, BackupOutcome, Progress, run_identified_backup};
use crate::compress::Compression;
use crate::sink::UploadStarted;
use crate::source::{PgConnection, WalMode, archiver_failure};
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

/// Writes one of the Job's reports (started, result, failure) into the request's status
/// unless the request has ended or already holds a result, and returns the request as it
/// then is, or `None` when it was left alone. The operator ends a request on its own (a
/// stall, a result it refused) while the Job may still run, and a late report must not put
/// a stale message or result on an ended request. The patch names the resourceVersion it
/// checked, so a change in between makes it conflict, and it is checked again.
async fn report(
    api: &Api<PostgresBackupRequest>,
    mut request: PostgresBackupRequest,
    status: serde_json::Value,
) -> Result<Option<PostgresBackupRequest>, JobError> {
    let name = request.name_any();
    loop {
        let current = request.status.clone().unwrap_or_default();
        if current.phase.is_some_and(BackupRequestPhase::is_finished) || current.result.is_some() {
            return Ok(None);
        }
        let patch = json!({
            "metadata": {"resourceVersion": request.resource_version()},
            "status": status,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(patched) => return Ok(Some(patched)),
            Err(kube::Error::Api(response)) if response.code == 409 => {
                request = api
                    .get(&name)
                    .await
                    .map_err(|source| JobError::UpdateStatus {
                        name: name.clone(),
                        source,
                    })?;
            }
            Err(source) => return Err(JobError::UpdateStatus { name, source }),
        }
    }
}

/// Runs the Job: the request ends Succeeded or Failed unless the API server itself is
/// unreachable (the operator's backup_request controller then fails it when the Job fails).
pub async fn run_job(
    client: Client,
    settings: &JobSettings,
    passphrase: &Passphrase,
) -> Result<(), JobError> {
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client, &settings.namespace);
    let request =
        requests
            .get(&settings.request)
            .await
            .map_err(|source| JobError::ReadRequest {
                namespace: settings.namespace.clone(),
                name: settings.request.clone(),
                source,
            })?;
    let job_name = names::backup_job(&settings.request);
    let started = report(
        &requests,
        request,
        json!({
            "phase": BackupRequestPhase::Running,
            "startedAt": now(),
            "jobName": job_name,
            "message": "Backing up",
        }),
    )
    .await?;
    let Some(request) = started else {
        tracing::info!(request = %settings.request, "the request has already finished; nothing to do");
        return Ok(());
    };

    match take_backup(settings, passphrase, &request, &requests).await {
        Ok(result) => {
            // The request stays Running: the operator checks the object against the store,
            // records the PostgresBackup and only then marks the request Succeeded. The Job's
            // own word is never enough to create a PostgresBackup.
            let reported = report(
                &requests,
                request,
                json!({
                    "result": result,
                    "message": "The backup is stored; tusk is checking it",
                }),
            )
            .await?;
            if reported.is_none() {
                tracing::warn!(request = %settings.request, "the request ended while the backup ran; its result was not reported");
            }
            Ok(())
        }
        Err(message) => {
            tracing::error!(request = %settings.request, %message, "backup failed");
            report(
                &requests,
                request,
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

/// The key a request's backup is stored under: below its cluster's own prefix, named by the
/// request's uid, so that no two requests ever share an object.
pub fn backup_key(
    store: &BackupStore,
    namespace: &str,
    cluster: &str,
    cluster_uid: &str,
    request_uid: &str,
) -> String {
    let cluster_prefix =
        names::cluster_storage_prefix(store.prefix(), namespace, cluster, cluster_uid);
    names::base_backup_key(&cluster_prefix, request_uid)
}

/// Streams the backup; the error is the message for the request's status.
async fn take_backup(
    settings: &JobSettings,
    passphrase: &Passphrase,
    request: &PostgresBackupRequest,
    requests: &Api<PostgresBackupRequest>,
) -> Result<BackupResult, String> {
    let cluster = request.spec.cluster.name.clone();
    let request_uid = request
        .metadata
        .uid
        .clone()
        .ok_or_else(|| "The request has no uid".to_owned())?;
    let store = BackupStore::new(&settings.store)
        .map_err(|error| format!("Backup storage is misconfigured: {error}"))?;
    let key = backup_key(
        &store,
        &settings.namespace,
        &cluster,
        &settings.cluster_uid,
        &request_uid,
    );
    // A pod of this Job that died mid-upload (a retry after a node loss) left its upload
    // recorded here; abort it before starting another, which replaces the record.
    if let Some(leftover) = request
        .status
        .as_ref()
        .and_then(|status| status.upload.as_ref())
        .filter(|upload| upload.key == key)
        && let Err(error) = store.abort_upload(&key, &leftover.upload_id).await
    {
        tracing::warn!(%error, "cannot abort the upload an earlier attempt left; its parts stay until a lifecycle rule removes them");
    }
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
    let reporter = tokio::spawn(report_progress(
        progress.clone(),
        settings.connection.clone(),
        requests.clone(),
        settings.request.clone(),
    ));
    let upload_started: UploadStarted = {
        let requests = requests.clone();
        let name = settings.request.clone();
        let key = key.clone();
        Box::new(move |upload_id| {
            Box::pin(async move {
                let upload = UploadInProgress { key, upload_id };
                if let Err(error) =
                    patch_status(&requests, &name, json!({ "upload": upload })).await
                {
                    // The backup can still succeed; only a kill would now leave parts behind.
                    tracing::warn!(%error, "cannot record the multipart upload's id");
                }
            })
        })
    };
    let outcome = run_identified_backup(
        &settings.connection,
        &store,
        &key,
        &options,
        progress,
        Some(upload_started),
    )
    .await;
    reporter.abort();
    let outcome = outcome.map_err(|error| format!("Backup failed: {error}"))?;
    let _ = patch_status(
        requests,
        &settings.request,
        json!({
            "progress": BackupProgress::complete(outcome.tar_bytes),
            "upload": null,
            "stallCause": null,
        }),
    )
    .await;
    Ok(backup_result(settings, &outcome))
}

/// Writes progress to the request's status every [`PROGRESS_INTERVAL`]. While no progress is
/// made, asks PostgreSQL whether WAL archiving is failing (a backup that takes WAL from the
/// archive waits for it at its end) and records that as the stall's cause.
async fn report_progress(
    progress: Arc<Progress>,
    connection: PgConnection,
    requests: Api<PostgresBackupRequest>,
    name: String,
) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    let mut last_done = None;
    let mut cause_recorded = false;
    loop {
        ticks.tick().await;
        let done = progress.done();
        let mut status = json!({ "progress": BackupProgress::new(done, progress.total()) });
        if last_done == Some(done) {
            match archiver_failure(&connection).await {
                Ok(Some(failure)) => {
                    status["stallCause"] = json!(failure.to_string());
                    cause_recorded = true;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read the archiver's state"),
            }
        } else if cause_recorded {
            status["stallCause"] = serde_json::Value::Null;
            cause_recorded = false;
        }
        last_done = Some(done);
        if let Err(error) = patch_status(&requests, &name, status).await {
            // Progress is advisory; the backup goes on.
            tracing::warn!(%error, "cannot report progress");
        }
    }
}

/// A duration as people read it: "42s", "3m7s", "1h2m3s".
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// What the Job reports of a finished backup.
pub fn backup_result(settings: &JobSettings, outcome: &BackupOutcome) -> BackupResult {
    BackupResult {
        key: outcome.key.clone(),
        size: i64::try_from(outcome.stored_bytes).unwrap_or(i64::MAX),
        sha256: outcome.sha256.clone(),
        compression: settings.compression.as_api(),
        start_lsn: outcome.wal_range.start_lsn.clone(),
        stop_lsn: outcome.wal_range.stop_lsn.clone(),
        timeline: i64::from(outcome.wal_range.timeline),
        postgres_version: outcome.postgres_version.clone(),
        run_duration: format_duration(outcome.duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::WalRange;

    #[test]
    fn the_result_reports_what_was_stored_and_the_key_is_the_requests_own() {
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
        let store = BackupStore::new(&StoreConfig {
            url: "s3://backups/tusk".into(),
            endpoint: Some("http://minio:9000".into()),
            ..StoreConfig::default()
        })
        .unwrap();
        let key = backup_key(&store, "project-a", "elephant", "0b1c-uid", "req-uid");
        assert_eq!(
            key,
            "tusk/project-a/elephant/0b1c-uid/base/req-uid.tar.gz.dare"
        );
        let outcome = BackupOutcome {
            key: key.clone(),
            stored_bytes: 1234,
            sha256: "ab".repeat(32),
            tar_bytes: 99999,
            wal_range: WalRange {
                timeline: 2,
                start_lsn: "0/5000028".into(),
                stop_lsn: "0/5000100".into(),
            },
            postgres_version: "15.8".into(),
            duration: Duration::from_secs(42),
        };
        let result = backup_result(&settings, &outcome);
        assert_eq!(result.key, key);
        assert_eq!(result.size, 1234);
        assert_eq!(result.sha256, "ab".repeat(32));
        assert_eq!(result.timeline, 2);
        assert_eq!(result.start_lsn, "0/5000028");
        assert_eq!(result.stop_lsn, "0/5000100");
        assert_eq!(result.run_duration, "42s");
        assert_eq!(format_duration(Duration::from_secs(3727)), "1h2m7s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m7s");
    }
}
