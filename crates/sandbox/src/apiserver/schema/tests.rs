use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// The openAPIV3Schema of one of tusk's real CRDs, by kind.
fn tusk_schema(kind: &str) -> Value {
    tusk_api::crds()
        .into_iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serializes"))
        .find(|crd| crd["spec"]["names"]["kind"] == kind)
        .map(|crd| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("tusk has no CRD of kind {kind}"))
}

fn compiled(kind: &str) -> CompiledSchema {
    CompiledSchema::new(&tusk_schema(kind)).expect("tusk's schema compiles")
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "postgres.tusk.dev/v1",
        "kind": "PostgresCluster",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": spec,
    })
}

fn valid_cluster_spec() -> Value {
    json!({"displayName": "Orders", "memorySize": 2, "postgresDiskSize": 10})
}

/// Prunes, defaults and validates, as the server does on a write.
fn admit(schema: &CompiledSchema, mut obj: Value, old: Option<&Value>) -> Vec<FieldError> {
    schema.prune(&mut obj);
    schema.default(&mut obj);
    schema.validate(&obj, old)
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn every_tusk_crd_compiles() {
    for crd in tusk_api::crds() {
        let crd = serde_json::to_value(crd).unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            CompiledSchema::new(&version["schema"]["openAPIV3Schema"])
                .unwrap_or_else(|e| panic!("{}: {e}", crd["metadata"]["name"]));
        }
    }
}

#[test]
fn a_valid_cluster_passes() {
    let schema = compiled("PostgresCluster");
    assert_eq!(admit(&schema, cluster(valid_cluster_spec()), None), vec![]);
}

#[test]
fn memory_size_below_minimum_is_refused_with_the_apiserver_wording() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["memorySize"] = json!(0);
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.memorySize".into(),
            reason: FieldErrorReason::Invalid,
            message:
                "Invalid value: 0: spec.memorySize in body should be greater than or equal to 1"
                    .into(),
        }]
    );
    assert_eq!(errors[0].reason.as_k8s_cause_type(), "FieldValueInvalid");
}

#[test]
fn memory_size_above_maximum_and_wrong_type() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["memorySize"] = json!(2048);
    let errors = admit(&schema, cluster(spec.clone()), None);
    assert_eq!(
        errors[0].message,
        "Invalid value: 2048: spec.memorySize in body should be less than or equal to 1024"
    );
    spec["memorySize"] = json!("two");
    let errors = admit(&schema, cluster(spec.clone()), None);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "spec.memorySize");
    assert_eq!(errors[0].reason, FieldErrorReason::TypeInvalid);
    assert_eq!(
        errors[0].message,
        "Invalid value: \"two\": spec.memorySize in body must be of type integer: \"string\""
    );
    spec["memorySize"] = json!(1.5);
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(errors[0].reason, FieldErrorReason::TypeInvalid);
}

#[test]
fn missing_required_fields() {
    let schema = compiled("PostgresCluster");
    let errors = admit(&schema, cluster(json!({"displayName": "x"})), None);
    assert_eq!(
        fields(&errors),
        vec!["spec.memorySize", "spec.postgresDiskSize"]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.reason == FieldErrorReason::Required && e.message == "Required value")
    );
    let mut no_spec = cluster(json!({}));
    no_spec.as_object_mut().unwrap().remove("spec");
    assert_eq!(fields(&admit(&schema, no_spec, None)), vec!["spec"]);
}

#[test]
fn string_length_pattern_and_enum() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["displayName"] = json!("");
    spec["postgresVersion"] = json!("9");
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec![
            "Invalid value: \"\": spec.displayName in body should be at least 1 chars long",
            "Invalid value: \"9\": spec.postgresVersion in body should match '^[1-9][0-9]$'",
        ]
    );
    let mut spec = valid_cluster_spec();
    spec["displayName"] = json!("x".repeat(254));
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(errors[0].reason, FieldErrorReason::TooLong);

    let mut obj = cluster(valid_cluster_spec());
    obj["status"] = json!({"phase": "Sleeping"});
    let errors = admit(&schema, obj, None);
    assert_eq!(errors[0].field, "status.phase");
    assert_eq!(errors[0].reason, FieldErrorReason::NotSupported);
    assert_eq!(
        errors[0].message,
        "Unsupported value: \"Sleeping\": supported values: \"Creating\", \"Restoring\", \"Ready\", \"Updating\", \"Degraded\""
    );
}

