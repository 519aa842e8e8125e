//! What kube-apiserver's Service strategy does on top of plain storage: defaulting, ClusterIP
//! allocation from the service range, and keeping allocated addresses immutable.
//!
//! The allocator keeps no state of its own: an address is in use exactly while a stored Service
//! holds it, so deleting a Service releases its address and a reloaded data directory needs no
//! separate allocation table.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::RngExt;
use serde_json::{Value, json};

use super::error::ApiError;
use super::ext::Cause;
use super::resources::ResourceType;
use super::store::Store;

/// The service range: 127.128.0.0/10, loopback addresses disjoint from the pods' 127.64.0.0/10.
pub(crate) const SERVICE_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(127, 128, 0, 0), 10);

/// The value of `spec.clusterIP` that asks for a headless Service.
const HEADLESS: &str = "None";

/// Whether a Service resource type is the one being written.
pub(crate) fn is_service(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "services"
}

fn in_range(address: Ipv4Addr) -> bool {
    let (base, prefix) = SERVICE_RANGE;
    let mask = u32::MAX << (32 - prefix);
    u32::from(address) & mask == u32::from(base) & mask
}

/// Network and broadcast addresses are never handed out, as in kube-apiserver's allocator.
fn allocatable(address: Ipv4Addr) -> bool {
    let (base, prefix) = SERVICE_RANGE;
    let first = u32::from(base);
    let last = first | (u32::MAX >> prefix);
    let value = u32::from(address);
    in_range(address) && value != first && value != last
}

fn invalid(rt: &ResourceType, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        rt,
        name,
        vec![Cause {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            message,
        }],
    )
}

fn allocated_addresses(store: &Store, rt: &ResourceType) -> HashSet<Ipv4Addr> {
    let state = store.read();
    let Some(collection) = state.collections.get(&rt.storage) else {
        return HashSet::new();
    };
    collection
        .values()
        .filter_map(|service| service.pointer("/spec/clusterIP")?.as_str()?.parse().ok())
        .collect()
}

fn pick_free(taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (base, prefix) = SERVICE_RANGE;
    let size = 1u32 << (32 - prefix);
    let mut rng = rand::rng();
    // The range holds four million addresses: random probes find a free one at once unless it
    // is nearly full, and the bounded count keeps a full range from spinning.
    (0..1024)
        .map(|_| Ipv4Addr::from(u32::from(base) + rng.random_range(1..size - 1)))
        .find(|address| !taken.contains(address))
}

