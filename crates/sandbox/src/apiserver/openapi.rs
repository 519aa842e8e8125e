//! The OpenAPI documents kubectl reads: `/openapi/v2` and `/openapi/v3`, built from the CRD schemas.
//!
//! What matters to kubectl:
//! - `kubectl explain` finds a kind's schema in `/openapi/v3/<group-version>` by its
//!   `x-kubernetes-group-version-kind` extension and follows `$ref`s (ObjectMeta...).
//! - `kubectl apply/create --validate=strict` asks the server to validate (`fieldValidation`)
//!   only when the PATCH operation of the kind's path, tagged with the same extension, lists a
//!   `fieldValidation` query parameter; otherwise it falls back to validating on the client.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

/// The Kubernetes version the documents claim, matching what the sandbox's `/version` serves.
const INFO_VERSION: &str = "v1.33.0";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// One served version of a CRD, with what the documents need of it.
struct CrdVersion<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    plural: &'a str,
    namespaced: bool,
    schema: Option<&'a Value>,
}

fn crd_versions(crds: &[Value]) -> Vec<CrdVersion<'_>> {
    let mut out = Vec::new();
    for crd in crds {
        let spec = &crd["spec"];
        let (Some(group), Some(kind), Some(plural)) = (
            spec["group"].as_str(),
            spec["names"]["kind"].as_str(),
            spec["names"]["plural"].as_str(),
        ) else {
            continue;
        };
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"] == Value::Bool(false) {
                continue;
            }
            let Some(name) = version["name"].as_str() else {
                continue;
            };
            out.push(CrdVersion {
                group,
                version: name,
                kind,
                plural,
                namespaced,
                schema: version.pointer("/schema/openAPIV3Schema"),
            });
        }
    }
    out
}

/// The definition name kube-apiserver publishes a CRD kind under: the group reversed, then
/// the version and kind (`dev.tusk.postgres.v1.PostgresCluster`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// A CRD schema as published: apiVersion, kind and metadata described, metadata pointing at
/// ObjectMeta, and the GVK extension kubectl looks the kind up by.
fn published_schema(crd: &CrdVersion<'_>, ref_prefix: &str, v3: bool) -> Value {
    let mut schema = crd
        .schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let Some(map) = schema.as_object_mut() else {
        return schema;
    };
    let properties = map
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut properties: Map<String, Value> = properties;
    properties.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    let meta_ref = json!({"$ref": format!("{ref_prefix}{OBJECT_META}")});
    let metadata = if v3 {
        json!({"allOf": [meta_ref], "default": {}, "description": "Standard object's metadata."})
    } else {
        let mut m = meta_ref;
        m["description"] = json!("Standard object's metadata.");
        m
    };
    properties.insert("metadata".into(), metadata);
    map.insert("properties".into(), Value::Object(properties));
    map.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([gvk(crd.group, crd.version, crd.kind)]),
    );
    schema
}

fn published_list_schema(crd: &CrdVersion<'_>, ref_prefix: &str) -> Value {
    let item = definition_name(crd.group, crd.version, crd.kind);
    json!({
        "description": format!("{} is a list of {}", format!("{}List", crd.kind), crd.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("{ref_prefix}{item}")}},
            "kind": {"type": "string"},
            "metadata": {"$ref": format!("{ref_prefix}{LIST_META}")},
        },
        "x-kubernetes-group-version-kind": [gvk(crd.group, crd.version, &format!("{}List", crd.kind))],
    })
}

