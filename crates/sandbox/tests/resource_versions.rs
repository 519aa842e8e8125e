//! resourceVersion semantics of lists and watches, each pinned to what kube-apiserver does
//! (its watch cache in k8s.io/apiserver/pkg/storage/cacher, its etcd3 store, and the
//! ListOptions validation of k8s.io/apimachinery), through kube-rs and raw HTTP.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tusk_sandbox::Sandbox;

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"key": value}}))
        .expect("config map")
}

/// A sandbox whose own start-up writes (each namespace's default ServiceAccount and
/// `kube-root-ca.crt` ConfigMap, the `kubernetes` Service with its Endpoints and
/// EndpointSlice) are done, so that the resourceVersion moves only with the test's writes.
async fn start() -> (Sandbox, Client, Api<ConfigMap>) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let root_cas: Api<ConfigMap> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let accounts = accounts.list(&ListParams::default()).await.expect("listed");
        let root_cas = root_cas
            .list(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
            .await
            .expect("listed");
        let slice = slices.get_opt("kubernetes").await.expect("read");
        if accounts.items.len() >= 4 && root_cas.items.len() >= 4 && slice.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the start-up objects appear");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let maps = Api::namespaced(client.clone(), "default");
    (sandbox, client, maps)
}

async fn create(maps: &Api<ConfigMap>, name: &str) -> String {
    maps.create(&PostParams::default(), &config_map(name, "v1"))
        .await
        .expect("created")
        .resource_version()
        .expect("a resourceVersion")
}

/// A raw GET: its status and body (a watch's body is read until the watch ends).
async fn get(client: &Client, path: &str) -> (u16, String) {
    let request = http::Request::get(path)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = client.send(request).await.expect("answered");
    let status = response.status().as_u16();
    let body = response.into_body().collect_bytes().await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON watch event"))
        .collect()
}

/// The names of the test's ConfigMaps in a list (the root-CA publisher's is every
/// namespace's).
fn names(list: &kube::core::ObjectList<ConfigMap>) -> Vec<String> {
    list.items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| name != "kube-root-ca.crt")
        .collect()
}

/// kube-apiserver answers a watch from a resourceVersion older than its history with HTTP 200
/// and one ERROR event whose Status is 410 Expired, "too old resource version: <asked>
/// (<oldest kept>)", and ends the watch.
#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_as_an_error_event() {
    let (sandbox, client, maps) = start().await;
    let first = create(&maps, "a").await;
    create(&maps, "b").await;
    sandbox.compact_watch_history();
    let compacted = sandbox.resource_version();
    let (status, body) = get(
        &client,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first}&timeoutSeconds=5"),
    )
    .await;
    assert_eq!(status, 200);
    let events = lines(&body);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["kind"], "Status");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    assert_eq!(
        events[0]["object"]["message"],
        format!("too old resource version: {first} ({compacted})")
    );
    sandbox.shutdown().await;
}

