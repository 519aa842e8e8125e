//! The estimates are pinned to the figures of Kubernetes' own cost tests:
//! `TestCostEstimation` in apiextensions-apiserver's `pkg/apiserver/schema/cel/compilation_test.go`
//! (each case estimates one rule once without bounds, "calc", and once with the bound set to the
//! case's number, "set"), and the budget messages to `getCostErrorMessage` in
//! `pkg/apis/apiextensions/validation/validation.go`.

use serde_json::{Value, json};

use super::*;

/// The cost of a rule placed at the root of a schema, as TestCostEstimation compiles it (its
/// declaration is built as for a nested node, not a resource root).
fn rule_cost(schema: Value, rule: &str) -> u64 {
    let decl = declaration(&schema, false).expect("the schema has a CEL declaration");
    expression_cost(&decl, rule).expect("the rule parses")
}

fn string(max_length: Option<u64>) -> Value {
    match max_length {
        Some(max) => json!({"type": "string", "maxLength": max}),
        None => json!({"type": "string"}),
    }
}

fn array_of(items: Value, max_items: Option<u64>) -> Value {
    let mut schema = json!({"type": "array", "items": items});
    if let Some(max) = max_items {
        schema["maxItems"] = json!(max);
    }
    schema
}

fn map_of(values: Value, max_properties: Option<u64>) -> Value {
    let mut schema = json!({"type": "object", "additionalProperties": values});
    if let Some(max) = max_properties {
        schema["maxProperties"] = json!(max);
    }
    schema
}

#[test]
fn comprehensions_over_lists_and_maps_cost_as_in_kubernetes_tests() {
    // "string array with all": calc 3145727, set (20) 62.
    assert_eq!(
        rule_cost(array_of(string(None), None), "self.all(x, true)"),
        3_145_727
    );
    assert_eq!(
        rule_cost(array_of(string(None), Some(20)), "self.all(x, true)"),
        62
    );
    // "number array with all": calc 4718591, set (10) 32.
    let numbers = |max| array_of(json!({"type": "number"}), max);
    assert_eq!(rule_cost(numbers(None), "self.all(x, true)"), 4_718_591);
    assert_eq!(rule_cost(numbers(Some(10)), "self.all(x, true)"), 32);
    // "boolean array with all": calc 1887437.
    assert_eq!(
        rule_cost(
            array_of(json!({"type": "boolean"}), None),
            "self.all(x, true)"
        ),
        1_887_437
    );
    // "map of strings with all": calc 1179647, set (3) 11.
    assert_eq!(
        rule_cost(map_of(string(None), None), "self.all(x, true)"),
        1_179_647
    );
    assert_eq!(
        rule_cost(map_of(string(None), Some(3)), "self.all(x, true)"),
        11
    );
    // has() itself is free in Kubernetes (cel-go's PresenceTestHasCost(false)): only reading
    // `self` costs. (TestCostEstimation's "with has" cases expect 0, which it does not check.)
    assert_eq!(
        rule_cost(map_of(json!({"type": "number"}), None), "has(self.x)"),
        1
    );
    // "O(n^2) loop with numbers", set (10): 352; "O(n^3)": 3552.
    assert_eq!(
        rule_cost(numbers(Some(10)), "self.all(x, self.all(y, true))"),
        352
    );
    assert_eq!(
        rule_cost(
            numbers(Some(10)),
            "self.all(x, self.all(y, self.all(z, true)))"
        ),
        3552
    );
    // "set maxLength greater than estimated maxLength": 6291456 items, 25165826.
    assert_eq!(
        rule_cost(numbers(Some(3 * 1024 * 2048)), "self.all(x, x == 0.0)"),
        25_165_826
    );
    // "map of strings with value length" (map and values bounded alike): calc 2752507, set 72.
    let nested = |max: Option<u64>| map_of(string(max), max);
    assert_eq!(
        rule_cost(nested(None), "self.all(x, x.contains(self[x]))"),
        2_752_507
    );
    assert_eq!(
        rule_cost(nested(Some(10)), "self.all(x, x.contains(self[x]))"),
        72
    );
    // "date-time array with all": calc 428963; "duration array with all": calc 2359295.
    let formatted = |format: &str| array_of(json!({"type": "string", "format": format}), None);
    assert_eq!(
        rule_cost(formatted("date-time"), "self.all(x, true)"),
        428_963
    );
    assert_eq!(
        rule_cost(formatted("duration"), "self.all(x, true)"),
        2_359_295
    );
}

