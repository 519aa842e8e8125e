//! The desired children of a PostgresCluster, as plain values. Nothing here does I/O, so every
//! rule about sizes, probes, security and references is unit-tested below.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretProjection, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use rand::RngExt;
use rand::distr::Alphanumeric;
use tusk_api::common::{ClusterReference, TriggeredBy};
use tusk_api::names::{self, secret_keys};
use tusk_api::{
    PostgresBackup, PostgresBackupSchedule, PostgresBackupScheduleSpec, PostgresCluster,
};
use tusk_backup::gateway::ClusterCredentials;

use super::{postgresql_conf, tls};
use crate::config::{BACKUP_STORE_ACCESS_KEY_ID, BACKUP_STORE_SECRET_ACCESS_KEY, OperatorConfig};
use crate::controllers::restore_test::build::is_throwaway;
use crate::error::{Error, Result};
use crate::labels::{self, COMPONENT_BACKUP, COMPONENT_POSTGRES};

/// The annotation on the pod template holding the hash of restart-requiring settings.
pub const RESTART_HASH_ANNOTATION: &str = "postgres.tusk.dev/restart-config-hash";
/// The volume claim template's name; PVCs are called `data-<cluster>-0`.
pub const DATA_VOLUME: &str = "data";
/// Where the data volume is mounted in the instance.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// Where the ConfigMap is mounted in the instance.
pub const CONFIG_MOUNT: &str = "/etc/tusk";
/// Where the `<cluster>-tls` Secret (server certificate, key and CA) is mounted in the instance.
pub const TLS_MOUNT: &str = "/etc/tusk-tls";
/// The TLS files' mode: PostgreSQL refuses a key that others may read. The kubelet adds group
/// read for the pod's fsGroup and makes root the owner, which PostgreSQL accepts too.
pub const TLS_FILE_MODE: i32 = 0o600;
/// The user and group the instance runs as.
pub const POSTGRES_UID: i64 = 999;
/// The customer's owner role, and its database's name, in every cluster.
pub const OWNER_ROLE: &str = "app";
/// The role the backup Job's pg_basebackup logs in as, in every cluster.
pub const REPLICATION_ROLE: &str = "tusk_replication";

const PASSWORD_LENGTH: usize = 32;
const PASSPHRASE_LENGTH: usize = 48;

/// Everything a cluster owns in the workload cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// `<cluster>-credentials`.
    pub credentials: Secret,
    /// `<cluster>-tls`: the server certificate and key PostgreSQL serves, made by
    /// [`super::tls::server_secret`].
    pub tls: Secret,
    /// `<cluster>-backup-store`: the cluster's own store-gateway credentials, for the instance
    /// (WAL archiving) and the backup Jobs; they reach only this cluster's prefix. Absent for a
    /// `file://` store, which pods use directly.
    pub backup_store: Option<Secret>,
    /// `<cluster>-config`.
    pub config_map: ConfigMap,
    /// `<cluster>-rw`.
    pub service: Service,
    /// `<cluster>-external`, the LoadBalancer `spec.externalAccess.loadBalancer` asks for.
    pub load_balancer: Option<Service>,
    /// `<cluster>`.
    pub stateful_set: StatefulSet,
    /// `<cluster>-default`; none for a restore test's throwaway, which must never take a
    /// backup.
    pub default_schedule: Option<PostgresBackupSchedule>,
}

/// Builds every child of `cluster`. `existing_credentials` is the credentials Secret as it is
/// now: the values in it are kept, so passwords are generated once and never change.
/// `store_credentials` are the cluster's gateway credentials, derived by the caller, and
/// `tls` its `<cluster>-tls` Secret, issued by the caller.
pub fn build(
    cluster: &PostgresCluster,
    config: &OperatorConfig,
    existing_credentials: Option<&Secret>,
    store_credentials: Option<&ClusterCredentials>,
    restore_backup: Option<&PostgresBackup>,
    tls: Secret,
) -> Result<Children> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey {
            kind: "PostgresCluster",
            field: "name",
        })?;
    let owner = controller_owner(cluster)?;
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let external = config.tunnel.router_endpoint(cluster);
    let ca_pem = tls
        .data
        .as_ref()
        .and_then(|data| data.get(tls::CA_CERT_KEY))
        .map(|value| value.0.clone())
        .unwrap_or_default();
    Ok(Children {
        credentials: credentials(
            name,
            namespace,
            &owner,
            existing_credentials,
            ca_pem,
            external.as_ref().map(|(host, port)| (host.as_str(), *port)),
        ),
        tls,
        backup_store: store_credentials.map(|keys| backup_store(name, &owner, keys)),
        config_map: config_map(cluster, name, &owner),
        service: service(name, &owner),
        load_balancer: load_balancer(cluster, name, &owner),
        stateful_set: stateful_set(cluster, name, &owner, config, restore_backup),
        default_schedule: (!is_throwaway(cluster)).then(|| default_schedule(name, &owner)),
    })
}

/// A libpq URI for `role` to its own database at `host:port` that verifies the server's
/// certificate and name (`sslmode=verify-full`); it carries no password.
pub fn verify_full_uri(host: &str, port: u16, role: &str) -> String {
    format!("postgresql://{role}@{host}:{port}/{role}?sslmode=verify-full")
}

