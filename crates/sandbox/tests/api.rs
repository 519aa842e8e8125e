//! The sandbox API server over real HTTPS with the kube-rs client: CRUD, errors, CRDs and their
//! schemas, the status subresource, patches, lists and persistence.

mod common;

use common::{api_error, object, sandbox_with_crds, tusk_api};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tusk_sandbox::Sandbox;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "data": {"key": "value"},
    }))
    .expect("config map")
}

#[tokio::test]
async fn crud_with_kubernetes_errors() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = maps
        .create(&PostParams::default(), &config_map("one"))
        .await
        .expect("created");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let first_rv: u64 = meta
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv");

    let (code, reason, _) = api_error(
        maps.create(&PostParams::default(), &config_map("one"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let (code, reason, _) = api_error(maps.get("missing").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    let mut changed = created.clone();
    changed.data = Some([("key".to_string(), "new".to_string())].into());
    let updated = maps
        .replace("one", &PostParams::default(), &changed)
        .await
        .expect("updated");
    let second_rv: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(second_rv > first_rv);

    // The same stale resourceVersion again: 409 Conflict.
    let (code, reason, _) = api_error(
        maps.replace("one", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let mut generated = config_map("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = maps
        .create(&PostParams::default(), &generated)
        .await
        .expect("generateName");
    assert!(
        generated
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("gen-") && n.len() == 9)
    );
    // A long prefix is cut, as kube-apiserver's name generator does, so the name still fits
    // 63 characters (a Job named at the limit still gets pods).
    let long_prefix = format!("{}-", "j".repeat(62));
    let mut long = config_map("");
    long.metadata.name = None;
    long.metadata.generate_name = Some(long_prefix.clone());
    let long = maps
        .create(&PostParams::default(), &long)
        .await
        .expect("a long generateName");
    let name = long.metadata.name.unwrap();
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with(&long_prefix[..58]), "{name}");

    let (code, _, fields) = api_error(
        maps.create(&PostParams::default(), &config_map("Not_Valid"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert_eq!(fields, vec!["metadata.name".to_string()]);

    let in_missing_namespace: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let (code, _, _) = api_error(
        in_missing_namespace
            .create(&PostParams::default(), &config_map("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);

    maps.delete("one", &DeleteParams::default())
        .await
        .expect("deleted");
    let (code, _, _) = api_error(maps.get("one").await.unwrap_err());
    assert_eq!(code, 404);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lists_paginate_and_select() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let mut map = config_map(&format!("map-{i}"));
        if i % 2 == 0 {
            map.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        }
        maps.create(&PostParams::default(), &map)
            .await
            .expect("created");
    }
    let page = maps
        .list(&ListParams::default().limit(3))
        .await
        .expect("page 1");
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().expect("continue token");
    let mut names: Vec<String> = page
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    let mut next = Some(token);
    while let Some(token) = next {
        let page = maps
            .list(&ListParams::default().limit(3).continue_token(&token))
            .await
            .expect("page");
        names.extend(page.items.iter().filter_map(|m| m.metadata.name.clone()));
        next = page.metadata.continue_.clone();
    }
    // Every namespace also holds the root-CA publisher's ConfigMap.
    names.retain(|name| name != "kube-root-ca.crt");
    assert_eq!(
        names,
        (0..7).map(|i| format!("map-{i}")).collect::<Vec<_>>()
    );

    let demo = maps
        .list(&ListParams::default().labels("app=demo"))
        .await
        .expect("labelled");
    assert_eq!(demo.items.len(), 3);
    let not_demo = maps
        .list(&ListParams::default().labels("app notin (demo)"))
        .await
        .expect("notin");
    assert_eq!(not_demo.items.len(), 5, "four maps and kube-root-ca.crt");
    let by_name = maps
        .list(&ListParams::default().fields("metadata.name=map-3"))
        .await
        .expect("by name");
    assert_eq!(by_name.items.len(), 1);
    let (code, _, _) = api_error(
        maps.list(&ListParams::default().fields("data.key=value"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "unsupported field selectors are refused");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn tusk_examples_are_accepted_and_invalid_manifests_refused() {
    let (sandbox, client) = sandbox_with_crds().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut accepted = 0;
    for path in [
        examples.join("elephant.yaml"),
        examples.join("backup-schedule.yaml"),
        examples.join("my-backup.yaml"),
        examples.join("remote-cluster.yaml"),
        examples.join("restore/elephant-restored.yaml"),
    ] {
        let text = std::fs::read_to_string(&path).expect("example readable");
        let value: serde_json::Value = serde_yaml_ng::from_str(&text).expect("example is YAML");
        let kind = value["kind"].as_str().expect("kind").to_string();
        let plural = format!("{}s", kind.to_lowercase());
        tusk_api(&client, &kind, &plural)
            .create(&PostParams::default(), &object(value))
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        accepted += 1;
    }
    assert_eq!(accepted, 5);

    let clusters = tusk_api(&client, "PostgresCluster", "postgresclusters");
    let cluster = |name: &str, spec: serde_json::Value| {
        object(
            json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": name}, "spec": spec}),
        )
    };
    let cases = [
        (
            "zero-memory",
            json!({"memorySize": 0, "postgresDiskSize": 1}),
            "spec.memorySize",
        ),
        (
            "wrong-type",
            json!({"memorySize": "lots", "postgresDiskSize": 1}),
            "spec.memorySize",
        ),
        (
            "owned-parameter",
            json!({"memorySize": 1, "postgresDiskSize": 1, "parameters": {"port": "5433"}}),
            "spec.parameters",
        ),
    ];
    for (name, spec, field) in cases {
        let (code, reason, fields) = api_error(
            clusters
                .create(&PostParams::default(), &cluster(name, spec))
                .await
                .unwrap_err(),
        );
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{name}");
        assert!(
            fields.iter().any(|f| f == field),
            "{name}: {fields:?} should name {field}"
        );
    }

    let schedules = tusk_api(&client, "PostgresBackupSchedule", "postgresbackupschedules");
    let schedule = |name: &str, spec: serde_json::Value| {
        object(
            json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule", "metadata": {"name": name}, "spec": spec}),
        )
    };
    let (code, _, fields) = api_error(
        schedules
            .create(
                &PostParams::default(),
                &schedule(
                    "zero",
                    json!({"cluster": {"name": "elephant"}, "interval": 0}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(fields.iter().any(|f| f.contains("interval")), "{fields:?}");
    let (code, _, _) = api_error(schedules.create(&PostParams::default(), &schedule("both", json!({"cluster": {"name": "elephant"}, "interval": 1, "schedule": "0 * * * *"}))).await.unwrap_err());
    assert_eq!(code, 422);

    // Transition rules: the disk may not shrink, the cluster reference may not change.
    let shrink = Patch::Merge(json!({"spec": {"postgresDiskSize": 0}}));
    assert_eq!(
        api_error(
            clusters
                .patch("elephant", &PatchParams::default(), &shrink)
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    let grow = Patch::Merge(json!({"spec": {"postgresDiskSize": 5}}));
    let grown = clusters
        .patch("elephant", &PatchParams::default(), &grow)
        .await
        .expect("growing is fine");
    assert_eq!(grown.data["spec"]["postgresDiskSize"], 5);
    assert_eq!(grown.metadata.generation, Some(2));
    let shrink = Patch::Merge(json!({"spec": {"postgresDiskSize": 2}}));
    let (code, _, fields) = api_error(
        clusters
            .patch("elephant", &PatchParams::default(), &shrink)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        fields.iter().any(|f| f == "spec.postgresDiskSize"),
        "{fields:?}"
    );
    let rename = Patch::Merge(json!({"spec": {"cluster": {"name": "other"}}}));
    assert_eq!(
        api_error(
            schedules
                .patch("default", &PatchParams::default(), &rename)
                .await
                .unwrap_err()
        )
        .0,
        422
    );

    // Unknown fields are pruned by default, refused under Strict.
    let with_unknown = cluster(
        "pruned",
        json!({"displayName": "p", "memorySize": 1, "postgresDiskSize": 1, "bogus": true}),
    );
    let created = clusters
        .create(&PostParams::default(), &with_unknown)
        .await
        .expect("created");
    assert!(created.data["spec"].get("bogus").is_none());
    let strict = Patch::Merge(json!({"spec": {"bogus": true}}));
    let (code, _, _) = api_error(
        clusters
            .patch(
                "pruned",
                &PatchParams {
                    field_validation: Some(kube::api::ValidationDirective::Strict),
                    ..Default::default()
                },
                &strict,
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);

    // Strategic merge patch is for built-in kinds only.
    let smp = Patch::Strategic(json!({"spec": {"memorySize": 3}}));
    assert_eq!(
        api_error(
            clusters
                .patch("elephant", &PatchParams::default(), &smp)
                .await
                .unwrap_err()
        )
        .0,
        415
    );

    // The status subresource: the main endpoint ignores status, /status changes only status.
    let with_status =
        Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"memorySize": 4}}));
    let patched = clusters
        .patch("elephant", &PatchParams::default(), &with_status)
        .await
        .expect("patched");
    assert!(
        patched
            .data
            .get("status")
            .is_none_or(|s| s.get("phase").is_none())
    );
    let status_only =
        Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"memorySize": 9}}));
    let patched = clusters
        .patch_status("elephant", &PatchParams::default(), &status_only)
        .await
        .expect("status");
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["memorySize"], 4);
    let generation = patched.metadata.generation;
    assert_eq!(
        generation,
        Some(3),
        "status changes do not bump the generation"
    );

    // Deleting a CRD deletes its objects.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    crds.delete(
        "postgresbackuprequests.postgres.tusk.dev",
        &DeleteParams::default(),
    )
    .await
    .expect("CRD deleted");
    let mut gone = false;
    for _ in 0..50 {
        if crds
            .get_opt("postgresbackuprequests.postgres.tusk.dev")
            .await
            .expect("get")
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the CRD goes once its objects are gone");
    let requests = tusk_api(&client, "PostgresBackupRequest", "postgresbackuprequests");
    assert_eq!(
        api_error(requests.get("my-backup").await.unwrap_err()).0,
        404
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn objects_and_resource_versions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox = Sandbox::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    common::install_crds(&client).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = maps
        .create(&PostParams::default(), &config_map("kept"))
        .await
        .expect("created");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns"),
        )
        .await
        .expect("ns");
    let rv_before = sandbox.resource_version();
    sandbox.shutdown().await;

    let sandbox = Sandbox::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("restarts");
    let client = sandbox.client().await.expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let kept = maps.get("kept").await.expect("still there");
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    assert_eq!(
        kept.metadata.resource_version,
        created.metadata.resource_version
    );
    // Nothing goes back; the publishers of a start (the kubernetes Service's endpoints at this
    // start's port, kube-root-ca.crt with its CA) may already have written since.
    assert!(sandbox.resource_version() >= rv_before);
    let next = maps
        .create(&PostParams::default(), &config_map("after"))
        .await
        .expect("created");
    let next_rv: u64 = next
        .metadata
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(
        next_rv > rv_before,
        "resourceVersions keep increasing across restarts"
    );
    tusk_api(&client, "PostgresCluster", "postgresclusters")
        .list(&ListParams::default())
        .await
        .expect("CRDs still served");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn hostile_clients_get_status_errors() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let status_of = |client: kube::Client, request: http::Request<kube::client::Body>| async move {
        let response = client.send(request).await.expect("answered");
        let code = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("a Status");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["code"], code);
        code
    };
    let path = "/api/v1/namespaces/default/configmaps";
    let too_big = vec![b' '; 4 * 1024 * 1024];
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(too_big))
        .expect("request");
    assert_eq!(status_of(client.clone(), request).await, 413);
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(b"{not json".to_vec()))
        .expect("request");
    assert_eq!(status_of(client.clone(), request).await, 400);
    let request = http::Request::get("/api/v1/namespaces/default/nosuchthings")
        .body(kube::client::Body::empty())
        .expect("request");
    assert_eq!(status_of(client.clone(), request).await, 404);

    // A wrong token: 401.
    let text = std::fs::read_to_string(sandbox.kubeconfig_path()).expect("kubeconfig");
    let forged = text.replace(sandbox.token(), "not-the-token");
    let dir = tempfile::tempdir().expect("temp dir");
    let path_forged = dir.path().join("kubeconfig");
    std::fs::write(&path_forged, forged).expect("written");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path_forged).expect("parsed");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let intruder = kube::Client::try_from(config).expect("client");
    let request = http::Request::get(path)
        .body(kube::client::Body::empty())
        .expect("request");
    assert_eq!(status_of(intruder, request).await, 401);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn events_go_once_their_ttl_has_passed_since_their_last_write() {
    use k8s_openapi::api::core::v1::Event;
    use std::time::{Duration, Instant};

    let sandbox = Sandbox::builder()
        .event_ttl(Duration::from_secs(3))
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = |name: &str| -> Event {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name},
            "involvedObject": {"kind": "ConfigMap", "name": "demo", "namespace": "default"},
            "reason": "Tested", "message": "something happened", "type": "Normal", "count": 1,
        }))
        .expect("an Event")
    };
    let written = Instant::now();
    for name in ["once", "repeated"] {
        events
            .create(&PostParams::default(), &event(name))
            .await
            .expect("created");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A repeat is a write, which renews the Event's lease.
    events
        .patch(
            "repeated",
            &PatchParams::default(),
            &Patch::Merge(json!({"count": 2})),
        )
        .await
        .expect("patched");
    let renewed = Instant::now();

    while events.get_opt("once").await.expect("get").is_some() {
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "the Event outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        written.elapsed() >= Duration::from_secs(3),
        "the Event went {:?} after it was written, before its TTL",
        written.elapsed()
    );
    assert!(
        events.get_opt("repeated").await.expect("get").is_some(),
        "the Event written again went with the TTL of its first write"
    );
    while events.get_opt("repeated").await.expect("get").is_some() {
        assert!(
            renewed.elapsed() < Duration::from_secs(10),
            "the repeated Event outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed.elapsed() >= Duration::from_secs(3));
    // Nothing else is touched.
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get_opt("default").await.expect("get").is_some());
    sandbox.shutdown().await;
}
