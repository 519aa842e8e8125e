//! Whether the spec's parameters are in force, from the instance's own report.
//!
//! The instance checks each new configuration against PostgreSQL before the running server
//! sees it, and says at `/parameters` on its health port what became of it (see
//! [`tusk_api::instance`]). From that report this module decides three things:
//! - whether a restart-only change may roll the pod: only once the instance has checked the new
//!   configuration and PostgreSQL accepted it ([`template_restart_hash`]), so a typo never takes
//!   a running database down;
//! - what the status says: `Degraded` `InvalidParameter` with PostgreSQL's message while the
//!   configuration is refused, `Progressing` while it is being loaded ([`overlay`]);
//! - whether `observedGeneration` may advance: only when the configuration is in force.
//!
//! Parameters whose shared memory cannot fit in the pod's memory limit are refused the same way
//! before any instance sees them ([`state`]), and the running configuration is kept in the
//! ConfigMap ([`keep_running_configuration`]).
//!
//! The report comes from a pod whose database the tenant controls, so it is untrusted: it is
//! asked for only at the IP the kubelet reported for a pod the cluster's StatefulSet controls,
//! read with a time limit and a size limit, and every string in it is checked or cleaned.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::api::Api;
use sha2::{Digest as _, Sha256};
use tusk_api::cluster::ClusterPhase;
use tusk_api::conditions::{FALSE, TRUE, reasons, types};
use tusk_api::instance::{
    MAX_REPORT_BYTES, PARAMETERS_PATH, ParameterOutcome, ParameterReport, printable as clean,
};
use tusk_api::{PostgresCluster, PostgresClusterStatus};

use super::{instance_report, postgresql_conf};
use crate::conditions::{self, DesiredCondition};
use crate::error::{Error, Result};

/// The most refused settings shown.
const MAX_REFUSED: usize = 16;
/// The most of one refusal's message shown.
const MAX_MESSAGE: usize = 512;
/// The most of the whole refusal shown: an Event's note may have at most 1 KiB.
const MAX_REFUSAL: usize = 1024;
/// The Event action of a refused configuration.
const CHECK_PARAMETERS: &str = "CheckParameters";

/// Where the instance stands with the configuration the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigState {
    /// No instance serves: there is nothing running to protect, and the instance's own
    /// failure, if any, says the rest.
    NotServing,
    /// The instance serves but has not (yet) reported on the desired configuration: the
    /// kubelet has not updated the mounted file, the check is running, or the report cannot be
    /// read (the text says which).
    Waiting(String),
    /// PostgreSQL accepted the desired configuration. `loaded` once the running server has
    /// loaded it; `pending_restart` lists what only a restart changes.
    Accepted {
        /// The running server has loaded it.
        loaded: bool,
        /// Settings that wait for a restart.
        pending_restart: Vec<String>,
    },
    /// PostgreSQL refused the desired configuration; the running one stays in force.
    Refused {
        /// Each refused setting with PostgreSQL's message.
        message: String,
    },
}

impl ConfigState {
    /// Whether the spec's parameters are in force.
    pub fn in_force(&self) -> bool {
        match self {
            Self::NotServing => true,
            Self::Accepted {
                loaded,
                pending_restart,
            } => *loaded && pending_restart.is_empty(),
            Self::Waiting(_) | Self::Refused { .. } => false,
        }
    }

    /// The action of the Warning Event of a refusal, `CheckParameters`; `None` when the
    /// configuration is not refused.
    pub fn event_action(&self) -> Option<&'static str> {
        match self {
            Self::Refused { .. } => Some(CHECK_PARAMETERS),
            _ => None,
        }
    }
}

/// Where the serving instance (at `pod_ip`, if one serves) stands with the spec's
/// configuration, rendered as `rendered`. Parameters that cannot fit in `memorySize`
/// ([`postgresql_conf::sizing_refusal`]) are refused before any instance sees them.
pub async fn state(cluster: &PostgresCluster, pod_ip: Option<&str>, rendered: &str) -> ConfigState {
    match postgresql_conf::sizing_refusal(cluster) {
        Some(message) => ConfigState::Refused { message },
        None => observe(pod_ip, &config_sha256(rendered)).await,
    }
}

/// Keeps the running configuration while the spec's parameters cannot fit in `memorySize`:
/// the ConfigMap's current postgresql.conf, when there is one, replaces `desired`'s, so that
/// neither a reload nor a restart of the instance takes up the refused configuration. A new
/// cluster gets `desired`'s, from which the settings that cannot fit are left out. (A
/// configuration PostgreSQL refused is written all the same: the instance must read it to
/// check it, and keeps the running one in force itself.)
pub async fn keep_running_configuration(
    client: &kube::Client,
    namespace: &str,
    cluster: &PostgresCluster,
    desired: &mut ConfigMap,
) -> Result<()> {
    if postgresql_conf::sizing_refusal(cluster).is_none() {
        return Ok(());
    }
    let name = desired.name_any();
    let running = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
        .map_err(|source| Error::Get {
            kind: "ConfigMap",
            name,
            source,
        })?;
    if let Some(data) = running.and_then(|running| running.data) {
        desired.data = Some(data);
    }
    Ok(())
}

