//! The `pods/eviction` subresource, as kube-apiserver's eviction REST handler serves it
//! (`kubectl drain` evicts through it): a pod goes only if the one PodDisruptionBudget that
//! selects it allows a disruption, which the eviction then uses up; otherwise the answer is
//! 429 TooManyRequests, after which kubectl waits and tries again.

use serde_json::{Value, json};

use super::error::ApiError;
use super::ops;
use super::resources::{ResourceType, storage_key};
use super::selector::LabelSelector;
use super::store::{Key, Store};

/// Where PodDisruptionBudgets are stored.
fn pdb_storage() -> std::sync::Arc<str> {
    storage_key("policy", "poddisruptionbudgets")
}

/// The budgets of `namespace` that select a pod with `pod`'s labels. A budget without a
/// selector selects nothing; an empty selector selects every pod (policy/v1).
fn budgets_for(store: &Store, namespace: &str, pod: &Value) -> Vec<Value> {
    let storage = pdb_storage();
    let state = store.read();
    state
        .objects(&storage, Some(namespace))
        .map(|(_, pdb)| pdb)
        .filter(|pdb| {
            let Some(selector) = pdb.pointer("/spec/selector") else {
                return false;
            };
            let text = super::table::label_selector_text(Some(selector));
            let text = if text == "<none>" { "" } else { text.as_str() };
            LabelSelector::parse(text).is_ok_and(|selector| selector.matches_object(pod))
        })
        .map(|pdb| (**pdb).clone())
        .collect()
}

/// kube-apiserver's 429 for an eviction a budget does not allow now.
fn too_many_requests(cause: String) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
        details: Some(json!({
            "causes": [{"reason": "DisruptionBudget", "message": cause}],
            "retryAfterSeconds": 0,
        })),
    }
}

/// Whether the budget's rules let the pod go without a disruption being counted: a pod that
/// is not running yet, has finished or is already going, or (under the unhealthy pod
/// eviction policy) one that is not Ready.
fn needs_no_disruption(pod: &Value, pdb: Option<&Value>) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed" | "Pending") | None) || ops::is_deleting(pod) {
        return true;
    }
    let Some(pdb) = pdb else {
        return true;
    };
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if ready {
        return false;
    }
    let status = |field: &str| {
        pdb.pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    match pdb
        .pointer("/spec/unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
    {
        Some("AlwaysAllow") => true,
        // IfHealthyBudget: an unready pod may go while the budget is met.
        _ => status("currentHealthy") >= status("desiredHealthy") && status("desiredHealthy") > 0,
    }
}

/// Admits the eviction of the pod at `key`, named by `eviction`: checks its budget and uses
/// up one of the disruptions it allows (unless `dry_run`). The caller then deletes the pod.
pub(crate) fn admit(
    store: &Store,
    pods: &ResourceType,
    key: &Key,
    eviction: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let named = eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !named.is_empty() && named != key.1 {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let pod = store.read().get(&pods.storage, key).cloned();
    let pod = pod.ok_or_else(|| ApiError::not_found(pods, &key.1))?;
    let namespace = key.0.clone();
    let budgets = budgets_for(store, &namespace, &pod);
    if budgets.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let pdb = budgets.first();
    if needs_no_disruption(&pod, pdb) {
        return Ok(());
    }
    let Some(pdb) = pdb else { return Ok(()) };
    let pdb_name = ops::meta_str(pdb, "name").unwrap_or_default().to_string();
    let pdb_type = store
        .read()
        .registry
        .get("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("PodDisruptionBudgets are not served"))?;
    let pdb_key: Key = (namespace, pdb_name.clone());
    let mut refusal = None;
    // A write that changes nothing (a refusal) stores nothing.
    let result = ops::edit(store, &pdb_type, &pdb_key, |pdb: &mut Value| {
        refusal = None;
        let status = |field: &str| {
            pdb.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let generation = pdb
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if status("observedGeneration") < generation {
            refusal = Some(too_many_requests(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
            return;
        }
        let allowed = status("disruptionsAllowed");
        if allowed < 0 {
            refusal = Some(ApiError {
                code: 403,
                reason: "Forbidden",
                message: "pdb disruptions allowed is negative".to_string(),
                details: None,
            });
            return;
        }
        if allowed == 0 {
            refusal = Some(too_many_requests(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                status("desiredHealthy"),
                status("currentHealthy")
            )));
            return;
        }
        if dry_run {
            return;
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        // The disruption controller counts the pod as gone until it is (or two minutes pass).
        if !pdb["status"]["disruptedPods"].is_object() {
            pdb["status"]["disruptedPods"] = json!({});
        }
        pdb["status"]["disruptedPods"][key.1.as_str()] = json!(ops::now());
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    result
}
