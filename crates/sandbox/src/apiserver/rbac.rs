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
use super::resources::{ResourceType, storage_key};
use super::store::{State, Txn};

const GROUP: &str = "rbac.authorization.k8s.io";

/// What a resource request wants to do, in the authorizer's terms.
#[derive(Debug)]
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    /// Empty for collection requests.
    pub name: &'a str,
    /// Empty at the cluster scope.
    pub namespace: &'a str,
}

/// A resource request as routed, before its body is read.
pub(crate) struct Request<'a> {
    pub method: &'a http::Method,
    pub rt: &'a ResourceType,
    /// Empty at the cluster scope.
    pub namespace: &'a str,
    /// Empty for collection requests.
    pub name: &'a str,
    pub subresource: Option<&'a str>,
    /// `watch=true` on a GET.
    pub watch: bool,
    /// A server-side apply patch.
    pub apply_patch: bool,
}

/// Allows the request, or refuses it with kube-apiserver's 403 Status. An apply patch that
/// would create the object needs `create` as well, as in kube-apiserver.
pub(crate) fn authorize_request(
    state: &State,
    user: &User,
    request: &Request<'_>,
) -> Result<(), ApiError> {
    // exec, attach and portforward run something in the pod whatever the method: kube-apiserver
    // authorizes their SPDY POST as `create`, and since 1.35 (AuthorizePodWebsocketUpgrade-
    // CreatePermission) their WebSocket GET needs `create` too, so `get` alone never execs.
    let connect = super::streams::is_streaming(request.rt, request.subresource);
    let verb = if connect {
        Some("create")
    } else {
        verb(request.method, !request.name.is_empty(), request.watch)
    };
    let Some(verb) = verb else {
        // Methods no route serves are refused later, whoever asks.
        return Ok(());
    };
    let rt = request.rt;
    // A namespace's own name is its namespace, so that a RoleBinding in it can grant access.
    let namespace = if rt.group.is_empty() && rt.plural == "namespaces" {
        request.name
    } else {
        request.namespace
    };
    let mut attributes = Attributes {
        verb,
        group: &rt.group,
        resource: &rt.plural,
        subresource: request.subresource,
        name: request.name,
        namespace,
    };
    authorize(state, user, &attributes)?;
    if verb == "patch" && request.apply_patch {
        let key = (request.namespace.to_string(), request.name.to_string());
        if state.get(&rt.storage, &key).is_none() {
            attributes.verb = "create";
            authorize(state, user, &attributes)?;
        }
    }
    Ok(())
}

/// The verb kube-apiserver's request-info resolver assigns to a method on a collection
/// (`named == false`) or on one object.
fn verb(method: &http::Method, named: bool, watch: bool) -> Option<&'static str> {
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

/// Allows the attributes, or refuses them with kube-apiserver's 403 Status.
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

/// Whether `user` may use `verb` on the non-resource URL `path`: a ClusterRole's
/// `nonResourceURLs` holds the path itself, `*`, or a prefix of it ending in `*`.
pub(crate) fn allows_non_resource(state: &State, user: &User, verb: &str, path: &str) -> bool {
    user.is_master()
        || rules_of(state, user, "").any(|rule| {
            strings(rule, "verbs").any(|v| v == "*" || v == verb)
                && strings(rule, "nonResourceURLs").any(|url| {
                    url == path || url.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                })
        })
}

/// Every rule granted to `user` in `namespace` (or at the cluster scope when it is empty).
pub(crate) fn rules_of<'a>(
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

/// The bootstrap ClusterRoles every cluster starts with, and their bindings: `cluster-admin` for
/// `system:masters`, and what kube-apiserver grants every user (`system:basic-user` to ask who it
/// is and what it may do, `system:discovery` and `system:public-info-viewer` to read discovery,
/// version and health). As kube-apiserver reconciles them at each start, any that is missing is
/// put back; one that exists is left as it is.
pub(crate) fn seed(txn: &mut Txn<'_>) {
    let authenticated = [super::auth::AUTHENTICATED];
    let everyone = [super::auth::AUTHENTICATED, super::auth::UNAUTHENTICATED];
    let get_urls = |urls: &[&str]| json!([{"nonResourceURLs": urls, "verbs": ["get"]}]);
    let bootstrap: [(&str, Value, &[&str]); 4] = [
        (
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
            &["system:masters"],
        ),
        (
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
            &authenticated,
        ),
        (
            "system:discovery",
            get_urls(&[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ]),
            &authenticated,
        ),
        (
            "system:public-info-viewer",
            get_urls(&["/healthz", "/livez", "/readyz", "/version", "/version/"]),
            &everyone,
        ),
    ];
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
    for (name, rules, groups) in bootstrap {
        let key = (String::new(), name.to_string());
        if txn.state.get(&cluster_roles, &key).is_none() {
            txn.put(
                &cluster_roles,
                json!({
                    "kind": "ClusterRole",
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": metadata(name),
                    "rules": rules,
                }),
            );
        }
        if txn.state.get(&bindings, &key).is_none() {
            let subjects: Vec<Value> = groups
                .iter()
                .map(|group| json!({"apiGroup": GROUP, "kind": "Group", "name": group}))
                .collect();
            txn.put(
                &bindings,
                json!({
                    "kind": "ClusterRoleBinding",
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": metadata(name),
                    "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
                    "subjects": subjects,
                }),
            );
        }
    }
}