/// The SHA-256 of the configuration file the ConfigMap holds, as the instance reports it.
pub fn config_sha256(rendered: &str) -> String {
    Sha256::digest(rendered.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Where the serving instance (at `pod_ip`, if one serves) stands with the configuration whose
/// SHA-256 is `desired_sha256`.
pub async fn observe(pod_ip: Option<&str>, desired_sha256: &str) -> ConfigState {
    let Some(pod_ip) = pod_ip else {
        return ConfigState::NotServing;
    };
    classify(fetch_report(pod_ip).await, desired_sha256)
}

/// [`ConfigState`] from the report (or why it could not be read).
pub fn classify(report: Result<ParameterReport, String>, desired_sha256: &str) -> ConfigState {
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            return ConfigState::Waiting(format!(
                "Cannot read the instance's configuration report: {error}"
            ));
        }
    };
    if report.config_sha256 != desired_sha256 {
        return ConfigState::Waiting(
            "Waiting for the instance to check the new configuration".to_owned(),
        );
    }
    match report.outcome {
        ParameterOutcome::Refused => ConfigState::Refused {
            message: refusal_message(&report),
        },
        ParameterOutcome::Loading => ConfigState::Accepted {
            loaded: false,
            pending_restart: Vec::new(),
        },
        ParameterOutcome::Loaded => ConfigState::Accepted {
            loaded: true,
            pending_restart: report
                .pending_restart
                .iter()
                .take(MAX_REFUSED)
                .map(|name| setting_name(name))
                .collect(),
        },
    }
}

/// The restart hash the pod template carries: the spec's (`desired`) unless an instance serves
/// and PostgreSQL has not accepted the spec's configuration, in which case the template keeps
/// `existing` and the pod does not restart.
pub fn template_restart_hash(
    desired: String,
    existing: Option<&str>,
    state: &ConfigState,
) -> String {
    match (existing, state) {
        (Some(existing), ConfigState::Waiting(_) | ConfigState::Refused { .. }) => {
            existing.to_owned()
        }
        _ => desired,
    }
}

/// The status with what the configuration's state adds: `Degraded` `InvalidParameter` while
/// it is refused (the instance keeps serving, so `Ready` is left as it is), `Progressing`
/// while it is being loaded, and `observedGeneration` held at its previous value while the
/// spec is not in force.
pub fn overlay(
    mut status: PostgresClusterStatus,
    state: &ConfigState,
    previous: Option<&PostgresClusterStatus>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> PostgresClusterStatus {
    if state.in_force() {
        return status;
    }
    status.observed_generation = previous.and_then(|previous| previous.observed_generation);
    let desired = match state {
        ConfigState::Refused { message, .. } => {
            status.phase = Some(ClusterPhase::Degraded);
            vec![
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::INVALID_PARAMETER,
                    "The running configuration stays in force until the parameters are fixed",
                ),
                DesiredCondition::new(types::DEGRADED, TRUE, reasons::INVALID_PARAMETER, message),
            ]
        }
        ConfigState::Waiting(message) => progressing(&mut status, message),
        ConfigState::Accepted {
            pending_restart, ..
        } if !pending_restart.is_empty() => progressing(
            &mut status,
            &format!(
                "Restarting PostgreSQL for {}, which PostgreSQL accepted",
                pending_restart.join(", ")
            ),
        ),
        ConfigState::Accepted { .. } | ConfigState::NotServing => {
            progressing(&mut status, "PostgreSQL is loading the new configuration")
        }
    };
    status.conditions = conditions::merge(&status.conditions, &desired, generation, now);
    status
}

fn progressing(status: &mut PostgresClusterStatus, message: &str) -> Vec<DesiredCondition> {
    if status.phase == Some(ClusterPhase::Ready) {
        status.phase = Some(ClusterPhase::Updating);
    }
    vec![DesiredCondition::new(
        types::PROGRESSING,
        TRUE,
        reasons::UPDATING,
        message,
    )]
}

