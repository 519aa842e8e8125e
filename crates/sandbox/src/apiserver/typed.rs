//! The shapes of the built-in kinds, derived from `k8s-openapi`'s types, for the strict decoding
//! kube-apiserver does: a built-in object is decoded into its Go struct, so a field the struct
//! does not have is dropped, and reported (`fieldValidation=Strict` or `Warn`) as
//! `unknown field "spec.x"`; a key given twice in one JSON object is reported as
//! `duplicate field "spec.x"`.
//!
//! The shapes come from the JSON schemas `k8s-openapi` publishes for its types (its `schemars`
//! feature): an object with `properties` knows exactly those fields, one with
//! `additionalProperties` is a map, one with neither (`FieldsV1`, `RawExtension`, quantities,
//! int-or-strings) takes anything.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::builtin_kinds::BUILTIN_KINDS;

/// One kind's schema: the root object's and the definitions its `$ref`s name.
struct KindSchema {
    root: Value,
    definitions: Map<String, Value>,
}

impl KindSchema {
    /// A schema with its definitions under `$defs`, split into the two.
    fn from_root(mut root: Value) -> Self {
        let definitions = root
            .as_object_mut()
            .and_then(|root| root.remove("$defs"))
            .and_then(|defs| match defs {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default();
        KindSchema { root, definitions }
    }
}

/// The schemas of the built-in kinds, by `(group, kind)`: stored objects are looked up by
/// their storage form's.
static KIND_SCHEMAS: LazyLock<HashMap<(&'static str, &'static str), KindSchema>> =
    LazyLock::new(|| {
        BUILTIN_KINDS
            .iter()
            .map(|builtin| {
                let schema = KindSchema::from_root((builtin.root_schema)());
                ((builtin.group, builtin.kind), schema)
            })
            .collect()
    });

/// Drops the fields of a built-in object (in its storage form, of `group` and `kind`) that the
/// kind's type does not have, as kube-apiserver's typed decoding does, and returns their paths
/// (`spec.replica`, `spec.template.spec.containers[0].imagePullPolicyy`). A kind without a
/// known type is left alone.
pub(crate) fn prune_unknown_fields(group: &str, kind: &str, object: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Some(schema) = KIND_SCHEMAS.get(&(group, kind)) {
        prune(
            &schema.root,
            &schema.definitions,
            object,
            &mut String::new(),
            &mut pruned,
        );
    }
    pruned
}

/// The schema of a built-in kind (in its storage form) and the definitions its `$ref`s name.
pub(crate) fn kind_schema_of<'a>(
    group: &'a str,
    kind: &'a str,
) -> Option<(&'a Value, &'a Map<String, Value>)> {
    let schema = KIND_SCHEMAS.get(&(group, kind))?;
    Some((&schema.root, &schema.definitions))
}

/// Follows a `$ref` to the definition it names.
pub(crate) fn resolve<'a>(schema: &'a Value, definitions: &'a Map<String, Value>) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => definitions.get(name).unwrap_or(schema),
        None => schema,
    }
}

fn prune(
    schema: &Value,
    definitions: &Map<String, Value>,
    value: &mut Value,
    path: &mut String,
    pruned: &mut Vec<String>,
) {
    let schema = resolve(schema, definitions);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let map_values = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = fields.keys().cloned().collect();
            for key in keys {
                let child_schema = match (properties, map_values) {
                    (Some(properties), _) => properties.get(&key),
                    (None, Some(values)) => Some(values),
                    // A free-form object (FieldsV1, RawExtension, JSON) takes anything.
                    (None, None) => continue,
                };
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                match child_schema {
                    Some(child_schema) => {
                        if let Some(child) = fields.get_mut(&key) {
                            prune(child_schema, definitions, child, path, pruned);
                        }
                    }
                    None => {
                        fields.remove(&key);
                        pruned.push(path.clone());
                    }
                }
                path.truncate(length);
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = schema.get("items") else {
                return;
            };
            for (index, item) in items.iter_mut().enumerate() {
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                prune(item_schema, definitions, item, path, pruned);
                path.truncate(length);
            }
        }
        _ => {}
    }
}

/// The paths of the keys a JSON document gives twice in one object (`spec.replicas`,
/// `spec.template.spec.containers[0].image`), as kube-apiserver's strict decoder names them.
/// A body that is not valid JSON has none (its decoding fails elsewhere).
pub(crate) fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let scan = DuplicateScan {
        path: String::new(),
        found: &mut found,
    };
    if scan.deserialize(&mut deserializer).is_err() {
        return Vec::new();
    }
    let mut seen = HashSet::new();
    found.retain(|path| seen.insert(path.clone()));
    found
}

/// Walks a JSON value recording duplicate keys, with the path of the value being read.
struct DuplicateScan<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl DuplicateScan<'_> {
    fn child(&mut self, segment: &str, as_field: bool) -> DuplicateScan<'_> {
        let path = if as_field && !self.path.is_empty() {
            format!("{}.{segment}", self.path)
        } else {
            format!("{}{segment}", self.path)
        };
        DuplicateScan {
            path,
            found: self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for DuplicateScan<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateScan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child(&key, true);
            if !keys.insert(key) {
                child.found.push(child.path.clone());
            }
            map.next_value_seed(child)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while seq
            .next_element_seed(self.child(&format!("[{index}]"), false))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_with_their_paths() {
        let mut deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "colour": "blue"},
            "spec": {
                "replica": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "x", "resources": {"limits": {"cpu": 1}}},
                        {"name": "b", "image": "y", "imagePullPolicyy": "Always"},
                    ]},
                },
            },
        });
        let pruned = prune_unknown_fields("apps", "Deployment", &mut deployment);
        assert_eq!(
            pruned,
            [
                "metadata.colour",
                "spec.replica",
                "spec.template.spec.containers[1].imagePullPolicyy"
            ]
        );
        assert!(deployment["spec"].get("replica").is_none());
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            1
        );
    }

    #[test]
    fn free_form_fields_keep_what_they_hold() {
        let mut crd = json!({
            "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"a": {"type": "string", "default": {"any": "thing"}}},
            }}}]},
            "metadata": {"managedFields": [{"fieldsV1": {"f:spec": {".": {}}}}]},
        });
        let before = crd.clone();
        assert!(
            prune_unknown_fields("apiextensions.k8s.io", "CustomResourceDefinition", &mut crd)
                .is_empty()
        );
        assert_eq!(crd, before);
    }

    #[test]
    fn duplicate_keys_are_named_by_their_path() {
        let body = br#"{"spec": {"replicas": 1, "replicas": 2, "template": {"spec": {"containers": [{"name": "a", "name": "b"}]}}}}"#;
        assert_eq!(
            duplicate_fields(body),
            ["spec.replicas", "spec.template.spec.containers[0].name"]
        );
        assert!(duplicate_fields(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_empty());
        assert!(duplicate_fields(b"not json").is_empty());
    }
}
