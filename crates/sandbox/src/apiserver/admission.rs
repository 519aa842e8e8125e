//! Validating admission policies (admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
//! and ValidatingAdmissionPolicyBinding), evaluated on every write as kube-apiserver's
//! ValidatingAdmissionPolicy plugin does: after the object's own validation, before it is
//! stored.
//!
//! A policy matches a request by its `matchConstraints` (resource rules, exclusions,
//! namespace and object selectors) and its `matchConditions`; each of its bindings narrows
//! that with `matchResources`, supplies `params` (`paramRef`), and says what a failed
//! validation does: `Deny` refuses the request, `Warn` returns a Warning header, `Audit`
//! records it for the audit log (which the sandbox does not keep). The CEL expressions see
//! `object`, `oldObject`, `request`, `params` and `namespaceObject`; `variables` and
//! `authorizer` are not supported, and a policy using them fails as its failurePolicy says.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as CelValue};
use serde_json::{Value, json};

use super::auth::User;
use super::error::ApiError;
use super::ext::{Cause, LabelSelector};
use super::resources::{NAMESPACE_STORAGE, ResourceType, storage_key};
use super::store::State;
use super::watch::labels_of;

/// The group of the admission policy kinds.
pub(crate) const GROUP: &str = "admissionregistration.k8s.io";

fn policies_storage() -> Arc<str> {
    storage_key(GROUP, "validatingadmissionpolicies")
}

fn bindings_storage() -> Arc<str> {
    storage_key(GROUP, "validatingadmissionpolicybindings")
}

/// One request, as admission sees it.
pub(crate) struct Attributes<'a> {
    pub rt: &'a ResourceType,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub subresource: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The object as it would be stored; none for a DELETE.
    pub object: Option<&'a Value>,
    /// The object as it is stored; none for a CREATE.
    pub old_object: Option<&'a Value>,
    pub user: &'a User,
    pub dry_run: bool,
}

/// Runs every matching policy binding over the request. Returns the warnings of `Warn`
/// bindings, or the refusal of the first `Deny` binding whose validation failed.
pub(crate) fn admit(state: &State, attributes: &Attributes<'_>) -> Result<Vec<String>, ApiError> {
    let policies: Vec<Arc<Value>> = state
        .objects(&policies_storage(), None)
        .map(|(_, policy)| policy.clone())
        .collect();
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let bindings: Vec<Arc<Value>> = state
        .objects(&bindings_storage(), None)
        .map(|(_, binding)| binding.clone())
        .collect();
    let namespace_object = (!attributes.namespace.is_empty() && attributes.rt.kind != "Namespace")
        .then(|| {
            state.get(
                NAMESPACE_STORAGE,
                &(String::new(), attributes.namespace.to_string()),
            )
        })
        .flatten();
    let mut warnings = Vec::new();
    let mut denied: Option<Denial> = None;
    for policy in &policies {
        let policy_name = name_of(policy);
        let spec = &policy["spec"];
        if !matches_resources(state, &spec["matchConstraints"], attributes) {
            continue;
        }
        let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
        for binding in bindings
            .iter()
            .filter(|b| b.pointer("/spec/policyName").and_then(Value::as_str) == Some(policy_name))
        {
            let binding_spec = &binding["spec"];
            if binding_spec
                .get("matchResources")
                .is_some_and(|m| !m.is_null())
                && !matches_resources(state, &binding_spec["matchResources"], attributes)
            {
                continue;
            }
            let outcome = evaluate(state, spec, binding_spec, attributes, namespace_object);
            let failures = match outcome {
                Ok(failures) => failures,
                Err(_) if !fail_closed => continue,
                Err(message) => vec![Failure {
                    message,
                    reason: None,
                }],
            };
            let actions: Vec<&str> = binding_spec["validationActions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for failure in failures {
                for action in &actions {
                    match *action {
                        "Deny" if denied.is_none() => {
                            denied = Some(Denial {
                                policy: policy_name.to_string(),
                                binding: name_of(binding).to_string(),
                                failure: failure.clone(),
                            })
                        }
                        "Warn" => warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{}': {}",
                            name_of(binding),
                            failure.message
                        )),
                        // Audit annotations go to the audit log, which the sandbox does not keep.
                        _ => {}
                    }
                }
            }
        }
    }
    match denied {
        Some(denial) => Err(denial.into_error(attributes)),
        None => Ok(warnings),
    }
}

