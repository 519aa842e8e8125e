//! A PostgresCluster's conditions as kubectl shows them, for the tests on `tusk dev` that
//! include it with `#[path]` beside `tenant_isolation/support.rs` and `shared/events.rs`.

use std::time::Duration;

use crate::events::wait_event;
use crate::support::Kubectl;

/// How long a failure may take to reach the cluster.
pub const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// The cluster's condition of `type_` as `(status, reason, message)`.
pub fn condition(
    kubectl: &Kubectl,
    cluster: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let object = kubectl.get_json(&["pgc", cluster])?;
    let condition = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)?
        .clone();
    let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// Waits until the cluster is Degraded for `reason` with a message containing `line`, and a
/// Warning Event of that reason carrying `line` is on the cluster. Returns the message.
pub fn wait_degraded(kubectl: &Kubectl, cluster: &str, reason: &str, line: &str) -> String {
    let message = kubectl.until(
        &format!("{cluster} Degraded for {reason}"),
        VISIBLE_WITHIN,
        || {
            let seen = condition(kubectl, cluster, "Degraded");
            match &seen {
                Some((status, seen_reason, message))
                    if status == "True" && seen_reason == reason && message.contains(line) =>
                {
                    Ok(message.clone())
                }
                _ => Err(format!("{seen:?}")),
            }
        },
    );
    let phase = kubectl.ok(&["get", "pgc", cluster, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Degraded", "the phase agrees with the conditions");
    let ready = condition(kubectl, cluster, "Ready").expect("a Ready condition");
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", reason));
    wait_event(
        kubectl,
        cluster,
        ("Warning", reason, line),
        Duration::from_secs(10),
    );
    message
}

/// Waits up to `limit` until the cluster is `Ready` and no longer `Degraded`, then for the
/// Normal `Recovered` Event on it whose note contains `note`.
pub fn wait_recovered(kubectl: &Kubectl, cluster: &str, limit: Duration, note: &str) {
    kubectl.until(&format!("{cluster} Ready again"), limit, || {
        let degraded = condition(kubectl, cluster, "Degraded");
        let phase = kubectl.run(&["get", "pgc", cluster, "-o", "jsonpath={.status.phase}"])?;
        match &degraded {
            Some((status, _, _)) if status == "False" && phase == "Ready" => Ok(()),
            _ => Err(format!("phase {phase}, Degraded {degraded:?}")),
        }
    });
    wait_event(
        kubectl,
        cluster,
        ("Normal", "Recovered", note),
        Duration::from_secs(10),
    );
}
