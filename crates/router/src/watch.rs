//! The routing table, kept from watches (kube-runtime reflectors) of every PostgresCluster, of
//! the Services tusk manages and of every PostgresRemoteCluster (whose status publishes the
//! digest of its tunnel's token); rebuilt on each change, so a change is in effect as soon as
//! the watch delivers it.

use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tusk_api::{PostgresCluster, PostgresRemoteCluster, labels};
use tusk_operator::server::Readiness;

use crate::metrics::Metrics;
use crate::routes::{HostTemplate, RouteTable};

/// Which watch an event came from.
enum Source {
    Clusters(bool),
    Services(bool),
    Links(bool),
}

/// Keeps `table` up to date from the API server until `shutdown`; marks `readiness` (the
/// routing table is loaded) once every watch has listed everything.
pub async fn keep_routes(
    client: kube::Client,
    template: HostTemplate,
    table: watch::Sender<Arc<RouteTable>>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let (clusters, clusters_writer) = reflector::store::<PostgresCluster>();
    let (services, services_writer) = reflector::store::<Service>();
    let (links, links_writer) = reflector::store::<PostgresRemoteCluster>();
    let link_events = reflector::reflector(
        links_writer,
        watcher(
            Api::<PostgresRemoteCluster>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|event| Source::Links(is_init_done(event)));
    let cluster_events = reflector::reflector(
        clusters_writer,
        watcher(
            Api::<PostgresCluster>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|event| Source::Clusters(is_init_done(event)));
    // Only Services tusk made; which of them is a cluster's `-rw` is checked by owner.
    let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let service_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client),
            watcher::Config::default().labels(&managed),
        ),
    )
    .default_backoff()
    .map(|event| Source::Services(is_init_done(event)));
    let mut events = std::pin::pin!(stream::select(
        stream::select(cluster_events, service_events),
        link_events
    ));
    let (mut clusters_listed, mut services_listed, mut links_listed) = (false, false, false);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Source::Clusters(done)) => clusters_listed |= done,
            Some(Source::Services(done)) => services_listed |= done,
            Some(Source::Links(done)) => links_listed |= done,
        }
        if !(clusters_listed && services_listed && links_listed) {
            continue;
        }
        let new = Arc::new(build(&template, &clusters, &services, &links));
        metrics.set_routes(new.len());
        table.send_if_modified(|current| {
            let changed = **current != *new;
            if changed {
                tracing::info!(routes = new.len(), "the routing table changed");
                *current = new;
            }
            changed
        });
        readiness.set_ready();
    }
}

/// Whether `event` ends a watch's initial listing; errors are logged (the backoff retries).
fn is_init_done<K>(event: Result<watcher::Event<K>, watcher::Error>) -> bool {
    match event {
        Ok(watcher::Event::InitDone) => true,
        Ok(_) => false,
        Err(error) => {
            tracing::warn!(%error, "a watch of the routing table failed; retrying");
            false
        }
    }
}

fn build(
    template: &HostTemplate,
    clusters: &Store<PostgresCluster>,
    services: &Store<Service>,
    links: &Store<PostgresRemoteCluster>,
) -> RouteTable {
    let clusters = clusters.state();
    let links = links.state();
    RouteTable::build(
        template,
        clusters.iter().map(|cluster| &**cluster),
        |namespace, name| services.get(&ObjectRef::new(name).within(namespace)),
        links.iter().map(|link| &**link),
    )
}
