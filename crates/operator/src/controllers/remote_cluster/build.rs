//! The tunnel objects in a customer's cluster, as plain values.
//!
//! They live in the namespace of the kubeconfig's current context ("default" when it names
//! none): the customer chose that namespace when they handed over the kubeconfig, and the
//! credentials in it are usually scoped to it. Their names derive from the PostgresCluster:
//! Service `<cluster>` (so apps connect to `<cluster>.<namespace>.svc:5432`), Deployment
//! `<cluster>-tunnel` and Secret `<cluster>-connection`.
//!
//! The tunnel copies bytes and never terminates TLS: the client's TLS session is with
//! PostgreSQL itself, whose server certificate names the tunnel Service (see
//! [`tunnel_server_names`]). The Secret carries the cluster's `ca.crt` and a `uri` and
//! `jdbc-uri` that verify the server against the Service's name (`sslmode=verify-full`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::names::secret_keys;
use tusk_api::tunnel_request::{self, TunnelRequest};
use tusk_api::{labels as api_labels, names};

use crate::controllers::cluster::build::{
    pod_ip_env, restricted_container_security, restricted_pod_security, verify_full_jdbc_uri,
    verify_full_uri,
};
use crate::labels::COMPONENT_TUNNEL;

/// The tunnel's objects in the customer's cluster.
#[derive(Clone, PartialEq)]
pub struct RemoteObjects {
    /// What applications connect to.
    pub service: Service,
    /// The forwarder.
    pub deployment: Deployment,
    /// Connection details for applications.
    pub secret: Secret,
    /// The tunnel's token, when it goes through `tusk router`. Apart from `secret`, which
    /// applications read: the token is the tunnel's alone.
    pub token_secret: Option<Secret>,
}

impl std::fmt::Debug for RemoteObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteObjects")
            .field("service", &self.service.metadata.name)
            .field("deployment", &self.deployment.metadata.name)
            .field("secret", &self.secret.metadata.name)
            .field(
                "token_secret",
                &self
                    .token_secret
                    .as_ref()
                    .map(|secret| &secret.metadata.name),
            )
            .finish()
    }
}

/// The application user's credentials and the CA certificates that verify the server, copied
/// from the cluster's credentials Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AppCredentials {
    /// The user's name.
    pub user: Vec<u8>,
    /// The user's password.
    pub password: Vec<u8>,
    /// The CA certificates (PEM) that verify the database's server certificate.
    pub ca_pem: Vec<u8>,
}

/// What the remote objects are built from.
pub struct TunnelTarget<'a> {
    /// The PostgresCluster's namespace in the workload cluster.
    pub namespace: &'a str,
    /// The PostgresCluster's name.
    pub cluster: &'a str,
    /// The PostgresRemoteCluster's name.
    pub link: &'a str,
    /// The namespace in the customer's cluster.
    pub remote_namespace: &'a str,
    /// Where the tunnel connects, as host:port: `tusk router`, or (where there is no router,
    /// [`TunnelTarget::via_router`] is `None`) the database's Service itself.
    pub address: String,
    /// What the tunnel sends `tusk router` ahead of each connection: the database's name
    /// there and the token that proves the tunnel is one of that database's
    /// (docs/external-access.md).
    pub via_router: Option<TunnelRequest>,
    /// The tunnel image.
    pub image: &'a str,
    /// Tunnel replicas.
    pub replicas: i32,
}

/// The Service name in the customer's cluster.
pub fn service_name(cluster: &str) -> String {
    cluster.to_owned()
}

/// The pod-template annotation with the SHA-256 of the tunnel's token: a changed token changes
/// the template, so the tunnel's pods roll and read the new one (they read it once, from their
/// environment). The digest is no secret: the link publishes it too.
pub const TOKEN_DIGEST_ANNOTATION: &str = "postgres.tusk.dev/tunnel-token-sha256";

/// The Deployment name in the customer's cluster.
pub fn deployment_name(cluster: &str) -> String {
    format!("{cluster}-tunnel")
}

/// The Secret name in the customer's cluster.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-connection")
}

/// The name of the Secret holding the tunnel's token in the customer's cluster.
pub fn token_secret_name(cluster: &str) -> String {
    format!("{cluster}-tunnel-token")
}

/// The labels of every remote object.
pub fn remote_labels(target: &TunnelTarget<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            api_labels::MANAGED_BY.to_owned(),
            api_labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (
            api_labels::COMPONENT.to_owned(),
            COMPONENT_TUNNEL.to_owned(),
        ),
        (api_labels::CLUSTER.to_owned(), target.cluster.to_owned()),
        (
            api_labels::REMOTE_CLUSTER.to_owned(),
            target.link.to_owned(),
        ),
    ])
}

fn meta(name: String, target: &TunnelTarget<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(target.remote_namespace.to_owned()),
        labels: Some(remote_labels(target)),
        annotations: Some(BTreeMap::from([(
            "postgres.tusk.dev/source".to_owned(),
            format!("{}/{}", target.namespace, target.cluster),
        )])),
        ..ObjectMeta::default()
    }
}