#[test]
fn forbidden_parameter_is_refused_by_cel_on_spec_parameters() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["parameters"] = json!({"work_mem": "64MB", "Port": "5433"});
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.parameters");
    assert_eq!(errors[0].reason, FieldErrorReason::Forbidden);
    assert!(
        errors[0]
            .message
            .starts_with("Forbidden: parameters may not set Port:"),
        "{}",
        errors[0].message
    );
    let mut spec = valid_cluster_spec();
    spec["parameters"] = json!({"work_mem": "64MB\nport=1"});
    let errors = admit(&schema, cluster(spec), None);
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.parameters".into(),
            reason: FieldErrorReason::Invalid,
            message: "Invalid value: \"object\": a parameter value may not contain a line break"
                .into(),
        }]
    );
}

#[test]
fn disk_may_grow_but_not_shrink_on_update() {
    let schema = compiled("PostgresCluster");
    let old = cluster(valid_cluster_spec());
    let mut smaller = valid_cluster_spec();
    smaller["postgresDiskSize"] = json!(5);
    let errors = admit(&schema, cluster(smaller.clone()), Some(&old));
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.postgresDiskSize".into(),
            reason: FieldErrorReason::Forbidden,
            message: "Forbidden: postgresDiskSize may grow but never shrink".into(),
        }]
    );
    // A transition rule is not evaluated on create.
    assert_eq!(admit(&schema, cluster(smaller), None), vec![]);
    let mut bigger = valid_cluster_spec();
    bigger["postgresDiskSize"] = json!(50);
    assert_eq!(admit(&schema, cluster(bigger), Some(&old)), vec![]);
}

#[test]
fn restore_can_only_be_set_at_creation_with_its_field_path() {
    let schema = compiled("PostgresCluster");
    let old = cluster(valid_cluster_spec());
    let mut spec = valid_cluster_spec();
    spec["restore"] = json!({"backup": {"name": "b1"}});
    let errors = admit(&schema, cluster(spec.clone()), Some(&old));
    assert_eq!(fields(&errors), vec!["spec.restore"]);
    assert_eq!(
        errors[0].message,
        "Invalid value: \"object\": restore can only be set when the cluster is created"
    );
    assert_eq!(admit(&schema, cluster(spec), None), vec![]);
}

#[test]
fn backup_cluster_reference_is_immutable() {
    let schema = compiled("PostgresBackupRequest");
    let request = |name: &str| {
        json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
               "metadata": {"name": "r"}, "spec": {"cluster": {"name": name}}})
    };
    let old = request("a");
    let errors = admit(&schema, request("b"), Some(&old));
    assert_eq!(fields(&errors), vec!["spec.cluster"]);
    assert_eq!(
        errors[0].message,
        "Invalid value: \"object\": cluster is immutable"
    );
    assert_eq!(admit(&schema, request("a"), Some(&old)), vec![]);
}

fn schedule(spec: Value) -> Value {
    json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule",
           "metadata": {"name": "s"}, "spec": spec})
}

#[test]
fn schedule_interval_rules() {
    let schema = compiled("PostgresBackupSchedule");
    let errors = admit(
        &schema,
        schedule(json!({"cluster": {"name": "db"}, "interval": 0})),
        None,
    );
    assert_eq!(fields(&errors), vec!["spec.interval"]);
    assert!(
        errors[0]
            .message
            .contains("should be greater than or equal to 1")
    );

    let errors = admit(
        &schema,
        schedule(json!({"cluster": {"name": "db"}, "interval": 24, "schedule": "0 3 * * *"})),
        None,
    );
    assert_eq!(fields(&errors), vec!["spec"]);
    assert_eq!(
        errors[0].message,
        "Invalid value: \"object\": set exactly one of interval and schedule"
    );
    assert_eq!(
        admit(
            &schema,
            schedule(json!({"cluster": {"name": "db"}, "interval": 24})),
            None
        ),
        vec![]
    );
}

