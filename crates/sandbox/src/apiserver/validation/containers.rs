//! The finer rules of a pod spec kube-apiserver applies: the pod's and its containers' enums,
//! container ports, probes, and resource quantities that may not be negative. Port numbers and
//! names are shared with Services.
//!
//! An enum left unset is not judged: kube-apiserver's defaulting fills it in before validation
//! (`imagePullPolicy`, `restartPolicy`, `dnsPolicy`, a port's `protocol`), and a defaulted value
//! is always valid.

use serde_json::{Value, json};

use super::{Cause, array, duplicate, forbidden, invalid, one_of, required, required_because};

/// `IsValidPortNum`'s message.
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
/// `ValidateNonnegativeField`'s and `ValidateNonnegativeQuantity`'s message.
pub(super) const NEGATIVE: &str = "must be greater than or equal to 0";
/// The protocols a container port or Service port may use, sorted as kube-apiserver lists them.
pub(super) const PORT_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// The pod-level enums of a pod spec at `path`.
pub(super) fn pod_enums(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    one_of(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
        causes,
    );
    one_of(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        causes,
    );
}

/// A container's enums and resource quantities; `path` names the container
/// (`spec.containers[0]`).
pub(super) fn container_rules(container: &Value, path: &str, causes: &mut Vec<Cause>) {
    one_of(
        container,
        "imagePullPolicy",
        path,
        &["Always", "IfNotPresent", "Never"],
        causes,
    );
    one_of(
        container,
        "terminationMessagePolicy",
        path,
        &["File", "FallbackToLogsOnError"],
        causes,
    );
    for list in ["limits", "requests"] {
        let quantities = container
            .pointer(&format!("/resources/{list}"))
            .and_then(Value::as_object);
        for (resource, amount) in quantities.into_iter().flatten() {
            if super::quantity(amount).is_some_and(|a| a < 0.0) {
                causes.push(invalid(
                    &format!("{path}.resources.{list}[{resource}]"),
                    &json!(super::quantity_text(amount)),
                    NEGATIVE,
                ));
            }
        }
    }
}

/// A container's probes, validated after the rest of the container as kube-apiserver does.
pub(super) fn container_probes(container: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (name, must_succeed_once) in [
        ("livenessProbe", true),
        ("readinessProbe", false),
        ("startupProbe", true),
    ] {
        if let Some(found) = container.get(name).filter(|p| !p.is_null()) {
            probe(found, &format!("{path}.{name}"), must_succeed_once, causes);
        }
    }
}

/// `validateContainerPorts`: names valid and unique within the container, numbers in range,
/// protocols known.
pub(super) fn container_ports(container: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut names = std::collections::HashSet::new();
    for (index, port) in array(container, "ports").iter().enumerate() {
        let port_path = format!("{path}.ports[{index}]");
        if let Some(name) = port
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            let problems = port_name_errors(name);
            if !problems.is_empty() {
                for problem in problems {
                    causes.push(invalid(&format!("{port_path}.name"), &json!(name), problem));
                }
            } else if !names.insert(name.to_string()) {
                causes.push(duplicate(&format!("{port_path}.name"), name));
            }
        }
        match port.get("containerPort").filter(|p| !p.is_null()) {
            None => causes.push(required(&format!("{port_path}.containerPort"))),
            Some(number) if number.as_i64() == Some(0) => {
                causes.push(required(&format!("{port_path}.containerPort")))
            }
            Some(number) => port_number(number, &format!("{port_path}.containerPort"), causes),
        }
        if let Some(number) = port
            .get("hostPort")
            .filter(|p| p.as_i64().is_some_and(|n| n != 0))
        {
            port_number(number, &format!("{port_path}.hostPort"), causes);
        }
        one_of(port, "protocol", &port_path, PORT_PROTOCOLS, causes);
    }
}

/// `IsValidPortNum`: a port number is 1 to 65535.
pub(super) fn port_number(number: &Value, field: &str, causes: &mut Vec<Cause>) {
    if !number.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
        causes.push(invalid(field, number, PORT_RANGE));
    }
}

/// `IsValidPortName`'s messages for a port name (an IANA service name), one per problem.
pub(super) fn port_name_errors(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if name.len() > 15 {
        problems.push("must be no more than 15 characters");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        problems.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        problems.push("must not begin or end with a hyphen");
    }
    problems
}

/// `ValidatePortNumOrName`: a number in range, or a valid port name.
pub(super) fn port_number_or_name(value: &Value, field: &str, causes: &mut Vec<Cause>) {
    match value.as_str() {
        Some(name) => {
            for problem in port_name_errors(name) {
                causes.push(invalid(field, value, problem));
            }
        }
        None => port_number(value, field, causes),
    }
}

/// `validateProbe`: exactly one handler, valid for its kind, and no negative timings. A liveness
/// or startup probe succeeds once (`successThreshold` 1).
fn probe(probe: &Value, path: &str, must_succeed_once: bool, causes: &mut Vec<Cause>) {
    let mut handlers = 0;
    for kind in ["exec", "httpGet", "tcpSocket", "grpc"] {
        let Some(handler) = probe.get(kind).filter(|h| !h.is_null()) else {
            continue;
        };
        let handler_path = format!("{path}.{kind}");
        if handlers > 0 {
            causes.push(forbidden(
                &handler_path,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        handlers += 1;
        match kind {
            "exec" => {
                if array(handler, "command").is_empty() {
                    causes.push(required(&format!("{handler_path}.command")));
                }
            }
            "httpGet" => {
                let port = handler.get("port").unwrap_or(&Value::Null);
                port_number_or_name(port, &format!("{handler_path}.port"), causes);
                one_of(handler, "scheme", &handler_path, &["HTTP", "HTTPS"], causes);
            }
            "tcpSocket" => {
                let port = handler.get("port").unwrap_or(&Value::Null);
                port_number_or_name(port, &format!("{handler_path}.port"), causes);
            }
            _ => {
                let port = handler.get("port").unwrap_or(&Value::Null);
                port_number(port, &format!("{handler_path}.port"), causes);
            }
        }
    }
    if handlers == 0 {
        causes.push(required_because(path, "must specify a handler type"));
    }
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(value) = probe
            .get(field)
            .filter(|v| v.as_i64().is_some_and(|n| n < 0))
        {
            causes.push(invalid(&format!("{path}.{field}"), value, NEGATIVE));
        }
    }
    if let Some(grace) = probe
        .get("terminationGracePeriodSeconds")
        .filter(|v| v.as_i64().is_some_and(|n| n <= 0))
    {
        causes.push(invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
    if must_succeed_once
        && let Some(threshold) = probe
            .get("successThreshold")
            .filter(|v| v.as_i64().is_some_and(|n| n != 1))
    {
        causes.push(invalid(
            &format!("{path}.successThreshold"),
            threshold,
            "must be 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_iana_service_names() {
        assert!(port_name_errors("postgres").is_empty());
        assert!(port_name_errors("http-2").is_empty());
        assert_eq!(
            port_name_errors("a--b"),
            ["must not contain consecutive hyphens"]
        );
        assert_eq!(
            port_name_errors("5432"),
            ["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            port_name_errors("much-too-long-port"),
            ["must be no more than 15 characters"]
        );
        assert_eq!(
            port_name_errors("-Pg"),
            [
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "must not begin or end with a hyphen"
            ]
        );
    }
}
