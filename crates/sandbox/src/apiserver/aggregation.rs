//! The user-facing ClusterRoles every cluster has, `admin`, `edit` and `view`, and
//! kube-controller-manager's ClusterRole aggregation controller that fills them.
//!
//! As in kube-apiserver's bootstrap policy, `view`, `edit` and `admin` carry no rules of their
//! own but an `aggregationRule`: each gathers the rules of every ClusterRole labelled
//! `rbac.authorization.k8s.io/aggregate-to-<name>: "true"`. The `system:aggregate-to-*` roles
//! hold the built-in rules; `view` is labelled to aggregate into `edit`, and `edit` into
//! `admin`, so each role includes the one below it, and any ClusterRole a user labels (for a
//! custom resource, say) joins them.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::namespace_defaults::reconcile_on_changes;
use super::ops;
use super::resources::{EVERY_VERB, storage_key};
use super::selector::LabelSelector;
use super::store::{Store, Txn};

const GROUP: &str = "rbac.authorization.k8s.io";
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const EVERY: &[&str] = EVERY_VERB;

/// One policy rule: API group, resources, verbs.
type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// `system:aggregate-to-view`: reading namespaced workloads and their status, not Secrets.
const VIEW_RULES: &[Rule] = &[
    (
        "",
        &[
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
        ],
        READ,
    ),
    (
        "",
        &[
            "bindings",
            "events",
            "limitranges",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "replicationcontrollers/status",
            "resourcequotas",
            "resourcequotas/status",
        ],
        READ,
    ),
    ("", &["namespaces"], READ),
    ("discovery.k8s.io", &["endpointslices"], READ),
    (
        "apps",
        &[
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
        READ,
    ),
    (
        "autoscaling",
        &[
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status",
        ],
        READ,
    ),
    (
        "batch",
        &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        READ,
    ),
    (
        "extensions",
        &[
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "ingresses",
            "ingresses/status",
            "networkpolicies",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "replicationcontrollers/scale",
        ],
        READ,
    ),
    (
        "policy",
        &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        READ,
    ),
    (
        "networking.k8s.io",
        &["ingresses", "ingresses/status", "networkpolicies"],
        READ,
    ),
];

/// `system:aggregate-to-edit`: writing them, reading Secrets, exec and port-forward.
const EDIT_RULES: &[Rule] = &[
    (
        "",
        &[
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "secrets",
            "services/proxy",
        ],
        READ,
    ),
    ("", &["serviceaccounts"], &["impersonate"]),
    (
        "",
        &[
            "pods",
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
        ],
        WRITE,
    ),
    ("", &["pods/eviction"], &["create"]),
    (
        "",
        &[
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
        ],
        WRITE,
    ),
    ("", &["serviceaccounts/token"], &["create"]),
    (
        "apps",
        &[
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        ],
        WRITE,
    ),
    ("autoscaling", &["horizontalpodautoscalers"], WRITE),
    ("batch", &["cronjobs", "jobs"], WRITE),
    (
        "extensions",
        &[
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "ingresses",
            "networkpolicies",
            "replicasets",
            "replicasets/scale",
            "replicationcontrollers/scale",
        ],
        WRITE,
    ),
    ("policy", &["poddisruptionbudgets"], WRITE),
    (
        "networking.k8s.io",
        &["ingresses", "networkpolicies"],
        WRITE,
    ),
    ("coordination.k8s.io", &["leases"], EVERY),
];

/// `system:aggregate-to-admin`: Roles and RoleBindings, and asking what others may do.
const ADMIN_RULES: &[Rule] = &[
    (
        "authorization.k8s.io",
        &["localsubjectaccessreviews"],
        &["create"],
    ),
    (GROUP, &["rolebindings", "roles"], EVERY),
];

/// A bootstrap ClusterRole: its name, the role it aggregates into, the role whose label it
/// aggregates, and its own rules.
type BootstrapRole = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static [Rule],
);

