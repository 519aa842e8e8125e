//! kube-apiserver's `ValidateService` for the fields tusk's Services (and its users') set: the
//! type, the ports (names, numbers, protocols, target ports), and what an ExternalName Service
//! may and must have. The cluster IP itself is allocated, kept and compared in `services.rs`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::containers::{PORT_PROTOCOLS, port_number, port_number_or_name};
use super::{
    Cause, array, cause, dns1123_label_error, duplicate, forbidden, invalid, one_of, required,
};

/// Service types, sorted as kube-apiserver lists them.
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Validates a (defaulted) Service's spec.
pub(super) fn service_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    one_of(spec, "type", "spec", SERVICE_TYPES, causes);
    one_of(
        spec,
        "sessionAffinity",
        "spec",
        &["ClientIP", "None"],
        causes,
    );
    let ports = array(spec, "ports");
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if service_type == "ExternalName" {
        if spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_some_and(|ips| !ips.is_empty())
        {
            causes.push(forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        let name = spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.trim_end_matches('.').is_empty() {
            causes.push(required("spec.externalName"));
        }
    } else if ports.is_empty() && !headless {
        causes.push(required("spec.ports"));
    }
    let mut names = HashSet::new();
    for (index, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{index}]");
        service_port(port, &path, ports.len() > 1, &mut names, causes);
    }
    for (index, port) in ports.iter().enumerate() {
        if service_type == "ClusterIP"
            && port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0
        {
            causes.push(forbidden(
                &format!("spec.ports[{index}].nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    let mut numbers = HashSet::new();
    for (index, port) in ports.iter().enumerate() {
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !numbers.insert((protocol.to_string(), number)) {
            // kube-apiserver names the duplicate by Go's rendering of the (protocol, port)
            // pair it compares.
            causes.push(cause(
                &format!("spec.ports[{index}]"),
                "FieldValueDuplicate",
                format!(
                    "Duplicate value: core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{number}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    json!(protocol)
                ),
            ));
        }
    }
}

/// `validateServicePort`: a name (required when there are several ports) that is a DNS label
/// and unique, a port number in range, a known protocol and a valid target port.
fn service_port(
    port: &Value,
    path: &str,
    name_required: bool,
    names: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let name_path = format!("{path}.name");
    match port.get("name").and_then(Value::as_str).unwrap_or("") {
        "" if name_required => causes.push(required(&name_path)),
        "" => {}
        name => {
            if let Some(why) = dns1123_label_error(name) {
                causes.push(invalid(&name_path, &json!(name), &why));
            }
            if !names.insert(name.to_string()) {
                causes.push(duplicate(&name_path, name));
            }
        }
    }
    port_number(
        port.get("port").unwrap_or(&json!(0)),
        &format!("{path}.port"),
        causes,
    );
    one_of(port, "protocol", path, PORT_PROTOCOLS, causes);
    if let Some(target) = port.get("targetPort").filter(|t| !t.is_null()) {
        port_number_or_name(target, &format!("{path}.targetPort"), causes);
    }
}
