//! The backup Job of a request and its own ServiceAccount, Role and RoleBinding, as plain
//! values. Each request gets its own identity so that the Job's token (which anyone who can
//! create pods in the namespace can also obtain) reaches that one request and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, KeyToPath, SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use tusk_api::names::{self, secret_keys};
use tusk_api::{GROUP, PostgresBackupRequest, PostgresCluster, labels as api_labels};

use crate::config::OperatorConfig;
use crate::controllers::cluster::build::{
    REPLICATION_ROLE, TLS_FILE_MODE, plain_env, pod_namespace_env, secret_env, store_env,
};
use crate::controllers::cluster::{client_certs, tls};
use crate::error::{Error, Result};
use crate::job_identity::{JobIdentity, database_env, owner_of, run_once_job};
use crate::labels::{self, COMPONENT_BACKUP};

/// A request's name, namespace, and the ownerReference that makes its children go with it.
fn identity(request: &PostgresBackupRequest) -> Result<(String, String, OwnerReference)> {
    owner_of(request, "PostgresBackupRequest")
}

/// The Job that takes the backup `request` asks for, following the contract with
/// `tusk backup run`: no credential in its arguments or in plain environment values.
pub fn job(
    request: &PostgresBackupRequest,
    cluster: &PostgresCluster,
    config: &OperatorConfig,
) -> Result<Job> {
    let (request_name, namespace, owner) = identity(request)?;
    let cluster_name = cluster.name_any();
    let cluster_uid = cluster.uid().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "uid",
    })?;
    let credentials = names::credentials_secret(&cluster_name);
    let mut job_labels = labels::for_cluster(&cluster_name, COMPONENT_BACKUP);
    // A request's name may be longer than a label value may be.
    job_labels.insert(
        api_labels::BACKUP_REQUEST.to_owned(),
        names::label_value(&request_name),
    );

    let mut environment = vec![
        pod_namespace_env(),
        plain_env("TUSK_CLUSTER_UID", cluster_uid),
        plain_env("TUSK_WAL_ARCHIVING", cluster.spec.wal_archiving.to_string()),
    ];
    environment.extend(store_env(&cluster_name, config));
    // The database over verified TLS, through the Service's address and name.
    environment.extend(database_env(&cluster_name, &namespace));
    environment.extend([
        secret_env(
            "TUSK_BACKUP_PASSPHRASE",
            credentials,
            secret_keys::BACKUP_PASSPHRASE,
            false,
        ),
        // The replication role: pg_basebackup needs nothing more. Its name is the cluster's
        // constant, not the Secret's copy. It logs in with its client certificate: pg_hba.conf
        // admits it with no password.
        plain_env("PGUSER", REPLICATION_ROLE.to_owned()),
        plain_env(
            "PGSSLCERT",
            format!("{CLIENT_CERTIFICATE_MOUNT}/{}", tls::TLS_CERT_KEY),
        ),
        plain_env(
            "PGSSLKEY",
            format!("{CLIENT_CERTIFICATE_MOUNT}/{}", tls::TLS_KEY_KEY),
        ),
        plain_env(
            "TUSK_BACKUP_COMPRESSION",
            config.backup_job.compression.clone(),
        ),
        plain_env(
            "TUSK_BACKUP_COMPRESSION_LEVEL",
            config.backup_job.compression_level.to_string(),
        ),
        plain_env(BACKUP_MMAP_THRESHOLD.0, BACKUP_MMAP_THRESHOLD.1),
    ]);

    let container = Container {
        name: "backup".to_owned(),
        image: Some(config.backup_job.image.clone()),
        command: Some(vec![
            "tusk".to_owned(),
            "backup".to_owned(),
            "run".to_owned(),
            "--request".to_owned(),
            request_name.clone(),
        ]),
        env: Some(environment),
        ..Container::default()
    };
    let metadata = ObjectMeta {
        name: Some(names::backup_job(&request_name)),
        namespace: Some(namespace),
        labels: Some(job_labels),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let mut job = run_once_job(
        metadata,
        names::backup_job_account(&request_name),
        i64::try_from(config.backup_job.active_deadline.as_secs()).unwrap_or(i64::MAX),
        container,
        &cluster_name,
    );
    // The longer TTL until the operator has recorded a success (see `backupJob.failedTtl`).
    if let Some(spec) = job.spec.as_mut() {
        spec.ttl_seconds_after_finished = Some(config.backup_job.failed_ttl_seconds());
    }
    mount_client_certificate(&mut job, &cluster_name);
    Ok(job)
}

