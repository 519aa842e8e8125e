//! The generated CRDs: structural schemas, admission rules, and agreement with deploy/crds/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use serde_json::{Value, json};
use tusk_api::crd::{crd_file_contents, file_name};

fn schema_of(kind: &str) -> Value {
    let crd = tusk_api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|schema| schema.open_api_v3_schema.as_ref())
            .expect("every version has a schema"),
    )
    .expect("schema serializes")
}

/// Kubernetes' structural-schema rules, as far as our generator could break them: every node has
/// a type, no `$ref`, no `additionalProperties` beside `properties`, and the junctors (allOf,
/// anyOf, oneOf, not) carry only value validations.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    let deliberately_untyped = node.contains_key("x-kubernetes-int-or-string")
        || node.contains_key("x-kubernetes-preserve-unknown-fields");
    if !node.contains_key("type") && !deliberately_untyped {
        out.push(format!("{path}: no type"));
    }
    if node.contains_key("$ref") || node.contains_key("definitions") || node.contains_key("$defs") {
        out.push(format!("{path}: uses references"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    for junctor in ["allOf", "anyOf", "oneOf", "not"] {
        let branches = match node.get(junctor) {
            Some(Value::Array(branches)) => branches.clone(),
            Some(single) => vec![single.clone()],
            None => continue,
        };
        for branch in branches {
            for forbidden in [
                "type",
                "properties",
                "items",
                "additionalProperties",
                "default",
            ] {
                if branch.get(forbidden).is_some() {
                    out.push(format!("{path}.{junctor}: specifies {forbidden}"));
                }
            }
        }
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(additional @ Value::Object(_)) = node.get("additionalProperties") {
        structural_violations(additional, &format!("{path}{{}}"), out);
    }
}

/// Every property has a description, so that `kubectl explain` reads well.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            let is_envelope =
                path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
            if !is_envelope
                && child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                out.push(child_path.clone());
            }
            undescribed(child, &child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
}

const KINDS: [&str; 5] = [
    "PostgresCluster",
    "PostgresRemoteCluster",
    "PostgresBackupRequest",
    "PostgresBackup",
    "PostgresBackupSchedule",
];

#[test]
fn every_schema_is_structural_and_described() {
    for kind in KINDS {
        let schema = schema_of(kind);
        let mut violations = Vec::new();
        structural_violations(&schema, "", &mut violations);
        assert!(
            violations.is_empty(),
            "{kind} is not structural: {violations:?}"
        );
        let mut missing = Vec::new();
        undescribed(&schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{kind} fields without a description: {missing:?}"
        );
    }
}

#[test]
fn the_structural_check_catches_an_untyped_field() {
    let mut violations = Vec::new();
    structural_violations(
        &json!({"type": "object", "properties": {"loose": {}}}),
        "",
        &mut violations,
    );
    assert_eq!(violations, vec![".loose: no type".to_owned()]);
}

#[test]
fn every_kind_is_namespaced_with_status_short_name_category_and_printer_columns() {
    let expected_short_names = BTreeMap::from([
        ("PostgresCluster", "pgc"),
        ("PostgresRemoteCluster", "pgrc"),
        ("PostgresBackupRequest", "pgbr"),
        ("PostgresBackup", "pgb"),
        ("PostgresBackupSchedule", "pgbs"),
        ("PostgresRestoreTest", "pgrt"),
    ]);
    for crd in tusk_api::crds() {
        let kind = crd.spec.names.kind.as_str();
        assert_eq!(crd.spec.group, "postgres.tusk.dev");
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[expected_short_names[kind].to_owned()][..]),
            "{kind}"
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["tusk".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has no status subresource"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|column| column.name.as_str())
            .collect();
        assert_eq!(columns.last(), Some(&"Age"), "{kind} columns {columns:?}");
    }
}

#[test]
fn the_columns_a_person_scans_for_are_there() {
    let columns = |kind: &str| -> Vec<String> {
        tusk_api::crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .map(|crd| {
                crd.spec.versions[0]
                    .additional_printer_columns
                    .iter()
                    .flatten()
                    .map(|column| column.json_path.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(columns("PostgresCluster").contains(&".status.phase".to_owned()));
    assert!(columns("PostgresBackupRequest").contains(&".status.progress.percent".to_owned()));
    assert!(columns("PostgresBackupRequest").contains(&".status.phase".to_owned()));
    assert!(columns("PostgresBackup").contains(&".spec.size".to_owned()));
    for kind in [
        "PostgresRemoteCluster",
        "PostgresBackupRequest",
        "PostgresBackup",
        "PostgresBackupSchedule",
    ] {
        assert!(
            columns(kind).contains(&".spec.cluster.name".to_owned()),
            "{kind}"
        );
    }
}

fn rules_at<'a>(schema: &'a Value, pointer: &str) -> Vec<&'a str> {
    schema
        .pointer(pointer)
        .and_then(|node| node.get("x-kubernetes-validations"))
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|rule| rule["rule"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_admission_rules_are_in_the_crds() {
    let cluster = schema_of("PostgresCluster");
    assert!(
        rules_at(&cluster, "/properties/spec/properties/postgresDiskSize")
            .contains(&"self >= oldSelf")
    );
    let parameter_rules = rules_at(&cluster, "/properties/spec/properties/parameters").join("\n");
    for allowed in [
        "'work_mem'",
        "'max_connections'",
        "'shared_preload_libraries'",
    ] {
        assert!(
            parameter_rules.contains(allowed),
            "{allowed} is not allowed"
        );
    }
    let schedule = schema_of("PostgresBackupSchedule");
    assert!(
        rules_at(&schedule, "/properties/spec")
            .contains(&"has(self.interval) != has(self.schedule)")
    );
    for kind in [
        "PostgresRemoteCluster",
        "PostgresBackupRequest",
        "PostgresBackup",
        "PostgresBackupSchedule",
    ] {
        assert!(
            rules_at(&schema_of(kind), "/properties/spec/properties/cluster")
                .contains(&"self == oldSelf"),
            "{kind}.spec.cluster is not immutable"
        );
    }
    let remote = schema_of("PostgresRemoteCluster");
    assert!(
        rules_at(&remote, "/properties/spec/properties/remoteCluster").contains(&"self == oldSelf")
    );
}

/// Runs the CRD's CEL rules as an API server would, returning the failing field paths.
fn cel_failures(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(kind), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn cluster(spec: Value) -> Value {
    json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "elephant"}, "spec": spec})
}

fn with_parameters(parameters: Value) -> Value {
    cluster(
        json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 1, "parameters": parameters}),
    )
}

#[test]
fn cel_admits_only_allowed_parameters_and_names_a_refused_one() {
    let allowed = with_parameters(json!({
        "max_connections": "200",
        "log_min_duration_statement": "250ms",
        "shared_preload_libraries": "pg_stat_statements, auto_explain",
        "timezone": "America/Argentina/Buenos_Aires",
        "synchronous_commit": "off",
        "search_path": "\"$user\", public",
    }));
    assert_eq!(
        cel_failures("PostgresCluster", &allowed, None),
        Vec::<String>::new()
    );
    let refused = with_parameters(json!({
        "include_dir": "conf.d",
        "fsync": "off",
        "work_mem": "64MB",
    }));
    let failures = cel_failures("PostgresCluster", &refused, None);
    assert_eq!(failures.len(), 1, "{failures:?}");
    // One of the refused settings is named (naming all would put the message over
    // kube-apiserver's cost budget; see docs/parameters.md).
    assert!(
        failures[0].contains("spec.parameters")
            && (failures[0].contains("include_dir") || failures[0].contains("fsync"))
            && !failures[0].contains("work_mem"),
        "{failures:?}"
    );
    for (name, value) in [
        ("port", "5433"),
        ("Work_Mem", "64MB"),
        ("archive_command", "curl evil"),
        ("archive_timeout", "1"),
        ("max_wal_senders", "0"),
        ("wal_level", "minimal"),
        ("full_page_writes", "off"),
        ("dynamic_library_path", "/tmp"),
        ("jit_provider", "evil"),
        ("ssl_passphrase_command", "sh"),
        ("log_directory", "/tmp"),
        ("data_directory", "/"),
        ("session_preload_libraries", "auto_explain"),
    ] {
        let failures = cel_failures(
            "PostgresCluster",
            &with_parameters(json!({ name: value })),
            None,
        );
        assert!(
            failures.iter().any(|f| f.contains(name)),
            "{name} = {value}: {failures:?}"
        );
    }
    for (name, value, named) in [
        ("search_path", "/etc/passwd", "search_path"),
        ("log_line_prefix", "../../x", "log_line_prefix"),
        ("timezone", "../../etc/passwd", "time zone"),
        ("timezone", "Europe/../../x", "time zone"),
        (
            "shared_preload_libraries",
            "/tmp/evil.so",
            "shared_preload_libraries",
        ),
        (
            "shared_preload_libraries",
            "pg_stat_statements,evil",
            "shared_preload_libraries",
        ),
        ("work_mem", "4MB\nport = 1", "line break"),
    ] {
        let failures = cel_failures(
            "PostgresCluster",
            &with_parameters(json!({ name: value })),
            None,
        );
        assert!(
            failures.iter().any(|f| f.contains(named)),
            "{name} = {value}: {failures:?}"
        );
    }
}

/// The CEL rules and the operator's own check (`parameter_refusal`) agree on every case above
/// and on every allowed name with a harmless value.
#[test]
fn cel_and_the_rust_check_agree() {
    use tusk_api::cluster::{ALLOWED_PARAMETERS, parameter_refusal};
    let mut cases: Vec<(String, String)> = ALLOWED_PARAMETERS
        .iter()
        .map(|name| (name.to_string(), "on".to_string()))
        .collect();
    for (name, value) in [
        ("fsync", "off"),
        ("include", "x"),
        ("Work_Mem", "1MB"),
        ("search_path", "a/b"),
        ("timezone", "Europe/Berlin"),
        ("timezone", "../x"),
        ("log_timezone", "UTC"),
        ("shared_preload_libraries", ""),
        ("shared_preload_libraries", "pg_prewarm"),
        ("shared_preload_libraries", "pg_prewarm,,x"),
        ("work_mem", "1\n2"),
    ] {
        cases.push((name.into(), value.into()));
    }
    for (name, value) in cases {
        let admitted = cel_failures(
            "PostgresCluster",
            &with_parameters(json!({ &name: &value })),
            None,
        )
        .is_empty();
        let written = parameter_refusal(&name, &value).is_none();
        assert_eq!(admitted, written, "{name} = {value:?}");
    }
}

/// kube-apiserver estimates the cost of every rule from the bounds of what it walks and refuses
/// a CRD whose rules could cost too much (issue #13). Every string, list and map that a rule of
/// ours walks is bounded, and kube-cel's (coarse) estimate of each rule stays under the budget.
/// The estimate kube-apiserver makes, messageExpressions included, is checked against
/// deploy/crds by the sandbox (`every_shipped_crd_is_well_within_the_cost_budgets`).
#[test]
fn every_rule_walks_only_bounded_values() {
    use kube::core::cel::{WarningKind, compile_schema, estimate_rule_cost};
    let cluster = schema_of("PostgresCluster");
    let parameters = cluster
        .pointer("/properties/spec/properties/parameters")
        .unwrap();
    assert_eq!(parameters["maxProperties"], json!(256));
    assert_eq!(
        parameters["additionalProperties"]["maxLength"],
        json!(tusk_api::cluster::MAX_PARAMETER_VALUE_LENGTH)
    );
    let schedule = schema_of("PostgresBackupSchedule");
    assert!(
        schedule
            .pointer("/properties/spec/properties/schedule/maxLength")
            .is_some()
    );
    for (schema, pointer) in [
        (&cluster, "/properties/spec/properties/parameters"),
        (&schedule, "/properties/spec/properties/schedule"),
    ] {
        let node = schema.pointer(pointer).unwrap();
        let compiled = compile_schema(node);
        for rule in rules_at(schema, pointer) {
            let over: Vec<_> = estimate_rule_cost(rule, &compiled)
                .into_iter()
                .filter(|warning| warning.kind == WarningKind::CostExceeded)
                .collect();
            assert!(over.is_empty(), "{rule}: {over:?}");
        }
    }
}

#[test]
fn cel_lets_the_disk_grow_but_never_shrink() {
    let old = cluster(json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 10}));
    let grown = cluster(json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 20}));
    let shrunk = cluster(json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 5}));
    assert_eq!(
        cel_failures("PostgresCluster", &grown, Some(&old)),
        Vec::<String>::new()
    );
    let failures = cel_failures("PostgresCluster", &shrunk, Some(&old));
    assert!(
        failures.iter().any(|f| f.contains("postgresDiskSize")),
        "{failures:?}"
    );
}

