//! The object store: every collection in memory behind one lock, one global resourceVersion,
//! a bounded history of changes for watch resumption, and a broadcast of each change.
//!
//! The history is bounded by time as well as by count, as kube-apiserver's watch cache is: it
//! keeps the changes of the last 75 seconds (its event freshness: the bookmark interval and 15
//! seconds), and a watch resuming from an older resourceVersion is told 410 Gone, "too old
//! resource version". A history bounded only by count kept every changed object (and its
//! serialized watch line) for thousands of changes: memory that grew with what had happened,
//! megabytes per backup, rather than with what exists.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use super::persist::Persist;
use super::resources::{
    CRD_STORAGE, EVENTS_STORAGE, Registry, crd_resource_types, crd_storage_key,
};

/// Where an object lives in its collection: namespace (empty when cluster-scoped) and name.
pub(crate) type Key = (String, String);

/// The most changes kept for watches resuming from an older resourceVersion.
const HISTORY_LIMIT: usize = 20_000;
/// How long a change stays in the history: the event freshness of kube-apiserver's watch cache.
const HISTORY_RETENTION: Duration = Duration::from_secs(75);
/// How many changes a slow watcher may fall behind before it is told to relist.
const BROADCAST_CAPACITY: usize = 65_536;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, shared by the history and every watcher.
pub(crate) struct Change {
    pub rv: u64,
    pub storage: Arc<str>,
    pub event_type: EventType,
    pub object: Arc<Value>,
    /// The object before the change, so that filtered watches can tell when it stops matching.
    pub previous: Option<Arc<Value>>,
    /// The watch line in the stored form, serialized once for every watcher.
    line: OnceLock<Bytes>,
    /// When it was committed, for the history's retention.
    committed: Instant,
}

impl Change {
    /// `{"type":..,"object":..}\n`, serialized on first use.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line(self.event_type.as_str(), &self.object))
            .clone()
    }
}

/// Serializes one watch event line.
pub(crate) fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event_type.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Everything under the lock.
pub(crate) struct State {
    pub registry: Registry,
    pub rv: u64,
    pub collections: HashMap<Arc<str>, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    /// The newest resourceVersion whose changes are no longer all in `history`.
    pub compacted_through: u64,
    /// When each Event was last written: kube-apiserver stores Events under an etcd lease of
    /// `--event-ttl` that every write renews, so an Event goes that long after its last write.
    event_written: HashMap<Key, Instant>,
}

impl State {
    pub fn get(&self, storage: &str, key: &Key) -> Option<&Arc<Value>> {
        self.collections.get(storage)?.get(key)
    }

    /// Objects of one collection, in one namespace or all, in key order.
    pub fn objects<'a>(
        &'a self,
        storage: &str,
        namespace: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a> {
        let Some(collection) = self.collections.get(storage) else {
            return Box::new(std::iter::empty());
        };
        match namespace {
            Some(namespace) => Box::new(
                collection
                    .range((namespace.to_string(), String::new())..)
                    .take_while(move |(key, _)| key.0 == namespace),
            ),
            None => Box::new(collection.iter()),
        }
    }

    /// The objects of one collection (in one namespace or all) as they were at `rv`, in key
    /// order, or `None` when changes since then were compacted away: the current objects with
    /// every later change of the collection undone, newest first.
    pub fn snapshot(
        &self,
        storage: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Option<BTreeMap<Key, Arc<Value>>> {
        if rv < self.compacted_through {
            return None;
        }
        let mut objects: BTreeMap<Key, Arc<Value>> = self
            .objects(storage, namespace)
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect();
        let start = self.history.partition_point(|c| c.rv <= rv);
        for change in self.history.range(start..).rev() {
            if &*change.storage != storage {
                continue;
            }
            let key = object_key(&change.object);
            if namespace.is_some_and(|namespace| key.0 != namespace) {
                continue;
            }
            match &change.previous {
                Some(previous) => objects.insert(key, previous.clone()),
                None => objects.remove(&key),
            };
        }
        Some(objects)
    }

    /// Drops the changes older than the retention, and the oldest beyond the limit.
    fn compact_history(&mut self) {
        while let Some(oldest) = self.history.front() {
            if self.history.len() <= HISTORY_LIMIT && oldest.committed.elapsed() < HISTORY_RETENTION
            {
                break;
            }
            self.compacted_through = oldest.rv;
            self.history.pop_front();
        }
    }

    /// Changes after `rv`, or `None` when some of them were compacted away.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted_through {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }
}

/// The store, shared by the HTTP handlers, the watchers and the garbage collector.
pub(crate) struct Store {
    state: RwLock<State>,
    changes: broadcast::Sender<Arc<Change>>,
    persist: Option<Persist>,
    /// Woken after every deletion so that the garbage collector runs promptly.
    pub gc_wake: Notify,
}

/// A write transaction: changes made through it are committed, broadcast and persisted together.
pub(crate) struct Txn<'a> {
    pub state: &'a mut State,
    changes: Vec<Arc<Change>>,
    deleted_something: bool,
}

