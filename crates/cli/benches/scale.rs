//! Scale benchmark (not a test): 1,000 PostgresClusters created at once on the sandbox, with
//! the operator running as its own `tusk operator` process, as it does in a cluster.
//!
//! Prints the time until every child of every cluster exists, the operator process's peak RSS
//! (VmHWM, read from /proc), and the API writes per minute once everything has converged (the
//! target is zero: no status write without a change, no re-apply that bumps a
//! resourceVersion).
//!
//! Run with `cargo bench -p tusk-cli --bench scale`; `TUSK_BENCH_CLUSTERS` changes the count,
//! `TUSK_BENCH_IDLE_SECONDS` the idle measurement window (default 60), and
//! `TUSK_BENCH_SHOW_WRITES` lists the objects written during that window.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tusk_api::{PostgresBackupSchedule, PostgresCluster};

#[path = "../../operator/tests/support/mod.rs"]
mod support;

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn count<K>(client: &Client) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.len())
        .unwrap_or(0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// `tusk operator` against the sandbox, configured for the test store.
fn spawn_operator(
    kubeconfig: &std::path::Path,
    config: &tusk_operator::config::OperatorConfig,
    dir: &std::path::Path,
) -> Child {
    let credentials = config
        .store
        .credentials
        .as_ref()
        .expect("store credentials");
    let file = dir.join("operator.yaml");
    std::fs::write(
        &file,
        format!(
            "store:\n  url: {url}\n  endpoint: {endpoint}\n  allowHttp: true\n  credentials:\n    namespace: {namespace}\n    name: {name}\n    accessKeyIdKey: {access}\n    secretAccessKeyKey: {secret}\nhttpAddress: 127.0.0.1:0\nleaderElection:\n  enabled: false\n",
            url = config.store.url,
            endpoint = config.store.endpoint.as_deref().unwrap_or_default(),
            namespace = credentials.namespace,
            name = credentials.name,
            access = credentials.access_key_id_key,
            secret = credentials.secret_access_key_key,
        ),
    )
    .expect("operator configuration is written");
    Command::new(TUSK)
        .args(["operator", "--config"])
        .arg(&file)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("tusk operator starts")
}

#[tokio::main]
async fn main() {
    let clusters = env_number("TUSK_BENCH_CLUSTERS", 1000) as usize;
    let idle = Duration::from_secs(env_number("TUSK_BENCH_IDLE_SECONDS", 60));
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    support::namespace(&client, "bench").await;
    let mut operator = spawn_operator(sandbox.kubeconfig_path(), &config, dir.path());

    let api: Api<PostgresCluster> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    let creates = (0..clusters).map(|index| {
        let api = api.clone();
        async move {
            let mut cluster = support::elephant();
            cluster.metadata.name = Some(format!("db-{index:04}"));
            api.create(&PostParams::default(), &cluster)
                .await
                .expect("cluster is created");
        }
    });
    futures::future::join_all(creates).await;
    let created = started.elapsed();

    let mut last_report = Instant::now();
    loop {
        let stateful_sets = count::<k8s_openapi::api::apps::v1::StatefulSet>(&client).await;
        let services = count::<k8s_openapi::api::core::v1::Service>(&client).await;
        let config_maps = count::<k8s_openapi::api::core::v1::ConfigMap>(&client).await;
        let schedules = count::<PostgresBackupSchedule>(&client).await;
        if stateful_sets >= clusters
            && services >= clusters
            && config_maps >= clusters
            && schedules >= clusters
        {
            break;
        }
        if let Ok(Some(status)) = operator.try_wait() {
            panic!("tusk operator exited with {status} before converging");
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "after {:.0} s: {stateful_sets} StatefulSets, {services} Services, {config_maps} ConfigMaps, {schedules} schedules",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = started.elapsed();
    // Let the last status writes land before measuring the idle write rate.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = sandbox.resource_version();
    tokio::time::sleep(idle).await;
    let writes = sandbox.resource_version() - before;
    if std::env::var_os("TUSK_BENCH_SHOW_WRITES").is_some() {
        show_writes_since(&client, before).await;
    }
    let per_minute = writes as f64 * 60.0 / idle.as_secs_f64();
    let operator_rss = peak_rss_mib(operator.id());

    println!("clusters:                       {clusters}");
    println!(
        "all created (API calls):        {:.1} s",
        created.as_secs_f64()
    );
    println!(
        "every child exists after:       {:.1} s",
        converged.as_secs_f64()
    );
    println!("operator peak RSS:              {operator_rss:.0} MiB");
    println!("API writes/min once converged:  {per_minute:.1}");
    let _ = operator.kill();
    let _ = operator.wait();
}

/// Lists every object written since resourceVersion `before`, to explain a non-zero idle write
/// rate (set `TUSK_BENCH_SHOW_WRITES`).
async fn show_writes_since(client: &Client, before: u64) {
    use kube::api::DynamicObject;
    use kube::discovery::{Discovery, verbs};
    let Ok(discovery) = Discovery::new(client.clone()).run().await else {
        eprintln!("discovery failed; cannot list the idle writes");
        return;
    };
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if !capabilities.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for object in list.items {
                let written_at: u64 = object
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                if written_at > before {
                    eprintln!(
                        "written while idle: {} {}/{} at resourceVersion {written_at}",
                        resource.kind,
                        object.metadata.namespace.as_deref().unwrap_or("-"),
                        object.metadata.name.as_deref().unwrap_or("-"),
                    );
                }
            }
        }
    }
}
