//! The write semantics of the API server: create, update, patch and delete, with metadata
//! bookkeeping, the status subresource, finalizers, CRD schemas, and optimistic concurrency.
//!
//! Every write reads the current object, computes the new one outside the lock, and commits only
//! if the object did not change meanwhile (kube-apiserver's GuaranteedUpdate); otherwise it
//! retries, or answers 409 when the client named the resourceVersion it expected.

use std::sync::Arc;

use rand::RngExt;
use serde_json::{Map, Value, json};

use super::admission::{self, Attributes};
use super::auth::User;
use super::defaults;
use super::error::ApiError;
use super::events;
use super::ext::{self, Cause};
use super::resources::{CRD_STORAGE, NAMESPACE_STORAGE, ResourceType, crd_resource_types};
use super::services;
use super::storage_classes;
use super::store::{Key, Store, Txn, object_key};
use super::typed;
use super::validation;

/// How a client asked for unknown fields to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Options common to every write.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: String,
    pub field_validation: FieldValidation,
    /// Warnings to return in `Warning` headers (unknown fields under `Warn`).
    pub warnings: Vec<String>,
    /// The paths of the keys the request body gave twice, reported with the unknown fields.
    pub duplicate_fields: Vec<String>,
    /// Who writes, for the admission policies; none for the sandbox's own controllers, whose
    /// writes are not admitted.
    pub user: Option<User>,
}

/// The four patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply { force: bool },
}

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The parts of DeleteOptions the server honours.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteRequest {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// The deprecated `orphanDependents: false`, with which kube-apiserver answers a delete
    /// that leaves the object in place 202 Accepted (200 otherwise, for older clients' sake).
    pub orphan_dependents_false: bool,
}

/// The outcome of a delete.
pub(crate) enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Arc<Value>),
    /// Finalizers hold the object, now marked with a deletionTimestamp.
    Pending(Arc<Value>),
}

const MAX_RETRIES: usize = 16;
pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";
pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
pub(crate) const NAMESPACE_FINALIZER: &str = "kubernetes";
pub(crate) const POD_STORAGE: &str = "/pods";

/// Now, as kube-apiserver writes timestamps (RFC 3339, whole seconds, UTC).
pub(crate) fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn random_uid() -> String {
    let bits: u128 = rand::rng().random();
    // Version 4, variant 1, as uuid.NewUUID() would produce.
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The longest prefix of a generated name kube-apiserver keeps (63 less the 5-character
/// random suffix).
const MAX_GENERATED_PREFIX: usize = 58;

fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    // Just ensured to be an object.
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(object: &mut Value, list: Vec<String>) {
    let metadata = metadata_mut(object);
    if list.is_empty() {
        metadata.remove("finalizers");
    } else {
        metadata.insert("finalizers".into(), json!(list));
    }
}

pub(crate) fn is_deleting(object: &Value) -> bool {
    meta_str(object, "deletionTimestamp").is_some()
}

/// Whether a deleting object has nothing left holding it.
fn should_vanish(storage: &str, object: &Value) -> bool {
    if !is_deleting(object) || !finalizers(object).is_empty() {
        return false;
    }
    if storage == POD_STORAGE {
        // A pod in its grace period waits for its kubelet's final delete with grace 0.
        let grace = object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        return grace.is_none_or(|grace| grace <= 0);
    }
    if storage == NAMESPACE_STORAGE {
        let spec_finalizers = object.pointer("/spec/finalizers").and_then(Value::as_array);
        return spec_finalizers.is_none_or(|f| f.is_empty());
    }
    true
}

/// The object as `rt` serves it (events convert; a CR is labelled with the version asked for).
pub(crate) fn present(rt: &ResourceType, stored: &Value) -> Value {
    if rt.group == "events.k8s.io" {
        return events::to_events_api(stored);
    }
    let mut out = stored.clone();
    if rt.custom {
        out["apiVersion"] = Value::String(rt.api_version());
    }
    out
}

/// A served object in the form it is stored.
pub(crate) fn to_storage(rt: &ResourceType, served: Value) -> Value {
    if rt.group == "events.k8s.io" {
        return events::to_core(&served);
    }
    served
}

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.to_string(),
        reason,
        message,
    }
}

