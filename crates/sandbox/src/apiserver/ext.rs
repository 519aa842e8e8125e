//! The one place the server calls into the schema, patch, selector, table and openapi modules.
//!
//! Keeping those calls behind these thin wrappers lets the rest of the server speak in its own
//! terms (causes, HTTP status codes) and keeps the seams with the sibling modules in one file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::resources::ResourceType;
use super::{openapi, patch, schema, selector, table};

/// One reason a write was refused, as it appears in a Status's `details.causes`.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// A CRD version's structural schema, compiled once.
pub(crate) struct Schema {
    compiled: schema::CompiledSchema,
}

impl Schema {
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, String> {
        schema::CompiledSchema::new(open_api_v3_schema)
            .map(|compiled| Schema { compiled })
            .map_err(|error| error.to_string())
    }

    /// Drops unknown fields, returning their paths.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        self.compiled.prune(obj)
    }

    pub fn default(&self, obj: &mut Value) {
        self.compiled.default(obj)
    }

    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        self.compiled
            .validate(obj, old)
            .into_iter()
            .map(|error| Cause {
                reason: error.reason.as_k8s_cause_type(),
                field: error.field,
                message: error.message,
            })
            .collect()
    }
}

/// The causes kube-apiserver gives for a CRD whose CEL rules are estimated over its cost
/// budgets. When every version has the same schema, kube-apiserver checks it once, as the
/// top-level `spec.validation`; otherwise each version's `spec.versions[i].schema`. As there, a
/// schema an update leaves unchanged is not held to the per-rule limit again (only to the
/// whole-schema limit).
pub(crate) fn crd_rule_cost_causes(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    fn schemas(crd: &Value) -> Vec<(String, Option<&Value>)> {
        crd.pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                (name.to_string(), v.get("schema"))
            })
            .collect()
    }
    let versions = schemas(crd);
    let old_versions = old.map(schemas).unwrap_or_default();
    let unchanged = |name: &str, schema: Option<&Value>| {
        old_versions
            .iter()
            .any(|(old_name, old_schema)| old_name == name && *old_schema == schema)
    };
    let identical = versions.iter().all(|(_, s)| *s == versions[0].1);
    let mut located: Vec<(String, &Value, bool)> = Vec::new();
    for (i, (name, schema)) in versions.iter().enumerate() {
        let Some(open_api) = schema.and_then(|s| s.get("openAPIV3Schema")) else {
            continue;
        };
        if identical {
            located.push((
                "spec.validation.openAPIV3Schema".into(),
                open_api,
                unchanged(name, *schema),
            ));
            break;
        }
        located.push((
            format!("spec.versions[{i}].schema.openAPIV3Schema"),
            open_api,
            unchanged(name, *schema),
        ));
    }
    located
        .into_iter()
        .flat_map(|(location, open_api, unchanged)| {
            schema::cost::estimate(open_api, &location).violations(!unchanged)
        })
        .map(|error| Cause {
            reason: error.reason.as_k8s_cause_type(),
            field: error.field,
            message: error.message,
        })
        .collect()
}

/// A CRD version's printer columns.
pub(crate) struct Columns {
    columns: Vec<table::PrinterColumn>,
}

impl Columns {
    pub fn from_crd_version(version: &Value) -> Self {
        Columns {
            columns: table::PrinterColumn::from_crd_version(version),
        }
    }
}

/// Renders a meta.k8s.io/v1 Table.
pub(crate) fn render_table(
    api_version: &str,
    kind: &str,
    columns: Option<&Columns>,
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
) -> Value {
    let columns = match columns {
        Some(columns) if !columns.columns.is_empty() => columns.columns.clone(),
        _ => table::builtin_columns(api_version, kind).unwrap_or_else(table::default_columns),
    };
    let include = match include_object {
        "None" => table::IncludeObject::None,
        "Object" => table::IncludeObject::Object,
        _ => table::IncludeObject::Metadata,
    };
    table::render_table(&columns, objects, include, list_meta)
}