/// Whether the request writes a role or a binding whose content must be checked by
/// [`check_escalation`].
pub(crate) fn may_escalate(user: &User, request: &Request<'_>) -> bool {
    let writes_object = matches!(*request.method, http::Method::POST | http::Method::PUT)
        || (*request.method == http::Method::PATCH && request.apply_patch);
    writes_object && !user.is_master() && request.rt.group == GROUP && request.subresource.is_none()
}

/// kube-apiserver's escalation prevention, checked on the object a request writes: a Role or
/// ClusterRole may only grant what its writer already holds (in the Role's namespace, or
/// cluster-wide), and a binding may only be made by a user who holds what the role grants or
/// the `bind` verb on it. Merge and JSON patches are not checked: the object they produce is
/// only known once applied.
pub(crate) fn check_escalation(
    state: &State,
    user: &User,
    request: &Request<'_>,
    object: &Value,
) -> Result<(), ApiError> {
    let rt = request.rt;
    let name = match request.name {
        "" => ops::meta_str(object, "name").unwrap_or_default(),
        name => name,
    };
    let rules_to_grant = |role: &Value| -> Vec<Value> {
        role.get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let not_held = match rt.plural.as_str() {
        "roles" | "clusterroles" => {
            ungranted(state, user, request.namespace, &rules_to_grant(object))
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = object.get("roleRef").unwrap_or(&Value::Null);
            let text = |field: &str| role_ref.get(field).and_then(Value::as_str).unwrap_or("");
            let (plural, key) = match text("kind") {
                "ClusterRole" => ("clusterroles", (String::new(), text("name").to_string())),
                _ => (
                    "roles",
                    (request.namespace.to_string(), text("name").to_string()),
                ),
            };
            let may_bind = Attributes {
                verb: "bind",
                group: GROUP,
                resource: plural,
                subresource: None,
                name: text("name"),
                namespace: request.namespace,
            };
            if rules_of(state, user, request.namespace).any(|r| covers(r, &may_bind)) {
                return Ok(());
            }
            let referenced = state
                .get(&storage_key(GROUP, plural), &key)
                .map(|role| rules_to_grant(role))
                .unwrap_or_default();
            ungranted(state, user, request.namespace, &referenced)
        }
        _ => Vec::new(),
    };
    if not_held.is_empty() {
        return Ok(());
    }
    let message = format!(
        "{}.{GROUP} \"{name}\" is forbidden: user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        rt.plural,
        user.name,
        user.groups,
        not_held.join("\n")
    );
    Err(ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(json!({"name": name, "group": GROUP, "kind": rt.plural})),
    })
}

/// The parts of `rules` (one verb on one resource at a time) that `user` does not hold in
/// `namespace`, described as kube-apiserver lists them.
fn ungranted(state: &State, user: &User, namespace: &str, rules: &[Value]) -> Vec<String> {
    let mut missing = Vec::new();
    for rule in rules {
        if rule.get("nonResourceURLs").is_some() {
            // Only the unrestricted may hand out non-resource access.
            missing.push(format!("{{NonResourceURLs:{}}}", rule["nonResourceURLs"]));
            continue;
        }
        let mut names: Vec<&str> = strings(rule, "resourceNames").collect();
        if names.is_empty() {
            names.push("");
        }
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                let (resource, subresource) = match resource.split_once('/') {
                    Some((resource, sub)) => (resource, Some(sub)),
                    None => (resource, None),
                };
                for verb in strings(rule, "verbs") {
                    for name in &names {
                        let wanted = Attributes {
                            verb,
                            group,
                            resource,
                            subresource,
                            name,
                            namespace,
                        };
                        let held = rules_of(state, user, namespace).any(|r| covers(r, &wanted));
                        if !held {
                            missing.push(format!(
                                "{{APIGroups:[{group:?}], Resources:[{:?}], ResourceNames:[{name:?}], Verbs:[{verb:?}]}}",
                                match subresource {
                                    Some(sub) => format!("{resource}/{sub}"),
                                    None => resource.to_string(),
                                }
                            ));
                        }
                    }
                }
            }
        }
    }
    missing
}
