//! The throwaway cluster of a restore test and the Job that checks it, as plain values.
//!
//! The throwaway is a PostgresCluster controlled by the PostgresRestoreTest, so it goes when
//! the test goes; the check Job and its ServiceAccount, Role and RoleBinding are controlled by
//! the throwaway, so they go with it. The Job's token may patch the status of its own
//! PostgresRestoreTest and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use tusk_api::cluster::{BackupReference, RestoreSource};
use tusk_api::names::{self, secret_keys};
use tusk_api::restore_test::{self, RESTORE_TEST_LABEL};
use tusk_api::{GROUP, PostgresBackup, PostgresCluster, PostgresClusterSpec, PostgresRestoreTest};

use crate::config::OperatorConfig;
use crate::controllers::cluster::build::{OWNER_ROLE, plain_env, pod_namespace_env, secret_env};
use crate::error::{Error, Result};
use crate::job_identity::{JobIdentity, database_env, owner_of, run_once_job};
use crate::labels;

/// The component label value of a throwaway cluster's check Job.
pub const COMPONENT_RESTORE_TEST: &str = "restore-test";

/// The settings a restore must copy from the source: PostgreSQL refuses to recover WAL written
/// with a larger value of any of them than its own.
pub const RECOVERY_PARAMETERS: [&str; 4] = [
    "max_connections",
    "max_worker_processes",
    "max_prepared_transactions",
    "max_locks_per_transaction",
];

/// Whether `cluster` is a restore test's throwaway: its controller is a PostgresRestoreTest.
/// Such a cluster gets no backup schedule.
pub fn is_throwaway(cluster: &PostgresCluster) -> bool {
    cluster
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| {
            owner.controller == Some(true)
                && owner.kind == "PostgresRestoreTest"
                && owner.api_version.starts_with(&format!("{GROUP}/"))
        })
}

/// Whether `object` is controlled by the object of uid `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

/// The throwaway PostgresCluster that restores `backup`, the newest backup of `source`: as
/// small as the data allows (1 GiB of memory, the source's disk), no WAL archiving, and the
/// source's version and recovery settings. Without a target, the backup is restored exactly
/// as it was taken.
pub fn throwaway_cluster(
    test: &PostgresRestoreTest,
    source: &PostgresCluster,
    backup: &PostgresBackup,
) -> Result<PostgresCluster> {
    let owner = test
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey {
            kind: "PostgresRestoreTest",
            field: "uid",
        })?;
    let name = restore_test::throwaway_cluster(&test.name_any());
    let parameters = source
        .spec
        .parameters
        .iter()
        .filter(|(key, _)| RECOVERY_PARAMETERS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut cluster = PostgresCluster::new(
        &name,
        PostgresClusterSpec {
            display_name: format!("Restore test of {}", source.name_any()),
            memory_size: 1,
            postgres_disk_size: source.spec.postgres_disk_size,
            wal_archiving: false,
            postgres_version: source.spec.postgres_version.clone(),
            parameters,
            restore: Some(RestoreSource {
                backup: BackupReference {
                    name: backup.name_any(),
                },
                target_time: None,
                target_lsn: None,
                latest: false,
            }),
            tls: None,
            // A throwaway copy is never reachable from outside.
            external_access: None,
        },
    );
    cluster.metadata.namespace = test.namespace();
    cluster.metadata.labels = Some(test_labels(test, &name));
    cluster.metadata.owner_references = Some(vec![owner]);
    Ok(cluster)
}

fn test_labels(test: &PostgresRestoreTest, throwaway: &str) -> BTreeMap<String, String> {
    let mut labels = labels::for_cluster(throwaway, COMPONENT_RESTORE_TEST);
    labels.insert(
        RESTORE_TEST_LABEL.to_owned(),
        names::label_value(&test.name_any()),
    );
    labels
}

/// The Job running `tusk restore-test check` against the throwaway: it logs in as the
/// throwaway's owner role (the supervisor of a throwaway grants that role amcheck), reports
/// on the test's status, and holds no credential in its arguments or plain environment.
pub fn check_job(
    test: &PostgresRestoreTest,
    throwaway: &PostgresCluster,
    config: &OperatorConfig,
) -> Result<Job> {
    let (throwaway_name, namespace, owner) = owner_of(throwaway, "PostgresCluster")?;
    let run_id = throwaway.uid().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "uid",
    })?;
    let job_name = restore_test::check_job(&throwaway_name);
    let job_labels = test_labels(test, &throwaway_name);
    let mut environment = vec![pod_namespace_env()];
    // The throwaway over verified TLS, through its Service's address and name.
    environment.extend(database_env(&throwaway_name, &namespace));
    environment.extend([
        plain_env("PGUSER", OWNER_ROLE),
        plain_env("PGDATABASE", OWNER_ROLE),
        secret_env(
            "PGPASSWORD",
            names::credentials_secret(&throwaway_name),
            secret_keys::PASSWORD,
            false,
        ),
    ]);
    let container = Container {
        name: "check".to_owned(),
        image: Some(config.backup_job.image.clone()),
        command: Some(vec![
            "tusk".to_owned(),
            "restore-test".to_owned(),
            "check".to_owned(),
            "--test".to_owned(),
            test.name_any(),
            "--run-id".to_owned(),
            run_id,
        ]),
        env: Some(environment),
        ..Container::default()
    };
    let metadata = ObjectMeta {
        name: Some(job_name.clone()),
        namespace: Some(namespace),
        labels: Some(job_labels),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let deadline = i64::from(test.spec.timeout_minutes()) * 60;
    let mut job = run_once_job(metadata, job_name, deadline, container, &throwaway_name);
    // The throwaway's deletion at the end of the run takes the Job along; should the
    // throwaway stay (its deletion failed, the operator is gone), the Job and its pod still go
    // once finished, after the longer backup Job TTL, so that the run's outcome is read first
    // and a failed check's logs can be read.
    if let Some(spec) = job.spec.as_mut() {
        spec.ttl_seconds_after_finished = Some(config.backup_job.failed_ttl_seconds());
    }
    Ok(job)
}

