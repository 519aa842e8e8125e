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

// Shared with tls_tunnel.rs, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "shared/tls.rs"]
mod tls_client;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{Dev, Kubectl};
use tls_client::{pod_incarnation, psql, secret_value, served_serial, write};

/// What a client of `elephant` in `shop` starts from: the values of its credentials Secret, the
/// `-rw` Service's address (`tusk dev` has no cluster DNS) and a directory for CA files.
struct ElephantClient<'a> {
    admin: &'a Kubectl,
    files: tempfile::TempDir,
    password: String,
    address: String,
}

impl<'a> ElephantClient<'a> {
    fn new(admin: &'a Kubectl) -> Self {
        let mut client = Self {
            admin,
            files: tempfile::tempdir().expect("a temporary directory"),
            password: String::new(),
            address: tls_client::service_ip(admin, "shop", "elephant-rw"),
        };
        client.password = client.credential("password");
        client
    }

    /// One value of `elephant-credentials`.
    fn credential(&self, key: &str) -> String {
        secret_value(self.admin, "shop", "elephant-credentials", key)
    }

    /// Writes `pem` to the file `name`; returns its path.
    fn file(&self, name: &str, pem: &str) -> String {
        write(self.files.path(), name, pem)
    }
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

    let client = ElephantClient::new(&admin);
    let credentials = |key: &str| client.credential(key);
    let ca = client.file("ca.crt", &credentials("ca.crt"));
    let (password, address) = (client.password.clone(), client.address.clone());

    // The `uri` as the Secret gives it, with the address libpq cannot look up here and the CA.
    let uri = credentials("uri");
    assert!(uri.contains("sslmode=verify-full"), "{uri}");
    assert!(uri.contains("@elephant-rw.shop.svc:5432/app"), "{uri}");
    assert!(
        !uri.contains(password.as_str()),
        "the uri carries no password"
    );
    let jdbc = credentials("jdbc-uri");
    assert!(
        jdbc.starts_with("jdbc:postgresql://elephant-rw.shop.svc:5432/app?")
            && jdbc.contains("sslmode=verify-full"),
        "{jdbc}"
    );
    let verified = format!("{uri}&hostaddr={address}&sslrootcert={ca}");
    assert_eq!(psql(&verified, &password, "SHOW ssl").as_deref(), Ok("on"));
    // TLS 1.3 when the client offers it, TLS 1.2 to a client that offers no more, and
    // nothing older.
    let session_protocol = |connection: &str| {
        psql(
            connection,
            &password,
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
    };
    assert_eq!(session_protocol(&verified).as_deref(), Ok("TLSv1.3"));
    assert_eq!(
        session_protocol(&format!("{verified}&ssl_max_protocol_version=TLSv1.2")).as_deref(),
        Ok("TLSv1.2")
    );
    // openssl, allowed TLS 1.1 and nothing newer, is refused by the server in the handshake.
    let tls_1_1 = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -starttls postgres -connect {address}:5432 -tls1_1 \
             -cipher DEFAULT@SECLEVEL=0 </dev/null 2>&1"
        ))
        .output()
        .expect("openssl runs");
    let said = String::from_utf8_lossy(&tls_1_1.stdout);
    assert!(
        !tls_1_1.status.success() && said.contains("alert protocol version"),
        "{said}"
    );

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
    // So is the tunnel's external host (`tunnel.externalHostTemplate`), which `tusk dev` sets
    // to the Service's address: libpq verifies an address against the certificate's addresses.
    let by_address = format!(
        "host={address} port=5432 user=app dbname=app sslmode=verify-full sslrootcert={ca}"
    );
    assert_eq!(psql(&by_address, &password, "SELECT 1").as_deref(), Ok("1"));

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
    let other_ca = client.file(
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

/// The tenant `shop` with its PostgresCluster `elephant` Ready.
async fn ready_elephant(dev: &Dev) -> Kubectl {
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "elephant"},
        "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1}
    }));
    shop.wait_ready("elephant");
    shop
}

