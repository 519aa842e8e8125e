//! One compiled node of a structural schema, and the three walks over an object: prune,
//! default and validate.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::{FieldError, FieldErrorReason, SchemaError};

/// One step of a path inside an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// A property declared by the schema.
    Field(String),
    /// A list item.
    Index(usize),
    /// A key of a map (`additionalProperties`).
    Key(String),
}

/// The dotted path go-openapi puts in its messages and that apiextensions reports as the
/// field of OpenAPI validation errors: `spec.conditions.0.type`.
fn openapi_path(path: &[Segment]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|s| match s {
            Segment::Field(f) | Segment::Key(f) => f.clone(),
            Segment::Index(i) => i.to_string(),
        })
        .collect();
    parts.join(".")
}

/// The path as apimachinery's `field.Path` renders it: `spec.conditions[0]`, `spec.parameters[port]`.
fn field_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Field(f) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(f);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(k) => out.push_str(&format!("[{k}]")),
        }
    }
    out
}

/// The path of a pruned field as the strict decoder reports it: `spec.foo`, `spec.list[0].bar`.
fn pruned_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Field(f) | Segment::Key(f) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(f);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A value as Go's `%v`/`%q` print it in field error messages.
pub(super) fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => go_number_text(n),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn go_number_text(n: &serde_json::Number) -> String {
    if n.is_f64() {
        n.as_f64().map(go_float).unwrap_or_else(|| n.to_string())
    } else {
        n.to_string()
    }
}

