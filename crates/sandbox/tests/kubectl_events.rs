//! The workload controllers' Events, as `kubectl get events` and `describe` show them.

mod cluster;

use cluster::{Cluster, Outcome, deployment, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use tusk_sandbox::controllers::ControllerOptions;

async fn events_with_reason(cluster: &Cluster, reason: &str) -> Vec<Event> {
    let events: Api<Event> = cluster.api();
    events
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .expect("events listed")
        .items
}

/// kube-controller-manager's Deployment controller records `ScalingReplicaSet` on the
/// Deployment (`Scaled up replica set <name> from <old> to <new>`), and the ReplicaSet
/// controller `SuccessfulCreate` (`Created pod: <name>`), through client-go's core/v1
/// recorder: with source, firstTimestamp, lastTimestamp and count, so that
/// `kubectl get events --sort-by=.lastTimestamp` orders them.
#[tokio::test]
async fn deployment_and_replicaset_controllers_record_their_events() {
    let cluster = Cluster::start(ControllerOptions::default(), false, Outcome::Ready).await;
    let deployments: Api<Deployment> = cluster.api();
    let web = deployment("web", 2, "nginx");
    deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("created");
    eventually("the ReplicaSet's pods are created", 30, || async {
        events_with_reason(&cluster, "SuccessfulCreate").await.len() == 2
    })
    .await;
    // Event times are whole seconds: the scale-up comes a second later, to sort after.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (ok, _, stderr) = cluster
        .kubectl(&["scale", "deployment/web", "--replicas=3"])
        .await;
    assert!(ok, "{stderr}");
    eventually("the scale-up is recorded", 30, || async {
        events_with_reason(&cluster, "ScalingReplicaSet")
            .await
            .len()
            == 2
    })
    .await;

    let scaling = events_with_reason(&cluster, "ScalingReplicaSet").await;
    let mut messages: Vec<String> = scaling.iter().filter_map(|e| e.message.clone()).collect();
    messages.sort();
    let set = scaling[0]
        .message
        .as_deref()
        .and_then(|m| m.split_whitespace().nth(4))
        .expect("the ReplicaSet's name")
        .to_string();
    assert!(set.starts_with("web-"), "{set}");
    assert_eq!(
        messages,
        [
            format!("Scaled up replica set {set} from 0 to 2"),
            format!("Scaled up replica set {set} from 2 to 3"),
        ]
    );
    for event in &scaling {
        assert_eq!(event.involved_object.kind.as_deref(), Some("Deployment"));
        assert_eq!(event.involved_object.name.as_deref(), Some("web"));
        assert_eq!(
            event.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("deployment-controller")
        );
        assert_eq!(event.count, Some(1));
        assert!(event.first_timestamp.is_some() && event.last_timestamp.is_some());
        assert_eq!(event.type_.as_deref(), Some("Normal"));
    }
    let created = events_with_reason(&cluster, "SuccessfulCreate").await;
    assert!(created.iter().all(|e| {
        e.involved_object.kind.as_deref() == Some("ReplicaSet")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Created pod: web-"))
    }));

    let (ok, sorted, stderr) = cluster
        .kubectl(&["get", "events", "--sort-by=.lastTimestamp"])
        .await;
    assert!(ok, "{stderr}");
    let scaled_rows: Vec<&str> = sorted
        .lines()
        .filter(|line| line.contains("ScalingReplicaSet"))
        .collect();
    assert_eq!(scaled_rows.len(), 2, "{sorted}");
    assert!(
        scaled_rows[0].contains("from 0 to 2"),
        "oldest first: {sorted}"
    );
    assert!(scaled_rows[1].contains("from 2 to 3"), "{sorted}");
    let (ok, described, stderr) = cluster.kubectl(&["describe", "deployment", "web"]).await;
    assert!(ok, "{stderr}");
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("deployment-controller"),
        "{described}"
    );
    cluster.stop().await;
}
