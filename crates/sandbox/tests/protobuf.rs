//! Protobuf responses, as kube-apiserver gives them to a client whose `Accept` header asks for
//! `application/vnd.kubernetes.protobuf` first (kubectl 1.32+ and client-go for built-in
//! kinds): objects and lists in the `k8s\0` envelope, watches as length-prefixed `WatchEvent`s;
//! custom resources, which have no protobuf form, in JSON or refused with 406.

mod common;

use common::kubectl::kubectl;
use common::sandbox_with_crds;
use http_body_util::BodyExt;
use k8s_pb::api::core::v1::{ConfigMap, ConfigMapList};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{Status, WatchEvent};
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use kube::client::Body;
use prost::Message;
use tusk_sandbox::Sandbox;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Sends a request with this `Accept` header and returns the response, body unread.
async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    accept: &str,
    content_type: &str,
    body: &str,
) -> http::Response<Body> {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("accept", accept)
        .header("content-type", content_type)
        .body(Body::from(body.as_bytes().to_vec()))
        .expect("request");
    client.send(request).await.expect("answered")
}

fn content_type(response: &http::Response<Body>) -> String {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The response's code, content type and body.
async fn answer(response: http::Response<Body>) -> (u16, String, Vec<u8>) {
    let code = response.status().as_u16();
    let media_type = content_type(&response);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (code, media_type, body.to_vec())
}

/// The envelope of a protobuf body: its apiVersion, kind and raw message.
fn unwrap(body: &[u8]) -> (String, String, Vec<u8>) {
    let envelope = body.strip_prefix(b"k8s\0").expect("the k8s\\0 prefix");
    let unknown = Unknown::decode(envelope).expect("a runtime.Unknown");
    let type_meta = unknown.type_meta.expect("typeMeta");
    (
        type_meta.api_version.unwrap_or_default(),
        type_meta.kind.unwrap_or_default(),
        unknown.raw.unwrap_or_default(),
    )
}

fn config_map(body: &[u8]) -> ConfigMap {
    let (api_version, kind, raw) = unwrap(body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "ConfigMap"));
    ConfigMap::decode(raw.as_slice()).expect("a ConfigMap")
}

/// A client that accepts only protobuf gets every answer about a built-in kind in protobuf:
/// create, get, patch and list answer the objects, delete the Status naming the object.
#[tokio::test]
async fn protobuf_only_client_gets_objects_lists_and_statuses_in_protobuf() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let collection = "/api/v1/namespaces/default/configmaps";
    let created = send(
        &client,
        "POST",
        collection,
        PROTOBUF,
        "application/json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}"#,
    )
    .await;
    let (code, media_type, body) = answer(created).await;
    assert_eq!((code, media_type.as_str()), (201, PROTOBUF));
    let object = config_map(&body);
    let metadata = object.metadata.expect("metadata");
    assert_eq!(metadata.name.as_deref(), Some("settings"));
    assert!(metadata.uid.is_some_and(|uid| !uid.is_empty()));
    assert_eq!(object.data.get("a").map(String::as_str), Some("b"));

    let item = format!("{collection}/settings");
    let (code, media_type, body) =
        answer(send(&client, "GET", &item, PROTOBUF, "application/json", "").await).await;
    assert_eq!((code, media_type.as_str()), (200, PROTOBUF));
    assert_eq!(
        config_map(&body).data.get("a").map(String::as_str),
        Some("b")
    );

    let patched = send(
        &client,
        "PATCH",
        &item,
        PROTOBUF,
        "application/merge-patch+json",
        r#"{"data": {"a": "c"}}"#,
    )
    .await;
    let (code, media_type, body) = answer(patched).await;
    assert_eq!((code, media_type.as_str()), (200, PROTOBUF));
    assert_eq!(
        config_map(&body).data.get("a").map(String::as_str),
        Some("c")
    );

    let (code, media_type, body) =
        answer(send(&client, "GET", collection, PROTOBUF, "application/json", "").await).await;
    assert_eq!((code, media_type.as_str()), (200, PROTOBUF));
    let (api_version, kind, raw) = unwrap(&body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("v1", "ConfigMapList")
    );
    let list = ConfigMapList::decode(raw.as_slice()).expect("a ConfigMapList");
    let names: Vec<String> = list
        .items
        .iter()
        .filter_map(|item| item.metadata.as_ref()?.name.clone())
        .collect();
    assert!(names.contains(&"settings".to_owned()), "{names:?}");
    assert!(
        list.metadata
            .and_then(|m| m.resource_version)
            .is_some_and(|rv| !rv.is_empty())
    );

    let (code, media_type, body) =
        answer(send(&client, "DELETE", &item, PROTOBUF, "application/json", "").await).await;
    assert_eq!((code, media_type.as_str()), (200, PROTOBUF));
    let (_, kind, raw) = unwrap(&body);
    assert_eq!(kind, "Status");
    let status = Status::decode(raw.as_slice()).expect("a Status");
    assert_eq!(status.status.as_deref(), Some("Success"));
}

