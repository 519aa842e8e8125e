//! tusk's own roles log in with client certificates, on `tusk dev` with the real psql and the
//! real PostgreSQL: the replication role (the backup Job's pg_basebackup, and replicas to come)
//! gets in only with the certificate its cluster's CA signed for it; its right password without
//! that certificate is refused with PostgreSQL's own message; the certificate of another
//! tenant's cluster, signed by that cluster's CA for the same role name, does not open this
//! one; and a backup taken by the Job with its certificate restores.
//!
//! `tusk dev` has no cluster DNS, so psql is given the Service's address as `hostaddr` and its
//! name as `host`: libpq connects to the address and verifies the name.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

#[path = "shared/owner_sql.rs"]
mod shared;
// Shared with tls.rs and tls_tunnel.rs, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "shared/tls.rs"]
mod tls_client;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::{Dev, Kubectl};
use tls_client::{psql, secret_value, service_ip};

/// Writes `text` to `dir/name` readable by its owner only (libpq refuses a key others may
/// read); returns the path.
fn write_private(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// The `cluster`'s PostgresCluster in the tenant's namespace.
fn cluster(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"displayName": name, "memorySize": 1, "postgresDiskSize": 1}
    })
}

/// Waits for `name` to be Ready; if it never is, fails with its status, its pod's and what
/// `tusk dev` printed, which say why.
fn wait_ready(dev: &Dev, tenant: &Kubectl, namespace: &str, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let phase = tenant
            .run(&["get", "pgc", name, "-o", "jsonpath={.status.phase}"])
            .unwrap_or_default();
        if phase == "Ready" {
            return;
        }
        if std::time::Instant::now() > deadline {
            let admin = dev.admin();
            panic!(
                "{name} is {phase}, not Ready:\n{}\n{}\n{}",
                admin
                    .run(&["--namespace", namespace, "get", "pgc", name, "-o", "yaml"])
                    .unwrap_or_else(|e| e),
                admin
                    .run(&[
                        "--namespace",
                        namespace,
                        "describe",
                        "pod",
                        &format!("{name}-0")
                    ])
                    .unwrap_or_else(|e| e),
                dev.printed()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tusks_roles_log_in_with_their_own_clusters_client_certificate_only() {
    // The host's disk, which `tusk dev`'s volumes share, may be fuller than the default
    // threshold; this test is not about disks.
    let dev = Dev::start_with(&["--disk-full-percent", "99"]);
    let admin = dev.admin();
    let shop = dev.tenant("shop", false).await;
    let other = dev.tenant("other", false).await;
    shop.apply_json(&cluster("elephant"));
    other.apply_json(&cluster("mammoth"));
    wait_ready(&dev, &shop, "shop", "elephant");
    wait_ready(&dev, &other, "other", "mammoth");

    let files = tempfile::tempdir().expect("a temporary directory");
    let dir = files.path();
    let elephant = |secret: &str, key: &str| secret_value(&admin, "shop", secret, key);
    let ca = write_private(dir, "ca.crt", &elephant("elephant-credentials", "ca.crt"));
    let replication_password = elephant("elephant-credentials", "replication-password");
    let own_cert = write_private(
        dir,
        "own.crt",
        &elephant("elephant-replication-tls", "tls.crt"),
    );
    let own_key = write_private(
        dir,
        "own.key",
        &elephant("elephant-replication-tls", "tls.key"),
    );
    let address = service_ip(&admin, "shop", "elephant-rw");
    let replication = |extra: &str| {
        format!(
            "host=elephant-rw.shop.svc hostaddr={address} port=5432 user=tusk_replication \
             dbname=postgres sslmode=verify-full sslrootcert={ca} {extra}"
        )
    };

    // With its certificate, the replication role gets in: to a database, and for replication.
    let identified = psql(
        &replication(&format!(
            "sslcert={own_cert} sslkey={own_key} replication=true"
        )),
        "",
        "IDENTIFY_SYSTEM",
    )
    .expect("the replication role logs in with its certificate");
    assert!(!identified.is_empty());
    assert_eq!(
        psql(
            &replication(&format!("sslcert={own_cert} sslkey={own_key}")),
            "",
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .as_deref(),
        Ok("/CN=tusk_replication")
    );

    // The attack: the right password over verified TLS, with no certificate (libpq sends none
    // when the file it is pointed at does not exist).
    let none = dir.join("none.crt").display().to_string();
    for extra in [
        format!("sslcert={none} replication=true"),
        format!("sslcert={none}"),
    ] {
        let refused = psql(&replication(&extra), &replication_password, "SELECT 1")
            .expect_err("the password alone is refused");
        assert!(
            refused.contains("connection requires a valid client certificate"),
            "{extra}: {refused}"
        );
    }

    // The cross-tenant attack: the other tenant's certificate for the same role name, signed
    // by its own cluster's CA, with the right password too.
    let stolen_cert = write_private(
        dir,
        "other.crt",
        &secret_value(&admin, "other", "mammoth-replication-tls", "tls.crt"),
    );
    let stolen_key = write_private(
        dir,
        "other.key",
        &secret_value(&admin, "other", "mammoth-replication-tls", "tls.key"),
    );
    for extra in ["replication=true", ""] {
        // Under TLS 1.3 the server checks the client's certificate after the client has sent
        // its last handshake message, so the client may read the server's `unknown ca` alert
        // or, when the server has already closed, only the end of the stream. Every attempt
        // must be refused; at least one of three must name the reason.
        let refusals: Vec<String> = (0..3)
            .map(|_| {
                psql(
                    &replication(&format!(
                        "sslcert={stolen_cert} sslkey={stolen_key} {extra}"
                    )),
                    &replication_password,
                    "SELECT 1",
                )
                .expect_err("another cluster's certificate is refused")
            })
            .collect();
        assert!(
            refusals
                .iter()
                .any(|refused| refused.contains("unknown ca")),
            "{extra}: {refusals:?}"
        );
    }

    // Customers' roles keep their passwords over verified TLS.
    let password = elephant("elephant-credentials", "password");
    let owner = format!(
        "host=elephant-rw.shop.svc hostaddr={address} port=5432 user=app dbname=app \
         sslmode=verify-full sslrootcert={ca}"
    );
    psql(
        &owner,
        &password,
        "CREATE TABLE marks AS SELECT generate_series(1, 321) AS n",
    )
    .expect("the owner logs in with its password");

    // The backup Job logs in with the certificate, and what it took restores.
    let (phase, message) = shop.backup("elephant", "with-certificate");
    assert_eq!(phase, "Succeeded", "{message}");
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "copy"},
        "spec": {"displayName": "copy", "memorySize": 1, "postgresDiskSize": 1,
                 "restore": {"backup": {"name": "with-certificate"}}}
    }));
    shop.until(
        "the restored cluster to be Ready",
        Duration::from_secs(300),
        || {
            let phase = shop.ok(&["get", "pgc", "copy", "-o", "jsonpath={.status.phase}"]);
            (phase == "Ready").then_some(()).ok_or(phase)
        },
    );
    assert_eq!(
        shared::owner_sql(&admin, "shop", "copy", "SELECT count(*) FROM marks").as_deref(),
        Ok("321")
    );
    // The restored cluster has a certificate of its own, from its own CA.
    let copy_cert = secret_value(&admin, "shop", "copy-replication-tls", "tls.crt");
    assert!(copy_cert.contains("BEGIN CERTIFICATE"));
    assert_ne!(copy_cert, std::fs::read_to_string(&own_cert).unwrap());
}