/// Whether a write is a dry run, from its `dryRun` values. kube-apiserver accepts only `All` and
/// refuses anything else (before doing anything) with a 422 naming the request's options kind:
/// `CreateOptions`, `UpdateOptions`, `PatchOptions` or `DeleteOptions`.
pub(crate) fn dry_run(values: &[&str], options_kind: &str) -> Result<bool, ApiError> {
    if values.iter().all(|v| *v == "All") {
        return Ok(!values.is_empty());
    }
    let quoted: Vec<String> = values
        .iter()
        .map(|v| serde_json::to_string(v).unwrap_or_default())
        .collect();
    Err(ApiError::invalid_options(
        options_kind,
        vec![cause(
            "dryRun",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: [{}]: supported values: \"All\"",
                quoted.join(",")
            ),
        )],
    ))
}

/// kube-apiserver's RFC 1123 rules for object names: a label of at most 63 characters for
/// namespaces and Services, else a subdomain of at most 253 characters, whose dot-separated
/// parts (unlike DNS's) may be longer than 63.
fn validate_name(rt: &ResourceType, name: &str) -> Option<Cause> {
    let part_matches = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    };
    let dns_label_only = rt.plural == "namespaces" || rt.plural == "services";
    let message = if dns_label_only {
        format!(
            "Invalid value: \"{name}\": {}",
            validation::dns1123_label_error(name)?
        )
    } else if name.len() <= 253 && name.split('.').all(part_matches) {
        return None;
    } else {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    };
    Some(cause("metadata.name", "FieldValueInvalid", message))
}

/// kube-apiserver's rule for label values: at most 63 characters, empty or alphanumeric at both
/// ends with `-`, `_` and `.` between.
fn validate_label_values(stored: &Value) -> Option<Cause> {
    let labels = stored.pointer("/metadata/labels")?.as_object()?;
    labels.values().filter_map(Value::as_str).find_map(|value| {
        let alphanumeric = |b: Option<&u8>| b.is_none_or(u8::is_ascii_alphanumeric);
        let message = if value.len() > 63 {
            "must be no more than 63 characters"
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || !alphanumeric(value.as_bytes().first())
            || !alphanumeric(value.as_bytes().last())
        {
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        } else {
            return None;
        };
        Some(cause(
            "metadata.labels",
            "FieldValueInvalid",
            format!("Invalid value: \"{value}\": {message}"),
        ))
    })
}

/// Fills in the `kind` and `apiVersion` a create or update body of a built-in kind leaves
/// out, from the endpoint it was sent to, as kube-apiserver's typed decoding does (client
/// libraries send bodies without them). Custom kinds are decoded untyped there and keep
/// needing their `kind`.
pub(crate) fn default_type(rt: &ResourceType, body: &mut Value) {
    if rt.custom {
        return;
    }
    let Some(fields) = body.as_object_mut() else {
        return;
    };
    for (field, value) in [("kind", rt.kind.clone()), ("apiVersion", rt.api_version())] {
        if fields
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            fields.insert(field.into(), Value::String(value));
        }
    }
}

/// Checks that the body names the kind and version of the endpoint it was sent to.
pub(crate) fn check_type(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'apiVersion' is missing in the request body",
        ));
    }
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        ))
        .with_kind_message(kind, &rt.kind));
    }
    Ok(())
}

impl ApiError {
    fn with_kind_message(self, got: &str, expected: &str) -> Self {
        if got == expected {
            self
        } else {
            ApiError::bad_request(format!(
                "the kind in the data ({got}) does not match the expected kind ({expected})"
            ))
        }
    }
}

