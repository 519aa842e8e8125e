//! The schemas of the built-in kinds in the OpenAPI documents, generated from `k8s-openapi`'s
//! types (its `schemars` support), which `k8s-openapi` generates from kube-apiserver's own
//! OpenAPI document: the same definition names (`io.k8s.api.core.v1.PodSpec`), descriptions
//! and shapes kube-apiserver publishes.
//!
//! What kubectl needs beyond the shapes is added here: the `x-kubernetes-group-version-kind`
//! extension on each kind's definition (`kubectl explain` finds a kind by it) and the
//! `<Kind>List` definitions, which `k8s-openapi` has no schema for.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{LIST_META, OBJECT_META, content_hash, gvk};
use crate::apiserver::builtin_kinds::BUILTIN_KINDS;

/// The two shapes of document: Swagger 2.0 (`/openapi/v2`) and OpenAPI 3.0 (`/openapi/v3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Flavor {
    /// `#/definitions/...` references; a `$ref` with siblings becomes an `allOf`.
    V2,
    /// `#/components/schemas/...` references, in OpenAPI 3.0's dialect.
    V3,
}

impl Flavor {
    fn generator(self) -> SchemaGenerator {
        match self {
            Flavor::V2 => SchemaSettings::draft07(),
            Flavor::V3 => SchemaSettings::openapi3(),
        }
        .into_generator()
    }

    /// The prefix of a local reference to a definition.
    pub(crate) fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }
}

/// The built-in definitions of one group-version, and a fingerprint of them for the
/// `/openapi/v3` index's hashes.
pub(crate) struct GroupVersionSchemas {
    /// Definition name to schema: the kinds, their lists and everything they refer to.
    pub definitions: Map<String, Value>,
    /// Changes whenever the definitions do.
    pub fingerprint: String,
}

/// The generated documents never change while the process runs; each is built once, when first
/// asked for (a group-version's schemas take milliseconds to generate and a few hundred
/// kilobytes to hold).
static CACHE: LazyLock<Mutex<HashMap<CacheKey, Arc<GroupVersionSchemas>>>> =
    LazyLock::new(Default::default);

/// A document's flavour, group and version.
type CacheKey = (Flavor, String, String);

/// The definitions of the built-in kinds of one group-version (none for a group-version without
/// any), with `ObjectMeta` and `ListMeta` always among them, for custom resources to refer to.
pub(crate) fn group_version_schemas(
    flavor: Flavor,
    group: &str,
    version: &str,
) -> Arc<GroupVersionSchemas> {
    let key = (flavor, group.to_owned(), version.to_owned());
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(key)
        .or_insert_with(|| Arc::new(generate(flavor, group, version)))
        .clone()
}

fn generate(flavor: Flavor, group: &str, version: &str) -> GroupVersionSchemas {
    let mut generator = flavor.generator();
    generator.subschema_for::<ObjectMeta>();
    generator.subschema_for::<ListMeta>();
    let kinds: Vec<(&'static str, String)> = BUILTIN_KINDS
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .map(|t| (t.kind, (t.add_to)(&mut generator)))
        .collect();
    let mut definitions = generator.take_definitions(true);
    debug_assert!(definitions.contains_key(OBJECT_META) && definitions.contains_key(LIST_META));
    for (kind, name) in kinds {
        if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(group, version, kind)]),
            );
        }
        definitions.insert(
            format!("{name}List"),
            list_schema(flavor, group, version, kind, &name),
        );
    }
    let fingerprint = content_hash(&Value::Object(definitions.clone()).to_string());
    GroupVersionSchemas {
        definitions,
        fingerprint,
    }
}

/// The schema of a kind's list, as kube-apiserver publishes it (`io.k8s.api.core.v1.PodList`):
/// `items` of the kind, `metadata` a `ListMeta`.
pub(crate) fn list_schema(
    flavor: Flavor,
    group: &str,
    version: &str,
    kind: &str,
    item_definition: &str,
) -> Value {
    let prefix = flavor.ref_prefix();
    let list_meta = json!({"$ref": format!("{prefix}{LIST_META}")});
    let metadata = match flavor {
        Flavor::V2 => {
            let mut metadata = list_meta;
            metadata["description"] = json!("Standard list metadata.");
            metadata
        }
        Flavor::V3 => {
            json!({"allOf": [list_meta], "default": {}, "description": "Standard list metadata."})
        }
    };
    json!({
        "description": format!("{kind}List is a list of {kind}."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "items": {
                "type": "array",
                "description": format!("List of {kind} objects."),
                "items": {"$ref": format!("{prefix}{item_definition}")},
            },
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": metadata,
        },
        "x-kubernetes-group-version-kind": [gvk(group, version, &format!("{kind}List"))],
    })
}

/// The group, version and kind of every built-in type the documents describe.
#[cfg(test)]
pub(crate) fn described_kinds() -> Vec<(&'static str, &'static str, &'static str)> {
    BUILTIN_KINDS
        .iter()
        .map(|t| (t.group, t.version, t.kind))
        .collect()
}
