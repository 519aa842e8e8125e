//! The garbage collector and the namespace and CRD cleanup controllers of the sandbox.
//!
//! Like kube-controller-manager's, it works from the current state alone: after every deletion
//! (and once a second as a safety net) it removes dependents whose owners are all gone, honours
//! the `foregroundDeletion` and `orphan` finalizers, empties terminating namespaces and deleted
//! CRDs, and releases them once they are empty. It also drops Events once their TTL has
//! passed, which etcd does for kube-apiserver, and the changes older than the watch history
//! keeps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::apiserver::ops::{
    self, CRD_CLEANUP_FINALIZER, DeleteRequest, FOREGROUND_FINALIZER, NAMESPACE_FINALIZER,
    ORPHAN_FINALIZER, Propagation, finalizers, is_deleting, meta_str, set_finalizers,
};
use crate::apiserver::resources::{CRD_STORAGE, NAMESPACE_STORAGE, ResourceType, crd_storage_key};
use crate::apiserver::store::{Key, Store};

const SAFETY_NET: Duration = Duration::from_secs(1);

/// Runs until `shutdown`, also dropping Events `event_ttl` after their last write.
pub(crate) async fn run(store: Arc<Store>, event_ttl: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = store.gc_wake.notified() => {}
            _ = tokio::time::sleep(SAFETY_NET) => {}
            _ = shutdown.cancelled() => return,
        }
        store.expire_events(event_ttl);
        store.compact_expired_history();
        // Several passes, as one deletion can free the next (a foreground chain, a namespace).
        for _ in 0..8 {
            if !collect(&store) {
                break;
            }
        }
    }
}

struct Entry {
    storage: Arc<str>,
    key: Key,
    object: Arc<Value>,
}

