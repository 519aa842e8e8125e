//! The remote_cluster controller: builds a tunnel inside a customer's cluster (a Service, a
//! Deployment running `tusk tunnel`, and a Secret with connection details) so that
//! applications there reach the database by a local name.
//!
//! ownerReferences cannot cross clusters, so the finalizer
//! `postgresremotecluster.postgres.tusk.dev/tunnel` removes the remote objects. When the
//! customer's cluster cannot be reached, a Warning Event says so and the operator retries with
//! backoff. When the kubeconfig Secret is gone, nothing can be cleaned up: a Warning Event says
//! so and the finalizer is released, so deleting a project never blocks forever.
//!
//! The tenant writes the kubeconfig, so the operator takes only inline data from it (see
//! [`kubeconfig`]): a kubeconfig that would make it run a plugin, read a file, use a proxy or
//! contact a metadata address gives the link `InvalidSpec` (reason `RefusedKubeconfig`) and one
//! Warning Event, and the link waits for its Secret to change. What the remote server says in
//! an error reaches status, Events and logs only as one short line ([`remote_error_summary`]).

pub mod build;
pub mod kubeconfig;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tusk_api::PostgresRemoteCluster;
use tusk_api::conditions::{FALSE, TRUE, reasons as condition_reasons, types};
use tusk_api::finalizers::REMOTE_TUNNEL;
use tusk_api::names::{self, secret_keys};
use tusk_api::remote_cluster::PostgresRemoteClusterStatus;
use tusk_api::tunnel_request;

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::error::{Error, Result, is_not_found};
use crate::events::{self, reasons};
use crate::ssa;
use build::{AppCredentials, RemoteObjects, TunnelTarget};
use kubeconfig::Refusal;

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "remote-cluster";

/// The key of the kubeconfig in the referenced Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

