//! A restore's progress, read from the restoring instance's container log.
//!
//! The instance writes progress lines ([`tusk_api::restore_progress`]) to its log; the operator
//! reads the end of that log through the API server (`pods/log`), the only grant this needs,
//! and the pod needs none: it holds no token. The log is the tenant's (whatever runs in the pod
//! can write to it), so the read is bounded in lines, bytes and time, only the last line of the
//! fixed form counts, and what it says only fills two numbers of this cluster's status: bytes
//! done, kept within the backup's recorded size, and the replayed WAL location. The totals and
//! the targets come from the PostgresBackup and the spec. See docs/security.md.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, LogParams};
use tusk_api::cluster::{RestoreProgress, RestoreStage};
use tusk_api::restore_progress::{self, Lsn, Reported};
use tusk_api::{PostgresBackup, PostgresCluster};

/// The instance's container, whose log carries the progress lines.
const CONTAINER: &str = "postgres";
/// How many of the log's last lines are read: the instance writes a progress line every second
/// at least, and PostgreSQL writes about one line per WAL segment meanwhile.
const TAIL_LINES: i64 = 100;
/// The most of the log read at once, whatever the lines' length.
const LIMIT_BYTES: i64 = 32 * 1024;
/// How long a log read may take before it is given up for this round.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the restoring instance `pod` last reported, or `None` when its log says nothing yet or
/// cannot be read (the container is still waiting, say): the status then keeps what it had.
pub async fn read(client: &kube::Client, pod: &Pod) -> Option<Reported> {
    let namespace = pod.namespace()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = LogParams {
        container: Some(CONTAINER.to_owned()),
        tail_lines: Some(TAIL_LINES),
        limit_bytes: Some(LIMIT_BYTES),
        ..LogParams::default()
    };
    let name = pod.name_any();
    match tokio::time::timeout(READ_TIMEOUT, pods.logs(&name, &params)).await {
        Ok(Ok(log)) => restore_progress::latest(&log),
        Ok(Err(error)) => {
            tracing::debug!(pod = %name, %namespace, %error, "cannot read the restore's progress");
            None
        }
        Err(_) => {
            tracing::debug!(pod = %name, %namespace, "reading the restore's progress timed out");
            None
        }
    }
}

/// The status of a restore from what the instance reported (`None`: keep `previous`), the
/// backup it restores and the spec's target.
pub fn progress(
    cluster: &PostgresCluster,
    backup: Option<&PostgresBackup>,
    reported: Option<Reported>,
    previous: Option<&RestoreProgress>,
) -> Option<RestoreProgress> {
    let Some(reported) = reported else {
        return previous.cloned();
    };
    let restore = cluster.spec.restore.as_ref()?;
    let bytes_total = backup
        .map(|backup| backup.spec.size)
        .filter(|size| *size > 0);
    let target_lsn = restore.target_lsn.clone().or_else(|| {
        (restore.target_time.is_none() && !restore.latest)
            .then(|| backup?.spec.stop_lsn.clone())
            .flatten()
    });
    let target_time = restore.target_time.clone();
    let target = target_lsn
        .clone()
        .or_else(|| target_time.as_ref().map(|time| time.0.to_string()));
    Some(match reported {
        Reported::BaseBackup(done) => {
            let done = i64::try_from(done).unwrap_or(i64::MAX);
            let done = bytes_total.map_or(done, |total| done.min(total));
            RestoreProgress {
                stage: RestoreStage::BaseBackup,
                bytes_done: Some(done),
                bytes_total,
                replayed_lsn: None,
                summary: match bytes_total {
                    Some(total) => format!("base backup {} of {}", mib(done), mib(total)),
                    None => format!("base backup {}", mib(done)),
                },
                target_lsn,
                target_time,
            }
        }
        Reported::WalReplay(lsn) => RestoreProgress {
            stage: RestoreStage::WalReplay,
            bytes_done: bytes_total,
            bytes_total,
            replayed_lsn: Some(lsn.to_string()),
            summary: match &target {
                Some(target) => format!("WAL replayed to {lsn} of {target}"),
                None => format!("WAL replayed to {lsn}, to the end of the archive"),
            },
            target_lsn: target_lsn.and_then(|text| Lsn::parse(&text).map(|lsn| lsn.to_string())),
            target_time,
        },
    })
}

/// Bytes in MiB with one decimal, as a person reads them.
fn mib(bytes: i64) -> String {
    // Precision beyond what a person reads is of no use here.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::cluster::{BackupReference, RestoreSource};

    fn cluster(restore: RestoreSource) -> PostgresCluster {
        let mut cluster: PostgresCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "copy", "namespace": "shop"},
            "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 1}
        }))
        .unwrap();
        cluster.spec.restore = Some(restore);
        cluster
    }

    fn backup(size: i64, stop_lsn: &str) -> PostgresBackup {
        let mut backup: PostgresBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackup",
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {"cluster": {"name": "source"},
                     "encryption": {"passphraseSecretRef": {"name": "s", "key": "k"}},
                     "s3": {"bucket": "b", "path": "p"}}
        }))
        .unwrap();
        backup.spec.size = size;
        backup.spec.stop_lsn = Some(stop_lsn.to_owned());
        backup
    }

    fn as_taken() -> RestoreSource {
        RestoreSource {
            backup: BackupReference {
                name: "nightly".to_owned(),
            },
            target_time: None,
            target_lsn: None,
            latest: false,
        }
    }

    #[test]
    fn bytes_done_never_exceed_the_recorded_size() {
        let progress = progress(
            &cluster(as_taken()),
            Some(&backup(10 * 1024 * 1024, "0/3000100")),
            Some(Reported::BaseBackup(u64::MAX)),
            None,
        )
        .unwrap();
        assert_eq!(progress.bytes_done, Some(10 * 1024 * 1024));
        assert_eq!(progress.summary, "base backup 10.0 MiB of 10.0 MiB");
        assert_eq!(progress.target_lsn.as_deref(), Some("0/3000100"));
    }

    #[test]
    fn replay_names_its_target_and_silence_keeps_what_was_known() {
        let backup = backup(1024, "0/3000100");
        let replaying = progress(
            &cluster(as_taken()),
            Some(&backup),
            Some(Reported::WalReplay(Lsn(0x200_0028))),
            None,
        )
        .unwrap();
        assert_eq!(replaying.replayed_lsn.as_deref(), Some("0/2000028"));
        assert_eq!(replaying.summary, "WAL replayed to 0/2000028 of 0/3000100");
        let kept = progress(&cluster(as_taken()), Some(&backup), None, Some(&replaying));
        assert_eq!(kept.as_ref(), Some(&replaying));

        let latest = RestoreSource {
            latest: true,
            ..as_taken()
        };
        let to_the_end = progress(
            &cluster(latest),
            Some(&backup),
            Some(Reported::WalReplay(Lsn(0x200_0028))),
            None,
        )
        .unwrap();
        assert_eq!(to_the_end.target_lsn, None);
        assert!(to_the_end.summary.ends_with("to the end of the archive"));
    }
}
