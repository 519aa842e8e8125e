//! Label sets shared by the controllers.

use std::collections::BTreeMap;

use tusk_api::labels;

/// The component label value of database objects.
pub const COMPONENT_POSTGRES: &str = "postgres";
/// The component label value of backup objects.
pub const COMPONENT_BACKUP: &str = "backup";
/// The component label value of tunnel objects.
pub const COMPONENT_TUNNEL: &str = "tunnel";

/// The labels of every object tusk creates for `cluster` in role `component`.
pub fn for_cluster(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::NAME.to_owned(), "postgres".to_owned()),
        (labels::COMPONENT.to_owned(), component.to_owned()),
        (labels::CLUSTER.to_owned(), cluster.to_owned()),
    ])
}

/// The labels that select a cluster's instance pods.
pub fn instance_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::COMPONENT.to_owned(), COMPONENT_POSTGRES.to_owned()),
        (labels::CLUSTER.to_owned(), cluster.to_owned()),
    ])
}

/// `key=value,...` for a list call.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}
