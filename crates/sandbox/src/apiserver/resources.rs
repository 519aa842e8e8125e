//! The kinds the API server serves: the built-in ones, and those registered by CRDs.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::ext::{Columns, Schema};
use super::scale::ScalePaths;

/// Everything the server needs to know about one served resource (one group/version/plural).
#[derive(Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource: the main endpoint then ignores status changes.
    pub status_subresource: bool,
    /// Whether the kind's strategy maintains `metadata.generation`.
    pub has_generation: bool,
    /// Extra subresources served read-only, such as `log` for pods.
    pub extra_subresources: Vec<&'static str>,
    /// The storage collection: two served resources may share one (core and events.k8s.io Events).
    pub storage: Arc<str>,
    /// For custom resources: the CRD's compiled schema for this version.
    pub schema: Option<Arc<Schema>>,
    /// For custom resources: the printer columns of this version.
    pub columns: Option<Arc<Columns>>,
    /// Whether this type is served by a CRD (strategic merge patch is then refused).
    pub custom: bool,
    /// Whether a delete that removes an object answers with the object (kube-apiserver's
    /// `ReturnDeletedObject`) rather than with a Status naming it.
    pub returns_deleted_object: bool,
    /// Whether objects of this type are only created, answered and never stored (the reviews).
    pub create_only: bool,
    /// Where the `/scale` subresource reads and writes, for the kinds that serve it.
    pub scale: Option<Arc<ScalePaths>>,
}

impl ResourceType {
    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as it appears in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The verbs a client may use, as discovery lists them.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            return vec!["create"];
        }
        EVERY_VERB.to_vec()
    }
}

/// Every verb a stored kind serves, in discovery's order.
pub(crate) const EVERY_VERB: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Where a built-in kind's objects are stored: `group/plural`.
pub(crate) fn storage_key(group: &str, plural: &str) -> Arc<str> {
    Arc::from(format!("{group}/{plural}"))
}

/// Storage key of every Event, whichever API it was written through.
pub(crate) const EVENTS_STORAGE: &str = "/events";
/// Storage key of the CRDs themselves.
pub(crate) const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// Storage key of namespaces.
pub(crate) const NAMESPACE_STORAGE: &str = "/namespaces";

/// One built-in kind: its group, version, plural, kind, short names and [`Traits`]; its
/// singular is the kind in lower case, as for every built-in kind.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    Traits,
);

/// What sets a built-in kind's registration apart, as bits.
type Traits = u8;

