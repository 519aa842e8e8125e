//! Table output (`as=Table`) with the CRD's additionalPrinterColumns, as `kubectl get` asks for it.
//!
//! Cells are typed as kube-apiserver types them: integers as numbers, a missing value as null
//! (kubectl prints `<none>`), and `date` columns as a human-readable age (`5m`, `3d`), which
//! kube-apiserver computes itself (`ConvertToHumanReadableDateType`) before kubectl sees it.

use serde_json::{Map, Value, json};

/// One column of a Table, as a CRD's `additionalPrinterColumns` entry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// The header, such as `Display Name`.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// An OpenAPI format hint; `name` marks the object's name column.
    pub format: Option<String>,
    /// The header's description.
    pub description: Option<String>,
    /// 0 for the columns `kubectl get` shows; higher ones appear with `-o wide`.
    pub priority: i32,
    /// A Kubernetes JSONPath without braces, such as `.status.conditions[?(@.type=="Ready")].status`,
    /// or one of the sandbox's computed cells for built-in kinds (`#pod-ready`...).
    pub json_path: String,
}

/// Whether Table rows carry the object (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A PartialObjectMetadata (kubectl's default).
    Metadata,
    /// The whole object.
    Object,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn column(name: &str, type_: &str, priority: i32, json_path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: None,
        description: None,
        priority,
        json_path: json_path.into(),
    }
}

fn name_column() -> PrinterColumn {
    PrinterColumn {
        name: "Name".into(),
        type_: "string".into(),
        format: Some("name".into()),
        description: Some(NAME_DESCRIPTION.into()),
        priority: 0,
        json_path: ".metadata.name".into(),
    }
}

fn age_column() -> PrinterColumn {
    PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        format: None,
        description: Some(AGE_DESCRIPTION.into()),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }
}

