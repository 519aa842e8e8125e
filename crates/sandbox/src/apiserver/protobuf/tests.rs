use k8s_openapi::api;
use prost::Message as _;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

use super::*;
use crate::apiserver::builtin_kinds::BUILTIN_KINDS;
use crate::apiserver::resources::Registry;

/// The JSON Schema of a k8s-openapi type, whose field names and types are those of the
/// Kubernetes OpenAPI document: an account of the JSON form independent of k8s-pb.
fn schema<T: JsonSchema>() -> Value {
    let schema = SchemaGenerator::default().into_root_schema_for::<T>();
    serde_json::to_value(schema).expect("schema JSON")
}

/// The k8s-openapi type's schema of every built-in kind the sandbox serves, and of the bodies
/// of the subresources kubectl posts.
fn builtin_schema(api_version: &str, kind: &str) -> Option<Value> {
    let served = BUILTIN_KINDS
        .iter()
        .find(|builtin| builtin.api_version() == api_version && builtin.kind == kind);
    if let Some(builtin) = served {
        return Some((builtin.root_schema)());
    }
    Some(match (api_version, kind) {
        ("authentication.k8s.io/v1", "TokenRequest") => {
            schema::<api::authentication::v1::TokenRequest>()
        }
        ("v1", "Binding") => schema::<api::core::v1::Binding>(),
        _ => return None,
    })
}

/// Fields of k8s-openapi's newest Kubernetes that k8s-pb's protobuf messages do not have yet,
/// by type: no protobuf body can carry them. A PersistentVolumeClaim template's apiVersion and
/// kind are not in its protobuf form either (Go's TypeMeta is never encoded in a message).
const NEWER_THAN_K8S_PB: &[(&str, &str)] = &[
    ("NodeSystemInfo", "runningInUserNamespace"),
    ("NodeSpec", "podPreemptionPolicy"),
    ("HorizontalPodAutoscalerCondition", "observedGeneration"),
    ("HTTPGetAction", "protocol"),
    ("GRPCAction", "mode"),
    ("VolumeMount", "bindMountOptions"),
    ("PodSpec", "evictionResponders"),
    ("PodSpec", "schedulingGroup"),
    ("ConfigMapVolumeSource", "defaultUser"),
    ("DownwardAPIVolumeSource", "defaultUser"),
    ("KeyToPath", "user"),
    ("EmptyDirVolumeSource", "mode"),
    ("ProjectedVolumeSource", "defaultUser"),
    ("ClusterTrustBundleProjection", "user"),
    ("DownwardAPIVolumeFile", "user"),
    ("PodCertificateProjection", "user"),
    ("ServiceAccountTokenProjection", "user"),
    ("SecretVolumeSource", "defaultUser"),
    ("PersistentVolumeClaim", "apiVersion"),
    ("PersistentVolumeClaim", "kind"),
    ("PersistentVolumeClaimStatus", "healthStatus"),
    ("TokenRequestSpec", "attestations"),
    ("JobSpec", "scheduling"),
    ("ResourceHealth", "message"),
    ("VolumeMountStatus", "volumeStatus"),
    ("PodStatus", "nodeAllocatableResourceClaimStatuses"),
    ("PodStatus", "volumeHealth"),
];

/// A recursive type (JSONSchemaProps) is filled this many times along one path.
const RECURSION: usize = 2;

/// A value for every field the schema describes: one-element arrays and maps, no empty
/// strings (Go's JSON leaves those out), numbers beyond 32 bits where the field is int64.
fn fixture(root: &Value) -> Value {
    fixture_of(root, root, "", &mut Vec::new()).unwrap_or(Value::Null)
}