fn object_meta_schema() -> Value {
    let string = |d: &str| json!({"type": "string", "description": d});
    let time = |d: &str| json!({"type": "string", "format": "date-time", "description": d});
    let string_map = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": d});
    json!({
        "description": "Metadata that every persisted object has.",
        "type": "object",
        "properties": {
            "name": string("The object's name, unique within its namespace and kind."),
            "generateName": string("A prefix the server completes into a unique name when name is empty."),
            "namespace": string("The namespace the object lives in; empty for cluster-scoped kinds."),
            "uid": string("A unique identifier the server assigns at creation."),
            "resourceVersion": string("An opaque version that changes on every write, for optimistic concurrency and watches."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number of changes to the desired state."},
            "creationTimestamp": time("When the object was created."),
            "deletionTimestamp": time("When deletion was requested; set by the server."),
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64", "description": "Seconds allowed for graceful termination."},
            "labels": string_map("Key/value pairs for selecting and grouping objects."),
            "annotations": string_map("Key/value pairs of arbitrary non-identifying metadata."),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set",
                           "description": "Names of the controllers that must act before the object is deleted."},
            "ownerReferences": {"type": "array", "items": {"type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": string("API version of the owner."),
                    "kind": string("Kind of the owner."),
                    "name": string("Name of the owner."),
                    "uid": string("UID of the owner."),
                    "controller": {"type": "boolean", "description": "Whether the owner is the managing controller."},
                    "blockOwnerDeletion": {"type": "boolean", "description": "Whether foreground deletion of the owner waits for this object."},
                }},
                "x-kubernetes-list-map-keys": ["uid"], "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge",
                "description": "Objects this object depends on; it is garbage-collected when they are all gone."},
            "managedFields": {"type": "array", "items": {"type": "object", "properties": {
                    "manager": string("Who manages these fields."),
                    "operation": string("Apply or Update."),
                    "apiVersion": string("The version the fields are expressed in."),
                    "time": time("When the fields were last changed."),
                    "fieldsType": string("Always FieldsV1."),
                    "fieldsV1": {"type": "object", "description": "The set of managed fields."},
                    "subresource": string("The subresource the fields were written through."),
                }},
                "description": "Which manager owns which fields (server-side apply)."},
            "selfLink": string("Deprecated; always empty."),
        },
    })
}

fn list_meta_schema() -> Value {
    json!({
        "description": "Metadata of a list.",
        "type": "object",
        "properties": {
            "resourceVersion": {"type": "string", "description": "The version of the list, for watching from it."},
            "continue": {"type": "string", "description": "The token to fetch the next page."},
            "remainingItemCount": {"type": "integer", "format": "int64", "description": "How many items remain after this page, when known."},
            "selfLink": {"type": "string", "description": "Deprecated; always empty."},
        },
    })
}

/// The query parameters of a write, among them the one kubectl checks for.
fn write_parameters(v3: bool) -> Value {
    let parameter = |name: &str, description: &str| {
        if v3 {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
        } else {
            json!({"name": name, "in": "query", "description": description, "type": "string", "uniqueItems": true})
        }
    };
    json!([
        parameter("dryRun", "When present, the request is not persisted."),
        parameter("fieldManager", "The name of the actor making the change."),
        parameter(
            "fieldValidation",
            "Ignore, Warn or Strict: what to do with unknown or duplicate fields."
        ),
    ])
}

