//! The OpenAPI documents kubectl reads: `/openapi/v2` and `/openapi/v3`, describing the built-in
//! kinds (from `k8s-openapi`'s schemas, see [`builtin`]) and the custom resources (from their
//! CRDs' schemas).
//!
//! What matters to kubectl:
//! - `kubectl explain` finds a kind's schema in `/openapi/v3/<group-version>` by its
//!   `x-kubernetes-group-version-kind` extension and follows `$ref`s (ObjectMeta...).
//! - `kubectl apply/create --validate=strict` asks the server to validate (`fieldValidation`)
//!   only when the PATCH operation of the kind's path, tagged with the same extension, lists a
//!   `fieldValidation` query parameter; otherwise it falls back to validating on the client.
//! - `kubectl apply` computes a strategic merge patch from `/openapi/v3` only for a kind whose
//!   PATCH operation accepts `application/strategic-merge-patch+json`, and then takes each
//!   list's merge key from the schema's `x-kubernetes-patch-merge-key`. `k8s-openapi`'s schemas
//!   carry no patch strategies, so no PATCH operation here lists that media type: kubectl then
//!   builds the patch from the patch strategies compiled into it (its copy of the Go types),
//!   the ones kube-apiserver merges with, instead of replacing lists it should merge.

pub(crate) mod builtin;

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use builtin::Flavor;

/// The Kubernetes version the documents claim, matching what the sandbox's `/version` serves.
const INFO_VERSION: &str = "v1.33.0";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// A built-in resource the server serves, with what the documents' paths need of it.
#[derive(Clone, Debug)]
pub struct ServedKind<'a> {
    /// The API group (empty for the core group).
    pub group: &'a str,
    /// The version (`v1`).
    pub version: &'a str,
    /// The kind (`Pod`).
    pub kind: &'a str,
    /// The resource name in URLs (`pods`).
    pub plural: &'a str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is served.
    pub status: bool,
    /// Whether the kind is only ever created (the access and token reviews).
    pub create_only: bool,
}

/// One kind as the documents publish it: a built-in one, or a served version of a CRD.
struct PublishedKind<'a> {
    served: ServedKind<'a>,
    /// For a custom resource: the version's `openAPIV3Schema`, if it has one.
    crd_schema: Option<&'a Value>,
}