impl Txn<'_> {
    fn next_rv(&mut self) -> u64 {
        self.state.rv += 1;
        self.state.rv
    }

    /// Stores `object` (new or replacing the old one) under a new resourceVersion.
    pub fn put(&mut self, storage: &Arc<str>, mut object: Value) -> Arc<Value> {
        let rv = self.next_rv();
        set_resource_version(&mut object, rv);
        let key = object_key(&object);
        let object = Arc::new(object);
        let collection = self.state.collections.entry(storage.clone()).or_default();
        if &**storage == EVENTS_STORAGE {
            self.state.event_written.insert(key.clone(), Instant::now());
        }
        let previous = collection.insert(key, object.clone());
        let event_type = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        if &**storage == CRD_STORAGE {
            register_crd(&mut self.state.registry, &object);
        }
        self.record(rv, storage, event_type, object.clone(), previous);
        object
    }

    /// Removes an object for good; its DELETED event carries a new resourceVersion.
    pub fn remove(&mut self, storage: &Arc<str>, key: &Key) -> Option<Arc<Value>> {
        let previous = self.state.collections.get_mut(storage)?.remove(key)?;
        if &**storage == EVENTS_STORAGE {
            self.state.event_written.remove(key);
        }
        let rv = self.next_rv();
        let mut last = (*previous).clone();
        set_resource_version(&mut last, rv);
        let last = Arc::new(last);
        if &**storage == CRD_STORAGE
            && let Some(crd_storage) = crd_storage_key(&previous)
        {
            self.state.registry.remove_storage(&crd_storage);
        }
        self.deleted_something = true;
        self.record(
            rv,
            storage,
            EventType::Deleted,
            last.clone(),
            Some(previous),
        );
        Some(last)
    }

    fn record(
        &mut self,
        rv: u64,
        storage: &Arc<str>,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        self.changes.push(Arc::new(Change {
            rv,
            storage: storage.clone(),
            event_type,
            object,
            previous,
            line: OnceLock::new(),
            committed: Instant::now(),
        }));
    }
}

/// Serves a CRD's versions (again), replacing whatever it served before.
fn register_crd(registry: &mut Registry, crd: &Value) {
    let Some(storage) = crd_storage_key(crd) else {
        return;
    };
    // A CRD only reaches the store after its versions compiled, so this cannot fail here.
    if let Ok(types) = crd_resource_types(crd) {
        registry.remove_storage(&storage);
        for rt in types {
            registry.insert(rt);
        }
    }
}