#[test]
fn unknown_fields_are_pruned_and_reported() {
    let schema = compiled("PostgresCluster");
    let mut obj = cluster(valid_cluster_spec());
    obj["spec"]["foo"] = json!(1);
    obj["spec"]["restore"] = json!({"backup": {"name": "b", "extra": true}});
    obj["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "R",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z", "bogus": 1}]});
    obj["topLevel"] = json!("x");
    obj["metadata"]["labels"] = json!({"a": "b"});
    obj["metadata"]["colour"] = json!("blue");
    let pruned = schema.prune(&mut obj);
    assert_eq!(
        pruned,
        vec![
            "metadata.colour",
            "spec.foo",
            "spec.restore.backup.extra",
            "status.conditions[0].bogus",
            "topLevel"
        ]
    );
    assert!(obj["spec"].get("foo").is_none());
    assert!(obj.get("topLevel").is_none());
    assert_eq!(
        obj["metadata"]["labels"]["a"], "b",
        "ObjectMeta fields are kept"
    );
    assert_eq!(obj["apiVersion"], "postgres.tusk.dev/v1");
    // Map values (additionalProperties) are kept.
    let mut obj = cluster(json!({"parameters": {"work_mem": "1MB"}}));
    assert!(schema.prune(&mut obj).is_empty());
    assert_eq!(obj["spec"]["parameters"]["work_mem"], "1MB");
}

#[test]
fn preserve_unknown_fields_and_embedded_resources_keep_their_content() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                             "properties": {"known": {"type": "object", "properties": {}}}},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                 "properties": {"spec": {"type": "object", "properties": {}}}},
                }
            }
        }
    }))
    .unwrap();
    let mut obj = json!({"spec": {
        "free": {"anything": [1, 2], "known": {"gone": 1}},
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
                     "spec": {"gone": true}, "other": 1},
    }});
    let pruned = schema.prune(&mut obj);
    assert_eq!(
        pruned,
        vec![
            "spec.free.known.gone",
            "spec.template.metadata.bogus",
            "spec.template.other",
            "spec.template.spec.gone"
        ]
    );
    assert_eq!(obj["spec"]["free"]["anything"], json!([1, 2]));
    assert_eq!(obj["spec"]["template"]["kind"], "Pod");
}

#[test]
fn defaults_are_applied() {
    let schema = compiled("PostgresCluster");
    let mut obj = cluster(valid_cluster_spec());
    schema.default(&mut obj);
    assert_eq!(obj["spec"]["walArchiving"], json!(false));

    let schema = compiled("PostgresBackup");
    let mut obj = json!({"metadata": {"name": "b"}, "spec": {"cluster": {"name": "db"}}});
    schema.default(&mut obj);
    assert_eq!(obj["spec"]["deletionPolicy"], "Delete");
    assert_eq!(obj["spec"]["triggeredBy"], "user");
    assert_eq!(obj["spec"]["compression"], "gzip");
    // A nested default applies only where the parent object exists.
    assert!(obj["spec"].get("encryption").is_none());
}

#[test]
fn nested_defaults_and_nulls() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "a": {"type": "object", "default": {}, "properties": {
                "b": {"type": "integer", "default": 3}}},
            "c": {"type": "object", "properties": {"d": {"type": "string", "default": "x"}}},
            "e": {"type": "string", "default": "dflt"},
            "f": {"type": "string"},
            "g": {"type": "string", "nullable": true, "default": "kept-null"},
        }}}
    }))
    .unwrap();
    let mut obj = json!({"spec": {"e": null, "f": null, "g": null}});
    schema.default(&mut obj);
    assert_eq!(
        obj,
        json!({"spec": {"a": {"b": 3}, "e": "dflt", "g": null}}),
        "defaults inside a defaulted object apply; c stays absent; a non-nullable null is \
         replaced by its default or dropped; a nullable null stays"
    );
}

