//! The router's metrics, served on `/metrics`: connections routed, refused (by reason) and
//! open, and the routes in the table.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why, such as `unknown_name`; see [`crate::server::Refusal::reason`].
    pub reason: &'static str,
}

/// The router's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    refused: Family<RefusalLabels, Counter>,
    routed: Counter,
    open: Gauge,
    routes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tusk_router");
        let refused = Family::<RefusalLabels, Counter>::default();
        let routed = Counter::default();
        let open = Gauge::default();
        let routes = Gauge::default();
        registry.register(
            "connections_refused",
            "Connections refused, by reason",
            refused.clone(),
        );
        registry.register(
            "connections_routed",
            "Connections forwarded to a database",
            routed.clone(),
        );
        registry.register(
            "connections_open",
            "Routed connections open now",
            open.clone(),
        );
        registry.register("routes", "Host names in the routing table", routes.clone());
        Self {
            registry: Arc::new(registry),
            refused,
            routed,
            open,
            routes,
        }
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts a routed connection, open until the returned guard is dropped.
    pub fn routed(&self) -> OpenGuard {
        self.routed.inc();
        self.open.inc();
        OpenGuard(self.open.clone())
    }

    /// Records the size of the routing table.
    pub fn set_routes(&self, routes: usize) {
        self.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Counts one routed connection as open while it lives.
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
