//! TLS on every connection to a database on `tusk dev`, with the real psql: a client that
//! verifies the server (`sslmode=verify-full` with the credentials Secret's `ca.crt`) gets in
//! through the Service's name; a plaintext connection from outside the pod is refused with
//! PostgreSQL's pg_hba message; another cluster's CA, or a name the certificate does not carry,
//! fails verification; and the backup Job still gets its backup over TLS.
//!
//! `tusk dev` has no cluster DNS, so psql is given the Service's address as `hostaddr` and its
//! name as `host`: libpq connects to the address and verifies the name.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::{Dev, Kubectl};

/// One value of a Secret, decoded, read as the administrator.
fn secret_value(admin: &Kubectl, namespace: &str, secret: &str, key: &str) -> String {
    let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
    admin.ok(&[
        "--namespace",
        namespace,
        "get",
        "secret",
        secret,
        "-o",
        &template,
    ])
}

fn service_ip(admin: &Kubectl, namespace: &str, cluster: &str) -> String {
    admin.ok(&[
        "--namespace",
        namespace,
        "get",
        "service",
        &format!("{cluster}-rw"),
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// Runs `sql` with psql given a whole connection string and the owner's password; returns what
/// it printed, or what it said on failure.
fn psql(connection: &str, password: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .arg(connection)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        // Nothing from the environment may loosen what the connection string asks for.
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_verified_tls_and_plaintext_is_refused() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant("shop", false).await;
    let other = dev.tenant("other", false).await;
    for (tenant, name) in [(&shop, "elephant"), (&other, "mammoth")] {
        tenant.apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": name},
            "spec": {"displayName": name, "memorySize": 1, "postgresDiskSize": 1}
        }));
    }
    shop.wait_ready("elephant");
    other.wait_ready("mammoth");

    let files = tempfile::tempdir().expect("a temporary directory");
    let credentials = |key: &str| secret_value(&admin, "shop", "elephant-credentials", key);
    let ca = write(files.path(), "ca.crt", &credentials("ca.crt"));
    let password = credentials("password");
    let address = service_ip(&admin, "shop", "elephant");

    // The `uri` as the Secret gives it, with the address libpq cannot look up here and the CA.
    let uri = credentials("uri");
    assert!(uri.contains("sslmode=verify-full"), "{uri}");
    assert!(uri.contains("@elephant-rw.shop.svc:5432/app"), "{uri}");
    assert!(!uri.contains(&password), "the uri carries no password");
    let jdbc = credentials("jdbc-uri");
    assert!(
        jdbc.starts_with("jdbc:postgresql://elephant-rw.shop.svc:5432/app?")
            && jdbc.contains("sslmode=verify-full"),
        "{jdbc}"
    );
    let verified = format!("{uri}&hostaddr={address}&sslrootcert={ca}");
    assert_eq!(psql(&verified, &password, "SHOW ssl").as_deref(), Ok("on"));
    let protocol = psql(
        &verified,
        &password,
        "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .expect("the session's TLS version");
    assert!(protocol == "TLSv1.2" || protocol == "TLSv1.3", "{protocol}");

    // Every name of the Service in the cluster is in the certificate.
    for host in [
        "elephant-rw",
        "elephant-rw.shop",
        "elephant-rw.shop.svc",
        "elephant-rw.shop.svc.cluster.local",
    ] {
        let connection = format!(
            "host={host} hostaddr={address} port=5432 user=app dbname=app \
             sslmode=verify-full sslrootcert={ca}"
        );
        assert_eq!(
            psql(&connection, &password, "SELECT 1").as_deref(),
            Ok("1"),
            "through {host}"
        );
    }

    // The attack: plaintext from outside the pod, with the right password.
    let plaintext = format!("host={address} port=5432 user=app dbname=app sslmode=disable");
    let refused = psql(&plaintext, &password, "SELECT 1").expect_err("plaintext is refused");
    assert!(
        refused.contains("pg_hba.conf rejects connection for host")
            && refused.contains("no encryption"),
        "{refused}"
    );
    // Nor may the replication role, which the backup Job uses, come in without TLS.
    let replication_password = credentials("replication-password");
    let replication = format!(
        "host={address} port=5432 user=tusk_replication dbname=app sslmode=disable \
         replication=true"
    );
    let refused = psql(&replication, &replication_password, "IDENTIFY_SYSTEM")
        .expect_err("plaintext replication is refused");
    assert!(refused.contains("pg_hba.conf rejects"), "{refused}");

    // Another cluster's CA does not vouch for this one: one CA per cluster.
    let other_ca = write(
        files.path(),
        "other-ca.crt",
        &secret_value(&admin, "other", "mammoth-credentials", "ca.crt"),
    );
    assert_ne!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(&other_ca).unwrap()
    );
    let wrong_ca = format!(
        "host=elephant-rw.shop.svc hostaddr={address} port=5432 user=app dbname=app \
         sslmode=verify-full sslrootcert={other_ca}"
    );
    let failed = psql(&wrong_ca, &password, "SELECT 1").expect_err("a wrong CA fails");
    assert!(failed.contains("certificate verify failed"), "{failed}");
    // Nor is the certificate good for another name, such as the other cluster's.
    let wrong_name = format!(
        "host=mammoth-rw.other.svc hostaddr={address} port=5432 user=app dbname=app \
         sslmode=verify-full sslrootcert={ca}"
    );
    let failed = psql(&wrong_name, &password, "SELECT 1").expect_err("a wrong name fails");
    assert!(failed.contains("does not match host name"), "{failed}");

    // The CA's key stays with the operator: nothing in the tenant's namespace holds it.
    let ca_keys = admin.ok(&[
        "--namespace",
        "tusk-system",
        "get",
        "secrets",
        "-o",
        "go-template={{range .items}}{{range $k, $v := .data}}{{if eq $k \"ca.key\"}}{{$v | base64decode}}{{end}}{{end}}{{end}}",
    ]);
    assert!(
        ca_keys.contains("PRIVATE KEY"),
        "the CA keys are in tusk-system"
    );
    let tenant_secrets = admin.ok(&[
        "--namespace",
        "shop",
        "get",
        "secrets",
        "-o",
        "go-template={{range .items}}{{range $k, $v := .data}}{{$v | base64decode}}{{end}}{{end}}",
    ]);
    for block in ca_keys.split("-----END PRIVATE KEY-----") {
        let body = block.trim();
        if !body.is_empty() {
            assert!(
                !tenant_secrets.contains(body),
                "a CA key is in the tenant's namespace"
            );
        }
    }

    // The backup Job connects over verified TLS and gets its backup.
    let (phase, message) = shop.backup("elephant", "over-tls");
    assert_eq!(phase, "Succeeded", "{message}");
}