/// The watch cache delivers to a watch only events newer than the resourceVersion it asked
/// for, even one the store has not reached yet: it waits, silently, for later changes.
#[tokio::test]
async fn a_watch_from_a_resource_version_not_reached_yet_gets_only_later_changes() {
    let (sandbox, client, maps) = start().await;
    let ahead = sandbox.resource_version() + 2;
    let watching = tokio::spawn({
        let client = client.clone();
        async move {
            get(
                &client,
                &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={ahead}&timeoutSeconds=3"),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["at-plus-one", "at-plus-two", "after"] {
        create(&maps, name).await;
    }
    let (status, body) = watching.await.expect("the watch ran");
    assert_eq!(status, 200);
    let seen: Vec<(String, String)> = lines(&body)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(seen, [("ADDED".to_string(), "after".to_string())], "{body}");
    sandbox.shutdown().await;
}

/// kube-apiserver sends a BOOKMARK to a watch that allows them about two seconds before the
/// watch's timeout (and otherwise about once a minute), carrying the current resourceVersion.
#[tokio::test]
async fn a_bookmark_arrives_shortly_before_the_watch_times_out() {
    let (sandbox, _client, maps) = start().await;
    let rv = create(&maps, "a").await;
    let started = Instant::now();
    let events: Vec<(Duration, WatchEvent<ConfigMap>)> = maps
        .watch(&WatchParams::default().timeout(4), &rv)
        .await
        .expect("watch starts")
        .map_ok(|event| (started.elapsed(), event))
        .try_collect()
        .await
        .expect("the watch streams");
    let ended = started.elapsed();
    assert_eq!(events.len(), 1, "one event: {events:?}");
    let (arrived, WatchEvent::Bookmark(bookmark)) = &events[0] else {
        panic!("a BOOKMARK: {events:?}");
    };
    assert_eq!(bookmark.metadata.resource_version, rv);
    assert!(
        *arrived >= Duration::from_millis(1500) && *arrived < Duration::from_millis(3500),
        "the bookmark came {arrived:?} into a 4 s watch"
    );
    assert!(
        ended >= Duration::from_secs(4),
        "the watch lasted {ended:?}"
    );
    sandbox.shutdown().await;
}

/// A streaming list (sendInitialEvents=true, resourceVersionMatch=NotOlderThan) gets the
/// current objects, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`; kube-rs's
/// watcher in that mode depends on it to know its initial state is complete.
#[tokio::test]
async fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
    let (sandbox, _client, maps) = start().await;
    create(&maps, "a").await;
    let rv = create(&maps, "b").await;
    let events: Vec<WatchEvent<ConfigMap>> = maps
        .watch(&WatchParams::streaming_lists().timeout(1), "")
        .await
        .expect("watch starts")
        .try_collect()
        .await
        .expect("the watch streams");
    let summary: Vec<String> = events
        .iter()
        .map(|event| match event {
            WatchEvent::Added(map) => format!("ADDED {}", map.name_any()),
            WatchEvent::Bookmark(bookmark) => format!(
                "BOOKMARK {} {:?}",
                bookmark.metadata.resource_version,
                bookmark
                    .metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
            ),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ADDED a".to_string(),
            "ADDED b".to_string(),
            "ADDED kube-root-ca.crt".to_string(),
            format!("BOOKMARK {rv} Some(\"true\")")
        ]
    );

    let mut stream = Box::pin(watcher(
        maps.clone(),
        watcher::Config::default().streaming_lists(),
    ));
    let mut initial = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the watcher delivers")
            .expect("the stream goes on")
            .expect("no error");
        match event {
            watcher::Event::InitApply(map) => initial.push(map.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["a", "b", "kube-root-ca.crt"]);
    sandbox.shutdown().await;
}

/// A streaming list from a resourceVersion the store does not reach within three seconds
/// (the watch cache's `blockTimeout`) ends with an ERROR event: 504 Timeout, "Too large
/// resource version", cause ResourceVersionTooLarge, retry after one second.
#[tokio::test]
async fn a_streaming_list_from_a_resource_version_never_reached_times_out() {
    let (sandbox, client, _maps) = start().await;
    let ahead = sandbox.resource_version() + 100;
    let current = sandbox.resource_version();
    let started = Instant::now();
    let (status, body) = get(
        &client,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={ahead}&timeoutSeconds=30"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(3));
    let events = lines(&body);
    assert_eq!(events.len(), 1, "{body}");
    let error = &events[0]["object"];
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(error["code"], 504);
    assert_eq!(error["reason"], "Timeout");
    assert_eq!(
        error["message"],
        format!("Timeout: Too large resource version: {ahead}, current: {current}")
    );
    assert_eq!(
        error["details"],
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})
    );
    sandbox.shutdown().await;
}

/// kube-apiserver's ValidateListOptions refuses these combinations with 422 Invalid on
/// `ListOptions.meta.k8s.io ""`.
#[tokio::test]
async fn invalid_resource_version_match_combinations_are_refused() {
    let (sandbox, client, _maps) = start().await;
    let cases = [
        (
            "resourceVersionMatch=Exact",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersion=1&resourceVersionMatch=Newest",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\"",
        ),
        (
            "watch=true&resourceVersion=1&resourceVersionMatch=NotOlderThan",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ),
        (
            "watch=true&resourceVersion=1&sendInitialEvents=true",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
    ];
    for (query, message) in cases {
        let (status, body) = get(
            &client,
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
        )
        .await;
        let status_object: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(
            (status, status_object["reason"].as_str()),
            (422, Some("Invalid")),
            "{query}: {body}"
        );
        assert_eq!(status_object["message"], message, "{query}");
        assert_eq!(status_object["details"]["kind"], "ListOptions");
        assert_eq!(status_object["details"]["group"], "meta.k8s.io");
    }
    sandbox.shutdown().await;
}

/// `resourceVersionMatch=Exact` (and the legacy spelling, a resourceVersion with a limit)
/// lists the collection as it was then; once that state is compacted away, 410 Expired with
/// etcd3's "The resourceVersion for the provided list is too old.".
#[tokio::test]
async fn an_exact_list_reads_the_past_until_it_is_compacted() {
    let (sandbox, client, maps) = start().await;
    create(&maps, "a").await;
    let then = create(&maps, "b").await;
    maps.delete("a", &DeleteParams::default())
        .await
        .expect("deleted");
    maps.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "v2"}})),
    )
    .await
    .expect("patched");
    create(&maps, "c").await;

    let past = maps
        .list(
            &ListParams::default()
                .at(&then)
                .matching(VersionMatch::Exact),
        )
        .await
        .expect("the past is listed");
    assert_eq!(names(&past), ["a", "b"]);
    assert_eq!(
        past.metadata.resource_version.as_deref(),
        Some(then.as_str())
    );
    let b = past.items.iter().find(|m| m.name_any() == "b").expect("b");
    assert_eq!(
        b.data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(String::as_str),
        Some("v1")
    );
    let (status, body) = get(
        &client,
        &format!("/api/v1/namespaces/default/configmaps?resourceVersion={then}&limit=10"),
    )
    .await;
    assert_eq!(status, 200);
    let legacy: kube::core::ObjectList<ConfigMap> = serde_json::from_str(&body).expect("a list");
    assert_eq!(
        names(&legacy),
        ["a", "b"],
        "a resourceVersion with a limit reads exactly"
    );

    let now = maps
        .list(
            &ListParams::default()
                .at(&then)
                .matching(VersionMatch::NotOlderThan),
        )
        .await
        .expect("the present is listed");
    assert_eq!(names(&now), ["b", "c"]);

    sandbox.compact_watch_history();
    let error = maps
        .list(
            &ListParams::default()
                .at(&then)
                .matching(VersionMatch::Exact),
        )
        .await
        .expect_err("compacted away");
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert_eq!(
        status.message,
        "The resourceVersion for the provided list is too old."
    );
    sandbox.shutdown().await;
}