/// A libpq connection string for the owner to `elephant-rw.shop.svc` at `address`, verifying
/// the server against the CA file `ca`.
fn verify_full(address: &str, ca: &str) -> String {
    format!(
        "host=elephant-rw.shop.svc hostaddr={address} port=5432 user=app dbname=app \
         sslmode=verify-full sslrootcert={ca}"
    )
}

/// A connection to `host` through `address` that verifies the server against `ca_file`, as
/// an application holds one open for hours.
async fn verified_connection(
    host: &str,
    address: &str,
    password: &str,
    ca_file: &Path,
) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .hostaddr(address.parse().expect("an address"))
        .port(5432)
        .user("app")
        .dbname("app")
        .password(password)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tusk_backup::pg_tls::verifying_connector(ca_file).expect("the CA file");
    let (client, connection) = config.connect(tls).await.expect("a verified connection");
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("the held connection ended: {error}");
        }
    });
    client
}

/// The backend's pid and the postmaster's start, over `client`.
async fn backend(client: &tokio_postgres::Client) -> Result<(i32, String), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_backend_pid(), pg_postmaster_start_time()::text",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Replaces the CA key in the CA Secret `name`, as a platform team's slip (or its repair).
async fn set_ca_key(api: &Api<Secret>, name: &str, key: &[u8]) {
    let mut secret = api.get(name).await.expect("the CA Secret");
    secret
        .data
        .get_or_insert_default()
        .insert("ca.key".to_owned(), ByteString(key.to_vec()));
    api.replace(name, &PostParams::default(), &secret)
        .await
        .expect("the CA Secret is replaced");
}

/// The reason and message of the cluster's `Degraded` condition, when it is `True`.
fn degraded(tenant: &Kubectl, cluster: &str) -> Option<(String, String)> {
    let object = tenant.get_json(&["postgrescluster", cluster])?;
    let condition = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == "Degraded" && condition["status"] == "True")?
        .clone();
    Some((
        condition["reason"].as_str()?.to_owned(),
        condition["message"].as_str()?.to_owned(),
    ))
}