/// Applies the kind's schema: a CRD's structural schema prunes (or refuses) unknown fields,
/// defaults and validates; a built-in kind drops the fields its type does not have and is
/// validated as kube-apiserver validates it. Unknown and duplicate fields are refused under
/// `Strict`, reported as warnings under `Warn`, and dropped silently under `Ignore`.
fn apply_schema(
    rt: &ResourceType,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
    opts: &mut WriteOptions,
) -> Result<(), ApiError> {
    let mut strict_errors: Vec<String> = opts
        .duplicate_fields
        .iter()
        .map(|p| format!("duplicate field \"{p}\""))
        .collect();
    let unknown = match &rt.schema {
        Some(schema) => {
            // The schema describes the body; the envelope is the server's and survives pruning.
            let envelope: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
                .iter()
                .filter_map(|f| object.get(*f).map(|v| (f.to_string(), v.clone())))
                .collect();
            let pruned = schema.prune(object);
            for (field, value) in envelope {
                object[field] = value;
            }
            pruned
        }
        None => {
            let stored_kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let stored_group = if rt.group == "events.k8s.io" {
                ""
            } else {
                rt.group.as_str()
            };
            if let Err(error) = validation::quantities::decode(stored_group, &stored_kind, object) {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}",
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            typed::prune_unknown_fields(stored_group, &stored_kind, object)
        }
    };
    strict_errors.extend(unknown.iter().map(|p| format!("unknown field \"{p}\"")));
    if !strict_errors.is_empty() {
        match opts.field_validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    strict_errors.join(", "),
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            FieldValidation::Warn => opts.warnings.extend(strict_errors),
            FieldValidation::Ignore => {}
        }
    }
    let mut causes = match &rt.schema {
        Some(schema) => {
            schema.default(object);
            schema.validate(object, old)
        }
        None => validation::validate(rt, object, old),
    };
    if admission::is_policy_kind(rt) {
        causes.extend(admission::validate_configuration(rt, object));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, causes))
    }
}

/// Fills in a CRD's status the way the apiextensions controllers do once names are accepted.
fn prepare_crd(rt: &ResourceType, crd: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = meta_str(crd, "name").unwrap_or_default().to_string();
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(ApiError::invalid(
            rt,
            &name,
            vec![cause(
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            )],
        ));
    }
    if let Err(message) = crd_resource_types(crd) {
        return Err(ApiError::invalid(
            rt,
            &name,
            vec![cause("spec", "FieldValueInvalid", message)],
        ));
    }
    let over_budget = ext::crd_rule_cost_causes(crd, old);
    if !over_budget.is_empty() {
        return Err(ApiError::invalid(rt, &name, over_budget));
    }
    if let Some(old) = old {
        crd["status"] = old.get("status").cloned().unwrap_or(json!({}));
        return Ok(());
    }
    let mut accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if accepted.get("singular").is_none() {
        let kind = accepted
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        accepted["singular"] = Value::String(kind);
    }
    if accepted.get("listKind").is_none() {
        let kind = accepted
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        accepted["listKind"] = Value::String(format!("{kind}List"));
    }
    if let Some(names) = crd.pointer_mut("/spec/names") {
        *names = accepted.clone();
    }
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let at = now();
    crd["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": at, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": at, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
    });
    Ok(())
}

/// The object without what does not count towards `metadata.generation`.
fn generation_relevant(rt: &ResourceType, object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
        if rt.status_subresource {
            map.remove("status");
        }
    }
    out
}

/// The object without what a write that changes nothing still changes: its resourceVersion
/// and the times in its managedFields. A change of field ownership alone (a second manager
/// applying the same value, a client rewriting managedFields) is a change.
fn without_volatile_metadata(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        if let Some(entries) = metadata
            .get_mut("managedFields")
            .and_then(Value::as_array_mut)
        {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.remove("time");
            }
        }
    }
    out
}