/// `definition` names the schema's definition (`io.k8s.api.core.v1.HTTPGetAction`), if any;
/// `path` holds the definitions being filled. `None` is a map that stays empty, which has no
/// protobuf form (Go's JSON leaves it out).
fn fixture_of(
    root: &Value,
    schema: &Value,
    definition: &str,
    path: &mut Vec<String>,
) -> Option<Value> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/$defs/");
        let special = match name.rsplit('.').next().unwrap_or_default() {
            "Time" => Some(json!("2024-01-02T03:04:05Z")),
            "MicroTime" => Some(json!("2024-01-02T03:04:05.123456Z")),
            "Quantity" => Some(json!("1500m")),
            // Both forms, by the depth.
            "IntOrString" if path.len().is_multiple_of(2) => Some(json!("http")),
            "IntOrString" => Some(json!(8080)),
            "RawExtension" => {
                Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}))
            }
            "FieldsV1" => Some(json!({"f:metadata": {"f:labels": {".": {}}}})),
            "JSON" => Some(json!({"any": ["json", 1, true]})),
            "JSONSchemaPropsOrBool" => Some(json!(true)),
            "JSONSchemaPropsOrStringArray" => Some(json!(["a", "b"])),
            "JSONSchemaPropsOrArray" => Some(json!({"type": "string"})),
            _ => None,
        };
        if special.is_some() {
            return special;
        }
        if path.iter().filter(|seen| *seen == name).count() >= RECURSION {
            return Some(json!({}));
        }
        let definition = &root["$defs"][name];
        assert!(!definition.is_null(), "no definition {name}");
        path.push(name.to_owned());
        let value = fixture_of(root, definition, name, path);
        path.pop();
        return value;
    }
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return Some(json!("http"));
    }
    Some(match schema.get("type").and_then(Value::as_str) {
        Some("object") | None => {
            let mut object = serde_json::Map::new();
            let type_name = definition.rsplit('.').next().unwrap_or_default();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    if NEWER_THAN_K8S_PB.contains(&(type_name, name.as_str())) {
                        continue;
                    }
                    if let Some(value) = fixture_of(root, property, "", path) {
                        object.insert(name.clone(), value);
                    }
                }
            }
            if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                let value = fixture_of(root, values, "", path)?;
                object.insert("key-one".to_owned(), value);
            }
            Value::Object(object)
        }
        Some("array") => json!([fixture_of(root, &schema["items"], "", path)?]),
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("byte") => json!("AAEC/w=="),
            Some("date-time") => json!("2024-01-02T03:04:05Z"),
            _ => json!("text"),
        },
        Some("integer") => match schema.get("format").and_then(Value::as_str) {
            Some("int32") => json!(-7),
            _ => json!(1_234_567_890_123_i64),
        },
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some(other) => panic!("unexpected schema type {other}"),
    })
}

fn round_trip(object: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default();
    let body = encode_object(object).unwrap_or_else(|e| panic!("encode {kind}: {e}"));
    assert!(body.starts_with(b"k8s\0"), "the protobuf envelope");
    decode_object(&body, kind).unwrap_or_else(|e| panic!("decode {kind}: {}", e.message))
}

/// The first place where two JSON values differ, as `path: got != expected`.
fn difference(got: &Value, expected: &Value, path: &str) -> Option<String> {
    match (got, expected) {
        (Value::Object(got), Value::Object(expected)) => {
            let keys = got.keys().chain(expected.keys());
            keys.map(|key| {
                let null = Value::Null;
                let (left, right) = (
                    got.get(key).unwrap_or(&null),
                    expected.get(key).unwrap_or(&null),
                );
                let missing = got.contains_key(key) != expected.contains_key(key);
                if missing {
                    Some(format!("{path}/{key}: {left} != {right}"))
                } else {
                    difference(left, right, &format!("{path}/{key}"))
                }
            })
            .find(Option::is_some)
            .flatten()
        }
        (Value::Array(got), Value::Array(expected)) if got.len() == expected.len() => got
            .iter()
            .zip(expected)
            .enumerate()
            .find_map(|(i, (left, right))| difference(left, right, &format!("{path}/{i}"))),
        _ if got == expected => None,
        _ => Some(format!("{path}: {got} != {expected}")),
    }
}

#[test]
fn every_builtin_kind_round_trips_with_every_field_set() {
    let registry = Registry::builtin();
    let mut kinds: Vec<(String, String)> = registry
        .all()
        .filter(|rt| !rt.custom)
        .map(|rt| (rt.api_version(), rt.kind.clone()))
        .collect();
    // The bodies of subresources kubectl posts.
    kinds.push(("authentication.k8s.io/v1".into(), "TokenRequest".into()));
    kinds.push(("v1".into(), "Binding".into()));
    kinds.sort();
    kinds.dedup();
    for (api_version, kind) in kinds {
        let schema = builtin_schema(&api_version, &kind)
            .unwrap_or_else(|| panic!("add {api_version} {kind} to builtin_schema"));
        let mut object = fixture(&schema);
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        let decoded = round_trip(&object);
        assert_eq!(
            difference(&decoded, &object, ""),
            None,
            "{api_version} {kind}"
        );
    }
}

