//! core/v1 Events as the kubelet and kube-controller-manager's controllers record them, through
//! client-go's event recorder: named `<object>.<nanoseconds in hex>`, with `source` (the
//! component, and for the kubelet the node as host), `firstTimestamp`, `lastTimestamp` and
//! `count`; an Event identical to one recorded before on the same object counts up on that
//! Event (`count`, `lastTimestamp`) instead of making another. `kubectl get events
//! --sort-by=.lastTimestamp` and `describe`'s `(x5 over 2m)` rely on those fields.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// What makes two Events the same one, as client-go's event logger compares them.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Identity {
    object_uid: String,
    object_kind: String,
    object_name: String,
    object_namespace: String,
    field_path: String,
    type_: String,
    reason: String,
    message: String,
}

/// Where an Event recorded before is, and how many times it happened.
struct Recorded {
    name: String,
    count: i32,
    first_timestamp: jiff::Timestamp,
}

/// Records one component's Events.
pub(crate) struct EventRecorder {
    client: Client,
    /// The component the Events name as their source (`kubelet`, `deployment-controller`).
    component: &'static str,
    /// The node the component runs on, for the kubelet.
    host: Option<&'static str>,
    recorded: Mutex<HashMap<Identity, Recorded>>,
}

impl EventRecorder {
    pub fn new(client: Client, component: &'static str, host: Option<&'static str>) -> Self {
        Self {
            client,
            component,
            host,
            recorded: Mutex::default(),
        }
    }

    /// Records that `reason` happened to `object`; failing to is not worth more than a log
    /// line, as for the kubelet and the controllers.
    pub async fn record(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        let identity = Identity {
            object_uid: object.uid.clone().unwrap_or_default(),
            object_kind: object.kind.clone().unwrap_or_default(),
            object_name: object.name.clone().unwrap_or_default(),
            object_namespace: object.namespace.clone().unwrap_or_default(),
            field_path: object.field_path.clone().unwrap_or_default(),
            type_: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        // Events of cluster-scoped objects go to the default namespace, as client-go's do.
        let namespace = match identity.object_namespace.as_str() {
            "" => "default".to_string(),
            namespace => namespace.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        // Times go out in whole seconds, as metav1.Time does.
        let timestamp = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        let repeated = {
            let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            recorded
                .get(&identity)
                .map(|seen| (seen.name.clone(), seen.count + 1, seen.first_timestamp))
        };
        if let Some((name, count, first_timestamp)) = repeated {
            let patch = json!({"count": count, "lastTimestamp": Time(timestamp)});
            let patched = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            match patched {
                Ok(_) => {
                    self.remember(identity, name, count, first_timestamp);
                    return;
                }
                // Gone (expired, or deleted): record it anew, keeping its history.
                Err(error) => {
                    tracing::debug!(%error, event = %name, "cannot count an event up; recording it anew");
                    let name = event_name(&identity.object_name, now);
                    let event = self.event(
                        object,
                        &identity,
                        &name,
                        &namespace,
                        count,
                        first_timestamp,
                        timestamp,
                    );
                    if self.create(&api, &event).await {
                        self.remember(identity, name, count, first_timestamp);
                    }
                    return;
                }
            }
        }
        let name = event_name(&identity.object_name, now);
        let event = self.event(
            object, &identity, &name, &namespace, 1, timestamp, timestamp,
        );
        if self.create(&api, &event).await {
            self.remember(identity, name, 1, timestamp);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        object: &ObjectReference,
        identity: &Identity,
        name: &str,
        namespace: &str,
        count: i32,
        first_timestamp: jiff::Timestamp,
        last_timestamp: jiff::Timestamp,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            type_: Some(identity.type_.clone()),
            reason: Some(identity.reason.clone()),
            message: Some(identity.message.clone()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: self.host.map(str::to_string),
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.host.unwrap_or_default().to_string()),
            first_timestamp: Some(Time(first_timestamp)),
            last_timestamp: Some(Time(last_timestamp)),
            count: Some(count),
            ..Event::default()
        }
    }

    async fn create(&self, api: &Api<Event>, event: &Event) -> bool {
        match api.create(&PostParams::default(), event).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, reason = ?event.reason, "cannot record an event");
                false
            }
        }
    }

    /// Forgets what was recorded about an object that is gone, so that what the recorder
    /// keeps is bounded by the pods that exist. (client-go bounds it with an LRU of 4096
    /// entries; an Event about a gone pod is never counted up again either way.)
    pub fn forget(&self, object_uid: &str) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.retain(|identity, _| identity.object_uid != object_uid);
    }

    fn remember(
        &self,
        identity: Identity,
        name: String,
        count: i32,
        first_timestamp: jiff::Timestamp,
    ) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.insert(
            identity,
            Recorded {
                name,
                count,
                first_timestamp,
            },
        );
    }
}

/// client-go's Event name: the object's name and the time in nanoseconds, in hex.
fn event_name(object_name: &str, now: jiff::Timestamp) -> String {
    format!("{object_name}.{:x}", now.as_nanosecond())
}
