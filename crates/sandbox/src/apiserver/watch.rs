//! Watch streams: newline-delimited JSON events over a chunked response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::ext::{FieldSelector, LabelSelector, render_table};
use super::ops::present;
use super::resources::ResourceType;
use super::store::{Change, EventType, Store, watch_line};

/// How often BOOKMARK events go to watchers that asked for them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// kube-apiserver's minimum request timeout, used when the client does not name one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What to watch and how.
pub(crate) struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub resource_version: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    /// When the client asked for Tables (`as=Table`): the `includeObject` of each row.
    pub table: Option<String>,
}

impl WatchRequest {
    /// Whether a stored object is one this watch wants.
    pub fn matches(&self, stored: &Value) -> bool {
        if self.rt.namespaced
            && let Some(namespace) = &self.namespace
        {
            let object_namespace = stored
                .pointer("/metadata/namespace")
                .and_then(Value::as_str);
            if object_namespace != Some(namespace.as_str()) {
                return false;
            }
        }
        if let Some(labels) = &self.labels
            && !labels.matches(&labels_of(stored))
        {
            return false;
        }
        if let Some(fields) = &self.fields
            && !fields.matches(&present(&self.rt, stored))
        {
            return false;
        }
        true
    }

    /// The line to send for a change, if any: a change that makes an object start or stop
    /// matching a selector is an ADDED or a DELETED for this watcher.
    fn render(&self, change: &Change) -> Option<Bytes> {
        if change.storage != self.rt.storage {
            return None;
        }
        let now_matches = self.matches(&change.object);
        let filtered = self.labels.is_some() || self.fields.is_some();
        let event_type = match change.event_type {
            EventType::Modified if filtered => {
                let before = change.previous.as_deref().is_some_and(|p| self.matches(p));
                match (before, now_matches) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            event_type if now_matches => event_type,
            _ => return None,
        };
        if event_type == change.event_type && !needs_conversion(&self.rt, &change.object) {
            Some(change.line())
        } else {
            Some(watch_line(
                event_type.as_str(),
                &present(&self.rt, &change.object),
            ))
        }
    }

    /// The line as the client asked for it: with `as=Table`, each event's object becomes a
    /// Table of one row, whose column definitions only the first event carries (as
    /// kube-apiserver sets `noHeaders` after the first); ERROR events keep their Status.
    fn as_requested(&self, line: Bytes, headers_sent: &mut bool) -> Bytes {
        let Some(include) = &self.table else {
            return line;
        };
        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
            return line;
        };
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(object) = event.get("object").filter(|_| event_type != "ERROR") else {
            return line;
        };
        let resource_version = object
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or_else(|| json!(""));
        let mut table = render_table(
            &self.rt.api_version(),
            &self.rt.kind,
            self.rt.columns.as_deref(),
            std::slice::from_ref(object),
            include,
            json!({"resourceVersion": resource_version}),
        );
        if *headers_sent {
            table["columnDefinitions"] = Value::Null;
        }
        *headers_sent = true;
        watch_line(event_type, &table)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata});
        watch_line("BOOKMARK", &object)
    }
}

/// Whether the stored form differs from the served one.
fn needs_conversion(rt: &ResourceType, stored: &Value) -> bool {
    rt.group == "events.k8s.io"
        || (rt.custom
            && stored.get("apiVersion").and_then(Value::as_str) != Some(rt.api_version().as_str()))
}

pub(crate) fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn expired_line(requested: u64, oldest: u64) -> Bytes {
    let error = ApiError::expired(format!("too old resource version: {requested} ({oldest})"));
    watch_line("ERROR", &error.status())
}

/// Starts a watch; its lines arrive on the returned channel until it ends.
pub(crate) fn start(
    store: Arc<Store>,
    request: WatchRequest,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let requested = match request.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let (lines, receiver) = mpsc::channel::<Bytes>(4096);
    // Taking the snapshot and subscribing under one read lock means no change is seen twice
    // or missed.
    let (mut changes, first, mut last_rv) = {
        let state = store.read();
        let changes = store.subscribe();
        let mut first = Vec::new();
        match requested {
            None => {
                for (_, object) in state.objects(
                    &request.rt.storage,
                    request
                        .namespace
                        .as_deref()
                        .filter(|_| request.rt.namespaced),
                ) {
                    if request.matches(object) {
                        first.push(watch_line("ADDED", &present(&request.rt, object)));
                    }
                }
                if request.send_initial_events && request.bookmarks {
                    first.push(request.bookmark(state.rv, true));
                }
            }
            Some(rv) => match state.changes_since(rv) {
                Some(replay) => first.extend(replay.iter().filter_map(|c| request.render(c))),
                None => first.push(expired_line(rv, state.compacted_through)),
            },
        }
        let expired = requested.is_some_and(|rv| rv < state.compacted_through);
        (changes, (first, expired), state.rv)
    };
    let (first, expired) = first;
    let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT);
    tokio::spawn(async move {
        let mut headers_sent = false;
        for line in first {
            let line = request.as_requested(line, &mut headers_sent);
            if lines.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => {
                        if change.rv <= last_rv {
                            continue;
                        }
                        last_rv = change.rv;
                        if let Some(line) = request.render(&change)
                            && lines.send(request.as_requested(line, &mut headers_sent)).await.is_err() {
                                return;
                            }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // This watcher fell too far behind: like a compacted etcd, tell it to relist.
                        let _ = lines.send(expired_line(last_rv, last_rv + 1)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmarks.tick(), if request.bookmarks => {
                    let bookmark = request.as_requested(request.bookmark(last_rv, false), &mut headers_sent);
                    if lines.send(bookmark).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = lines.closed() => return,
            }
        }
    });
    Ok(receiver)
}
