//! Services against the sandbox over HTTPS: ClusterIP allocation and defaulting, Endpoints that
//! follow pod readiness, and the proxy forwarding real TCP from clusterIP:port to a ready pod.

mod cluster;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cluster::{Cluster, Outcome, eventually, object, pod_ip, pod_status, set_pod_status};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tusk_sandbox::Sandbox;
use tusk_sandbox::controllers::ControllerOptions;

fn service(name: &str, spec: serde_json::Value) -> Service {
    object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}))
}

fn in_service_range(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let [a, b, _, _] = ip.octets();
    a == 127 && (128..192).contains(&b)
}

fn api_error_code(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn services_get_a_defaulted_immutable_cluster_ip() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let services: Api<Service> = Api::namespaced(client, "default");
    let created = services
        .create(
            &PostParams::default(),
            &service(
                "db",
                json!({"selector": {"app": "db"}, "ports": [{"port": 5432}]}),
            ),
        )
        .await
        .expect("created");
    let spec = created.spec.clone().expect("spec");
    let ip = spec.cluster_ip.clone().expect("a ClusterIP");
    assert!(in_service_range(&ip), "{ip} is in 127.128.0.0/10");
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(5432)));

    let headless = services
        .create(
            &PostParams::default(),
            &service(
                "db-hl",
                json!({"clusterIP": "None", "selector": {"app": "db"}}),
            ),
        )
        .await
        .expect("created");
    assert_eq!(
        headless.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );

    // An update that leaves the address out keeps it; one that changes it is refused.
    let mut replaced = created.clone();
    if let Some(spec) = replaced.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
    }
    let kept = services
        .replace("db", &PostParams::default(), &replaced)
        .await
        .expect("replaced");
    assert_eq!(kept.spec.and_then(|s| s.cluster_ip), Some(ip.clone()));
    let other = if ip == "127.128.0.9" {
        "127.128.0.10"
    } else {
        "127.128.0.9"
    };
    let error = services
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"clusterIP": other, "clusterIPs": [other]}})),
        )
        .await
        .expect_err("clusterIP is immutable");
    let (code, message) = api_error_code(error);
    assert_eq!(code, 422);
    assert!(message.contains("field is immutable"), "{message}");

    // An address in use cannot be taken; once its Service is gone, it can.
    let taken = service("copy", json!({"clusterIP": ip, "ports": [{"port": 1}]}));
    let (code, message) = api_error_code(
        services
            .create(&PostParams::default(), &taken)
            .await
            .expect_err("already allocated"),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("provided IP is already allocated"),
        "{message}"
    );
    let (code, _) = api_error_code(
        services
            .create(
                &PostParams::default(),
                &service(
                    "outside",
                    json!({"clusterIP": "10.0.0.1", "ports": [{"port": 1}]}),
                ),
            )
            .await
            .expect_err("outside the range"),
    );
    assert_eq!(code, 422);
    services
        .delete("db", &DeleteParams::default())
        .await
        .expect("deleted");
    let reused = services
        .create(&PostParams::default(), &taken)
        .await
        .expect("a released address can be taken again");
    assert_eq!(reused.spec.and_then(|s| s.cluster_ip), Some(ip));
    sandbox.shutdown().await;
}

/// A bare pod labelled `app`, with a named container port.
fn pod(name: &str, app: &str, port: u16) -> Pod {
    object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "x", "ports": [{"name": "pg", "containerPort": port}]}]},
    }))
}

/// Creates a pod and starts it at `ip` as the kubelet would, ready or not.
async fn run_pod(pods: &Api<Pod>, name: &str, app: &str, ip: Ipv4Addr, port: u16, ready: bool) {
    pods.create(&PostParams::default(), &pod(name, app, port))
        .await
        .expect("pod created");
    let status = json!({"status": pod_status("Running", ready, Some(ip))});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status written");
}

fn addresses(endpoints: &Endpoints) -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut ports = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.clone()),
        );
        ports.extend(subset.ports.iter().flatten().map(|p| p.port));
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready, ports)
}