fn operation(crd: &CrdVersion<'_>, action: &str, operation_id: String, v3: bool) -> Value {
    let mut op = json!({
        "operationId": operation_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(crd.group, crd.version, crd.kind),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if matches!(action, "post" | "put" | "patch") {
        op["parameters"] = write_parameters(v3);
    }
    if action == "patch" {
        let patch_types = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ];
        if v3 {
            let content: Map<String, Value> = patch_types
                .iter()
                .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
                .collect();
            op["requestBody"] = json!({"content": content, "required": true});
        } else {
            op["consumes"] = json!(patch_types);
        }
    }
    op
}

fn paths_for(crd: &CrdVersion<'_>, v3: bool) -> Map<String, Value> {
    let base = format!("/apis/{}/{}", crd.group, crd.version);
    let scope = if crd.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", crd.plural)
    } else {
        format!("{base}/{}", crd.plural)
    };
    let id_kind = format!(
        "{}{}{}",
        crd.group.split('.').map(capitalize).collect::<String>(),
        capitalize(crd.version),
        crd.kind
    );
    let namespaced = if crd.namespaced { "Namespaced" } else { "" };
    let mut paths = Map::new();
    paths.insert(
        scope.clone(),
        json!({
            "get": operation(crd, "list", format!("list{id_kind}{namespaced}"), v3),
            "post": operation(crd, "post", format!("create{namespaced}{id_kind}"), v3),
        }),
    );
    paths.insert(
        format!("{scope}/{{name}}"),
        json!({
            "get": operation(crd, "get", format!("read{namespaced}{id_kind}"), v3),
            "put": operation(crd, "put", format!("replace{namespaced}{id_kind}"), v3),
            "patch": operation(crd, "patch", format!("patch{namespaced}{id_kind}"), v3),
            "delete": operation(crd, "delete", format!("delete{namespaced}{id_kind}"), v3),
        }),
    );
    paths.insert(
        format!("{scope}/{{name}}/status"),
        json!({
            "get": operation(crd, "get", format!("read{namespaced}{id_kind}Status"), v3),
            "put": operation(crd, "put", format!("replace{namespaced}{id_kind}Status"), v3),
            "patch": operation(crd, "patch", format!("patch{namespaced}{id_kind}Status"), v3),
        }),
    );
    paths
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The Swagger 2.0 document of `/openapi/v2` (JSON) for the given CRDs: their paths (with the
/// `fieldValidation` parameter) and definitions.
pub fn openapi_v2_document(crds: &[Value]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    let prefix = "#/definitions/";
    for crd in crd_versions(crds) {
        paths.extend(paths_for(&crd, false));
        definitions.insert(
            definition_name(crd.group, crd.version, crd.kind),
            published_schema(&crd, prefix, false),
        );
        definitions.insert(
            format!("{}List", definition_name(crd.group, crd.version, crd.kind)),
            published_list_schema(&crd, prefix),
        );
    }
    definitions.insert(OBJECT_META.into(), object_meta_schema());
    definitions.insert(LIST_META.into(), list_meta_schema());
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

/// The media type kubectl asks `/openapi/v2` for (`Accept`); only protobuf is decoded.
pub const OPENAPI_V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The protobuf body to answer `/openapi/v2` with when kubectl asks for protobuf: an empty
/// `openapi_v2.Document` (zero bytes). kubectl 1.27+ reads schemas and the `fieldValidation`
/// support of custom resources from `/openapi/v3`; it only falls back to v2 for kinds v3 does not
/// describe (the built-ins here), and with an empty v2 document it skips client-side validation
/// and still sends `fieldValidation=Strict` (checked against kubectl 1.32). Describing the
/// built-in kinds in v2 or v3 without their patch strategies would be worse: `kubectl apply`
/// would then compute list-replacing strategic merge patches from it.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    Vec::new()
}

/// The path of a group-version in the `/openapi/v3` index: `api/v1` for the core group,
/// `apis/<group>/<version>` otherwise. Accepts `v1`, `postgres.tusk.dev/v1` or an
/// already-prefixed `apis/...`.
pub fn group_version_path(group_version: &str) -> String {
    if group_version.starts_with("api/") || group_version.starts_with("apis/") {
        group_version.to_string()
    } else if group_version.contains('/') {
        format!("apis/{group_version}")
    } else {
        format!("api/{group_version}")
    }
}

fn content_hash(text: &str) -> String {
    let mut first = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut first);
    let mut second = std::collections::hash_map::DefaultHasher::new();
    (text, 0x5eed_u32).hash(&mut second);
    format!("{:016X}{:016X}", first.finish(), second.finish())
}

/// The `/openapi/v3` index. The hash in each URL only varies with the group-version's name;
/// prefer [`openapi_v3_index_with_documents`] so kubectl's cache notices changed schemas.
pub fn openapi_v3_index(group_versions: &[String]) -> Value {
    let documents: Vec<(String, Value)> = group_versions
        .iter()
        .map(|gv| (gv.clone(), Value::String(gv.clone())))
        .collect();
    openapi_v3_index_with_documents(&documents)
}

/// The `/openapi/v3` index, each URL's hash derived from its document, as kube-apiserver does,
/// so that clients caching by URL fetch a group-version again when its schemas change.
pub fn openapi_v3_index_with_documents(documents: &[(String, Value)]) -> Value {
    let paths: Map<String, Value> = documents
        .iter()
        .map(|(gv, document)| {
            let path = group_version_path(gv);
            let hash = content_hash(&document.to_string());
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// The OpenAPI 3 document of one group-version: the paths and schemas of the CRDs served
/// there, plus ObjectMeta and ListMeta, so `kubectl explain postgrescluster.spec` works.
pub fn openapi_v3_group_version(group: &str, version: &str, crds: &[Value]) -> Value {
    let prefix = "#/components/schemas/";
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for crd in crd_versions(crds) {
        if crd.group != group || crd.version != version {
            continue;
        }
        paths.extend(paths_for(&crd, true));
        schemas.insert(
            definition_name(crd.group, crd.version, crd.kind),
            published_schema(&crd, prefix, true),
        );
        schemas.insert(
            format!("{}List", definition_name(crd.group, crd.version, crd.kind)),
            published_list_schema(&crd, prefix),
        );
    }
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    schemas.insert(LIST_META.into(), list_meta_schema());
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tusk_crds() -> Vec<Value> {
        tusk_api::crds()
            .into_iter()
            .map(|crd| serde_json::to_value(crd).unwrap())
            .collect()
    }

    /// Every `$ref` in a document resolves to a definition it holds.
    fn assert_refs_resolve(value: &Value, document: &Value, prefix: &str, container: &str) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    let name = reference.strip_prefix(prefix).expect("a local reference");
                    assert!(
                        document
                            .pointer(container)
                            .and_then(|d| d.get(name))
                            .is_some(),
                        "dangling {reference}"
                    );
                }
                map.values()
                    .for_each(|v| assert_refs_resolve(v, document, prefix, container));
            }
            Value::Array(items) => items
                .iter()
                .for_each(|v| assert_refs_resolve(v, document, prefix, container)),
            _ => {}
        }
    }

    #[test]
    fn v3_group_version_document_has_explainable_schemas() {
        let crds = tusk_crds();
        let doc = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds);
        assert_eq!(doc["openapi"], "3.0.0");
        let cluster = &doc["components"]["schemas"]["dev.tusk.postgres.v1.PostgresCluster"];
        assert_eq!(
            cluster["x-kubernetes-group-version-kind"],
            json!([{"group": "postgres.tusk.dev", "version": "v1", "kind": "PostgresCluster"}])
        );
        assert_eq!(
            cluster["properties"]["spec"]["properties"]["memorySize"]["type"],
            "integer"
        );
        assert_eq!(
            cluster["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_refs_resolve(&doc, &doc, "#/components/schemas/", "/components/schemas");
        for kind in [
            "PostgresBackup",
            "PostgresBackupRequest",
            "PostgresBackupSchedule",
            "PostgresRemoteCluster",
        ] {
            assert!(
                doc["components"]["schemas"]
                    .get(format!("dev.tusk.postgres.v1.{kind}"))
                    .is_some(),
                "{kind}"
            );
        }
        // kubectl sends fieldValidation only when the kind's PATCH operation declares it.
        let patch = &doc["paths"]["/apis/postgres.tusk.dev/v1/namespaces/{namespace}/postgresclusters/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "PostgresCluster"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        // Another group-version holds none of tusk's kinds.
        let other = openapi_v3_group_version("apps", "v1", &crds);
        assert_eq!(other["paths"], json!({}));
    }

    #[test]
    fn v2_document_is_swagger_with_definitions() {
        let doc = openapi_v2_document(&tusk_crds());
        assert_eq!(doc["swagger"], "2.0");
        assert!(doc["info"]["version"].is_string());
        assert!(doc["definitions"]["dev.tusk.postgres.v1.PostgresBackupList"].is_object());
        assert_eq!(
            doc["definitions"]["dev.tusk.postgres.v1.PostgresBackup"]["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_refs_resolve(&doc, &doc, "#/definitions/", "/definitions");
        assert_eq!(openapi_v2_document(&[])["paths"], json!({}));
    }

    #[test]
    fn v3_index_paths_and_hashes() {
        let index = openapi_v3_index(&[
            "postgres.tusk.dev/v1".to_string(),
            "v1".to_string(),
            "apis/apps/v1".to_string(),
        ]);
        let url = index["paths"]["apis/postgres.tusk.dev/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/postgres.tusk.dev/v1?hash="),
            "{url}"
        );
        assert!(index["paths"]["api/v1"].is_object());
        assert!(index["paths"]["apis/apps/v1"].is_object());

        let crds = tusk_crds();
        let doc = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds);
        let before =
            openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), doc.clone())]);
        let again = openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), doc)]);
        let changed = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds[..1]);
        let after = openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), changed)]);
        assert_eq!(before, again, "the hash is stable");
        assert_ne!(before, after, "the hash follows the document");
    }
}
