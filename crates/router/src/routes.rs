//! The routing table: which external host name leads to which database, and from where.
//!
//! A route exists for a PostgresCluster that is not being deleted, has its `-rw` Service made
//! by the operator (the Service's controller is that very cluster, it selects pods and has a
//! cluster IP), and is open to some sources (`spec.externalAccess.allowedSourceRanges`) or
//! linked to a customer's cluster whose tunnel goes through the router (a
//! PostgresRemoteCluster in its namespace publishing `status.tunnelTokenSha256`). The router
//! contacts that cluster IP only: never an address a tenant wrote.
//!
//! The two ways in are checked apart: a client that names the database by SNI needs a source
//! in the allow-list; a tunnel needs a token whose digest one of the database's links
//! publishes, from wherever it connects. A tenant can publish digests only for links in its own
//! namespace, each leading to a database in that namespace, so a token opens no other
//! tenant's database.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use tusk_api::{PostgresCluster, PostgresRemoteCluster, names, tunnel_request};

/// The placeholders of a host template.
const CLUSTER_PLACEHOLDER: &str = "{cluster}";
const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// The template that gives each database its external host name, as
/// `tunnel.externalHostTemplate` does: `{cluster}` and `{namespace}` are replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTemplate(String);

/// A host template the router cannot route by.
#[derive(Debug, thiserror::Error)]
#[error(
    "the host template {0:?} must contain {{cluster}} and {{namespace}} and nothing else in braces: \
     the router routes by name and a client sends no name for an address"
)]
pub struct BadTemplate(String);

impl HostTemplate {
    /// Checks `template`: it names each database apart (both placeholders) and no other
    /// placeholder, such as `{serviceIP}`, which gives no name to route by.
    pub fn new(template: &str) -> Result<Self, BadTemplate> {
        let rest = template
            .replace(CLUSTER_PLACEHOLDER, "")
            .replace(NAMESPACE_PLACEHOLDER, "");
        if !template.contains(CLUSTER_PLACEHOLDER)
            || !template.contains(NAMESPACE_PLACEHOLDER)
            || rest.contains(['{', '}'])
        {
            return Err(BadTemplate(template.to_owned()));
        }
        Ok(Self(template.to_ascii_lowercase()))
    }

    /// The host name of `cluster` in `namespace`.
    pub fn host(&self, namespace: &str, cluster: &str) -> String {
        self.0
            .replace(CLUSTER_PLACEHOLDER, cluster)
            .replace(NAMESPACE_PLACEHOLDER, namespace)
    }
}

/// Where one host name leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The cluster's namespace.
    pub namespace: String,
    /// The cluster's name.
    pub cluster: String,
    /// The `-rw` Service's cluster IP and port.
    pub backend: SocketAddr,
    /// The sources it is open to by name (SNI); empty when only tunnels may use it.
    pub allowed: Vec<IpNet>,
    /// The SHA-256 digests (hexadecimal) of the tokens of the database's tunnels.
    pub tunnel_digests: Vec<String>,
}

impl Route {
    /// Whether `source` may use this route.
    pub fn admits(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.allowed.iter().any(|range| range.contains(&source))
    }

    /// Whether a tunnel presenting `token` may use this route.
    pub fn admits_tunnel(&self, token: &str) -> bool {
        let digest = tunnel_request::token_digest(token);
        self.tunnel_digests.contains(&digest)
    }
}

/// What the router does with a connection for a name from a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward it to this route's database.
    Forward(Route),
    /// The client sent no server name.
    NoName,
    /// No database is open under this name.
    UnknownName,
    /// The database is open, but not to this source.
    NotAllowed,
}

/// Every route, by lowercase host name. Lookups are one hash-map probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: HashMap<String, Route>,
}

