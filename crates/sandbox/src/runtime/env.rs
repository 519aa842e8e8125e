//! A container's environment, built as the kubelet builds it: service links, envFrom, env
//! with `valueFrom` and `$(VAR)` references.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Node;
use super::volumes::Rebase;

/// Why a container's environment cannot be built (the message of CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EnvError(pub String);

/// An ordered environment in which a later definition replaces an earlier one.
#[derive(Default)]
pub(crate) struct Environment {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Environment {
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.index.get(&name) {
            Some(position) => self.entries[*position].1 = value,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index
            .get(name)
            .map(|position| self.entries[*position].1.as_str())
    }

    pub fn into_entries(self) -> Vec<(String, String)> {
        self.entries
    }
}

/// Expands `$(VAR)` references as Kubernetes does: `$$` is a literal `$`, and a reference to
/// an undefined variable is left as written.
pub(crate) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Reads the Secrets and ConfigMaps of one namespace once per environment built.
struct Sources<'a> {
    node: &'a Node,
    namespace: String,
    secrets: HashMap<String, Option<Secret>>,
    maps: HashMap<String, Option<ConfigMap>>,
}

impl Sources<'_> {
    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.node.client.clone(), &self.namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|error| EnvError(format!("cannot read secret \"{name}\": {error}")))?;
            self.secrets.insert(name.to_string(), secret);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, EnvError> {
        if !self.maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.node.client.clone(), &self.namespace);
            let map = api
                .get_opt(name)
                .await
                .map_err(|error| EnvError(format!("cannot read configmap \"{name}\": {error}")))?;
            self.maps.insert(name.to_string(), map);
        }
        Ok(self.maps.get(name).and_then(Option::as_ref))
    }
}

fn secret_entries(secret: &Secret) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    entries.extend(
        secret
            .string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    entries
}

fn map_entries(map: &ConfigMap) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    entries.extend(
        map.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())),
    );
    entries
}

/// `<NAME>_SERVICE_HOST` and its kin, for a Service named `name`.
fn service_variables(env: &mut Environment, service: &Service) {
    let Some(spec) = &service.spec else { return };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return;
    };
    let prefix = service.name_any().to_uppercase().replace('-', "_");
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else { return };
    env.set(format!("{prefix}_SERVICE_HOST"), ip);
    env.set(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for port in ports {
        if let Some(name) = &port.name {
            let name = name.to_uppercase().replace('-', "_");
            env.set(
                format!("{prefix}_SERVICE_PORT_{name}"),
                port.port.to_string(),
            );
        }
    }
    // The Docker-link variables the kubelet also sets.
    let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".to_string())
    };
    env.set(
        format!("{prefix}_PORT"),
        format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port),
    );
    for port in ports {
        let proto = protocol(port);
        let base = format!("{prefix}_PORT_{}_{}", port.port, proto.to_uppercase());
        env.set(
            base.clone(),
            format!("{}://{ip}:{}", proto.to_lowercase(), port.port),
        );
        env.set(format!("{base}_PROTO"), proto.to_lowercase());
        env.set(format!("{base}_PORT"), port.port.to_string());
        env.set(format!("{base}_ADDR"), ip);
    }
}

/// A downward-API field of the pod, as `fieldRef.fieldPath` names it.
pub(crate) fn pod_field(pod: &Pod, pod_ip: &str, path: &str) -> Result<String, EnvError> {
    let labelled = |prefix: &str, map: &std::collections::BTreeMap<String, String>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| map.get(key).cloned().unwrap_or_default())
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let listing = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => listing(&labels),
        "metadata.annotations" => listing(&annotations),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .service_account_name
            .unwrap_or_else(|| "default".to_string()),
        _ => {
            return labelled("metadata.labels['", &labels)
                .or_else(|| labelled("metadata.annotations['", &annotations))
                .ok_or_else(|| EnvError(format!("unsupported fieldPath: {path}")));
        }
    };
    Ok(value)
}