#[test]
fn cel_requires_exactly_one_of_interval_and_schedule() {
    let schedule = |spec: Value| json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule", "metadata": {"name": "s"}, "spec": spec});
    assert!(
        cel_failures(
            "PostgresBackupSchedule",
            &schedule(json!({"cluster": {"name": "a"}, "interval": 24})),
            None
        )
        .is_empty()
    );
    assert!(
        cel_failures(
            "PostgresBackupSchedule",
            &schedule(json!({"cluster": {"name": "a"}, "schedule": "@daily"})),
            None
        )
        .is_empty()
    );
    assert!(
        !cel_failures(
            "PostgresBackupSchedule",
            &schedule(json!({"cluster": {"name": "a"}, "interval": 24, "schedule": "@daily"})),
            None
        )
        .is_empty()
    );
    assert!(
        !cel_failures(
            "PostgresBackupSchedule",
            &schedule(json!({"cluster": {"name": "a"}})),
            None
        )
        .is_empty()
    );
}

#[test]
fn cel_refuses_a_schedule_that_could_run_more_than_once_an_hour() {
    let schedule = |cron: &str| json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule", "metadata": {"name": "s"}, "spec": {"cluster": {"name": "a"}, "schedule": cron}});
    for hourly_at_most in [
        "30 2 * * *",
        "0 * * * *",
        "05 */2 * * 1-5",
        "59 0 1 * *",
        "@hourly",
        "@daily",
    ] {
        let failures = cel_failures("PostgresBackupSchedule", &schedule(hourly_at_most), None);
        assert!(failures.is_empty(), "{hourly_at_most}: {failures:?}");
    }
    for too_often in [
        "* * * * *",
        "*/5 * * * *",
        "0,30 * * * *",
        "0-59 * * * *",
        "0 * * * * *",
        "60 * * * *",
        "*/1\t* * * *",
    ] {
        let failures = cel_failures("PostgresBackupSchedule", &schedule(too_often), None);
        assert!(
            failures
                .iter()
                .any(|f| f.contains("spec.schedule") && f.contains("at most once an hour")),
            "{too_often}: {failures:?}"
        );
    }
}