impl RouteTable {
    /// The table for `clusters`, the Services `service` finds by namespace and name, and the
    /// links (PostgresRemoteClusters) of every namespace.
    pub fn build<'a, 'b, S: std::ops::Deref<Target = Service>>(
        template: &HostTemplate,
        clusters: impl IntoIterator<Item = &'a PostgresCluster>,
        service: impl Fn(&str, &str) -> Option<S>,
        links: impl IntoIterator<Item = &'b PostgresRemoteCluster>,
    ) -> Self {
        let digests = tunnel_digests(links);
        let mut routes = HashMap::new();
        for cluster in clusters {
            if cluster.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let namespace = cluster.namespace().unwrap_or_default();
            let name = cluster.name_any();
            let allowed = allowed_ranges(cluster);
            let tunnel_digests = digests
                .get(&(namespace.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            if allowed.is_empty() && tunnel_digests.is_empty() {
                continue;
            }
            let Some(backend) = service(&namespace, &names::read_write_service(&name))
                .and_then(|service| backend_of(cluster, &service))
            else {
                continue;
            };
            routes.insert(
                template.host(&namespace, &name),
                Route {
                    namespace,
                    cluster: name,
                    backend,
                    allowed,
                    tunnel_digests,
                },
            );
        }
        Self { routes }
    }

    /// A table of the given routes, by host name (lowercased).
    pub fn from_routes(routes: impl IntoIterator<Item = (String, Route)>) -> Self {
        Self {
            routes: routes
                .into_iter()
                .map(|(name, route)| (name.to_ascii_lowercase(), route))
                .collect(),
        }
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// What to do with a connection for `name` (the SNI) from `source`.
    pub fn decide(&self, name: Option<&str>, source: IpAddr) -> Decision {
        let Some(name) = name else {
            return Decision::NoName;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.routes.get(&name) {
            None => Decision::UnknownName,
            Some(route) if !route.admits(source) => Decision::NotAllowed,
            Some(route) => Decision::Forward(route.clone()),
        }
    }

    /// What to do with a tunnel's connection for `name` (from its TunnelRequest, whatever
    /// name the client behind it sent) with `token`. The allow-list does not apply: the token
    /// proves the tunnel is one the database's owner linked.
    pub fn decide_tunnel(&self, name: &str, token: &str) -> Decision {
        match self
            .routes
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
        {
            None => Decision::UnknownName,
            Some(route) if !route.admits_tunnel(token) => Decision::NotAllowed,
            Some(route) => Decision::Forward(route.clone()),
        }
    }
}

/// The digests of tunnel tokens that links publish, by the namespace and name of the cluster
/// each leads to. A link names a cluster in its own namespace only. Links being deleted, and
/// digests of the wrong form, count for nothing.
fn tunnel_digests<'a>(
    links: impl IntoIterator<Item = &'a PostgresRemoteCluster>,
) -> HashMap<(String, String), Vec<String>> {
    let mut digests: HashMap<(String, String), Vec<String>> = HashMap::new();
    for link in links {
        if link.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(digest) = link
            .status
            .as_ref()
            .and_then(|status| status.tunnel_token_sha256.as_deref())
            .filter(|digest| tunnel_request::is_token(digest))
        else {
            continue;
        };
        let key = (
            link.namespace().unwrap_or_default(),
            link.spec.cluster.name.clone(),
        );
        digests.entry(key).or_default().push(digest.to_owned());
    }
    digests
}

/// The cluster's allow-list; empty when it is closed. Entries that are not CIDRs (admission
/// refuses them; an older object may hold one) are skipped, with a warning.
fn allowed_ranges(cluster: &PostgresCluster) -> Vec<IpNet> {
    let Some(access) = cluster.spec.external_access.as_ref() else {
        return Vec::new();
    };
    access
        .allowed_source_ranges
        .iter()
        .filter_map(|range| match range.parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                tracing::warn!(
                    namespace = cluster.namespace().unwrap_or_default(),
                    cluster = cluster.name_any(),
                    range,
                    "ignoring an allowed source range that is not a CIDR"
                );
                None
            }
        })
        .collect()
}

/// The address of the cluster's `-rw` Service, when the operator made it for this very
/// cluster: its controller is the cluster (by uid), it selects pods (so the cluster IP leads
/// to them, not to addresses written into Endpoints by hand) and it has a cluster IP.
fn backend_of(cluster: &PostgresCluster, service: &Service) -> Option<SocketAddr> {
    let uid = cluster.uid()?;
    let controlled = service
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid);
    let spec = service.spec.as_ref()?;
    let selects_pods = spec
        .selector
        .as_ref()
        .is_some_and(|selector| !selector.is_empty());
    let cluster_ip_type = spec.type_.as_deref().is_none_or(|kind| kind == "ClusterIP");
    if !controlled || !selects_pods || !cluster_ip_type {
        return None;
    }
    let ip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let port = spec
        .ports
        .as_ref()?
        .iter()
        .find(|port| port.port == i32::from(names::POSTGRES_PORT))?
        .port;
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> HostTemplate {
        HostTemplate::new("{cluster}.{namespace}.db.example.com").unwrap()
    }

