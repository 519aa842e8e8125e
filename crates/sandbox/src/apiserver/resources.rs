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
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

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

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    all: bool,
    status: bool,
    generation: bool,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        all: true,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short: &["pvc"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short: &["ep"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        short: &["sts"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short: &["rs"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        kind: "ControllerRevision",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short: &[],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        all: false,
        status: true,
        generation: true,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short: &["netpol"],
        all: false,
        status: false,
        generation: true,
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingadmissionpolicies",
        singular: "validatingadmissionpolicy",
        kind: "ValidatingAdmissionPolicy",
        namespaced: false,
        short: &[],
        all: false,
        status: true,
        generation: true,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingadmissionpolicybindings",
        singular: "validatingadmissionpolicybinding",
        kind: "ValidatingAdmissionPolicyBinding",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: true,
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        all: false,
        status: true,
        generation: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        kind: "ReplicationController",
        namespaced: true,
        short: &["rc"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "resourcequotas",
        singular: "resourcequota",
        kind: "ResourceQuota",
        namespaced: true,
        short: &["quota"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "limitranges",
        singular: "limitrange",
        kind: "LimitRange",
        namespaced: true,
        short: &["limits"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        kind: "PersistentVolume",
        namespaced: false,
        short: &["pv"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        namespaced: true,
        short: &["cj"],
        all: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        short: &["ing"],
        all: false,
        status: true,
        generation: true,
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingressclasses",
        singular: "ingressclass",
        kind: "IngressClass",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: true,
    },
    Builtin {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        namespaced: false,
        short: &["sc"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "scheduling.k8s.io",
        version: "v1",
        plural: "priorityclasses",
        singular: "priorityclass",
        kind: "PriorityClass",
        namespaced: false,
        short: &["pc"],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short: &["hpa"],
        all: true,
        status: true,
        generation: false,
    },
    Builtin {
        group: "certificates.k8s.io",
        version: "v1",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short: &["csr"],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        singular: "mutatingwebhookconfiguration",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: true,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: true,
    },
    Builtin {
        group: "apiregistration.k8s.io",
        version: "v1",
        plural: "apiservices",
        singular: "apiservice",
        kind: "APIService",
        namespaced: false,
        short: &[],
        all: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short: &[],
        all: false,
        status: false,
        generation: false,
    },
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
        for builtin in BUILTINS {
            let storage = if builtin.plural == "events" {
                Arc::from(EVENTS_STORAGE)
            } else {
                storage_key(builtin.group, builtin.plural)
            };
            let mut extra = Vec::new();
            if builtin.kind == "Pod" {
                extra.extend(["log", "binding", "exec", "attach", "portforward"]);
            }
            if builtin.kind == "ServiceAccount" {
                extra.push("token");
            }
            registry.insert(ResourceType {
                group: builtin.group.to_string(),
                version: builtin.version.to_string(),
                plural: builtin.plural.to_string(),
                singular: builtin.singular.to_string(),
                kind: builtin.kind.to_string(),
                namespaced: builtin.namespaced,
                short_names: builtin.short.iter().map(|s| s.to_string()).collect(),
                categories: if builtin.all {
                    vec!["all".to_string()]
                } else {
                    vec![]
                },
                status_subresource: builtin.status,
                has_generation: builtin.generation,
                extra_subresources: extra,
                storage,
                schema: None,
                columns: None,
                custom: false,
                create_only: super::reviews::REVIEW_KINDS.contains(&builtin.kind),
                scale: ScalePaths::builtin(builtin.kind).map(Arc::new),
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
            create_only: false,
            scale: ScalePaths::from_crd_version(version).map(Arc::new),
        });
    }
    Ok(out)
}