#[test]
fn string_functions_cost_as_in_kubernetes_tests() {
    // "string with contains": calc 314574, set (10) 5 (maxLength counts 4 bytes a character).
    assert_eq!(rule_cost(string(None), "self.contains('test')"), 314_574);
    assert_eq!(rule_cost(string(Some(10)), "self.contains('test')"), 5);
    // "string with startsWith": 2.
    assert_eq!(rule_cost(string(None), "self.startsWith('test')"), 2);
    // "concat string": calc 314578, set (4) 7.
    let concat = r#"size(self + "hello") > size("hello")"#;
    assert_eq!(rule_cost(string(None), concat), 314_578);
    assert_eq!(rule_cost(string(Some(4)), concat), 7);
    // "regex matches simple": calc 314574, set (50) 22; "regex matches empty string": 7.
    assert_eq!(rule_cost(string(None), r#"self.matches("x")"#), 314_574);
    assert_eq!(rule_cost(string(Some(50)), r#"self.matches("x")"#), 22);
    assert_eq!(
        rule_cost(string(None), r#""".matches("(((((((((())))))))))[0-9]")"#),
        7
    );
    // "set string maxLength to zero": calc 2, set 1.
    assert_eq!(rule_cost(string(None), r#"self == "x""#), 2);
    assert_eq!(rule_cost(string(Some(0)), r#"self == "x""#), 1);
    // "enums with maxLength equals to the longest possible value": calc 2, set (1000) 401.
    let enumeration = |max: Option<u64>| {
        let mut schema = json!({"type": "string", "enum": ["A", "B", "C", "LongValue"]});
        if let Some(max) = max {
            schema["maxLength"] = json!(max);
        }
        schema
    };
    assert_eq!(rule_cost(enumeration(None), "self.contains('A')"), 2);
    assert_eq!(
        rule_cost(enumeration(Some(1000)), "self.contains('A')"),
        401
    );
    // "extended library regex find": calc 629147, set (10) 11.
    assert_eq!(
        rule_cost(string(None), "self.find('[0-9]+') == ''"),
        629_147
    );
    assert_eq!(rule_cost(string(Some(10)), "self.find('[0-9]+') == ''"), 11);
    // "extended library lowerAscii": calc 314575, set (10) 6.
    assert_eq!(
        rule_cost(string(None), "self.lowerAscii() == 'lower!'"),
        314_575
    );
    assert_eq!(
        rule_cost(string(Some(10)), "self.lowerAscii() == 'lower!'"),
        6
    );
}

#[test]
fn library_and_index_costs_as_in_kubernetes_tests() {
    // "extended library join" and "isSorted", set (10): 43 and 52; calc 329853068905 and
    // 329854432052.
    let strings = |max: Option<u64>| array_of(string(max), max);
    assert_eq!(
        rule_cost(strings(Some(10)), "self.join(' ') == 'aa bb'"),
        43
    );
    assert_eq!(
        rule_cost(strings(None), "self.join(' ') == 'aa bb'"),
        329_853_068_905
    );
    assert_eq!(rule_cost(strings(Some(10)), "self.isSorted() == true"), 52);
    assert_eq!(
        rule_cost(strings(None), "self.isSorted() == true"),
        329_854_432_052
    );
    // "extended library replace": calc 629154, set (4) 12.
    let replace = |max: Option<u64>| {
        json!({"type": "object", "properties": {
            "str": string(max),
            "before": string(Some(2)),
            "after": string(Some(4)),
        }})
    };
    let rule = "self.str.replace(self.before, self.after) == 'does not matter'";
    assert_eq!(rule_cost(replace(None), rule), 629_154);
    assert_eq!(rule_cost(replace(Some(4)), rule), 12);
    // "index of array with strings": 314577; "check cost of size call": 5;
    // "check cost of timestamp comparison": 8; "IntOrString type with quantity rule": 314574, 9.
    assert_eq!(rule_cost(strings(None), "self[1] == self[1]"), 314_577);
    assert_eq!(
        rule_cost(
            map_of(json!({"type": "integer"}), None),
            "oldSelf.size() == self.size()"
        ),
        5
    );
    assert_eq!(
        rule_cost(
            map_of(json!({"type": "string", "format": "date-time"}), Some(7)),
            r#"self["a"] == self["b"]"#
        ),
        8
    );
    let int_or_string = |max: Option<u64>| {
        let mut schema = json!({"x-kubernetes-int-or-string": true});
        if let Some(max) = max {
            schema["maxLength"] = json!(max);
        }
        schema
    };
    assert_eq!(rule_cost(int_or_string(None), "isQuantity(self)"), 314_574);
    assert_eq!(rule_cost(int_or_string(Some(20)), "isQuantity(self)"), 9);
}

/// A CRD schema with one rule on `spec.parameters`, a map of strings.
fn parameters_schema(value: Value, max_properties: Option<u64>, rule: &str) -> Value {
    let mut parameters = map_of(value, max_properties);
    parameters["x-kubernetes-validations"] = json!([{"rule": rule}]);
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"parameters": parameters}}
    }})
}

#[test]
fn an_unbounded_map_of_unbounded_strings_is_over_the_rule_budget() {
    let schema = parameters_schema(string(None), None, "self.all(k, !self[k].contains('\\n'))");
    let report = estimate(&schema, "spec.validation.openAPIV3Schema");
    let errors = report.violations(true);
    let field = "spec.validation.openAPIV3Schema.properties[spec].properties[parameters].x-kubernetes-validations[0].rule";
    assert_eq!(errors[0].field, field);
    assert_eq!(errors[0].reason, FieldErrorReason::Forbidden);
    assert_eq!(
        errors[0].message,
        "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    // Over the whole schema's budget too: the rule is named, then the schema.
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[1].field, field);
    assert!(
        errors[1]
            .message
            .contains("contributed to estimated rule cost total")
    );
    assert_eq!(errors[2].field, "spec.validation.openAPIV3Schema");

    // Bounding the map but not its values (the PostgresCluster schema before its values got a
    // maxLength) is about eight times over: 256 * 314580 + 2.
    let schema = parameters_schema(
        string(None),
        Some(256),
        "self.all(k, !self[k].contains('\\n'))",
    );
    let report = estimate(&schema, "spec.validation.openAPIV3Schema");
    assert_eq!(report.rules[0].cost, 80_532_482);
    let errors = report.violations(true);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .starts_with("Forbidden: estimated rule cost exceeds budget by factor of 8.1x"),
        "{errors:?}"
    );

    // Bounded both ways, the same rule is well within budget.
    let schema = parameters_schema(
        string(Some(1024)),
        Some(256),
        "self.all(k, !self[k].contains('\\n'))",
    );
    let report = estimate(&schema, "spec.validation.openAPIV3Schema");
    assert!(report.violations(true).is_empty());
    assert_eq!(report.rules.len(), 1);
    assert!(report.total() < PER_RULE_COST_LIMIT / 10, "{report:?}");
}

#[test]
fn a_rule_inside_an_unbounded_list_runs_once_per_item() {
    // The same cheap rule costs its own cost times maxItems, and, with no maxItems, times the
    // number of smallest items that fit in a request.
    let schema = |max_items: Option<u64>| {
        let mut list = array_of(
            json!({"type": "object", "properties": {"name": string(Some(10))},
                   "x-kubernetes-validations": [{"rule": "self.name.startsWith('a')"}]}),
            None,
        );
        if let Some(max) = max_items {
            list["maxItems"] = json!(max);
        }
        json!({"type": "object", "properties": {"list": list}})
    };
    let bounded = estimate(&schema(Some(100)), "x");
    let unbounded = estimate(&schema(None), "x");
    // self.name (2) + startsWith('a') (1).
    assert_eq!(bounded.rules[0].cost, 300);
    // An empty object serializes as "{}": 3 MiB / 3 items.
    assert_eq!(unbounded.rules[0].cost, 3 * (3 * 1024 * 1024 / 3));
}

#[test]
fn budget_factors_are_printed_as_go_prints_them() {
    assert!(budget_message("x", 12_000_000, PER_RULE_COST_LIMIT).contains("factor of 1.200000x"));
    assert!(budget_message("x", 81_000_000, PER_RULE_COST_LIMIT).contains("factor of 8.1x"));
    assert!(budget_message("x", u64::MAX, PER_RULE_COST_LIMIT).contains("more than 100x"));
}

/// Every CRD shipped in deploy/crds, as `kubectl apply -k deploy/` sends it.
fn shipped_crds() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/crds is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "deploy/crds holds the CRDs");
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("a CRD file is readable");
            serde_yaml_ng::from_str(&text).expect("a CRD file is YAML")
        })
        .collect()
}

#[test]
fn every_shipped_crd_is_well_within_the_cost_budgets() {
    for crd in shipped_crds() {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let report = estimate(
                &version["schema"]["openAPIV3Schema"],
                "spec.validation.openAPIV3Schema",
            );
            println!("{name} {}: total {}", version["name"], report.total());
            for rule in &report.rules {
                println!("  {:>10}  {}", rule.cost, rule.field);
                // A tenth of the per-rule budget leaves room for the schema to grow.
                assert!(
                    rule.cost < PER_RULE_COST_LIMIT / 10,
                    "{name}: {} costs {}",
                    rule.field,
                    rule.cost
                );
            }
            assert!(
                report.total() < PER_SCHEMA_COST_LIMIT / 10,
                "{name}: {report:?}"
            );
        }
    }
}
