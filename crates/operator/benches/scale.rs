//! Scale benchmark (not a test): 1,000 PostgresClusters created at once on the sandbox.
//!
//! Prints the time until every child exists, the peak RSS of this process (the operator and the
//! sandbox API server share it, so the operator's own share is lower), and the API writes per
//! minute once everything has converged (the target is zero: no status write without a
//! change, no re-apply that bumps a resourceVersion).
//!
//! Run with `cargo bench -p tusk-operator --bench scale`; `TUSK_BENCH_CLUSTERS` changes the
//! count and `TUSK_BENCH_IDLE_SECONDS` the idle measurement window (default 60).

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tusk_api::{PostgresBackupSchedule, PostgresCluster};

#[path = "../tests/support/mod.rs"]
mod support;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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

#[tokio::main]
async fn main() {
    let clusters: usize = std::env::var("TUSK_BENCH_CLUSTERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    let idle = Duration::from_secs(
        std::env::var("TUSK_BENCH_IDLE_SECONDS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(60),
    );
    // RUST_LOG shows what the operator does while converging, for investigating a slow run.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    support::namespace(&client, "bench").await;
    let operator = support::Operator::start(config, client.clone());

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
    let per_minute = writes as f64 * 60.0 / idle.as_secs_f64();

    println!("clusters:                     {clusters}");
    println!(
        "all created (API calls):      {:.1} s",
        created.as_secs_f64()
    );
    println!(
        "every child exists after:     {:.1} s",
        converged.as_secs_f64()
    );
    println!("peak RSS (operator+sandbox):  {:.0} MiB", peak_rss_mib());
    println!("API writes/min once converged: {per_minute:.1}");
    operator.stop().await;
}
