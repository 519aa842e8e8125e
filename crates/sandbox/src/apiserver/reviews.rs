//! The review APIs: questions to the authenticator and the authorizer, answered without storing
//! anything, as kube-apiserver answers them.
//!
//! - `SelfSubjectAccessReview` (`kubectl auth can-i`), `SubjectAccessReview` and
//!   `LocalSubjectAccessReview` (authorization.k8s.io/v1): may this user do this?
//! - `SelfSubjectRulesReview` (`kubectl auth can-i --list`): what may I do in this namespace?
//! - `SelfSubjectReview` (`kubectl auth whoami`, authentication.k8s.io/v1): who am I?
//! - `TokenReview` (authentication.k8s.io/v1): whom does this token authenticate?
//!
//! Every one is a `create` of its kind, authorized as any other request: the `system:basic-user`
//! ClusterRole lets every authenticated user ask about itself, while asking about others
//! (`subjectaccessreviews`, `tokenreviews`) needs a grant of its own.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::auth::{Authenticator, User};
use super::error::ApiError;
use super::ext::Cause;
use super::rbac::{self, Attributes};
use super::resources::ResourceType;
use super::store::State;

/// The kinds answered here: created, never stored.
pub(crate) const REVIEW_KINDS: &[&str] = &[
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectReview",
    "TokenReview",
];

/// Answers the creation of a review of kind `rt.kind` by `user`: the request, with its status.
pub(crate) fn answer(
    state: &State,
    authenticator: &Authenticator,
    user: &User,
    rt: &ResourceType,
    namespace: Option<&str>,
    request: Value,
) -> Result<Value, ApiError> {
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match rt.kind.as_str() {
        "SelfSubjectAccessReview" => access(state, user, &spec, rt)?,
        "LocalSubjectAccessReview" => {
            let namespace = namespace.unwrap_or_default();
            let asked = spec
                .pointer("/resourceAttributes/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if asked != namespace {
                return Err(invalid(
                    rt,
                    "spec.resourceAttributes.namespace",
                    format!("Invalid value: \"{asked}\": must match metadata.namespace"),
                ));
            }
            access(state, &subject(&spec, rt)?, &spec, rt)?
        }
        "SubjectAccessReview" => access(state, &subject(&spec, rt)?, &spec, rt)?,
        "SelfSubjectRulesReview" => {
            let namespace = spec
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            rules(state, user, namespace)
        }
        "SelfSubjectReview" => json!({"userInfo": user_info(user)}),
        "TokenReview" => token(state, authenticator, &spec)?,
        _ => return Err(ApiError::method_not_allowed("POST")),
    };
    // kube-apiserver's TokenReview answers with the review as sent, spec.token included: the
    // asker already holds the token, and nothing of the review is stored.
    let mut metadata = request
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["creationTimestamp"] = Value::Null;
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    Ok(json!({
        "kind": rt.kind,
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }))
}

fn invalid(rt: &ResourceType, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        rt,
        "",
        vec![Cause {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message,
        }],
    )
}

/// The user a SubjectAccessReview asks about.
fn subject(spec: &Value, rt: &ResourceType) -> Result<User, ApiError> {
    let text = |field: &str| {
        spec.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let groups: Vec<String> = strings(spec.get("groups"));
    let name = text("user");
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            rt,
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified".to_string(),
        ));
    }
    let extra: BTreeMap<String, Vec<String>> = spec
        .get("extra")
        .and_then(Value::as_object)
        .map(|extra| {
            extra
                .iter()
                .map(|(key, values)| (key.clone(), strings(Some(values))))
                .collect()
        })
        .unwrap_or_default();
    Ok(User {
        name,
        uid: text("uid"),
        groups,
        extra,
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The status of an access review: whether `user` may do what the spec's resource or
/// non-resource attributes describe.
fn access(state: &State, user: &User, spec: &Value, rt: &ResourceType) -> Result<Value, ApiError> {
    let resource = spec.get("resourceAttributes").filter(|a| a.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|a| a.is_object());
    let allowed = match (resource, non_resource) {
        (Some(attributes), None) => {
            let text = |field: &str| {
                attributes
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let subresource = Some(text("subresource")).filter(|s| !s.is_empty());
            let attributes = Attributes {
                verb: text("verb"),
                group: text("group"),
                resource: text("resource"),
                subresource,
                name: text("name"),
                namespace: text("namespace"),
            };
            rbac::authorize(state, user, &attributes).is_ok()
        }
        (None, Some(attributes)) => {
            let text = |field: &str| {
                attributes
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            rbac::allows_non_resource(state, user, text("verb"), text("path"))
        }
        (given, _) => {
            let shown = if given.is_some() { "{...}" } else { "null" };
            return Err(invalid(
                rt,
                "spec.resourceAttributes",
                format!(
                    "Invalid value: \"{shown}\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
                ),
            ));
        }
    };
    Ok(json!({"allowed": allowed}))
}

/// The status of a SelfSubjectRulesReview: every rule `user` holds in `namespace` (and
/// cluster-wide), resource and non-resource rules apart.
fn rules(state: &State, user: &User, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rbac::rules_of(state, user, namespace) {
        let list = |field: &str| json!(strings(rule.get(field)));
        if rule.get("nonResourceURLs").is_some() {
            non_resource_rules.push(json!({
                "verbs": list("verbs"),
                "nonResourceURLs": list("nonResourceURLs"),
            }));
        } else {
            let mut entry = json!({
                "verbs": list("verbs"),
                "apiGroups": list("apiGroups"),
                "resources": list("resources"),
            });
            if rule.get("resourceNames").is_some() {
                entry["resourceNames"] = list("resourceNames");
            }
            resource_rules.push(entry);
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}

/// A user as `authentication.k8s.io/v1` `UserInfo` shows it.
fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// The status of a TokenReview.
fn token(state: &State, authenticator: &Authenticator, spec: &Value) -> Result<Value, ApiError> {
    let token = spec
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences = strings(spec.get("audiences"));
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    Ok(match authenticator.review_token(state, token, &audiences) {
        Some((user, audiences)) => json!({
            "authenticated": true,
            "user": user_info(&user),
            "audiences": audiences,
        }),
        None => json!({
            "authenticated": false,
            "user": {},
            "error": "[invalid bearer token, token lookup failed]",
        }),
    })
}