/// The JDBC form of [`verify_full_uri`].
pub fn verify_full_jdbc_uri(host: &str, port: u16, role: &str) -> String {
    format!("jdbc:postgresql://{host}:{port}/{role}?user={role}&sslmode=verify-full")
}

/// The controller ownerReference that makes an object the cluster's child.
pub fn controller_owner(cluster: &PostgresCluster) -> Result<OwnerReference> {
    cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey {
            kind: "PostgresCluster",
            field: "uid",
        })
}

fn meta(name: String, owner: &OwnerReference, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn random_string(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// The credentials Secret, keeping every password already present. It lives in the tenant's
/// namespace, so it holds only logins the customer may have: the owner role's and the
/// replication role's, never a superuser's (tusk's management role has no password). The role
/// names in it are for the customer to read; the instance takes them from the pod template.
/// `ca_pem` is the cluster's CA certificate; the `uri` and `jdbc-uri` name the `-rw` Service
/// in `namespace` and verify the server against it (`sslmode=verify-full`). `external`, the
/// router's host and port while the cluster is open to the outside, adds an `external-uri`.
pub fn credentials(
    cluster: &str,
    namespace: &str,
    owner: &OwnerReference,
    existing: Option<&Secret>,
    ca_pem: Vec<u8>,
    external: Option<(&str, u16)>,
) -> Secret {
    let existing_data = existing.and_then(|secret| secret.data.as_ref());
    let existing_value = |key: &str| {
        existing_data
            .and_then(|data| data.get(key))
            .filter(|value| !value.0.is_empty())
            .cloned()
    };
    let keep_or = |key: &str, generate: &dyn Fn() -> Vec<u8>| -> ByteString {
        existing_value(key).unwrap_or_else(|| ByteString(generate()))
    };
    let plain = |value: &str| ByteString(value.as_bytes().to_vec());
    // The namespaced `.svc` name resolves from every namespace, whatever the cluster domain.
    let host = format!("{}.{namespace}.svc", names::read_write_service(cluster));
    let port = names::POSTGRES_PORT;
    let mut data = BTreeMap::from([
        (secret_keys::CA_CERT.to_owned(), ByteString(ca_pem)),
        (
            secret_keys::URI.to_owned(),
            plain(&verify_full_uri(&host, port, OWNER_ROLE)),
        ),
        (
            secret_keys::JDBC_URI.to_owned(),
            plain(&verify_full_jdbc_uri(&host, port, OWNER_ROLE)),
        ),
        (secret_keys::USERNAME.to_owned(), plain(OWNER_ROLE)),
        (
            secret_keys::PASSWORD.to_owned(),
            // A cluster made before the key was renamed keeps its owner's password.
            existing_value(secret_keys::PASSWORD)
                .or_else(|| existing_value(secret_keys::LEGACY_APP_USER_PASSWORD))
                .unwrap_or_else(|| ByteString(random_string(PASSWORD_LENGTH).into_bytes())),
        ),
        (secret_keys::DBNAME.to_owned(), plain(OWNER_ROLE)),
        (
            secret_keys::REPLICATION_USERNAME.to_owned(),
            plain(REPLICATION_ROLE),
        ),
        (
            secret_keys::REPLICATION_PASSWORD.to_owned(),
            keep_or(secret_keys::REPLICATION_PASSWORD, &|| {
                random_string(PASSWORD_LENGTH).into_bytes()
            }),
        ),
        (
            secret_keys::BACKUP_PASSPHRASE.to_owned(),
            keep_or(secret_keys::BACKUP_PASSPHRASE, &|| {
                random_string(PASSPHRASE_LENGTH).into_bytes()
            }),
        ),
    ]);
    if let Some((host, port)) = external {
        data.insert(
            secret_keys::EXTERNAL_URI.to_owned(),
            plain(&verify_full_uri(host, port, OWNER_ROLE)),
        );
    }
    Secret {
        metadata: meta(
            names::credentials_secret(cluster),
            owner,
            labels::for_cluster(cluster, COMPONENT_POSTGRES),
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The name of the Secret holding a cluster's store-gateway credentials.
pub fn backup_store_secret(cluster: &str) -> String {
    format!("{cluster}-backup-store")
}

fn backup_store(cluster: &str, owner: &OwnerReference, keys: &ClusterCredentials) -> Secret {
    Secret {
        metadata: meta(
            backup_store_secret(cluster),
            owner,
            labels::for_cluster(cluster, COMPONENT_BACKUP),
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                BACKUP_STORE_ACCESS_KEY_ID.to_owned(),
                ByteString(keys.access_key_id.clone().into_bytes()),
            ),
            (
                BACKUP_STORE_SECRET_ACCESS_KEY.to_owned(),
                ByteString(keys.secret_access_key.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

fn config_map(cluster: &PostgresCluster, name: &str, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: meta(
            names::config_map(name),
            owner,
            labels::for_cluster(name, COMPONENT_POSTGRES),
        ),
        data: Some(BTreeMap::from([(
            postgresql_conf::CONFIG_FILE_KEY.to_owned(),
            postgresql_conf::render(cluster),
        )])),
        ..ConfigMap::default()
    }
}

fn service(name: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(
            names::read_write_service(name),
            owner,
            labels::for_cluster(name, COMPONENT_POSTGRES),
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::instance_selector(name)),
            ports: Some(vec![ServicePort {
                name: Some("postgres".to_owned()),
                port: i32::from(names::POSTGRES_PORT),
                target_port: Some(IntOrString::String("postgres".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The cluster's own LoadBalancer Service, when `spec.externalAccess.loadBalancer` asks for
/// one: it selects the instance as `<cluster>-rw` does, and the load balancer admits only the
/// allow-list's sources. Never without source ranges, which would open it to everyone: none
/// when the allow-list holds no CIDR (admission refuses that; an older object may hold one).
fn load_balancer(cluster: &PostgresCluster, name: &str, owner: &OwnerReference) -> Option<Service> {
    let access = cluster.spec.external_access.as_ref()?;
    let ranges: Vec<String> = access
        .allowed_source_ranges
        .iter()
        .filter(|range| is_cidr(range))
        .cloned()
        .collect();
    if !access.load_balancer || ranges.is_empty() {
        return None;
    }
    let mut service = service(name, owner);
    service.metadata.name = Some(names::load_balancer_service(name));
    let spec = service.spec.get_or_insert_with(ServiceSpec::default);
    spec.type_ = Some("LoadBalancer".to_owned());
    spec.load_balancer_source_ranges = Some(ranges);
    // The client's own address reaches the node, so source ranges hold behind any load
    // balancer that keeps it.
    spec.external_traffic_policy = Some("Local".to_owned());
    Some(service)
}

/// Whether `text` is an IPv4 or IPv6 CIDR, such as `203.0.113.0/24`.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// `<n>Gi`.
pub fn gibibytes(size: i32) -> Quantity {
    Quantity(format!("{size}Gi"))
}

/// An environment variable from a Secret's key, which the kubelet reads.
pub fn secret_env(name: &str, secret: String, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.to_owned(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An environment variable with a plain value.
pub fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// An environment variable the kubelet fills from the pod itself (the downward API).
fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `POD_NAMESPACE` from the downward API.
pub fn pod_namespace_env() -> EnvVar {
    downward_env("POD_NAMESPACE", "metadata.namespace")
}

/// `POD_IP` from the downward API. Processes bind the pod's own address rather than every
/// address, which is what lets many pods share one host in the sandbox's local runtime.
pub fn pod_ip_env() -> EnvVar {
    downward_env("POD_IP", "status.podIP")
}

/// The object-store settings every process that talks to the store needs. Pods reach the store
/// only through the operator's gateway, with the cluster's own credentials (by reference to
/// `<cluster>-backup-store`), never with the platform's: the store's own endpoint, region and
/// keys stay in the operator. Only a `file://` store (one machine, no credentials) is used
/// directly.
pub fn store_env(cluster: &str, config: &OperatorConfig) -> Vec<EnvVar> {
    let store = &config.store;
    if !store.uses_gateway() {
        return vec![plain_env("TUSK_STORE_URL", store.url.clone())];
    }
    let gateway = &store.gateway.endpoint;
    vec![
        plain_env("TUSK_STORE_URL", store.gateway_url()),
        plain_env("TUSK_STORE_ENDPOINT", gateway.trim_end_matches('/')),
        plain_env(
            "TUSK_STORE_ALLOW_HTTP",
            gateway.starts_with("http://").to_string(),
        ),
        secret_env(
            "AWS_ACCESS_KEY_ID",
            backup_store_secret(cluster),
            BACKUP_STORE_ACCESS_KEY_ID,
            false,
        ),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            backup_store_secret(cluster),
            BACKUP_STORE_SECRET_ACCESS_KEY,
            false,
        ),
    ]
}

/// The restricted container security context every tusk container runs with.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The restricted pod security context.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn health_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("health".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The PostgreSQL major version a cluster runs.
pub fn postgres_version<'a>(cluster: &'a PostgresCluster, config: &'a OperatorConfig) -> &'a str {
    cluster
        .spec
        .postgres_version
        .as_deref()
        .unwrap_or(&config.postgres.default_version)
}

fn stateful_set(
    cluster: &PostgresCluster,
    name: &str,
    owner: &OwnerReference,
    config: &OperatorConfig,
    restore_backup: Option<&PostgresBackup>,
) -> StatefulSet {
    let spec = &cluster.spec;
    let version = postgres_version(cluster, config);
    let image = config
        .postgres
        .images
        .get(version)
        .or_else(|| config.postgres.images.get(&config.postgres.default_version))
        .cloned()
        .unwrap_or_default();
    let credentials = names::credentials_secret(name);
    let memory = gibibytes(spec.memory_size);

    let mut env = vec![
        pod_namespace_env(),
        pod_ip_env(),
        plain_env("TUSK_CLUSTER", name),
        plain_env("TUSK_POSTGRES_VERSION", version),
        plain_env("TUSK_WAL_ARCHIVING", spec.wal_archiving.to_string()),
        // Role names are plain values: the customer can edit the Secret, and a name taken
        // from it could make the supervisor hand out a role that is not the customer's.
        plain_env("TUSK_OWNER", OWNER_ROLE),
        secret_env(
            "TUSK_OWNER_PASSWORD",
            credentials.clone(),
            secret_keys::PASSWORD,
            false,
        ),
        plain_env("TUSK_REPLICATION_USER", REPLICATION_ROLE),
        secret_env(
            "TUSK_REPLICATION_PASSWORD",
            credentials.clone(),
            secret_keys::REPLICATION_PASSWORD,
            false,
        ),
        secret_env(
            "TUSK_BACKUP_PASSPHRASE",
            credentials,
            secret_keys::BACKUP_PASSPHRASE,
            false,
        ),
    ];
    // What a program run in the container (`kubectl exec elephant-0 -- psql`) connects with,
    // as on a database server: the socket in the pod's own directory and tusk's management
    // role, which peer authentication admits only for the user the instance runs as. A name,
    // never a password; the supervisor puts its socket where PGHOST says.
    env.push(plain_env("PGHOST", names::SOCKET_DIR));
    env.push(plain_env("PGUSER", names::MANAGEMENT_ROLE));
    env.extend(store_env(name, config));
    // The cluster's objects live under a prefix that names this incarnation of it.
    if let Some(uid) = &cluster.metadata.uid {
        env.push(plain_env("TUSK_CLUSTER_UID", uid.clone()));
    }
    // A restore test's throwaway lets its owner role run amcheck, for the check Job.
    if is_throwaway(cluster) {
        env.push(plain_env("TUSK_RESTORE_CHECK", "true"));
    }
    if let Some(restore) = &spec.restore {
        env.push(plain_env(
            "TUSK_RESTORE_BACKUP",
            restore.backup.name.clone(),
        ));
        // The backup may be another cluster's: where it is, its WAL and its passphrase come
        // from the PostgresBackup itself.
        if let Some(backup) = restore_backup {
            env.push(plain_env("TUSK_RESTORE_KEY", backup.spec.s3.path.clone()));
            if let Some((cluster_prefix, _)) = backup.spec.s3.path.rsplit_once("/base/") {
                env.push(plain_env(
                    "TUSK_RESTORE_WAL_PREFIX",
                    format!("{cluster_prefix}/wal"),
                ));
            }
            // What the restore checks the object against before PostgreSQL starts.
            env.push(plain_env("TUSK_RESTORE_SIZE", backup.spec.size.to_string()));
            if let Some(sha256) = &backup.spec.sha256 {
                env.push(plain_env("TUSK_RESTORE_SHA256", sha256.clone()));
            }
            let passphrase = &backup.spec.encryption.passphrase_secret_ref;
            env.push(secret_env(
                "TUSK_RESTORE_PASSPHRASE",
                passphrase.name.clone(),
                &passphrase.key,
                false,
            ));
        }
        if let Some(target) = &restore.target_time {
            env.push(plain_env("TUSK_RESTORE_TARGET_TIME", target.0.to_string()));
        }
        if let Some(target) = &restore.target_lsn {
            env.push(plain_env("TUSK_RESTORE_TARGET_LSN", target.clone()));
        }
        if restore.latest {
            env.push(plain_env("TUSK_RESTORE_LATEST", "true"));
        }
    }

    let container = Container {
        name: "postgres".to_owned(),
        image: Some(image),
        command: Some(vec!["tusk".to_owned(), "instance".to_owned()]),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_MOUNT}/{}", postgresql_conf::CONFIG_FILE_KEY),
            "--data".to_owned(),
            format!("{DATA_MOUNT}/pgdata"),
            "--health-port".to_owned(),
            names::INSTANCE_HEALTH_PORT.to_string(),
            "--tls-dir".to_owned(),
            TLS_MOUNT.to_owned(),
        ]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("postgres".to_owned()),
                container_port: i32::from(names::POSTGRES_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("health".to_owned()),
                container_port: i32::from(names::INSTANCE_HEALTH_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("memory".to_owned(), memory.clone())])),
            limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
            ..ResourceRequirements::default()
        }),
        // The kubelet probes readiness as soon as a container has started; with this startup
        // probe, "started" comes at its first tick, five seconds in, by which time PostgreSQL
        // usually answers, so a normal start records no "Readiness probe failed" Warning.
        // `/livez` answers from the supervisor's first moment and all through a restore, so a
        // long restore never fails this probe or the liveness probe.
        startup_probe: Some(health_probe("/livez", 5, 12)),
        readiness_probe: Some(health_probe("/readyz", 5, 3)),
        liveness_probe: Some(health_probe("/livez", 10, 6)),
        security_context: Some(restricted_container_security()),
        // `tusk instance` writes why it stopped to /dev/termination-log; should it die before
        // it can (a panic, a binary that does not start), the end of its log says why.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_MOUNT, false),
            mount("config", CONFIG_MOUNT, true),
            mount("tls", TLS_MOUNT, true),
            mount("tmp", "/tmp", false),
            mount("run", names::SOCKET_DIR, false),
        ]),
        ..Container::default()
    };

    let pod_labels = labels::for_cluster(name, COMPONENT_POSTGRES);
    StatefulSet {
        metadata: meta(
            names::stateful_set(name),
            owner,
            labels::for_cluster(name, COMPONENT_POSTGRES),
        ),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names::read_write_service(name)),
            selector: LabelSelector {
                match_labels: Some(labels::instance_selector(name)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        RESTART_HASH_ANNOTATION.to_owned(),
                        postgresql_conf::restart_hash(cluster),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security()),
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".to_owned(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names::config_map(name),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        tls_volume(name),
                        empty_dir("tmp"),
                        empty_dir("run"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.to_owned()),
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            gibibytes(spec.postgres_disk_size),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The instance's TLS directory: the server certificate and key from `<cluster>-tls`, and the
/// CA PostgreSQL verifies tusk's client certificates with, the `ca.crt` of
/// `<cluster>-replication-tls` (never its key), as
/// [`client_certs::CLIENT_CA_FILE`](super::client_certs::CLIENT_CA_FILE). One projected volume,
/// so that the instance watches one directory for renewals.
fn tls_volume(cluster: &str) -> Volume {
    let secret = |name: String, items: Option<Vec<KeyToPath>>| VolumeProjection {
        secret: Some(SecretProjection {
            name,
            items,
            ..SecretProjection::default()
        }),
        ..VolumeProjection::default()
    };
    Volume {
        name: "tls".to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(vec![
                secret(names::tls_secret(cluster), None),
                secret(
                    super::client_certs::replication_secret(cluster),
                    Some(vec![KeyToPath {
                        key: tls::CA_CERT_KEY.to_owned(),
                        path: super::client_certs::CLIENT_CA_FILE.to_owned(),
                        ..KeyToPath::default()
                    }]),
                ),
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A StatefulSet's volume claim templates are immutable, so once it exists they are kept as
/// they are; a larger disk reaches the existing PVCs by patching them instead.
pub fn keep_immutable_fields(desired: &mut StatefulSet, existing: &StatefulSet) {
    desired.spec.volume_claim_templates = existing.spec.volume_claim_templates.clone();
}

fn default_schedule(cluster: &str, owner: &OwnerReference) -> PostgresBackupSchedule {
    let mut schedule = PostgresBackupSchedule::new(
        &names::default_schedule(cluster),
        PostgresBackupScheduleSpec {
            cluster: ClusterReference::new(cluster),
            interval: Some(24),
            schedule: None,
            keep: None,
            suspend: false,
            triggered_by: TriggeredBy::System,
        },
    );
    schedule.metadata.labels = Some(labels::for_cluster(cluster, COMPONENT_BACKUP));
    schedule.metadata.owner_references = Some(vec![owner.clone()]);
    schedule
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tusk_api::PostgresClusterSpec;

    pub(crate) fn elephant() -> PostgresCluster {
        let mut cluster = PostgresCluster::new(
            "elephant",
            PostgresClusterSpec {
                display_name: "my-elephant-cluster".into(),
                memory_size: 2,
                postgres_disk_size: 1,
                wal_archiving: true,
                postgres_version: None,
                parameters: BTreeMap::new(),
                restore: None,
                tls: None,
                external_access: None,
            },
        );
        cluster.metadata.namespace = Some("project-a".into());
        cluster.metadata.uid = Some("0b6f1c2e-uid".into());
        cluster
    }

    fn config() -> OperatorConfig {
        let mut config = OperatorConfig::from_yaml(
            "store:\n  url: s3://backups/x\n  credentials:\n    namespace: tusk-system\n    name: store\n",
        )
        .unwrap();
        config
            .postgres
            .images
            .insert("16".into(), "example/pg:16".into());
        config
    }

    /// A `<cluster>-tls` Secret from a fresh CA, as the controller issues it.
    pub(crate) fn server_tls() -> Secret {
        let cluster = elephant();
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let ca = tls::generate_ca("project-a", "elephant", now).unwrap();
        let names = tls::server_names("project-a", "elephant", "cluster.local", None);
        tls::server_secret(
            "project-a",
            "elephant",
            &cluster.controller_owner_ref(&()).unwrap(),
            &ca,
            &names,
            None,
            now,
            &crate::config::TlsSettings::default(),
        )
        .unwrap()
    }

    fn children() -> Children {
        build(&elephant(), &config(), None, None, None, server_tls()).unwrap()
    }

    fn container(children: &Children) -> Container {
        children
            .stateful_set
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone()
    }

    #[test]
    fn every_child_is_controlled_by_the_cluster() {
        let children = children();
        let owners = [
            &children.credentials.metadata,
            &children.config_map.metadata,
            &children.service.metadata,
            &children.stateful_set.metadata,
            &children.default_schedule.as_ref().unwrap().metadata,
        ];
        for meta in owners {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "PostgresCluster");
            assert_eq!(owner.name, "elephant");
            assert_eq!(owner.uid, "0b6f1c2e-uid");
            assert_eq!(owner.controller, Some(true));
        }
    }

    #[test]
    fn names_follow_the_api_crate() {
        let children = children();
        assert_eq!(
            children.credentials.metadata.name.as_deref(),
            Some("elephant-credentials")
        );
        assert_eq!(
            children.config_map.metadata.name.as_deref(),
            Some("elephant-config")
        );
        assert_eq!(
            children.service.metadata.name.as_deref(),
            Some("elephant-rw")
        );
        assert_eq!(
            children.stateful_set.metadata.name.as_deref(),
            Some("elephant")
        );
        assert_eq!(
            children
                .default_schedule
                .as_ref()
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("elephant-default")
        );
        assert_eq!(
            children.default_schedule.as_ref().unwrap().spec.interval,
            Some(24)
        );
        assert_eq!(
            children
                .default_schedule
                .as_ref()
                .unwrap()
                .spec
                .triggered_by,
            TriggeredBy::System
        );
    }

    #[test]
    fn credentials_are_generated_once_and_kept() {
        let tls = server_tls();
        let first = build(&elephant(), &config(), None, None, None, tls.clone())
            .unwrap()
            .credentials;
        let data = first.data.as_ref().unwrap();
        let password = &data[secret_keys::PASSWORD].0;
        assert_eq!(password.len(), PASSWORD_LENGTH);
        assert_eq!(
            data[secret_keys::BACKUP_PASSPHRASE].0.len(),
            PASSPHRASE_LENGTH
        );
        assert_ne!(password, &data[secret_keys::REPLICATION_PASSWORD].0);

        let again = build(&elephant(), &config(), Some(&first), None, None, tls)
            .unwrap()
            .credentials;
        assert_eq!(again, first);

        let other = children().credentials;
        assert_ne!(
            other.data.as_ref().unwrap()[secret_keys::PASSWORD].0,
            *password
        );
    }

    #[test]
    fn an_open_cluster_has_an_external_uri_through_the_router() {
        let tls = server_tls();
        let mut config = config();
        config.tunnel.router_port = 15432;
        let mut cluster = elephant();
        let external_uri = |cluster: &PostgresCluster, config: &OperatorConfig| {
            build(cluster, config, None, None, None, tls.clone())
                .unwrap()
                .credentials
                .data
                .unwrap()
                .get(secret_keys::EXTERNAL_URI)
                .map(|uri| String::from_utf8(uri.0.clone()).unwrap())
        };
        assert_eq!(external_uri(&cluster, &config), None, "closed by default");
        cluster.spec.external_access = Some(tusk_api::cluster::ExternalAccess {
            allowed_source_ranges: vec![],
            load_balancer: false,
        });
        assert_eq!(
            external_uri(&cluster, &config),
            None,
            "an empty list is closed"
        );
        cluster.spec.external_access = Some(tusk_api::cluster::ExternalAccess {
            allowed_source_ranges: vec!["203.0.113.0/24".into()],
            load_balancer: false,
        });
        assert_eq!(
            external_uri(&cluster, &config).as_deref(),
            Some("postgresql://app@elephant.project-a.db.tusk.local:15432/app?sslmode=verify-full")
        );
        // A template that names an address gives no name to route by.
        config.tunnel.external_host_template = "{serviceIP}".into();
        assert_eq!(external_uri(&cluster, &config), None);
    }

    #[test]
    fn a_load_balancer_only_on_request_and_never_without_source_ranges() {
        let config = config();
        let tls = server_tls();
        let mut cluster = elephant();
        let load_balancer = |cluster: &PostgresCluster| {
            build(cluster, &config, None, None, None, tls.clone())
                .unwrap()
                .load_balancer
        };
        assert_eq!(load_balancer(&cluster), None, "none by default");
        let access = |ranges: &[&str], load_balancer| {
            Some(tusk_api::cluster::ExternalAccess {
                allowed_source_ranges: ranges.iter().map(|range| (*range).to_owned()).collect(),
                load_balancer,
            })
        };
        cluster.spec.external_access = access(&["203.0.113.0/24"], false);
        assert_eq!(load_balancer(&cluster), None, "open, but not asked for");
        // The attack: asked for with no range, or only with entries that are no CIDR (which
        // admission refuses, but an older object may hold). Empty source ranges would open
        // the load balancer to everyone.
        for ranges in [&[][..], &["everyone", "10.0.0.0/33", "::/129"][..]] {
            cluster.spec.external_access = access(ranges, true);
            assert_eq!(load_balancer(&cluster), None, "{ranges:?}");
        }
        cluster.spec.external_access =
            access(&["203.0.113.0/24", "garbage", "2001:db8::/32"], true);
        let service = load_balancer(&cluster).expect("asked for");
        assert_eq!(service.metadata.name.as_deref(), Some("elephant-external"));
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(
            spec.load_balancer_source_ranges.unwrap(),
            ["203.0.113.0/24", "2001:db8::/32"]
        );
        assert_eq!(spec.selector, Some(labels::instance_selector("elephant")));
    }

    #[test]
    fn the_credentials_hold_no_superuser_and_keep_an_old_owner_password() {
        let old = Secret {
            data: Some(BTreeMap::from([
                (
                    "superuser-name".to_owned(),
                    ByteString(b"postgres".to_vec()),
                ),
                ("superuser-password".to_owned(), ByteString(b"su".to_vec())),
                (
                    secret_keys::LEGACY_APP_USER_PASSWORD.to_owned(),
                    ByteString(b"the owner's old password".to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        let owner = elephant().controller_owner_ref(&()).unwrap();
        let secret = credentials(
            "elephant",
            "project-a",
            &owner,
            Some(&old),
            b"CA".to_vec(),
            None,
        );
        let data = secret.data.unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "backup-passphrase",
                "ca.crt",
                "dbname",
                "jdbc-uri",
                "password",
                "replication-password",
                "replication-username",
                "uri",
                "username"
            ]
        );
        assert_eq!(data["ca.crt"].0, b"CA");
        assert_eq!(
            data["uri"].0,
            b"postgresql://app@elephant-rw.project-a.svc:5432/app?sslmode=verify-full"
        );
        assert_eq!(
            data["jdbc-uri"].0,
            b"jdbc:postgresql://elephant-rw.project-a.svc:5432/app?user=app&sslmode=verify-full"
        );
        assert_eq!(data["username"].0, b"app");
        assert_eq!(data["dbname"].0, b"app");
        assert_eq!(data["replication-username"].0, b"tusk_replication");
        assert_eq!(data["password"].0, b"the owner's old password");
    }

    #[test]
    fn the_instance_is_sized_probed_and_restricted() {
        let children = children();
        let sts = &children.stateful_set.spec;
        assert_eq!(sts.replicas, Some(1));
        let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("1Gi".into())
        );
        let container = container(&children);
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["memory"],
            Quantity("2Gi".into())
        );
        assert_eq!(
            resources.limits.as_ref().unwrap()["memory"],
            Quantity("2Gi".into())
        );
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        let liveness = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/livez"));
        let health_port = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|port| port.name.as_deref() == Some("health"))
            .unwrap();
        assert_eq!(health_port.container_port, 8000);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(
            container.command,
            Some(vec!["tusk".to_string(), "instance".to_string()])
        );
    }

    #[test]
    fn the_instance_serves_tls_from_its_clusters_secret() {
        let children = children();
        let container = container(&children);
        let args = container.args.clone().unwrap();
        let at = args.iter().position(|arg| arg == "--tls-dir").unwrap();
        assert_eq!(args[at + 1], TLS_MOUNT);
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|mount| mount.mount_path == TLS_MOUNT)
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        let pod = children.stateful_set.spec.template.spec.as_ref().unwrap();
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|volume| volume.name == mount.name)
            .unwrap();
        let projected = volume.projected.as_ref().unwrap();
        assert_eq!(projected.default_mode, Some(0o600));
        type KeyPaths = Option<Vec<(String, String)>>;
        let sources: Vec<(String, KeyPaths)> = projected
            .sources
            .iter()
            .flatten()
            .map(|source| {
                let secret = source.secret.as_ref().unwrap();
                let items = secret.items.as_ref().map(|items| {
                    items
                        .iter()
                        .map(|item| (item.key.clone(), item.path.clone()))
                        .collect()
                });
                (secret.name.clone(), items)
            })
            .collect();
        // The whole server Secret, and only the CA of the client certificates' Secret.
        assert_eq!(
            sources,
            [
                ("elephant-tls".to_owned(), None),
                (
                    "elephant-replication-tls".to_owned(),
                    Some(vec![("ca.crt".to_owned(), "client-ca.crt".to_owned())])
                ),
            ]
        );
        assert_eq!(children.tls.metadata.name.as_deref(), Some("elephant-tls"));
        // The customer's copy of the CA is the one that signed the server certificate.
        assert_eq!(
            children.credentials.data.as_ref().unwrap()["ca.crt"],
            children.tls.data.as_ref().unwrap()["ca.crt"]
        );
    }

    #[test]
    fn no_secret_value_is_in_the_pod_template() {
        let children = children();
        let template = serde_json::to_string(&children.stateful_set).unwrap();
        let secrets = [
            secret_keys::PASSWORD,
            secret_keys::REPLICATION_PASSWORD,
            secret_keys::BACKUP_PASSPHRASE,
        ];
        for key in secrets {
            let value = &children.credentials.data.as_ref().unwrap()[key];
            let value = String::from_utf8(value.0.clone()).unwrap();
            assert!(!template.contains(&value), "{key} is in the pod template");
        }
        let env = container(&children).env.unwrap();
        for name in ["TUSK_OWNER_PASSWORD", "TUSK_REPLICATION_PASSWORD"] {
            let password = env.iter().find(|e| e.name == name).unwrap();
            assert!(password.value.is_none());
            assert_eq!(
                password
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap()
                    .name,
                "elephant-credentials"
            );
        }
        // No superuser login reaches the pod: psql in the container is pointed at the
        // management role, which has no password and is admitted by peer authentication over
        // the pod's own socket alone. Role names do not come from the Secret, which the
        // customer can edit.
        assert!(env.iter().all(|e| e.name != "PGPASSWORD"));
        let plain = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(plain("PGUSER").as_deref(), Some("postgres"));
        assert_eq!(plain("PGHOST").as_deref(), Some("/var/run/postgresql"));
        assert!(
            container(&children)
                .volume_mounts
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/var/run/postgresql" && m.name == "run"),
            "the socket directory is the pod's own volume"
        );
        assert_eq!(plain("TUSK_OWNER").as_deref(), Some("app"));
        assert_eq!(
            plain("TUSK_REPLICATION_USER").as_deref(),
            Some("tusk_replication")
        );
    }

    #[test]
    fn the_service_selects_the_instance_pod() {
        let children = children();
        let selector = children
            .service
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap();
        let pod_labels = children
            .stateful_set
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(
            children
                .service
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()[0]
                .port,
            5432
        );
    }

    #[test]
    fn the_version_picks_the_image() {
        let mut cluster = elephant();
        let default =
            container(&build(&cluster, &config(), None, None, None, server_tls()).unwrap());
        assert_eq!(
            default.image.as_deref(),
            Some("ghcr.io/tusk-dev/tusk-postgres:15")
        );
        cluster.spec.postgres_version = Some("16".into());
        let sixteen =
            container(&build(&cluster, &config(), None, None, None, server_tls()).unwrap());
        assert_eq!(sixteen.image.as_deref(), Some("example/pg:16"));
    }

    #[test]
    fn a_restart_setting_changes_the_pod_template_and_a_reload_setting_does_not() {
        let annotation = |cluster: &PostgresCluster| {
            build(cluster, &config(), None, None, None, server_tls())
                .unwrap()
                .stateful_set
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[RESTART_HASH_ANNOTATION]
                .clone()
        };
        let mut cluster = elephant();
        let before = annotation(&cluster);
        cluster
            .spec
            .parameters
            .insert("work_mem".into(), "64MB".into());
        assert_eq!(annotation(&cluster), before);
        cluster
            .spec
            .parameters
            .insert("max_connections".into(), "300".into());
        assert_ne!(annotation(&cluster), before);
    }

    #[test]
    fn pods_get_the_gateway_and_their_clusters_own_credentials_by_reference() {
        let keys = tusk_backup::gateway::GatewayKey::new(vec![9; 32])
            .unwrap()
            .credentials_for(&tusk_backup::gateway::ClusterIdentity {
                namespace: "project-a".into(),
                name: "elephant".into(),
                uid: "uid-1".into(),
            });
        let mut config = config();
        config.store.endpoint = Some("https://platform-store.example".into());
        config.store.region = Some("eu-central-1".into());
        let children = build(&elephant(), &config, None, Some(&keys), None, server_tls()).unwrap();
        let store = children.backup_store.as_ref().unwrap();
        assert_eq!(
            store.metadata.name.as_deref(),
            Some("elephant-backup-store")
        );
        let data = store.data.as_ref().unwrap();
        assert_eq!(
            data[BACKUP_STORE_ACCESS_KEY_ID].0,
            b"tusk.project-a.elephant.uid-1"
        );
        assert_eq!(
            data[BACKUP_STORE_SECRET_ACCESS_KEY].0,
            keys.secret_access_key.as_bytes()
        );
        let template = serde_json::to_string(&children.stateful_set).unwrap();
        assert!(!template.contains(&keys.secret_access_key));
        assert!(template.contains("elephant-backup-store"));
        // Pods see the gateway, never the store's own endpoint or region.
        let env = container(&children).env.unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|var| var.name == name)
                .and_then(|var| var.value.clone())
        };
        assert_eq!(value("TUSK_STORE_URL").as_deref(), Some("s3://backups/x"));
        assert_eq!(
            value("TUSK_STORE_ENDPOINT").as_deref(),
            Some("http://tusk-store-gateway.tusk-system.svc:9000")
        );
        assert_eq!(value("TUSK_STORE_ALLOW_HTTP").as_deref(), Some("true"));
        assert!(!template.contains("platform-store.example"));
        assert!(!template.contains("eu-central-1"));
        assert!(!format!("{keys:?}").contains(&keys.secret_access_key));
    }

    #[test]
    fn existing_claim_templates_are_kept() {
        let mut small = elephant();
        small.spec.postgres_disk_size = 1;
        let existing = build(&small, &config(), None, None, None, server_tls())
            .unwrap()
            .stateful_set;
        let mut large = elephant();
        large.spec.postgres_disk_size = 5;
        let mut desired = build(&large, &config(), None, None, None, server_tls())
            .unwrap()
            .stateful_set;
        keep_immutable_fields(&mut desired, &existing);
        assert_eq!(
            desired.spec.volume_claim_templates,
            existing.spec.volume_claim_templates
        );
    }

    #[test]
    fn a_restore_takes_location_wal_and_passphrase_from_the_backup() {
        use tusk_api::PostgresBackupSpec;
        use tusk_api::backup::{BackupEncryption, S3Location};
        use tusk_api::cluster::{BackupReference, RestoreSource};
        let source = PostgresBackup::new(
            "nightly",
            PostgresBackupSpec {
                cluster: ClusterReference::new("mammoth"),
                display_name: String::new(),
                triggered_by: TriggeredBy::User,
                encryption: BackupEncryption {
                    algorithm: Default::default(),
                    passphrase_secret_ref: tusk_api::common::SecretKeySelector {
                        name: "mammoth-credentials".into(),
                        key: "backup-passphrase".into(),
                    },
                },
                s3: S3Location {
                    bucket: "b".into(),
                    endpoint: None,
                    path: "x/project-a/mammoth/base/nightly.tar.gz.dare".into(),
                },
                compression: Default::default(),
                size: 1,
                sha256: None,
                run_duration: None,
                start_lsn: None,
                stop_lsn: None,
                timeline: None,
                postgres_version: None,
                deletion_policy: Default::default(),
            },
        );
        let mut cluster = elephant();
        cluster.spec.restore = Some(RestoreSource {
            backup: BackupReference {
                name: "nightly".into(),
            },
            target_time: None,
            target_lsn: None,
            latest: false,
        });
        let children = build(&cluster, &config(), None, None, Some(&source), server_tls()).unwrap();
        let env = container(&children).env.unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(value("TUSK_RESTORE_BACKUP").as_deref(), Some("nightly"));
        assert_eq!(
            value("TUSK_RESTORE_KEY").as_deref(),
            Some("x/project-a/mammoth/base/nightly.tar.gz.dare")
        );
        assert_eq!(
            value("TUSK_RESTORE_WAL_PREFIX").as_deref(),
            Some("x/project-a/mammoth/wal")
        );
        let passphrase = env
            .iter()
            .find(|e| e.name == "TUSK_RESTORE_PASSPHRASE")
            .unwrap();
        assert_eq!(
            passphrase
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "mammoth-credentials"
        );
    }
}
