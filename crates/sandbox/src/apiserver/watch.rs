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
use super::list_options::{FRESHNESS_WAIT, TOO_LARGE_RETRY_SECONDS};
use super::ops::present;
use super::resources::ResourceType;
use super::store::{Change, EventType, Store, watch_line};

/// How often BOOKMARK events go to watchers that asked for them (kube-apiserver's
/// `bookmarkFrequency`), besides the one shortly before the watch times out.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
/// How long before its timeout a watch gets its last BOOKMARK.
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);
/// kube-apiserver's minimum request timeout, used when the client does not name one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What to watch and how.
pub(crate) struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    /// Where the watch starts: `None` for no resourceVersion or "0".
    pub resource_version: Option<u64>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    /// Whether the watch starts with the current objects, after defaulting (see
    /// [`super::list_options::ListOptions`]).
    pub send_initial_events: Option<bool>,
    /// How the client asked to see each event's object.
    pub shape: Shape,
}

/// How a client asked to see objects: the `as=` parameter of its Accept header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The objects themselves.
    #[default]
    Objects,
    /// Tables (`as=Table`), with the `includeObject` of each row.
    Table(String),
    /// Metadata only: `as=PartialObjectMetadata` for an object or a watch's events,
    /// `as=PartialObjectMetadataList` for a list.
    Metadata,
}

/// An object reduced to its metadata, as kube-apiserver answers `as=PartialObjectMetadata`.
pub(crate) fn partial_object_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
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
        let include = match &self.shape {
            Shape::Objects => return line,
            Shape::Table(include) => Some(include),
            Shape::Metadata => None,
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
        let Some(include) = include else {
            return watch_line(event_type, &partial_object_metadata(object));
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

/// When the next BOOKMARK is due: a minute from now, or shortly before the deadline if that
/// comes first; none once that moment has passed (kube-apiserver's `nextBookmarkTime`).
fn next_bookmark(deadline: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let now = tokio::time::Instant::now();
    let next = (now + BOOKMARK_INTERVAL).min(deadline.checked_sub(BOOKMARK_BEFORE_TIMEOUT)?);
    (next >= now).then_some(next)
}

/// Starts a watch; its lines arrive on the returned channel until it ends.
pub(crate) fn start(
    store: Arc<Store>,
    request: WatchRequest,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Bytes> {
    let (lines, receiver) = mpsc::channel::<Bytes>(4096);
    tokio::spawn(async move {
        tokio::select! {
            _ = serve(store, request, &lines) => {}
            _ = shutdown.cancelled() => {}
            _ = lines.closed() => {}
        }
    });
    receiver
}

/// What a watch sends first, where it resumes, and whether it goes on at all.
struct Beginning {
    lines: Vec<Bytes>,
    /// The newest change already accounted for: later changes are sent live.
    last_rv: u64,
    /// Changes up to this resourceVersion are not sent (it may be newer than the store).
    floor: u64,
    /// The watch ends after its first lines (an ERROR).
    ends: bool,
}

/// The first lines of a watch, taken under the read lock together with its subscription so
/// that no change is seen twice or missed.
fn begin(store: &Store, request: &WatchRequest) -> (broadcast::Receiver<Arc<Change>>, Beginning) {
    let state = store.read();
    let changes = store.subscribe();
    let mut lines = Vec::new();
    let initial_events = request.send_initial_events == Some(true);
    let beginning = match request.resource_version {
        // A watch that starts with the current objects (and, for a client that takes
        // bookmarks, a bookmark marking their end).
        _ if initial_events => {
            for (_, object) in state.objects(
                &request.rt.storage,
                request
                    .namespace
                    .as_deref()
                    .filter(|_| request.rt.namespaced),
            ) {
                if request.matches(object) {
                    lines.push(watch_line("ADDED", &present(&request.rt, object)));
                }
            }
            if request.bookmarks {
                lines.push(request.bookmark(state.rv, true));
            }
            Beginning {
                lines,
                last_rv: state.rv,
                floor: state.rv,
                ends: false,
            }
        }
        // `sendInitialEvents=false` from "now".
        None => Beginning {
            lines,
            last_rv: state.rv,
            floor: state.rv,
            ends: false,
        },
        Some(rv) => match state.changes_since(rv) {
            Some(replay) => {
                lines.extend(replay.iter().filter_map(|c| request.render(c)));
                // A resourceVersion the store has not reached: nothing up to it is sent.
                Beginning {
                    lines,
                    last_rv: state.rv,
                    floor: rv.max(state.rv),
                    ends: false,
                }
            }
            None => {
                lines.push(expired_line(rv, state.compacted_through));
                Beginning {
                    lines,
                    last_rv: state.rv,
                    floor: state.rv,
                    ends: true,
                }
            }
        },
    };
    (changes, beginning)
}

async fn serve(store: Arc<Store>, request: WatchRequest, lines: &mpsc::Sender<Bytes>) {
    let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    // A watch that starts with the current objects from a given resourceVersion first waits
    // (a while) for the store to reach it, as the watch cache does.
    if request.send_initial_events == Some(true)
        && let Some(rv) = request.resource_version
        && let Err(current) = store.wait_until(rv, FRESHNESS_WAIT).await
    {
        let error = ApiError::too_large_resource_version(rv, current, TOO_LARGE_RETRY_SECONDS);
        let _ = lines.send(watch_line("ERROR", &error.status())).await;
        return;
    }
    let (mut changes, beginning) = begin(&store, &request);
    let Beginning {
        lines: first,
        mut last_rv,
        floor,
        ends,
    } = beginning;
    let mut headers_sent = false;
    for line in first {
        let line = request.as_requested(line, &mut headers_sent);
        if lines.send(line).await.is_err() {
            return;
        }
    }
    if ends {
        return;
    }
    let mut bookmark_at = if request.bookmarks {
        next_bookmark(deadline)
    } else {
        None
    };
    loop {
        let bookmark_due = async {
            match bookmark_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = changes.recv() => match received {
                Ok(change) => {
                    if change.rv <= last_rv {
                        continue;
                    }
                    last_rv = change.rv;
                    if change.rv <= floor {
                        continue;
                    }
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
            _ = bookmark_due => {
                bookmark_at = next_bookmark(deadline);
                // A watch from a resourceVersion the store has not reached hears nothing,
                // bookmarks included, until it has.
                if last_rv >= floor {
                    let bookmark = request.as_requested(request.bookmark(last_rv, false), &mut headers_sent);
                    if lines.send(bookmark).await.is_err() {
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}