/// Whether kubectl's `-v=8` log (`stderr`) shows a response whose status starts with `status`
/// in protobuf. The requests' headers name protobuf too; only the responses' count.
fn answered_in_protobuf(stderr: &str, status: &str) -> bool {
    stderr
        .split("\"Response\" status=")
        .skip(1)
        .filter(|response| response.trim_start_matches('"').starts_with(status))
        .any(|response| {
            response
                .split("\"Response Body\"")
                .next()
                .is_some_and(|headers| headers.contains(&format!("Content-Type: {PROTOBUF}")))
        })
}

/// The Status of a failed request, decoded from a protobuf answer.
fn protobuf_status(code: u16, media_type: &str, body: &[u8]) -> Status {
    assert_eq!(
        media_type,
        PROTOBUF,
        "{code}: {}",
        String::from_utf8_lossy(body)
    );
    let (api_version, kind, raw) = unwrap(body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Status"));
    let status = Status::decode(raw.as_slice()).expect("a Status");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.code, Some(i32::from(code)));
    status
}

/// kube-apiserver negotiates an error's Status like any other answer: a client that asks for
/// protobuf first gets its 404, 409 and 422 as a `Status` in the `k8s\0` envelope, with the
/// reason, message and details (the causes' field paths too) the JSON form has; kubectl reads
/// it (`create` asks for protobuf) and prints kube-apiserver's message.
#[tokio::test]
async fn errors_answer_a_protobuf_status_to_a_protobuf_client() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let collection = "/api/v1/namespaces/default/configmaps";
    for accept in [
        PROTOBUF,
        "application/vnd.kubernetes.protobuf,application/json",
    ] {
        let (code, media_type, body) = answer(
            send(
                &client,
                "GET",
                &format!("{collection}/missing"),
                accept,
                "application/json",
                "",
            )
            .await,
        )
        .await;
        assert_eq!(code, 404);
        let status = protobuf_status(code, &media_type, &body);
        assert_eq!(status.reason.as_deref(), Some("NotFound"));
        assert_eq!(
            status.message.as_deref(),
            Some("configmaps \"missing\" not found")
        );
        let details = status.details.expect("details");
        assert_eq!(details.name.as_deref(), Some("missing"));
        assert_eq!(details.kind.as_deref(), Some("configmaps"));
    }

    let create = |body: &'static str| {
        let client = &client;
        async move {
            let created = send(
                client,
                "POST",
                collection,
                PROTOBUF,
                "application/json",
                body,
            );
            answer(created.await).await
        }
    };
    let settings = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}"#;
    for expected in [201, 409] {
        let (code, media_type, body) = create(settings).await;
        assert_eq!(code, expected, "{}", String::from_utf8_lossy(&body));
        if code == 409 {
            let status = protobuf_status(code, &media_type, &body);
            assert_eq!(status.reason.as_deref(), Some("AlreadyExists"));
        }
    }

    let invalid =
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}}"#;
    let (code, media_type, body) = create(invalid).await;
    assert_eq!(code, 422);
    let status = protobuf_status(code, &media_type, &body);
    assert_eq!(status.reason.as_deref(), Some("Invalid"));
    let fields: Vec<String> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .filter_map(|cause| cause.field)
        .collect();
    assert_eq!(fields, ["metadata.name"]);

    // `kubectl create` asks for protobuf (`kubectl get` asks for a Table, in JSON).
    let (ok, _, stderr) = kubectl(&sandbox, &["create", "configmap", "settings", "-v=8"]).await;
    assert!(!ok);
    assert!(
        stderr
            .contains("error: failed to create configmap: configmaps \"settings\" already exists"),
        "{stderr}"
    );
    assert!(answered_in_protobuf(&stderr, "409"), "{stderr}");
}