/// The environment a container starts with.
pub(crate) async fn build(
    node: &Node,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    rebase: &Rebase,
) -> Result<Environment, EnvError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut env = Environment::default();
    if let Some(path) = std::env::var_os("PATH") {
        env.set("PATH", path.to_string_lossy());
    }
    env.set("HOSTNAME", pod.name_any());
    env.set("TUSK_SANDBOX_POD_ROOT", rebase.root().to_string_lossy());
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.enable_service_links != Some(false) {
        let services: Api<Service> = Api::namespaced(node.client.clone(), &namespace);
        let list = services
            .list(&ListParams::default())
            .await
            .map_err(|error| EnvError(format!("cannot list services: {error}")))?;
        for service in &list.items {
            service_variables(&mut env, service);
        }
    }
    // The API server, wherever the pod runs.
    let port = node.api.port.to_string();
    env.set("KUBERNETES_SERVICE_HOST", "127.0.0.1");
    env.set("KUBERNETES_SERVICE_PORT", &port);
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", &port);
    env.set("KUBERNETES_PORT", format!("tcp://127.0.0.1:{port}"));
    let tcp = format!("KUBERNETES_PORT_{port}_TCP");
    env.set(&tcp, format!("tcp://127.0.0.1:{port}"));
    env.set(format!("{tcp}_PROTO"), "tcp");
    env.set(format!("{tcp}_PORT"), &port);
    env.set(format!("{tcp}_ADDR"), "127.0.0.1");

    let mut sources = Sources {
        node,
        namespace: namespace.clone(),
        secrets: HashMap::new(),
        maps: HashMap::new(),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(reference) = &from.secret_ref {
            let optional = reference.optional.unwrap_or(false);
            match sources.secret(&reference.name).await? {
                Some(secret) => {
                    for (key, value) in secret_entries(secret) {
                        env.set(format!("{prefix}{key}"), value);
                    }
                }
                None if optional => {}
                None => return Err(EnvError(format!("secret \"{}\" not found", reference.name))),
            }
        }
        if let Some(reference) = &from.config_map_ref {
            let optional = reference.optional.unwrap_or(false);
            match sources.config_map(&reference.name).await? {
                Some(map) => {
                    for (key, value) in map_entries(map) {
                        env.set(format!("{prefix}{key}"), value);
                    }
                }
                None if optional => {}
                None => {
                    return Err(EnvError(format!(
                        "configmap \"{}\" not found",
                        reference.name
                    )));
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let raw = var.value.clone().unwrap_or_default();
                Some(expand(&raw, |name| env.get(name).map(str::to_string)))
            }
            Some(source) => {
                if let Some(key_ref) = &source.secret_key_ref {
                    let optional = key_ref.optional.unwrap_or(false);
                    let value = match sources.secret(&key_ref.name).await? {
                        Some(secret) => secret_entries(secret)
                            .into_iter()
                            .find(|(k, _)| *k == key_ref.key)
                            .map(|(_, v)| v),
                        None if optional => None,
                        None => {
                            return Err(EnvError(format!("secret \"{}\" not found", key_ref.name)));
                        }
                    };
                    if value.is_none() && !optional {
                        return Err(EnvError(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key_ref.key, key_ref.name
                        )));
                    }
                    value
                } else if let Some(key_ref) = &source.config_map_key_ref {
                    let optional = key_ref.optional.unwrap_or(false);
                    let value = match sources.config_map(&key_ref.name).await? {
                        Some(map) => map_entries(map)
                            .into_iter()
                            .find(|(k, _)| *k == key_ref.key)
                            .map(|(_, v)| v),
                        None if optional => None,
                        None => {
                            return Err(EnvError(format!(
                                "configmap \"{}\" not found",
                                key_ref.name
                            )));
                        }
                    };
                    if value.is_none() && !optional {
                        return Err(EnvError(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key_ref.key, key_ref.name
                        )));
                    }
                    value
                } else if let Some(field) = &source.field_ref {
                    Some(pod_field(pod, pod_ip, &field.field_path)?)
                } else {
                    source
                        .resource_field_ref
                        .as_ref()
                        .map(|resource| resource_field(container, &resource.resource))
                }
            }
        };
        if let Some(value) = value {
            env.set(var.name.clone(), rebase.path(&value));
        }
    }
    Ok(env)
}

/// `resourceFieldRef`: the container's own limit or request, as written; with none, the
/// node's capacity stands in, which here is unbounded, so 0 (no limit) is reported.
fn resource_field(container: &Container, resource: &str) -> String {
    let resources = container.resources.clone().unwrap_or_default();
    let (bucket, name) = match resource.split_once('.') {
        Some(("requests", name)) => (resources.requests, name),
        Some((_, name)) => (resources.limits, name),
        None => (None, resource),
    };
    bucket
        .and_then(|map| map.get(name).map(|quantity| quantity.0.clone()))
        .unwrap_or_else(|| "0".to_string())
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn lookup(name: &str) -> Option<String> {
        (name == "A").then(|| "x".to_string())
    }

    #[test]
    fn expands_like_kubernetes() {
        assert_eq!(expand("$(A)/$(B)", lookup), "x/$(B)");
        assert_eq!(expand("$$(A) $$ $", lookup), "$(A) $ $");
        assert_eq!(expand("$(A", lookup), "$(A");
    }
}