#[test]
fn cel_keeps_cluster_references_immutable() {
    let request = |cluster: &str| json!({"apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest", "metadata": {"name": "r"}, "spec": {"cluster": {"name": cluster}}});
    assert!(cel_failures("PostgresBackupRequest", &request("a"), Some(&request("a"))).is_empty());
    let failures = cel_failures("PostgresBackupRequest", &request("b"), Some(&request("a")));
    assert!(
        failures.iter().any(|f| f.contains("spec.cluster")),
        "{failures:?}"
    );
}

#[test]
fn cel_only_accepts_restore_at_creation() {
    let plain = cluster(json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 1}));
    let restoring = cluster(
        json!({"displayName": "x", "memorySize": 2, "postgresDiskSize": 1, "restore": {"backup": {"name": "b"}}}),
    );
    assert!(cel_failures("PostgresCluster", &restoring, None).is_empty());
    assert!(!cel_failures("PostgresCluster", &restoring, Some(&plain)).is_empty());
}

fn deploy_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

/// The files of `dir` that differ from what `tusk crds` generates, are missing, or are extra.
fn drift(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for crd in tusk_api::crds() {
        let name = file_name(&crd);
        let want = crd_file_contents(&crd).expect("CRD renders");
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(have) if have == want => {}
            Ok(_) => problems.push(format!("{name} differs")),
            Err(_) => problems.push(format!("{name} is missing")),
        }
        expected.insert(name);
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) && name != "kustomization.yaml" {
            problems.push(format!("{name} is not generated"));
        }
    }
    problems
}

