//! Writing a cluster's children: server-side apply of each desired child, and growing the PVCs
//! when postgresDiskSize grows.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tusk_api::{PostgresBackupSchedule, names};

use super::CONTROLLER;
use super::build::{self, Children};
use crate::error::{Error, Result, is_conflict, is_not_found};
use crate::labels;
use crate::ssa;

/// Applies every child and returns the StatefulSet as the API server now has it.
pub async fn apply_children(
    client: &kube::Client,
    namespace: &str,
    children: Children,
    existing_stateful_set: Option<&StatefulSet>,
) -> Result<Applied> {
    // Destructured without `..` so that a new kind of child cannot be forgotten here.
    let Children {
        credentials,
        tls,
        backup_store,
        config_map,
        service,
        load_balancer,
        mut stateful_set,
        default_schedule,
    } = children;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    ssa::apply(&secrets, CONTROLLER, &credentials).await?;
    ssa::apply(&secrets, CONTROLLER, &tls).await?;
    if let Some(backup_store) = backup_store {
        ssa::apply(&secrets, CONTROLLER, &backup_store).await?;
    }
    ssa::apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        CONTROLLER,
        &config_map,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    ssa::apply(&services, CONTROLLER, &service).await?;
    let load_balancer_endpoint = match load_balancer {
        Some(load_balancer) => {
            endpoint_of(&ssa::apply(&services, CONTROLLER, &load_balancer).await?)
        }
        // Asked for no longer (or never): it goes, with its cloud load balancer.
        None => {
            // The StatefulSet is named like the cluster, whose owner reference the Service has.
            let cluster = stateful_set.name_any();
            let owner = service
                .owner_references()
                .first()
                .map(|owner| owner.uid.clone());
            delete_load_balancer(&services, &names::load_balancer_service(&cluster), owner).await?;
            None
        }
    };
    if let Some(existing) = existing_stateful_set {
        build::keep_immutable_fields(&mut stateful_set, existing);
    }
    let stateful_set = ssa::apply(
        &Api::<StatefulSet>::namespaced(client.clone(), namespace),
        CONTROLLER,
        &stateful_set,
    )
    .await?;
    if let Some(default_schedule) = default_schedule {
        apply_default_schedule(client, namespace, &default_schedule).await?;
    }
    Ok(Applied {
        stateful_set,
        load_balancer_endpoint,
    })
}

/// What [`apply_children`] leaves, as the API server returned it.
pub struct Applied {
    /// The StatefulSet.
    pub stateful_set: StatefulSet,
    /// Where the cluster's own LoadBalancer Service is reached, once the platform's load
    /// balancer gave it an address ([`endpoint_of`]).
    pub load_balancer_endpoint: Option<String>,
}

/// A LoadBalancer Service's address and port, `address:port` (`[address]:port` for IPv6):
/// its first ingress's IP, else its host name, and its first port. `None` until the load
/// balancer has an address.
pub fn endpoint_of(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    let address = ingress
        .ip
        .as_deref()
        .or(ingress.hostname.as_deref())
        .filter(|address| !address.is_empty())?;
    let port = service.spec.as_ref()?.ports.as_ref()?.first()?.port;
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

/// Deletes the LoadBalancer Service `name`, if there is one and the cluster (`owner`, a uid)
/// controls it: a Service of that name the tenant made is the tenant's.
async fn delete_load_balancer(
    services: &Api<Service>,
    name: &str,
    owner: Option<String>,
) -> Result<()> {
    let existing = services.get_opt(name).await.map_err(|source| Error::Get {
        kind: "Service",
        name: name.to_owned(),
        source,
    })?;
    let Some(existing) = existing else {
        return Ok(());
    };
    let ours = existing.owner_references().iter().any(|reference| {
        reference.controller == Some(true) && Some(&reference.uid) == owner.as_ref()
    });
    if !ours {
        return Ok(());
    }
    match services.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Service",
            name: name.to_owned(),
            source,
        }),
    }
}

/// The default schedule is the customer's to change (interval, keep, suspend), so it is applied
/// without forcing: once another manager owns a field, the conflict means "leave it".
async fn apply_default_schedule(
    client: &kube::Client,
    namespace: &str,
    schedule: &PostgresBackupSchedule,
) -> Result<()> {
    let api: Api<PostgresBackupSchedule> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(&ssa::field_manager(CONTROLLER));
    match api
        .patch(&schedule.name_any(), &params, &Patch::Apply(schedule))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_conflict(&error) => Ok(()),
        Err(source) => Err(Error::ApplyChild {
            kind: "PostgresBackupSchedule",
            name: schedule.name_any(),
            source,
        }),
    }
}

