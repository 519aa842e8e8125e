//! PostgresRemoteCluster: a link from a database to a customer's own Kubernetes cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::ClusterReference;

/// Links a PostgresCluster to a customer's own Kubernetes cluster. tusk builds a tunnel inside
/// that cluster (a Service, a Deployment running `tusk tunnel`, and a Secret with connection
/// details) so that applications there reach the database by a local name.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "postgres.tusk.dev",
    version = "v1",
    kind = "PostgresRemoteCluster",
    plural = "postgresremoteclusters",
    singular = "postgresremotecluster",
    shortname = "pgrc",
    category = "tusk",
    namespaced,
    status = "PostgresRemoteClusterStatus",
    derive = "PartialEq",
    doc = "A link from a PostgresCluster to a customer's own Kubernetes cluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(
        name = "Remote",
        type_ = "string",
        json_path = ".spec.remoteCluster.name",
        description = "Secret holding the remote cluster's kubeconfig"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRemoteClusterSpec {
    /// The PostgresCluster, in this namespace, that the tunnel leads to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: ClusterReference,

    /// The customer's cluster. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("remoteCluster is immutable"))]
    pub remote_cluster: RemoteClusterReference,
}

/// Names the Secret, in the same namespace, that holds the customer cluster's kubeconfig under
/// the key `kubeconfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct RemoteClusterReference {
    /// Name of the Secret holding the kubeconfig (key `kubeconfig`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What tusk last observed of the tunnel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRemoteClusterStatus {
    /// Ready and Degraded, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where applications in the customer's cluster connect, as host:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The namespace of the customer's cluster the tunnel lives in (a DNS label, from the
    /// kubeconfig's current context). The database's server certificate names the tunnel
    /// Service in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_namespace: Option<String>,

    /// The SHA-256 digest (hexadecimal) of the token the tunnel presents to `tusk router`, so
    /// that the router admits the tunnel's connections to this database, and no other
    /// (docs/external-access.md). The token itself stays in the customer's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_token_sha256: Option<String>,
}
