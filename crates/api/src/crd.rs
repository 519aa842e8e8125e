//! The CustomResourceDefinitions of all five kinds, as `tusk crds` prints them and as
//! deploy/crds/ stores them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{
    PostgresBackup, PostgresBackupRequest, PostgresBackupSchedule, PostgresCluster,
    PostgresRemoteCluster,
};

/// Serializing a generated CRD to YAML failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {name} as YAML: {source}")]
pub struct RenderError {
    name: String,
    #[source]
    source: serde_yaml_ng::Error,
}

/// Every tusk CRD, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PostgresCluster::crd(),
        PostgresRemoteCluster::crd(),
        PostgresBackupRequest::crd(),
        PostgresBackup::crd(),
        PostgresBackupSchedule::crd(),
    ]
}

/// The file name under deploy/crds/ for a CRD, such as `postgresclusters.postgres.tusk.dev.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document (without the leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    serde_yaml_ng::to_string(crd).map_err(|source| RenderError {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Every CRD as one multi-document YAML stream, each document starting with `---`.
pub fn crds_yaml() -> Result<String, RenderError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}
