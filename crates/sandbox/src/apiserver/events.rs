//! core/v1 and events.k8s.io/v1 Events share one store, kept in the core/v1 form; these convert
//! between the two the way kube-apiserver's conversion functions do.

use serde_json::{Map, Value};

/// Field renames between events.k8s.io/v1 (left) and core/v1 (right).
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields both versions share under the same name.
const SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "eventTime",
    "series",
    "reportingInstance",
];

fn convert(object: &Value, api_version: &str, from_events_api: bool) -> Value {
    let Some(source) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    out.insert("kind".into(), Value::String("Event".into()));
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    for field in SHARED {
        if let Some(value) = source.get(*field) {
            out.insert((*field).into(), value.clone());
        }
    }
    for (events_name, core_name) in RENAMES {
        let (from, to) = if from_events_api {
            (events_name, core_name)
        } else {
            (core_name, events_name)
        };
        if let Some(value) = source.get(*from) {
            out.insert((*to).into(), value.clone());
        }
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in its stored (core/v1) form.
pub(crate) fn to_core(object: &Value) -> Value {
    convert(object, "v1", true)
}

/// A stored (core/v1) Event as events.k8s.io/v1 serves it.
pub(crate) fn to_events_api(object: &Value) -> Value {
    convert(object, "events.k8s.io/v1", false)
}