fn owner_uids(object: &Value) -> Vec<(String, bool)> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| {
                    let uid = r.get("uid")?.as_str()?.to_string();
                    let blocking = r
                        .get("blockOwnerDeletion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    Some((uid, blocking))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One pass over the store. Returns whether it changed anything.
pub(crate) fn collect(store: &Store) -> bool {
    let (live, owned, deleting, types, namespaced_objects) = {
        let state = store.read();
        let mut live = HashSet::new();
        let mut owned = Vec::new();
        let mut deleting = Vec::new();
        let mut namespaced_objects: HashMap<String, Vec<(Arc<str>, Key, bool)>> = HashMap::new();
        let mut types: HashMap<Arc<str>, Arc<ResourceType>> = HashMap::new();
        for rt in state.registry.all() {
            types
                .entry(rt.storage.clone())
                .or_insert_with(|| rt.clone());
        }
        for (storage, collection) in &state.collections {
            for (key, object) in collection {
                if let Some(uid) = meta_str(object, "uid") {
                    live.insert(uid.to_string());
                }
                let entry = || Entry {
                    storage: storage.clone(),
                    key: key.clone(),
                    object: object.clone(),
                };
                if object.pointer("/metadata/ownerReferences").is_some() {
                    owned.push(entry());
                }
                if is_deleting(object) {
                    deleting.push(entry());
                }
                if !key.0.is_empty() {
                    namespaced_objects.entry(key.0.clone()).or_default().push((
                        storage.clone(),
                        key.clone(),
                        is_deleting(object),
                    ));
                }
            }
        }
        (live, owned, deleting, types, namespaced_objects)
    };
    let mut changed = false;
    let delete = |storage: &Arc<str>, key: &Key, propagation: Propagation| -> bool {
        let Some(rt) = types.get(storage) else {
            return false;
        };
        let request = DeleteRequest {
            propagation: Some(propagation),
            ..Default::default()
        };
        ops::delete(store, rt, key, &request).is_ok()
    };
    let edit = |storage: &Arc<str>, key: &Key, f: &mut dyn FnMut(&mut Value)| -> bool {
        let Some(rt) = types.get(storage) else {
            return false;
        };
        ops::edit(store, rt, key, f).is_ok()
    };

    // Owners held by foregroundDeletion or orphan.
    for owner in &deleting {
        let owner_finalizers = finalizers(&owner.object);
        let Some(uid) = meta_str(&owner.object, "uid") else {
            continue;
        };
        let dependents: Vec<&Entry> = owned
            .iter()
            .filter(|d| owner_uids(&d.object).iter().any(|(u, _)| u == uid))
            .collect();
        if owner_finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            for dependent in &dependents {
                changed |= edit(&dependent.storage, &dependent.key, &mut |object| {
                    if let Some(refs) = object
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                        if refs.is_empty()
                            && let Some(metadata) =
                                object.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            metadata.remove("ownerReferences");
                        }
                    }
                });
            }
            changed |= edit(&owner.storage, &owner.key, &mut |object| {
                let list = finalizers(object)
                    .into_iter()
                    .filter(|f| f != ORPHAN_FINALIZER)
                    .collect();
                set_finalizers(object, list);
            });
            continue;
        }
        if owner_finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            for dependent in &dependents {
                if !is_deleting(&dependent.object) {
                    changed |= delete(&dependent.storage, &dependent.key, Propagation::Foreground);
                }
            }
            let blocked = dependents.iter().any(|d| {
                owner_uids(&d.object)
                    .iter()
                    .any(|(u, blocking)| u == uid && *blocking)
            });
            if !blocked {
                changed |= edit(&owner.storage, &owner.key, &mut |object| {
                    let list = finalizers(object)
                        .into_iter()
                        .filter(|f| f != FOREGROUND_FINALIZER)
                        .collect();
                    set_finalizers(object, list);
                });
            }
        }
    }

    // Dependents whose owners are gone.
    for dependent in &owned {
        let owners = owner_uids(&dependent.object);
        if owners.is_empty() {
            continue;
        }
        let (present, absent): (Vec<_>, Vec<_>) =
            owners.iter().partition(|(u, _)| live.contains(u));
        if present.is_empty() {
            if !is_deleting(&dependent.object) {
                changed |= delete(&dependent.storage, &dependent.key, Propagation::Background);
            }
        } else if !absent.is_empty() {
            let gone: HashSet<&str> = absent.iter().map(|(u, _)| u.as_str()).collect();
            changed |= edit(&dependent.storage, &dependent.key, &mut |object| {
                if let Some(refs) = object
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| {
                        !r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| gone.contains(u))
                    });
                }
            });
        }
    }

    // Terminating namespaces and deleted CRDs: empty them, then let them go.
    for entry in &deleting {
        if &*entry.storage == NAMESPACE_STORAGE {
            let name = &entry.key.1;
            let contents = namespaced_objects
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (storage, key, already) in contents {
                if !already {
                    changed |= delete(storage, key, Propagation::Background);
                }
            }
            if contents.is_empty() {
                changed |= edit(&entry.storage, &entry.key, &mut |object| {
                    if let Some(list) = object
                        .pointer_mut("/spec/finalizers")
                        .and_then(Value::as_array_mut)
                    {
                        list.retain(|f| f != NAMESPACE_FINALIZER);
                    }
                });
            }
        } else if &*entry.storage == CRD_STORAGE
            && finalizers(&entry.object)
                .iter()
                .any(|f| f == CRD_CLEANUP_FINALIZER)
        {
            let Some(storage) = crd_storage_key(&entry.object) else {
                continue;
            };
            let keys: Vec<(Key, bool)> = {
                let state = store.read();
                state
                    .objects(&storage, None)
                    .map(|(k, o)| (k.clone(), is_deleting(o)))
                    .collect()
            };
            let rt = store
                .read()
                .registry
                .for_storage(&storage)
                .into_iter()
                .next();
            if let Some(rt) = &rt {
                for (key, already) in &keys {
                    if !already {
                        let request = DeleteRequest {
                            propagation: Some(Propagation::Background),
                            ..Default::default()
                        };
                        changed |= ops::delete(store, rt, key, &request).is_ok();
                    }
                }
            }
            if keys.is_empty() || rt.is_none() {
                if rt.is_none() {
                    // Nothing serves these objects any more; drop them with the CRD.
                    store.write(|txn| {
                        for (key, _) in &keys {
                            txn.remove(&storage, key);
                        }
                    });
                }
                changed |= edit(&entry.storage, &entry.key, &mut |object| {
                    let list = finalizers(object)
                        .into_iter()
                        .filter(|f| f != CRD_CLEANUP_FINALIZER)
                        .collect();
                    set_finalizers(object, list);
                });
            }
        }
    }
    changed
}