#[tokio::test]
async fn endpoints_follow_pod_readiness_and_resolve_named_ports() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Leave).await;
    let services: Api<Service> = cluster.api();
    let endpoints: Api<Endpoints> = cluster.api();
    let pods = cluster.pods();
    services
        .create(
            &PostParams::default(),
            &service(
                "pg",
                json!({"selector": {"app": "pg"}, "ports": [{"name": "sql", "port": 5432, "targetPort": "pg"}]}),
            ),
        )
        .await
        .expect("created");
    let (first, second) = (pod_ip(), pod_ip());
    run_pod(&pods, "pg-a", "pg", first, 6001, true).await;
    run_pod(&pods, "pg-b", "pg", second, 6001, false).await;
    run_pod(&pods, "other", "other", pod_ip(), 6001, true).await;
    eventually("one ready and one unready address", 10, || async {
        let Some(current) = endpoints.get_opt("pg").await.expect("get") else {
            return false;
        };
        addresses(&current)
            == (
                vec![first.to_string()],
                vec![second.to_string()],
                vec![6001],
            )
    })
    .await;

    set_pod_status(&pods, "pg-b", "Running", true).await;
    set_pod_status(&pods, "pg-a", "Running", false).await;
    eventually("readiness swapped", 10, || async {
        let current = endpoints.get("pg").await.expect("get");
        addresses(&current)
            == (
                vec![second.to_string()],
                vec![first.to_string()],
                vec![6001],
            )
    })
    .await;

    let settled = cluster.sandbox.resource_version();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.sandbox.resource_version(),
        settled,
        "the Endpoints controllers write nothing while nothing changes"
    );

    let slices: Api<EndpointSlice> = cluster.api();
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=pg"))
        .await
        .expect("listed")
        .items;
    assert_eq!(listed.len(), 1, "one EndpointSlice");
    let ready: Vec<(String, Option<bool>)> = listed[0]
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().and_then(|c| c.ready),
            )
        })
        .collect();
    assert!(
        ready.contains(&(second.to_string(), Some(true))),
        "{ready:?}"
    );
    assert!(
        ready.contains(&(first.to_string(), Some(false))),
        "{ready:?}"
    );

    let (ok, out, err) = cluster.kubectl(&["describe", "service", "pg"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{second}:6001")),
        "describe lists the ready endpoint: {out}"
    );

    pods.delete("pg-b", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    services
        .delete("pg", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("the Endpoints go with the Service", 10, || async {
        endpoints.get_opt("pg").await.expect("get").is_none()
    })
    .await;
    cluster.stop().await;
}

/// Accepts connections at `ip` on a free port and answers each with `reply`.
async fn backend(ip: Ipv4Addr, reply: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((ip, 0))
        .await
        .expect("bound at the pod IP");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut asked = [0u8; 4];
                if stream.read_exact(&mut asked).await.is_ok() {
                    let _ = stream.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    (port, task)
}

/// Connects through the Service, says hello and returns the answer, or the connect error.
async fn ask(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(b"ping").await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn the_proxy_forwards_cluster_ip_traffic_to_ready_pods_only() {
    let cluster = Cluster::start(ControllerOptions::default(), true, Outcome::Leave).await;
    let services: Api<Service> = cluster.api();
    let pods = cluster.pods();
    let (first_ip, second_ip) = (pod_ip(), pod_ip());
    let (first_port, first_task) = backend(first_ip, "first").await;
    let (second_port, second_task) = backend(second_ip, "second").await;
    // Numeric targetPorts differ per pod here, so each pod's named port carries its own.
    let created = services
        .create(
            &PostParams::default(),
            &service(
                "echo",
                json!({"selector": {"app": "echo"}, "ports": [{"port": 7000, "targetPort": "pg"}]}),
            ),
        )
        .await
        .expect("created");
    let ip: Ipv4Addr = created
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("ClusterIP")
        .parse()
        .expect("IPv4");
    let frontend = SocketAddr::new(ip.into(), 7000);

    // No endpoint yet: refused at once.
    let refused = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(frontend))
        .await
        .expect("answered at once");
    assert_eq!(
        refused.expect_err("nothing ready").kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    run_pod(&pods, "echo-1", "echo", first_ip, first_port, true).await;
    eventually(
        "the ready pod answers through the ClusterIP",
        10,
        || async { ask(frontend).await.is_ok_and(|answer| answer == "first") },
    )
    .await;

    run_pod(&pods, "echo-2", "echo", second_ip, second_port, true).await;
    eventually("connections reach both ready pods", 10, || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            if let Ok(answer) = ask(frontend).await {
                seen.insert(answer);
            }
        }
        seen.len() == 2
    })
    .await;

    set_pod_status(&pods, "echo-1", "Running", false).await;
    set_pod_status(&pods, "echo-2", "Running", false).await;
    eventually("refused once no pod is ready", 10, || async {
        matches!(
            TcpStream::connect(frontend).await,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;

    set_pod_status(&pods, "echo-2", "Running", true).await;
    eventually("served again by the pod that is ready", 10, || async {
        ask(frontend).await.is_ok_and(|answer| answer == "second")
    })
    .await;
    services
        .delete("echo", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("the listener closes with its Service", 10, || async {
        TcpStream::connect(frontend).await.is_err()
    })
    .await;
    first_task.abort();
    second_task.abort();
    cluster.stop().await;
}

#[tokio::test]
async fn endpoints_left_by_services_deleted_while_nothing_watched_are_removed_at_start() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let manual = |name: &str| -> Endpoints {
        object(json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": "127.64.0.9"}], "ports": [{"port": 80}]}],
        }))
    };
    // A Service without a selector, whose Endpoints its user writes, and Endpoints whose
    // Service is gone.
    services
        .create(
            &PostParams::default(),
            &service("external", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect("created");
    for name in ["external", "leftover"] {
        endpoints
            .create(&PostParams::default(), &manual(name))
            .await
            .expect("created");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let controllers = tokio::spawn(tusk_sandbox::controllers::run(
        client.clone(),
        ControllerOptions::default(),
        shutdown.clone(),
    ));
    eventually("the leftover Endpoints are removed", 10, || async {
        endpoints.get_opt("leftover").await.expect("get").is_none()
    })
    .await;
    let kept = endpoints
        .get("external")
        .await
        .expect("user Endpoints kept");
    assert_eq!(addresses(&kept).0, vec!["127.64.0.9".to_string()]);
    shutdown.cancel();
    let _ = controllers.await;
    sandbox.shutdown().await;
}