/// With server certificates that live 30 seconds (renewed after 20), PostgreSQL serves each new
/// certificate without a restart while a connection opened before stays open and usable; a
/// Normal Event records each renewal. Then the CA's key is made unusable: the database keeps
/// serving, renewal fails with Warning Events, and once the certificate is past its renewal
/// time the cluster is `Degraded` with `CertificateNotRenewed`, saying when it expires. With the
/// CA repaired, the next renewal succeeds and the condition clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_without_a_restart_and_a_failed_renewal_is_reported() {
    let dev = Dev::start_with(&["--tls-certificate-lifetime", "30s"]);
    let admin = dev.admin();
    let shop = ready_elephant(&dev).await;

    let client = ElephantClient::new(&admin);
    let credentials = |key: &str| client.credential(key);
    let ca = client.file("ca.crt", &credentials("ca.crt"));
    let (password, address) = (client.password.clone(), client.address.clone());
    let verified = verify_full(&address, &ca);

    let held =
        verified_connection("elephant-rw.shop.svc", &address, &password, Path::new(&ca)).await;
    let before = backend(&held).await.expect("the held connection answers");
    let incarnation = pod_incarnation(&admin, "shop", "elephant-0");
    let first = served_serial(&address).expect("a served certificate");

    // A new certificate is served: the Secret was renewed and PostgreSQL reloaded it.
    let renewed = shop.until(
        "PostgreSQL to serve a renewed certificate",
        Duration::from_secs(90),
        || match served_serial(&address)? {
            serial if serial != first => Ok(serial),
            serial => Err(format!("still {serial}")),
        },
    );
    assert_ne!(renewed, first);
    assert_eq!(
        psql(&verified, &password, "SELECT 1").as_deref(),
        Ok("1"),
        "a new connection verifies the renewed certificate with the same ca.crt"
    );
    // The connection opened before is the same session, on the same postmaster.
    assert_eq!(
        backend(&held)
            .await
            .expect("the held connection still answers"),
        before
    );
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);
    let renewals = shop
        .events_about("elephant")
        .into_iter()
        .filter(|(kind, reason, _)| kind == "Normal" && reason == "CertificateRenewed")
        .count();
    assert!(renewals >= 1, "{:?}", shop.events_about("elephant"));

    // Break renewal: the CA Secret's key is no longer a key.
    let uid = shop.ok(&[
        "get",
        "postgrescluster",
        "elephant",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let ca_secrets: Api<Secret> = Api::namespaced(dev.admin_client().await, "tusk-system");
    let ca_secret = format!("tusk-ca-{uid}");
    let good_key = secret_value(&admin, "tusk-system", &ca_secret, "ca.key");
    set_ca_key(&ca_secrets, &ca_secret, b"not a key").await;
    let (reason, message) = shop.until(
        "the cluster to be Degraded with CertificateNotRenewed",
        Duration::from_secs(60),
        || degraded(&shop, "elephant").ok_or("not degraded".to_owned()),
    );
    assert_eq!(reason, "CertificateNotRenewed");
    assert!(
        message.contains("cannot be renewed") && message.contains("cannot read the CA key"),
        "{message}"
    );
    assert!(
        message.contains("expires at") || message.contains("expired at"),
        "{message}"
    );
    assert!(
        !message.contains(&good_key),
        "no key material in the status"
    );
    let warnings: Vec<_> = shop
        .events_about("elephant")
        .into_iter()
        .filter(|(kind, reason, _)| kind == "Warning" && reason == "CertificateFailed")
        .collect();
    assert!(!warnings.is_empty(), "{:?}", shop.events_about("elephant"));
    // The held connection is untouched by the failure.
    assert_eq!(backend(&held).await.expect("still answers"), before);

    // Repaired, the CA issues again and the condition clears.
    set_ca_key(&ca_secrets, &ca_secret, good_key.as_bytes()).await;
    shop.until(
        "the cluster to recover from CertificateNotRenewed",
        Duration::from_secs(60),
        || match degraded(&shop, "elephant") {
            None => Ok(()),
            Some(condition) => Err(format!("{condition:?}")),
        },
    );
    shop.until(
        "a verified connection after the repair",
        Duration::from_secs(30),
        || psql(&verified, &password, "SELECT 1"),
    );
    assert_eq!(backend(&held).await.expect("still answers"), before);
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);
}

/// A customer's own CA, as cert-manager's CA issuer holds one.
struct CustomerCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl CustomerCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shop's own CA");
        let cert = params.self_signed(&key).expect("the CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` and its key, PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a server key");
        let params = rcgen::CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("names");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes the Secret `name` of type `kubernetes.io/tls` in `shop`, as cert-manager does.
async fn write_tls_secret(api: &Api<Secret>, name: &str, data: &[(&str, &[u8])]) {
    write_secret(api, name, "kubernetes.io/tls", data).await
}

/// Writes the Secret `name` of type `type_` in `shop`.
async fn write_secret(api: &Api<Secret>, name: &str, type_: &str, data: &[(&str, &[u8])]) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": type_,
    }))
    .expect("a Secret");
    let secret = Secret {
        data: Some(
            data.iter()
                .map(|(key, value)| (key.to_string(), ByteString(value.to_vec())))
                .collect(),
        ),
        ..secret
    };
    match api.get_opt(name).await.expect("read") {
        Some(existing) => {
            let secret = Secret {
                metadata: existing.metadata,
                ..secret
            };
            api.replace(name, &PostParams::default(), &secret)
                .await
                .expect("replaced");
        }
        None => {
            api.create(&PostParams::default(), &secret)
                .await
                .expect("created");
        }
    }
}

