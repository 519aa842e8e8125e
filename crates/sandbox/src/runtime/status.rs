//! What the runtime knows of a pod's containers, and the pod status it renders from that, as
//! the kubelet writes it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::{Value, json};

use crate::apiserver::ops::now;

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Termination {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub container_id: Option<String>,
}

impl Termination {
    fn to_json(&self) -> Value {
        let mut out = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": self.finished_at,
        });
        if let Some(started) = &self.started_at {
            out["startedAt"] = json!(started);
        }
        if let Some(message) = &self.message {
            out["message"] = json!(message);
        }
        if let Some(id) = &self.container_id {
            out["containerID"] = json!(id);
        }
        out
    }
}

/// A container's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Termination),
}

/// One container as the runtime tracks it.
#[derive(Clone, Debug)]
pub(crate) struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Termination>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    pub container_id: Option<String>,
}

impl ContainerRecord {
    /// A container about to be created; after a runtime restart it carries on from the status
    /// the previous runtime wrote, as the kubelet does after a node reboot.
    fn new(name: &str, image: &str, previous: Option<&ContainerStatus>) -> Self {
        let mut record = Self {
            name: name.to_string(),
            image: image.to_string(),
            state: State::Waiting {
                reason: "ContainerCreating".to_string(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
        };
        let Some(previous) = previous else {
            return record;
        };
        let state = previous.state.clone().unwrap_or_default();
        if let Some(running) = state.running {
            record.restart_count = previous.restart_count + 1;
            // The node went down under it: the kubelet reports such an instance this way.
            record.last = Some(Termination {
                exit_code: 255,
                reason: "Unknown".to_string(),
                message: None,
                started_at: running.started_at.map(|t| t.0.to_string()),
                finished_at: now(),
                container_id: previous.container_id.clone(),
            });
        } else if let Some(terminated) = state.terminated {
            record.restart_count = previous.restart_count + 1;
            record.last = Some(Termination {
                exit_code: terminated.exit_code,
                reason: terminated.reason.unwrap_or_else(|| "Error".to_string()),
                message: terminated.message,
                started_at: terminated.started_at.map(|t| t.0.to_string()),
                finished_at: terminated
                    .finished_at
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(now),
                container_id: terminated.container_id,
            });
        } else {
            record.restart_count = previous.restart_count;
            record.last = previous
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.clone())
                .map(|t| Termination {
                    exit_code: t.exit_code,
                    reason: t.reason.unwrap_or_else(|| "Error".to_string()),
                    message: t.message,
                    started_at: t.started_at.map(|t| t.0.to_string()),
                    finished_at: t.finished_at.map(|t| t.0.to_string()).unwrap_or_else(now),
                    container_id: t.container_id,
                });
        }
        record
    }

    fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut waiting = json!({"reason": reason});
                if let Some(message) = message {
                    waiting["message"] = json!(message);
                }
                json!({"waiting": waiting})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(termination) => json!({"terminated": termination.to_json()}),
        };
        let last = match &self.last {
            Some(termination) => json!({"terminated": termination.to_json()}),
            None => json!({}),
        };
        let mut out = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": last,
        });
        if let Some(id) = &self.container_id {
            out["containerID"] = json!(id);
        }
        out
    }

    fn terminated(&self) -> Option<&Termination> {
        match &self.state {
            State::Terminated(termination) => Some(termination),
            _ => None,
        }
    }
}

/// Everything the pod's status is rendered from.
#[derive(Debug)]
pub(crate) struct PodState {
    pub init: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    pub initialized: bool,
    pub pod_ip: Ipv4Addr,
    pub start_time: String,
    pub restart_policy: String,
    /// Set when an init container failed for good: the pod goes no further.
    pub failed: bool,
    /// Set once a deleted pod's containers have stopped: its phase is then terminal.
    pub deleted: bool,
}