/// Defaults a Service being created and allocates its ClusterIP; also used for a Service
/// turned from an ExternalName one into a type that needs an address, which kube-apiserver's
/// allocator treats as a new allocation.
pub(crate) fn default_on_create(
    store: &Store,
    rt: &ResourceType,
    name: &str,
    service: &mut Value,
) -> Result<(), ApiError> {
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    spec["type"] = json!(service_type);
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if service_type != "ExternalName" {
        if spec.get("internalTrafficPolicy").is_none() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        default_ports(spec);
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .or_else(|| {
                spec.pointer("/clusterIPs/0")
                    .and_then(Value::as_str)
                    .filter(|ip| !ip.is_empty())
            })
            .map(str::to_string);
        let address = match requested.as_deref() {
            Some(HEADLESS) => HEADLESS.to_string(),
            Some(wanted) => {
                let field = "spec.clusterIPs";
                let parsed: Ipv4Addr = wanted.parse().map_err(|_| {
                    invalid(
                        rt,
                        name,
                        field,
                        format!("Invalid value: \"{wanted}\": must be a valid IP address"),
                    )
                })?;
                if !allocatable(parsed) {
                    return Err(invalid(
                        rt,
                        name,
                        field,
                        format!(
                            "Invalid value: [\"{wanted}\"]: failed to allocate IP {wanted}: the provided IP ({wanted}) is not in the valid range. The range of valid IPs is {}/{}",
                            SERVICE_RANGE.0, SERVICE_RANGE.1
                        ),
                    ));
                }
                if allocated_addresses(store, rt).contains(&parsed) {
                    return Err(invalid(
                        rt,
                        name,
                        field,
                        format!(
                            "Invalid value: [\"{wanted}\"]: failed to allocate IP {wanted}: provided IP is already allocated"
                        ),
                    ));
                }
                wanted.to_string()
            }
            None => pick_free(&allocated_addresses(store, rt))
                .ok_or_else(|| {
                    ApiError::forbidden(rt, name, "failed to allocate a serviceIP: range is full")
                })?
                .to_string(),
        };
        spec["clusterIP"] = json!(address);
        spec["clusterIPs"] = json!([address]);
        if address != HEADLESS || spec.get("selector").is_some() {
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if service.get("status").is_none() {
        service["status"] = json!({"loadBalancer": {}});
    }
    Ok(())
}

/// Ports are TCP unless told otherwise, and target the port they listen on.
fn default_ports(spec: &mut Value) {
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports {
        if port.get("protocol").is_none() {
            port["protocol"] = json!("TCP");
        }
        if port.get("targetPort").is_none()
            && let Some(number) = port.get("port").cloned()
        {
            port["targetPort"] = number;
        }
    }
}

/// Carries the allocated addresses over an update that leaves them out (as `kubectl apply`
/// does), and refuses one that changes them. A Service leaving the ExternalName type gets an
/// address allocated (or the one it asks for, when free), one becoming an ExternalName
/// Service gives its address up.
pub(crate) fn keep_cluster_ip(
    store: &Store,
    rt: &ResourceType,
    current: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let new_type = new
        .pointer("/spec/type")
        .or_else(|| current.pointer("/spec/type"))
        .and_then(Value::as_str);
    if new_type == Some("ExternalName") {
        drop_cluster_ip_fields(current, new);
        return Ok(());
    }
    let name = current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(allocated) = current.pointer("/spec/clusterIP").and_then(Value::as_str) else {
        return default_on_create(store, rt, name, new);
    };
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    let spec = &mut new["spec"];
    let asked = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if asked.is_empty() {
        spec["clusterIP"] = json!(allocated);
    } else if asked != allocated {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIP",
            format!("Invalid value: \"{asked}\": field is immutable"),
        ));
    }
    let asked_list = spec.get("clusterIPs").and_then(Value::as_array);
    if asked_list.is_none_or(|list| list.is_empty()) {
        spec["clusterIPs"] = json!([allocated]);
    } else if asked_list.and_then(|list| list.first()?.as_str()) != Some(allocated) {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs[0]",
            format!("Invalid value: \"{allocated}\": may not change once set"),
        ));
    }
    default_ports(spec);
    for field in [
        "type",
        "sessionAffinity",
        "internalTrafficPolicy",
        "ipFamilies",
        "ipFamilyPolicy",
    ] {
        if spec.get(field).is_none()
            && let Some(value) = current.pointer(&format!("/spec/{field}"))
        {
            spec[field] = value.clone();
        }
    }
    Ok(())
}

/// A Service turned into an ExternalName one gives up its addresses, as kube-apiserver's
/// strategy drops the fields its new type does not use when the update leaves them as they
/// were (a `kubectl apply` of the new type carries the old values over). Values the update
/// changes are kept, for validation to refuse.
fn drop_cluster_ip_fields(current: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let unset = spec.get(field).is_none_or(|value| {
            value.is_null() || value == "" || value.as_array().is_some_and(Vec::is_empty)
        });
        if unset || spec.get(field) == current.pointer(&format!("/spec/{field}")) {
            spec.remove(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_inside_the_service_range_are_handed_out() {
        assert!(allocatable(Ipv4Addr::new(127, 128, 0, 1)));
        assert!(allocatable(Ipv4Addr::new(127, 191, 255, 254)));
        assert!(!allocatable(Ipv4Addr::new(127, 128, 0, 0)), "network");
        assert!(!allocatable(Ipv4Addr::new(127, 191, 255, 255)), "broadcast");
        assert!(!allocatable(Ipv4Addr::new(127, 64, 0, 1)), "the pod range");
        assert!(!allocatable(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn a_picked_address_is_free_and_allocatable() {
        let taken: HashSet<Ipv4Addr> = (1..200).map(|n| Ipv4Addr::new(127, 128, 0, n)).collect();
        for _ in 0..100 {
            let picked = pick_free(&taken).expect("a free address");
            assert!(allocatable(picked) && !taken.contains(&picked), "{picked}");
        }
    }
}
