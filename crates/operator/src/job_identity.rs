//! The identity of a Job tusk runs in a tenant's namespace: a ServiceAccount of its own, a Role
//! whose rules name the one object the Job may touch (`resourceNames`), and the RoleBinding
//! between them, all owned by what the Job works for so that they go with it. Anyone who can
//! create pods in the namespace can obtain the Job's token, so the token reaches that one
//! object and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PodSpec, PodTemplateSpec,
    SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use tusk_api::names;

use crate::controllers::cluster::build::{
    plain_env, restricted_container_security, restricted_pod_security,
};
use crate::controllers::cluster::tls;
use crate::error::{Error, Result};

/// The name and namespace of what a Job works for, and the controller ownerReference that
/// makes the Job and its identity go with it. `kind` names it in errors.
pub fn owner_of<K>(object: &K, kind: &'static str) -> Result<(String, String, OwnerReference)>
where
    K: Resource<DynamicType = ()>,
{
    let namespace = object.namespace().ok_or(Error::MissingObjectKey {
        kind,
        field: "namespace",
    })?;
    let owner = object
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey { kind, field: "uid" })?;
    Ok((object.name_any(), namespace, owner))
}

/// Where and for what a Job's identity is made.
pub struct JobIdentity<'a> {
    /// The name of the ServiceAccount, Role and RoleBinding (the Job's own name).
    pub name: &'a str,
    /// Their namespace.
    pub namespace: &'a str,
    /// What they belong to.
    pub owner: &'a OwnerReference,
    /// Their labels.
    pub labels: BTreeMap<String, String>,
}

impl JobIdentity<'_> {
    /// The ServiceAccount, the Role granting `rules` on `resource_name` only, and the
    /// RoleBinding of the Role to the ServiceAccount.
    pub fn build(
        &self,
        rules: Vec<PolicyRule>,
        resource_name: &str,
    ) -> (ServiceAccount, Role, RoleBinding) {
        let meta = || ObjectMeta {
            name: Some(self.name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        };
        let role = Role {
            metadata: meta(),
            rules: Some(
                rules
                    .into_iter()
                    .map(|rule| PolicyRule {
                        resource_names: Some(vec![resource_name.to_owned()]),
                        ..rule
                    })
                    .collect(),
            ),
        };
        let binding = RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: self.name.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: self.name.to_owned(),
                namespace: Some(self.namespace.to_owned()),
                ..Subject::default()
            }]),
        };
        let service_account = ServiceAccount {
            metadata: meta(),
            ..ServiceAccount::default()
        };
        (service_account, role, binding)
    }
}

/// Where a Job that connects to a database finds its cluster's CA certificate.
pub const CA_MOUNT: &str = "/etc/tusk-ca";

/// The libpq variables that point a Job at `cluster`'s database in `namespace`, over TLS that
/// verifies the server (`sslmode=verify-full`) against the cluster's CA at [`CA_MOUNT`]. The
/// address is the kubelet's service link, expanded by the kubelet, so no cluster DNS is
/// needed; the name verified is the Service's, which the server certificate carries.
pub fn database_env(cluster: &str, namespace: &str) -> Vec<EnvVar> {
    let service = names::read_write_service(cluster);
    vec![
        plain_env("PGHOST", format!("{service}.{namespace}.svc")),
        plain_env(
            "PGHOSTADDR",
            format!("$({})", names::service_host_env(&service)),
        ),
        plain_env("PGPORT", names::POSTGRES_PORT.to_string()),
        plain_env("PGSSLMODE", "verify-full"),
        plain_env("PGSSLROOTCERT", format!("{CA_MOUNT}/{}", tls::CA_CERT_KEY)),
    ]
}

/// A Job that runs `container` once as the ServiceAccount `account`, under the restricted
/// security profile with a writable /tmp of its own and, read-only, the CA certificate of
/// `database_cluster` (from its `<cluster>-tls` Secret, the key left out). It is never
/// retried (a retry would start over from scratch; what it works for fails instead and is asked
/// for again) and stops after `active_deadline_seconds`. The last lines of its output become
/// the termination message, which the operator copies into the status when the Job fails.
/// The pod template carries the Job's labels.
pub fn run_once_job(
    metadata: ObjectMeta,
    account: String,
    active_deadline_seconds: i64,
    container: Container,
    database_cluster: &str,
) -> Job {
    let container = Container {
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "ca".to_owned(),
                mount_path: CA_MOUNT.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..container
    };
    let pod_labels = metadata.labels.clone();
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: pod_labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    service_account_name: Some(account),
                    security_context: Some(restricted_pod_security()),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "tmp".to_owned(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                        Volume {
                            name: "ca".to_owned(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names::tls_secret(database_cluster)),
                                items: Some(vec![KeyToPath {
                                    key: tls::CA_CERT_KEY.to_owned(),
                                    path: tls::CA_CERT_KEY.to_owned(),
                                    ..KeyToPath::default()
                                }]),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
