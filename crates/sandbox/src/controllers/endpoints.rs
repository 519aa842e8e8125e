//! The Endpoints and EndpointSlice controllers: for each Service with a selector, the addresses
//! of its pods, ready or not, with the target ports resolved per pod.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError, is_ready, is_terminal, patch_params};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

pub(super) fn controller(client: &Client) -> Controller<Service> {
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    // The Endpoints and slices are the controller's to keep: one edited or deleted by someone
    // else is rewritten.
    let controller = controller
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |endpoints: Endpoints| {
                let namespace = endpoints.namespace().unwrap_or_default();
                Some(ObjectRef::<Service>::new(&endpoints.name_any()).within(&namespace))
            },
        )
        .owns(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        );
    // Every Service in the pod's namespace whose selector matches the pod's labels: the pod
    // may have joined or left any of them.
    controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            let labels = pod.labels().clone();
            services
                .state()
                .into_iter()
                .filter(|service| service.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|service| {
                    selector(service).is_some_and(|selector| {
                        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                })
                .map(|service| ObjectRef::from_obj(&*service))
                .collect::<Vec<_>>()
        },
    )
}

fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// The pod port a Service port targets: a number as is, a name looked up among the pod's
/// container ports. `None` when the pod has no port of that name.
fn resolve_target(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// One pod behind a Service.
struct Backend<'a> {
    pod: &'a Pod,
    ip: String,
    ready: bool,
    ports: Vec<EndpointPort>,
}

pub(super) async fn reconcile(
    service: Arc<Service>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(selector) = selector(&service) else {
        // Without a selector, the Endpoints are the user's to write.
        return Ok(Action::await_change());
    };
    if service.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let namespace = service.namespace().unwrap_or_default();
    let query = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&query))
        .await?
        .items;
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let backends: Vec<Backend> = pods
        .iter()
        .filter(|pod| !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|port| {
                    Some(EndpointPort {
                        name: port.name.clone(),
                        port: resolve_target(port.target_port.as_ref(), port.port, pod)?,
                        protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: port.app_protocol.clone(),
                    })
                })
                .collect();
            Some(Backend {
                pod,
                ip,
                ready: publish_not_ready || is_ready(pod),
                ports,
            })
        })
        .collect();

    write_endpoints(client, &service, &backends).await?;
    write_slices(client, &service, &backends).await?;
    Ok(Action::await_change())
}

fn address(service_name: &str, backend: &Backend) -> EndpointAddress {
    let pod_spec = backend.pod.spec.as_ref();
    // A pod is addressable by hostname only through the Service its subdomain names.
    let hostname = pod_spec
        .filter(|s| s.subdomain.as_deref() == Some(service_name))
        .and_then(|s| s.hostname.clone());
    EndpointAddress {
        ip: backend.ip.clone(),
        hostname,
        node_name: pod_spec.and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(backend.pod.name_any()),
            namespace: backend.pod.namespace(),
            uid: backend.pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
    }
}

/// Pods with the same resolved ports share a subset, as in the real controller.
fn subsets(service_name: &str, backends: &[Backend]) -> Vec<EndpointSubset> {
    let mut by_ports: Vec<(Vec<EndpointPort>, EndpointSubset)> = Vec::new();
    for backend in backends {
        let index = match by_ports
            .iter()
            .position(|(ports, _)| *ports == backend.ports)
        {
            Some(index) => index,
            None => {
                by_ports.push((
                    backend.ports.clone(),
                    EndpointSubset {
                        ports: Some(backend.ports.clone()).filter(|p| !p.is_empty()),
                        ..EndpointSubset::default()
                    },
                ));
                by_ports.len() - 1
            }
        };
        let subset = &mut by_ports[index].1;
        let list = if backend.ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address(service_name, backend));
    }
    by_ports
        .into_iter()
        .map(|(_, mut subset)| {
            for list in [&mut subset.addresses, &mut subset.not_ready_addresses]
                .into_iter()
                .flatten()
            {
                list.sort_by(|a, b| a.ip.cmp(&b.ip));
            }
            subset
        })
        .collect()
}

