//! The operator's Event recorder against the sandbox, read back as a person reads Events: with
//! `kubectl describe`. A repeat is counted on the Event already there; a failure with the same
//! reason but another message is an Event of its own.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Resource as _;
use kube::api::{Api, ObjectMeta, PostParams};
use tusk_operator::events::{Event, EventType, Recorder, Reporter, publish};

/// `kubectl describe configmap <name>` in the sandbox.
async fn describe(sandbox: &tusk_sandbox::Sandbox, name: &str) -> String {
    let output = tokio::process::Command::new("kubectl")
        .args(["describe", "configmap", name])
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn warning(note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "InvalidParameter".into(),
        note: Some(note.into()),
        action: "CheckParameters".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn repeats_are_counted_and_different_messages_are_events_of_their_own() {
    let (sandbox, client) = support::sandbox().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("subject".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let map = maps
        .create(&PostParams::default(), &map)
        .await
        .expect("created");
    let reference: ObjectReference = map.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tusk-operator".into(),
            instance: Some("test".into()),
        },
    );

    let first = r#"work_mem: invalid value for parameter "work_mem": "banana""#;
    let second = r#"work_mem: invalid value for parameter "work_mem": "apple""#;
    for _ in 0..3 {
        recorder
            .publish(&warning(first), &reference)
            .await
            .expect("published");
    }
    publish(
        &recorder,
        &reference,
        EventType::Warning,
        "InvalidParameter",
        "CheckParameters",
        second.to_owned(),
    )
    .await;

    let described = describe(&sandbox, "subject").await;
    let lines: Vec<&str> = described
        .lines()
        .filter(|line| line.contains("InvalidParameter"))
        .collect();
    assert_eq!(lines.len(), 2, "two failures, two Events:\n{described}");
    let banana = lines
        .iter()
        .find(|line| line.contains("banana"))
        .unwrap_or_else(|| panic!("the first failure:\n{described}"));
    assert!(banana.contains("(x3 over"), "counted three times: {banana}");
    let apple = lines
        .iter()
        .find(|line| line.contains("apple"))
        .unwrap_or_else(|| panic!("the second failure:\n{described}"));
    assert!(!apple.contains("(x"), "happened once: {apple}");

    // An Event deleted (or expired) meanwhile: the next occurrence starts a new one.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    for event in support::events_about(&client, "default", "subject").await {
        events
            .delete(
                event.metadata.name.as_deref().expect("a name"),
                &Default::default(),
            )
            .await
            .expect("deleted");
    }
    recorder
        .publish(&warning(first), &reference)
        .await
        .expect("published after the Event went");
    let left = support::events_about(&client, "default", "subject").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].note.as_deref(), Some(first));
    sandbox.shutdown().await;
}