/// A patch that could not be applied: the HTTP status, the message, and for an apply
/// conflict, the conflicting fields.
pub(crate) struct PatchFailure {
    pub status: u16,
    pub message: String,
    pub conflicts: Vec<patch::ApplyConflict>,
    /// A JSON patch's operation failed against the object (a `test` included), which
    /// kube-apiserver reports as a generic 422 naming no object.
    pub operation_failed: bool,
}

impl From<patch::PatchError> for PatchFailure {
    fn from(error: patch::PatchError) -> Self {
        let conflicts = match &error {
            patch::PatchError::Conflict { conflicts, .. } => conflicts.clone(),
            _ => Vec::new(),
        };
        let operation_failed = matches!(
            error,
            patch::PatchError::TestFailed { .. } | patch::PatchError::OperationFailed(_)
        );
        PatchFailure {
            status: error.http_status(),
            message: error.to_string(),
            conflicts,
            operation_failed,
        }
    }
}

pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    patch::merge_patch(target, patch)
}

pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchFailure> {
    Ok(patch::json_patch(target, patch)?)
}

pub(crate) fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), PatchFailure> {
    Ok(patch::strategic_merge_patch(
        target,
        patch,
        api_version,
        kind,
    )?)
}

pub(crate) fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<Value, PatchFailure> {
    Ok(patch::server_side_apply(live, applied, manager, force, subresource)?.object)
}

pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
) {
    patch::record_update(old, new, manager, operation, subresource)
}

/// A parsed label selector.
pub(crate) struct LabelSelector(selector::LabelSelector);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        selector::LabelSelector::parse(text)
            .map(LabelSelector)
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }
}

/// A parsed field selector.
pub(crate) struct FieldSelector(selector::FieldSelector);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        selector::FieldSelector::parse(text)
            .map(FieldSelector)
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.matches(obj)
    }

    pub fn fields(&self) -> Vec<String> {
        self.0
            .requirements()
            .into_iter()
            .map(|(field, _, _)| field)
            .collect()
    }
}

/// The built-in kinds among `resources`, as the OpenAPI documents describe them.
pub(crate) fn served_kinds(resources: &[Arc<ResourceType>]) -> Vec<openapi::ServedKind<'_>> {
    resources
        .iter()
        .filter(|rt| !rt.custom)
        .map(|rt| openapi::ServedKind {
            group: &rt.group,
            version: &rt.version,
            kind: &rt.kind,
            plural: &rt.plural,
            namespaced: rt.namespaced,
            status: rt.status_subresource,
            create_only: rt.create_only,
        })
        .collect()
}

/// `/openapi/v2`: the built-in kinds among `resources` and the CRDs.
pub(crate) fn openapi_v2(crds: &[Value], resources: &[Arc<ResourceType>]) -> Value {
    openapi::openapi_v2_document(crds, &served_kinds(resources))
}

/// `/openapi/v3`: one entry for each group-version, hashed by its content.
pub(crate) fn openapi_v3_index(
    group_versions: &[(String, String)],
    crds: &[Value],
    resources: &[Arc<ResourceType>],
) -> Value {
    let builtins = served_kinds(resources);
    let documents: Vec<(String, Value)> = group_versions
        .iter()
        .map(|(group, version)| {
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            let fingerprint =
                openapi::openapi_v3_document_fingerprint(group, version, crds, &builtins);
            (api_version, fingerprint)
        })
        .collect();
    openapi::openapi_v3_index_with_documents(&documents)
}

/// `/openapi/v3/<group-version>`: its built-in kinds (among `resources`) and CRDs.
pub(crate) fn openapi_v3_group_version(
    group: &str,
    version: &str,
    crds: &[Value],
    resources: &[Arc<ResourceType>],
) -> Value {
    openapi::openapi_v3_group_version(group, version, crds, &served_kinds(resources))
}