async fn write_endpoints(
    client: &Client,
    service: &Service,
    backends: &[Backend<'_>],
) -> Result<(), kube::Error> {
    let name = service.name_any();
    let namespace = service.namespace().unwrap_or_default();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    let subsets = Some(subsets(&name, backends)).filter(|s| !s.is_empty());
    let labels = service.metadata.labels.clone();
    match api.get_opt(&name).await? {
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels,
                    ..ObjectMeta::default()
                },
                subsets,
            };
            match api.create(&PostParams::default(), &endpoints).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
                Err(error) => return Err(error),
            }
            // The Service may have gone while this pass ran, its Endpoints already removed:
            // then these new ones would be left behind.
            let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
            let current = services.get_opt(&name).await?;
            if current.and_then(|s| s.metadata.uid) != service.metadata.uid {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        }
        Some(current) if current.subsets == subsets && current.metadata.labels == labels => Ok(()),
        Some(mut current) => {
            current.subsets = subsets;
            current.metadata.labels = labels;
            api.replace(&name, &PostParams::default(), &current).await?;
            Ok(())
        }
    }
}

async fn write_slices(
    client: &Client,
    service: &Service,
    backends: &[Backend<'_>],
) -> Result<(), kube::Error> {
    let name = service.name_any();
    let namespace = service.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?
        .items;
    let ports: Vec<SlicePort> = backends
        .first()
        .map(|b| {
            b.ports
                .iter()
                .map(|p| SlicePort {
                    name: p.name.clone().or_else(|| Some(String::new())),
                    port: Some(p.port),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut endpoints: Vec<Endpoint> = backends
        .iter()
        .map(|backend| {
            let address = address(&name, backend);
            Endpoint {
                addresses: vec![backend.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(backend.ready),
                    serving: Some(backend.ready),
                    terminating: Some(false),
                }),
                hostname: address.hostname,
                node_name: address.node_name,
                target_ref: address.target_ref,
                ..Endpoint::default()
            }
        })
        .collect();
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let wanted = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            owner_references: service
                .controller_owner_ref(&())
                .map(|o| vec![super::blocking_owner(o)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    };
    let mut existing = existing.into_iter();
    match existing.next() {
        None => {
            api.create(&PostParams::default(), &wanted).await?;
        }
        Some(current)
            if current.endpoints == wanted.endpoints
                && current.ports == wanted.ports
                && current.metadata.labels == wanted.metadata.labels => {}
        Some(current) => {
            let patch = serde_json::json!({
                "metadata": {"labels": wanted.metadata.labels},
                "endpoints": wanted.endpoints,
                "ports": wanted.ports,
            });
            api.patch(&current.name_any(), &patch_params(), &Patch::Merge(&patch))
                .await?;
        }
    }
    // One slice per Service here: extras (from an earlier process) are removed.
    for extra in existing {
        api.delete(&extra.name_any(), &DeleteParams::default())
            .await?;
    }
    Ok(())
}

/// Deletes a Service's Endpoints when the Service goes, as the real Endpoints controller does
/// (they carry no owner reference; the slices do and go with the garbage collector). Each
/// (re)list also removes Endpoints left by Services deleted while nothing watched.
pub(super) async fn remove_with_services(client: Client, shutdown: CancellationToken) {
    let services: Api<Service> = Api::all(client.clone());
    let stream = watcher(services, watcher::Config::default())
        .default_backoff()
        .take_until(shutdown.cancelled_owned());
    futures::pin_mut!(stream);
    let mut listed: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(service)) => {
                listed.insert((service.namespace().unwrap_or_default(), service.name_any()));
            }
            Ok(watcher::Event::InitDone) => {
                if let Err(error) = remove_leftovers(&client, &listed).await {
                    tracing::warn!(%error, "cannot look for Endpoints left by deleted Services");
                }
            }
            Ok(watcher::Event::Delete(service)) => {
                let namespace = service.namespace().unwrap_or_default();
                if let Err(error) = remove(&client, &namespace, &service.name_any()).await {
                    tracing::warn!(service = service.name_any(), %error, "cannot remove the Endpoints of a deleted Service");
                }
            }
            _ => {}
        }
    }
}

/// Deletes every Endpoints object whose Service is not among `services`, except leader-election
/// records, which live in Endpoints without a Service.
async fn remove_leftovers(
    client: &Client,
    services: &HashSet<(String, String)>,
) -> Result<(), kube::Error> {
    let all: Api<Endpoints> = Api::all(client.clone());
    for endpoints in all.list(&ListParams::default()).await?.items {
        let key = (
            endpoints.namespace().unwrap_or_default(),
            endpoints.name_any(),
        );
        let leader_record = endpoints
            .annotations()
            .contains_key("control-plane.alpha.kubernetes.io/leader");
        if !services.contains(&key) && !leader_record {
            remove(client, &key.0, &key.1).await?;
        }
    }
    Ok(())
}

async fn remove(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
