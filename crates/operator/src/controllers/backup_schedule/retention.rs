//! `keep`: which of a schedule's backups are beyond the newest N.

use kube::ResourceExt;
use tusk_api::{PostgresBackup, labels, names};

/// Whether `backup` was made by the schedule `schedule` of `cluster`: it carries the schedule's
/// label (its name as a label value), or it is named like one of the schedule's requests (the backup Job names each backup
/// after its request).
pub fn belongs_to(
    backup: &PostgresBackup,
    schedule: &str,
    cluster: &str,
    request_names: &[String],
) -> bool {
    if backup.spec.cluster.name != cluster {
        return false;
    }
    backup.labels().get(labels::SCHEDULE) == Some(&names::label_value(schedule))
        || request_names.iter().any(|name| *name == backup.name_any())
}

/// The backups to delete so that only the newest `keep` remain, oldest first. Backups already
/// being deleted neither count nor are returned.
pub fn beyond_keep(mut backups: Vec<PostgresBackup>, keep: usize) -> Vec<PostgresBackup> {
    backups.retain(|backup| backup.metadata.deletion_timestamp.is_none());
    backups.sort_by_key(|backup| {
        (
            backup
                .metadata
                .creation_timestamp
                .clone()
                .map(|time| time.0),
            backup.name_any(),
        )
    });
    let excess = backups.len().saturating_sub(keep);
    backups.truncate(excess);
    backups
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tusk_api::PostgresBackupSpec;
    use tusk_api::backup::{BackupEncryption, S3Location};
    use tusk_api::common::ClusterReference;

    fn backup(name: &str, created_second: i64) -> PostgresBackup {
        let mut backup = PostgresBackup::new(
            name,
            PostgresBackupSpec {
                cluster: ClusterReference::new("elephant"),
                display_name: String::new(),
                triggered_by: Default::default(),
                encryption: BackupEncryption::default(),
                s3: S3Location::default(),
                compression: Default::default(),
                size: 0,
                sha256: None,
                run_duration: None,
                start_lsn: None,
                stop_lsn: None,
                timeline: None,
                postgres_version: None,
                deletion_policy: Default::default(),
            },
        );
        backup.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created_second).unwrap()));
        backup
    }

    #[test]
    fn the_oldest_beyond_keep_are_chosen() {
        let backups = vec![
            backup("c", 30),
            backup("a", 10),
            backup("d", 40),
            backup("b", 20),
        ];
        let names: Vec<String> = beyond_keep(backups, 2)
            .iter()
            .map(|b| b.name_any())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(beyond_keep(vec![backup("a", 1)], 3).is_empty());
    }

    #[test]
    fn membership_is_by_label_or_request_name() {
        let mut labelled = backup("x", 1);
        labelled
            .labels_mut()
            .insert(labels::SCHEDULE.into(), "default".into());
        assert!(belongs_to(&labelled, "default", "elephant", &[]));
        assert!(!belongs_to(&labelled, "hourly", "elephant", &[]));
        let named = backup("elephant-default-20260101-0000", 1);
        assert!(belongs_to(
            &named,
            "default",
            "elephant",
            &[named.name_any()]
        ));
        assert!(!belongs_to(
            &named,
            "default",
            "other-cluster",
            &[named.name_any()]
        ));
    }
}