/// Neither namespaced nor any other trait: a cluster-scoped kind.
const CLUSTER: Traits = 0;
/// Objects live in a namespace.
const NAMESPACED: Traits = 1;
/// Member of the `all` category (`kubectl get all`).
const ALL: Traits = 1 << 1;
/// Serves `/status`.
const STATUS: Traits = 1 << 2;
/// The strategy maintains `metadata.generation`.
const GENERATION: Traits = 1 << 3;
/// kube-apiserver's registry sets `ReturnDeletedObject`: a delete that removes the object
/// answers with it rather than with a Status.
const RETURNS_DELETED: Traits = 1 << 4;

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", &["ns"], STATUS),
    ("", "v1", "secrets", "Secret", &[], NAMESPACED),
    ("", "v1", "configmaps", "ConfigMap", &["cm"], NAMESPACED),
    ("", "v1", "services", "Service", &["svc"], NAMESPACED | ALL | STATUS | RETURNS_DELETED),
    ("", "v1", "pods", "Pod", &["po"], NAMESPACED | ALL | STATUS | GENERATION | RETURNS_DELETED),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", &["pvc"], NAMESPACED | STATUS | RETURNS_DELETED),
    ("", "v1", "serviceaccounts", "ServiceAccount", &["sa"], NAMESPACED | RETURNS_DELETED),
    ("", "v1", "events", "Event", &["ev"], NAMESPACED),
    ("", "v1", "endpoints", "Endpoints", &["ep"], NAMESPACED),
    ("apps", "v1", "statefulsets", "StatefulSet", &["sts"], NAMESPACED | ALL | STATUS | GENERATION),
    ("apps", "v1", "deployments", "Deployment", &["deploy"], NAMESPACED | ALL | STATUS | GENERATION),
    ("apps", "v1", "replicasets", "ReplicaSet", &["rs"], NAMESPACED | ALL | STATUS | GENERATION),
    ("apps", "v1", "controllerrevisions", "ControllerRevision", &[], NAMESPACED),
    ("batch", "v1", "jobs", "Job", &[], NAMESPACED | ALL | STATUS | GENERATION),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", &["pdb"], NAMESPACED | STATUS | GENERATION),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", &[], NAMESPACED),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", &[], NAMESPACED),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", &[], CLUSTER),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", &[], CLUSTER),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", &["netpol"], NAMESPACED | GENERATION),
    ("coordination.k8s.io", "v1", "leases", "Lease", &[], NAMESPACED),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", &[], STATUS | GENERATION),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", &[], GENERATION),
    ("events.k8s.io", "v1", "events", "Event", &["ev"], NAMESPACED),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", &[], NAMESPACED),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", &["crd", "crds"], STATUS | GENERATION),
    ("", "v1", "nodes", "Node", &["no"], STATUS),
    ("", "v1", "replicationcontrollers", "ReplicationController", &["rc"], NAMESPACED | ALL | STATUS | GENERATION),
    ("", "v1", "resourcequotas", "ResourceQuota", &["quota"], NAMESPACED | STATUS | RETURNS_DELETED),
    ("", "v1", "limitranges", "LimitRange", &["limits"], NAMESPACED),
    ("", "v1", "persistentvolumes", "PersistentVolume", &["pv"], STATUS | RETURNS_DELETED),
    ("apps", "v1", "daemonsets", "DaemonSet", &["ds"], NAMESPACED | ALL | STATUS | GENERATION),
    ("batch", "v1", "cronjobs", "CronJob", &["cj"], NAMESPACED | ALL | STATUS | GENERATION),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", &["ing"], NAMESPACED | STATUS | GENERATION),
    ("networking.k8s.io", "v1", "ingressclasses", "IngressClass", &[], GENERATION),
    ("storage.k8s.io", "v1", "storageclasses", "StorageClass", &["sc"], RETURNS_DELETED),
    ("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", &["pc"], CLUSTER),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", &["hpa"], NAMESPACED | ALL | STATUS),
    ("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", &["csr"], STATUS),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", &[], GENERATION),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", &[], GENERATION),
    ("apiregistration.k8s.io", "v1", "apiservices", "APIService", &[], STATUS),
    ("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", &[], CLUSTER),
    ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", &[], CLUSTER),
    ("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", &[], NAMESPACED),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", &[], CLUSTER),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", &[], CLUSTER),
    ("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", &[], CLUSTER),
];

/// The served resources, looked up by group, version and plural (or singular, kind, short name).
#[derive(Clone, Default)]
pub(crate) struct Registry {
    by_path: HashMap<(String, String, String), Arc<ResourceType>>,
    /// Group names in the order discovery lists them (built-in groups first).
    group_order: Vec<String>,
}

