//! Property test: random bodies and patches of every content type, sent over HTTP, never make
//! the server fail (no 5xx, it keeps answering) and never leave an object that fails its schema.

mod common;

use http::Request;
use kube::client::Body;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tusk_sandbox::apiserver::schema::CompiledSchema;

const PATH: &str = "/apis/postgres.tusk.dev/v1/namespaces/default/postgresclusters";

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..300).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "elephant",
            "port",
            "5432",
            "",
            "add",
            "test",
            "/spec/memorySize",
            "/metadata/finalizers/-"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "spec",
        "memorySize",
        "postgresDiskSize",
        "displayName",
        "parameters",
        "port",
        "metadata",
        "name",
        "finalizers",
        "status",
        "labels",
        "op",
        "path",
        "value",
        "restore",
        "apiVersion",
        "kind",
        "bogus",
    ])
    .prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body_ {
    Json(Value),
    Raw(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body_> {
    prop_oneof![
        4 => value().prop_map(Body_::Json),
        // A plausible cluster with random spec values.
        4 => prop::collection::btree_map(key(), value(), 0..5).prop_map(|spec| Body_::Json(json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "fuzzed"}, "spec": Value::Object(spec.into_iter().collect()),
        }))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body_::Raw),
    ]
}

fn method() -> impl Strategy<Value = (&'static str, &'static str, bool)> {
    prop_oneof![
        Just(("POST", "application/json", false)),
        Just(("PUT", "application/json", true)),
        Just(("PATCH", "application/merge-patch+json", true)),
        Just(("PATCH", "application/json-patch+json", true)),
        Just(("PATCH", "application/strategic-merge-patch+json", true)),
        Just(("PATCH", "application/apply-patch+yaml", true)),
        Just(("PATCH", "application/yaml", true)),
    ]
}

#[test]
fn random_bodies_never_break_the_server_or_the_schema() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (sandbox, client) = runtime.block_on(common::sandbox_with_crds());
    let crd = tusk_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "PostgresCluster")
        .expect("CRD");
    let schema_json = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref()),
    )
    .expect("schema");
    let schema = CompiledSchema::new(&schema_json).expect("schema compiles");
    let valid = json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "fuzzed"},
        "spec": {"displayName": "fuzz", "memorySize": 1, "postgresDiskSize": 1}});

    let accepted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(method(), body(), any::<bool>()),
            |((method, content_type, on_object), body, recreate)| {
                runtime.block_on(async {
                    if recreate {
                        let request = Request::post(PATH)
                            .header("content-type", "application/json")
                            .body(Body::from(serde_json::to_vec(&valid).expect("json")))
                            .expect("request");
                        let _ = client.send(request).await;
                    }
                    let uri = if on_object {
                        format!("{PATH}/fuzzed?fieldManager=fuzz")
                    } else {
                        PATH.to_string()
                    };
                    let bytes = match &body {
                        Body_::Json(v) => serde_json::to_vec(v).expect("json"),
                        Body_::Raw(b) => b.clone(),
                    };
                    let request = Request::builder()
                        .method(method)
                        .uri(uri)
                        .header("content-type", content_type)
                        .body(Body::from(bytes))
                        .expect("request");
                    let response = client.send(request).await.expect("the server answers");
                    if response.status().is_success() {
                        accepted.set(accepted.get() + 1);
                    } else {
                        refused.set(refused.get() + 1);
                    }
                    prop_assert!(
                        response.status().as_u16() < 500,
                        "{method} {content_type} answered {}",
                        response.status()
                    );
                    let get = Request::get(format!("{PATH}/fuzzed"))
                        .body(Body::empty())
                        .expect("request");
                    let response = client.send(get).await.expect("the server still answers");
                    if response.status().as_u16() == 200 {
                        let bytes = http_body_util::BodyExt::collect(response.into_body())
                            .await
                            .expect("body")
                            .to_bytes();
                        let stored: Value =
                            serde_json::from_slice(&bytes).expect("stored object is JSON");
                        let errors = schema.validate(&stored, None);
                        prop_assert!(
                            errors.is_empty(),
                            "stored object fails its schema: {:?}",
                            errors.iter().map(|e| e.field.clone()).collect::<Vec<_>>()
                        );
                    }
                    Ok(())
                })
            },
        )
        .expect("no failing case");
    // Both outcomes must have been exercised for the property to mean anything.
    assert!(
        accepted.get() > 0 && refused.get() > 0,
        "accepted {}, refused {}",
        accepted.get(),
        refused.get()
    );
    runtime.block_on(sandbox.shutdown());
}
