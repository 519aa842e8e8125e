//! Backups: who may create them, what deleting or restoring a forged one does, and what a
//! backup Job's token reaches.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tusk_api::PostgresBackupRequest;

use crate::support::{Dev, Kubectl, files_under, token_of};

const BUCKET: &str = "tusk-backups";

fn elephant(kubectl: &Kubectl, name: &str) {
    kubectl.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"displayName": name, "memorySize": 1, "postgresDiskSize": 1}
    }));
}

/// A PostgresBackup as a hostile tenant writes it by hand, pointing wherever it likes.
fn forged_backup(name: &str, cluster: &str, owner_uid: &str, location: Value) -> Value {
    json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackup",
        "metadata": {
            "name": name,
            "ownerReferences": [{
                "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
                "name": cluster, "uid": owner_uid, "controller": true
            }]
        },
        "spec": {
            "cluster": {"name": cluster},
            "encryption": {"passphraseSecretRef": {"name": format!("{cluster}-credentials"),
                                                   "key": "backup-passphrase"}},
            "s3": location,
            "size": 1
        }
    })
}

fn uid_of(kubectl: &Kubectl, kind: &str, name: &str) -> String {
    kubectl
        .ok(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
        .trim()
        .to_owned()
}

/// A local listener standing in for an attacker's server; counts the connections it gets.
fn attacker_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let address = listener.local_addr().expect("its address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{address}"), connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reads_and_deletes_backups_but_never_creates_or_reports_one() {
    let dev = Dev::start();
    let tenant = dev.tenant("shop", false).await;
    elephant(&tenant, "elephant");
    let uid = uid_of(&tenant, "postgrescluster", "elephant");

    let refused = tenant
        .try_apply_json(&forged_backup(
            "forged",
            "elephant",
            &uid,
            json!({"bucket": BUCKET, "path": "anything"}),
        ))
        .expect_err("a customer cannot create a PostgresBackup");
    assert!(refused.contains("forbidden"), "{refused}");

    tenant.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
        "metadata": {"name": "r1"}, "spec": {"cluster": {"name": "elephant"}}
    }));
    let refused = tenant
        .run(&[
            "patch",
            "pgbr",
            "r1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ])
        .expect_err("a customer cannot write a request's status");
    assert!(refused.contains("forbidden"), "{refused}");

    // triggeredBy is tusk's to decide: the field does not exist for a customer to set.
    let refused = tenant
        .try_apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
            "metadata": {"name": "r2"},
            "spec": {"cluster": {"name": "elephant"}, "triggeredBy": "system"}
        }))
        .expect_err("triggeredBy is refused");
    assert!(refused.contains("triggeredBy"), "{refused}");

    // Nothing in another project.
    let refused = tenant
        .run(&["get", "postgresclusters", "--namespace", "kube-system"])
        .expect_err("another namespace is out of reach");
    assert!(refused.contains("forbidden"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_backup_naming_another_tenants_data_deletes_and_restores_nothing() {
    let dev = Dev::start();
    let victim = dev.tenant("victim", false).await;
    let attacker = dev.tenant("attacker", true).await;

    elephant(&victim, "elephant");
    victim.wait_ready("elephant");
    let (phase, message) = victim.backup("elephant", "precious");
    assert_eq!(phase, "Succeeded", "{message}");
    let precious = victim
        .get_json(&["pgb", "precious"])
        .expect("the victim's backup");
    let victim_key = precious["spec"]["s3"]["path"]
        .as_str()
        .expect("a key")
        .to_owned();
    let victim_object = dev.s3_dir().join(BUCKET).join(&victim_key);
    // `<store prefix>/victim/...`: the store prefix is `tusk dev`'s.
    let store_prefix = victim_key
        .split_once("/victim/")
        .map(|(prefix, _)| prefix.to_owned())
        .expect("the key names the victim's namespace");
    assert!(victim_object.exists(), "{victim_object:?} is stored");

    elephant(&attacker, "mallory");
    let attacker_uid = uid_of(&attacker, "postgrescluster", "mallory");
    let (endpoint, connections) = attacker_server();
    let forgeries = [
        // The victim's object itself, owned by the attacker's own cluster.
        (
            "steal-object",
            json!({"bucket": BUCKET, "path": victim_key}),
        ),
        // The victim's whole prefix, through the attacker's own base directory.
        (
            "climb-out",
            json!({"bucket": BUCKET,
                   "path": format!("{store_prefix}/attacker/mallory/{attacker_uid}/base/../../../../victim")}),
        ),
        // Requests the operator would sign with the platform's keys, sent to the attacker.
        (
            "phone-home",
            json!({"bucket": BUCKET, "endpoint": endpoint, "path": victim_key}),
        ),
    ];
    for (name, location) in &forgeries {
        attacker.apply_json(&forged_backup(
            name,
            "mallory",
            &attacker_uid,
            location.clone(),
        ));
    }
    // A restore from a forged backup is refused before anything runs.
    attacker.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "thief"},
        "spec": {"displayName": "thief", "memorySize": 1, "postgresDiskSize": 1,
                 "restore": {"backup": {"name": "steal-object"}}}
    }));
    attacker.until(
        "a Warning on the restoring cluster",
        Duration::from_secs(60),
        || {
            let events = attacker.events_about("thief");
            events
                .iter()
                .find(|(type_, reason, _)| type_ == "Warning" && reason == "LocationMismatch")
                .cloned()
                .ok_or(format!("{events:?}"))
        },
    );
    assert!(
        attacker.get_json(&["statefulset", "thief"]).is_none(),
        "a restore from a forged backup must not start"
    );

    for (name, _) in &forgeries {
        attacker.ok(&["delete", "pgb", name, "--wait=true", "--timeout=60s"]);
        let events = attacker.events_about(name);
        let (_, _, note) = events
            .iter()
            .find(|(type_, reason, _)| type_ == "Warning" && reason == "LocationMismatch")
            .unwrap_or_else(|| panic!("no LocationMismatch Warning about {name}: {events:?}"));
        assert!(note.contains("Deleted no data"), "{note}");
    }

    assert!(
        victim_object.exists(),
        "the victim's backup object was deleted"
    );
    let victim_files = files_under(
        &dev.s3_dir()
            .join(BUCKET)
            .join(format!("{store_prefix}/victim")),
    );
    assert!(!victim_files.is_empty(), "the victim's prefix was emptied");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the operator contacted an endpoint a tenant named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_jobs_token_reaches_its_own_request_and_cannot_forge_a_backup() {
    let dev = Dev::start();
    let victim = dev.tenant("victim", false).await;
    elephant(&victim, "elephant");
    victim.wait_ready("elephant");
    let (phase, message) = victim.backup("elephant", "precious");
    assert_eq!(phase, "Succeeded", "{message}");
    let victim_key = victim
        .get_json(&["pgb", "precious"])
        .expect("the victim's backup")["spec"]["s3"]["path"]
        .as_str()
        .expect("a key")
        .to_owned();

    let tenant = dev.tenant("shop", false).await;
    elephant(&tenant, "elephant");
    tenant.wait_ready("elephant");
    tenant.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
        "metadata": {"name": "other"}, "spec": {"cluster": {"name": "elephant"}}
    }));
    let admin = dev.admin();
    let admin_client = dev.admin_client().await;
    // A report of the victim's object, checked against the store and refused. It must land
    // before the Job's own report (which never overwrites one already there); a Job that was
    // faster only backs up for real, so a fresh request is tried.
    let forged_result = json!({"status": {"result": {
        "key": victim_key, "size": 1, "sha256": "0".repeat(64),
        "startLsn": "0/2000028", "stopLsn": "0/2000100", "timeline": 1,
        "postgresVersion": "15", "runDuration": "1s"
    }}});
    let mut forged = None;
    for attempt in 1..=3 {
        let mine = format!("mine-{attempt}");
        tenant.apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
            "metadata": {"name": mine}, "spec": {"cluster": {"name": "elephant"}}
        }));
        let account = format!("{mine}-backup");
        admin.until("the Job's ServiceAccount", Duration::from_secs(30), || {
            admin
                .run(&["get", "serviceaccount", &account, "-n", "shop"])
                .map(|_| ())
        });
        // Anyone who can create pods in the namespace can run one under this account.
        let token = token_of(&admin_client, "shop", &account).await;
        let job_client = dev
            .client_with_token(&token, &format!("job-client-{attempt}"))
            .await;
        let requests: Api<PostgresBackupRequest> = Api::namespaced(job_client, "shop");
        requests
            .patch_status(
                &mine,
                &PatchParams::default(),
                &Patch::Merge(forged_result.clone()),
            )
            .await
            .expect("a Job may report on its own request");
        let (phase, message) = tenant.outcome_of(&mine);
        if phase == "Succeeded" {
            let recorded = tenant
                .get_json(&["pgb", &mine])
                .expect("the recorded backup")["spec"]["s3"]["path"]
                .clone();
            assert_ne!(recorded, json!(victim_key), "a forged report was recorded");
            continue;
        }
        forged = Some((mine, token, requests, message));
        break;
    }
    let (mine, token, requests, message) =
        forged.expect("the Job reported before the forged report on every attempt");
    assert!(message.contains("not at the key tusk expects"), "{message}");

    // The Job ends, and nothing it did on its way out changed the ended request.
    let job_name = format!("{mine}-backup");
    admin.until(
        "the refused request's Job to end",
        Duration::from_secs(60),
        || {
            let conditions = admin.run(&[
                "get",
                "job",
                &job_name,
                "-n",
                "shop",
                "-o",
                "jsonpath={.status.conditions[?(@.status==\"True\")].type}",
            ]);
            match conditions {
                Ok(types) if types.contains("Complete") || types.contains("Failed") => Ok(()),
                Ok(types) => Err(format!("the Job's conditions: {types:?}")),
                Err(error) if error.contains("NotFound") => Ok(()),
                Err(error) => Err(error),
            }
        },
    );
    let status = tenant.get_json(&["pgbr", &mine]).expect("the request")["status"].clone();
    assert_eq!(status["phase"], "Failed", "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|message| message.contains("not at the key tusk expects")),
        "{status}"
    );

    // The Job's own calls, made with its token as `tusk backup run` makes them.
    let job = dev.kubectl_with_token(&token, "shop", "job-token");
    let forbidden = |result: Result<PostgresBackupRequest, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} was not refused: {other:?}"),
    };
    forbidden(
        requests
            .patch_status(
                "other",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Failed"}})),
            )
            .await,
        "patching another request's status",
    );
    forbidden(requests.get("other").await, "reading another request");
    requests.get(&mine).await.expect("it reads its own request");
    let refused = job.run(&["get", "secrets"]).expect_err("reading Secrets");
    assert!(refused.contains("forbidden"), "{refused}");
    let refused = job
        .try_apply_json(&forged_backup(
            "forged",
            "elephant",
            &uid_of(&tenant, "postgrescluster", "elephant"),
            json!({"bucket": BUCKET, "path": victim_key}),
        ))
        .expect_err("a Job cannot create a PostgresBackup");
    assert!(refused.contains("forbidden"), "{refused}");

    assert!(tenant.get_json(&["pgb", &mine]).is_none());
    let events = tenant.events_about(&mine);
    assert!(
        events
            .iter()
            .any(|(type_, reason, _)| type_ == "Warning" && reason == "BackupUnverified"),
        "{events:?}"
    );
}
