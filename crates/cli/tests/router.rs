//! External access through `tusk router` on `tusk dev`, with the real psql and openssl: two
//! databases behind the one router port, each reached by its own name with
//! `sslmode=verify-full` and `channel_binding=require` (which fails if anything between client
//! and database terminated TLS); unknown names, no name, plaintext and sources outside the
//! allow-list refused with the documented errors, as are bytes pipelined after the
//! SSLRequest; a closed or deleted database loses its route and its open connections within a
//! second; `status.externalEndpoint` and the Secret's `external-uri` lead through the router; a
//! database's own LoadBalancer, for clients without SNI, comes with the allow-list as its
//! source ranges and goes when no longer asked for.
//!
//! The names (`<cluster>.<namespace>.db.tusk.local`) resolve nowhere, so psql is given the
//! router's address as `hostaddr` and the name as `host`: libpq sends the name (SNI) and
//! verifies it.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Dev, Kubectl};

/// A key of a cluster's credentials Secret, as the administrator reads it.
fn credential(admin: &Kubectl, namespace: &str, cluster: &str, key: &str) -> String {
    admin.ok(&[
        "--namespace",
        namespace,
        "get",
        "secret",
        &format!("{cluster}-credentials"),
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

/// One database as a client outside sees it: its external name, CA file and password.
struct Database {
    name: String,
    ca: String,
    password: String,
}

impl Database {
    fn new(admin: &Kubectl, dir: &std::path::Path, namespace: &str, cluster: &str) -> Self {
        let ca = dir.join(format!("{cluster}-ca.crt"));
        std::fs::write(&ca, credential(admin, namespace, cluster, "ca.crt")).expect("written");
        Self {
            name: format!("{cluster}.{namespace}.db.tusk.local"),
            ca: ca.display().to_string(),
            password: credential(admin, namespace, cluster, "password"),
        }
    }

    /// The connection string through the router for `host`, with `extra` settings.
    fn connection(&self, host: &str, port: u16, extra: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={port} user=app dbname=app \
             sslmode=verify-full sslrootcert={ca} channel_binding=require {extra}",
            ca = self.ca
        )
    }

    /// psql through the router; what it printed, or what it said on failure.
    fn psql(&self, connection: &str, sql: &str) -> Result<String, String> {
        let output = psql_command(connection, &self.password, sql)
            .output()
            .expect("psql runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

fn psql_command(connection: &str, password: &str, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .arg(connection)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        // Nothing from the environment may loosen what the connection string asks for.
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLSNI");
    command
}

fn open_to(tenant: &Kubectl, cluster: &str, ranges: &[&str]) {
    tenant.apply_json(&with_access(
        cluster,
        json!({"allowedSourceRanges": ranges}),
    ));
}

/// A PostgresCluster with `externalAccess` set to `access`.
fn with_access(cluster: &str, access: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": cluster},
        "spec": {
            "displayName": cluster, "memorySize": 1, "postgresDiskSize": 1,
            "externalAccess": access
        }
    })
}

/// An SSLRequest, as every libpq sends it first.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Polls `probe` every 50 ms for at most `limit`; returns how long it took to say yes.
fn within(limit: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if probe() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_behind_one_router_each_by_its_name_with_tls_end_to_end() {
    let dev = Dev::start_with(&["--router-handshake-timeout", "2s"]);
    let port = dev.router_port();
    let admin = dev.admin();
    let shop = dev.tenant("shop", false).await;
    let zoo = dev.tenant("zoo", false).await;
    // The allow-list holds CIDRs, checked at admission.
    let refused = shop
        .try_apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "elephant"},
            "spec": {
                "displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1,
                "externalAccess": {"allowedSourceRanges": ["everyone"]}
            }
        }))
        .expect_err("not a CIDR");
    assert!(refused.contains("allowedSourceRanges"), "{refused}");
    open_to(&shop, "elephant", &["127.0.0.1/32"]);
    open_to(&zoo, "mammoth", &["127.0.0.0/8", "::1/128"]);
    shop.wait_ready("elephant");
    zoo.wait_ready("mammoth");
    let files = tempfile::tempdir().expect("a temporary directory");
    let elephant = Database::new(&admin, files.path(), "shop", "elephant");
    let mammoth = Database::new(&admin, files.path(), "zoo", "mammoth");

    // The status and the credentials Secret say where to connect from outside, and the
    // Secret's URI works as it is (given the router's address, as the name resolves nowhere).
    let endpoint = within(Duration::from_secs(30), || {
        shop.ok(&[
            "get",
            "postgrescluster",
            "elephant",
            "-o",
            "jsonpath={.status.externalEndpoint}",
        ]) == format!("{}:{port}", elephant.name)
    });
    assert!(
        endpoint.is_some(),
        "status.externalEndpoint names the router"
    );
    let external_uri = credential(&admin, "shop", "elephant", "external-uri");
    assert_eq!(
        external_uri,
        format!(
            "postgresql://app@{}:{port}/app?sslmode=verify-full",
            elephant.name
        )
    );
    let through_uri = format!(
        "{external_uri}&hostaddr=127.0.0.1&sslrootcert={}&channel_binding=require",
        elephant.ca
    );
    assert_eq!(elephant.psql(&through_uri, "SELECT 1").as_deref(), Ok("1"));

    // Each by its name, verified against its own CA, with channel binding: the session's TLS
    // ends in that very database.
    for database in [&elephant, &mammoth] {
        let connection = database.connection(&database.name, port, "");
        let ssl = database
            .psql(
                &connection,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .unwrap_or_else(|error| panic!("{} through the router: {error}", database.name));
        assert_eq!(ssl, "t");
    }
    // Each certificate is its own database's: elephant's CA does not vouch for mammoth.
    let crossed = Database {
        ca: elephant.ca.clone(),
        ..Database::new(&admin, files.path(), "zoo", "mammoth")
    };
    let failed = crossed
        .psql(&crossed.connection(&mammoth.name, port, ""), "SELECT 1")
        .expect_err("another cluster's CA fails");
    assert!(failed.contains("certificate verify failed"), "{failed}");

    // openssl sees the database's own certificate through the router.
    let shown = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            &elephant.name,
            "-CAfile",
            &elephant.ca,
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned()
        + &String::from_utf8_lossy(&shown.stderr);
    assert!(
        shown.contains("CN = elephant-rw") || shown.contains("CN=elephant-rw"),
        "{shown}"
    );
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");

    // For clients without SNI, elephant asks for a LoadBalancer Service of its own, open to
    // the allow-list's sources only; it goes when no longer asked for. A load balancer open to
    // no source is refused at admission: without source ranges it would be open to everyone.
    let refused = shop
        .try_apply_json(&with_access("elephant", json!({"loadBalancer": true})))
        .expect_err("a load balancer needs allowedSourceRanges");
    assert!(
        refused.contains("loadBalancer needs allowedSourceRanges"),
        "{refused}"
    );
    shop.apply_json(&with_access(
        "elephant",
        json!({"allowedSourceRanges": ["127.0.0.1/32", "2001:db8::/32"], "loadBalancer": true}),
    ));
    let load_balancer = shop.until("elephant's load balancer", Duration::from_secs(30), || {
        admin
            .get_json(&["--namespace", "shop", "service", "elephant-external"])
            .ok_or("none yet".to_owned())
    });
    assert_eq!(load_balancer["spec"]["type"], "LoadBalancer");
    assert_eq!(
        load_balancer["spec"]["loadBalancerSourceRanges"],
        json!(["127.0.0.1/32", "2001:db8::/32"])
    );
    assert_eq!(
        load_balancer["spec"]["selector"],
        admin
            .get_json(&["--namespace", "shop", "service", "elephant-rw"])
            .expect("the -rw Service")["spec"]["selector"]
    );
    // Once the platform's load balancer has an address (here the test writes it, as a cloud's
    // controller would), the cluster's status says where to connect, and stops saying it when
    // the load balancer goes.
    let load_balancer_endpoint = || {
        shop.ok(&[
            "get",
            "pgc",
            "elephant",
            "-o",
            "jsonpath={.status.loadBalancerEndpoint}",
        ])
    };
    assert_eq!(load_balancer_endpoint(), "", "no address yet");
    admin.ok(&[
        "--namespace",
        "shop",
        "patch",
        "service",
        "elephant-external",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}"#,
    ]);
    shop.until(
        "the load balancer's address",
        Duration::from_secs(10),
        || match load_balancer_endpoint() {
            endpoint if endpoint == "203.0.113.7:5432" => Ok(()),
            endpoint => Err(endpoint),
        },
    );
    open_to(&shop, "elephant", &["127.0.0.1/32"]);
    shop.until(
        "the load balancer to go",
        Duration::from_secs(30),
        || match admin.get_json(&["--namespace", "shop", "service", "elephant-external"]) {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        },
    );
    shop.until(
        "the address to go",
        Duration::from_secs(10),
        || match load_balancer_endpoint() {
            endpoint if endpoint.is_empty() => Ok(()),
            endpoint => Err(endpoint),
        },
    );

    // An unknown name, and no name at all (sslsni=0): refused with a TLS alert.
    for (host, extra) in [
        ("nobody.shop.db.tusk.local", ""),
        (elephant.name.as_str(), "sslsni=0"),
    ] {
        let refused = elephant
            .psql(&elephant.connection(host, port, extra), "SELECT 1")
            .expect_err("refused");
        assert!(
            refused.contains("unrecognized name"),
            "{host} {extra}: {refused}"
        );
    }
    // Plaintext: PostgreSQL's error format, saying what to do.
    let plaintext = format!(
        "host={} hostaddr=127.0.0.1 port={port} user=app dbname=app sslmode=disable",
        elephant.name
    );
    let refused = elephant.psql(&plaintext, "SELECT 1").expect_err("refused");
    assert!(refused.contains("sslmode=verify-full"), "{refused}");

    // Bytes sent after the SSLRequest, before the router's `S` (CVE-2021-23214): refused with
    // PostgreSQL's error format, before anything reaches a database.
    let mut pipelined = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    let mut request = SSL_REQUEST.to_vec();
    request.extend_from_slice(b"\x16\x03\x01 smuggled before the S");
    std::io::Write::write_all(&mut pipelined, &request).expect("sent in one write");
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut pipelined, &mut answer).expect("answered, then closed");
    assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse: {answer:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("bytes were sent after the SSLRequest before the server answered it"),
        "{answer}"
    );

    // A handshake that never completes is cut at the deadline (2 s here).
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    let started = Instant::now();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut rest).expect("closed, not reset");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );

    // Elephant closes to loopback: a session open through the router ends, and new ones are
    // refused, within a second.
    let mut session = psql_command(
        &elephant.connection(&elephant.name, port, ""),
        &elephant.password,
        "SELECT pg_sleep(60)",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("psql starts");
    let open = within(Duration::from_secs(10), || {
        elephant
            .psql(
                &elephant.connection(&elephant.name, port, ""),
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
            )
            .as_deref()
            == Ok("1")
    });
    assert!(open.is_some(), "the long session is open");
    open_to(&shop, "elephant", &["203.0.113.0/24"]);
    let ended = within(Duration::from_secs(1), || {
        session.try_wait().expect("psql runs").is_some()
    });
    let _ = session.kill();
    assert!(ended.is_some(), "the open session ends within a second");
    let refused = elephant
        .psql(&elephant.connection(&elephant.name, port, ""), "SELECT 1")
        .expect_err("a source outside the allow-list is refused");
    assert!(refused.contains("unrecognized name"), "{refused}");

    // Mammoth is deleted: its route goes within a second.
    let connection = mammoth.connection(&mammoth.name, port, "");
    assert_eq!(mammoth.psql(&connection, "SELECT 1").as_deref(), Ok("1"));
    zoo.ok(&["delete", "postgrescluster", "mammoth", "--wait=false"]);
    let gone = within(Duration::from_secs(1), || {
        mammoth
            .psql(&connection, "SELECT 1")
            .is_err_and(|error| error.contains("unrecognized name"))
    });
    assert!(
        gone.is_some(),
        "a deleted cluster loses its route within a second"
    );
}