/// Go prints whole floats without a fractional part.
fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[derive(Debug)]
enum Additional {
    /// Absent or `false`: only declared properties are known.
    Forbidden,
    /// `true`: any key, any value.
    Anything,
    /// A schema for the values of a map.
    Schema(Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Where a node sits, which decides how kube-apiserver words a missing `type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Property,
    Items,
    AdditionalProperties,
    /// Inside allOf/anyOf/oneOf/not: value validations only, no type needed.
    Junctor,
}

#[derive(Debug)]
pub(super) struct Node {
    type_: Option<String>,
    nullable: bool,
    format: Option<String>,
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    items: Option<Box<Node>>,
    additional: Additional,
    preserve_unknown: bool,
    embedded: bool,
    int_or_string: bool,
    default: Option<Value>,
    enum_values: Option<Vec<Value>>,
    maximum: Option<f64>,
    exclusive_maximum: bool,
    minimum: Option<f64>,
    exclusive_minimum: bool,
    multiple_of: Option<f64>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    unique_items: bool,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    list_type: ListType,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
    /// This node's own `x-kubernetes-validations`, compiled against a copy of the schema whose
    /// descendants carry no rules (descendants evaluate their own, with their own old values).
    cel: Option<kube_cel::CompiledSchema>,
}

const VALID_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

fn not_structural(field: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::NotStructural {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A copy of a schema node with every descendant's `x-kubernetes-validations` removed.
fn without_descendant_rules(schema: &Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                for (key, child) in map.iter_mut() {
                    // `default` and `enum` hold data, not schemas.
                    if key != "default" && key != "enum" && key != "example" {
                        strip(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut copy = schema.clone();
    if let Value::Object(map) = &mut copy {
        for (key, child) in map.iter_mut() {
            if key != "x-kubernetes-validations" && key != "default" && key != "enum" {
                strip(child);
            }
        }
    }
    copy
}

impl Node {
    pub(super) fn compile_root(schema: &Value) -> Result<Node, SchemaError> {
        let location = "openAPIV3Schema";
        let node = Node::compile(schema, location, Position::Root)?;
        if node.type_.as_deref() != Some("object") {
            return Err(not_structural(
                &format!("{location}.type"),
                format!(
                    "Unsupported value: {}: supported values: \"object\"",
                    go_value(&Value::String(node.type_.clone().unwrap_or_default()))
                ),
            ));
        }
        if let Some(metadata) = node.properties.get("metadata") {
            let only_names = metadata
                .properties
                .keys()
                .all(|k| k == "name" || k == "generateName");
            if !only_names || metadata.cel.is_some() || metadata.default.is_some() {
                return Err(not_structural(
                    &format!("{location}.properties[metadata]"),
                    "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
                ));
            }
        }
        Ok(node)
    }

    fn compile(schema: &Value, location: &str, position: Position) -> Result<Node, SchemaError> {
        let Some(map) = schema.as_object() else {
            return Err(not_structural(
                location,
                "Invalid value: schema must be an object",
            ));
        };
        let flag = |key: &str| map.get(key).and_then(Value::as_bool).unwrap_or(false);
        let number = |key: &str| map.get(key).and_then(Value::as_f64);
        let count = |key: &str| map.get(key).and_then(Value::as_u64);

        let type_ = map
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let preserve_unknown = flag("x-kubernetes-preserve-unknown-fields");
        let int_or_string = flag("x-kubernetes-int-or-string");

        if let Some(t) = &type_ {
            if !VALID_TYPES.contains(&t.as_str()) {
                return Err(not_structural(
                    &format!("{location}.type"),
                    format!(
                        "Unsupported value: {}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
                        go_value(&Value::String(t.clone()))
                    ),
                ));
            }
            if int_or_string {
                return Err(not_structural(
                    &format!("{location}.type"),
                    "Invalid value: must be empty if x-kubernetes-int-or-string is true",
                ));
            }
        } else if position != Position::Junctor && !preserve_unknown && !int_or_string {
            let detail = match position {
                Position::Root => "must not be empty at the root",
                Position::Items => "must not be empty for specified array items",
                _ => "must not be empty for specified object fields",
            };
            return Err(not_structural(
                &format!("{location}.type"),
                format!("Required value: {detail}"),
            ));
        }
        if position == Position::Junctor
            && (map.contains_key("type") || map.contains_key("default"))
        {
            return Err(not_structural(
                location,
                "Forbidden: must be empty to be structural (type and default are not allowed inside allOf, anyOf, oneOf and not)",
            ));
        }

        let mut properties = BTreeMap::new();
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let child_location = format!("{location}.properties[{name}]");
                properties.insert(
                    name.clone(),
                    Node::compile(
                        child,
                        &child_location,
                        child_position(position, Position::Property),
                    )?,
                );
            }
        }

        let additional = match map.get("additionalProperties") {
            None | Some(Value::Bool(false)) => Additional::Forbidden,
            Some(Value::Bool(true)) => Additional::Anything,
            Some(schema) => Additional::Schema(Box::new(Node::compile(
                schema,
                &format!("{location}.additionalProperties"),
                child_position(position, Position::AdditionalProperties),
            )?)),
        };
        if !properties.is_empty() && !matches!(additional, Additional::Forbidden) {
            return Err(not_structural(
                &format!("{location}.additionalProperties"),
                "Forbidden: additionalProperties and properties are mutual exclusive",
            ));
        }

        let items = match map.get("items") {
            Some(items @ Value::Object(_)) => Some(Box::new(Node::compile(
                items,
                &format!("{location}.items"),
                child_position(position, Position::Items),
            )?)),
            Some(_) => {
                return Err(not_structural(
                    &format!("{location}.items"),
                    "Forbidden: items must be a schema object and not an array",
                ));
            }
            None => None,
        };
        if type_.as_deref() == Some("array") && items.is_none() {
            return Err(not_structural(
                &format!("{location}.items"),
                "Required value: must be specified",
            ));
        }

        let list_type = match map.get("x-kubernetes-list-type").and_then(Value::as_str) {
            None | Some("atomic") => ListType::Atomic,
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = map
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(not_structural(
                        &format!("{location}.x-kubernetes-list-map-keys"),
                        "Required value: must not be empty if x-kubernetes-list-type is map",
                    ));
                }
                if items.as_ref().and_then(|i| i.type_.as_deref()) != Some("object") {
                    return Err(not_structural(
                        &format!("{location}.items.type"),
                        "Invalid value: must be object if parent array's x-kubernetes-list-type is map",
                    ));
                }
                ListType::Map(keys)
            }
            Some(other) => {
                return Err(not_structural(
                    &format!("{location}.x-kubernetes-list-type"),
                    format!(
                        "Unsupported value: {}: supported values: \"atomic\", \"map\", \"set\"",
                        go_value(&Value::String(other.to_string()))
                    ),
                ));
            }
        };

        let pattern = match map.get("pattern").and_then(Value::as_str) {
            Some(p) => match Regex::new(p) {
                Ok(re) => Some((p.to_string(), re)),
                Err(e) => {
                    return Err(SchemaError::InvalidPattern {
                        field: format!("{location}.pattern"),
                        pattern: p.to_string(),
                        message: e.to_string(),
                    });
                }
            },
            None => None,
        };

        let junctor = |key: &str| -> Result<Vec<Node>, SchemaError> {
            map.get(key)
                .and_then(Value::as_array)
                .map(|branches| {
                    branches
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            Node::compile(b, &format!("{location}.{key}[{i}]"), Position::Junctor)
                        })
                        .collect()
                })
                .unwrap_or_else(|| Ok(Vec::new()))
        };
        let all_of = junctor("allOf")?;
        let any_of = junctor("anyOf")?;
        let one_of = junctor("oneOf")?;
        let not = match map.get("not") {
            Some(n) => Some(Box::new(Node::compile(
                n,
                &format!("{location}.not"),
                Position::Junctor,
            )?)),
            None => None,
        };

        let cel = match map.get("x-kubernetes-validations") {
            Some(Value::Array(rules)) if !rules.is_empty() => {
                let compiled = kube_cel::compile_schema(&without_descendant_rules(schema));
                for (i, result) in compiled.validations.iter().enumerate() {
                    if let Err(e) = result {
                        let rule = rules
                            .get(i)
                            .and_then(|r| r.get("rule"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        return Err(SchemaError::CelCompilation {
                            field: format!("{location}.x-kubernetes-validations[{i}].rule"),
                            rule,
                            message: e.to_string(),
                        });
                    }
                }
                Some(compiled)
            }
            _ => None,
        };

        Ok(Node {
            type_,
            nullable: flag("nullable"),
            format: map
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_string),
            properties,
            required: map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            items,
            additional,
            preserve_unknown,
            embedded: flag("x-kubernetes-embedded-resource"),
            int_or_string,
            default: map.get("default").cloned(),
            enum_values: map.get("enum").and_then(Value::as_array).cloned(),
            maximum: number("maximum"),
            exclusive_maximum: flag("exclusiveMaximum"),
            minimum: number("minimum"),
            exclusive_minimum: flag("exclusiveMinimum"),
            multiple_of: number("multipleOf"),
            max_length: count("maxLength"),
            min_length: count("minLength"),
            pattern,
            max_items: count("maxItems"),
            min_items: count("minItems"),
            unique_items: flag("uniqueItems"),
            max_properties: count("maxProperties"),
            min_properties: count("minProperties"),
            list_type,
            all_of,
            any_of,
            one_of,
            not,
            cel,
        })
    }

    // ---------------------------------------------------------------- pruning

    pub(super) fn prune(
        &self,
        value: &mut Value,
        path: &mut Vec<Segment>,
        pruned: &mut Vec<String>,
        is_root: bool,
    ) {
        match value {
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let child_schema = self.properties.get(&key);
                    let is_object_meta = (is_root || self.embedded) && key == "metadata";
                    if is_object_meta {
                        if let Some(metadata) = map.get_mut(&key) {
                            path.push(Segment::Field(key.clone()));
                            prune_object_meta(metadata, path, pruned);
                            path.pop();
                        }
                        continue;
                    }
                    let keep_as_is =
                        (is_root || self.embedded) && matches!(key.as_str(), "apiVersion" | "kind");
                    match (child_schema, &self.additional) {
                        (Some(schema), _) => {
                            if let Some(child) = map.get_mut(&key) {
                                path.push(Segment::Field(key.clone()));
                                schema.prune(child, path, pruned, false);
                                path.pop();
                            }
                        }
                        (None, Additional::Schema(schema)) => {
                            if let Some(child) = map.get_mut(&key) {
                                path.push(Segment::Key(key.clone()));
                                schema.prune(child, path, pruned, false);
                                path.pop();
                            }
                        }
                        (None, Additional::Anything) => {}
                        (None, Additional::Forbidden) => {
                            if keep_as_is || self.preserve_unknown {
                                continue;
                            }
                            map.remove(&key);
                            path.push(Segment::Field(key));
                            pruned.push(pruned_path(path));
                            path.pop();
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        path.push(Segment::Index(i));
                        item_schema.prune(item, path, pruned, false);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- defaulting

    pub(super) fn apply_defaults(&self, value: &mut Value, is_root: bool) {
        match value {
            Value::Object(map) => {
                for (name, child) in &self.properties {
                    if is_root && name == "metadata" {
                        continue;
                    }
                    default_member(map, name, child);
                }
                if let Additional::Schema(child) = &self.additional {
                    let keys: Vec<String> = map
                        .keys()
                        .filter(|k| !self.properties.contains_key(*k))
                        .cloned()
                        .collect();
                    for key in keys {
                        default_member(map, &key, child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = &self.items {
                    for item in items.iter_mut() {
                        item_schema.apply_defaults(item, false);
                    }
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- validation

    pub(super) fn validate(
        &self,
        value: &Value,
        old: Option<&Value>,
        path: &mut Vec<Segment>,
        errors: &mut Vec<FieldError>,
        is_root: bool,
    ) {
        // Validation ratcheting: a value left unchanged by an update is not refused anew.
        if old == Some(value) {
            return;
        }
        let opath = openapi_path(path);
        if value.is_null() {
            if self.nullable || (self.type_.is_none() && !self.int_or_string) {
                return;
            }
            let expected = self
                .type_
                .clone()
                .unwrap_or_else(|| "integer,string".into());
            errors.push(FieldError {
                field: opath.clone(),
                reason: FieldErrorReason::TypeInvalid,
                message: format!(
                    "Invalid value: \"\": {opath} in body must be of type {expected}: \"null\""
                ),
            });
            return;
        }
        let actual = json_type(value);
        let type_ok = match self.type_.as_deref() {
            None if self.int_or_string => matches!(actual, "integer" | "string"),
            None => true,
            Some("number") => matches!(actual, "integer" | "number"),
            Some("integer") => {
                actual == "integer"
                    || value
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
            }
            Some(expected) => actual == expected,
        };
        if !type_ok {
            let expected = self
                .type_
                .clone()
                .unwrap_or_else(|| "integer,string".into());
            errors.push(FieldError {
                field: opath.clone(),
                reason: FieldErrorReason::TypeInvalid,
                message: format!(
                    "Invalid value: {}: {opath} in body must be of type {expected}: \"{actual}\"",
                    go_value(value)
                ),
            });
            return;
        }

        self.validate_value(value, &opath, path, errors);
        self.validate_junctors(value, old, path, errors);

        match value {
            Value::Object(map) => {
                for (key, child_value) in map {
                    if is_root && matches!(key.as_str(), "metadata" | "apiVersion" | "kind") {
                        continue;
                    }
                    let old_child = old.and_then(|o| o.get(key));
                    if let Some(schema) = self.properties.get(key) {
                        path.push(Segment::Field(key.clone()));
                        schema.validate(child_value, old_child, path, errors, false);
                        path.pop();
                    } else if let Additional::Schema(schema) = &self.additional {
                        path.push(Segment::Key(key.clone()));
                        schema.validate(child_value, old_child, path, errors, false);
                        path.pop();
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = &self.items {
                    let old_items = old.and_then(Value::as_array);
                    for (i, item) in items.iter().enumerate() {
                        let old_item = old_items.and_then(|o| self.correlate(item, o));
                        path.push(Segment::Index(i));
                        item_schema.validate(item, old_item, path, errors, false);
                        path.pop();
                    }
                }
            }
            _ => {}
        }

        if let Some(cel) = &self.cel {
            self.evaluate_rules(cel, value, old, path, errors);
        }
    }

    /// The old list item that corresponds to a new one: by key for list-type map, by value for
    /// sets; atomic lists have no correlation (so no oldSelf and no ratcheting inside them).
    fn correlate<'a>(&self, item: &Value, old_items: &'a [Value]) -> Option<&'a Value> {
        match &self.list_type {
            ListType::Atomic => None,
            ListType::Set => old_items.iter().find(|o| *o == item),
            ListType::Map(keys) => old_items
                .iter()
                .find(|o| keys.iter().all(|k| o.get(k) == item.get(k))),
        }
    }

    fn validate_value(
        &self,
        value: &Value,
        opath: &str,
        path: &[Segment],
        errors: &mut Vec<FieldError>,
    ) {
        let invalid = |errors: &mut Vec<FieldError>, detail: String| {
            errors.push(FieldError {
                field: opath.to_string(),
                reason: FieldErrorReason::Invalid,
                message: format!(
                    "Invalid value: {}: {opath} in body {detail}",
                    go_value(value)
                ),
            });
        };

        if let Some(allowed) = &self.enum_values
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed.iter().map(go_value).collect();
            errors.push(FieldError {
                field: opath.to_string(),
                reason: FieldErrorReason::NotSupported,
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    go_value(value),
                    supported.join(", ")
                ),
            });
        }

        match value {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if let Some(max) = self.maximum {
                    if self.exclusive_maximum && f >= max {
                        invalid(errors, format!("should be less than {}", go_float(max)));
                    } else if f > max {
                        invalid(
                            errors,
                            format!("should be less than or equal to {}", go_float(max)),
                        );
                    }
                }
                if let Some(min) = self.minimum {
                    if self.exclusive_minimum && f <= min {
                        invalid(errors, format!("should be greater than {}", go_float(min)));
                    } else if f < min {
                        invalid(
                            errors,
                            format!("should be greater than or equal to {}", go_float(min)),
                        );
                    }
                }
                if let Some(m) = self.multiple_of
                    && m > 0.0
                    && (f / m).fract() != 0.0
                {
                    invalid(errors, format!("should be a multiple of {}", go_float(m)));
                }
                let out_of_range = match self.format.as_deref() {
                    Some("int32") => n.as_i64().is_none_or(|i| i32::try_from(i).is_err()),
                    Some("int64") => {
                        n.as_i64().is_none()
                            && n.as_f64()
                                .is_none_or(|f| f.fract() != 0.0 || f.abs() > 9.2e18)
                    }
                    _ => false,
                };
                if out_of_range && self.type_.as_deref() == Some("integer") {
                    let format = self.format.clone().unwrap_or_default();
                    errors.push(FieldError {
                        field: opath.to_string(),
                        reason: FieldErrorReason::TypeInvalid,
                        message: format!(
                            "Invalid value: {}: {opath} in body must be of type {format}: \"{}\"",
                            go_value(value),
                            go_value(value)
                        ),
                    });
                }
            }
            Value::String(s) => {
                let length = s.chars().count() as u64;
                if let Some(max) = self.max_length
                    && length > max
                {
                    errors.push(FieldError {
                        field: opath.to_string(),
                        reason: FieldErrorReason::TooLong,
                        message: format!("Too long: may not be more than {max} bytes"),
                    });
                }
                if let Some(min) = self.min_length
                    && length < min
                {
                    invalid(errors, format!("should be at least {min} chars long"));
                }
                if let Some((source, re)) = &self.pattern
                    && !re.is_match(s)
                {
                    invalid(errors, format!("should match '{source}'"));
                }
                if let Some(format) = &self.format
                    && !self.int_or_string
                    && !string_has_format(s, format)
                {
                    errors.push(FieldError {
                        field: opath.to_string(),
                        reason: FieldErrorReason::TypeInvalid,
                        message: format!(
                            "Invalid value: {}: {opath} in body must be of type {format}: {}",
                            go_value(value),
                            go_value(value)
                        ),
                    });
                }
            }
            Value::Array(items) => {
                let count = items.len() as u64;
                if let Some(max) = self.max_items
                    && count > max
                {
                    errors.push(FieldError {
                        field: opath.to_string(),
                        reason: FieldErrorReason::TooMany,
                        message: format!("Too many: {count}: must have at most {max} items"),
                    });
                }
                if let Some(min) = self.min_items
                    && count < min
                {
                    invalid(errors, format!("should have at least {min} items"));
                }
                if self.unique_items && has_duplicates(items) {
                    invalid(errors, "shouldn't contain duplicates".into());
                }
                self.validate_list_type(items, path, errors);
            }
            Value::Object(map) => {
                let count = map.len() as u64;
                if let Some(max) = self.max_properties
                    && count > max
                {
                    errors.push(FieldError {
                        field: opath.to_string(),
                        reason: FieldErrorReason::TooMany,
                        message: format!("Too many: {count}: must have at most {max} items"),
                    });
                }
                if let Some(min) = self.min_properties
                    && count < min
                {
                    invalid(errors, format!("should have at least {min} properties"));
                }
                for name in &self.required {
                    if !map.contains_key(name) {
                        let field = if opath.is_empty() {
                            name.clone()
                        } else {
                            format!("{opath}.{name}")
                        };
                        errors.push(FieldError {
                            field,
                            reason: FieldErrorReason::Required,
                            message: "Required value".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn validate_list_type(&self, items: &[Value], path: &[Segment], errors: &mut Vec<FieldError>) {
        let duplicate = |errors: &mut Vec<FieldError>, index: usize, shown: String| {
            let mut item_path = path.to_vec();
            item_path.push(Segment::Index(index));
            errors.push(FieldError {
                field: field_path(&item_path),
                reason: FieldErrorReason::Duplicate,
                message: format!("Duplicate value: {shown}"),
            });
        };
        match &self.list_type {
            ListType::Atomic => {}
            ListType::Set => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        duplicate(errors, i, go_value(item));
                    }
                }
            }
            ListType::Map(keys) => {
                let key_of = |item: &Value| -> Vec<Value> {
                    keys.iter()
                        .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                        let shown: Vec<String> = keys
                            .iter()
                            .zip(&key)
                            .map(|(k, v)| format!("\"{k}\":{}", go_value(v)))
                            .collect();
                        duplicate(
                            errors,
                            i,
                            format!("map[string]interface {{}}{{{}}}", shown.join(", ")),
                        );
                    }
                }
            }
        }
    }

    fn validate_junctors(
        &self,
        value: &Value,
        old: Option<&Value>,
        path: &mut Vec<Segment>,
        errors: &mut Vec<FieldError>,
    ) {
        let opath = openapi_path(path);
        let passes = |branch: &Node, path: &mut Vec<Segment>| {
            let mut branch_errors = Vec::new();
            branch.validate(value, old, path, &mut branch_errors, false);
            branch_errors.is_empty()
        };
        for branch in &self.all_of {
            branch.validate(value, old, path, errors, false);
        }
        let summary = |detail: &str| FieldError {
            field: opath.clone(),
            reason: FieldErrorReason::Invalid,
            message: format!(
                "Invalid value: {}: {opath} in body {detail}",
                go_value(value)
            ),
        };
        if !self.any_of.is_empty() && !self.any_of.iter().any(|b| passes(b, path)) {
            errors.push(summary("must validate at least one schema (anyOf)"));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|b| passes(b, path)).count() != 1 {
            errors.push(summary("must validate one and only one schema (oneOf)"));
        }
        if let Some(not) = &self.not
            && passes(not, path)
        {
            errors.push(summary("must not validate the schema (not)"));
        }
    }

    fn evaluate_rules(
        &self,
        cel: &kube_cel::CompiledSchema,
        value: &Value,
        old: Option<&Value>,
        path: &[Segment],
        errors: &mut Vec<FieldError>,
    ) {
        let Err(failures) = kube_cel::validate_compiled(cel, value, old) else {
            return;
        };
        let base = field_path(path);
        let type_name = self.type_.clone().unwrap_or_default();
        for failure in failures {
            let field = join_rule_field_path(&base, &failure.field_path);
            let is_rule_failure = failure.kind == kube_cel::ErrorKind::ValidationFailure;
            let reason = if is_rule_failure {
                FieldErrorReason::from_cel_reason(failure.reason.as_deref())
            } else {
                FieldErrorReason::Invalid
            };
            let detail = failure.message.clone();
            let message = match reason {
                FieldErrorReason::Required => format!("Required value: {detail}"),
                FieldErrorReason::Forbidden => format!("Forbidden: {detail}"),
                FieldErrorReason::Duplicate => {
                    format!("Duplicate value: {}", go_value(&Value::String(detail)))
                }
                _ => format!(
                    "Invalid value: {}: {detail}",
                    go_value(&Value::String(type_name.clone()))
                ),
            };
            errors.push(FieldError {
                field,
                reason,
                message,
            });
        }
    }
}

/// Joins a node's path and a rule's `fieldPath` (`.restore`, `['a.b']`, `x`) relative to it.
fn join_rule_field_path(base: &str, relative: &str) -> String {
    if relative.is_empty() {
        return base.to_string();
    }
    let relative = if relative.starts_with('.') || relative.starts_with('[') {
        relative.to_string()
    } else {
        format!(".{relative}")
    };
    if base.is_empty() {
        relative.trim_start_matches('.').to_string()
    } else {
        format!("{base}{relative}")
    }
}

/// Applies a property's default where it is absent, and drops a null the schema does not
/// allow (replacing it by the default when there is one), then defaults inside it.
fn default_member(map: &mut Map<String, Value>, name: &str, schema: &Node) {
    match map.get(name) {
        None => {
            if let Some(default) = &schema.default {
                map.insert(name.to_string(), default.clone());
            }
        }
        Some(Value::Null) if !schema.nullable => match &schema.default {
            Some(default) => {
                map.insert(name.to_string(), default.clone());
            }
            None => {
                map.remove(name);
            }
        },
        Some(_) => {}
    }
    if let Some(child) = map.get_mut(name) {
        schema.apply_defaults(child, false);
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_duplicates(items: &[Value]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, item)| items[..i].contains(item))
}

/// The string formats kube-apiserver checks. Formats it does not know are accepted, as there.
fn string_has_format(s: &str, format: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => is_base64(s),
        "uuid" => is_uuid(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        _ => true,
    }
}

fn is_base64(s: &str) -> bool {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Where a child node sits: inside a junctor everything stays a junctor node.
fn child_position(parent: Position, child: Position) -> Position {
    if parent == Position::Junctor {
        Position::Junctor
    } else {
        child
    }
}

/// The fields of ObjectMeta; anything else under an object's `metadata` is pruned, as the
/// apiserver decodes metadata into ObjectMeta.
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn prune_object_meta(metadata: &mut Value, path: &mut Vec<Segment>, pruned: &mut Vec<String>) {
    if let Value::Object(map) = metadata {
        let unknown: Vec<String> = map
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            map.remove(&key);
            path.push(Segment::Field(key));
            pruned.push(pruned_path(path));
            path.pop();
        }
    }
}
