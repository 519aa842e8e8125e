//! kube-runtime, unmodified, against the sandbox: watchers across timeouts and 410s, a
//! Controller with `.owns()`, the finalizer helper, the events Recorder, and garbage collection.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::eventually;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tusk_sandbox::Sandbox;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .expect("config map")
}

async fn start() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    (sandbox, client)
}

#[tokio::test]
async fn watcher_survives_timeouts_and_a_forced_relist() {
    let (sandbox, client) = start().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("before"))
        .await
        .expect("created");
    // One-second server-side timeouts make the watcher reconnect from its last resourceVersion.
    let stream = watcher(maps.clone(), watcher::Config::default().timeout(1));
    let mut stream = Box::pin(stream);
    let mut inits = 0;
    let mut seen = Vec::new();
    let wait_for = |name: &'static str| name;
    let mut target = wait_for("before");
    let mut step = 0;
    let mut expired = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the watcher keeps delivering")
    {
        // kube-runtime surfaces the 410 as an error item, then relists on the next poll.
        let event = match event {
            Ok(event) => event,
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                expired += 1;
                continue;
            }
            Err(other) => panic!("unexpected watcher error: {other}"),
        };
        match event {
            watcher::Event::Init => inits += 1,
            watcher::Event::Apply(map) | watcher::Event::InitApply(map) => {
                seen.push(map.name_any())
            }
            _ => {}
        }
        if !seen.iter().any(|n| n == target) {
            continue;
        }
        step += 1;
        match step {
            1 => {
                // A change elsewhere, then compaction: the watcher's resourceVersion is now too
                // old, so its next reconnect gets a 410 and it must relist.
                secrets
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": "s"}}))
                            .expect("secret"),
                    )
                    .await
                    .expect("secret");
                sandbox.compact_watch_history();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                maps.create(&PostParams::default(), &config_map("after"))
                    .await
                    .expect("created");
                target = "after";
            }
            _ => break,
        }
    }
    assert_eq!(
        expired, 1,
        "the reconnect after compaction was told 410 Gone"
    );
    assert!(
        inits >= 2,
        "the watcher relisted after the 410 ({inits} Init events)"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn controller_owns_children_and_the_finalizer_helper_cleans_up() {
    let (sandbox, client) = start().await;
    let parents: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let children: Api<Secret> = Api::namespaced(client.clone(), "default");
    let reconciles = Arc::new(AtomicUsize::new(0));
    let cleanups = Arc::new(AtomicUsize::new(0));

    struct Context {
        client: Client,
        reconciles: Arc<AtomicUsize>,
        cleanups: Arc<AtomicUsize>,
    }
    #[derive(Debug, thiserror::Error)]
    #[error("reconcile failed: {0}")]
    struct Failure(String);

    async fn reconcile(parent: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, Failure> {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "default");
        finalizer(&api, "tusk.dev/test", parent, |event| async {
            match event {
                Finalizer::Apply(parent) => {
                    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
                    let owner = parent.controller_owner_ref(&()).ok_or_else(|| Failure("no owner ref".into()))?;
                    let child = json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": format!("{}-child", parent.name_any()), "ownerReferences": [owner]},
                        "stringData": {"a": "b"},
                    });
                    Api::<Secret>::namespaced(ctx.client.clone(), "default")
                        .patch(&format!("{}-child", parent.name_any()), &PatchParams::apply("test").force(), &Patch::Apply(child))
                        .await
                        .map_err(|e| Failure(e.to_string()))?;
                    Ok::<_, Failure>(Action::await_change())
                }
                Finalizer::Cleanup(_) => {
                    ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|e| Failure(e.to_string()))
    }
    fn error_policy(_: Arc<ConfigMap>, _: &Failure, _: Arc<Context>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        reconciles: reconciles.clone(),
        cleanups: cleanups.clone(),
    });
    let controller = Controller::new(parents.clone(), watcher::Config::default())
        .owns(children.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    parents
        .create(&PostParams::default(), &config_map("parent"))
        .await
        .expect("created");
    eventually("the child exists", 10, || async {
        children
            .get_opt("parent-child")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let parent = parents.get("parent").await.expect("parent");
    assert_eq!(parent.finalizers(), ["tusk.dev/test"]);

    let before = reconciles.load(Ordering::SeqCst);
    children
        .patch(
            "parent-child",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("child changed");
    eventually("a child change triggers a reconcile", 10, || async {
        reconciles.load(Ordering::SeqCst) > before
    })
    .await;

    parents
        .delete("parent", &DeleteParams::default())
        .await
        .expect("delete accepted");
    eventually("cleanup ran and the parent is gone", 10, || async {
        cleanups.load(Ordering::SeqCst) >= 1
            && parents.get_opt("parent").await.ok().flatten().is_none()
    })
    .await;
    eventually("the garbage collector removed the child", 10, || async {
        children
            .get_opt("parent-child")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    controller.abort();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn recorder_events_become_a_series_visible_as_core_events() {
    let (sandbox, client) = start().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = maps
        .create(&PostParams::default(), &config_map("subject"))
        .await
        .expect("created");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tusk-test".into(),
            instance: None,
        },
    );
    let reference: ObjectReference = map.object_ref(&());
    let event = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("Something happened".into()),
        action: "Test".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder
            .publish(&event, &reference)
            .await
            .expect("published");
    }
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=subject,involvedObject.kind=ConfigMap"),
        )
        .await
        .expect("listed");
    assert_eq!(listed.items.len(), 1, "repeats are one event");
    let stored = &listed.items[0];
    assert_eq!(stored.message.as_deref(), Some("Something happened"));
    assert_eq!(stored.reason.as_deref(), Some("Tested"));
    assert_eq!(stored.series.as_ref().and_then(|s| s.count), Some(3));
    assert_eq!(stored.involved_object.uid, map.metadata.uid);
    let other = core
        .list(&ListParams::default().fields("involvedObject.name=someone-else"))
        .await
        .expect("listed");
    assert!(other.items.is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn garbage_collection_follows_the_propagation_policy() {
    let (sandbox, client) = start().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let create_owned = |name: &str, owner: &ConfigMap, block: bool| {
        let mut owner_ref = owner.controller_owner_ref(&()).expect("owner ref");
        owner_ref.block_owner_deletion = Some(block);
        let mut child = config_map(name);
        child.metadata.owner_references = Some(vec![owner_ref]);
        child
    };

    // Background: the owner goes at once, then its dependents.
    let owner = maps
        .create(&PostParams::default(), &config_map("bg-owner"))
        .await
        .expect("owner");
    maps.create(
        &PostParams::default(),
        &create_owned("bg-child", &owner, false),
    )
    .await
    .expect("child");
    maps.delete("bg-owner", &DeleteParams::background())
        .await
        .expect("deleted");
    eventually("background dependents removed", 10, || async {
        maps.get_opt("bg-child").await.ok().flatten().is_none()
    })
    .await;

    // Orphan: dependents stay and lose the reference.
    let owner = maps
        .create(&PostParams::default(), &config_map("or-owner"))
        .await
        .expect("owner");
    maps.create(
        &PostParams::default(),
        &create_owned("or-child", &owner, false),
    )
    .await
    .expect("child");
    maps.delete("or-owner", &DeleteParams::orphan())
        .await
        .expect("deleted");
    eventually("owner gone", 10, || async {
        maps.get_opt("or-owner").await.ok().flatten().is_none()
    })
    .await;
    let orphan = maps.get("or-child").await.expect("orphan kept");
    assert!(orphan.owner_references().is_empty());

    // Foreground: the owner waits, marked, until blocking dependents are gone.
    let owner = maps
        .create(&PostParams::default(), &config_map("fg-owner"))
        .await
        .expect("owner");
    let mut held = create_owned("fg-child", &owner, true);
    held.metadata.finalizers = Some(vec!["tusk.dev/hold".into()]);
    maps.create(&PostParams::default(), &held)
        .await
        .expect("child");
    maps.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete accepted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = maps.get("fg-owner").await.expect("owner still there");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    let child = maps
        .get("fg-child")
        .await
        .expect("child held by its finalizer");
    assert!(child.metadata.deletion_timestamp.is_some());
    // No new finalizers once deletion started.
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["tusk.dev/hold", "tusk.dev/another"]}}));
    let refused = maps
        .patch("fg-child", &PatchParams::default(), &add)
        .await
        .unwrap_err();
    assert_eq!(common::api_error(refused).0, 422);
    maps.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    eventually(
        "foreground owner removed after its dependent",
        10,
        || async {
            maps.get_opt("fg-owner").await.ok().flatten().is_none()
                && maps.get_opt("fg-child").await.ok().flatten().is_none()
        },
    )
    .await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let (sandbox, client) = start().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns"),
        )
        .await
        .expect("ns");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut held = config_map("held");
    held.metadata.finalizers = Some(vec!["tusk.dev/hold".into()]);
    maps.create(&PostParams::default(), &held)
        .await
        .expect("created");
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let terminating = namespaces.get("doomed").await.expect("still there");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let refused = maps
        .create(&PostParams::default(), &config_map("new"))
        .await
        .unwrap_err();
    assert_eq!(common::api_error(refused).0, 403);
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("released");
    eventually("namespace gone", 10, || async {
        namespaces.get_opt("doomed").await.ok().flatten().is_none()
    })
    .await;
    sandbox.shutdown().await;
}