/// The serial number `openssl x509` reads from a PEM certificate.
fn serial_of(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem.as_bytes())
        .expect("written");
    let output = child.wait_with_output().expect("openssl ends");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// A customer brings its own certificate in a `kubernetes.io/tls` Secret: PostgreSQL serves
/// it, the credentials Secret's `ca.crt` is the customer's CA, and a renewal written into the
/// Secret is served without a restart while a connection stays open. A Secret whose key is not
/// the certificate's, that is too large, whose certificate lacks the Service's name or comes
/// from a CA its `ca.crt` does not hold, or that is not of type `kubernetes.io/tls`, is refused
/// with `Degraded` and a Warning Event, and the database keeps serving the certificate it had;
/// only a Secret of the cluster's own namespace can be named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brought_certificate_is_served_and_a_bad_one_refused() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant("shop", false).await;
    let secrets: Api<Secret> = Api::namespaced(dev.admin_client().await, "shop");
    let customer_ca = CustomerCa::new();
    let names = ["elephant-rw.shop.svc", "db.shop.example"];
    let (cert, key) = customer_ca.issue(&names);
    let ca_pem = customer_ca.cert_pem.as_bytes();
    write_tls_secret(
        &secrets,
        "elephant-db-cert",
        &[
            ("tls.crt", cert.as_bytes()),
            ("tls.key", key.as_bytes()),
            ("ca.crt", ca_pem),
        ],
    )
    .await;

    // The name is all the spec holds: a Secret of another namespace cannot be named.
    let cluster = |secret: &str| {
        json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "elephant"},
            "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1,
                     "tls": {"certificateSecret": {"name": secret}}}
        })
    };
    let refused = shop
        .try_apply_json(&cluster("other/elephant-db-cert"))
        .expect_err("a namespace in the name is refused");
    assert!(refused.contains("certificateSecret.name"), "{refused}");
    shop.apply_json(&cluster("elephant-db-cert"));
    shop.wait_ready("elephant");

    let client = ElephantClient::new(&admin);
    let credentials = |key: &str| client.credential(key);
    assert_eq!(credentials("ca.crt"), customer_ca.cert_pem);
    let ca = client.file("ca.crt", &customer_ca.cert_pem);
    let (password, address) = (client.password.clone(), client.address.clone());
    let verified = verify_full(&address, &ca);
    assert_eq!(psql(&verified, &password, "SELECT 1").as_deref(), Ok("1"));
    assert_eq!(served_serial(&address), Ok(serial_of(&cert)));
    // The customer's other name is in the certificate PostgreSQL serves.
    let external = verified.replace("host=elephant-rw.shop.svc", "host=db.shop.example");
    assert_eq!(psql(&external, &password, "SELECT 1").as_deref(), Ok("1"));

    // cert-manager renews: the new certificate is served, nothing restarts.
    let held =
        verified_connection("elephant-rw.shop.svc", &address, &password, Path::new(&ca)).await;
    let before = backend(&held).await.expect("the held connection answers");
    let incarnation = pod_incarnation(&admin, "shop", "elephant-0");
    let (renewed_cert, renewed_key) = customer_ca.issue(&names);
    write_tls_secret(
        &secrets,
        "elephant-db-cert",
        &[
            ("tls.crt", renewed_cert.as_bytes()),
            ("tls.key", renewed_key.as_bytes()),
            ("ca.crt", ca_pem),
        ],
    )
    .await;
    let renewed_serial = serial_of(&renewed_cert);
    shop.until(
        "PostgreSQL to serve the renewed certificate",
        Duration::from_secs(60),
        || match served_serial(&address)? {
            serial if serial == renewed_serial => Ok(()),
            serial => Err(format!("still {serial}")),
        },
    );
    assert_eq!(backend(&held).await.expect("still answers"), before);
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);
    assert_eq!(psql(&verified, &password, "SELECT 1").as_deref(), Ok("1"));

    // Hostile or broken Secrets are refused, and the database keeps serving.
    let (_, other_key) = customer_ca.issue(&names);
    let oversized = format!("{renewed_cert}{}", "#".repeat(70 * 1024));
    let (elsewhere_cert, elsewhere_key) = customer_ca.issue(&["db.shop.example"]);
    let (stranger_cert, stranger_key) = CustomerCa::new().issue(&names);
    let unverified = |why: &str| {
        format!(
            "the certificate in tls.crt of Secret elephant-db-cert (spec.tls.certificateSecret) \
             does not verify against its ca.crt for elephant-rw.shop.svc: invalid peer \
             certificate: {why}"
        )
    };
    let cases = [
        (
            "a key that is not the certificate's",
            "elephant-db-cert",
            "kubernetes.io/tls",
            renewed_cert.as_bytes(),
            other_key.as_bytes(),
            "tls.key of Secret elephant-db-cert (spec.tls.certificateSecret) is not the key of the certificate in tls.crt".to_owned(),
        ),
        (
            "a certificate larger than 64 KiB",
            "elephant-db-cert",
            "kubernetes.io/tls",
            oversized.as_bytes(),
            renewed_key.as_bytes(),
            "tls.crt of Secret elephant-db-cert (spec.tls.certificateSecret) is larger than 64 KiB".to_owned(),
        ),
        (
            "a certificate without the Service's name",
            "elephant-db-cert",
            "kubernetes.io/tls",
            elsewhere_cert.as_bytes(),
            elsewhere_key.as_bytes(),
            unverified("certificate not valid for name \"elephant-rw.shop.svc\""),
        ),
        (
            "a certificate a forged CA of the same name issued",
            "elephant-db-cert",
            "kubernetes.io/tls",
            stranger_cert.as_bytes(),
            stranger_key.as_bytes(),
            unverified("BadSignature"),
        ),
        // A good certificate and key in a Secret of another type: a Secret's type is
        // immutable, so the spec names another Secret.
        (
            "a Secret that is not of type kubernetes.io/tls",
            "elephant-opaque-cert",
            "Opaque",
            renewed_cert.as_bytes(),
            renewed_key.as_bytes(),
            "Secret elephant-opaque-cert (spec.tls.certificateSecret) is of type Opaque, not kubernetes.io/tls".to_owned(),
        ),
    ];
    for (what, secret, type_, tls_crt, tls_key, expected) in cases {
        write_secret(
            &secrets,
            secret,
            type_,
            &[
                ("tls.crt", tls_crt),
                ("tls.key", tls_key),
                ("ca.crt", ca_pem),
            ],
        )
        .await;
        shop.apply_json(&cluster(secret));
        let (reason, message) = shop.until(
            &format!("{what} to be refused"),
            Duration::from_secs(60),
            || match degraded(&shop, "elephant") {
                // A verification failure ends with the verifier's own words.
                Some((reason, message)) if message.starts_with(&expected) => Ok((reason, message)),
                other => Err(format!("{other:?}")),
            },
        );
        assert_eq!(reason, "InvalidCertificateSecret", "{message}");
        assert!(
            shop.events_about("elephant")
                .iter()
                .any(|(kind, reason, note)| kind == "Warning"
                    && reason == "CertificateFailed"
                    && note.starts_with(&expected)),
            "{what}: {:?}",
            shop.events_about("elephant")
        );
        assert_eq!(
            served_serial(&address),
            Ok(renewed_serial.clone()),
            "{what}"
        );
        assert_eq!(psql(&verified, &password, "SELECT 1").as_deref(), Ok("1"));
        assert_eq!(backend(&held).await.expect("still answers"), before);
    }
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);
    let status = shop.ok(&["get", "postgrescluster", "elephant", "-o", "json"]);
    assert!(
        !status.contains(other_key.lines().nth(1).expect("a key line")),
        "no key material in the status"
    );

    // Fixed, the cluster recovers.
    write_tls_secret(
        &secrets,
        "elephant-db-cert",
        &[
            ("tls.crt", renewed_cert.as_bytes()),
            ("tls.key", renewed_key.as_bytes()),
            ("ca.crt", ca_pem),
        ],
    )
    .await;
    shop.apply_json(&cluster("elephant-db-cert"));
    shop.until(
        "the cluster to take the fixed Secret",
        Duration::from_secs(60),
        || match degraded(&shop, "elephant") {
            None => Ok(()),
            Some(condition) => Err(format!("{condition:?}")),
        },
    );
}

