use serde_json::{Value, json};

use super::*;

// ------------------------------------------------------------------ RFC 7386

#[test]
fn merge_patch_rfc7386_vectors() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, expected) in cases {
        let mut doc = target.clone();
        merge_patch(&mut doc, &patch);
        assert_eq!(doc, expected, "{target} + {patch}");
    }
}

// ------------------------------------------------------------------ RFC 6902

#[test]
fn json_patch_operations() {
    let mut doc = json!({"foo": ["bar", "baz"], "obj": {"a": 1}});
    json_patch(
        &mut doc,
        &json!([
            {"op": "add", "path": "/foo/1", "value": "qux"},
            {"op": "add", "path": "/foo/-", "value": "end"},
            {"op": "remove", "path": "/obj/a"},
            {"op": "replace", "path": "/foo/0", "value": "first"},
            {"op": "copy", "from": "/foo/0", "path": "/copied"},
            {"op": "move", "from": "/foo/3", "path": "/obj/moved"},
            {"op": "add", "path": "/a~1b", "value": {"c~d": true}},
            {"op": "test", "path": "/a~1b/c~0d", "value": true},
        ]),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({"foo": ["first", "qux", "baz"], "obj": {"moved": "end"}, "copied": "first", "a/b": {"c~d": true}})
    );
}

#[test]
fn json_patch_failures_leave_the_object_untouched() {
    let original = json!({"a": [1]});
    let cases = [
        (json!([{"op": "remove", "path": "/missing"}]), 422),
        (json!([{"op": "replace", "path": "/b", "value": 1}]), 422),
        (json!([{"op": "add", "path": "/x/y", "value": 1}]), 422),
        (json!([{"op": "add", "path": "/a/5", "value": 1}]), 422),
        (
            json!([{"op": "add", "path": "/a/0", "value": 2}, {"op": "test", "path": "/a/0", "value": 1}]),
            422,
        ),
        (json!([{"op": "frobnicate", "path": "/a"}]), 400),
        (json!([{"op": "add", "path": "/a"}]), 400),
        (json!({"op": "add"}), 400),
        (json!([{"op": "add", "path": "a", "value": 1}]), 400),
    ];
    for (patch, status) in cases {
        let mut doc = original.clone();
        let err = json_patch(&mut doc, &patch).unwrap_err();
        assert_eq!(err.http_status(), status, "{patch}: {err}");
        assert_eq!(doc, original, "{patch}");
    }
    let mut doc = original.clone();
    let err = json_patch(
        &mut doc,
        &json!([{"op": "test", "path": "/a/0", "value": 2}]),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "testing value /a/0 failed: test failed");
    assert_eq!(err.status_reason(), "Invalid");
}

/// The patches kube-runtime's finalizer helper sends (see kube-runtime's finalizer.rs).
#[test]
fn kube_runtime_finalizer_patches() {
    let finalizer = "postgres.tusk.dev/cleanup";
    let mut obj = json!({"metadata": {"name": "db", "namespace": "ns"}});
    // Adding the first finalizer: the list is absent, and an absent value tests equal to null.
    let add_first = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
    ]);
    json_patch(&mut obj, &add_first).unwrap();
    assert_eq!(obj["metadata"]["finalizers"], json!([finalizer]));
    // Sending it again fails the test: someone else got there first.
    assert_eq!(
        json_patch(&mut obj.clone(), &add_first)
            .unwrap_err()
            .http_status(),
        422
    );
    // Adding to an existing list tests the whole list first.
    let add_more = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": [finalizer]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "other/f"},
    ]);
    json_patch(&mut obj, &add_more).unwrap();
    assert_eq!(obj["metadata"]["finalizers"], json!([finalizer, "other/f"]));
    // Removing by index, guarded by a test of that index.
    let remove = json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": finalizer},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]);
    json_patch(&mut obj, &remove).unwrap();
    assert_eq!(obj["metadata"]["finalizers"], json!(["other/f"]));
    let err = json_patch(&mut obj, &remove).unwrap_err();
    assert!(matches!(err, PatchError::TestFailed { .. }));
}

// ------------------------------------------------------------------ strategic merge patch

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "finalizers": ["a"]},
        "spec": {"replicas": 1, "template": {"spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "side:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "x", "operator": "Exists"}],
        }}}
    })
}

#[test]
fn smp_merges_containers_and_env_by_name() {
    let mut obj = deployment();
    strategic_merge_patch(
        &mut obj,
        &json!({"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            "ports": [{"containerPort": 443}]}],
            "tolerations": [{"key": "y", "operator": "Exists"}],
        }}}}),
        "apps/v1",
        "Deployment",
    )
    .unwrap();
    let pod = &obj["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "app:2");
    assert_eq!(
        pod["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(
        pod["containers"][0]["ports"],
        json!([{"containerPort": 80}, {"containerPort": 443}])
    );
    assert_eq!(
        pod["containers"][1]["name"], "sidecar",
        "untouched container kept"
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "y", "operator": "Exists"}]),
        "a list without a merge key is replaced"
    );
    assert_eq!(obj["spec"]["replicas"], 1);
}