/// What a refusal says: each setting with PostgreSQL's message, cleaned and bounded.
fn refusal_message(report: &ParameterReport) -> String {
    let refused: Vec<String> = report
        .refused
        .iter()
        .take(MAX_REFUSED)
        .map(|refused| {
            let message = clean(&refused.message, MAX_MESSAGE);
            match setting_name(&refused.name) {
                name if name.is_empty() => message,
                name => format!("{name}: {message}"),
            }
        })
        .collect();
    let message = format!(
        "PostgreSQL refuses the parameters; the running configuration stays in force: {}",
        if refused.is_empty() {
            "no reason given".to_owned()
        } else {
            refused.join("; ")
        }
    );
    clean(&message, MAX_REFUSAL)
}

/// A setting's name as the report gives it, kept only when it looks like one.
fn setting_name(name: &str) -> String {
    let plain = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if plain {
        name.to_owned()
    } else {
        "?".to_owned()
    }
}

/// Reads the report of the instance at `pod_ip` (an address, never a name), within
/// [`MAX_REPORT_BYTES`], and checks that it names a configuration.
async fn fetch_report(pod_ip: &str) -> Result<ParameterReport, String> {
    let report: ParameterReport =
        instance_report::fetch(pod_ip, PARAMETERS_PATH, MAX_REPORT_BYTES).await?;
    let well_formed = report.config_sha256.len() == 64
        && report
            .config_sha256
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    if !well_formed {
        return Err("the instance's report names no configuration".to_owned());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::instance::RefusedParameter;

    fn report(sha: &str, outcome: ParameterOutcome) -> ParameterReport {
        ParameterReport {
            config_sha256: sha.to_owned(),
            outcome,
            refused: Vec::new(),
            pending_restart: Vec::new(),
        }
    }

    #[test]
    fn a_restart_only_change_rolls_only_once_postgresql_accepted_it() {
        let desired = || "new".to_owned();
        let refused = classify(Ok(report("b", ParameterOutcome::Refused)), "b");
        let unseen = classify(Ok(report("a", ParameterOutcome::Loaded)), "b");
        let unreadable = classify(Err("connection refused".into()), "b");
        let accepted = classify(Ok(report("b", ParameterOutcome::Loading)), "b");
        for held in [&refused, &unseen, &unreadable] {
            assert_eq!(template_restart_hash(desired(), Some("old"), held), "old");
        }
        assert_eq!(
            template_restart_hash(desired(), Some("old"), &accepted),
            "new"
        );
        // Nothing serves (a new or failing instance): nothing to protect, the fix must roll.
        assert_eq!(
            template_restart_hash(desired(), Some("old"), &ConfigState::NotServing),
            "new"
        );
        assert_eq!(template_restart_hash(desired(), None, &refused), "new");
    }

    #[test]
    fn a_refusal_degrades_the_cluster_and_holds_the_observed_generation() {
        let mut refused = report("b", ParameterOutcome::Refused);
        refused.refused = vec![RefusedParameter {
            name: "work_mem".into(),
            message: "invalid value for parameter \"work_mem\": \"banana\"\n\u{1b}[31m".into(),
        }];
        let state = classify(Ok(refused), "b");
        assert_eq!(state.event_action(), Some("CheckParameters"));
        let mut long = report("b", ParameterOutcome::Refused);
        long.refused = vec![
            RefusedParameter {
                name: "x".repeat(60),
                message: "é".repeat(400),
            };
            40
        ];
        let ConfigState::Refused { message } = classify(Ok(long), "b") else {
            panic!("not refused");
        };
        assert!(message.len() <= MAX_REFUSAL);
        let previous = PostgresClusterStatus {
            phase: Some(ClusterPhase::Ready),
            observed_generation: Some(4),
            ..PostgresClusterStatus::default()
        };
        let computed = PostgresClusterStatus {
            observed_generation: Some(5),
            ..previous.clone()
        };
        let now = jiff::Timestamp::from_second(10).unwrap();
        let status = overlay(computed.clone(), &state, Some(&previous), Some(5), now);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        let degraded = conditions::find(&status.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.reason, reasons::INVALID_PARAMETER);
        assert_eq!(
            degraded.message,
            "PostgreSQL refuses the parameters; the running configuration stays in force: \
             work_mem: invalid value for parameter \"work_mem\": \"banana\"  [31m"
        );

        // Loaded and nothing waits for a restart: in force, nothing added.
        let loaded = classify(Ok(report("b", ParameterOutcome::Loaded)), "b");
        assert_eq!(
            overlay(computed.clone(), &loaded, Some(&previous), Some(5), now),
            computed
        );
        // Loaded but a setting waits for the restart: still updating.
        let mut pending = report("b", ParameterOutcome::Loaded);
        pending.pending_restart = vec!["shared_buffers".into()];
        let status = overlay(
            computed,
            &classify(Ok(pending), "b"),
            Some(&previous),
            Some(5),
            now,
        );
        assert_eq!(status.phase, Some(ClusterPhase::Updating));
        assert_eq!(status.observed_generation, Some(4));
    }
}