/// When a stored Event was last written, as near as its own timestamps tell: the newest of
/// its creation, last, event and series times (now when it has none).
fn last_written(event: &Value) -> Instant {
    let now = Instant::now();
    let newest = [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
    ]
    .iter()
    .filter_map(|pointer| {
        event
            .pointer(pointer)?
            .as_str()?
            .parse::<jiff::Timestamp>()
            .ok()
    })
    .max();
    let Some(newest) = newest else {
        return now;
    };
    let age = jiff::Timestamp::now().duration_since(newest);
    let age = std::time::Duration::try_from(age).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

pub(crate) fn object_key(object: &Value) -> Key {
    let text = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("namespace"), text("name"))
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// A store holding `objects` (loaded from disk, or the initial namespaces) at `rv`.
    pub fn new(rv: u64, objects: Vec<(Arc<str>, Value)>, persist: Option<Persist>) -> Self {
        let mut state = State {
            registry: Registry::builtin(),
            rv,
            collections: HashMap::new(),
            history: VecDeque::new(),
            compacted_through: rv,
            event_written: HashMap::new(),
        };
        // CRDs first, so that their objects' collections are served.
        for (storage, object) in &objects {
            if &**storage == CRD_STORAGE {
                register_crd(&mut state.registry, object);
            }
        }
        for (storage, object) in objects {
            let key = object_key(&object);
            if &*storage == EVENTS_STORAGE {
                state
                    .event_written
                    .insert(key.clone(), last_written(&object));
            }
            state
                .collections
                .entry(storage)
                .or_default()
                .insert(key, Arc::new(object));
        }
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        Store {
            state: RwLock::new(state),
            changes,
            persist,
            gc_wake: Notify::new(),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (writes are applied
        // by `Txn` methods that do not panic), so a poisoned lock is still consistent.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` under the write lock and commits whatever it changed, even when it fails after
    /// changing something (every change in `Txn` is complete on its own).
    pub fn write<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut txn = Txn {
            state: &mut guard,
            changes: Vec::new(),
            deleted_something: false,
        };
        let result = f(&mut txn);
        let Txn {
            changes,
            deleted_something,
            ..
        } = txn;
        for change in &changes {
            if let Some(persist) = &self.persist {
                persist.record(change);
            }
            guard.history.push_back(change.clone());
            // No receiver is not an error: nobody is watching.
            let _ = self.changes.send(change.clone());
        }
        if !changes.is_empty() {
            guard.compact_history();
        }
        drop(guard);
        if deleted_something {
            self.gc_wake.notify_one();
        }
        result
    }

    /// Subscribes to changes; call it under the read lock to see no change twice or never.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Waits (at most `timeout`) until the store has reached resourceVersion `rv`, as
    /// kube-apiserver's watch cache waits for etcd before answering a request for a
    /// resourceVersion it has not seen yet. Fails with the current resourceVersion.
    pub async fn wait_until(&self, rv: u64, timeout: Duration) -> Result<(), u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = {
            let state = self.read();
            if state.rv >= rv {
                return Ok(());
            }
            self.subscribe()
        };
        loop {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(change)) if change.rv >= rv => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    if self.read().rv >= rv {
                        return Ok(());
                    }
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    return Err(self.read().rv);
                }
            }
        }
    }

    /// Drops the history's changes older than its retention, also while nothing is written.
    pub fn compact_expired_history(&self) {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.compact_history();
    }

    /// Forgets the whole watch history, so that any watch resuming from an older
    /// resourceVersion is told 410 Gone (as after an etcd compaction).
    pub fn compact(&self) {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.history.clear();
        guard.compacted_through = guard.rv;
    }

    /// Deletes every Event last written `ttl` or more ago, as etcd does when its lease
    /// expires: at once, whatever its finalizers, with a DELETED watch event. Returns how many
    /// went.
    pub fn expire_events(&self, ttl: Duration) -> usize {
        let expired: Vec<Key> = {
            let state = self.read();
            state
                .event_written
                .iter()
                .filter(|(_, written)| written.elapsed() >= ttl)
                .map(|(key, _)| key.clone())
                .collect()
        };
        if expired.is_empty() {
            return 0;
        }
        let storage: Arc<str> = Arc::from(EVENTS_STORAGE);
        self.write(|txn| {
            let mut removed = 0;
            for key in &expired {
                // Written again since it was read: its lease was renewed.
                let still_expired = txn
                    .state
                    .event_written
                    .get(key)
                    .is_some_and(|written| written.elapsed() >= ttl);
                if still_expired && txn.remove(&storage, key).is_some() {
                    removed += 1;
                }
            }
            removed
        })
    }

    /// Waits until everything committed so far is on disk.
    pub fn flush(&self) {
        if let Some(persist) = &self.persist {
            persist.flush();
        }
    }
}