#[test]
fn list_type_map_duplicates_and_transition_rules_correlated_by_key() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "items": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "size": {"type": "integer",
                             "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "may not shrink"}]}
                }}
            },
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        }}}
    }))
    .unwrap();
    let errors = schema.validate(
        &json!({"spec": {"items": [{"name": "a"}, {"name": "a"}], "tags": ["x", "y", "x"]}}),
        None,
    );
    assert_eq!(fields(&errors), vec!["spec.items[1]", "spec.tags[2]"]);
    assert_eq!(errors[1].message, "Duplicate value: \"x\"");
    assert!(
        errors
            .iter()
            .all(|e| e.reason == FieldErrorReason::Duplicate)
    );

    let old = json!({"spec": {"items": [{"name": "a", "size": 5}, {"name": "b", "size": 1}]}});
    // Reordered: correlation is by key, so b growing and a unchanged pass.
    let new = json!({"spec": {"items": [{"name": "b", "size": 2}, {"name": "a", "size": 5}]}});
    assert_eq!(schema.validate(&new, Some(&old)), vec![]);
    let new = json!({"spec": {"items": [{"name": "b", "size": 0}, {"name": "c", "size": 0}]}});
    let errors = schema.validate(&new, Some(&old));
    assert_eq!(
        fields(&errors),
        vec!["spec.items[0].size"],
        "c is new: no oldSelf"
    );
}

#[test]
fn ratcheting_keeps_unchanged_invalid_values() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["memorySize"] = json!(0);
    let old = cluster(spec.clone());
    spec["displayName"] = json!("Renamed");
    assert_eq!(admit(&schema, cluster(spec.clone()), Some(&old)), vec![]);
    spec["memorySize"] = json!(-1);
    assert_eq!(
        fields(&admit(&schema, cluster(spec), Some(&old))),
        vec!["spec.memorySize"]
    );
}

#[test]
fn formats_and_int_or_string() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int32"},
            "port": {"x-kubernetes-int-or-string": true},
            "ratio": {"type": "number", "exclusiveMaximum": true, "maximum": 1},
            "many": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
            "few": {"type": "array", "maxItems": 1, "minItems": 1, "items": {"type": "string"}},
        }
    }))
    .unwrap();
    assert_eq!(
        schema.validate(
            &json!({"when": "2026-01-02T03:04:05Z", "n": 5, "port": "http", "ratio": 0.5,
                    "many": {"a": "b"}, "few": ["x"]}),
            None
        ),
        vec![]
    );
    assert_eq!(schema.validate(&json!({"port": 8080}), None), vec![]);
    let errors = schema.validate(
        &json!({"when": "yesterday", "n": 3_000_000_000_i64, "port": true, "ratio": 1,
                "many": {"a": "b", "c": "d"}, "few": []}),
        None,
    );
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason))
            .collect::<Vec<_>>(),
        vec![
            ("few", FieldErrorReason::Invalid),
            ("many", FieldErrorReason::TooMany),
            ("n", FieldErrorReason::TypeInvalid),
            ("port", FieldErrorReason::TypeInvalid),
            ("ratio", FieldErrorReason::Invalid),
            ("when", FieldErrorReason::TypeInvalid),
        ]
    );
    assert_eq!(errors[1].message, "Too many: 2: must have at most 1 items");
    assert_eq!(
        errors[4].message,
        "Invalid value: 1: ratio in body should be less than 1"
    );
}

#[test]
fn nullable_and_null_values() {
    let schema = compiled("PostgresCluster");
    let mut spec = valid_cluster_spec();
    spec["postgresVersion"] = Value::Null;
    assert_eq!(admit(&schema, cluster(spec), None), vec![]);
    let mut spec = valid_cluster_spec();
    spec["displayName"] = Value::Null;
    // A null in a non-nullable field is dropped by defaulting, so the field is then missing.
    let errors = admit(&schema, cluster(spec.clone()), None);
    assert_eq!(errors[0].reason, FieldErrorReason::Required);
    // Without defaulting, validation itself refuses the null.
    let errors = schema.validate(&cluster(spec), None);
    assert_eq!(errors[0].field, "spec.displayName");
    assert_eq!(errors[0].reason, FieldErrorReason::TypeInvalid);
}

#[test]
fn message_expression_and_reason() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object",
            "properties": {"replicas": {"type": "integer"}, "name": {"type": "string"}},
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= 5", "messageExpression": "'replicas is ' + string(self.replicas) + ', at most 5'"},
                {"rule": "has(self.name)", "reason": "FieldValueRequired", "message": "name is needed", "fieldPath": ".name"},
                {"rule": "self.replicas != 4"},
            ]}}
    }))
    .unwrap();
    let errors = schema.validate(&json!({"spec": {"replicas": 4}}), None);
    assert_eq!(
        errors,
        vec![
            FieldError {
                field: "spec.name".into(),
                reason: FieldErrorReason::Required,
                message: "Required value: name is needed".into()
            },
            FieldError {
                field: "spec".into(),
                reason: FieldErrorReason::Invalid,
                message: "Invalid value: \"object\": failed rule: self.replicas != 4".into()
            },
        ]
    );
    let errors = schema.validate(&json!({"spec": {"replicas": 9, "name": "n"}}), None);
    assert_eq!(
        errors[0].message,
        "Invalid value: \"object\": replicas is 9, at most 5"
    );
}

