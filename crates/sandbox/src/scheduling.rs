//! Whether a pod may run on a node, as kube-scheduler's filter plugins decide it
//! (NodeUnschedulable, TaintToleration, NodeAffinity), and as the DaemonSet controller asks
//! it for each node.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec, Taint, Toleration};

/// The taint a cordoned node stands for (`spec.unschedulable`), which only pods that tolerate
/// it may ignore.
pub(crate) const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why a pod may not run on a node, each as kube-scheduler words it in `FailedScheduling`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// The node is cordoned and the pod does not tolerate it.
    Unschedulable,
    /// The node has a taint the pod does not tolerate.
    Taint { key: String, value: String },
    /// The node's labels or name do not match the pod's node selector or required affinity.
    Affinity,
}

impl Misfit {
    /// The reason kube-scheduler gives for one node, as in `1 node(s) were unschedulable`.
    pub fn reason(&self) -> String {
        match self {
            Misfit::Unschedulable => "node(s) were unschedulable".to_string(),
            Misfit::Taint { key, value } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}")
            }
            Misfit::Affinity => "node(s) didn't match Pod's node affinity/selector".to_string(),
        }
    }

    /// kube-scheduler's `FailedScheduling` message when the only node does not fit.
    pub fn scheduling_message(&self) -> String {
        format!(
            "0/1 nodes are available: 1 {}. preemption: 0/1 nodes are available: 1 \
             Preemption is not helpful for scheduling.",
            self.reason()
        )
    }
}

/// Whether a pod with `spec` may be placed on `node`; the first reason it may not.
pub(crate) fn fits(spec: &PodSpec, node: &Node) -> Result<(), Misfit> {
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let cordon = Taint {
        key: UNSCHEDULABLE_TAINT.to_string(),
        effect: "NoSchedule".to_string(),
        ..Taint::default()
    };
    if unschedulable && !tolerated(&cordon, tolerations) {
        return Err(Misfit::Unschedulable);
    }
    if !matches_node_selector(spec, node) {
        return Err(Misfit::Affinity);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    for taint in taints.unwrap_or_default() {
        let filters = matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute");
        if filters && !tolerated(taint, tolerations) {
            return Err(Misfit::Taint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Whether one of `tolerations` tolerates `taint` (core/v1 `Toleration.ToleratesTaint`).
pub(crate) fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|toleration| {
        let effect = toleration.effect.as_deref().unwrap_or_default();
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
        let key = toleration.key.as_deref().unwrap_or_default();
        if !key.is_empty() && key != taint.key {
            return false;
        }
        match toleration.operator.as_deref().unwrap_or("Equal") {
            // An empty key with Exists tolerates every taint.
            "Exists" => true,
            "Equal" => {
                key == taint.key
                    && toleration.value.as_deref().unwrap_or_default()
                        == taint.value.as_deref().unwrap_or_default()
            }
            _ => false,
        }
    })
}

/// Whether the node matches the pod's `nodeSelector` and its required node affinity (any one
/// of the terms, each requirement of a term).
fn matches_node_selector(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    if !selected {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let Some(required) = required else {
        return true;
    };
    let name = node.metadata.name.clone().unwrap_or_default();
    required.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        // A term with no requirement selects nothing.
        (!expressions.is_empty() || !fields.is_empty())
            && expressions
                .iter()
                .all(|requirement| requirement_matches(requirement, labels.get(&requirement.key)))
            && fields.iter().all(|requirement| {
                requirement.key == "metadata.name" && requirement_matches(requirement, Some(&name))
            })
    })
}

/// Whether `value` (absent when the node lacks the label) meets one node selector requirement.
fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(|v| number(v)),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).expect("node")
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        let mut value = value;
        value["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(value).expect("pod spec")
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_that_tolerate_it() {
        let cordoned = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        assert_eq!(
            fits(&spec(json!({})), &cordoned),
            Err(Misfit::Unschedulable)
        );
        let tolerant = spec(json!({"tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ]}));
        assert_eq!(fits(&tolerant, &cordoned), Ok(()));
        let everything = spec(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(fits(&everything, &cordoned), Ok(()));
    }

    #[test]
    fn taints_filter_unless_tolerated_and_prefer_no_schedule_does_not() {
        let tainted = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": "soft", "effect": "PreferNoSchedule"},
        ]}}));
        assert_eq!(
            fits(&spec(json!({})), &tainted),
            Err(Misfit::Taint {
                key: "dedicated".into(),
                value: "db".into()
            })
        );
        let wrong_value = spec(json!({"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "web"}
        ]}));
        assert!(fits(&wrong_value, &tainted).is_err());
        let right = spec(json!({"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        ]}));
        assert_eq!(fits(&right, &tainted), Ok(()));
    }

    #[test]
    fn node_selector_and_required_affinity_pick_nodes() {
        let labelled =
            node(json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "cores": "8"}}}));
        assert_eq!(
            fits(&spec(json!({"nodeSelector": {"disk": "ssd"}})), &labelled),
            Ok(())
        );
        assert_eq!(
            fits(&spec(json!({"nodeSelector": {"disk": "hdd"}})), &labelled),
            Err(Misfit::Affinity)
        );
        let affinity = |terms: serde_json::Value| {
            spec(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }}}))
        };
        let by_name = |name: &str| {
            affinity(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [name]}
            ]}]))
        };
        assert_eq!(fits(&by_name("n1"), &labelled), Ok(()));
        assert_eq!(fits(&by_name("n2"), &labelled), Err(Misfit::Affinity));
        let either = affinity(json!([
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]},
        ]));
        assert_eq!(fits(&either, &labelled), Ok(()));
        let absent = affinity(json!([
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}
        ]));
        assert_eq!(fits(&absent, &labelled), Ok(()));
    }
}