#[test]
fn smp_directives() {
    let mut obj = deployment();
    strategic_merge_patch(
        &mut obj,
        &json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "sidecar", "image": "side:2"},
                               {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}],
                "volumes": [{"$patch": "replace"}, {"name": "fresh", "configMap": {"name": "c"}}],
            }}},
        }),
        "apps/v1",
        "Deployment",
    )
    .unwrap();
    assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
    let pod = &obj["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["name"], "sidecar");
    assert_eq!(pod["containers"][0]["image"], "side:2");
    assert_eq!(
        pod["containers"][1]["env"],
        json!([{"name": "B", "value": "2"}])
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "fresh", "configMap": {"name": "c"}}])
    );

    // $retainKeys clears the other members of a union (a Deployment's strategy).
    let mut obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    strategic_merge_patch(
        &mut obj,
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        "apps/v1",
        "Deployment",
    )
    .unwrap();
    assert_eq!(obj["spec"]["strategy"], json!({"type": "Recreate"}));

    // $patch: replace on a map, null deletes.
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
    strategic_merge_patch(
        &mut obj,
        &json!({"data": {"$patch": "replace", "c": "3"}, "metadata": {"labels": {"x": null}}}),
        "v1",
        "ConfigMap",
    )
    .unwrap();
    assert_eq!(obj["data"], json!({"c": "3"}));
    assert_eq!(obj["metadata"]["labels"], json!({}));
}

#[test]
fn smp_service_ports_merge_by_port_and_custom_resources_get_415() {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service",
        "spec": {"ports": [{"port": 5432, "name": "pg"}, {"port": 9187, "name": "metrics"}]}});
    strategic_merge_patch(
        &mut svc,
        &json!({"spec": {"ports": [{"port": 5432, "targetPort": 5433}]}}),
        "v1",
        "Service",
    )
    .unwrap();
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"port": 5432, "name": "pg", "targetPort": 5433})
    );
    assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 2);

    let mut cr = json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster"});
    let err = strategic_merge_patch(
        &mut cr,
        &json!({"spec": {}}),
        "postgres.tusk.dev/v1",
        "PostgresCluster",
    )
    .unwrap_err();
    assert_eq!(err.http_status(), 415);
    assert_eq!(err.status_reason(), "UnsupportedMediaType");
}

#[test]
fn smp_statefulset_template_and_missing_merge_key() {
    let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": {"spec": {
        "containers": [{"name": "postgres", "image": "pg:15", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}});
    strategic_merge_patch(
        &mut sts,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "postgres",
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "run", "mountPath": "/run"}]}]}}}}),
        "apps/v1",
        "StatefulSet",
    )
    .unwrap();
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "run", "mountPath": "/run"}])
    );
    let err = strategic_merge_patch(
        &mut sts,
        &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        "apps/v1",
        "StatefulSet",
    )
    .unwrap_err();
    assert_eq!(err.http_status(), 422);
}

// ------------------------------------------------------------------ server-side apply

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["manager"] == manager))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

fn config_map(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}, "data": data})
}

#[test]
fn ssa_creates_with_managed_fields() {
    let applied = config_map(json!({"a": "1"}));
    let outcome = server_side_apply(None, &applied, "tusk", false, None).unwrap();
    assert_eq!(outcome.object["data"], json!({"a": "1"}));
    assert_eq!(
        managers(&outcome.object),
        vec![("tusk".into(), "Apply".into())]
    );
    let entry = &outcome.object["metadata"]["managedFields"][0];
    assert_eq!(entry["apiVersion"], "v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:a": {}}}));
}

#[test]
fn ssa_removes_fields_a_manager_stops_applying() {
    let first = server_side_apply(
        None,
        &config_map(json!({"a": "1", "b": "2"})),
        "tusk",
        false,
        None,
    )
    .unwrap()
    .object;
    let second = server_side_apply(
        Some(&first),
        &config_map(json!({"a": "1"})),
        "tusk",
        false,
        None,
    )
    .unwrap()
    .object;
    assert_eq!(second["data"], json!({"a": "1"}));
    assert_eq!(fields_of(&second, "tusk"), json!({"f:data": {"f:a": {}}}));
}