/// A validation that failed: its message and the Status reason it asks for.
#[derive(Clone)]
struct Failure {
    message: String,
    reason: Option<String>,
}

struct Denial {
    policy: String,
    binding: String,
    failure: Failure,
}

impl Denial {
    /// kube-apiserver's refusal: a Forbidden on the object, with the validation's reason (and
    /// its code: Invalid 422 by default) and the message as a cause.
    fn into_error(self, attributes: &Attributes<'_>) -> ApiError {
        let message = format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
            self.policy, self.binding, self.failure.message
        );
        let mut error = ApiError::forbidden(attributes.rt, attributes.name, &message);
        let (code, reason) = match self.failure.reason.as_deref() {
            Some("Unauthorized") => (401, "Unauthorized"),
            Some("Forbidden") => (403, "Forbidden"),
            Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
            _ => (422, "Invalid"),
        };
        error.code = code;
        error.reason = reason;
        if let Some(details) = error.details.as_mut() {
            details["causes"] = json!([{"message": message}]);
        }
        error
    }
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether a `metav1.LabelSelector` selects these labels (an absent or empty one selects all).
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let Ok(typed) = serde_json::from_value::<TypedSelector>(selector.clone()) else {
        return false;
    };
    let query = crate::controllers::selector_query(&typed);
    LabelSelector::parse(&query).is_ok_and(|parsed| parsed.matches(labels))
}

/// Whether one of `rules` (RuleWithOperations plus scope and resourceNames) matches.
fn rule_matches(rules: &Value, attributes: &Attributes<'_>) -> bool {
    let rt = attributes.rt;
    let resource = match attributes.subresource {
        Some(sub) => format!("{}/{sub}", rt.plural),
        None => rt.plural.clone(),
    };
    rules.as_array().into_iter().flatten().any(|rule| {
        let listed = |field: &str, value: &str| {
            strings(&rule[field])
                .iter()
                .any(|entry| *entry == "*" || *entry == value)
        };
        let resource_listed = strings(&rule["resources"]).iter().any(|entry| {
            let (entry_resource, entry_sub) = entry.split_once('/').unwrap_or((entry, ""));
            match (attributes.subresource, entry_sub) {
                (None, "") => entry_resource == "*" || entry_resource == rt.plural,
                (Some(sub), entry_sub) if !entry_sub.is_empty() => {
                    (entry_resource == "*" || entry_resource == rt.plural)
                        && (entry_sub == "*" || entry_sub == sub)
                }
                _ => *entry == resource,
            }
        });
        let scope = match rule["scope"].as_str().unwrap_or("*") {
            "Cluster" => !rt.namespaced,
            "Namespaced" => rt.namespaced,
            _ => true,
        };
        let names = strings(&rule["resourceNames"]);
        listed("operations", attributes.operation)
            && listed("apiGroups", &rt.group)
            && listed("apiVersions", &rt.version)
            && resource_listed
            && scope
            && (names.is_empty() || names.contains(&attributes.name))
    })
}

/// Whether `matchConstraints` (or a binding's `matchResources`) take this request.
fn matches_resources(state: &State, constraints: &Value, attributes: &Attributes<'_>) -> bool {
    // No resource rules (a binding's matchResources may leave them out) match everything
    // the policy matched.
    let rules = &constraints["resourceRules"];
    let unrestricted = rules.as_array().is_none_or(Vec::is_empty);
    if !(unrestricted || rule_matches(rules, attributes))
        || rule_matches(&constraints["excludeResourceRules"], attributes)
    {
        return false;
    }
    // The namespace selector judges the namespace of a namespaced object (a Namespace itself
    // by its own labels); cluster-scoped objects always pass it.
    let namespace_labels = if attributes.rt.kind == "Namespace" && attributes.rt.group.is_empty() {
        attributes.object.or(attributes.old_object).map(labels_of)
    } else if attributes.rt.namespaced {
        Some(
            state
                .get(
                    NAMESPACE_STORAGE,
                    &(String::new(), attributes.namespace.to_string()),
                )
                .map(|namespace| labels_of(namespace))
                .unwrap_or_default(),
        )
    } else {
        None
    };
    if let Some(labels) = namespace_labels
        && !selects(&constraints["namespaceSelector"], &labels)
    {
        return false;
    }
    // The object selector passes when the new or the old object matches.
    [attributes.object, attributes.old_object]
        .into_iter()
        .flatten()
        .any(|object| selects(&constraints["objectSelector"], &labels_of(object)))
}