/// How many certificates a PEM bundle holds.
fn certificates_in(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// A CA rotation with an overlap of 20 seconds, asked for by the platform team: the new CA is
/// published next to the old one before it signs, then signs while the old one stays
/// published, then the old one is dropped. A client that takes the published `ca.crt` during
/// the overlap verifies the server at every step; one that never does fails once the new CA
/// signs, which is why the overlap exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_the_published_ca_keeps_verifying_across_a_ca_rotation() {
    let dev = Dev::start_with(&["--tls-ca-overlap", "20s"]);
    let admin = dev.admin();
    let shop = ready_elephant(&dev).await;

    let client = ElephantClient::new(&admin);
    let credentials = |key: &str| client.credential(key);
    let (password, address) = (client.password.clone(), client.address.clone());
    let verify_with = |ca: &str| psql(&verify_full(&address, ca), &password, "SELECT 1");
    let original = credentials("ca.crt");
    assert_eq!(certificates_in(&original), 1);
    let original_file = client.file("original.crt", &original);
    assert_eq!(verify_with(&original_file).as_deref(), Ok("1"));

    let uid = shop.ok(&[
        "get",
        "postgrescluster",
        "elephant",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    admin.ok(&[
        "--namespace",
        "tusk-system",
        "annotate",
        "secret",
        &format!("tusk-ca-{uid}"),
        "postgres.tusk.dev/rotate-ca=asked",
    ]);

    // 1: both CAs published; the old one still signs.
    let both = shop.until(
        "the new CA to be published next to the old one",
        Duration::from_secs(30),
        || match credentials("ca.crt") {
            pem if certificates_in(&pem) == 2 => Ok(pem),
            pem => Err(format!("{} certificates", certificates_in(&pem))),
        },
    );
    assert!(
        both.contains(original.trim()),
        "the old CA is still published"
    );
    let both_file = client.file("both.crt", &both);
    assert_eq!(verify_with(&both_file).as_deref(), Ok("1"));

    // 2: the new CA signs. A client that kept the old ca.crt alone now fails; one that took
    // the published bundle verifies.
    let failed = shop.until(
        "the new CA to sign the server certificate",
        Duration::from_secs(60),
        || match verify_with(&original_file) {
            Err(error) => Ok(error),
            Ok(_) => Err("the old CA still verifies it".to_owned()),
        },
    );
    assert!(failed.contains("certificate verify failed"), "{failed}");
    assert_eq!(verify_with(&both_file).as_deref(), Ok("1"));

    // 3: the old CA is dropped from what is published; the bundle taken in 1 still verifies.
    let after = shop.until(
        "the old CA to be dropped",
        Duration::from_secs(60),
        || match credentials("ca.crt") {
            pem if certificates_in(&pem) == 1 => Ok(pem),
            pem => Err(format!("{} certificates", certificates_in(&pem))),
        },
    );
    assert!(
        !after.contains(original.trim()),
        "the old CA is no longer published"
    );
    assert!(
        both.contains(after.trim()),
        "the new CA is the one published in 1"
    );
    let after_file = client.file("after.crt", &after);
    assert_eq!(verify_with(&after_file).as_deref(), Ok("1"));
    assert_eq!(verify_with(&both_file).as_deref(), Ok("1"));
    let annotations = admin.ok(&[
        "--namespace",
        "tusk-system",
        "get",
        "secret",
        &format!("tusk-ca-{uid}"),
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!annotations.contains("rotate-ca"), "{annotations}");
}