/// The tunnel Service's `.svc` name, which the Secret's `host` and URIs give.
pub fn service_host(cluster: &str, remote_namespace: &str) -> String {
    format!("{}.{remote_namespace}.svc", service_name(cluster))
}

/// Where applications in the customer's cluster connect, as host:port.
pub fn endpoint(target: &TunnelTarget<'_>) -> String {
    format!(
        "{}:{}",
        service_host(target.cluster, target.remote_namespace),
        names::POSTGRES_PORT
    )
}

/// Every name the tunnel Service of `cluster` in `remote_namespace` answers to in the
/// customer's cluster (short, namespaced, `.svc` and `.svc.<cluster_domain>`): the names the
/// database's server certificate must carry for a client there to verify it. None when
/// `remote_namespace` is not a namespace's name (an RFC 1123 label): a namespace with dots
/// would make these names reach into another domain, such as another database's host.
pub fn tunnel_server_names(
    cluster: &str,
    remote_namespace: &str,
    cluster_domain: &str,
) -> Vec<String> {
    if !names::is_dns_label(remote_namespace) {
        return Vec::new();
    }
    let service = service_name(cluster);
    let svc = service_host(cluster, remote_namespace);
    vec![
        service.clone(),
        format!("{service}.{remote_namespace}"),
        format!("{svc}.{cluster_domain}"),
        svc,
    ]
}