/// glibc's malloc tunable that the backup Job's container sets, and its value (1 MiB).
///
/// By default glibc raises its mmap threshold to the largest block freed so far, so once a
/// backup has freed its first 1 MiB batch read from pg_basebackup, every later batch and the
/// compressors' contexts come from the heap, between smaller buffers that keep it from
/// shrinking. The backup's peak RSS then varied by 10 MiB between identical runs (53-64 MiB on
/// S3). With the threshold fixed at 1 MiB those blocks get mappings of their own, returned
/// whole when freed, and the peak stayed at 50-52 MiB. The restore's Job does not set it: the
/// restore frees a frame's plaintext per frame, and with 2 MiB frames mapping and unmapping
/// each one cost it a third more CPU.
pub const BACKUP_MMAP_THRESHOLD: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "1048576");

/// Where a backup Job finds the replication role's client certificate and key.
pub const CLIENT_CERTIFICATE_MOUNT: &str = "/etc/tusk-client-certificate";

/// Mounts the replication role's client certificate and key (from
/// `<cluster>-replication-tls`, mode 0600 as libpq demands of a key) into the Job's container.
fn mount_client_certificate(job: &mut Job, cluster: &str) {
    let Some(pod) = job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return;
    };
    let volume = "client-certificate";
    pod.volumes.get_or_insert_default().push(Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(client_certs::replication_secret(cluster)),
            default_mode: Some(TLS_FILE_MODE),
            items: Some(
                [tls::TLS_CERT_KEY, tls::TLS_KEY_KEY]
                    .into_iter()
                    .map(|key| KeyToPath {
                        key: key.to_owned(),
                        path: key.to_owned(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    for container in &mut pod.containers {
        container
            .volume_mounts
            .get_or_insert_default()
            .push(VolumeMount {
                name: volume.to_owned(),
                mount_path: CLIENT_CERTIFICATE_MOUNT.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
}

/// The rules of a backup Job's Role, without the request's name: read its request and report
/// on it. Nothing else: no Secrets (the kubelet hands the Job its credentials), no other
/// request, and no PostgresBackup, which only the operator records after checking the store.
pub fn backup_job_rules() -> Vec<PolicyRule> {
    let rule = |resource: &str, verb: &str| PolicyRule {
        api_groups: Some(vec![GROUP.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: vec![verb.to_owned()],
        ..PolicyRule::default()
    };
    vec![
        rule("postgresbackuprequests", "get"),
        rule("postgresbackuprequests/status", "patch"),
    ]
}

/// The ServiceAccount, Role and RoleBinding of one request's backup Job, owned by the request
/// so that they go with it. The Role names the request in `resourceNames`: the token can read
/// and report on that request only.
pub fn rbac(request: &PostgresBackupRequest) -> Result<(ServiceAccount, Role, RoleBinding)> {
    let (request_name, namespace, owner) = identity(request)?;
    let identity = JobIdentity {
        name: &names::backup_job_account(&request_name),
        namespace: &namespace,
        owner: &owner,
        labels: BTreeMap::from([
            (
                api_labels::MANAGED_BY.to_owned(),
                api_labels::MANAGED_BY_VALUE.to_owned(),
            ),
            (
                api_labels::COMPONENT.to_owned(),
                COMPONENT_BACKUP.to_owned(),
            ),
        ]),
    };
    Ok(identity.build(backup_job_rules(), &request_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::PostgresBackupRequestSpec;
    use tusk_api::common::ClusterReference;

    fn request() -> PostgresBackupRequest {
        let mut request = PostgresBackupRequest::new(
            "my-backup",
            PostgresBackupRequestSpec {
                cluster: ClusterReference::new("elephant"),
            },
        );
        request.metadata.namespace = Some("project-a".into());
        request.metadata.uid = Some("request-uid".into());
        request
    }

    fn cluster() -> PostgresCluster {
        let mut cluster = crate::controllers::cluster::build::tests::elephant();
        cluster.metadata.uid = Some("cluster-uid".into());
        cluster
    }

    fn config() -> OperatorConfig {
        OperatorConfig::from_yaml(
            "store:\n  url: s3://backups/x\n  endpoint: http://127.0.0.1:9000\n  allowHttp: true\n  credentials:\n    namespace: tusk-system\n    name: store\nbackupJob:\n  image: example/tusk:1\n  activeDeadline: 2h\n",
        )
        .unwrap()
    }

    fn env_of(job: &Job) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn the_job_follows_the_contract() {
        let job = job(&request(), &cluster(), &config()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("my-backup-backup"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PostgresBackupRequest", "request-uid")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(7200));
        // Until the operator has recorded a success, the Job keeps the failure's longer TTL.
        assert_eq!(spec.ttl_seconds_after_finished, Some(24 * 3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("my-backup-backup")
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(
            container.command.clone().unwrap(),
            ["tusk", "backup", "run", "--request", "my-backup"]
        );
        assert_eq!(container.image.as_deref(), Some("example/tusk:1"));

        let env = env_of(&job);
        let plain = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        let secret = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
                .map(|selector| (selector.name, selector.key))
        };
        assert_eq!(plain("TUSK_CLUSTER_UID").as_deref(), Some("cluster-uid"));
        // glibc keeps the backup's large buffers out of its heap (see BACKUP_MMAP_THRESHOLD).
        assert_eq!(plain("MALLOC_MMAP_THRESHOLD_").as_deref(), Some("1048576"));
        assert_eq!(plain("TUSK_WAL_ARCHIVING").as_deref(), Some("true"));
        assert_eq!(plain("TUSK_STORE_URL").as_deref(), Some("s3://backups/x"));
        // The Job reaches the store through the operator's gateway, never the store itself.
        assert_eq!(
            plain("TUSK_STORE_ENDPOINT").as_deref(),
            Some("http://tusk-store-gateway.tusk-system.svc:9000")
        );
        assert_eq!(plain("TUSK_STORE_ALLOW_HTTP").as_deref(), Some("true"));
        // The Service's address from its service link, its name verified against the
        // cluster's CA, of which the Job sees the certificate only.
        assert_eq!(
            plain("PGHOST").as_deref(),
            Some("elephant-rw.project-a.svc")
        );
        assert_eq!(
            plain("PGHOSTADDR").as_deref(),
            Some("$(ELEPHANT_RW_SERVICE_HOST)")
        );
        assert_eq!(plain("PGPORT").as_deref(), Some("5432"));
        assert_eq!(plain("PGSSLMODE").as_deref(), Some("verify-full"));
        assert_eq!(
            plain("PGSSLROOTCERT").as_deref(),
            Some("/etc/tusk-ca/ca.crt")
        );
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let ca = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|volume| volume.secret.as_ref())
            .unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("elephant-tls"));
        let items: Vec<&str> = ca
            .items
            .iter()
            .flatten()
            .map(|item| item.key.as_str())
            .collect();
        assert_eq!(items, ["ca.crt"], "the Job must not see the server key");
        assert_eq!(plain("TUSK_BACKUP_COMPRESSION").as_deref(), Some("gzip"));
        assert_eq!(
            secret("TUSK_BACKUP_PASSPHRASE"),
            Some(("elephant-credentials".into(), "backup-passphrase".into()))
        );
        // The replication role logs in with its client certificate, never a password.
        assert!(env.iter().all(|e| e.name != "PGPASSWORD"));
        assert_eq!(
            plain("PGSSLCERT").as_deref(),
            Some("/etc/tusk-client-certificate/tls.crt")
        );
        assert_eq!(
            plain("PGSSLKEY").as_deref(),
            Some("/etc/tusk-client-certificate/tls.key")
        );
        let client = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|volume| volume.name == "client-certificate")
            .and_then(|volume| volume.secret.as_ref())
            .unwrap();
        assert_eq!(
            client.secret_name.as_deref(),
            Some("elephant-replication-tls")
        );
        assert_eq!(client.default_mode, Some(0o600));
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == "client-certificate")
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/tusk-client-certificate");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            secret("AWS_SECRET_ACCESS_KEY"),
            Some(("elephant-backup-store".into(), "secret-access-key".into()))
        );
        let namespace = env.iter().find(|e| e.name == "POD_NAMESPACE").unwrap();
        assert_eq!(
            namespace
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.namespace"
        );
        // Credentials only ever by reference.
        for name in [
            "PGPASSWORD",
            "TUSK_BACKUP_PASSPHRASE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert_eq!(plain(name), None, "{name} must come from a Secret");
        }
    }

    #[test]
    fn the_role_allows_exactly_what_the_job_does_on_its_own_request() {
        let (account, role, binding) = rbac(&request()).unwrap();
        assert_eq!(account.metadata.name.as_deref(), Some("my-backup-backup"));
        let mut granted: Vec<(String, String, Vec<String>)> = role
            .rules
            .unwrap()
            .into_iter()
            .flat_map(|rule| {
                assert_eq!(
                    rule.api_groups.as_deref(),
                    Some(&["postgres.tusk.dev".to_string()][..])
                );
                let names = rule.resource_names.clone().unwrap_or_default();
                let verbs = rule.verbs.clone();
                rule.resources
                    .unwrap()
                    .into_iter()
                    .flat_map(move |resource| {
                        let names = names.clone();
                        verbs
                            .clone()
                            .into_iter()
                            .map(move |verb| (resource.clone(), verb, names.clone()))
                    })
            })
            .collect();
        granted.sort();
        let own = vec!["my-backup".to_string()];
        assert_eq!(
            granted,
            [
                ("postgresbackuprequests".into(), "get".into(), own.clone()),
                ("postgresbackuprequests/status".into(), "patch".into(), own),
            ]
        );
        for owners in [
            &account.metadata.owner_references,
            &role.metadata.owner_references,
            &binding.metadata.owner_references,
        ] {
            assert_eq!(owners.as_ref().unwrap()[0].uid, "request-uid");
        }
        assert_eq!(binding.role_ref.name, "my-backup-backup");
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(subject.name, "my-backup-backup");
        assert_eq!(subject.namespace.as_deref(), Some("project-a"));
    }
}