const RESYNC: Duration = Duration::from_secs(600);

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let controller = Controller::new(
        Api::<PostgresRemoteCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    let links = controller.store();
    controller
        // A refused or missing kubeconfig waits for its Secret to change instead of retrying.
        .watches(
            Api::<Secret>::all(client),
            watcher::Config::default(),
            move |secret| {
                let namespace = secret.namespace();
                let name = secret.name_any();
                links
                    .state()
                    .into_iter()
                    .filter(|link| {
                        link.namespace() == namespace && link.spec.remote_cluster.name == name
                    })
                    .map(|link| ObjectRef::from_obj(&*link))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(Config::default().concurrency(context.config.concurrency.remote_cluster))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(link: Arc<PostgresRemoteCluster>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(link = %link.name_any(), namespace = ?link.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile(link: Arc<PostgresRemoteCluster>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    let namespace = link.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresRemoteCluster",
        field: "namespace",
    })?;
    let api: Api<PostgresRemoteCluster> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&api, REMOTE_TUNNEL, link, |event| async {
        match event {
            FinalizerEvent::Apply(link) => apply(&link, &context, &namespace).await,
            FinalizerEvent::Cleanup(link) => cleanup(&link, &context, &namespace).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// What came of reading the kubeconfig Secret.
enum Connection {
    /// A client for the customer's cluster and the namespace the tunnel lives in.
    Ready { client: Client, namespace: String },
    /// The kubeconfig Secret does not exist.
    NoSecret,
    /// The kubeconfig asks for something the operator never does; see [`kubeconfig`].
    Refused(Refusal),
}

/// Reads the kubeconfig Secret and, when the kubeconfig passes [`kubeconfig::parse`] and its
/// server resolves to an address the operator may contact, builds a client from the accepted
/// fields only.
async fn connect(context: &Context, namespace: &str, secret_name: &str) -> Result<Connection> {
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let secret = match secrets.get_opt(secret_name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Connection::NoSecret),
        Err(source) => {
            return Err(Error::Get {
                kind: "Secret",
                name: secret_name.to_owned(),
                source,
            });
        }
    };
    let Some(text) = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
    else {
        return Ok(Connection::Refused(Refusal {
            field: format!("Secret {secret_name}"),
            problem: format!("has no UTF-8 key {KUBECONFIG_KEY:?}"),
        }));
    };
    let access = match kubeconfig::parse(&text) {
        Ok(access) => access,
        Err(refusal) => return Ok(Connection::Refused(refusal)),
    };
    let address = match access.resolve().await {
        Ok(address) => address,
        Err(kubeconfig::ResolveError::Refused(refusal)) => {
            return Ok(Connection::Refused(refusal));
        }
        Err(error @ kubeconfig::ResolveError::Lookup) => {
            return Err(Error::RemoteKubeconfig {
                secret: secret_name.to_owned(),
                message: error.to_string(),
            });
        }
    };
    let mut config = access.config(address);
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    config.write_timeout = Some(Duration::from_secs(15));
    let remote_namespace = config.default_namespace.clone();
    // Errors here come from the certificate or key data; their text could quote it.
    let client = match Client::try_from(config) {
        Ok(client) => client,
        Err(_) => {
            return Ok(Connection::Refused(Refusal {
                field: "users".to_owned(),
                problem: "the client certificate or key cannot be loaded".to_owned(),
            }));
        }
    };
    Ok(Connection::Ready {
        client,
        namespace: remote_namespace,
    })
}

/// Reports a refused kubeconfig on the link (an `InvalidSpec` condition and a Warning Event)
/// and waits for the Secret or the link to change: retrying cannot help.
async fn refuse(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    refusal: &Refusal,
    action: &str,
) -> Result<Action> {
    let message = format!(
        "The kubeconfig in Secret {} is refused: {refusal}",
        link.spec.remote_cluster.name
    );
    let already_reported = link
        .status
        .as_ref()
        .and_then(|status| conditions::find(&status.conditions, types::INVALID_SPEC))
        .is_some_and(|condition| condition.status == TRUE && condition.message == message);
    write_status_conditions(
        context,
        link,
        namespace,
        link.status
            .as_ref()
            .and_then(|status| status.endpoint.clone()),
        &[
            DesiredCondition::new(
                types::INVALID_SPEC,
                TRUE,
                condition_reasons::REFUSED_KUBECONFIG,
                message.clone(),
            ),
            DesiredCondition::new(
                types::READY,
                FALSE,
                condition_reasons::INVALID_SPEC,
                message.clone(),
            ),
        ],
    )
    .await?;
    if !already_reported {
        events::publish(
            &context.recorder,
            &link.object_ref(&()),
            EventType::Warning,
            reasons::INVALID_SPEC,
            action,
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// The most characters of a remote server's error text that reach a status, an Event or a log.
pub const REMOTE_ERROR_CHARS: usize = 160;

/// A remote server's error as one short line. The customer's cluster chooses this text, so it
/// is never copied wholesale: it is cut to [`REMOTE_ERROR_CHARS`] and control characters become
/// spaces.
pub fn remote_error_summary(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) => {
            format!("HTTP {} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    };
    one_line(&text, REMOTE_ERROR_CHARS)
}

/// `text` on one line (every control character a space, runs of spaces one) and at most
/// `limit` characters, with an ellipsis when cut.
pub fn one_line(text: &str, limit: usize) -> String {
    let mut line = String::new();
    let mut count = 0;
    let mut last_was_space = false;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_was_space {
            continue;
        }
        if count == limit {
            line.push('…');
            return line;
        }
        last_was_space = c == ' ';
        line.push(c);
        count += 1;
    }
    line
}

async fn app_credentials(
    context: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<AppCredentials>> {
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let name = names::credentials_secret(cluster);
    let secret = secrets.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Secret",
        name: name.clone(),
        source,
    })?;
    Ok(secret.and_then(|secret| {
        let data = secret.data?;
        Some(AppCredentials {
            user: data.get(secret_keys::USERNAME)?.0.clone(),
            password: data.get(secret_keys::PASSWORD)?.0.clone(),
            ca_pem: data
                .get(secret_keys::CA_CERT)
                .filter(|ca| !ca.0.is_empty())?
                .0
                .clone(),
        })
    }))
}

/// The cluster IP of the database's read-write Service, once it has one.
async fn database_service_ip(
    context: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(context.client.clone(), namespace);
    let name = names::read_write_service(cluster);
    let service = services.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Service",
        name,
        source,
    })?;
    Ok(service
        .and_then(|service| service.spec?.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None"))
}

/// Reports that the link waits for something in the workload cluster, and looks again later.
async fn wait_for(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    waiting: String,
    again_in: Duration,
) -> Result<Action> {
    let condition =
        DesiredCondition::new(types::READY, FALSE, condition_reasons::CREATING, waiting);
    write_status(context, link, namespace, None, condition).await?;
    Ok(Action::requeue(again_in))
}

async fn apply(link: &PostgresRemoteCluster, context: &Context, namespace: &str) -> Result<Action> {
    let cluster = &link.spec.cluster.name;
    let secret_name = &link.spec.remote_cluster.name;
    let reference = link.object_ref(&());
    let Some(credentials) = app_credentials(context, namespace, cluster).await? else {
        let waiting = format!("Waiting for the credentials of PostgresCluster {cluster}");
        return wait_for(context, link, namespace, waiting, Duration::from_secs(10)).await;
    };
    let connection = match connect(context, namespace, secret_name).await {
        Ok(connection) => connection,
        Err(error) => {
            warn_unreachable(context, link, namespace, &error).await?;
            return Err(error);
        }
    };
    let (remote, remote_namespace) = match connection {
        Connection::Ready {
            client,
            namespace: remote_namespace,
        } => (client, remote_namespace),
        Connection::Refused(refusal) => {
            return refuse(context, link, namespace, &refusal, "ConnectRemoteCluster").await;
        }
        Connection::NoSecret => {
            let message =
                format!("Secret {secret_name} with the remote cluster's kubeconfig does not exist");
            write_status(
                context,
                link,
                namespace,
                None,
                DesiredCondition::new(
                    types::READY,
                    FALSE,
                    condition_reasons::INVALID_SPEC,
                    message.clone(),
                ),
            )
            .await?;
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reasons::ERROR,
                "ConnectRemoteCluster",
                message,
            )
            .await;
            // The Secret's creation wakes the link; this is only a safety net.
            return Ok(Action::requeue(RESYNC));
        }
    };
    let tunnel = &context.config.tunnel;
    let via_router = match tunnel.tunnel_via_router(namespace, cluster) {
        Some((name, address)) => match remote_token(&remote, &remote_namespace, cluster).await {
            Ok(token) => Some((tunnel_request::TunnelRequest { name, token }, address)),
            Err(error) => {
                warn_unreachable(context, link, namespace, &error).await?;
                return Err(error);
            }
        },
        None => None,
    };
    // The digest is published before the tunnel runs, so the router admits its first
    // connection.
    let digest = via_router
        .as_ref()
        .map(|(via_router, _)| tunnel_request::token_digest(&via_router.token));
    record_tunnel(
        context,
        link,
        namespace,
        &remote_namespace,
        digest.as_deref(),
    )
    .await?;
    let (address, via_router) = match via_router {
        Some((via_router, address)) => (address, Some(via_router)),
        None => {
            let service_ip = if tunnel.needs_service_ip() {
                let Some(ip) = database_service_ip(context, namespace, cluster).await? else {
                    let waiting = format!(
                        "Waiting for the Service of PostgresCluster {cluster} to get an IP"
                    );
                    return wait_for(context, link, namespace, waiting, Duration::from_secs(5))
                        .await;
                };
                Some(ip)
            } else {
                None
            };
            let host = tunnel.external_host(namespace, cluster, service_ip.as_deref());
            (format!("{host}:{}", tunnel.external_port), None)
        }
    };
    let target = TunnelTarget {
        namespace,
        cluster,
        link: &link.name_any(),
        remote_namespace: &remote_namespace,
        address,
        via_router,
        image: &tunnel.image,
        replicas: tunnel.replicas,
    };
    let endpoint = build::endpoint(&target);
    let objects = build::build(&target, &credentials);
    if let Err(error) = apply_remote(&remote, &remote_namespace, objects).await {
        warn_unreachable(context, link, namespace, &error).await?;
        return Err(error);
    }
    let was_ready = link
        .status
        .as_ref()
        .and_then(|status| conditions::find(&status.conditions, types::READY))
        .is_some_and(|condition| condition.status == TRUE);
    if !was_ready {
        events::publish(
            &context.recorder,
            &reference,
            EventType::Normal,
            reasons::TUNNEL_READY,
            "ApplyTunnel",
            format!("The tunnel to {cluster} is in namespace {remote_namespace} of the remote cluster; apps connect to {endpoint}"),
        )
        .await;
    }
    write_status_conditions(
        context,
        link,
        namespace,
        Some(endpoint),
        &[
            DesiredCondition::new(
                types::READY,
                TRUE,
                condition_reasons::AVAILABLE,
                "The tunnel objects exist in the remote cluster",
            ),
            DesiredCondition::new(
                types::INVALID_SPEC,
                FALSE,
                condition_reasons::RECONCILED,
                "The kubeconfig is accepted",
            ),
        ],
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

async fn apply_remote(
    remote: &Client,
    remote_namespace: &str,
    objects: RemoteObjects,
) -> Result<()> {
    let RemoteObjects {
        service,
        deployment,
        secret,
        token_secret,
    } = objects;
    let unreachable = |action: &str, error: Error| match error {
        Error::ApplyChild { source, .. } => Error::RemoteUnreachable {
            action: action.to_owned(),
            source,
        },
        other => other,
    };
    let secrets = Api::<Secret>::namespaced(remote.clone(), remote_namespace);
    ssa::apply(&secrets, CONTROLLER, &secret)
        .await
        .map_err(|error| unreachable("applying the connection Secret", error))?;
    if let Some(token_secret) = token_secret {
        ssa::apply(&secrets, CONTROLLER, &token_secret)
            .await
            .map_err(|error| unreachable("applying the tunnel's token Secret", error))?;
    }
    ssa::apply(
        &Api::<Service>::namespaced(remote.clone(), remote_namespace),
        CONTROLLER,
        &service,
    )
    .await
    .map_err(|error| unreachable("applying the tunnel Service", error))?;
    ssa::apply(
        &Api::<Deployment>::namespaced(remote.clone(), remote_namespace),
        CONTROLLER,
        &deployment,
    )
    .await
    .map_err(|error| unreachable("applying the tunnel Deployment", error))?;
    Ok(())
}

async fn warn_unreachable(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    error: &Error,
) -> Result<()> {
    let message = format!("Cannot build the tunnel in the remote cluster: {error}");
    events::publish(
        &context.recorder,
        &link.object_ref(&()),
        EventType::Warning,
        reasons::UNREACHABLE,
        "ApplyTunnel",
        message.clone(),
    )
    .await;
    write_status(
        context,
        link,
        namespace,
        link.status
            .as_ref()
            .and_then(|status| status.endpoint.clone()),
        DesiredCondition::new(types::READY, FALSE, condition_reasons::UNREACHABLE, message),
    )
    .await
}

async fn write_status(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    endpoint: Option<String>,
    ready: DesiredCondition,
) -> Result<()> {
    write_status_conditions(context, link, namespace, endpoint, &[ready]).await
}

async fn write_status_conditions(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    endpoint: Option<String>,
    desired: &[DesiredCondition],
) -> Result<()> {
    let previous = link.status.clone().unwrap_or_default();
    let status = PostgresRemoteClusterStatus {
        conditions: conditions::merge(
            &previous.conditions,
            desired,
            link.metadata.generation,
            context.clock.now(),
        ),
        observed_generation: link.metadata.generation,
        endpoint,
        remote_namespace: previous.remote_namespace.clone(),
        tunnel_token_sha256: previous.tunnel_token_sha256.clone(),
    };
    if link.status.as_ref() == Some(&status) {
        return Ok(());
    }
    patch_link_status(context, link, namespace, json!(status)).await
}

/// Records in the status, before the tunnel is built, the namespace of the customer's cluster
/// the tunnel lives in (the cluster controller reissues the database's server certificate for
/// the tunnel Service's names in it, [`build::tunnel_server_names`]) and the digest of the
/// tunnel's token (`tusk router` admits the tunnel by it), or no digest without a router.
async fn record_tunnel(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    remote_namespace: &str,
    token_digest: Option<&str>,
) -> Result<()> {
    let status = link.status.as_ref();
    let recorded_namespace = status.and_then(|status| status.remote_namespace.as_deref());
    let recorded_digest = status.and_then(|status| status.tunnel_token_sha256.as_deref());
    if recorded_namespace == Some(remote_namespace) && recorded_digest == token_digest {
        return Ok(());
    }
    patch_link_status(
        context,
        link,
        namespace,
        json!({ "remoteNamespace": remote_namespace, "tunnelTokenSha256": token_digest }),
    )
    .await
}

/// The tunnel's token: the one its Secret in the customer's cluster holds, so that it stays
/// the same from one reconcile to the next, or a new random one when there is none or the
/// Secret holds something that is not a token.
async fn remote_token(remote: &Client, remote_namespace: &str, cluster: &str) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(remote.clone(), remote_namespace);
    let name = build::token_secret_name(cluster);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(|source| Error::RemoteUnreachable {
            action: format!("reading Secret {name}"),
            source,
        })?;
    let kept = existing
        .and_then(|secret| secret.data)
        .and_then(|mut data| data.remove(tunnel_request::TOKEN_KEY))
        .and_then(|value| String::from_utf8(value.0).ok())
        .filter(|token| tunnel_request::is_token(token));
    Ok(kept.unwrap_or_else(|| tunnel_request::token_from_random(&rand::random())))
}

/// Merges `status` (the status's fields to set) into the status of `link`.
async fn patch_link_status(
    context: &Context,
    link: &PostgresRemoteCluster,
    namespace: &str,
    status: serde_json::Value,
) -> Result<()> {
    let api: Api<PostgresRemoteCluster> = Api::namespaced(context.client.clone(), namespace);
    api.patch_status(
        &link.name_any(),
        &PatchParams {
            field_manager: Some(ssa::field_manager(CONTROLLER)),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "PostgresRemoteCluster",
        name: link.name_any(),
        source,
    })?;
    Ok(())
}

async fn cleanup(
    link: &PostgresRemoteCluster,
    context: &Context,
    namespace: &str,
) -> Result<Action> {
    let cluster = &link.spec.cluster.name;
    let secret_name = &link.spec.remote_cluster.name;
    let reference = link.object_ref(&());
    let connection = match connect(context, namespace, secret_name).await {
        Ok(connection) => connection,
        Err(error) => {
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reasons::UNREACHABLE,
                "DeleteTunnel",
                format!("Cannot remove the tunnel from the remote cluster: {error}"),
            )
            .await;
            return Err(error);
        }
    };
    let (remote, remote_namespace) = match connection {
        Connection::Ready {
            client,
            namespace: remote_namespace,
        } => (client, remote_namespace),
        Connection::NoSecret | Connection::Refused(_) => {
            let why = match &connection {
                Connection::Refused(refusal) => {
                    format!("The kubeconfig in Secret {secret_name} is refused ({refusal})")
                }
                _ => format!("Secret {secret_name} with the remote cluster's kubeconfig is gone"),
            };
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reasons::CLEANUP_SKIPPED,
                "DeleteTunnel",
                format!(
                    "{why}, so nothing in that cluster can be cleaned up; delete Service {}, Deployment {} and Secrets {} and {} there by hand",
                    build::service_name(cluster),
                    build::deployment_name(cluster),
                    build::secret_name(cluster),
                    build::token_secret_name(cluster)
                ),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let result = delete_remote(&remote, &remote_namespace, cluster).await;
    if let Err(error) = &result {
        events::publish(
            &context.recorder,
            &reference,
            EventType::Warning,
            reasons::UNREACHABLE,
            "DeleteTunnel",
            format!("Cannot remove the tunnel from the remote cluster: {error}"),
        )
        .await;
    } else {
        events::publish(&context.recorder, &reference, EventType::Normal, reasons::FINALIZER, "DeleteTunnel", format!("Removed the tunnel to {cluster} from namespace {remote_namespace} of the remote cluster")).await;
    }
    result.map(|()| Action::await_change())
}

async fn delete_remote(remote: &Client, remote_namespace: &str, cluster: &str) -> Result<()> {
    async fn delete<K>(api: Api<K>, name: String) -> Result<()>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(source) => Err(Error::RemoteUnreachable {
                action: format!("deleting {name}"),
                source,
            }),
        }
    }
    delete(
        Api::<Deployment>::namespaced(remote.clone(), remote_namespace),
        build::deployment_name(cluster),
    )
    .await?;
    delete(
        Api::<Service>::namespaced(remote.clone(), remote_namespace),
        build::service_name(cluster),
    )
    .await?;
    let secrets = Api::<Secret>::namespaced(remote.clone(), remote_namespace);
    delete(secrets.clone(), build::token_secret_name(cluster)).await?;
    delete(secrets, build::secret_name(cluster)).await
}
