//! Authorization: kube-apiserver's RBAC authorizer over the stored Roles, ClusterRoles,
//! RoleBindings and ClusterRoleBindings.
//!
//! A request is allowed when any rule of any role bound to the user (by name, by group or as a
//! ServiceAccount) covers it: ClusterRoleBindings everywhere, RoleBindings in their own
//! namespace only. `system:masters` is never restricted. Discovery, OpenAPI, version and health
//! paths are not checked here: every authenticated user may read them, as the default
//! `system:discovery`, `system:basic-user` and `system:public-info-viewer` bindings allow.

use std::sync::Arc;

use serde_json::{Value, json};

use super::auth::User;
use super::error::ApiError;
use super::ops;
use super::resources::storage_key;
use super::store::{State, Txn};

const GROUP: &str = "rbac.authorization.k8s.io";

/// What a resource request wants to do, in the authorizer's terms.
#[derive(Debug)]
pub(crate) struct Attributes<'a> {
    pub verb: &'static str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    /// Empty for collection requests.
    pub name: &'a str,
    /// Empty at the cluster scope.
    pub namespace: &'a str,
}

/// The verb kube-apiserver's request-info resolver assigns to a method on a collection
/// (`named == false`) or on one object.
pub(crate) fn verb(method: &http::Method, named: bool, watch: bool) -> Option<&'static str> {
    use http::Method;
    Some(match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    })
}

/// Allows the request, or refuses it with kube-apiserver's 403 Status.
pub(crate) fn authorize(
    state: &State,
    user: &User,
    attributes: &Attributes<'_>,
) -> Result<(), ApiError> {
    if user.is_master()
        || rules_of(state, user, attributes.namespace).any(|r| covers(r, attributes))
    {
        return Ok(());
    }
    Err(forbidden(user, attributes))
}

/// Every rule granted to `user` in `namespace` (or at the cluster scope when it is empty).
fn rules_of<'a>(
    state: &'a State,
    user: &'a User,
    namespace: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    let cluster_roles = storage_key(GROUP, "clusterroles");
    let roles = storage_key(GROUP, "roles");
    let cluster_wide = state
        .objects(&storage_key(GROUP, "clusterrolebindings"), None)
        .map(|(_, binding)| binding);
    let namespaced = (!namespace.is_empty())
        .then(|| state.objects(&storage_key(GROUP, "rolebindings"), Some(namespace)))
        .into_iter()
        .flatten()
        .map(|(_, binding)| binding);
    cluster_wide
        .chain(namespaced)
        .filter(move |binding| binds(binding, user))
        .filter_map(move |binding| {
            let role_ref = binding.get("roleRef")?;
            let name = role_ref.get("name")?.as_str()?.to_string();
            let binding_namespace = ops::meta_str(binding, "namespace").unwrap_or_default();
            match role_ref.get("kind")?.as_str()? {
                "ClusterRole" => state.get(&cluster_roles, &(String::new(), name)),
                // A RoleBinding may only refer to a Role of its own namespace.
                "Role" if !binding_namespace.is_empty() => {
                    state.get(&roles, &(binding_namespace.to_string(), name))
                }
                _ => None,
            }
        })
        .flat_map(|role| {
            role.get("rules")
                .and_then(Value::as_array)
                .map(|rules| rules.iter())
                .into_iter()
                .flatten()
        })
}

/// Whether one of the binding's subjects is the user.
fn binds(binding: &Value, user: &User) -> bool {
    let binding_namespace = ops::meta_str(binding, "namespace").unwrap_or_default();
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|subject| {
        let text = |field: &str| subject.get(field).and_then(Value::as_str).unwrap_or("");
        match text("kind") {
            "User" => text("name") == user.name,
            "Group" => user.groups.iter().any(|g| g == text("name")),
            "ServiceAccount" => {
                // A subject without a namespace means the binding's own, as the RBAC
                // authorizer reads it.
                let namespace = match text("namespace") {
                    "" => binding_namespace,
                    namespace => namespace,
                };
                user.service_account_name() == Some((namespace, text("name")))
            }
            _ => false,
        }
    })
}

fn strings<'a>(rule: &'a Value, field: &str) -> impl Iterator<Item = &'a str> + 'a {
    rule.get(field)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str))
        .into_iter()
        .flatten()
}

/// Whether a PolicyRule covers the request: verb, API group, resource (with kube's
/// `resource/subresource`, `*/subresource` and `resource/*` forms) and resource names.
fn covers(rule: &Value, attributes: &Attributes<'_>) -> bool {
    let verb = strings(rule, "verbs").any(|v| v == "*" || v == attributes.verb);
    let group = strings(rule, "apiGroups").any(|g| g == "*" || g == attributes.group);
    let combined = match attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.to_string(),
    };
    let resource = strings(rule, "resources").any(|r| {
        r == "*"
            || r == combined
            || attributes.subresource.is_some_and(|sub| {
                r.strip_prefix("*/") == Some(sub)
                    || r.strip_suffix("/*") == Some(attributes.resource)
            })
    });
    let mut names = strings(rule, "resourceNames").peekable();
    let name = names.peek().is_none() || names.any(|n| n == attributes.name);
    verb && group && resource && name
}

/// kube-apiserver's Forbidden Status, worded as `responsewriters.Forbidden` words it.
fn forbidden(user: &User, attributes: &Attributes<'_>) -> ApiError {
    let resource = match attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.to_string(),
    };
    let scope = if attributes.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", attributes.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, attributes.verb, attributes.group
    );
    let qualified = if attributes.group.is_empty() {
        attributes.resource.to_string()
    } else {
        format!("{}.{}", attributes.resource, attributes.group)
    };
    let message = if attributes.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", attributes.name)
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(json!({
            "name": attributes.name,
            "group": attributes.group,
            "kind": attributes.resource,
        })),
    }
}

/// The `cluster-admin` ClusterRole and its binding to `system:masters`, which every cluster
/// is bootstrapped with and which platform engineers bind to.
pub(crate) fn seed(txn: &mut Txn<'_>) {
    let cluster_roles: Arc<str> = storage_key(GROUP, "clusterroles");
    let bindings: Arc<str> = storage_key(GROUP, "clusterrolebindings");
    let metadata = |name: &str| {
        json!({
            "name": name,
            "uid": super::auth::uuid_like(),
            "creationTimestamp": ops::now(),
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        })
    };
    txn.put(
        &cluster_roles,
        json!({
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": metadata("cluster-admin"),
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        }),
    );
    txn.put(
        &bindings,
        json!({
            "kind": "ClusterRoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": metadata("cluster-admin"),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": "system:masters"}],
        }),
    );
}