#[test]
fn non_structural_schemas_and_bad_rules_are_refused() {
    let missing_type = json!({"type": "object", "properties": {"spec": {"properties": {}}}});
    assert_eq!(
        CompiledSchema::new(&missing_type).unwrap_err().to_string(),
        "openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
    );
    let both = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}});
    assert!(matches!(
        CompiledSchema::new(&both),
        Err(SchemaError::NotStructural { .. })
    ));
    let not_object = json!({"type": "string"});
    assert!(CompiledSchema::new(&not_object).is_err());
    let array_without_items = json!({"type": "object", "properties": {"a": {"type": "array"}}});
    assert!(CompiledSchema::new(&array_without_items).is_err());
    let metadata = json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}});
    assert!(CompiledSchema::new(&metadata).is_err());
    let bad_rule = json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.x >="}]}}});
    match CompiledSchema::new(&bad_rule) {
        Err(SchemaError::CelCompilation { field, rule, .. }) => {
            assert_eq!(
                field,
                "openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
            );
            assert_eq!(rule, "self.x >=");
        }
        other => panic!("expected a CEL compilation error, got {other:?}"),
    }
    let bad_pattern =
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}});
    assert!(matches!(
        CompiledSchema::new(&bad_pattern),
        Err(SchemaError::InvalidPattern { .. })
    ));
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-zA-Z0-9_ \n]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("displayName"),
            Just("memorySize"),
            Just("postgresDiskSize"),
            Just("parameters"),
            Just("port"),
            Just("restore"),
            Just("15")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("spec".to_string()),
                    Just("status".to_string()),
                    Just("displayName".to_string()),
                    Just("memorySize".to_string()),
                    Just("postgresDiskSize".to_string()),
                    Just("parameters".to_string()),
                    Just("postgresVersion".to_string()),
                    Just("restore".to_string()),
                    Just("backup".to_string()),
                    Just("name".to_string()),
                    Just("port".to_string()),
                    Just("phase".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Whatever comes in, the three passes never panic, and an object they accept really has
    /// the shape the schema promises.
    #[test]
    fn accepted_objects_conform(spec in arbitrary_json(), old_spec in arbitrary_json(), status in arbitrary_json()) {
        let schema = compiled("PostgresCluster");
        let mut obj = cluster(spec);
        obj["status"] = status;
        let old = cluster(old_spec);
        schema.prune(&mut obj);
        schema.default(&mut obj);
        let _ = schema.validate(&obj, Some(&old));
        let errors = schema.validate(&obj, None);
        if errors.is_empty() {
            let spec = &obj["spec"];
            let memory = spec["memorySize"].as_i64();
            prop_assert!(memory.is_some_and(|m| (1..=1024).contains(&m)), "memorySize {spec}");
            let disk = spec["postgresDiskSize"].as_i64();
            prop_assert!(disk.is_some_and(|d| (1..=65536).contains(&d)), "postgresDiskSize {spec}");
            let name = spec["displayName"].as_str();
            prop_assert!(name.is_some_and(|n| !n.is_empty() && n.chars().count() <= 253));
            prop_assert!(spec["walArchiving"].is_boolean());
            if let Some(params) = spec.get("parameters").and_then(Value::as_object) {
                prop_assert!(!params.keys().any(|k| k.eq_ignore_ascii_case("port")));
                prop_assert!(params.values().all(|v| v.as_str().is_some_and(|s| !s.contains('\n'))));
            }
            let allowed = ["displayName", "memorySize", "postgresDiskSize", "walArchiving",
                           "postgresVersion", "parameters", "restore"];
            prop_assert!(spec.as_object().unwrap().keys().all(|k| allowed.contains(&k.as_str())));
        }
    }
}