fn rules_json(rules: &[Rule]) -> Value {
    rules
        .iter()
        .map(|(group, resources, verbs)| {
            json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
        })
        .collect()
}

/// Puts back any of the aggregated roles and their `system:aggregate-to-*` sources that is
/// missing, as kube-apiserver's bootstrap policy does at each start.
pub(crate) fn seed(txn: &mut Txn<'_>) {
    let cluster_roles = storage_key(GROUP, "clusterroles");
    let roles: [BootstrapRole; 6] = [
        ("admin", None, Some("admin"), &[]),
        ("edit", Some("admin"), Some("edit"), &[]),
        ("view", Some("edit"), Some("view"), &[]),
        (
            "system:aggregate-to-admin",
            Some("admin"),
            None,
            ADMIN_RULES,
        ),
        ("system:aggregate-to-edit", Some("edit"), None, EDIT_RULES),
        ("system:aggregate-to-view", Some("view"), None, VIEW_RULES),
    ];
    for (name, into, from, rules) in roles {
        let key = (String::new(), name.to_string());
        if txn.state.get(&cluster_roles, &key).is_some() {
            continue;
        }
        let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        if let Some(into) = into {
            labels[format!("{AGGREGATE_TO}{into}")] = json!("true");
        }
        let mut role = json!({
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {
                "name": name,
                "uid": super::auth::uuid_like(),
                "creationTimestamp": ops::now(),
                "labels": labels,
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
            },
            "rules": rules_json(rules),
        });
        if let Some(from) = from {
            role["aggregationRule"] = json!({
                "clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE_TO}{from}"): "true"}}],
            });
        }
        txn.put(&cluster_roles, role);
    }
}

/// Runs the aggregation controller until `shutdown`: after each change to a ClusterRole, every
/// ClusterRole with an `aggregationRule` gets the rules of those its selectors match.
pub(crate) async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let watched = [storage_key(GROUP, "clusterroles")];
    reconcile_on_changes(&store, &watched, &shutdown, || aggregate(&store)).await;
}

/// The rules an aggregated role should hold: those of the matching ClusterRoles (itself
/// excepted), taken in name order, each rule once, as the upstream controller builds them.
fn aggregated_rules(roles: &[(String, Arc<Value>)], name: &str, rule: &Value) -> Vec<Value> {
    let selectors: Vec<LabelSelector> = rule
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|selector| {
            LabelSelector::parse(&super::scale::selector_string(Some(selector))).ok()
        })
        .collect();
    let mut rules: Vec<Value> = Vec::new();
    for (other, role) in roles {
        if other == name
            || !selectors
                .iter()
                .any(|selector| selector.matches_object(role))
        {
            continue;
        }
        for rule in role
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    rules
}

fn aggregate(store: &Store) {
    let (rt, roles) = {
        let state = store.read();
        let Some(rt) = state.registry.get(GROUP, "v1", "clusterroles") else {
            return;
        };
        let mut roles: Vec<(String, Arc<Value>)> = state
            .objects(&rt.storage, None)
            .map(|(key, role)| (key.1.clone(), role.clone()))
            .collect();
        roles.sort_by(|a, b| a.0.cmp(&b.0));
        (rt, roles)
    };
    for (name, role) in &roles {
        let Some(rule) = role.get("aggregationRule").filter(|r| !r.is_null()) else {
            continue;
        };
        let wanted = Value::Array(aggregated_rules(&roles, name, rule));
        let current = role.get("rules").cloned().unwrap_or_else(|| json!([]));
        if current == wanted || (current.is_null() && wanted == json!([])) {
            continue;
        }
        let key = (String::new(), name.clone());
        // A change made meanwhile brings another pass.
        if let Err(error) = ops::edit(store, &rt, &key, |object| object["rules"] = wanted.clone()) {
            tracing::debug!(name, message = %error.message, "aggregated ClusterRole not written");
        }
    }
}
