//! kube-apiserver's own Service: `default/kubernetes`, with the first address of the service
//! range, port 443 (`https`) aimed at the API server's port, and the Endpoints and
//! EndpointSlice (both named `kubernetes`) listing the API server. Like kube-apiserver's
//! kubernetes-service controller and endpoint reconciler, it puts them back when they are
//! deleted or changed, and points them at the port this start listens on.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::namespace_defaults::{reconcile_on_changes, write_options};
use super::ops::{self, is_deleting};
use super::resources::storage_key;
use super::services::SERVICE_RANGE;
use super::store::{Key, Store};

const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
const MANAGER: &str = "kube-apiserver";

/// The Service's address: the first of the service range, as kube-apiserver takes it.
fn service_ip() -> String {
    let (base, _) = SERVICE_RANGE;
    std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
}

/// The three objects and the parts of each that are kept as wanted.
fn wanted(api: SocketAddr) -> [(&'static str, &'static str, Value, &'static [&'static str]); 3] {
    let ip = api.ip().to_string();
    let port = api.port();
    [
        (
            "",
            "services",
            json!({
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": {"name": NAME, "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": service_ip(),
                    "sessionAffinity": "None",
                    "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}],
                },
            }),
            &["/spec/ports"],
        ),
        (
            "",
            "endpoints",
            json!({
                "kind": "Endpoints",
                "apiVersion": "v1",
                "metadata": {"name": NAME, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{
                    "addresses": [{"ip": ip}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }],
            }),
            &["/subsets"],
        ),
        (
            "discovery.k8s.io",
            "endpointslices",
            json!({
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"name": NAME, "labels": {"kubernetes.io/service-name": NAME}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }),
            &["/endpoints", "/ports"],
        ),
    ]
}

/// Runs until `shutdown`, keeping the Service and its endpoints as the API server at `api`
/// wants them.
pub(crate) async fn run(store: Arc<Store>, api: SocketAddr, shutdown: CancellationToken) {
    let wanted = wanted(api);
    let watched: Vec<Arc<str>> = wanted
        .iter()
        .map(|(group, plural, _, _)| storage_key(group, plural))
        .collect();
    reconcile_on_changes(&store, &watched, &shutdown, || reconcile(&store, &wanted)).await;
}

fn reconcile(store: &Store, wanted: &[(&str, &str, Value, &[&str])]) {
    let key: Key = (NAMESPACE.to_string(), NAME.to_string());
    for (group, plural, object, kept) in wanted {
        let (rt, existing) = {
            let state = store.read();
            let Some(rt) = state.registry.get(group, "v1", plural) else {
                continue;
            };
            let existing = state.get(&rt.storage, &key).cloned();
            (rt, existing)
        };
        let mut options = write_options(MANAGER);
        let outcome = match existing {
            None => ops::create(store, &rt, Some(NAMESPACE), object.clone(), &mut options),
            Some(existing)
                if !is_deleting(&existing)
                    && kept
                        .iter()
                        .any(|path| existing.pointer(path) != object.pointer(path)) =>
            {
                let mut restored = (*existing).clone();
                for path in kept.iter() {
                    set_pointer(&mut restored, path, object.pointer(path).cloned());
                }
                ops::replace(store, &rt, &key, restored, None, &mut options)
            }
            Some(_) => continue,
        };
        // A race with another writer brings another change, hence another pass.
        if let Err(error) = outcome {
            tracing::debug!(plural, message = %error.message, "the kubernetes Service's object not written");
        }
    }
}

/// Sets (or, given `None`, removes) the field at a JSON pointer whose parent object exists.
fn set_pointer(value: &mut Value, path: &str, field: Option<Value>) {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    if let Some(parent) = value.pointer_mut(parent).and_then(Value::as_object_mut) {
        match field {
            Some(field) => {
                parent.insert(name.to_string(), field);
            }
            None => {
                parent.remove(name);
            }
        }
    }
}