/// A list not older than a resourceVersion the store has not reached waits for it (three
/// seconds at most, the watch cache's `blockTimeout`), then answers 504 Timeout.
#[tokio::test]
async fn a_list_not_older_than_the_future_waits_then_times_out() {
    let (sandbox, _client, maps) = start().await;
    let next = (sandbox.resource_version() + 1).to_string();
    let listing = tokio::spawn({
        let maps = maps.clone();
        let next = next.clone();
        async move { maps.list(&ListParams::default().at(&next)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    create(&maps, "a").await;
    let list = listing
        .await
        .expect("ran")
        .expect("answered once the store got there");
    assert_eq!(names(&list), ["a"]);

    // kube-rs retries a 504 (fifteen times); the answer itself is what is pinned here.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.default_retry = false;
    let once: Api<ConfigMap> =
        Api::namespaced(Client::try_from(config).expect("client"), "default");
    let far = (sandbox.resource_version() + 50).to_string();
    let started = Instant::now();
    let error = once
        .list(&ListParams::default().at(&far))
        .await
        .expect_err("never reached");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (504, "Timeout"));
    assert_eq!(
        status.message,
        format!(
            "Timeout: Too large resource version: {far}, current: {}",
            sandbox.resource_version()
        )
    );
    sandbox.shutdown().await;
}

/// The pages of a paginated list are one consistent snapshot: changes made between pages do
/// not show, and every page carries the first page's resourceVersion. (The test's names sort
/// before the namespace's `kube-root-ca.crt`, which the last page then holds.)
#[tokio::test]
async fn continue_tokens_list_one_consistent_snapshot() {
    let (sandbox, _client, maps) = start().await;
    for name in ["c1", "c2", "c3", "c4", "c5"] {
        create(&maps, name).await;
    }
    let first = maps
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(names(&first), ["c1", "c2"]);
    let snapshot_rv = first.metadata.resource_version.clone();
    maps.delete("c3", &DeleteParams::default())
        .await
        .expect("deleted");
    create(&maps, "c35").await;
    maps.patch(
        "c4",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "changed"}})),
    )
    .await
    .expect("patched");
    let mut seen = names(&first);
    let mut token = first.metadata.continue_.clone();
    while let Some(continue_token) = token {
        let page = maps
            .list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(&continue_token),
            )
            .await
            .expect("next page");
        assert_eq!(page.metadata.resource_version, snapshot_rv);
        for map in page
            .items
            .iter()
            .filter(|m| m.name_any() != "kube-root-ca.crt")
        {
            assert_eq!(
                map.data
                    .as_ref()
                    .and_then(|d| d.get("key"))
                    .map(String::as_str),
                Some("v1"),
                "{} as it was",
                map.name_any()
            );
        }
        seen.extend(names(&page));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen, ["c1", "c2", "c3", "c4", "c5"]);
    sandbox.shutdown().await;
}

/// A continue token whose snapshot was compacted away gets etcd3's 410 Expired, whose Status
/// carries a token continuing from the latest state instead (an inconsistent list).
#[tokio::test]
async fn an_expired_continue_token_gets_410_with_a_token_to_go_on_inconsistently() {
    let (sandbox, client, maps) = start().await;
    for name in ["c1", "c2", "c3", "c4"] {
        create(&maps, name).await;
    }
    let first = maps
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let token = first.metadata.continue_.clone().expect("more pages");
    create(&maps, "c5").await;
    sandbox.compact_watch_history();
    let (status, body) = get(
        &client,
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
    )
    .await;
    let refusal: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        (status, refusal["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );
    assert!(
        refusal["message"].as_str().unwrap_or_default().starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{body}"
    );
    let inconsistent = refusal["metadata"]["continue"]
        .as_str()
        .expect("a new token");
    let mut seen = Vec::new();
    let mut token = Some(inconsistent.to_string());
    while let Some(continue_token) = token {
        let page = maps
            .list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(&continue_token),
            )
            .await
            .expect("next page");
        seen.extend(names(&page));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen, ["c3", "c4", "c5"], "the rest, as it is now");
    sandbox.shutdown().await;
}