/// Creates an object. Returns the stored object.
pub(crate) fn create(
    store: &Store,
    rt: &ResourceType,
    namespace: Option<&str>,
    mut body: Value,
    opts: &mut WriteOptions,
) -> Result<Arc<Value>, ApiError> {
    default_type(rt, &mut body);
    check_type(rt, &body)?;
    if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    {
        let metadata = metadata_mut(&mut body);
        let body_namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match namespace {
            Some(namespace) => {
                if !body_namespace.is_empty() && body_namespace != namespace {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                metadata.insert("namespace".into(), Value::String(namespace.to_string()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match metadata.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    // As kube-apiserver's name generator: the prefix is cut to 58 characters so
                    // that prefix and the five random ones fit a 63-character name.
                    let prefix: String = prefix.chars().take(MAX_GENERATED_PREFIX).collect();
                    let generated = format!("{prefix}{}", generated_suffix());
                    metadata.insert("name".into(), Value::String(generated));
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![cause(
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        metadata.insert("uid".into(), Value::String(random_uid()));
        metadata.insert("creationTimestamp".into(), Value::String(now()));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        if rt.has_generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
    }
    let mut stored = to_storage(rt, body);
    let name = meta_str(&stored, "name").unwrap_or_default().to_string();
    if let Some(invalid) = validate_name(rt, &name).or_else(|| validate_label_values(&stored)) {
        return Err(ApiError::invalid(rt, &name, vec![invalid]));
    }
    if rt.status_subresource
        && let Some(map) = stored.as_object_mut()
    {
        map.remove("status");
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            stored["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
            stored["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            stored["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "services") => services::default_on_create(store, rt, &name, &mut stored)?,
        ("", "persistentvolumeclaims") => {
            storage_classes::default_class(&store.read(), &mut stored);
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            prepare_crd(rt, &mut stored, None)?;
            let mut list = finalizers(&stored);
            if !list.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                list.push(CRD_CLEANUP_FINALIZER.to_string());
            }
            set_finalizers(&mut stored, list);
        }
        _ => {}
    }
    defaults::apply(rt, &mut stored);
    defaults::job_selector(rt, &mut stored);
    apply_schema(rt, &name, &mut stored, None, opts)?;
    ext::record_update(None, &mut stored, &opts.field_manager, "Update", None);
    admit(store, rt, "CREATE", None, Some(&stored), None, opts)?;
    commit_create(store, rt, stored, opts.dry_run)
}

/// [`admit`] for an update of `current` to `new`.
fn admit_update(
    store: &Store,
    rt: &ResourceType,
    subresource: Option<&str>,
    new: &Value,
    current: &Value,
    opts: &mut WriteOptions,
) -> Result<(), ApiError> {
    admit(
        store,
        rt,
        "UPDATE",
        subresource,
        Some(new),
        Some(current),
        opts,
    )
}

/// Runs the admission policies over a write (after the object's own validation, as
/// kube-apiserver does), keeping the warnings they give.
pub(crate) fn admit(
    store: &Store,
    rt: &ResourceType,
    operation: &'static str,
    subresource: Option<&str>,
    object: Option<&Value>,
    old_object: Option<&Value>,
    opts: &mut WriteOptions,
) -> Result<(), ApiError> {
    let identity = object.or(old_object);
    if let (true, None, Some(claim), Some(old_claim)) = (
        storage_classes::is_claim(rt),
        subresource,
        object,
        old_object,
    ) {
        let name = identity
            .and_then(|o| meta_str(o, "name"))
            .unwrap_or_default();
        storage_classes::admit_resize(&store.read(), rt, name, claim, old_claim)?;
    }
    let Some(user) = &opts.user else {
        return Ok(());
    };
    let text = |field: &str| {
        identity
            .and_then(|o| meta_str(o, field))
            .unwrap_or_default()
    };
    let served = object.map(|o| present(rt, o));
    let served_old = old_object.map(|o| present(rt, o));
    let attributes = Attributes {
        rt,
        operation,
        subresource,
        namespace: text("namespace"),
        name: text("name"),
        object: served.as_ref(),
        old_object: served_old.as_ref(),
        user,
        dry_run: opts.dry_run,
    };
    let warnings = admission::admit(&store.read(), &attributes)?;
    opts.warnings.extend(warnings);
    Ok(())
}

fn commit_create(
    store: &Store,
    rt: &ResourceType,
    stored: Value,
    dry_run: bool,
) -> Result<Arc<Value>, ApiError> {
    let key = object_key(&stored);
    store.write(|txn| {
        admit_namespace(txn, rt, &key)?;
        if txn.state.get(&rt.storage, &key).is_some() {
            return Err(ApiError::already_exists(rt, &key.1));
        }
        if dry_run {
            return Ok(Arc::new(stored));
        }
        Ok(txn.put(&rt.storage, stored))
    })
}

/// kube-apiserver's NamespaceLifecycle admission: no new content in missing or dying namespaces.
fn admit_namespace(txn: &Txn<'_>, rt: &ResourceType, key: &Key) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    match txn
        .state
        .get(NAMESPACE_STORAGE, &(String::new(), key.0.clone()))
    {
        None => Err(ApiError::namespace_not_found(&key.0)),
        Some(namespace) if is_deleting(namespace) => Err(ApiError::forbidden(
            rt,
            &key.1,
            &format!(
                "unable to create new content in namespace {} because it is being terminated",
                key.0
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Builds the object an update stores from the current one and the client's version of it.
fn prepare_update(
    store: &Store,
    rt: &ResourceType,
    current: &Value,
    mut new: Value,
    subresource: Option<&str>,
    opts: &mut WriteOptions,
    record: bool,
) -> Result<Value, ApiError> {
    let name = meta_str(current, "name").unwrap_or_default().to_string();
    if subresource == Some("status") {
        let mut out = current.clone();
        match new.get("status") {
            Some(status) => out["status"] = status.clone(),
            None => {
                if let Some(map) = out.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        if let Some(fields) = new.pointer("/metadata/managedFields") {
            metadata_mut(&mut out).insert("managedFields".into(), fields.clone());
        }
        new = out;
    } else {
        let current_meta = current.get("metadata").cloned().unwrap_or(json!({}));
        let metadata = metadata_mut(&mut new);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current_meta.get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        for field in ["apiVersion", "kind"] {
            if let Some(value) = current.get(field) {
                new[field] = value.clone();
            }
        }
        if rt.status_subresource {
            match current.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        if &*rt.storage == NAMESPACE_STORAGE {
            // spec.finalizers only change through /finalize.
            if let Some(spec) = current.get("spec") {
                new["spec"] = spec.clone();
            }
        }
    }
    if is_deleting(current) {
        let old_finalizers = finalizers(current);
        if finalizers(&new).iter().any(|f| !old_finalizers.contains(f)) {
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![cause(
                    "metadata.finalizers",
                    "FieldValueForbidden",
                    "Forbidden: no new finalizers can be added if the object is being deleted"
                        .into(),
                )],
            ));
        }
    }
    if &*rt.storage == CRD_STORAGE {
        prepare_crd(rt, &mut new, Some(current))?;
    }
    if services::is_service(rt) && subresource.is_none() {
        services::keep_cluster_ip(store, rt, current, &mut new)?;
    }
    if subresource.is_none() {
        defaults::apply(rt, &mut new);
    }
    apply_schema(rt, &name, &mut new, Some(current), opts)?;
    if rt.has_generation && generation_relevant(rt, current) != generation_relevant(rt, &new) {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        metadata_mut(&mut new).insert("generation".into(), json!(generation));
    }
    if record {
        ext::record_update(
            Some(current),
            &mut new,
            &opts.field_manager,
            "Update",
            subresource,
        );
    }
    Ok(new)
}

/// Outcome of one attempt at committing an update.
enum Attempt {
    Done(Arc<Value>),
    Raced,
}

/// Commits `new` in place of `current` unless the object changed meanwhile.
fn commit_update(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    current: &Arc<Value>,
    new: Value,
    dry_run: bool,
) -> Result<Attempt, ApiError> {
    if without_volatile_metadata(current) == without_volatile_metadata(&new) {
        // kube-apiserver skips writes that change nothing: no new resourceVersion, no event.
        return Ok(Attempt::Done(current.clone()));
    }
    if dry_run {
        return Ok(Attempt::Done(Arc::new(new)));
    }
    store.write(|txn| match txn.state.get(&rt.storage, key) {
        None => Err(ApiError::not_found(rt, &key.1)),
        Some(now) if !Arc::ptr_eq(now, current) => Ok(Attempt::Raced),
        Some(_) => {
            if should_vanish(&rt.storage, &new) {
                let mut last = new;
                if let Some(rv) = current.pointer("/metadata/resourceVersion").cloned() {
                    metadata_mut(&mut last).insert("resourceVersion".into(), rv);
                }
                txn.state
                    .collections
                    .get_mut(&rt.storage)
                    .map(|c| c.insert(key.clone(), Arc::new(last)));
                Ok(Attempt::Done(
                    txn.remove(&rt.storage, key)
                        .unwrap_or_else(|| current.clone()),
                ))
            } else {
                Ok(Attempt::Done(txn.put(&rt.storage, new)))
            }
        }
    })
}

fn current(store: &Store, rt: &ResourceType, key: &Key) -> Result<Arc<Value>, ApiError> {
    store
        .read()
        .get(&rt.storage, key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, &key.1))
}

/// Replaces an object (PUT), or its status (PUT .../status).
pub(crate) fn replace(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    mut body: Value,
    subresource: Option<&str>,
    opts: &mut WriteOptions,
) -> Result<Arc<Value>, ApiError> {
    default_type(rt, &mut body);
    check_type(rt, &body)?;
    let body_name = meta_str(&body, "name").unwrap_or_default();
    if body_name != key.1 {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            key.1
        )));
    }
    if let Some(ns) = meta_str(&body, "namespace")
        && !ns.is_empty()
        && ns != key.0
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let expected_rv = meta_str(&body, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(str::to_string);
    let stored_body = to_storage(rt, body);
    for _ in 0..MAX_RETRIES {
        let current = current(store, rt, key)?;
        match &expected_rv {
            Some(rv) if Some(rv.as_str()) != meta_str(&current, "resourceVersion") => {
                return Err(ApiError::conflict(rt, &key.1));
            }
            None if rt.custom => {
                return Err(ApiError::invalid(
                    rt,
                    &key.1,
                    vec![cause(
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update".into(),
                    )],
                ));
            }
            _ => {}
        }
        let new = prepare_update(
            store,
            rt,
            &current,
            stored_body.clone(),
            subresource,
            opts,
            true,
        )?;
        admit_update(store, rt, subresource, &new, &current, opts)?;
        match commit_update(store, rt, key, &current, new, opts.dry_run)? {
            Attempt::Done(object) => return Ok(object),
            Attempt::Raced if expected_rv.is_some() => return Err(ApiError::conflict(rt, &key.1)),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(rt, &key.1))
}

/// Parses a JSON body, or YAML for server-side apply.
pub(crate) fn parse_patch_body(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    if yaml {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    }
}

/// Patches an object (or its status). Returns the stored object and whether apply created it.
pub(crate) fn patch(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    patch_type: PatchType,
    body: &[u8],
    subresource: Option<&str>,
    opts: &mut WriteOptions,
) -> Result<(Arc<Value>, bool), ApiError> {
    let patch_body = parse_patch_body(body, matches!(patch_type, PatchType::Apply { .. }))?;
    if matches!(patch_type, PatchType::Apply { .. })
        && patch_body
            .pointer("/metadata/managedFields")
            .is_some_and(|fields| !fields.is_null())
    {
        // kube-apiserver's apply refuses a body that carries field ownership of its own.
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if patch_type == PatchType::Strategic && rt.custom {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
            false,
        ));
    }
    if matches!(
        patch_type,
        PatchType::Merge | PatchType::Strategic | PatchType::Apply { .. }
    ) && !patch_body.is_object()
    {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    for _ in 0..MAX_RETRIES {
        // Bound first: a guard living through the match would deadlock the create below.
        let existing = store.read().get(&rt.storage, key).cloned();
        let current = match existing {
            Some(current) => current,
            None => {
                let PatchType::Apply { force } = patch_type else {
                    return Err(ApiError::not_found(rt, &key.1));
                };
                if subresource.is_some() {
                    return Err(ApiError::not_found(rt, &key.1));
                }
                check_type(rt, &patch_body)?;
                let applied =
                    ext::server_side_apply(None, &patch_body, &opts.field_manager, force, None)
                        .map_err(|f| ApiError::from_patch(rt, &key.1, f))?;
                let namespace = rt.namespaced.then_some(key.0.as_str());
                let mut applied = applied;
                metadata_mut(&mut applied).insert("name".into(), Value::String(key.1.clone()));
                let managed = applied.pointer("/metadata/managedFields").cloned();
                let created = create_with_fields(store, rt, namespace, applied, managed, opts)?;
                return Ok((created, true));
            }
        };
        let served = present(rt, &current);
        let mut patched = served.clone();
        let mut record = true;
        match patch_type {
            PatchType::Merge => ext::merge_patch(&mut patched, &patch_body),
            PatchType::Json => ext::json_patch(&mut patched, &patch_body)
                .map_err(|f| ApiError::from_patch(rt, &key.1, f))?,
            PatchType::Strategic => {
                ext::strategic_merge_patch(&mut patched, &patch_body, &rt.api_version(), &rt.kind)
                    .map_err(|f| ApiError::from_patch(rt, &key.1, f))?
            }
            PatchType::Apply { force } => {
                check_type(rt, &patch_body)?;
                patched = ext::server_side_apply(
                    Some(&served),
                    &patch_body,
                    &opts.field_manager,
                    force,
                    subresource,
                )
                .map_err(|f| ApiError::from_patch(rt, &key.1, f))?;
                record = false;
            }
        }
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        let patched_rv = meta_str(&patched, "resourceVersion").map(str::to_string);
        let current_rv = meta_str(&current, "resourceVersion").map(str::to_string);
        let rv_pinned = patched_rv.is_some() && patched_rv != current_rv;
        if rv_pinned {
            return Err(ApiError::conflict(rt, &key.1));
        }
        if meta_str(&patched, "name").is_some_and(|n| n != key.1) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta_str(&patched, "name").unwrap_or_default(),
                key.1
            )));
        }
        let new = prepare_update(
            store,
            rt,
            &current,
            to_storage(rt, patched),
            subresource,
            opts,
            record,
        )?;
        admit_update(store, rt, subresource, &new, &current, opts)?;
        match commit_update(store, rt, key, &current, new, opts.dry_run)? {
            Attempt::Done(object) => return Ok((object, false)),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(rt, &key.1))
}

/// Creates an object from a server-side apply, keeping the managedFields apply computed.
fn create_with_fields(
    store: &Store,
    rt: &ResourceType,
    namespace: Option<&str>,
    body: Value,
    managed: Option<Value>,
    opts: &mut WriteOptions,
) -> Result<Arc<Value>, ApiError> {
    let mut create_opts = opts.clone();
    // The Update entry create would record is replaced by apply's own below.
    create_opts.field_manager = opts.field_manager.clone();
    let created = create(store, rt, namespace, body, &mut create_opts)?;
    opts.warnings = create_opts.warnings;
    let Some(managed) = managed else {
        return Ok(created);
    };
    if opts.dry_run {
        return Ok(created);
    }
    let key = object_key(&created);
    let mut with_fields = (*created).clone();
    metadata_mut(&mut with_fields).insert("managedFields".into(), managed);
    // Swapping managedFields in place keeps the creation a single ADDED event.
    store.write(|txn| {
        if let Some(collection) = txn.state.collections.get_mut(&rt.storage)
            && let Some(slot) = collection.get_mut(&key)
            && Arc::ptr_eq(slot, &created)
        {
            *slot = Arc::new(with_fields);
            return Ok(slot.clone());
        }
        Ok(created.clone())
    })
}

/// Deletes an object: at once, or by marking it when finalizers (or propagation) hold it.
pub(crate) fn delete(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    request: &DeleteRequest,
) -> Result<Deleted, ApiError> {
    delete_with_grace(store, rt, key, request, None)
}

/// The grace period kube-apiserver gives a pod being deleted, or `None` when it goes at once:
/// a pod no node runs (unbound, or already finished) has nothing to stop gracefully.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> Option<i64> {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|node| !node.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return None;
    }
    let grace = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    // A second delete may shorten the grace period of one in progress, never lengthen it.
    let grace = match pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        Some(pending) => grace.min(pending),
        None => grace,
    };
    (grace > 0).then_some(grace)
}

/// [`delete`] with the request's `gracePeriodSeconds`: pods bound to a node stay, marked, until
/// their kubelet has stopped them and deletes them with grace 0.
pub(crate) fn delete_with_grace(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    request: &DeleteRequest,
    grace_period: Option<i64>,
) -> Result<Deleted, ApiError> {
    for _ in 0..MAX_RETRIES {
        let current = current(store, rt, key)?;
        let pod_grace = if &*rt.storage == POD_STORAGE {
            pod_grace_period(&current, grace_period)
        } else {
            None
        };
        if let Some(uid) = &request.precondition_uid {
            let actual = meta_str(&current, "uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::conflict_with(
                    rt,
                    &key.1,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &request.precondition_rv {
            let actual = meta_str(&current, "resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::conflict_with(
                    rt,
                    &key.1,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        let mut new = (*current).clone();
        let mut list = finalizers(&new);
        let policy_finalizer = match request.propagation {
            Some(Propagation::Foreground) => Some(FOREGROUND_FINALIZER),
            Some(Propagation::Orphan) => Some(ORPHAN_FINALIZER),
            _ => None,
        };
        if let Some(finalizer) = policy_finalizer {
            list.retain(|f| f != FOREGROUND_FINALIZER && f != ORPHAN_FINALIZER);
            list.push(finalizer.to_string());
        }
        set_finalizers(&mut new, list);
        let is_namespace = &*rt.storage == NAMESPACE_STORAGE;
        if is_namespace {
            new["status"] = json!({"phase": "Terminating"});
        }
        let immediate = if is_namespace || pod_grace.is_some() {
            false
        } else {
            finalizers(&new).is_empty()
        };
        if request.dry_run {
            return Ok(if immediate {
                Deleted::Gone(current)
            } else {
                Deleted::Pending(Arc::new(new))
            });
        }
        if !is_deleting(&new) {
            let metadata = metadata_mut(&mut new);
            metadata.insert("deletionTimestamp".into(), Value::String(now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            if rt.has_generation {
                let generation = metadata
                    .get("generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    + 1;
                metadata.insert("generation".into(), json!(generation));
            }
        }
        if &*rt.storage == POD_STORAGE {
            // A pod's grace period is what its kubelet waits for; the final delete's grace 0
            // lets a pod held by finalizers go once they are removed.
            metadata_mut(&mut new).insert(
                "deletionGracePeriodSeconds".into(),
                json!(pod_grace.unwrap_or(0)),
            );
        }
        let outcome = store.write(|txn| match txn.state.get(&rt.storage, key) {
            None => Err(ApiError::not_found(rt, &key.1)),
            Some(now) if !Arc::ptr_eq(now, &current) => Ok(None),
            Some(_) if immediate => Ok(txn.remove(&rt.storage, key).map(Deleted::Gone)),
            Some(_) => {
                let unchanged =
                    without_volatile_metadata(&current) == without_volatile_metadata(&new);
                let object = if unchanged {
                    current.clone()
                } else {
                    txn.put(&rt.storage, new)
                };
                Ok(Some(Deleted::Pending(object)))
            }
        })?;
        if let Some(outcome) = outcome {
            // Namespaces and held owners are the collector's work; wake it either way.
            store.gc_wake.notify_one();
            return Ok(outcome);
        }
    }
    Err(ApiError::conflict(rt, &key.1))
}

/// Replaces an object through a storage-level edit (used by the garbage collector), removing
/// it when the edit leaves a deleting object without finalizers.
pub(crate) fn edit(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    mut f: impl FnMut(&mut Value),
) -> Result<(), ApiError> {
    for _ in 0..MAX_RETRIES {
        let current = current(store, rt, key)?;
        let mut new = (*current).clone();
        f(&mut new);
        match commit_update(store, rt, key, &current, new, false)? {
            Attempt::Done(_) => return Ok(()),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(rt, &key.1))
}