/// Builds the three remote objects.
pub fn build(target: &TunnelTarget<'_>, credentials: &AppCredentials) -> RemoteObjects {
    let selector = BTreeMap::from([
        (
            api_labels::COMPONENT.to_owned(),
            COMPONENT_TUNNEL.to_owned(),
        ),
        (api_labels::CLUSTER.to_owned(), target.cluster.to_owned()),
    ]);
    let service = Service {
        metadata: meta(service_name(target.cluster), target),
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
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
    };
    let mut pod_labels = remote_labels(target);
    pod_labels.extend(selector.clone());
    let mut container = Container {
        name: "tunnel".to_owned(),
        image: Some(target.image.to_owned()),
        command: Some(vec!["tusk".to_owned(), "tunnel".to_owned()]),
        args: Some(vec![
            "--listen".to_owned(),
            // Expanded by the kubelet from the env below.
            format!("$(POD_IP):{}", names::POSTGRES_PORT),
            "--target".to_owned(),
            target.address.clone(),
        ]),
        env: Some(vec![pod_ip_env()]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".to_owned()),
            container_port: i32::from(names::POSTGRES_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(tunnel_resources()),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("postgres".to_owned()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    if let Some(via_router) = &target.via_router {
        container
            .args
            .get_or_insert_with(Vec::new)
            .extend(["--route-name".to_owned(), via_router.name.clone()]);
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: tunnel_request::TOKEN_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token_secret_name(target.cluster),
                    key: tunnel_request::TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let token_secret = target.via_router.as_ref().map(|via_router| Secret {
        metadata: meta(token_secret_name(target.cluster), target),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            tunnel_request::TOKEN_KEY.to_owned(),
            ByteString(via_router.token.clone().into_bytes()),
        )])),
        ..Secret::default()
    });
    let deployment = Deployment {
        metadata: meta(deployment_name(target.cluster), target),
        spec: DeploymentSpec {
            replicas: Some(target.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: target.via_router.as_ref().map(|via_router| {
                        BTreeMap::from([(
                            TOKEN_DIGEST_ANNOTATION.to_owned(),
                            tunnel_request::token_digest(&via_router.token),
                        )])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security()),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let host = service_host(target.cluster, target.remote_namespace);
    let user = String::from_utf8_lossy(&credentials.user);
    let uri = verify_full_uri(&host, names::POSTGRES_PORT, &user);
    let jdbc_uri = verify_full_jdbc_uri(&host, names::POSTGRES_PORT, &user);
    let secret = Secret {
        metadata: meta(secret_name(target.cluster), target),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            ("host".to_owned(), ByteString(host.into_bytes())),
            (
                secret_keys::CA_CERT.to_owned(),
                ByteString(credentials.ca_pem.clone()),
            ),
            (secret_keys::URI.to_owned(), ByteString(uri.into_bytes())),
            (
                secret_keys::JDBC_URI.to_owned(),
                ByteString(jdbc_uri.into_bytes()),
            ),
            (
                "port".to_owned(),
                ByteString(names::POSTGRES_PORT.to_string().into_bytes()),
            ),
            ("dbname".to_owned(), ByteString(credentials.user.clone())),
            ("user".to_owned(), ByteString(credentials.user.clone())),
            (
                "password".to_owned(),
                ByteString(credentials.password.clone()),
            ),
        ])),
        ..Secret::default()
    };
    RemoteObjects {
        service,
        deployment,
        secret,
        token_secret,
    }
}

/// A tunnel copies bytes and holds little per connection, so small bounds suffice; limits keep
/// a misbehaving tunnel from starving the customer's other workloads.
fn tunnel_resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("10m", "32Mi")),
        limits: Some(quantities("500m", "128Mi")),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TunnelTarget<'static> {
        TunnelTarget {
            namespace: "project-a",
            cluster: "elephant",
            link: "elephant-customer",
            remote_namespace: "apps",
            address: "elephant.project-a.db.example.com:15432".into(),
            via_router: None,
            image: "example/tusk:1",
            replicas: 2,
        }
    }

    #[test]
    fn the_tunnel_forwards_to_the_external_endpoint() {
        let credentials = AppCredentials {
            user: b"app".to_vec(),
            password: b"pw-123456789".to_vec(),
            ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
        };
        let objects = build(&target(), &credentials);
        let pod = objects.deployment.spec.template.spec.as_ref().unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(
            args,
            [
                "--listen",
                "$(POD_IP):5432",
                "--target",
                "elephant.project-a.db.example.com:15432"
            ]
        );
        assert_eq!(
            pod.containers[0].command.clone().unwrap(),
            ["tusk", "tunnel"]
        );
        let selector = objects
            .service
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap();
        let labels = objects
            .deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        for meta in [
            &objects.service.metadata,
            &objects.deployment.metadata,
            &objects.secret.metadata,
        ] {
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
        }
        let data = objects.secret.data.as_ref().unwrap();
        assert_eq!(data["host"].0, b"elephant.apps.svc");
        assert_eq!(data["port"].0, b"5432");
        assert_eq!(data["user"].0, b"app");
        assert_eq!(data["password"].0, b"pw-123456789");
        assert_eq!(data["ca.crt"].0, b"-----BEGIN CERTIFICATE-----");
        assert_eq!(
            data["uri"].0,
            b"postgresql://app@elephant.apps.svc:5432/app?sslmode=verify-full"
        );
        assert_eq!(
            data["jdbc-uri"].0,
            b"jdbc:postgresql://elephant.apps.svc:5432/app?user=app&sslmode=verify-full"
        );
        assert!(!format!("{objects:?}").contains("pw-123456789"));
        assert_eq!(endpoint(&target()), "elephant.apps.svc:5432");
    }

    #[test]
    fn through_the_router_the_tunnel_names_its_database_and_reads_its_token_from_a_secret() {
        const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let credentials = AppCredentials {
            user: b"app".to_vec(),
            password: b"pw".to_vec(),
            ca_pem: b"ca".to_vec(),
        };
        let mut target = target();
        target.via_router = Some(TunnelRequest {
            name: "elephant.project-a.db.example.com".into(),
            token: TOKEN.into(),
        });
        let objects = build(&target, &credentials);
        let container = &objects
            .deployment
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        let args = container.args.clone().unwrap();
        assert_eq!(
            args[4..],
            ["--route-name", "elephant.project-a.db.example.com"]
        );
        // The token reaches the tunnel through its environment, from its own Secret: never an
        // argument, never the Secret applications read.
        assert!(!args.iter().any(|arg| arg.contains(TOKEN)));
        let token_env = container
            .env
            .iter()
            .flatten()
            .find(|env| env.name == tunnel_request::TOKEN_ENV)
            .unwrap();
        let reference = token_env
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(reference.name, "elephant-tunnel-token");
        let token_secret = objects.token_secret.as_ref().unwrap();
        assert_eq!(
            token_secret.metadata.name.as_deref(),
            Some("elephant-tunnel-token")
        );
        assert_eq!(
            token_secret.data.as_ref().unwrap()[&reference.key].0,
            TOKEN.as_bytes()
        );
        assert!(
            !objects
                .secret
                .data
                .as_ref()
                .unwrap()
                .values()
                .any(|value| value.0 == TOKEN.as_bytes())
        );
        assert!(!format!("{objects:?} {:?}", target.via_router).contains(TOKEN));
        // A changed token changes the pod template (only by its digest), so the pods roll.
        let template_digest = |objects: &RemoteObjects| {
            let template = objects.deployment.spec.template.metadata.clone();
            let annotations = template.unwrap_or_default().annotations;
            annotations
                .unwrap_or_default()
                .remove(TOKEN_DIGEST_ANNOTATION)
        };
        assert_eq!(
            template_digest(&objects),
            Some(tunnel_request::token_digest(TOKEN))
        );
        target.via_router.as_mut().unwrap().token = TOKEN.replace('0', "f");
        let rotated = build(&target, &credentials);
        assert_ne!(template_digest(&rotated), template_digest(&objects));
        assert!(!format!("{:?}", rotated.deployment).contains(&TOKEN.replace('0', "f")));
    }

    #[test]
    fn the_certificate_names_the_tunnel_service_and_nothing_a_namespace_smuggles_in() {
        assert_eq!(
            tunnel_server_names("elephant", "apps", "cluster.local"),
            [
                "elephant",
                "elephant.apps",
                "elephant.apps.svc.cluster.local",
                "elephant.apps.svc"
            ]
        );
        for hostile in ["other.db.tusk.local", "apps.svc", "", "Apps"] {
            assert!(
                tunnel_server_names("elephant", hostile, "cluster.local").is_empty(),
                "{hostile}"
            );
        }
    }
}
