//! A backup's identity on `tusk dev`: a request name can be reused without touching an existing
//! backup, a clash is a failed request with a reason rather than a false success, and names too
//! long for a Job still get their backup.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use serde_json::json;
use support::Dev;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_and_long_request_names_never_overwrite_or_lose_a_backup() {
    let dev = Dev::start();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "elephant"},
        "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready("elephant");

    let (phase, message) = shop.backup("elephant", "nightly");
    assert_eq!(phase, "Succeeded", "{message}");
    let first = shop.get_json(&["pgb", "nightly"]).expect("the backup");
    let key = first["spec"]["s3"]["path"]
        .as_str()
        .expect("a key")
        .to_owned();
    let object = dev.s3_dir().join("tusk-backups").join(&key);
    let stored = std::fs::read(&object).expect("the object is stored");

    // The request goes, its backup stays; the same name asked again must not replace it.
    shop.ok(&["delete", "pgbr", "nightly"]);
    let (phase, message) = shop.backup("elephant", "nightly");
    assert_eq!(phase, "Failed", "a clash must not read as success");
    assert!(message.contains("already exists"), "{message}");
    let kept = shop.get_json(&["pgb", "nightly"]).expect("the backup");
    assert_eq!(kept["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(
        std::fs::read(&object).expect("the object is still there"),
        stored,
        "the existing backup's object was overwritten"
    );

    // A request name as long as Kubernetes allows for a label still gets its Job and backup.
    let long = format!("weekly-{}", "x".repeat(56));
    assert_eq!(long.len(), 63);
    let (phase, message) = shop.backup("elephant", &long);
    assert_eq!(phase, "Succeeded", "{message}");
    let job = shop.get_json(&["pgbr", &long]).expect("the request")["status"]["jobName"]
        .as_str()
        .expect("a Job name")
        .to_owned();
    assert!(job.len() <= 63, "{job}");
}