/// A protobuf watch streams each event as its length (four bytes, big-endian) and a
/// `WatchEvent` whose object is a whole protobuf body.
#[tokio::test]
async fn protobuf_watch_frames_each_event() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let collection = "/api/v1/namespaces/default/configmaps";
    let (code, _, _) = answer(
        send(
            &client,
            "POST",
            collection,
            "application/json",
            "application/json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}}"#,
        )
        .await,
    )
    .await;
    assert_eq!(code, 201);
    let watch = send(
        &client,
        "GET",
        &format!("{collection}?watch=true&timeoutSeconds=5"),
        &format!("{PROTOBUF}, application/json"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(watch.status().as_u16(), 200);
    assert_eq!(
        content_type(&watch),
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = watch.into_body();
    let mut bytes = Vec::new();
    // The watch starts with an ADDED event for each ConfigMap (kube-root-ca.crt among them).
    let (event, object) = loop {
        if bytes.len() >= 4 {
            let length = u32::from_be_bytes(bytes[..4].try_into().expect("four bytes")) as usize;
            if bytes.len() >= 4 + length {
                let event = WatchEvent::decode(&bytes[4..4 + length]).expect("a WatchEvent");
                bytes.drain(..4 + length);
                let raw = event
                    .object
                    .clone()
                    .and_then(|o| o.raw)
                    .expect("the event's object");
                let object = config_map(&raw);
                if object.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("watched") {
                    break (event, object);
                }
                continue;
            }
        }
        let frame = body
            .frame()
            .await
            .expect("the watch sends an event")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    };
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    assert!(object.metadata.and_then(|m| m.uid).is_some());
}

/// Custom resources have no protobuf form: a client that also accepts JSON gets JSON, one
/// that accepts only protobuf gets kube-apiserver's 406.
#[tokio::test]
async fn custom_resources_answer_json_or_not_acceptable() {
    let (sandbox, client) = sandbox_with_crds().await;
    let collection = "/apis/postgres.tusk.dev/v1/namespaces/default/postgresclusters";
    let (code, media_type, _) = answer(
        send(
            &client,
            "GET",
            collection,
            &format!("{PROTOBUF},application/json"),
            "application/json",
            "",
        )
        .await,
    )
    .await;
    assert_eq!((code, media_type.as_str()), (200, "application/json"));
    // The negotiation itself failed: kube-apiserver writes that Status in JSON.
    let (code, media_type, body) =
        answer(send(&client, "GET", collection, PROTOBUF, "application/json", "").await).await;
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
    assert_eq!(media_type, "application/json");
    let status: serde_json::Value = serde_json::from_slice(&body).expect("a JSON Status");
    assert_eq!(status["reason"], "NotAcceptable");
    drop(sandbox);
}

/// kubectl asks for protobuf for built-in kinds and reads the answers: `create configmap`
/// gets a protobuf response (`-v=8` shows its Content-Type) and prints the object's name.
#[tokio::test]
async fn kubectl_reads_protobuf_answers() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let (ok, stdout, stderr) = kubectl(
        &sandbox,
        &[
            "create",
            "configmap",
            "from-kubectl",
            "--from-literal=a=b",
            "-v=8",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("configmap/from-kubectl created"),
        "{stdout}"
    );
    assert!(answered_in_protobuf(&stderr, ""), "{stderr}");
    let (ok, stdout, stderr) = kubectl(
        &sandbox,
        &[
            "get",
            "configmap",
            "from-kubectl",
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "b");
}