#[test]
fn decodes_what_prost_encodes_from_k8s_pb_structs() {
    use k8s_pb::api::core::v1::Secret;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let secret = Secret {
        metadata: Some(ObjectMeta {
            name: Some("db".into()),
            namespace: Some(String::new()),
            creation_timestamp: Some(Time::default()),
            deletion_timestamp: Some(Time {
                seconds: Some(1_700_000_000),
                nanos: Some(5),
            }),
            labels: [("app".to_owned(), "pg".to_owned())].into(),
            ..ObjectMeta::default()
        }),
        immutable: Some(false),
        data: [("password".to_owned(), vec![0, 1, 2, 255])].into(),
        string_data: Default::default(),
        r#type: Some("Opaque".into()),
    };
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(secret.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode_object(&body, "Secret").unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db",
                "creationTimestamp": null,
                "deletionTimestamp": "2023-11-14T22:13:20Z",
                "labels": {"app": "pg"},
            },
            "immutable": false,
            "data": {"password": "AAEC/w=="},
            "type": "Opaque",
        })
    );
}

#[test]
fn bodies_that_are_not_kubernetes_protobuf_are_bad_requests() {
    let cases: [(&[u8], &str); 4] = [
        (
            b"{\"kind\": \"Namespace\"}",
            "does not appear to be a protobuf message",
        ),
        (b"k8s\0\x0a\xff", "the object provided is unrecognized"),
        (
            &[b"k8s\0".as_slice(), &envelope("v1", "Nonsense", b"")].concat(),
            "no kind \"Nonsense\" is registered",
        ),
        // metadata (field 1) says it is 100 bytes long, but the body ends.
        (
            &[
                b"k8s\0".as_slice(),
                &envelope("v1", "Namespace", b"\x0a\x64"),
            ]
            .concat(),
            "cannot be handled as a Namespace",
        ),
    ];
    for (body, message) in cases {
        let error = decode_object(body, "Namespace").expect_err(message);
        assert_eq!((error.code, error.reason), (400, "BadRequest"), "{message}");
        assert!(error.message.contains(message), "{}", error.message);
    }
}

#[test]
fn nesting_is_bounded() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1::JsonSchemaProps;
    // A hostile schema, `not` within `not` ten thousand deep, must not exhaust the stack.
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        let mut outer = Vec::new();
        prost::encoding::bytes::encode(NOT_TAG, &bytes, &mut outer);
        bytes = outer;
    }
    let props = codec::message("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps")
        .unwrap();
    let error = codec::decode(props, &bytes).expect_err("too deep");
    assert!(error.contains("deeper than"), "{error}");
    // `not` is the field NOT_TAG says it is.
    let shallow = JsonSchemaProps {
        not: Some(Box::new(JsonSchemaProps::default())),
        ..Default::default()
    };
    assert_eq!(
        codec::decode(props, &shallow.encode_to_vec()).unwrap(),
        json!({"not": {}})
    );
}

/// The tag of JSONSchemaProps.not.
const NOT_TAG: u32 = 28;

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw.to_vec()),
        content_encoding: None,
        content_type: None,
    }
    .encode_to_vec()
}

#[test]
fn accept_headers_choose_the_encoding_as_kube_apiserver_does() {
    let protobuf = |json_acceptable| Encoding::Protobuf { json_acceptable };
    assert_eq!(
        negotiate("application/vnd.kubernetes.protobuf,application/json"),
        protobuf(true)
    );
    assert_eq!(
        negotiate("application/vnd.kubernetes.protobuf"),
        protobuf(false)
    );
    assert_eq!(
        negotiate("application/json, application/vnd.kubernetes.protobuf"),
        Encoding::Json
    );
    assert_eq!(
        negotiate("application/vnd.kubernetes.protobuf;q=0.5, application/json"),
        Encoding::Json
    );
    assert_eq!(
        negotiate("application/json;q=0, application/vnd.kubernetes.protobuf"),
        protobuf(false)
    );
    assert_eq!(negotiate(""), Encoding::Json);
    assert_eq!(negotiate("*/*"), Encoding::Json);
}

#[test]
fn a_watch_frame_is_a_length_and_a_watch_event() {
    let line = br#"{"type":"DELETED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"gone"}}}
"#;
    let frame = watch_frame(line).expect("a frame");
    let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(length, frame.len() - 4);
    let event = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("DELETED"));
    let raw = event.object.and_then(|o| o.raw).unwrap();
    assert_eq!(
        decode_object(&raw, "ConfigMap").unwrap()["metadata"]["name"],
        "gone"
    );
}
