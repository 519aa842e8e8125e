//! The object store: a hostile tenant takes the store keys its namespace holds (its cluster's
//! Secret, its pods' environment) and turns them on the store. They are its own cluster's
//! gateway keys: the platform's keys are nowhere in its reach, and another tenant's backups and
//! WAL stay out of reach (docs/security.md, invariant 4).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use tusk_backup::store::{BackupStore, StoreConfig};

use crate::support::{Dev, Kubectl};

fn cluster(kubectl: &Kubectl, name: &str) {
    kubectl.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"displayName": name, "memorySize": 1, "postgresDiskSize": 1}
    }));
}

/// A value of a Secret, decoded, as the tenant reads it.
fn secret_value(kubectl: &Kubectl, secret: &str, key: &str) -> String {
    kubectl.ok(&[
        "get",
        "secret",
        secret,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

/// The store client a tenant builds from its pod's environment and its Secret.
fn client_from(env: &[Value], access_key_id: &str, secret: &str) -> Arc<dyn ObjectStore> {
    let value = |name: &str| {
        env.iter()
            .find(|var| var["name"] == name)
            .and_then(|var| var["value"].as_str())
            .unwrap_or_else(|| panic!("the pod has no {name}"))
            .to_owned()
    };
    BackupStore::new(&StoreConfig {
        url: value("TUSK_STORE_URL"),
        endpoint: Some(value("TUSK_STORE_ENDPOINT")),
        access_key_id: Some(access_key_id.to_owned()),
        secret_access_key: Some(secret.to_owned()),
        allow_http: true,
        ..StoreConfig::default()
    })
    .expect("a store client")
    .object_store()
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_store_keys_reach_its_own_clusters_prefix_and_nothing_else() {
    let dev = Dev::start();
    let victim = dev.tenant("victim", false).await;
    cluster(&victim, "precious");
    victim.wait_ready("precious");
    let (phase, message) = victim.backup("precious", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");
    let victim_key = victim
        .get_json(&["pgb", "nightly"])
        .expect("the victim's backup")["spec"]["s3"]["path"]
        .as_str()
        .expect("its path")
        .to_owned();
    let victim_prefix = victim_key
        .split("/base/")
        .next()
        .expect("a cluster prefix")
        .to_owned();

    let attacker = dev.tenant("attacker", true).await;
    cluster(&attacker, "mallory");
    attacker.wait_ready("mallory");
    let access_key_id = secret_value(&attacker, "mallory-backup-store", "access-key-id");
    let secret = secret_value(&attacker, "mallory-backup-store", "secret-access-key");
    assert!(
        access_key_id.starts_with("tusk.attacker.mallory."),
        "{access_key_id}"
    );

    // The platform's store keys and its store's address are in no Secret and no pod template
    // of the tenant's namespace.
    let state: Value = serde_json::from_slice(
        &std::fs::read(dev.s3_dir().with_file_name("s3.json")).expect("tusk dev's store state"),
    )
    .expect("JSON");
    let platform_secret = state["secret_key"]
        .as_str()
        .expect("the store's secret key");
    let platform_key_id = state["access_key"].as_str().expect("the store's key id");
    let every_secret_value = attacker.ok(&[
        "get",
        "secrets",
        "-o",
        "go-template={{range .items}}{{range $key, $value := .data}}{{$value | base64decode}}\n{{end}}{{end}}",
    ]);
    assert!(
        every_secret_value.contains(&secret),
        "the tenant reads its Secrets"
    );
    assert!(!every_secret_value.contains(platform_secret));
    assert!(!every_secret_value.contains(platform_key_id));
    let pod = attacker
        .get_json(&["pod", "mallory-0"])
        .expect("the instance's pod");
    let pod_spec = pod["spec"].to_string();
    let store_port = state["port"].as_u64().expect("the store's port");
    assert!(
        !pod_spec.contains(&format!("127.0.0.1:{store_port}")),
        "{pod_spec}"
    );
    let env = pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the instance's environment")
        .clone();
    let store = client_from(&env, &access_key_id, &secret);

    // Its own prefix works: the keys are real.
    let own_prefix = format!(
        "{}/attacker/mallory/{}",
        victim_prefix
            .split("/victim/")
            .next()
            .expect("the store prefix"),
        access_key_id.rsplit('.').next().expect("the uid")
    );
    store
        .put(
            &ObjectPath::from(format!("{own_prefix}/wal/probe")),
            PutPayload::from_static(b"mine"),
        )
        .await
        .expect("the tenant writes under its own prefix");

    // The victim's backup, its WAL folder, the bucket: refused, and nothing changed.
    let stolen = store.get(&ObjectPath::from(victim_key.as_str())).await;
    assert!(stolen.is_err(), "read another tenant's backup");
    let listed: object_store::Result<Vec<_>> = store
        .list(Some(&ObjectPath::from(victim_prefix.as_str())))
        .try_collect()
        .await;
    assert!(listed.is_err(), "listed another tenant's prefix");
    let listed: object_store::Result<Vec<_>> = store.list(None).try_collect().await;
    assert!(listed.is_err(), "listed the bucket");
    let planted = format!("{victim_prefix}/wal/000000010000000000000099.gz.dare");
    let plant = store
        .put(
            &ObjectPath::from(planted.as_str()),
            PutPayload::from_static(b"x"),
        )
        .await;
    assert!(
        plant.is_err(),
        "planted a WAL segment in another tenant's archive"
    );
    let bucket = dev.s3_dir().join("tusk-backups");
    assert!(!bucket.join(&planted).exists());
    assert!(bucket.join(&victim_key).exists());

    // Deleting the cluster voids its keys (after the gateway's cached answer expires).
    attacker.ok(&["delete", "postgrescluster", "mallory", "--wait=true"]);
    attacker.until(
        "the deleted cluster's keys to stop working",
        Duration::from_secs(90),
        || {
            let store = store.clone();
            let own = own_prefix.clone();
            let result = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    store
                        .get(&ObjectPath::from(format!("{own}/wal/probe")))
                        .await
                })
            });
            match result {
                Err(error) if error.to_string().contains("no longer exists") => Ok(()),
                Err(error) => Err(error.to_string()),
                Ok(_) => Err("still readable".to_owned()),
            }
        },
    );
}