#[test]
fn ssa_keeps_fields_another_manager_owns() {
    let first = server_side_apply(
        None,
        &config_map(json!({"a": "1", "b": "2"})),
        "tusk",
        false,
        None,
    )
    .unwrap()
    .object;
    // Another manager applies b with the same value: shared ownership, no conflict.
    let shared = server_side_apply(
        Some(&first),
        &config_map(json!({"b": "2"})),
        "other",
        false,
        None,
    )
    .unwrap()
    .object;
    let after = server_side_apply(
        Some(&shared),
        &config_map(json!({"a": "1"})),
        "tusk",
        false,
        None,
    )
    .unwrap()
    .object;
    assert_eq!(
        after["data"],
        json!({"a": "1", "b": "2"}),
        "b is still applied by other"
    );
}

#[test]
fn ssa_conflict_and_force() {
    let first = server_side_apply(None, &config_map(json!({"a": "1"})), "tusk", false, None)
        .unwrap()
        .object;
    let err = server_side_apply(
        Some(&first),
        &config_map(json!({"a": "2"})),
        "kubectl",
        false,
        None,
    )
    .unwrap_err();
    assert_eq!(err.http_status(), 409);
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"tusk\": .data.a"
    );
    let PatchError::Conflict { conflicts, .. } = &err else {
        panic!("expected a conflict, got {err:?}");
    };
    assert_eq!(conflicts[0].field, ".data.a");

    let forced = server_side_apply(
        Some(&first),
        &config_map(json!({"a": "2"})),
        "kubectl",
        true,
        None,
    )
    .unwrap()
    .object;
    assert_eq!(forced["data"]["a"], "2");
    assert_eq!(
        managers(&forced),
        vec![("kubectl".into(), "Apply".into())],
        "tusk lost its only field"
    );
    // Now tusk's apply conflicts in turn.
    assert!(
        server_side_apply(
            Some(&forced),
            &config_map(json!({"a": "1"})),
            "tusk",
            false,
            None
        )
        .is_err()
    );
}

#[test]
fn ssa_conflicts_with_update_managers_name_their_version() {
    let mut obj = config_map(json!({"a": "1", "b": "2"}));
    record_update(None, &mut obj, "kubectl-client-side-apply", "Update", None);
    let err = server_side_apply(
        Some(&obj),
        &config_map(json!({"a": "9", "b": "8"})),
        "tusk",
        false,
        None,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using v1 at "), "{message}");
    assert!(message.ends_with(":\n- .data.a\n- .data.b"), "{message}");
}

#[test]
fn ssa_merges_map_lists_by_key_and_status_subresource() {
    let cluster = |conditions: Value| {
        json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
               "metadata": {"name": "db"}, "spec": {"memorySize": 1}, "status": {"conditions": conditions}})
    };
    let live = server_side_apply(
        None,
        &json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "db"}, "spec": {"memorySize": 1}}),
        "user",
        false,
        None,
    )
    .unwrap()
    .object;
    let ready = cluster(json!([{"type": "Ready", "status": "True"}]));
    let with_ready = server_side_apply(Some(&live), &ready, "tusk-ready", false, Some("status"))
        .unwrap()
        .object;
    let degraded = cluster(json!([{"type": "Degraded", "status": "False"}]));
    let both = server_side_apply(
        Some(&with_ready),
        &degraded,
        "tusk-degraded",
        false,
        Some("status"),
    )
    .unwrap()
    .object;
    assert_eq!(
        both["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "False"}])
    );
    assert_eq!(
        both["spec"],
        json!({"memorySize": 1}),
        "a status apply leaves spec alone"
    );
    assert_eq!(
        fields_of(&both, "tusk-ready"),
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    let entry = both["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "tusk-ready")
        .unwrap();
    assert_eq!(entry["subresource"], "status");
    // The Ready manager stops applying its condition: only its item goes.
    let none = cluster(json!([]));
    let after = server_side_apply(Some(&both), &none, "tusk-ready", false, Some("status"))
        .unwrap()
        .object;
    assert_eq!(
        after["status"]["conditions"],
        json!([{"type": "Degraded", "status": "False"}])
    );
    // A main-resource apply ignores status.
    let main = server_side_apply(
        Some(&after),
        &cluster(json!([{"type": "X", "status": "True"}])),
        "user",
        false,
        None,
    )
    .unwrap()
    .object;
    assert_eq!(main["status"], after["status"]);
}

#[test]
fn ssa_containers_by_name() {
    let deploy = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    };
    let live = server_side_apply(
        None,
        &deploy(json!([{"name": "app", "image": "a:1"}])),
        "mgr-a",
        false,
        None,
    )
    .unwrap()
    .object;
    let live = server_side_apply(
        Some(&live),
        &deploy(json!([{"name": "side", "image": "s:1"}])),
        "mgr-b",
        false,
        None,
    )
    .unwrap()
    .object;
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}])
    );
    let err = server_side_apply(
        Some(&live),
        &deploy(json!([{"name": "app", "image": "a:2"}])),
        "mgr-b",
        false,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"mgr-a\": .spec.template.spec.containers[name=\"app\"].image"
    );
}