/// Bytes in a Kubernetes quantity such as `1Gi`, `500M` or `1073741824`; `None` for forms tusk
/// never writes (fractions, exponents).
pub fn quantity_bytes(quantity: &str) -> Option<u128> {
    let quantity = quantity.trim();
    let digits_end = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(digits_end);
    let number: u128 = number.parse().ok()?;
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// What became of the cluster's volumes' size.
#[derive(Debug, Default)]
pub struct Expansion {
    /// The PVCs asked to grow.
    pub asked: Vec<String>,
    /// The API server's refusal to grow a PVC (its class does not allow expansion, say), when
    /// it refused: the volume keeps its size, and the cluster says so.
    pub refused: Option<String>,
    /// The storage system's failure to grow a PVC the API server let grow, as the PVC's status
    /// reports it ([`growth_failure`]): the volume keeps its size, and the cluster says so.
    pub failed: Option<String>,
    /// The bound PVCs whose capacity is still short of the size asked.
    pub growing: Vec<String>,
}

/// The resize states of `status.allocatedResourceStatuses["storage"]` that say the storage
/// system cannot carry out the growth as asked.
const INFEASIBLE: [&str; 2] = ["ControllerResizeInfeasible", "NodeResizeInfeasible"];

/// The PVC conditions a failed growth sets (with the storage system's error as message).
const RESIZE_ERRORS: [&str; 2] = ["ControllerResizeError", "NodeResizeError"];

/// The bytes of storage a bound PVC has.
fn claim_capacity(claim: &PersistentVolumeClaim) -> Option<u128> {
    let capacity = claim.status.as_ref()?.capacity.as_ref()?.get("storage")?;
    quantity_bytes(&capacity.0)
}

/// Why the storage system has not grown `claim` to its request, as its status says: a resize
/// state of [`INFEASIBLE`], or a condition of [`RESIZE_ERRORS`] while the capacity is still
/// short of the request (the resizer retrying). The message is the claim's own.
pub fn growth_failure(claim: &PersistentVolumeClaim) -> Option<String> {
    let request = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    let status = claim.status.as_ref()?;
    if claim_capacity(claim) >= quantity_bytes(&request.0) {
        return None;
    }
    let state = status
        .allocated_resource_statuses
        .as_ref()
        .and_then(|states| states.get("storage"));
    let error = status.conditions.iter().flatten().find(|condition| {
        RESIZE_ERRORS.contains(&condition.type_.as_str()) && condition.status == "True"
    });
    let infeasible = state.is_some_and(|state| INFEASIBLE.contains(&state.as_str()));
    if !infeasible && error.is_none() {
        return None;
    }
    let said = error
        .and_then(|condition| condition.message.clone())
        .or_else(|| state.map(|state| format!("the storage system reports {state}")))
        .unwrap_or_default();
    Some(format!(
        "The storage system cannot grow volume {} to {}: {said}",
        claim.name_any(),
        request.0
    ))
}

/// Patches every PVC of the cluster whose storage request is below `size_gib`. PVCs belong to
/// the StatefulSet controller, so they are patched (only the request) rather than applied. A
/// growth the API server refuses (403 from the resize admission, 422 from validation) is
/// reported rather than failed: retrying cannot help until the platform or the spec changes.
pub async fn expand_volumes(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    size_gib: i32,
) -> Result<Expansion> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let selector = labels::selector_string(&labels::instance_selector(cluster));
    let claims = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: "PersistentVolumeClaim",
            source,
        })?;
    let desired = build::gibibytes(size_gib);
    let desired_bytes = quantity_bytes(&desired.0).unwrap_or(u128::MAX);
    let mut expansion = Expansion::default();
    for claim in claims {
        if claim_capacity(&claim).is_some_and(|capacity| capacity < desired_bytes) {
            expansion.growing.push(claim.name_any());
        }
        let current = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.resources.as_ref())
            .and_then(|resources| resources.requests.as_ref())
            .and_then(|requests| requests.get("storage"))
            .and_then(|quantity| quantity_bytes(&quantity.0));
        if current.is_some_and(|current| current >= desired_bytes) {
            if let Some(failure) = growth_failure(&claim) {
                expansion.failed = Some(failure);
            }
            continue;
        }
        let name = claim.name_any();
        let patch = json!({"spec": {"resources": {"requests": {"storage": desired.0}}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => expansion.asked.push(name),
            Err(kube::Error::Api(refusal)) if matches!(refusal.code, 403 | 422) => {
                expansion.refused = Some(format!(
                    "Cannot grow the data volume to {}: {}",
                    desired.0, refusal.message
                ));
            }
            Err(source) => {
                return Err(Error::Patch {
                    kind: "PersistentVolumeClaim",
                    name,
                    source,
                });
            }
        }
    }
    Ok(expansion)
}

#[cfg(test)]
mod tests {
    use super::{endpoint_of, quantity_bytes};
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn a_load_balancers_endpoint_is_its_first_ingress_and_port() {
        let service = |ingress: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "spec": {"type": "LoadBalancer", "ports": [{"port": 5432}]},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap()
        };
        assert_eq!(endpoint_of(&service(serde_json::json!([]))), None);
        assert_eq!(
            endpoint_of(&service(
                serde_json::json!([{"ip": "203.0.113.7"}, {"ip": "203.0.113.8"}])
            )),
            Some("203.0.113.7:5432".to_owned())
        );
        assert_eq!(
            endpoint_of(&service(
                serde_json::json!([{"hostname": "lb-1.elb.example.com"}])
            )),
            Some("lb-1.elb.example.com:5432".to_owned())
        );
        assert_eq!(
            endpoint_of(&service(serde_json::json!([{"ip": "2001:db8::7"}]))),
            Some("[2001:db8::7]:5432".to_owned())
        );
    }

    #[test]
    fn quantities_are_compared_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert!(quantity_bytes("1Gi") > quantity_bytes("1G"));
        assert_eq!(quantity_bytes("1.5Gi"), None);
    }
}
