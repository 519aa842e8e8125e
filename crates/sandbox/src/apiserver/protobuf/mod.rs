//! `application/vnd.kubernetes.protobuf` bodies, which kubectl (1.32 and later) and client-go
//! send for built-in kinds, and ask for in answers (`Accept`, see [`negotiate`]).
//!
//! A body is the four bytes `k8s\0` and then a `runtime.Unknown` message: the object's
//! `apiVersion` and `kind` in `typeMeta`, and the kind's own message (`api.core.v1.Namespace`,
//! say) in `raw`. The object becomes the JSON that kube-apiserver would store for it, with
//! [`codec`]'s table of k8s-pb's messages. Custom resources have no protobuf form: as from
//! kube-apiserver, a protobuf body for one is answered 415, and a request about one that accepts
//! only protobuf 406. Answers are encoded the other way round; a watch sends each event as a
//! length-prefixed `WatchEvent` ([`watch_frame`]).

mod codec;

use prost::Message as _;
use serde_json::{Map, Value};

use super::error::ApiError;

/// The media type of Kubernetes' protobuf encoding.
pub(super) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The bytes every protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf request body into the object's JSON form, with `apiVersion` and `kind`.
/// `expected_kind` names the kind the endpoint takes, for the error message.
pub(super) fn decode_object(body: &[u8], expected_kind: &str) -> Result<Value, ApiError> {
    let unrecognised = |reason: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {expected_kind}): {reason}"
        ))
    };
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        unrecognised(format!(
            "provided data does not appear to be a protobuf message, expected prefix {MAGIC:?}"
        ))
    })?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope)
        .map_err(|e| unrecognised(e.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if kind.is_empty() {
        return Err(unrecognised("Object 'Kind' is missing".to_owned()));
    }
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(unrecognised(format!(
            "unsupported content encoding {encoding:?}"
        )));
    }
    let cannot_handle = |reason: String| {
        let version = api_version.rsplit('/').next().unwrap_or_default();
        ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {expected_kind}: {reason}"
        ))
    };
    let message = codec::kind_message(&api_version, &kind).ok_or_else(|| {
        cannot_handle(format!(
            "no kind {kind:?} is registered for version {api_version:?}"
        ))
    })?;
    let fields = codec::decode(message, unknown.raw.as_deref().unwrap_or_default())
        .map_err(|reason| cannot_handle(format!("invalid protobuf: {reason}")))?;
    let Value::Object(fields) = fields else {
        return Err(cannot_handle("not an object".to_owned()));
    };
    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// Encodes an object (with `apiVersion` and `kind`) as a protobuf body, or says why not (a
/// custom resource, which has no protobuf form).
pub(super) fn encode_object(object: &Value) -> Result<Vec<u8>, String> {
    let text = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let message = codec::kind_message(api_version, kind)
        .ok_or_else(|| format!("no protobuf message for {api_version} {kind}"))?;
    let mut fields = object.as_object().cloned().unwrap_or_default();
    fields.remove("apiVersion");
    fields.remove("kind");
    // A list's items have no type of their own in protobuf: the list's kind implies it.
    if kind.ends_with("List")
        && let Some(Value::Array(items)) = fields.get_mut("items")
    {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            item.remove("apiVersion");
            item.remove("kind");
        }
    }
    let raw = codec::encode(message, &Value::Object(fields))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    unknown.encode(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// How a response body is encoded, as the request's `Accept` header asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// JSON: asked for first, or `*/*`, or no `Accept` header at all.
    Json,
    /// Protobuf, asked for before JSON (kubectl and client-go send
    /// `application/vnd.kubernetes.protobuf,application/json`); `json_acceptable` when JSON was
    /// asked for too, for objects that have no protobuf form (custom resources).
    Protobuf { json_acceptable: bool },
}

/// The encoding a client's `Accept` header asks for: its media ranges by falling quality,
/// in order among equals; the first one the server serves decides, as in kube-apiserver.
pub(crate) fn negotiate(accept: &str) -> Encoding {
    let mut ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media_type = parts.next()?.trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|parameter| parameter.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (quality > 0.0 && !media_type.is_empty()).then_some((media_type, quality))
        })
        .collect();
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    let is_json = |media_type: &str| {
        matches!(
            media_type,
            "application/json" | "application/yaml" | "application/*" | "*/*"
        )
    };
    for (index, (media_type, _)) in ranges.iter().enumerate() {
        if media_type == MEDIA_TYPE {
            let json_acceptable = ranges[index + 1..].iter().any(|(m, _)| is_json(m));
            return Encoding::Protobuf { json_acceptable };
        }
        if is_json(media_type) {
            return Encoding::Json;
        }
    }
    Encoding::Json
}

/// The media type of a protobuf watch: length-prefixed `WatchEvent`s.
pub(super) const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// One watch event (a JSON line `{"type": ..., "object": ...}`) as kube-apiserver streams it to
/// a protobuf client: the `WatchEvent` message, its object in `object.raw` as a whole protobuf
/// body (`k8s\0` and the envelope), preceded by its length as four big-endian bytes.
pub(super) fn watch_frame(line: &[u8]) -> Result<Vec<u8>, String> {
    let event: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a watch event without a type")?;
    let object = encode_object(event.get("object").unwrap_or(&Value::Null))?;
    let message = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent {
        r#type: Some(event_type.to_owned()),
        object: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(object) }),
    };
    let length = u32::try_from(message.encoded_len()).map_err(|e| e.to_string())?;
    let mut frame = length.to_be_bytes().to_vec();
    message.encode(&mut frame).map_err(|e| e.to_string())?;
    Ok(frame)
}

#[cfg(test)]
mod tests;