/// The `request` variable: the parts of the AdmissionRequest CEL sees.
fn request(attributes: &Attributes<'_>) -> Value {
    let rt = attributes.rt;
    let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    json!({
        "operation": attributes.operation,
        "name": attributes.name,
        "namespace": attributes.namespace,
        "subResource": attributes.subresource.unwrap_or_default(),
        "dryRun": attributes.dry_run,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "userInfo": {"username": attributes.user.name, "uid": "", "groups": attributes.user.groups},
    })
}

/// What one boolean expression came to.
enum Outcome {
    True,
    False,
    /// It did not compile, did not evaluate, or is not a boolean: kube-apiserver's message.
    Error(String),
}

fn run(expression: &str, context: &Context<'_>) -> Outcome {
    let result = Program::compile(expression)
        .map_err(|error| format!("compilation failed: {error}"))
        .and_then(|program| program.execute(context).map_err(|error| error.to_string()));
    match result {
        Ok(CelValue::Bool(true)) => Outcome::True,
        Ok(CelValue::Bool(false)) => Outcome::False,
        Ok(other) => Outcome::Error(format!(
            "expression '{expression}' resulted in error: expected a boolean, got {other:?}"
        )),
        Err(error) => Outcome::Error(format!(
            "expression '{expression}' resulted in error: {error}"
        )),
    }
}

