//! Sandbox API server throughput: creates/s for 10,000 objects, full-list time, p99 watch
//! delivery latency with 100 concurrent watchers, and resident memory.
//!
//! Run with `cargo bench -p tusk-sandbox --bench apiserver`. Client and server share the
//! process, so the memory figure is an upper bound for the server alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tusk_sandbox::Sandbox;

const OBJECTS: usize = 10_000;
const WATCHERS: usize = 100;
const CONCURRENCY: usize = 32;
const CHANGES: usize = 300;

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::builder().start().await?;
    let client = sandbox.client().await?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // 1. Throughput: 10,000 creates, 32 in flight.
    let start = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let maps = maps.clone();
            async move {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{i:05}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
                    "data": {"payload": "x".repeat(200)},
                }))
                .expect("valid config map");
                maps.create(&PostParams::default(), &map).await.map(|_| ())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let create_secs = start.elapsed().as_secs_f64();

    // 2. A full list of the 10,000.
    let mut list_times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let list = maps.list(&ListParams::default()).await?;
        list_times.push(start.elapsed());
        assert_eq!(list.items.len(), OBJECTS);
    }
    list_times.sort();

    // 3. Delivery latency: 100 watchers, then paced changes (so that the figure is latency,
    //    not a queue of a saturated client that shares this process).
    let rv = maps
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let stream = maps
            .watch(&WatchParams::default().timeout(290), &rv)
            .await?;
        let sent = sent.clone();
        let latencies = latencies.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            let mut seen = 0;
            while let Ok(Some(event)) = stream.try_next().await {
                if let WatchEvent::Modified(map) = event {
                    let now = Instant::now();
                    let stamp = map
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("stamp").cloned());
                    let started = stamp.and_then(|s| sent.lock().ok()?.get(&s).copied());
                    if let (Some(started), Ok(mut latencies)) = (started, latencies.lock()) {
                        latencies.push(now - started);
                    }
                    seen += 1;
                    if seen == CHANGES {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..CHANGES {
        let stamp = format!("s{i}");
        if let Ok(mut sent) = sent.lock() {
            sent.insert(stamp.clone(), Instant::now());
        }
        let patch = Patch::Merge(json!({"metadata": {"labels": {"stamp": stamp}}}));
        maps.patch(
            &format!("bench-{:05}", i % OBJECTS),
            &PatchParams::default(),
            &patch,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for watcher in watchers {
        let _ = tokio::time::timeout(Duration::from_secs(60), watcher).await;
    }

    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };

    println!("objects:                  {OBJECTS}");
    println!(
        "creates/s ({CONCURRENCY} in flight): {:.0}",
        OBJECTS as f64 / create_secs
    );
    println!(
        "full list (median of 5):  {:.1} ms",
        list_times[2].as_secs_f64() * 1000.0
    );
    println!(
        "watch deliveries:         {} ({WATCHERS} watchers)",
        latencies.len()
    );
    println!(
        "watch delivery p50:       {:.2} ms",
        percentile(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "watch delivery p99:       {:.2} ms",
        percentile(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "resident memory (client and server): {:.0} MiB",
        resident_mib()
    );
    sandbox.shutdown().await;
    Ok(())
}