    fn cluster(namespace: &str, name: &str, ranges: &[&str]) -> PostgresCluster {
        serde_json::from_value(json!({
            "apiVersion": "postgres.tusk.dev/v1",
            "kind": "PostgresCluster",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {
                "displayName": name, "memorySize": 1, "postgresDiskSize": 1,
                "externalAccess": {"allowedSourceRanges": ranges}
            }
        }))
        .unwrap()
    }

    fn service(namespace: &str, cluster: &str, owner_uid: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{cluster}-rw"), "namespace": namespace,
                "ownerReferences": [{
                    "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
                    "name": cluster, "uid": owner_uid, "controller": true
                }]
            },
            "spec": {
                "clusterIP": ip, "selector": {"postgres.tusk.dev/cluster": cluster},
                "ports": [{"name": "postgres", "port": 5432}]
            }
        }))
        .unwrap()
    }

    fn table(clusters: &[PostgresCluster], services: &[Service]) -> RouteTable {
        table_with_links(clusters, services, &[])
    }

    fn table_with_links(
        clusters: &[PostgresCluster],
        services: &[Service],
        links: &[PostgresRemoteCluster],
    ) -> RouteTable {
        RouteTable::build(
            &template(),
            clusters,
            |namespace, name| {
                services.iter().find(|service| {
                    service.namespace().as_deref() == Some(namespace) && service.name_any() == name
                })
            },
            links,
        )
    }

    fn link(namespace: &str, cluster: &str, token: &str) -> PostgresRemoteCluster {
        serde_json::from_value(json!({
            "apiVersion": "postgres.tusk.dev/v1",
            "kind": "PostgresRemoteCluster",
            "metadata": {"name": format!("{cluster}-link"), "namespace": namespace},
            "spec": {"cluster": {"name": cluster}, "remoteCluster": {"name": "kubeconfig"}},
            "status": {"tunnelTokenSha256": tunnel_request::token_digest(token)}
        }))
        .unwrap()
    }

    #[test]
    fn a_tunnel_token_opens_its_own_database_only_and_not_to_names() {
        let (shop_token, zoo_token) = ("1".repeat(64), "2".repeat(64));
        // elephant is linked, not open; mammoth, in another tenant's namespace, is open and
        // linked with its own token.
        let clusters = [
            cluster("shop", "elephant", &[]),
            cluster("zoo", "mammoth", &["0.0.0.0/0"]),
        ];
        let services = [
            service("shop", "elephant", "uid-elephant", "10.96.0.10"),
            service("zoo", "mammoth", "uid-mammoth", "10.96.0.11"),
        ];
        // The zoo tenant also links a cluster named elephant in its own namespace, with the
        // shop tunnel's digest copied: it must not reach shop's elephant with its own token.
        let links = [
            link("shop", "elephant", &shop_token),
            link("zoo", "mammoth", &zoo_token),
            link("zoo", "elephant", &zoo_token),
            link("zoo", "elephant", &shop_token),
        ];
        let table = table_with_links(&clusters, &services, &links);
        let elephant = "elephant.shop.db.example.com";
        let Decision::Forward(route) = table.decide_tunnel(elephant, &shop_token) else {
            panic!("the shop tunnel reaches elephant");
        };
        assert_eq!(route.backend, "10.96.0.10:5432".parse().unwrap());
        assert_eq!(
            table.decide_tunnel(elephant, &zoo_token),
            Decision::NotAllowed
        );
        assert_eq!(
            table.decide_tunnel("mammoth.zoo.db.example.com", &shop_token),
            Decision::NotAllowed
        );
        assert_eq!(
            table.decide_tunnel("elephant.zoo.db.example.com", &shop_token),
            Decision::UnknownName
        );
        // Linked but not open: no client reaches elephant by its name.
        assert_eq!(
            table.decide(Some(elephant), ip("203.0.113.9")),
            Decision::NotAllowed
        );
        // Unlinking closes the tunnel's way in.
        let unlinked = table_with_links(&clusters, &services, &links[1..]);
        assert_eq!(
            unlinked.decide_tunnel(elephant, &shop_token),
            Decision::UnknownName
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_name_leads_to_its_own_database_from_allowed_sources_only() {
        let clusters = [
            cluster("shop", "elephant", &["203.0.113.0/24", "2001:db8::/32"]),
            cluster("zoo", "mammoth", &["0.0.0.0/0"]),
        ];
        let services = [
            service("shop", "elephant", "uid-elephant", "10.96.0.10"),
            service("zoo", "mammoth", "uid-mammoth", "10.96.0.11"),
        ];
        let table = table(&clusters, &services);
        assert_eq!(table.len(), 2);
        let Decision::Forward(route) =
            table.decide(Some("Elephant.Shop.db.example.com."), ip("203.0.113.9"))
        else {
            panic!("elephant is routed");
        };
        assert_eq!(route.backend, "10.96.0.10:5432".parse().unwrap());
        assert_eq!(
            (route.namespace.as_str(), route.cluster.as_str()),
            ("shop", "elephant")
        );
        assert!(matches!(
            table.decide(Some("elephant.shop.db.example.com"), ip("2001:db8::1")),
            Decision::Forward(_)
        ));
        // An IPv4 client seen through an IPv6 socket is still that IPv4 client.
        assert!(matches!(
            table.decide(
                Some("elephant.shop.db.example.com"),
                ip("::ffff:203.0.113.9")
            ),
            Decision::Forward(_)
        ));
        assert_eq!(
            table.decide(Some("elephant.shop.db.example.com"), ip("198.51.100.1")),
            Decision::NotAllowed
        );
        assert_eq!(
            table.decide(Some("elephant.zoo.db.example.com"), ip("203.0.113.9")),
            Decision::UnknownName
        );
        assert_eq!(table.decide(None, ip("203.0.113.9")), Decision::NoName);
    }

    #[test]
    fn closed_deleted_or_unproven_clusters_have_no_route() {
        let mut deleted = cluster("shop", "deleted", &["0.0.0.0/0"]);
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let clusters = [
            cluster("shop", "closed", &[]),
            cluster("shop", "garbage", &["not a range"]),
            deleted,
            cluster("shop", "forged", &["0.0.0.0/0"]),
            cluster("shop", "headless", &["0.0.0.0/0"]),
            cluster("shop", "noservice", &["0.0.0.0/0"]),
        ];
        let services = [
            service("shop", "closed", "uid-closed", "10.96.0.1"),
            service("shop", "garbage", "uid-garbage", "10.96.0.2"),
            service("shop", "deleted", "uid-deleted", "10.96.0.3"),
            // A Service the tenant made, owned by some other object.
            service("shop", "forged", "uid-someone-else", "10.96.0.4"),
            service("shop", "headless", "uid-headless", "None"),
        ];
        assert!(table(&clusters, &services).is_empty());
    }

    #[test]
    fn a_service_without_a_selector_is_not_a_backend() {
        let clusters = [cluster("shop", "elephant", &["0.0.0.0/0"])];
        let mut manual = service("shop", "elephant", "uid-elephant", "10.96.0.10");
        manual.spec.as_mut().unwrap().selector = None;
        assert!(table(&clusters, &[manual]).is_empty());
    }

    #[test]
    fn templates_must_name_each_database() {
        assert_eq!(
            template().host("shop", "elephant"),
            "elephant.shop.db.example.com"
        );
        for bad in [
            "{serviceIP}",
            "{cluster}.db.example.com",
            "{cluster}.{namespace}.{x}",
        ] {
            assert!(HostTemplate::new(bad).is_err(), "{bad}");
        }
    }
}
