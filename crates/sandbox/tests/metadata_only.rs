//! Metadata-only answers (`as=PartialObjectMetadata(List)` in the Accept header), as kube-rs's
//! metadata API and client-go's metadata informers ask for them, and the TokenReview answer,
//! through kube-rs's own requests and the real kubectl.

mod common;

use common::kubectl::kubectl_ok;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use kube::core::Request;
use kube::core::params::{GetParams, ListParams};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

async fn send(client: &kube::Client, request: http::Request<Vec<u8>>) -> (u16, Value) {
    let request = request.map(kube::client::Body::from);
    let response = client.send(request).await.expect("answered");
    let status = response.status().as_u16();
    let body = response.into_body().collect_bytes().await.expect("body");
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// kube-apiserver's response transformation: with `as=PartialObjectMetadata` a GET answers
/// the object's metadata as a meta.k8s.io/v1 PartialObjectMetadata, with
/// `as=PartialObjectMetadataList` a LIST answers a PartialObjectMetadataList keeping the
/// list's resourceVersion, a watch's events carry PartialObjectMetadata, and asking for the
/// wrong one (a list for an object, an object for a list) is 406 NotAcceptable.
#[tokio::test]
async fn metadata_requests_get_metadata_only() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings", "labels": {"app": "web"}},
        "data": {"password-hint": "blue"},
    }))
    .expect("a ConfigMap");
    maps.create(&PostParams::default(), &map)
        .await
        .expect("created");
    let requests = Request::new("/api/v1/namespaces/default/configmaps");

    let (status, object) = send(
        &client,
        requests
            .get_metadata("settings", &GetParams::default())
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{object}");
    assert_eq!(object["kind"], "PartialObjectMetadata", "{object}");
    assert_eq!(object["apiVersion"], "meta.k8s.io/v1", "{object}");
    assert_eq!(object["metadata"]["name"], "settings", "{object}");
    assert_eq!(object["metadata"]["labels"]["app"], "web", "{object}");
    assert!(object.get("data").is_none(), "metadata only: {object}");

    let (status, list) = send(
        &client,
        requests
            .list_metadata(&ListParams::default().labels("app=web"))
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["kind"], "PartialObjectMetadataList", "{list}");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1", "{list}");
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["kind"], "PartialObjectMetadata", "{list}");
    assert_eq!(items[0]["metadata"]["name"], "settings", "{list}");
    assert!(items[0].get("data").is_none(), "metadata only: {list}");

    // An object asked for as a list, and a list asked for as an object.
    let wrong_kinds = [
        (
            requests.get_metadata("settings", &GetParams::default()),
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        ),
        (
            requests.list_metadata(&ListParams::default()),
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ),
    ];
    for (request, accept) in wrong_kinds {
        let mut request = request.expect("request");
        request
            .headers_mut()
            .insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
        let (status, answer) = send(&client, request).await;
        assert_eq!(
            (status, answer["reason"].as_str()),
            (406, Some("NotAcceptable")),
            "{accept}: {answer}"
        );
    }

    // A watch's events carry metadata only.
    let watch = requests
        .watch_metadata(&WatchParams::default().labels("app=web").timeout(2), "0")
        .expect("request")
        .map(kube::client::Body::from);
    let response = client.send(watch).await.expect("watch answered");
    // The watch ends after its timeout; its first line is the ConfigMap's ADDED event.
    let body = response.into_body().collect_bytes().await.expect("body");
    let body = String::from_utf8_lossy(&body);
    let first = body.lines().next().expect("an event");
    let event: Value = serde_json::from_str(first).expect("a JSON event");
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "settings", "{event}");
    assert!(
        event["object"].get("data").is_none(),
        "metadata only: {event}"
    );
    sandbox.shutdown().await;
}

/// kube-apiserver's TokenReview answers with the review as it was sent, `spec.token`
/// included, and refuses a review without a token.
#[tokio::test]
async fn kubectl_create_token_review_echoes_the_review() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let review = |token: &str| {
        format!(
            "{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{{\"token\":\"{token}\"}}}}"
        )
    };
    let path = std::env::temp_dir().join(format!("token-review-{}.json", std::process::id()));
    std::fs::write(&path, review(sandbox.token())).expect("written");
    let out = kubectl_ok(
        &sandbox,
        &["create", "-f", path.to_str().expect("path"), "-o", "json"],
    )
    .await;
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["spec"]["token"], sandbox.token(), "{answer}");
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");

    std::fs::write(&path, review("")).expect("written");
    let (ok, _, err) =
        common::kubectl::kubectl(&sandbox, &["create", "-f", path.to_str().expect("path")]).await;
    let _ = std::fs::remove_file(&path);
    assert!(!ok);
    assert!(
        err.contains("token is required for TokenReview in authentication"),
        "{err}"
    );
    sandbox.shutdown().await;
}