impl Registry {
    /// A registry holding only the built-in kinds.
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        for &(group, version, plural, kind, short, traits) in BUILTINS {
            let storage = if plural == "events" {
                Arc::from(EVENTS_STORAGE)
            } else {
                storage_key(group, plural)
            };
            let has = |trait_: Traits| traits & trait_ == trait_;
            let mut extra = Vec::new();
            if kind == "Pod" {
                extra.extend([
                    "log",
                    "binding",
                    "eviction",
                    "exec",
                    "attach",
                    "portforward",
                ]);
            }
            if kind == "ServiceAccount" {
                extra.push("token");
            }
            registry.insert(ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                kind: kind.to_string(),
                namespaced: has(NAMESPACED),
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: if has(ALL) {
                    vec!["all".to_string()]
                } else {
                    vec![]
                },
                status_subresource: has(STATUS),
                has_generation: has(GENERATION),
                returns_deleted_object: has(RETURNS_DELETED),
                extra_subresources: extra,
                storage,
                schema: None,
                columns: None,
                custom: false,
                create_only: super::reviews::REVIEW_KINDS.contains(&kind),
                scale: ScalePaths::builtin(kind).map(Arc::new),
            });
        }
        registry
    }

    pub fn insert(&mut self, rt: ResourceType) {
        if !self.group_order.contains(&rt.group) {
            self.group_order.push(rt.group.clone());
        }
        self.by_path.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            Arc::new(rt),
        );
    }

    /// Drops every version served from one storage collection (a deleted CRD).
    pub fn remove_storage(&mut self, storage: &str) {
        self.by_path.retain(|_, rt| &*rt.storage != storage);
        let groups: Vec<String> = self.by_path.values().map(|rt| rt.group.clone()).collect();
        self.group_order.retain(|g| groups.contains(g));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Every served resource of one group and version, sorted by plural.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        let mut out: Vec<_> = self
            .by_path
            .values()
            .filter(|rt| rt.group == group && rt.version == version)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.plural.cmp(&b.plural));
        out
    }

    /// Groups (in discovery order) with their versions, preferred version first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.group_order
            .iter()
            .map(|group| {
                let mut versions: Vec<String> = self
                    .by_path
                    .values()
                    .filter(|rt| &rt.group == group)
                    .map(|rt| rt.version.clone())
                    .collect();
                versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                versions.dedup();
                (group.clone(), versions)
            })
            .collect()
    }

    /// Every served resource reading from one storage collection.
    pub fn for_storage(&self, storage: &str) -> Vec<Arc<ResourceType>> {
        self.by_path
            .values()
            .filter(|rt| &*rt.storage == storage)
            .cloned()
            .collect()
    }

    /// The storage keys of every custom resource collection.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.by_path.values()
    }
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first.
pub(crate) fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let suffix = &rest[digits.len()..];
    if suffix.is_empty() {
        (3, major, 0)
    } else if let Some(n) = suffix.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = suffix.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

/// The storage key of a CRD's objects.
pub(crate) fn crd_storage_key(crd: &Value) -> Option<Arc<str>> {
    let group = crd.pointer("/spec/group")?.as_str()?;
    let plural = crd.pointer("/spec/names/plural")?.as_str()?;
    Some(storage_key(group, plural))
}

/// The resource types a CRD serves, one per served version.
pub(crate) fn crd_resource_types(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec is missing")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group is missing")?;
    let names = spec.get("names").ok_or("spec.names is missing")?;
    let text = |field: &str| names.get(field).and_then(Value::as_str).map(str::to_string);
    let plural = text("plural").ok_or("spec.names.plural is missing")?;
    let kind = text("kind").ok_or("spec.names.kind is missing")?;
    let singular = text("singular").unwrap_or_else(|| kind.to_lowercase());
    let strings = |field: &str| -> Vec<String> {
        names
            .get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let storage = storage_key(group, &plural);
    let mut out = Vec::new();
    for version in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = version
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name is missing")?;
        let schema = match version.pointer("/schema/openAPIV3Schema") {
            Some(schema) => Some(Arc::new(Schema::new(schema)?)),
            None => None,
        };
        let columns = Columns::from_crd_version(version);
        out.push(ResourceType {
            group: group.to_string(),
            version: name.to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced,
            short_names: strings("shortNames"),
            categories: strings("categories"),
            status_subresource: version.pointer("/subresources/status").is_some(),
            has_generation: true,
            extra_subresources: vec![],
            storage: storage.clone(),
            schema,
            columns: Some(Arc::new(columns)),
            custom: true,
            // apiextensions-apiserver's custom resource store answers a delete with a Status.
            returns_deleted_object: false,
            create_only: false,
            scale: ScalePaths::from_crd_version(version).map(Arc::new),
        });
    }
    Ok(out)
}
