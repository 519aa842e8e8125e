//! 500 projects created together must not all back up in the same minute: the default schedule
//! of each cluster plans its first run at an offset derived from the cluster's uid.

mod support;

use std::collections::BTreeMap;

use kube::api::{Api, ListParams, PostParams};
use tusk_api::{PostgresBackupSchedule, PostgresCluster};

const NS: &str = "projects";
const PROJECTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_default_schedules_spread_their_first_runs_over_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    support::namespace(&client, NS).await;
    let operator = support::Operator::start(config, client.clone());

    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let creates = (0..PROJECTS).map(|index| {
        let clusters = clusters.clone();
        async move {
            let mut cluster = support::elephant();
            cluster.metadata.name = Some(format!("project-{index:03}"));
            clusters
                .create(&PostParams::default(), &cluster)
                .await
                .expect("cluster is created");
        }
    });
    futures::future::join_all(creates).await;

    let schedules: Api<PostgresBackupSchedule> = Api::namespaced(client.clone(), NS);
    // Each schedule's first run, as an offset from the schedule's creation.
    let offsets: Vec<jiff::SignedDuration> = support::eventually_for(
        "every default schedule has planned its first run",
        std::time::Duration::from_secs(240),
        || async {
            let planned: Vec<jiff::SignedDuration> = schedules
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|schedule| {
                    let created = schedule.metadata.creation_timestamp?.0;
                    let status = schedule.status?;
                    let next = status.next_run_at?.0;
                    // A schedule whose slot fell in the test's first seconds has run already:
                    // that was its first run, and its next one is a day later.
                    let first = status.last_run_at.map_or(next, |ran| ran.0);
                    Some(first.duration_since(created))
                })
                .collect();
            (planned.len() == PROJECTS).then_some(planned)
        },
    )
    .await;
    operator.stop().await;

    let day = jiff::SignedDuration::from_hours(24);
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    let mut per_hour = [0usize; 24];
    for offset in &offsets {
        assert!(
            !offset.is_negative() && *offset < day,
            "a first run {offset:?} after its schedule's creation is outside the first interval"
        );
        let minute = offset.as_secs() / 60;
        *per_minute.entry(minute).or_default() += 1;
        per_hour[(minute / 60).min(23) as usize] += 1;
    }
    // Spread uniformly, 500 runs give about 0.35 per minute and 21 per hour; the bounds below
    // fail only for a clumped schedule (chance of a false alarm well under one in a million).
    let busiest_minute = per_minute.values().copied().max().unwrap_or(0);
    assert!(
        busiest_minute <= 8,
        "{busiest_minute} first backups start in the same minute"
    );
    assert!(
        per_hour.iter().all(|&runs| runs > 0),
        "some hours of the day get no first backup at all: {per_hour:?}"
    );
}