#[test]
fn record_update_moves_ownership_so_later_applies_conflict() {
    let applied = server_side_apply(
        None,
        &config_map(json!({"a": "1", "b": "2"})),
        "tusk",
        false,
        None,
    )
    .unwrap()
    .object;
    let mut updated = applied.clone();
    updated["data"]["a"] = json!("changed");
    updated["data"].as_object_mut().unwrap().remove("b");
    record_update(Some(&applied), &mut updated, "kubectl-edit", "Update", None);
    assert_eq!(
        fields_of(&updated, "kubectl-edit"),
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        fields_of(&updated, "tusk"),
        Value::Null,
        "tusk owns nothing any more"
    );
    let err = server_side_apply(
        Some(&updated),
        &config_map(json!({"a": "1"})),
        "tusk",
        false,
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("conflict with \"kubectl-edit\" using v1 at "),
        "{err}"
    );
    // An update that changes nothing records nothing.
    let mut same = updated.clone();
    record_update(Some(&updated), &mut same, "someone", "Update", None);
    assert_eq!(
        managers(&same),
        vec![("kubectl-edit".into(), "Update".into())]
    );
}

// ------------------------------------------------------------------ properties

mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::*;

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arbitrary_operation() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("add"),
                Just("remove"),
                Just("replace"),
                Just("move"),
                Just("copy"),
                Just("test"),
                Just("bogus")
            ],
            "(/[a-d0-2-]){0,3}",
            "(/[a-d0-2]){0,2}",
            arbitrary_json(),
        )
            .prop_map(|(op, path, from, value)| {
                json!({"op": op, "path": path, "from": from, "value": value})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

        /// RFC 7386 patches are idempotent: applying one twice changes nothing more.
        #[test]
        fn merge_patch_is_idempotent(target in arbitrary_json(), patch in arbitrary_json()) {
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            prop_assert_eq!(once, twice);
        }

        /// A JSON patch either applies completely or leaves the object as it was, never panics.
        #[test]
        fn json_patch_is_atomic(target in arbitrary_json(), ops in prop::collection::vec(arbitrary_operation(), 0..4)) {
            let mut doc = target.clone();
            if json_patch(&mut doc, &Value::Array(ops)).is_err() {
                prop_assert_eq!(doc, target);
            }
        }

        /// Applying the same configuration again as the same manager changes nothing but the
        /// entry's time, and the applied fields are all present with the applied values.
        #[test]
        fn server_side_apply_is_idempotent(data in prop::collection::btree_map("[a-d]", "[a-c]{0,2}", 0..4),
                                           other in prop::collection::btree_map("[c-f]", "[a-c]{0,2}", 0..4)) {
            let config = |data: &std::collections::BTreeMap<String, String>| json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": data});
            let first = server_side_apply(None, &config(&other), "other", false, None).unwrap().object;
            let second = server_side_apply(Some(&first), &config(&data), "me", true, None).unwrap().object;
            let third = server_side_apply(Some(&second), &config(&data), "me", false, None).unwrap().object;
            let without_time = |obj: &Value| {
                let mut obj = obj.clone();
                if let Some(entries) = obj.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) {
                    for entry in entries {
                        entry.as_object_mut().unwrap().remove("time");
                    }
                }
                obj
            };
            prop_assert_eq!(without_time(&second), without_time(&third));
            for (key, value) in &data {
                prop_assert_eq!(&second["data"][key], &json!(value));
            }
        }
    }
}

/// The strategic merge patch kubectl 1.32's client-side `kubectl apply` sent (captured from
/// the real kubectl) when a manifest changed an image and replicas, dropped env A and dropped
/// the sidecar container: the directives must delete exactly those.
#[test]
fn smp_as_sent_by_kubectl_client_side_apply() {
    let mut live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "side", "image": "side:1"}]}}}
    });
    let sent = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\"}\n"}},
        "spec": {"replicas": 2, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [
                {"$setElementOrder/env": [{"name": "B"}], "env": [{"name": "B", "value": "3"}, {"$patch": "delete", "name": "A"}],
                 "image": "app:2", "name": "app"},
                {"$patch": "delete", "name": "side"}]}}}});
    strategic_merge_patch(&mut live, &sent, "apps/v1", "Deployment").unwrap();
    assert_eq!(live["spec"]["replicas"], 2);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}]}])
    );
    assert_eq!(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"apiVersion\":\"apps/v1\"}\n"
    );
    assert_eq!(
        live["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
}