/// The rules of a check Job's Role, without the test's name: report on the test's status.
/// Nothing else: no Secrets (the kubelet hands the Job its password), no cluster, no backup.
pub fn check_job_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec![GROUP.to_owned()]),
        resources: Some(vec!["postgresrestoretests/status".to_owned()]),
        verbs: vec!["patch".to_owned()],
        ..PolicyRule::default()
    }]
}

/// The ServiceAccount, Role and RoleBinding of a throwaway's check Job, controlled by the
/// throwaway. The Role names the test in `resourceNames`.
pub fn check_rbac(
    test: &PostgresRestoreTest,
    throwaway: &PostgresCluster,
) -> Result<(ServiceAccount, Role, RoleBinding)> {
    let (throwaway_name, namespace, owner) = owner_of(throwaway, "PostgresCluster")?;
    let identity = JobIdentity {
        name: &restore_test::check_job(&throwaway_name),
        namespace: &namespace,
        owner: &owner,
        labels: test_labels(test, &throwaway_name),
    };
    Ok(identity.build(check_job_rules(), &test.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::PostgresRestoreTestSpec;
    use tusk_api::common::ClusterReference;

    fn test() -> PostgresRestoreTest {
        let mut test = PostgresRestoreTest::new(
            "nightly",
            PostgresRestoreTestSpec {
                cluster: ClusterReference::new("elephant"),
                interval: 24,
                max_data_age_minutes: None,
                timeout_minutes: Some(5),
                suspend: false,
            },
        );
        test.metadata.namespace = Some("project-a".into());
        test.metadata.uid = Some("test-uid".into());
        test
    }

    fn backup() -> PostgresBackup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "postgres.tusk.dev/v1",
            "kind": "PostgresBackup",
            "metadata": {"name": "elephant-default-1", "namespace": "project-a"},
            "spec": {
                "cluster": {"name": "elephant"},
                "encryption": {"passphraseSecretRef": {"name": "elephant-credentials", "key": "backup-passphrase"}},
                "s3": {"bucket": "backups", "path": "x/base/uid.tar.gz.dare"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_throwaway_restores_the_backup_as_taken_and_belongs_to_the_test() {
        let mut source = crate::controllers::cluster::build::tests::elephant();
        source
            .spec
            .parameters
            .insert("max_connections".into(), "300".into());
        source
            .spec
            .parameters
            .insert("work_mem".into(), "64MB".into());
        let throwaway = throwaway_cluster(&test(), &source, &backup()).unwrap();
        assert_eq!(
            throwaway.metadata.name.as_deref(),
            Some("nightly-restore-test")
        );
        assert!(is_throwaway(&throwaway));
        assert!(!is_throwaway(&source));
        assert!(controlled_by(&throwaway.metadata, "test-uid"));
        let spec = &throwaway.spec;
        assert!(!spec.wal_archiving);
        assert_eq!(spec.memory_size, 1);
        assert_eq!(spec.postgres_disk_size, source.spec.postgres_disk_size);
        let restore = spec.restore.as_ref().unwrap();
        assert_eq!(restore.backup.name, "elephant-default-1");
        assert!(restore.target_time.is_none() && restore.target_lsn.is_none() && !restore.latest);
        assert_eq!(
            spec.parameters.keys().collect::<Vec<_>>(),
            ["max_connections"]
        );
        let labels = throwaway.metadata.labels.unwrap();
        assert_eq!(labels[RESTORE_TEST_LABEL], "nightly");
    }

    #[test]
    fn the_check_job_reports_on_its_own_test_only() {
        let source = crate::controllers::cluster::build::tests::elephant();
        let mut throwaway = throwaway_cluster(&test(), &source, &backup()).unwrap();
        throwaway.metadata.uid = Some("throwaway-uid".into());
        let config = OperatorConfig::from_yaml(
            "store:\n  url: s3://backups/x\n  endpoint: http://127.0.0.1:9000\n  allowHttp: true\n  credentials:\n    namespace: tusk-system\n    name: store\nbackupJob:\n  image: example/tusk:1\n  activeDeadline: 2h\n",
        )
        .unwrap();
        let job = check_job(&test(), &throwaway, &config).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("nightly-restore-test-check")
        );
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].uid,
            "throwaway-uid"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(300));
        // Removed once finished, as backup Jobs are, after the longer of their TTLs.
        assert_eq!(spec.ttl_seconds_after_finished, Some(24 * 3600));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.command.clone().unwrap(),
            [
                "tusk",
                "restore-test",
                "check",
                "--test",
                "nightly",
                "--run-id",
                "throwaway-uid"
            ]
        );
        let env = container.env.clone().unwrap();
        let password = env.iter().find(|e| e.name == "PGPASSWORD").unwrap();
        assert_eq!(password.value, None, "the password comes from a Secret");
        assert_eq!(
            password
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "nightly-restore-test-credentials"
        );

        let (_, role, binding) = check_rbac(&test(), &throwaway).unwrap();
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["postgresrestoretests/status".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["patch"]);
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["nightly".to_owned()][..])
        );
        assert_eq!(binding.role_ref.name, "nightly-restore-test-check");
    }
}
