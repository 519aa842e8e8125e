//! The Kubernetes client of the commands that run inside a pod (`tusk operator`,
//! `tusk backup run`).
//!
//! In a pod they authenticate with the ServiceAccount token the kubelet mounts. The sandbox's
//! local runtime mounts it too, but under each pod's own root directory, which it names in
//! `TUSK_SANDBOX_POD_ROOT`; kube-rs's own in-cluster loader only knows the absolute path, so
//! the configuration is built here from the same files, wherever they are. Outside a pod (or
//! with `KUBECONFIG` set) kube-rs's usual inference applies.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Where a kubelet mounts the ServiceAccount's token, CA certificate and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Set by the sandbox's local runtime to the directory that stands for a pod's `/`.
pub const POD_ROOT_VARIABLE: &str = "TUSK_SANDBOX_POD_ROOT";

/// The client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// A mounted ServiceAccount file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The mounted CA certificate is not PEM.
    #[error("{path} holds no valid PEM certificate: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` do not form a URL.
    #[error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT do not form a URL: {0}")]
    Address(String),
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error("no kubeconfig and not in a cluster: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client configured for where the process runs: from the pod's ServiceAccount when in a
/// pod, else as kube-rs infers it (`KUBECONFIG`, `~/.kube/config`, in-cluster).
pub async fn client() -> Result<kube::Client, ClientConfigError> {
    let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let config = match in_cluster_config(lookup)? {
        Some(config) => config,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The in-cluster configuration, when `KUBECONFIG` is unset and `KUBERNETES_SERVICE_HOST` is
/// set. `lookup` reads an environment variable.
pub fn in_cluster_config(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<kube::Config>, ClientConfigError> {
    if lookup("KUBECONFIG").is_some() {
        return Ok(None);
    }
    let Some(host) = lookup("KUBERNETES_SERVICE_HOST") else {
        return Ok(None);
    };
    let port = lookup("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".to_string());
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host,
    };
    let url: http::Uri = format!("https://{host}:{port}")
        .parse()
        .map_err(|error: http::uri::InvalidUri| ClientConfigError::Address(error.to_string()))?;
    let dir = service_account_dir(lookup(POD_ROOT_VARIABLE).as_deref());
    let ca_path = dir.join("ca.crt");
    let certificates = CertificateDer::pem_file_iter(&ca_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| ClientConfigError::Certificate {
            path: ca_path.clone(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(ClientConfigError::Certificate {
            path: ca_path,
            reason: "no certificate found".to_string(),
        });
    }
    let namespace_path = dir.join("namespace");
    let namespace =
        std::fs::read_to_string(&namespace_path).map_err(|source| ClientConfigError::Read {
            path: namespace_path,
            source,
        })?;
    let token_path = dir.join("token");
    // Fail now, rather than on the first request, when the token is not mounted.
    std::fs::metadata(&token_path).map_err(|source| ClientConfigError::Read {
        path: token_path.clone(),
        source,
    })?;
    let mut config = kube::Config::new(url);
    config.default_namespace = namespace.trim().to_string();
    config.root_cert = Some(certificates.iter().map(|c| c.to_vec()).collect());
    // kube-rs re-reads both files as the kubelet rotates them.
    config.root_cert_file = Some(ca_path);
    config.auth_info.token_file = Some(token_path.to_string_lossy().into_owned());
    Ok(Some(config))
}

/// The ServiceAccount directory, rebased under the sandbox pod root when there is one.
fn service_account_dir(pod_root: Option<&str>) -> PathBuf {
    match pod_root {
        Some(root) => Path::new(root).join(SERVICE_ACCOUNT_DIR.trim_start_matches('/')),
        None => PathBuf::from(SERVICE_ACCOUNT_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
    use kube::api::{Api, ListParams, PostParams};
    use std::collections::HashMap;

    /// Mounts `token`, the sandbox CA and `namespace` where the sandbox runtime would, under
    /// `pod_root`.
    fn mount(pod_root: &Path, token: &str, ca_pem: &str, namespace: &str) {
        let dir = service_account_dir(pod_root.to_str());
        std::fs::create_dir_all(&dir).expect("mount dir");
        std::fs::write(dir.join("token"), token).expect("token");
        std::fs::write(dir.join("ca.crt"), ca_pem).expect("ca");
        std::fs::write(dir.join("namespace"), namespace).expect("namespace");
    }

    #[tokio::test]
    async fn in_a_pod_the_client_acts_as_its_service_account() {
        let sandbox = tusk_sandbox::Sandbox::builder()
            .start()
            .await
            .expect("sandbox starts");
        let admin = sandbox.client().await.expect("admin client");
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        let account = serde_json::from_value(serde_json::json!({"metadata": {"name": "robot"}}))
            .expect("account");
        accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("account created");
        let request = serde_json::from_value(serde_json::json!({"spec": {"audiences": []}}))
            .expect("token request");
        let token = accounts
            .create_token_request("robot", &PostParams::default(), &request)
            .await
            .expect("token issued")
            .status
            .and_then(|status| status.token)
            .expect("a token");
        let pod_root = tempfile::tempdir().expect("pod root");
        mount(pod_root.path(), &token, sandbox.ca_pem(), "default\n");
        let env: HashMap<&str, String> = HashMap::from([
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
            ("KUBERNETES_SERVICE_PORT", sandbox.addr().port().to_string()),
            (POD_ROOT_VARIABLE, pod_root.path().display().to_string()),
        ]);
        let config = in_cluster_config(|name| env.get(name).cloned())
            .expect("config")
            .expect("in a pod");
        assert_eq!(config.default_namespace, "default");
        let client = kube::Client::try_from(config).expect("client");
        // The robot has no Role: the 403 names it, so its token (not the admin's) was sent,
        // to the pod's namespace.
        let maps: Api<ConfigMap> = Api::default_namespaced(client);
        match maps.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403);
                assert!(
                    status.message.contains(
                        "User \"system:serviceaccount:default:robot\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
                    ),
                    "{}",
                    status.message
                );
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }

    #[test]
    fn outside_a_pod_or_with_a_kubeconfig_kube_rs_inference_applies() {
        let in_pod_with_kubeconfig = HashMap::from([
            ("KUBECONFIG", "/tmp/kubeconfig"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        let config =
            in_cluster_config(|name| in_pod_with_kubeconfig.get(name).map(|v| v.to_string()))
                .expect("no error");
        assert!(config.is_none());
        assert!(in_cluster_config(|_| None).expect("no error").is_none());
    }

    #[test]
    fn a_missing_mount_is_an_error_naming_the_file() {
        let pod_root = tempfile::tempdir().expect("pod root");
        let env = HashMap::from([
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1".to_string()),
            (POD_ROOT_VARIABLE, pod_root.path().display().to_string()),
        ]);
        let error = in_cluster_config(|name| env.get(name).cloned()).expect_err("nothing mounted");
        assert!(
            error.to_string().contains(&format!(
                "{}/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                pod_root.path().display()
            )),
            "{error}"
        );
    }
}