#[test]
fn deploy_crds_match_what_tusk_crds_generates() {
    let problems = drift(&deploy_crds_dir());
    assert!(
        problems.is_empty(),
        "deploy/crds/ has drifted from the Rust types: {problems:?}\nRegenerate with `cargo run -p tusk-cli -- crds --output-dir deploy/crds`."
    );
}

#[test]
fn a_hand_edit_of_deploy_crds_is_detected() {
    let copy = tempfile::tempdir().expect("temp dir");
    for crd in tusk_api::crds() {
        let name = file_name(&crd);
        std::fs::copy(deploy_crds_dir().join(&name), copy.path().join(&name)).expect("copy");
    }
    assert!(drift(copy.path()).is_empty());
    let edited = copy.path().join("postgresclusters.postgres.tusk.dev.yaml");
    let text = std::fs::read_to_string(&edited).expect("read");
    std::fs::write(&edited, text.replace("maximum: 1024.0", "maximum: 2048.0")).expect("write");
    assert_eq!(
        drift(copy.path()),
        vec!["postgresclusters.postgres.tusk.dev.yaml differs".to_owned()]
    );
}

/// docs/parameters.md lists every allowed setting, so the page a customer reads is the list the
/// API server enforces.
#[test]
fn the_parameters_page_lists_every_allowed_setting() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/parameters.md"),
    )
    .expect("docs/parameters.md");
    let missing: Vec<&str> = tusk_api::cluster::ALLOWED_PARAMETERS
        .iter()
        .copied()
        .filter(|name| !page.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/parameters.md: {missing:?}");
}