impl PodState {
    /// The state of a pod about to start, carrying on from its previous status if any.
    pub fn new(pod: &Pod, pod_ip: Ipv4Addr) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let records = |containers: &[k8s_openapi::api::core::v1::Container],
                       previous: &[ContainerStatus]| {
            containers
                .iter()
                .map(|c| {
                    let before = previous.iter().find(|s| s.name == c.name);
                    ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or(""), before)
                })
                .collect::<Vec<_>>()
        };
        let init = records(
            spec.init_containers.as_deref().unwrap_or_default(),
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default(),
        );
        // Init containers that completed before a runtime restart do not run again.
        let initialized = init.is_empty()
            || status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Initialized" && c.status == "True");
        let mut containers = records(
            &spec.containers,
            status.container_statuses.as_deref().unwrap_or_default(),
        );
        if !initialized {
            for container in &mut containers {
                if let State::Waiting { reason, .. } = &mut container.state {
                    *reason = "PodInitializing".to_string();
                }
            }
        }
        Self {
            init,
            containers,
            initialized,
            pod_ip,
            start_time: status
                .start_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(now),
            restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".to_string()),
            failed: false,
            deleted: false,
        }
    }

    /// The pod phase, by the kubelet's rules.
    pub fn phase(&self) -> &'static str {
        if self.failed {
            return "Failed";
        }
        if self.deleted {
            // A deleted pod ends in a terminal phase, by its containers' exit codes.
            let all_succeeded = self
                .containers
                .iter()
                .filter_map(|c| c.terminated().or(c.last.as_ref()))
                .all(|t| t.exit_code == 0);
            return if all_succeeded { "Succeeded" } else { "Failed" };
        }
        if !self.initialized {
            return "Pending";
        }
        let running = self
            .containers
            .iter()
            .filter(|c| matches!(c.state, State::Running { .. }))
            .count();
        // A container waiting to be restarted counts as stopped, with its last termination.
        let stopped: Vec<&Termination> = self
            .containers
            .iter()
            .filter_map(|c| match &c.state {
                State::Terminated(t) => Some(t),
                State::Waiting { .. } => c.last.as_ref(),
                State::Running { .. } => None,
            })
            .collect();
        let waiting_fresh = self.containers.len() - running - stopped.len();
        if waiting_fresh > 0 {
            return "Pending";
        }
        if running > 0 {
            return "Running";
        }
        let all_succeeded = stopped.iter().all(|t| t.exit_code == 0);
        let all_terminated = self.containers.iter().all(|c| c.terminated().is_some());
        match self.restart_policy.as_str() {
            "Never" if all_terminated => {
                if all_succeeded {
                    "Succeeded"
                } else {
                    "Failed"
                }
            }
            "OnFailure" if all_terminated && all_succeeded => "Succeeded",
            _ => "Running",
        }
    }
}

/// Renders statuses and remembers when each condition last changed.
#[derive(Debug, Default)]
pub(crate) struct StatusRenderer {
    transitions: BTreeMap<&'static str, (bool, String)>,
    scheduled: Option<Value>,
}

impl StatusRenderer {
    /// Keeps the scheduler's PodScheduled condition (a merge patch replaces the whole list).
    pub fn new(pod: &Pod) -> Self {
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| serde_json::to_value(c).ok());
        let mut transitions = BTreeMap::new();
        for condition in pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            let name = match condition.type_.as_str() {
                "Initialized" => "Initialized",
                "Ready" => "Ready",
                "ContainersReady" => "ContainersReady",
                "PodReadyToStartContainers" => "PodReadyToStartContainers",
                _ => continue,
            };
            if let Some(time) = &condition.last_transition_time {
                transitions.insert(name, (condition.status == "True", time.0.to_string()));
            }
        }
        Self {
            transitions,
            scheduled,
        }
    }

    /// A condition; when false, `why` gives its reason and the containers it waits for.
    fn condition(
        &mut self,
        name: &'static str,
        value: bool,
        why: Option<(&str, &str, Vec<&str>)>,
    ) -> Value {
        let entry = self
            .transitions
            .entry(name)
            .or_insert_with(|| (value, now()));
        if entry.0 != value {
            *entry = (value, now());
        }
        let mut out = json!({
            "type": name,
            "status": if value { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let (false, Some((reason, status, containers))) = (value, why) {
            out["reason"] = json!(reason);
            out["message"] = json!(format!(
                "containers with {status} status: [{}]",
                containers.join(" ")
            ));
        }
        out
    }

    /// The status of the pod in `state`.
    pub fn render(&mut self, state: &PodState) -> Value {
        let phase = state.phase();
        let containers_ready =
            !state.containers.is_empty() && state.containers.iter().all(|c| c.ready);
        let ip = state.pod_ip.to_string();
        let incomplete: Vec<&str> = state
            .init
            .iter()
            .filter(|c| c.terminated().is_none_or(|t| t.exit_code != 0))
            .map(|c| c.name.as_str())
            .collect();
        let unready: Vec<&str> = state
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", true, None),
            self.condition(
                "Initialized",
                state.initialized,
                Some(("ContainersNotInitialized", "incomplete", incomplete)),
            ),
            self.condition(
                "Ready",
                containers_ready,
                Some(("ContainersNotReady", "unready", unready.clone())),
            ),
            self.condition(
                "ContainersReady",
                containers_ready,
                Some(("ContainersNotReady", "unready", unready)),
            ),
        ];
        if let Some(scheduled) = &self.scheduled {
            conditions.push(scheduled.clone());
        }
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": state.start_time,
            "qosClass": "BestEffort",
            "containerStatuses": state.containers.iter().map(ContainerRecord::to_json).collect::<Vec<_>>(),
        });
        if !state.init.is_empty() {
            status["initContainerStatuses"] =
                Value::Array(state.init.iter().map(ContainerRecord::to_json).collect());
        }
        status
    }
}