impl PrinterColumn {
    /// The columns of one CRD version (an entry of `spec.versions`): Name first, then its
    /// additionalPrinterColumns, or Name and Age when it declares none (the CRD default).
    pub fn from_crd_version(version: &Value) -> Vec<PrinterColumn> {
        let declared: Vec<PrinterColumn> = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|columns| {
                columns
                    .iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c.get("name")?.as_str()?.to_string(),
                            type_: c.get("type")?.as_str()?.to_string(),
                            format: c.get("format").and_then(Value::as_str).map(str::to_string),
                            description: c
                                .get("description")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            priority: c
                                .get("priority")
                                .and_then(Value::as_i64)
                                .and_then(|p| i32::try_from(p).ok())
                                .unwrap_or(0),
                            json_path: c.get("jsonPath")?.as_str()?.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if declared.is_empty() {
            return default_columns();
        }
        let mut columns = vec![name_column()];
        columns.extend(declared);
        columns
    }
}

/// Name and Age: what kube-apiserver shows for custom resources without printer columns.
pub fn default_columns() -> Vec<PrinterColumn> {
    vec![name_column(), age_column()]
}

/// The server-side columns of the built-in kinds the sandbox serves, as kube-apiserver's
/// printers define them (the ones tusk users look at). None for the others.
pub fn builtin_columns(api_version: &str, kind: &str) -> Option<Vec<PrinterColumn>> {
    let mut columns = vec![name_column()];
    let rest = match (api_version, kind) {
        ("v1", "Pod") => vec![
            column("Ready", "string", 0, "#pod-ready"),
            column("Status", "string", 0, "#pod-status"),
            column("Restarts", "string", 0, "#pod-restarts"),
            age_column(),
            column("IP", "string", 1, ".status.podIP"),
            column("Node", "string", 1, ".spec.nodeName"),
            column("Nominated Node", "string", 1, ".status.nominatedNodeName"),
            column("Readiness Gates", "string", 1, "#pod-readiness-gates"),
        ],
        ("batch/v1", "Job") => vec![
            column("Status", "string", 0, "#job-status"),
            column("Completions", "string", 0, "#job-completions"),
            column("Duration", "string", 0, "#job-duration"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
            column("Selector", "string", 1, "#selector"),
        ],
        ("apps/v1", "Deployment") => vec![
            column("Ready", "string", 0, "#ready-replicas"),
            column("Up-to-date", "integer", 0, ".status.updatedReplicas"),
            column("Available", "integer", 0, ".status.availableReplicas"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
            column("Selector", "string", 1, "#selector"),
        ],
        ("apps/v1", "StatefulSet") => vec![
            column("Ready", "string", 0, "#ready-replicas"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
        ],
        ("v1", "Service") => vec![
            column("Type", "string", 0, ".spec.type"),
            column("Cluster-IP", "string", 0, ".spec.clusterIP"),
            column("External-IP", "string", 0, "#service-external-ip"),
            column("Port(s)", "string", 0, "#service-ports"),
            age_column(),
            column("Selector", "string", 1, "#service-selector"),
        ],
        ("v1", "Secret") => vec![
            column("Type", "string", 0, ".type"),
            column("Data", "string", 0, "#data-count"),
            age_column(),
        ],
        ("v1", "ConfigMap") => vec![column("Data", "string", 0, "#data-count"), age_column()],
        ("v1", "Namespace") => vec![column("Status", "string", 0, ".status.phase"), age_column()],
        ("v1", "PersistentVolumeClaim") => vec![
            column("Status", "string", 0, ".status.phase"),
            column("Volume", "string", 0, ".spec.volumeName"),
            column("Capacity", "string", 0, ".status.capacity.storage"),
            column("Access Modes", "string", 0, "#pvc-access-modes"),
            column("StorageClass", "string", 0, ".spec.storageClassName"),
            age_column(),
            column("VolumeMode", "string", 1, ".spec.volumeMode"),
        ],
        ("coordination.k8s.io/v1", "Lease") => vec![
            column("Holder", "string", 0, ".spec.holderIdentity"),
            age_column(),
        ],
        // Both Event APIs print with one printer; Name comes last, shown only with -o wide.
        ("v1" | "events.k8s.io/v1", "Event") => {
            return Some(vec![
                column("Last Seen", "string", 0, "#event-last-seen"),
                column("Type", "string", 0, ".type"),
                column("Reason", "string", 0, ".reason"),
                column("Object", "string", 0, "#event-object"),
                column("Subobject", "string", 1, "#event-subobject"),
                column("Source", "string", 1, "#event-source"),
                column("Message", "string", 0, "#event-message"),
                column("First Seen", "string", 1, "#event-first-seen"),
                column("Count", "string", 1, "#event-count"),
                PrinterColumn {
                    priority: 1,
                    ..name_column()
                },
            ]);
        }
        ("apps/v1", "ReplicaSet") => vec![
            column("Desired", "integer", 0, "#spec-replicas"),
            column("Current", "integer", 0, "#status-replicas"),
            column("Ready", "integer", 0, "#status-ready-replicas"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
            column("Selector", "string", 1, "#label-selector"),
        ],
        ("apps/v1", "ControllerRevision") => vec![
            column("Controller", "string", 0, "#controller"),
            column("Revision", "integer", 0, ".revision"),
            age_column(),
        ],
        ("v1", "Endpoints") => vec![column("Endpoints", "string", 0, "#endpoints"), age_column()],
        ("discovery.k8s.io/v1", "EndpointSlice") => vec![
            column("AddressType", "string", 0, ".addressType"),
            column("Ports", "string", 0, "#endpointslice-ports"),
            column("Endpoints", "string", 0, "#endpointslice-endpoints"),
            age_column(),
        ],
        ("v1", "ServiceAccount") => vec![
            column("Secrets", "integer", 0, "#secrets-count"),
            age_column(),
        ],
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => {
            vec![column("Created At", "string", 0, "#created-at")]
        }
        // apiextensions-apiserver's default table: the creation time as written, typed date.
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            vec![column("Created At", "date", 0, "#created-at")]
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => vec![
            column("Role", "string", 0, "#binding-role"),
            age_column(),
            column("Users", "string", 1, "#binding-users"),
            column("Groups", "string", 1, "#binding-groups"),
            column("ServiceAccounts", "string", 1, "#binding-service-accounts"),
        ],
        ("policy/v1", "PodDisruptionBudget") => vec![
            column("Min Available", "string", 0, "#pdb-min-available"),
            column("Max Unavailable", "string", 0, "#pdb-max-unavailable"),
            column(
                "Allowed Disruptions",
                "integer",
                0,
                "#pdb-allowed-disruptions",
            ),
            age_column(),
        ],
        ("networking.k8s.io/v1", "NetworkPolicy") => vec![
            column("Pod-Selector", "string", 0, "#pod-selector"),
            age_column(),
        ],
        ("networking.k8s.io/v1", "IngressClass") => vec![
            column("Controller", "string", 0, ".spec.controller"),
            column("Parameters", "string", 0, "#ingressclass-parameters"),
            age_column(),
        ],
        ("v1", "Node") => vec![
            column("Status", "string", 0, "#node-status"),
            column("Roles", "string", 0, "#node-roles"),
            age_column(),
            column("Version", "string", 0, ".status.nodeInfo.kubeletVersion"),
            column("Internal-IP", "string", 1, "#node-internal-ip"),
            column("External-IP", "string", 1, "#node-external-ip"),
            column("OS-Image", "string", 1, ".status.nodeInfo.osImage"),
            column(
                "Kernel-Version",
                "string",
                1,
                ".status.nodeInfo.kernelVersion",
            ),
            column(
                "Container-Runtime",
                "string",
                1,
                ".status.nodeInfo.containerRuntimeVersion",
            ),
        ],
        ("v1", "ReplicationController") => vec![
            column("Desired", "integer", 0, ".spec.replicas"),
            column("Current", "integer", 0, "#status-replicas"),
            column("Ready", "integer", 0, "#status-ready-replicas"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
            column("Selector", "string", 1, "#service-selector"),
        ],
        ("apps/v1", "DaemonSet") => vec![
            column("Desired", "integer", 0, ".status.desiredNumberScheduled"),
            column("Current", "integer", 0, ".status.currentNumberScheduled"),
            column("Ready", "integer", 0, ".status.numberReady"),
            column("Up-to-date", "integer", 0, "#daemonset-updated"),
            column("Available", "integer", 0, "#daemonset-available"),
            column("Node Selector", "string", 0, "#node-selector"),
            age_column(),
            column("Containers", "string", 1, "#containers"),
            column("Images", "string", 1, "#images"),
            column("Selector", "string", 1, "#selector"),
        ],
        ("batch/v1", "CronJob") => vec![
            column("Schedule", "string", 0, ".spec.schedule"),
            column("Timezone", "string", 0, "#cronjob-timezone"),
            column("Suspend", "string", 0, "#cronjob-suspend"),
            column("Active", "integer", 0, "#cronjob-active"),
            column("Last Schedule", "string", 0, "#cronjob-last-schedule"),
            age_column(),
        ],
        ("networking.k8s.io/v1", "Ingress") => vec![
            column("Class", "string", 0, "#ingress-class"),
            column("Hosts", "string", 0, "#ingress-hosts"),
            column("Address", "string", 0, "#ingress-address"),
            column("Ports", "string", 0, "#ingress-ports"),
            age_column(),
        ],
        ("v1", "PersistentVolume") => vec![
            column("Capacity", "string", 0, ".spec.capacity.storage"),
            column("Access Modes", "string", 0, "#pvc-access-modes"),
            column(
                "Reclaim Policy",
                "string",
                0,
                ".spec.persistentVolumeReclaimPolicy",
            ),
            column("Status", "string", 0, ".status.phase"),
            column("Claim", "string", 0, "#pv-claim"),
            column("StorageClass", "string", 0, ".spec.storageClassName"),
            column("Reason", "string", 0, ".status.reason"),
            age_column(),
            column("VolumeMode", "string", 1, ".spec.volumeMode"),
        ],
        ("storage.k8s.io/v1", "StorageClass") => vec![
            column("Provisioner", "string", 0, ".provisioner"),
            column("ReclaimPolicy", "string", 0, ".reclaimPolicy"),
            column("VolumeBindingMode", "string", 0, ".volumeBindingMode"),
            column(
                "AllowVolumeExpansion",
                "boolean",
                0,
                "#allow-volume-expansion",
            ),
            age_column(),
        ],
        ("scheduling.k8s.io/v1", "PriorityClass") => vec![
            column("Value", "integer", 0, ".value"),
            column("Global-Default", "boolean", 0, "#global-default"),
            age_column(),
            column("Preemption Policy", "string", 0, ".preemptionPolicy"),
        ],
        ("autoscaling/v2", "HorizontalPodAutoscaler") => vec![
            column("Reference", "string", 0, "#hpa-reference"),
            column("Targets", "string", 0, "#hpa-targets"),
            column("MinPods", "string", 0, "#hpa-min-pods"),
            column("MaxPods", "integer", 0, ".spec.maxReplicas"),
            column("Replicas", "integer", 0, "#status-current-replicas"),
            age_column(),
        ],
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => vec![
            age_column(),
            column("SignerName", "string", 0, ".spec.signerName"),
            column("Requestor", "string", 0, ".spec.username"),
            column("RequestedDuration", "string", 0, "#csr-duration"),
            column("Condition", "string", 0, "#csr-condition"),
        ],
        (
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => vec![column("Webhooks", "integer", 0, "#webhooks"), age_column()],
        ("apiregistration.k8s.io/v1", "APIService") => vec![
            column("Service", "string", 0, "#apiservice-service"),
            column("Available", "string", 0, "#apiservice-available"),
            age_column(),
        ],
        ("v1", "ResourceQuota") => vec![age_column()],
        ("v1", "LimitRange") => vec![column(
            "Created At",
            "string",
            0,
            ".metadata.creationTimestamp",
        )],
        _ => return None,
    };
    columns.extend(rest);
    Some(columns)
}

/// Renders a `meta.k8s.io/v1` Table of `objects`, ages counted from now.
pub fn render_table(
    columns: &[PrinterColumn],
    objects: &[Value],
    include_object: IncludeObject,
    list_meta: Value,
) -> Value {
    render_table_at(
        columns,
        objects,
        include_object,
        list_meta,
        jiff::Timestamp::now(),
    )
}

/// [`render_table`] with ages counted from `now`.
pub fn render_table_at(
    columns: &[PrinterColumn],
    objects: &[Value],
    include_object: IncludeObject,
    list_meta: Value,
    now: jiff::Timestamp,
) -> Value {
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format.clone().unwrap_or_default(),
                "description": c.description.clone().unwrap_or_default(),
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, obj, now)).collect();
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".into(), super::watch::partial_object_metadata(obj));
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(column: &PrinterColumn, obj: &Value, now: jiff::Timestamp) -> Value {
    if let Some(computed) = column.json_path.strip_prefix('#') {
        return computed_cell(computed, obj, now);
    }
    let Some(value) = jsonpath_first(obj, &column.json_path) else {
        return Value::Null;
    };
    typed_cell(&column.type_, &value, now)
}

/// A cell typed as the CRD table convertor types it; a value of the wrong type is null.
fn typed_cell(type_: &str, value: &Value, now: jiff::Timestamp) -> Value {
    match (type_, value) {
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(|f| Value::from(f as i64)))
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
            Err(_) => Value::String("<invalid>".into()),
        },
        ("string", Value::String(s)) => Value::String(s.clone()),
        ("string", other) => Value::String(other.to_string()),
        _ => Value::Null,
    }
}

/// Go's `duration.HumanDuration`: how kube-apiserver and kubectl print ages.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

fn i64_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn joined_or_none(parts: Vec<String>) -> Value {
    if parts.is_empty() {
        Value::String("<none>".into())
    } else {
        Value::String(parts.join(","))
    }
}

/// Cells the built-in printers compute rather than read.
fn computed_cell(name: &str, obj: &Value, now: jiff::Timestamp) -> Value {
    let container_statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let template_containers = || {
        obj.pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match name {
        "pod-ready" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = container_statuses
                .iter()
                .filter(|s| s.get("ready") == Some(&Value::Bool(true)))
                .count();
            Value::String(format!("{ready}/{total}"))
        }
        "pod-status" => {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Value::String("Terminating".into());
            }
            let from_containers = container_statuses.iter().find_map(|s| {
                str_at(s, "/state/waiting/reason")
                    .or_else(|| str_at(s, "/state/terminated/reason"))
                    .filter(|r| !r.is_empty())
            });
            let phase = str_at(obj, "/status/reason")
                .or(from_containers)
                .or_else(|| str_at(obj, "/status/phase"))
                .unwrap_or("Unknown");
            Value::String(phase.to_string())
        }
        "pod-restarts" => {
            let restarts: i64 = container_statuses
                .iter()
                .map(|s| s.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
                .sum();
            Value::String(restarts.to_string())
        }
        "pod-readiness-gates" => {
            let gates = obj
                .pointer("/spec/readinessGates")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if gates == 0 {
                Value::String("<none>".into())
            } else {
                Value::String(format!("0/{gates}"))
            }
        }
        "ready-replicas" => Value::String(format!(
            "{}/{}",
            i64_at(obj, "/status/readyReplicas"),
            obj.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        "containers" => joined_or_none(
            template_containers()
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect(),
        ),
        "images" => joined_or_none(
            template_containers()
                .iter()
                .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_string))
                .collect(),
        ),
        "selector" | "service-selector" => {
            let labels = if name == "selector" {
                obj.pointer("/spec/selector/matchLabels")
            } else {
                obj.pointer("/spec/selector")
            };
            joined_or_none(
                labels
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }
        "job-status" => {
            let conditions = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |type_: &str| {
                conditions.iter().any(|c| {
                    c.get("type") == Some(&json!(type_)) && c.get("status") == Some(&json!("True"))
                })
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            Value::String(status.into())
        }
        "job-completions" => {
            let succeeded = i64_at(obj, "/status/succeeded");
            match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(completions) => Value::String(format!("{succeeded}/{completions}")),
                None => Value::String(format!(
                    "{succeeded}/1 of {}",
                    i64_at(obj, "/spec/parallelism").max(1)
                )),
            }
        }
        "job-duration" => {
            let start =
                str_at(obj, "/status/startTime").and_then(|s| s.parse::<jiff::Timestamp>().ok());
            let end = str_at(obj, "/status/completionTime")
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .unwrap_or(now);
            match start {
                Some(start) => Value::String(human_duration(end.duration_since(start).as_secs())),
                None => Value::String(String::new()),
            }
        }
        "service-external-ip" => {
            let ips: Vec<String> = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|ingress| {
                    ingress
                        .iter()
                        .filter_map(|i| {
                            i.get("ip")
                                .or_else(|| i.get("hostname"))
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !ips.is_empty() {
                return Value::String(ips.join(","));
            }
            match str_at(obj, "/spec/type") {
                Some("LoadBalancer") => Value::String("<pending>".into()),
                Some("ExternalName") => Value::String(
                    str_at(obj, "/spec/externalName")
                        .unwrap_or("<none>")
                        .to_string(),
                ),
                _ => Value::String("<none>".into()),
            }
        }
        "service-ports" => joined_or_none(
            obj.pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let port = i64_at(p, "/port");
                            let protocol = str_at(p, "/protocol").unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(node) => format!("{port}:{node}/{protocol}"),
                                None => format!("{port}/{protocol}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "data-count" => {
            let count = ["/data", "/binaryData", "/stringData"]
                .iter()
                .filter_map(|p| obj.pointer(p).and_then(Value::as_object))
                .map(Map::len)
                .sum::<usize>();
            Value::String(count.to_string())
        }
        "pvc-access-modes" => {
            let modes: Vec<String> = obj
                .pointer("/status/accessModes")
                .or_else(|| obj.pointer("/spec/accessModes"))
                .and_then(Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(|mode| match mode {
                            "ReadWriteOnce" => "RWO".to_string(),
                            "ReadOnlyMany" => "ROX".to_string(),
                            "ReadWriteMany" => "RWX".to_string(),
                            "ReadWriteOncePod" => "RWOP".to_string(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Value::String(modes.join(","))
        }
        "node-status" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| str_at(c, "/type") == Some("Ready")))
                .map(|c| match str_at(c, "/status") {
                    Some("True") => "Ready",
                    _ => "NotReady",
                })
                .unwrap_or("Unknown");
            let unschedulable = obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true));
            Value::String(if unschedulable {
                format!("{ready},SchedulingDisabled")
            } else {
                ready.to_string()
            })
        }
        "node-roles" => {
            let mut roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .filter(|role| !role.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            joined_or_none(roles)
        }
        "node-internal-ip" | "node-external-ip" => {
            let wanted = if name == "node-internal-ip" {
                "InternalIP"
            } else {
                "ExternalIP"
            };
            let address = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|a| str_at(a, "/type") == Some(wanted)))
                .and_then(|a| str_at(a, "/address"));
            Value::String(address.unwrap_or("<none>").to_string())
        }
        "status-replicas" => json!(i64_at(obj, "/status/replicas")),
        "status-ready-replicas" => json!(i64_at(obj, "/status/readyReplicas")),
        "status-current-replicas" => json!(i64_at(obj, "/status/currentReplicas")),
        "daemonset-updated" => json!(i64_at(obj, "/status/updatedNumberScheduled")),
        "daemonset-available" => json!(i64_at(obj, "/status/numberAvailable")),
        "node-selector" => joined_or_none(
            obj.pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "cronjob-timezone" => Value::String(
            str_at(obj, "/spec/timeZone")
                .unwrap_or("<none>")
                .to_string(),
        ),
        "cronjob-suspend" => Value::String(
            if obj.pointer("/spec/suspend") == Some(&Value::Bool(true)) {
                "True"
            } else {
                "False"
            }
            .to_string(),
        ),
        "hpa-targets" => {
            let metrics = obj
                .pointer("/spec/metrics")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if metrics.is_empty() {
                return Value::String("<none>".into());
            }
            let targets: Vec<String> = metrics
                .iter()
                .map(|metric| {
                    let target = [
                        "resource",
                        "containerResource",
                        "pods",
                        "object",
                        "external",
                    ]
                    .iter()
                    .find_map(|source| metric.get(*source))
                    .and_then(|source| source.get("target"));
                    let wanted = match target {
                        Some(t) if t.get("averageUtilization").is_some() => {
                            format!("{}%", i64_at(t, "/averageUtilization"))
                        }
                        Some(t) => t
                            .get("averageValue")
                            .or_else(|| t.get("value"))
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            .unwrap_or_default(),
                        None => String::new(),
                    };
                    format!("<unknown>/{wanted}")
                })
                .collect();
            Value::String(targets.join(", "))
        }
        "cronjob-active" => json!(
            obj.pointer("/status/active")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        "cronjob-last-schedule" => match str_at(obj, "/status/lastScheduleTime")
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        {
            Some(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
            None => Value::String("<none>".into()),
        },
        "ingress-class" => Value::String(
            str_at(obj, "/spec/ingressClassName")
                .unwrap_or("<none>")
                .to_string(),
        ),
        "ingress-hosts" => {
            let hosts: Vec<String> = obj
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| str_at(r, "/host").map(str::to_string))
                .collect();
            Value::String(if hosts.is_empty() {
                "*".to_string()
            } else {
                hosts.join(",")
            })
        }
        "ingress-address" => Value::String(
            obj.pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| str_at(i, "/ip").or_else(|| str_at(i, "/hostname")))
                .collect::<Vec<_>>()
                .join(","),
        ),
        "ingress-ports" => {
            let tls = obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            Value::String(if tls { "80, 443" } else { "80" }.to_string())
        }
        "pv-claim" => match (
            str_at(obj, "/spec/claimRef/namespace"),
            str_at(obj, "/spec/claimRef/name"),
        ) {
            (Some(namespace), Some(claim)) => Value::String(format!("{namespace}/{claim}")),
            _ => Value::String(String::new()),
        },
        "allow-volume-expansion" => {
            Value::Bool(obj.pointer("/allowVolumeExpansion") == Some(&Value::Bool(true)))
        }
        "global-default" => Value::Bool(obj.pointer("/globalDefault") == Some(&Value::Bool(true))),
        "hpa-reference" => Value::String(format!(
            "{}/{}",
            str_at(obj, "/spec/scaleTargetRef/kind").unwrap_or_default(),
            str_at(obj, "/spec/scaleTargetRef/name").unwrap_or_default()
        )),
        "hpa-min-pods" => Value::String(
            obj.pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or("<unset>".to_string(), |n| n.to_string()),
        ),
        "csr-duration" => Value::String(
            obj.pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or("<none>".to_string(), human_duration),
        ),
        "csr-condition" => {
            let conditions: Vec<String> = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| str_at(c, "/type").map(str::to_string))
                .collect();
            Value::String(if conditions.is_empty() {
                "Pending".to_string()
            } else {
                conditions.join(",")
            })
        }
        "webhooks" => json!(
            obj.pointer("/webhooks")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        "apiservice-service" => match (
            str_at(obj, "/spec/service/namespace"),
            str_at(obj, "/spec/service/name"),
        ) {
            (Some(namespace), Some(name)) => Value::String(format!("{namespace}/{name}")),
            _ => Value::String("Local".into()),
        },
        "apiservice-available" => {
            let available = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| str_at(c, "/type") == Some("Available")));
            Value::String(match available {
                Some(c) if str_at(c, "/status") == Some("True") => "True".to_string(),
                Some(c) => format!(
                    "{} ({})",
                    str_at(c, "/status").unwrap_or("Unknown"),
                    str_at(c, "/reason").unwrap_or_default()
                ),
                None => "Unknown".to_string(),
            })
        }
        _ if name.starts_with("event-") => event_cell(name, obj, now),
        _ => listing_cell(name, obj),
    }
}

/// One cell of kube-apiserver's Event printer, from either Event API's form (core/v1 or
/// events.k8s.io/v1, whose fields carry other names).
fn event_cell(name: &str, obj: &Value, now: jiff::Timestamp) -> Value {
    let field = |core: &str, events: &str| {
        str_at(obj, core)
            .or_else(|| str_at(obj, events))
            .filter(|s| !s.is_empty())
    };
    let since = |stamp: Option<&str>| match stamp.map(str::parse::<jiff::Timestamp>) {
        Some(Ok(t)) => human_duration(now.duration_since(t).as_secs()),
        _ => "<unknown>".to_string(),
    };
    let first_seen = || {
        since(
            field("/firstTimestamp", "/deprecatedFirstTimestamp")
                .or_else(|| str_at(obj, "/eventTime")),
        )
    };
    let series_last = str_at(obj, "/series/lastObservedTime");
    let regarding = |key: &str| {
        field(
            &format!("/involvedObject/{key}"),
            &format!("/regarding/{key}"),
        )
    };
    match name {
        "event-last-seen" => match series_last {
            Some(last) => Value::String(since(Some(last))),
            None => match field("/lastTimestamp", "/deprecatedLastTimestamp") {
                Some(last) => Value::String(since(Some(last))),
                None => Value::String(first_seen()),
            },
        },
        "event-first-seen" => Value::String(first_seen()),
        "event-count" => {
            let count = obj
                .pointer("/series/count")
                .or_else(|| obj.pointer("/count"))
                .or_else(|| obj.pointer("/deprecatedCount"))
                .and_then(Value::as_i64)
                .filter(|count| *count != 0)
                // Singleton events of the new API carry no count.
                .unwrap_or(1);
            json!(count)
        }
        "event-object" => {
            let kind = regarding("kind").unwrap_or_default().to_lowercase();
            Value::String(match regarding("name") {
                Some(name) => format!("{kind}/{name}"),
                None => kind,
            })
        }
        "event-subobject" => Value::String(regarding("fieldPath").unwrap_or_default().into()),
        "event-source" => {
            let component = field("/source/component", "/deprecatedSource/component")
                .or_else(|| field("/reportingComponent", "/reportingController"))
                .unwrap_or_default();
            Value::String(
                match field("/source/host", "/deprecatedSource/host")
                    .or_else(|| str_at(obj, "/reportingInstance").filter(|s| !s.is_empty()))
                {
                    Some(instance) => format!("{component}, {instance}"),
                    None => component.to_string(),
                },
            )
        }
        "event-message" => Value::String(
            field("/message", "/note")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        _ => Value::Null,
    }
}

/// At most three entries joined by commas, then how many more there are, as
/// kube-apiserver's printers shorten long lists (`<unset>` when there is none).
fn first_three(entries: Vec<String>, unset: &str) -> String {
    const SHOWN: usize = 3;
    if entries.is_empty() {
        return unset.to_string();
    }
    let more = entries.len().saturating_sub(SHOWN);
    let shown = entries[..entries.len().min(SHOWN)].join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

/// A label selector (`matchLabels` and `matchExpressions`) as metav1.FormatLabelSelector
/// prints it: `<none>` for the empty one.
pub(crate) fn label_selector_text(selector: Option<&Value>) -> String {
    let mut terms = Vec::new();
    if let Some(labels) = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            terms.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
    }
    for expression in selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(expression, "/key").unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let values = values.join(",");
        terms.push(match str_at(expression, "/operator").unwrap_or_default() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({values})"),
        });
    }
    if terms.is_empty() {
        "<none>".to_string()
    } else {
        terms.join(",")
    }
}

/// The cells of the kinds that list addresses, subjects or references.
fn listing_cell(name: &str, obj: &Value) -> Value {
    let array = |pointer: &str| {
        obj.pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let subjects = |kind: &str| {
        let names: Vec<String> = array("/subjects")
            .iter()
            .filter(|subject| str_at(subject, "/kind") == Some(kind))
            .map(|subject| {
                let name = str_at(subject, "/name").unwrap_or_default();
                match str_at(subject, "/namespace") {
                    Some(namespace) if kind == "ServiceAccount" => format!("{namespace}/{name}"),
                    _ => name.to_string(),
                }
            })
            .collect();
        Value::String(names.join(", "))
    };
    let int_or_percent = |pointer: &str| match obj.pointer(pointer) {
        Some(Value::Number(n)) => Value::String(n.to_string()),
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::String("N/A".into()),
    };
    match name {
        "spec-replicas" => json!(
            obj.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        ),
        "label-selector" => Value::String(label_selector_text(obj.pointer("/spec/selector"))),
        "pod-selector" => Value::String(label_selector_text(obj.pointer("/spec/podSelector"))),
        "created-at" => Value::String(
            str_at(obj, "/metadata/creationTimestamp")
                .unwrap_or_default()
                .to_string(),
        ),
        "controller" => {
            let owner = array("/metadata/ownerReferences")
                .into_iter()
                .find(|owner| owner.get("controller") == Some(&Value::Bool(true)));
            Value::String(match owner {
                None => "<none>".to_string(),
                Some(owner) => {
                    let kind = str_at(&owner, "/kind").unwrap_or_default();
                    let group = str_at(&owner, "/apiVersion")
                        .and_then(|v| v.rsplit_once('/'))
                        .map(|(group, _)| group);
                    let kind = match group {
                        Some(group) => format!("{kind}.{group}"),
                        None => kind.to_string(),
                    };
                    format!(
                        "{}/{}",
                        kind.to_lowercase(),
                        str_at(&owner, "/name").unwrap_or_default()
                    )
                }
            })
        }
        "endpoints" => {
            let subsets = array("/subsets");
            if subsets.is_empty() {
                return Value::String("<none>".into());
            }
            let mut entries = Vec::new();
            for subset in &subsets {
                let ips: Vec<&str> = subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|address| str_at(address, "/ip"))
                    .collect();
                let ports = subset.get("ports").and_then(Value::as_array);
                match ports.filter(|ports| !ports.is_empty()) {
                    // A headless Service's endpoints may name no port.
                    None => entries.extend(ips.iter().map(|ip| ip.to_string())),
                    Some(ports) => {
                        for port in ports {
                            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                            entries.extend(ips.iter().map(|ip| {
                                if ip.contains(':') {
                                    format!("[{ip}]:{number}")
                                } else {
                                    format!("{ip}:{number}")
                                }
                            }));
                        }
                    }
                }
            }
            // Addresses without a port list nothing: an empty cell, as kube prints it.
            if entries.is_empty() {
                return Value::String(String::new());
            }
            Value::String(first_three(entries, ""))
        }
        "endpointslice-ports" => Value::String(first_three(
            array("/ports")
                .iter()
                .map(|port| match port.get("port").and_then(Value::as_i64) {
                    Some(number) => number.to_string(),
                    None => str_at(port, "/name").unwrap_or("*").to_string(),
                })
                .collect(),
            "<unset>",
        )),
        "endpointslice-endpoints" => Value::String(first_three(
            array("/endpoints")
                .iter()
                .flat_map(|endpoint| {
                    endpoint
                        .get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|address| address.as_str().map(str::to_string))
                .collect(),
            "<unset>",
        )),
        "secrets-count" => json!(array("/secrets").len()),
        "binding-role" => Value::String(format!(
            "{}/{}",
            str_at(obj, "/roleRef/kind").unwrap_or_default(),
            str_at(obj, "/roleRef/name").unwrap_or_default()
        )),
        "binding-users" => subjects("User"),
        "binding-groups" => subjects("Group"),
        "binding-service-accounts" => subjects("ServiceAccount"),
        "pdb-min-available" => int_or_percent("/spec/minAvailable"),
        "pdb-max-unavailable" => int_or_percent("/spec/maxUnavailable"),
        "pdb-allowed-disruptions" => json!(i64_at(obj, "/status/disruptionsAllowed")),
        "ingressclass-parameters" => Value::String(match obj.pointer("/spec/parameters") {
            None | Some(Value::Null) => "<none>".to_string(),
            Some(parameters) => {
                let kind = str_at(parameters, "/kind").unwrap_or_default();
                let kind = match str_at(parameters, "/apiGroup") {
                    Some(group) => format!("{kind}.{group}"),
                    None => kind.to_string(),
                };
                format!("{kind}/{}", str_at(parameters, "/name").unwrap_or_default())
            }
        }),
        _ => Value::Null,
    }
}

// ------------------------------------------------------------------ JSONPath

/// One step of a Kubernetes JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter {
        path: Vec<Step>,
        operator: FilterOperator,
        literal: Value,
    },
    /// `[?(@.x)]`: elements where the path exists.
    Exists(Vec<Step>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FilterOperator {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// The first value a JSONPath selects, as the CRD table convertor uses it.
pub fn jsonpath_first(obj: &Value, path: &str) -> Option<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let steps = parse_steps(path.strip_prefix('$').unwrap_or(path))?;
    evaluate(obj, &steps).into_iter().next().cloned()
}

fn parse_steps(path: &str) -> Option<Vec<Step>> {
    let chars: Vec<char> = path.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if name == "*" {
                    steps.push(Step::Wildcard);
                } else if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let mut depth = 0;
                let start = i + 1;
                let mut in_quote: Option<char> = None;
                while i < chars.len() {
                    let c = chars[i];
                    match in_quote {
                        Some(q) if c == q => in_quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => in_quote = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    i += 1;
                }
                let inner: String = chars.get(start..i)?.iter().collect();
                i += 1;
                steps.push(parse_bracket(inner.trim())?);
            }
            _ => {
                // A path may start without a dot: `metadata.name`.
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Some(steps)
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::Wildcard);
    }
    if let Some(name) = unquote(inner) {
        return Some(Step::Field(name.to_string()));
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let operators = [
            ("==", FilterOperator::Equal),
            ("!=", FilterOperator::NotEqual),
            ("<=", FilterOperator::LessOrEqual),
            (">=", FilterOperator::GreaterOrEqual),
            ("<", FilterOperator::Less),
            (">", FilterOperator::Greater),
        ];
        for (text, operator) in operators {
            if let Some((left, right)) = filter.split_once(text) {
                let path = parse_steps(left.trim().strip_prefix('@')?)?;
                let right = right.trim();
                let literal = match unquote(right) {
                    Some(s) => Value::String(s.to_string()),
                    None => serde_json::from_str(right).ok()?,
                };
                return Some(Step::Filter {
                    path,
                    operator,
                    literal,
                });
            }
        }
        return Some(Step::Exists(parse_steps(filter.trim().strip_prefix('@')?)?));
    }
    inner.parse().ok().map(Step::Index)
}

fn evaluate<'a>(obj: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let mut current = vec![obj];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match (step, value) {
                (Step::Field(name), Value::Object(map)) => next.extend(map.get(name)),
                (Step::Index(i), Value::Array(items)) => {
                    let index = if *i < 0 { items.len() as i64 + i } else { *i };
                    if let Ok(index) = usize::try_from(index) {
                        next.extend(items.get(index));
                    }
                }
                (Step::Wildcard, Value::Array(items)) => next.extend(items.iter()),
                (Step::Wildcard, Value::Object(map)) => next.extend(map.values()),
                (
                    Step::Filter {
                        path,
                        operator,
                        literal,
                    },
                    Value::Array(items),
                ) => {
                    next.extend(items.iter().filter(|item| {
                        evaluate(item, path)
                            .first()
                            .is_some_and(|found| compare(found, *operator, literal))
                    }));
                }
                (Step::Exists(path), Value::Array(items)) => {
                    next.extend(items.iter().filter(|item| !evaluate(item, path).is_empty()));
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

fn compare(found: &Value, operator: FilterOperator, literal: &Value) -> bool {
    let ordering = match (found, literal) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match operator {
        FilterOperator::Equal => found == literal || ordering == Some(std::cmp::Ordering::Equal),
        FilterOperator::NotEqual => {
            !(found == literal || ordering == Some(std::cmp::Ordering::Equal))
        }
        FilterOperator::Less => ordering == Some(std::cmp::Ordering::Less),
        FilterOperator::LessOrEqual => ordering.is_some_and(|o| o != std::cmp::Ordering::Greater),
        FilterOperator::Greater => ordering == Some(std::cmp::Ordering::Greater),
        FilterOperator::GreaterOrEqual => ordering.is_some_and(|o| o != std::cmp::Ordering::Less),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tusk_crd_version(kind: &str) -> Value {
        tusk_api::crds()
            .into_iter()
            .map(|crd| serde_json::to_value(crd).unwrap())
            .find(|crd| crd["spec"]["names"]["kind"] == kind)
            .map(|crd| crd["spec"]["versions"][0].clone())
            .unwrap()
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_columns_and_cells() {
        let columns = PrinterColumn::from_crd_version(&tusk_crd_version("PostgresCluster"));
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Display Name",
                "Phase",
                "Memory",
                "Disk",
                "Endpoint",
                "Restore",
                "Last Backup",
                "Backed Up",
                "Age"
            ]
        );
        let cluster = json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "orders", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"displayName": "Orders", "memorySize": 4, "postgresDiskSize": 20},
            "status": {"phase": "Ready"},
        });
        let table = render_table_at(
            &columns,
            std::slice::from_ref(&cluster),
            IncludeObject::Metadata,
            json!({"resourceVersion": "42"}),
            at("2026-01-03T05:00:00Z"),
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"]["resourceVersion"], "42");
        assert_eq!(
            table["rows"][0]["cells"],
            json!([
                "orders", "Orders", "Ready", 4, 20, null, null, null, null, "2d5h"
            ])
        );
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["columnDefinitions"][3]["type"], "integer");
        assert_eq!(
            table["columnDefinitions"][3]["description"],
            "Memory in GiB"
        );
        assert_eq!(table["columnDefinitions"][7]["priority"], 1);
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "orders");

        let bare = render_table_at(
            &columns,
            std::slice::from_ref(&cluster),
            IncludeObject::None,
            json!({}),
            at("2026-01-01T00:00:30Z"),
        );
        assert!(bare["rows"][0].get("object").is_none());
        assert_eq!(bare["rows"][0]["cells"][9], "30s");
        let full = render_table_at(
            &columns,
            std::slice::from_ref(&cluster),
            IncludeObject::Object,
            json!({}),
            at("2026-01-01T00:00:30Z"),
        );
        assert_eq!(full["rows"][0]["object"], cluster);
    }

    #[test]
    fn every_tusk_crd_has_name_first_and_age() {
        for crd in tusk_api::crds() {
            let crd = serde_json::to_value(crd).unwrap();
            let columns = PrinterColumn::from_crd_version(&crd["spec"]["versions"][0]);
            assert_eq!(columns[0].name, "Name");
            assert!(
                columns.iter().any(|c| c.type_ == "date"),
                "{}",
                crd["metadata"]["name"]
            );
        }
        assert_eq!(
            PrinterColumn::from_crd_version(&json!({"name": "v1"})),
            default_columns()
        );
    }

    #[test]
    fn jsonpath_filters_and_indices() {
        let obj = json!({
            "status": {"conditions": [
                {"type": "Progressing", "status": "False", "n": 1},
                {"type": "Ready", "status": "True", "n": 2},
            ]},
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}},
        });
        let first = |p: &str| jsonpath_first(&obj, p);
        assert_eq!(
            first(r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(json!("True"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type=='Progressing')].status"),
            Some(json!("False"))
        );
        assert_eq!(
            first(".status.conditions[?(@.n>1)].type"),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(r#".status.conditions[?(@.type!="Ready")].type"#),
            Some(json!("Progressing"))
        );
        assert_eq!(first(".status.conditions[1].type"), Some(json!("Ready")));
        assert_eq!(first(".status.conditions[-1].n"), Some(json!(2)));
        assert_eq!(
            first(".status.conditions[*].type"),
            Some(json!("Progressing"))
        );
        assert_eq!(
            first(".metadata.labels['app.kubernetes.io/name']"),
            Some(json!("x"))
        );
        assert_eq!(
            first(r#".status.conditions[?(@.type=="Missing")].status"#),
            None
        );
        assert_eq!(first(".spec.nothing"), None);
    }

    #[test]
    fn typed_cells() {
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(typed_cell("integer", &json!(3.0), now), json!(3));
        assert_eq!(typed_cell("integer", &json!("3"), now), Value::Null);
        assert_eq!(typed_cell("number", &json!(3), now), json!(3.0));
        assert_eq!(typed_cell("boolean", &json!(true), now), json!(true));
        assert_eq!(typed_cell("string", &json!(12), now), json!("12"));
        assert_eq!(
            typed_cell("date", &json!("nonsense"), now),
            json!("<invalid>")
        );
    }

    #[test]
    fn human_durations_match_go() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (9 * 86400, "9d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
            (-5, "<invalid>"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}");
        }
    }

    #[test]
    fn builtin_pod_and_deployment_columns() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-0", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "postgres"}, {"name": "exporter"}], "nodeName": "sandbox"},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [
                {"name": "postgres", "ready": true, "restartCount": 2},
                {"name": "exporter", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let columns = builtin_columns("v1", "Pod").unwrap();
        let table = render_table_at(
            &columns,
            &[pod],
            IncludeObject::None,
            json!({}),
            at("2026-01-01T00:05:00Z"),
        );
        assert_eq!(
            table["rows"][0]["cells"],
            json!([
                "db-0",
                "1/2",
                "CrashLoopBackOff",
                "3",
                "5m",
                "127.0.0.1",
                "sandbox",
                null,
                "<none>"
            ])
        );
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let columns = builtin_columns("apps/v1", "Deployment").unwrap();
        let table = render_table_at(
            &columns,
            &[deploy],
            IncludeObject::None,
            json!({}),
            at("2026-01-01T00:00:10Z"),
        );
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["web", "1/2", 2, 1, "10s", "app", "web:1", "app=web"])
        );
        assert!(builtin_columns("postgres.tusk.dev/v1", "PostgresCluster").is_none());
        for (api_version, kind) in [
            ("batch/v1", "Job"),
            ("apps/v1", "StatefulSet"),
            ("v1", "Service"),
            ("v1", "Secret"),
            ("v1", "ConfigMap"),
            ("v1", "Namespace"),
            ("v1", "PersistentVolumeClaim"),
            ("coordination.k8s.io/v1", "Lease"),
            ("v1", "Event"),
            ("events.k8s.io/v1", "Event"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "ControllerRevision"),
            ("v1", "Endpoints"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("v1", "ServiceAccount"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            ("policy/v1", "PodDisruptionBudget"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("networking.k8s.io/v1", "IngressClass"),
        ] {
            let columns = builtin_columns(api_version, kind).unwrap();
            let table = render_table_at(
                &columns,
                &[json!({"metadata": {"name": "x"}})],
                IncludeObject::None,
                json!({}),
                at("2026-01-01T00:00:00Z"),
            );
            assert_eq!(
                table["rows"][0]["cells"].as_array().unwrap().len(),
                columns.len()
            );
        }
    }
}