/// A validation's message: its `messageExpression` when that yields one line of text, else
/// its `message`, else kube-apiserver's `failed expression: <expression>`.
fn message(validation: &Value, expression: &str, context: &Context<'_>) -> String {
    let evaluated = validation["messageExpression"]
        .as_str()
        .and_then(|source| Program::compile(source).ok()?.execute(context).ok())
        .and_then(|value| match value {
            CelValue::String(text) => Some(text.trim().to_string()),
            _ => None,
        })
        .filter(|text| !text.is_empty() && !text.contains('\n'));
    evaluated
        .or_else(|| {
            validation["message"]
                .as_str()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("failed expression: {expression}"))
}

/// The params a binding names: none when the policy takes none (`[None]`), else each object
/// its `paramRef` selects. An error is a misconfiguration (or a missing param with
/// `parameterNotFoundAction: Deny`) that fails the binding.
fn params(
    state: &State,
    spec: &Value,
    binding_spec: &Value,
    namespace: &str,
) -> Result<Vec<Option<Value>>, String> {
    let param_kind = &spec["paramKind"];
    if param_kind.is_null() {
        return Ok(vec![None]);
    }
    let param_ref = &binding_spec["paramRef"];
    if param_ref.is_null() {
        return Err(
            "failed to configure binding: paramRef is required for a policy with paramKind".into(),
        );
    }
    let api_version = param_kind["apiVersion"].as_str().unwrap_or_default();
    let kind = param_kind["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let Some(rt) = state
        .registry
        .in_group_version(group, version)
        .into_iter()
        .find(|rt| rt.kind == kind)
    else {
        return Err(format!(
            "failed to configure policy: failed to find resource referenced by paramKind: '{api_version}, Kind={kind}'"
        ));
    };
    let param_namespace = match param_ref["namespace"].as_str().filter(|n| !n.is_empty()) {
        Some(namespace) => namespace.to_string(),
        None if rt.namespaced => namespace.to_string(),
        None => String::new(),
    };
    if rt.namespaced && param_namespace.is_empty() {
        return Err("failed to configure binding: cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into());
    }
    let found: Vec<Option<Value>> = match param_ref["name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => state
            .get(&rt.storage, &(param_namespace.clone(), name.to_string()))
            .map(|param| Some((**param).clone()))
            .into_iter()
            .collect(),
        None => state
            .objects(
                &rt.storage,
                rt.namespaced.then_some(param_namespace.as_str()),
            )
            .filter(|(_, param)| selects(&param_ref["selector"], &labels_of(param)))
            .map(|(_, param)| Some((**param).clone()))
            .collect(),
    };
    if found.is_empty() {
        return match param_ref["parameterNotFoundAction"].as_str() {
            Some("Allow") => Ok(Vec::new()),
            _ => Err("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into()),
        };
    }
    Ok(found)
}

/// Evaluates a policy's validations under one binding. Returns the failed validations, or
/// the message of an error (a misconfiguration, an expression that does not evaluate) that
/// the policy's failurePolicy decides about.
fn evaluate(
    state: &State,
    spec: &Value,
    binding_spec: &Value,
    attributes: &Attributes<'_>,
    namespace_object: Option<&Arc<Value>>,
) -> Result<Vec<Failure>, String> {
    let mut failures = Vec::new();
    for param in params(state, spec, binding_spec, attributes.namespace)? {
        let mut context = Context::default().with_all();
        let variables = [
            ("object", attributes.object.cloned().unwrap_or(Value::Null)),
            (
                "oldObject",
                attributes.old_object.cloned().unwrap_or(Value::Null),
            ),
            ("request", request(attributes)),
            ("params", param.unwrap_or(Value::Null)),
            (
                "namespaceObject",
                namespace_object
                    .map(|n| (**n).clone())
                    .unwrap_or(Value::Null),
            ),
        ];
        for (name, value) in variables {
            context
                .add_variable(name, value)
                .map_err(|error| format!("cannot bind {name}: {error}"))?;
        }
        // matchConditions: the policy applies only when every one holds.
        let mut applies = true;
        for condition in spec["matchConditions"].as_array().into_iter().flatten() {
            match run(
                condition["expression"].as_str().unwrap_or_default(),
                &context,
            ) {
                Outcome::True => {}
                Outcome::False => applies = false,
                Outcome::Error(error) => return Err(error),
            }
        }
        if !applies {
            continue;
        }
        for validation in spec["validations"].as_array().into_iter().flatten() {
            let expression = validation["expression"].as_str().unwrap_or_default().trim();
            match run(expression, &context) {
                Outcome::True => {}
                Outcome::False => failures.push(Failure {
                    message: message(validation, expression, &context),
                    reason: validation["reason"].as_str().map(str::to_string),
                }),
                Outcome::Error(error) => return Err(error),
            }
        }
    }
    Ok(failures)
}

/// The checks kube-apiserver makes of a policy or binding itself: required fields and
/// expressions that compile, with its 422 causes.
pub(crate) fn validate_configuration(rt: &ResourceType, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let required = |field: &str| Cause {
        field: field.to_string(),
        reason: "FieldValueRequired",
        message: "Required value".into(),
    };
    match rt.kind.as_str() {
        "ValidatingAdmissionPolicy" => {
            let spec = &object["spec"];
            if spec
                .pointer("/matchConstraints/resourceRules")
                .is_none_or(Value::is_null)
            {
                causes.push(required("spec.matchConstraints.resourceRules"));
            }
            let validations = spec["validations"].as_array().map(Vec::len).unwrap_or(0);
            let audits = spec["auditAnnotations"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            if validations == 0 && audits == 0 {
                causes.push(Cause {
                    field: "spec.validations".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: validations or auditAnnotations must contain at least one item".into(),
                });
            }
            let lists = [
                ("validations", "expression"),
                ("validations", "messageExpression"),
                ("matchConditions", "expression"),
            ];
            for (list, field) in lists {
                for (index, item) in spec[list].as_array().into_iter().flatten().enumerate() {
                    let Some(expression) = item[field].as_str() else {
                        continue;
                    };
                    if let Err(error) = Program::compile(expression) {
                        causes.push(Cause {
                            field: format!("spec.{list}[{index}].{field}"),
                            reason: "FieldValueInvalid",
                            message: format!(
                                "Invalid value: {}: compilation failed: {error}",
                                json!(expression)
                            ),
                        });
                    }
                }
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            let spec = &object["spec"];
            if spec["policyName"].as_str().is_none_or(str::is_empty) {
                causes.push(required("spec.policyName"));
            }
            let actions = strings(&spec["validationActions"]);
            if actions.is_empty() {
                causes.push(required("spec.validationActions"));
            }
            for (index, action) in actions.iter().enumerate() {
                if !matches!(*action, "Deny" | "Warn" | "Audit") {
                    causes.push(Cause {
                        field: format!("spec.validationActions[{index}]"),
                        reason: "FieldValueNotSupported",
                        message: format!(
                            "Unsupported value: {}: supported values: \"Audit\", \"Deny\", \"Warn\"",
                            json!(action)
                        ),
                    });
                }
            }
        }
        _ => {}
    }
    causes
}

/// Whether `rt` is one of the admission policy kinds.
pub(crate) fn is_policy_kind(rt: &ResourceType) -> bool {
    rt.group == GROUP
}
