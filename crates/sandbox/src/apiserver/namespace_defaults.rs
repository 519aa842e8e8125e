//! kube-controller-manager's per-namespace publishers: every active namespace has a
//! ServiceAccount named `default` (the ServiceAccount controller), so that pods which name no
//! ServiceAccount can run, and a ConfigMap `kube-root-ca.crt` holding the API server's CA (the
//! root-CA publisher), which in-cluster clients use to verify the API server. Both are put back
//! when deleted; the ConfigMap is also put back when edited, as the publisher does.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::ops::{self, FieldValidation, WriteOptions, is_deleting};
use super::resources::NAMESPACE_STORAGE;
use super::store::{Key, Store};

const DEFAULT_ACCOUNT: &str = "default";
/// The root-CA publisher's ConfigMap, and the key of the CA in it.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// The description the publisher writes on its ConfigMap (rootcacertpublisher's `Description`).
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// One object kept in every active namespace.
struct Published {
    plural: &'static str,
    name: &'static str,
    /// The object as first created.
    object: Value,
    /// Whether an existing object must be brought back to `object`'s data and annotations
    /// (the root-CA publisher) or is left to its users (the ServiceAccount).
    enforced: bool,
}

/// Runs until `shutdown`, acting on each change to a namespace or a published object's kind.
pub(crate) async fn run(store: Arc<Store>, ca_pem: String, shutdown: CancellationToken) {
    let published = [
        Published {
            plural: "serviceaccounts",
            name: DEFAULT_ACCOUNT,
            object: json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": DEFAULT_ACCOUNT}}),
            enforced: false,
        },
        Published {
            plural: "configmaps",
            name: ROOT_CA_CONFIG_MAP,
            object: json!({
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {
                    "name": ROOT_CA_CONFIG_MAP,
                    "annotations": {DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION},
                },
                "data": {ROOT_CA_KEY: ca_pem},
            }),
            enforced: true,
        },
    ];
    let watched: Vec<Arc<str>> = published
        .iter()
        .map(|p| super::resources::storage_key("", p.plural))
        .chain([Arc::from(NAMESPACE_STORAGE)])
        .collect();
    reconcile_on_changes(&store, &watched, &shutdown, || {
        reconcile(&store, &published)
    })
    .await;
}

/// Runs `reconcile` once, then after each change to one of the `watched` storage collections,
/// until `shutdown`: the loop of the API server's and controller manager's own publishers.
pub(crate) async fn reconcile_on_changes(
    store: &Store,
    watched: &[Arc<str>],
    shutdown: &CancellationToken,
    mut reconcile: impl FnMut(),
) {
    let mut changes = {
        // Subscribing under the read lock, then reconciling, misses no change.
        let _state = store.read();
        store.subscribe()
    };
    reconcile();
    loop {
        let relevant = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => watched.contains(&change.storage),
                // Fell behind: some changes were not seen, so look at everything.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        if relevant {
            reconcile();
        }
    }
}

/// How a publisher of the control plane writes: as `manager`, unchecked by field validation.
pub(crate) fn write_options(manager: &str) -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_manager: manager.to_string(),
        field_validation: FieldValidation::Ignore,
        warnings: Vec::new(),
        duplicate_fields: Vec::new(),
        user: None,
    }
}

/// Whether `existing` carries the enforced parts of `wanted`: the same data, and its
/// annotations.
fn matches(existing: &Value, wanted: &Value) -> bool {
    let annotations_kept = wanted
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(key, value)| {
            existing
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                == Some(value)
        });
    existing.get("data") == wanted.get("data") && annotations_kept
}

/// Creates each published object where it is missing, and restores the enforced ones.
fn reconcile(store: &Store, published: &[Published]) {
    for wanted in published {
        let (rt, work) = {
            let state = store.read();
            let Some(rt) = state.registry.get("", "v1", wanted.plural) else {
                continue;
            };
            let work: Vec<(String, Option<Arc<Value>>)> = state
                .objects(NAMESPACE_STORAGE, None)
                .filter(|(_, namespace)| !is_deleting(namespace))
                .map(|(key, _)| key.1.clone())
                .filter_map(|namespace| {
                    let key: Key = (namespace.clone(), wanted.name.to_string());
                    match state.get(&rt.storage, &key) {
                        None => Some((namespace, None)),
                        Some(existing)
                            if wanted.enforced
                                && !is_deleting(existing)
                                && !matches(existing, &wanted.object) =>
                        {
                            Some((namespace, Some(existing.clone())))
                        }
                        Some(_) => None,
                    }
                })
                .collect();
            (rt, work)
        };
        for (namespace, existing) in work {
            let mut options = write_options("kube-controller-manager");
            // Losing a race with a user's write, or with the namespace's deletion, is fine:
            // the next change brings another pass.
            let outcome = match existing {
                None => ops::create(
                    store,
                    &rt,
                    Some(&namespace),
                    wanted.object.clone(),
                    &mut options,
                ),
                Some(existing) => {
                    let mut restored = (*existing).clone();
                    restored["data"] = wanted.object["data"].clone();
                    for (key, value) in wanted.object["metadata"]["annotations"]
                        .as_object()
                        .into_iter()
                        .flatten()
                    {
                        restored["metadata"]["annotations"][key] = value.clone();
                    }
                    let key: Key = (namespace.clone(), wanted.name.to_string());
                    ops::replace(store, &rt, &key, restored, None, &mut options)
                }
            };
            if let Err(error) = outcome {
                tracing::debug!(namespace, name = wanted.name, message = %error.message, "published object not written");
            }
        }
    }
}