fn crd_versions(crds: &[Value]) -> Vec<PublishedKind<'_>> {
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
            out.push(PublishedKind {
                served: ServedKind {
                    group,
                    version: name,
                    kind,
                    plural,
                    namespaced,
                    status: version.pointer("/subresources/status").is_some(),
                    create_only: false,
                },
                crd_schema: version.pointer("/schema/openAPIV3Schema"),
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
fn published_schema(crd: &PublishedKind<'_>, ref_prefix: &str, v3: bool) -> Value {
    let mut schema = crd
        .crd_schema
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
        json!([gvk(crd.served.group, crd.served.version, crd.served.kind)]),
    );
    schema
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

fn operation(kind: &ServedKind<'_>, action: &str, operation_id: String, v3: bool) -> Value {
    let mut op = json!({
        "operationId": operation_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind.group, kind.version, kind.kind),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if matches!(action, "post" | "put" | "patch") {
        op["parameters"] = write_parameters(v3);
    }
    if action == "patch" {
        // No strategic merge patch: see the module's documentation.
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

fn paths_for(kind: &ServedKind<'_>, v3: bool) -> Map<String, Value> {
    let base = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let scope = if kind.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{base}/{}", kind.plural)
    };
    let group_id = if kind.group.is_empty() {
        "Core".to_owned()
    } else {
        kind.group
            .trim_end_matches(".k8s.io")
            .split('.')
            .map(capitalize)
            .collect::<String>()
    };
    let id_kind = format!("{group_id}{}{}", capitalize(kind.version), kind.kind);
    let namespaced = if kind.namespaced { "Namespaced" } else { "" };
    let op = |action: &str, id: String| operation(kind, action, id, v3);
    let mut paths = Map::new();
    if kind.create_only {
        paths.insert(
            scope,
            json!({"post": op("post", format!("create{namespaced}{id_kind}"))}),
        );
        return paths;
    }
    paths.insert(
        scope.clone(),
        json!({
            "get": op("list", format!("list{id_kind}{namespaced}")),
            "post": op("post", format!("create{namespaced}{id_kind}")),
        }),
    );
    paths.insert(
        format!("{scope}/{{name}}"),
        json!({
            "get": op("get", format!("read{namespaced}{id_kind}")),
            "put": op("put", format!("replace{namespaced}{id_kind}")),
            "patch": op("patch", format!("patch{namespaced}{id_kind}")),
            "delete": op("delete", format!("delete{namespaced}{id_kind}")),
        }),
    );
    if kind.status {
        paths.insert(
            format!("{scope}/{{name}}/status"),
            json!({
                "get": op("get", format!("read{namespaced}{id_kind}Status")),
                "put": op("put", format!("replace{namespaced}{id_kind}Status")),
                "patch": op("patch", format!("patch{namespaced}{id_kind}Status")),
            }),
        );
    }
    paths
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Adds a CRD version's paths, schema and list schema to a document's.
fn publish_crd(
    crd: &PublishedKind<'_>,
    flavor: Flavor,
    paths: &mut Map<String, Value>,
    definitions: &mut Map<String, Value>,
) {
    let served = &crd.served;
    let v3 = flavor == Flavor::V3;
    paths.extend(paths_for(served, v3));
    let name = definition_name(served.group, served.version, served.kind);
    definitions.insert(name.clone(), published_schema(crd, flavor.ref_prefix(), v3));
    definitions.insert(
        format!("{name}List"),
        builtin::list_schema(flavor, served.group, served.version, served.kind, &name),
    );
}

/// The Swagger 2.0 document of `/openapi/v2` (JSON): the paths (with the `fieldValidation`
/// parameter) and definitions of the given built-in kinds and CRDs.
pub fn openapi_v2_document(crds: &[Value], builtins: &[ServedKind<'_>]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    let mut group_versions: Vec<(&str, &str)> = builtins
        .iter()
        .map(|kind| (kind.group, kind.version))
        .collect();
    group_versions.sort_unstable();
    group_versions.dedup();
    // ObjectMeta and ListMeta come with every group-version, for the CRDs to refer to.
    definitions.extend(
        builtin::group_version_schemas(Flavor::V2, "", "")
            .definitions
            .clone(),
    );
    for (group, version) in group_versions {
        let schemas = builtin::group_version_schemas(Flavor::V2, group, version);
        definitions.extend(schemas.definitions.clone());
    }
    for kind in builtins {
        paths.extend(paths_for(kind, false));
    }
    for crd in crd_versions(crds) {
        publish_crd(&crd, Flavor::V2, &mut paths, &mut definitions);
    }
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
/// `openapi_v2.Document` (zero bytes), while the JSON form describes every kind. kubectl 1.27+
/// reads schemas and the `fieldValidation` support of every kind from `/openapi/v3`; `kubectl
/// apply` reads v2 only to find patch strategies for a kind v3 offers no strategic merge patch
/// for (all of them here, see the module's documentation), and finding none there it uses the
/// strategies compiled into it, as it must: `k8s-openapi`'s schemas carry no patch strategies,
/// and patches computed from them would replace lists kube-apiserver merges.
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

/// What the `/openapi/v3` index hashes for one group-version in place of its whole document:
/// the fingerprint of its built-in schemas and the document of its CRDs alone, which change
/// whenever the whole document does.
pub fn openapi_v3_document_fingerprint(
    group: &str,
    version: &str,
    crds: &[Value],
    builtins: &[ServedKind<'_>],
) -> Value {
    let builtin = builtins
        .iter()
        .any(|kind| kind.group == group && kind.version == version)
        .then(|| {
            builtin::group_version_schemas(Flavor::V3, group, version)
                .fingerprint
                .clone()
        });
    let served: Vec<ServedKind<'_>> = builtins
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
        .cloned()
        .collect();
    let paths = served
        .iter()
        .map(|kind| Value::Object(paths_for(kind, true)))
        .collect::<Vec<_>>();
    json!([
        builtin,
        paths,
        openapi_v3_group_version(group, version, crds, &[])
    ])
}

/// The OpenAPI 3 document of one group-version: the paths and schemas of the built-in kinds
/// (`builtins`, those of other group-versions ignored) and of the CRDs served there, plus
/// everything they refer to, so `kubectl explain pods.spec` and `kubectl explain
/// postgrescluster.spec` work.
pub fn openapi_v3_group_version(
    group: &str,
    version: &str,
    crds: &[Value],
    builtins: &[ServedKind<'_>],
) -> Value {
    let mut paths = Map::new();
    let builtins: Vec<&ServedKind<'_>> = builtins
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
        .collect();
    let mut schemas = if builtins.is_empty() {
        // Only ObjectMeta and ListMeta, for the CRDs to refer to.
        builtin::group_version_schemas(Flavor::V3, "", "")
            .definitions
            .clone()
    } else {
        builtin::group_version_schemas(Flavor::V3, group, version)
            .definitions
            .clone()
    };
    for kind in builtins {
        paths.extend(paths_for(kind, true));
    }
    for crd in crd_versions(crds) {
        if crd.served.group == group && crd.served.version == version {
            publish_crd(&crd, Flavor::V3, &mut paths, &mut schemas);
        }
    }
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
        let doc = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds, &[]);
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
        let other = openapi_v3_group_version("apps", "v1", &crds, &[]);
        assert_eq!(other["paths"], json!({}));
    }

    #[test]
    fn v2_document_is_swagger_with_definitions() {
        let doc = openapi_v2_document(&tusk_crds(), &[]);
        assert_eq!(doc["swagger"], "2.0");
        assert!(doc["info"]["version"].is_string());
        assert!(doc["definitions"]["dev.tusk.postgres.v1.PostgresBackupList"].is_object());
        assert_eq!(
            doc["definitions"]["dev.tusk.postgres.v1.PostgresBackup"]["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_refs_resolve(&doc, &doc, "#/definitions/", "/definitions");
        assert_eq!(openapi_v2_document(&[], &[])["paths"], json!({}));
    }

    #[test]
    fn v3_index_paths_and_hashes() {
        let name_only = |gv: &str| (gv.to_string(), Value::String(gv.to_string()));
        let index = openapi_v3_index_with_documents(&[
            name_only("postgres.tusk.dev/v1"),
            name_only("v1"),
            name_only("apis/apps/v1"),
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
        let doc = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds, &[]);
        let before =
            openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), doc.clone())]);
        let again = openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), doc)]);
        let changed = openapi_v3_group_version("postgres.tusk.dev", "v1", &crds[..1], &[]);
        let after = openapi_v3_index_with_documents(&[("postgres.tusk.dev/v1".into(), changed)]);
        assert_eq!(before, again, "the hash is stable");
        assert_ne!(before, after, "the hash follows the document");
    }

    /// The registry's built-in kinds, as the server passes them.
    fn registry_kinds(
        registry: &crate::apiserver::resources::Registry,
    ) -> Vec<std::sync::Arc<crate::apiserver::resources::ResourceType>> {
        registry.all().cloned().collect()
    }

    #[test]
    fn every_served_builtin_kind_is_described() {
        let registry = crate::apiserver::resources::Registry::builtin();
        let resources = registry_kinds(&registry);
        let mut served: Vec<(String, String, String)> =
            crate::apiserver::ext::served_kinds(&resources)
                .iter()
                .map(|k| (k.group.to_owned(), k.version.to_owned(), k.kind.to_owned()))
                .collect();
        let mut described: Vec<(String, String, String)> = builtin::described_kinds()
            .into_iter()
            .map(|(g, v, k)| (g.to_owned(), v.to_owned(), k.to_owned()))
            .collect();
        served.sort();
        described.sort();
        assert_eq!(served, described);
    }

    #[test]
    fn v3_core_document_describes_pods_as_kube_apiserver_does() {
        let registry = crate::apiserver::resources::Registry::builtin();
        let resources = registry_kinds(&registry);
        let kinds = crate::apiserver::ext::served_kinds(&resources);
        let doc = openapi_v3_group_version("", "v1", &[], &kinds);
        let schemas = &doc["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"][0]["kind"],
            "PodList"
        );
        // A described reference sits in an allOf, as OpenAPI 3.0 wants and kube-apiserver does.
        assert_eq!(
            pod["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(schemas.get("io.k8s.api.apps.v1.Deployment").is_none());
        assert_refs_resolve(&doc, &doc, "#/components/schemas/", "/components/schemas");

        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        // kubectl must keep using its compiled-in patch strategies (see the module docs).
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert!(doc["paths"]["/api/v1/nodes/{name}/status"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}/status"].is_null());
    }

    #[test]
    fn v2_document_describes_builtin_kinds_of_every_group() {
        let registry = crate::apiserver::resources::Registry::builtin();
        let resources = registry_kinds(&registry);
        let kinds = crate::apiserver::ext::served_kinds(&resources);
        let doc = openapi_v2_document(&tusk_crds(), &kinds);
        let definitions = &doc["definitions"];
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.batch.v1.CronJob",
            "dev.tusk.postgres.v1.PostgresCluster",
        ] {
            assert!(
                definitions[name]["x-kubernetes-group-version-kind"].is_array(),
                "{name}"
            );
        }
        assert!(
            doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]["post"]
                .is_object()
        );
        assert_refs_resolve(&doc, &doc, "#/definitions/", "/definitions");
    }
}
