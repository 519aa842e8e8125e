//! The service proxy of the local runtime: what kube-proxy does for ClusterIP Services, over
//! loopback addresses.
//!
//! For every TCP port of every Service with a ClusterIP it listens on `clusterIP:port` while the
//! Service has at least one ready endpoint for that port, and forwards each connection to one
//! of them in turn. With no ready endpoint nothing listens, so a client is refused at once, as
//! kube-proxy's REJECT rule does.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One Service port as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frontend {
    service: ObjectRef<Endpoints>,
    /// The Service port's name, which the Endpoints' ports carry too ("" when unnamed).
    port_name: String,
}

/// A listening socket and the means to close it.
struct Listener {
    frontend: Frontend,
    stop: CancellationToken,
}

/// Forwards ClusterIP traffic to ready endpoints until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let (services, services_writer) = reflector::store::<Service>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let service_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let endpoint_events = reflector::reflector(
        endpoints_writer,
        watcher(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let changes = futures::stream::select(service_events, endpoint_events)
        .take_until(shutdown.clone().cancelled_owned());
    futures::pin_mut!(changes);
    let mut listeners: HashMap<SocketAddr, Listener> = HashMap::new();
    // Addresses it could not listen on, warned about once rather than at every change (an
    // unprivileged sandbox cannot take the `kubernetes` Service's port 443).
    let mut refused: std::collections::HashSet<SocketAddr> = std::collections::HashSet::new();
    while changes.next().await.is_some() {
        let wanted = desired(&services, &endpoints);
        listeners.retain(|address, listener| {
            let keep = wanted.get(address) == Some(&listener.frontend);
            if !keep {
                listener.stop.cancel();
            }
            keep
        });
        for (address, frontend) in wanted {
            if listeners.contains_key(&address) {
                continue;
            }
            let socket = match TcpListener::bind(address).await {
                Ok(socket) => socket,
                Err(error) => {
                    if refused.insert(address) {
                        tracing::warn!(%address, %error, "the service proxy cannot listen");
                    }
                    continue;
                }
            };
            let stop = shutdown.child_token();
            tokio::spawn(serve(
                socket,
                frontend.clone(),
                endpoints.clone(),
                stop.clone(),
                shutdown.clone(),
            ));
            listeners.insert(address, Listener { frontend, stop });
        }
    }
    for listener in listeners.values() {
        listener.stop.cancel();
    }
}

fn is_tcp(port: &ServicePort) -> bool {
    port.protocol.as_deref().unwrap_or("TCP") == "TCP"
}

/// Every `clusterIP:port` that should be listening: TCP ports of Services with a ClusterIP and
/// at least one ready endpoint.
fn desired(
    services: &Store<Service>,
    endpoints: &Store<Endpoints>,
) -> HashMap<SocketAddr, Frontend> {
    let mut wanted = HashMap::new();
    for service in services.state() {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let Some(namespace) = service.namespace() else {
            continue;
        };
        let key = ObjectRef::<Endpoints>::new(&service.name_any()).within(&namespace);
        for port in spec.ports.iter().flatten().filter(|p| is_tcp(p)) {
            let port_number = u16::try_from(port.port).unwrap_or(0);
            let frontend = Frontend {
                service: key.clone(),
                port_name: port.name.clone().unwrap_or_default(),
            };
            if port_number != 0 && !backends(endpoints, &frontend).is_empty() {
                wanted.insert(SocketAddr::new(ip, port_number), frontend);
            }
        }
    }
    wanted
}

/// The ready addresses of a Service port, with the pod port it targets.
fn backends(endpoints: &Store<Endpoints>, frontend: &Frontend) -> Vec<SocketAddr> {
    let Some(current) = endpoints.get(&frontend.service) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for subset in current.subsets.iter().flatten() {
        let Some(port) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == frontend.port_name)
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| u16::try_from(p.port).ok())
        else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// Accepts connections on one Service port until `stop`, handing each to a ready endpoint in
/// turn. Connections already forwarded outlive `stop` (as conntrack entries outlive a rule
/// change) and end with the proxy's `shutdown`.
async fn serve(
    socket: TcpListener,
    frontend: Frontend,
    endpoints: Store<Endpoints>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let (client, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "the service proxy could not accept a connection");
                continue;
            }
        };
        let candidates = backends(&endpoints, &frontend);
        if candidates.is_empty() {
            // The last endpoint went away between the change and this connection: reset it,
            // as a REJECT rule would have.
            let _ = client.set_zero_linger();
            continue;
        }
        let start = turn.fetch_add(1, Ordering::Relaxed);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = forward(client, candidates, start) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Connects to the first reachable backend from `start` on, then copies both ways.
async fn forward(mut client: TcpStream, candidates: Vec<SocketAddr>, start: usize) {
    let _ = client.set_nodelay(true);
    for offset in 0..candidates.len() {
        let backend = candidates[(start + offset) % candidates.len()];
        match TcpStream::connect(backend).await {
            Ok(mut upstream) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%backend, %error, "a service backend refused the connection");
            }
        }
    }
    let _ = client.set_zero_linger();
}
