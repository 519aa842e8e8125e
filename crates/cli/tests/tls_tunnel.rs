//! TLS through the tunnel into a customer's own cluster, on `tusk dev` with a second sandbox
//! acting as that cluster, with the real psql and openssl. A client there copies the `uri` and
//! `ca.crt` of the Secret the tunnel writes and verifies the database with
//! `sslmode=verify-full` against the tunnel Service's name; the TLS session is PostgreSQL's own
//! (the tunnel copies bytes); a client trusting another CA fails. The tunnel goes through
//! `tusk router` like every way in from outside, naming the database with a token only its
//! link publishes the digest of: a forged token, or the token naming another tenant's
//! database, is refused, and unlinking closes the way. Linking and unlinking reissue
//! the server certificate with and without the tunnel's names, served by reload. A kubeconfig
//! whose namespace would put another database's host into the certificate is refused.
//!
//! Neither sandbox has cluster DNS, so psql is given the Service's address as `hostaddr` and
//! its name as `host`: libpq connects to the address and verifies the name.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "shared/tls.rs"]
mod tls_client;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Dev, Kubectl};
use tls_client::{
    pod_incarnation, psql, secret_value, served_names, served_serial, service_ip, stranger_ca_pem,
    write,
};
use tusk_api::tunnel_request;
use tusk_instance::tunnel::{RouterRequest, Tunnel, TunnelConfig};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");

/// The namespace of the customer's cluster the tunnel is built in.
const APPS: &str = "apps";

/// A second sandbox, with pods, acting as the customer's own cluster.
async fn customer_cluster(dir: &Path) -> Sandbox {
    Sandbox::builder()
        .data_dir(dir.join("apiserver"))
        .kubeconfig_path(dir.join("kubeconfig"))
        .runtime(
            RuntimeOptions::new(dir.join("runtime"))
                .tusk_executable(TUSK)
                .pod_network(std::net::Ipv4Addr::new(127, 36, 0, 0), 16),
        )
        .start()
        .await
        .expect("the customer's sandbox starts")
}

/// The customer's kubeconfig with its context's namespace set to `namespace`: the customer
/// chooses where the tunnel goes.
fn kubeconfig_in(customer: &Sandbox, namespace: &str) -> String {
    let text = std::fs::read(customer.kubeconfig_path()).expect("the customer's kubeconfig");
    let mut config: Value = serde_json::from_slice(&text).expect("a JSON kubeconfig");
    config["contexts"][0]["context"]["namespace"] = json!(namespace);
    config.to_string()
}

/// The rights a customer grants the link in its own cluster, as docs/external-access.md lists
/// them, and nothing more: the four objects of `cluster`'s tunnel in `namespace`, each by name.
/// Returns a kubeconfig for a ServiceAccount holding only them, with a token as its credential.
fn least_privilege_kubeconfig(
    customer: &Sandbox,
    kubectl: &Kubectl,
    namespace: &str,
    cluster: &str,
) -> String {
    let by_name = |group: &str, resource: &str, verbs: &[&str], names: &[String]| json!({"apiGroups": [group], "resources": [resource], "verbs": verbs, "resourceNames": names});
    kubectl.apply_json(&json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "tusk-link", "namespace": namespace}
    }));
    kubectl.apply_json(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tusk-link", "namespace": namespace},
        "rules": [
            by_name("", "secrets", &["get", "create", "patch", "delete"],
                    &[format!("{cluster}-connection"), format!("{cluster}-tunnel-token")]),
            by_name("", "services", &["create", "patch", "delete"], &[cluster.to_owned()]),
            by_name("apps", "deployments", &["create", "patch", "delete"],
                    &[format!("{cluster}-tunnel")]),
        ]
    }));
    kubectl.apply_json(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "tusk-link", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tusk-link"},
        "subjects": [{"kind": "ServiceAccount", "name": "tusk-link", "namespace": namespace}]
    }));
    let token = kubectl.ok(&[
        "--namespace",
        namespace,
        "create",
        "token",
        "tusk-link",
        "--duration",
        "2h",
    ]);
    let mut config: Value =
        serde_json::from_str(&kubeconfig_in(customer, namespace)).expect("a JSON kubeconfig");
    config["users"][0]["user"] = json!({"token": token.trim()});
    config.to_string()
}

/// Links `elephant` to the customer's cluster with `kubeconfig`: the platform team stores the
/// kubeconfig in a Secret of the project, and the tenant creates the PostgresRemoteCluster.
fn link(admin: &Kubectl, shop: &Kubectl, name: &str, kubeconfig: &str) {
    admin.apply_json(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-kubeconfig"), "namespace": "shop"},
        "stringData": {"kubeconfig": kubeconfig}
    }));
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresRemoteCluster",
        "metadata": {"name": name},
        "spec": {"cluster": {"name": "elephant"},
                 "remoteCluster": {"name": format!("{name}-kubeconfig")}}
    }));
}

/// The message of the link's `InvalidSpec` condition, when it is `True`.
fn invalid_spec(shop: &Kubectl, link: &str) -> Result<String, String> {
    let object = shop
        .get_json(&["postgresremotecluster", link])
        .ok_or("no link")?;
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "InvalidSpec" && condition["status"] == "True")
        .and_then(|condition| condition["message"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("not refused: {}", object["status"]))
}

/// A libpq connection string for the owner to `host` at `address`, verifying the server
/// against the CA file `ca`.
fn verify_full(host: &str, address: &str, ca: &str) -> String {
    verify_full_at(host, address, 5432, ca)
}

/// [`verify_full`] on another port.
fn verify_full_at(host: &str, address: &str, port: u16, ca: &str) -> String {
    format!(
        "host={host} hostaddr={address} port={port} user=app dbname=app \
         sslmode=verify-full sslrootcert={ca}"
    )
}

/// A tunnel of the test's own on 127.0.0.1 that sends the router `name` and `token` ahead of
/// each connection, as `tusk tunnel` does: what anyone who made up, stole or reused a token
/// could run anywhere. Returns its port and its task (abort it to stop it).
async fn own_tunnel(router: u16, name: &str, token: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let mut config = TunnelConfig::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        format!("127.0.0.1:{router}"),
    );
    config.router_request = Some(RouterRequest::new(name, token).expect("a well-formed request"));
    let tunnel = Tunnel::bind(config).await.expect("the tunnel binds");
    let port = tunnel.local_addr().expect("its address").port();
    let task = tokio::spawn(async move {
        let _ = tunnel.serve(std::future::pending()).await;
    });
    (port, task)
}

/// Whether psql's error is the router's refusal of an unknown name.
fn refused_as_unknown(result: Result<String, String>) -> Result<(), String> {
    match result {
        Err(error) if error.contains("unrecognized name") => Ok(()),
        other => Err(format!("not refused as an unknown name: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_the_customers_cluster_verifies_the_database_through_the_tunnel() {
    let dev = Dev::start();
    let admin = dev.admin();
    let shop = dev.tenant("shop", false).await;
    shop.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "elephant"},
        "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1}
    }));
    // Another tenant's database, open by name to this machine.
    let zoo = dev.tenant("zoo", false).await;
    zoo.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "mammoth"},
        "spec": {"displayName": "mammoth", "memorySize": 1, "postgresDiskSize": 1,
                 "externalAccess": {"allowedSourceRanges": ["127.0.0.1/32"]}}
    }));
    shop.wait_ready("elephant");
    let database = service_ip(&admin, "shop", "elephant-rw");
    let unlinked_names = served_names(&database).expect("the served certificate");
    assert!(
        !unlinked_names
            .iter()
            .any(|name| name == "elephant" || name.starts_with("elephant.apps")),
        "{unlinked_names:?}"
    );
    let incarnation = pod_incarnation(&admin, "shop", "elephant-0");

    let files = tempfile::tempdir().expect("a temporary directory");
    let customer = customer_cluster(&files.path().join("customer")).await;
    let customer_kubectl = Kubectl::for_kubeconfig(customer.kubeconfig_path().to_owned(), None);
    customer_kubectl
        .apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS}}));
    // The customer hands over an identity that may touch the tunnel's own objects only, and
    // that identity can read none of the customer's other Secrets.
    let limited = least_privilege_kubeconfig(&customer, &customer_kubectl, APPS, "elephant");
    let limited_path = write(files.path(), "limited-kubeconfig", &limited);
    let refused = Kubectl::for_kubeconfig(limited_path.into(), None)
        .run(&["--namespace", APPS, "get", "secrets"])
        .expect_err("the link's identity lists no Secrets");
    assert!(refused.contains("forbidden"), "{refused}");
    link(&admin, &shop, "elephant-customer", &limited);

    // The Secret the tunnel writes: one value to copy, and the CA that verifies the server.
    let connection = |key: &str| secret_value(&customer_kubectl, APPS, "elephant-connection", key);
    let uri = customer_kubectl.until(
        "the connection Secret in the customer's cluster",
        Duration::from_secs(60),
        || {
            customer_kubectl.run(&[
                "--namespace",
                APPS,
                "get",
                "secret",
                "elephant-connection",
                "-o",
                "go-template={{index .data \"uri\" | base64decode}}",
            ])
        },
    );
    assert_eq!(
        uri,
        "postgresql://app@elephant.apps.svc:5432/app?sslmode=verify-full"
    );
    assert_eq!(
        connection("jdbc-uri"),
        "jdbc:postgresql://elephant.apps.svc:5432/app?user=app&sslmode=verify-full"
    );
    let ca_pem = connection("ca.crt");
    assert_eq!(
        ca_pem,
        secret_value(&admin, "shop", "elephant-credentials", "ca.crt"),
        "the cluster's CA, and no key with it"
    );
    assert!(!ca_pem.contains("PRIVATE KEY"));
    let ca = write(files.path(), "ca.crt", &ca_pem);
    let password = connection("password");
    let tunnel = customer_kubectl.until(
        "the tunnel Service's address",
        Duration::from_secs(60),
        || match service_ip(&customer_kubectl, APPS, "elephant") {
            ip if ip.is_empty() => Err("no address yet".to_owned()),
            ip => Ok(ip),
        },
    );

    // The `uri` as the Secret gives it, with the address and the CA file added.
    let through_tunnel = format!("{uri}&hostaddr={tunnel}&sslrootcert={ca}");
    let ssl = customer_kubectl.until(
        "a verified connection through the tunnel",
        Duration::from_secs(90),
        || {
            psql(
                &through_tunnel,
                &password,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
        },
    );
    assert_eq!(ssl, "t", "PostgreSQL itself holds the client's TLS session");
    // The tunnel never terminates TLS: what answers at the tunnel is the database's own
    // certificate.
    assert_eq!(served_serial(&tunnel), served_serial(&database));
    // Every name of the tunnel Service in the customer's cluster is in the certificate.
    for host in [
        "elephant",
        "elephant.apps",
        "elephant.apps.svc",
        "elephant.apps.svc.cluster.local",
    ] {
        assert_eq!(
            psql(&verify_full(host, &tunnel, &ca), &password, "SELECT 1").as_deref(),
            Ok("1"),
            "through {host}"
        );
    }
    // The certificate was reissued for the tunnel's names without a restart.
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);

    // The tunnel dials the router and names elephant by its external name; its token is in a
    // Secret of its own, never in an argument; the link publishes only the token's digest.
    let router = dev.router_port();
    let deployment = customer_kubectl
        .get_json(&["--namespace", APPS, "deployment", "elephant-tunnel"])
        .expect("the tunnel Deployment");
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("arguments")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let router_address = format!("127.0.0.1:{router}");
    assert!(
        args.windows(2)
            .any(|pair| pair == ["--target", router_address.as_str()])
            && args
                .windows(2)
                .any(|pair| pair == ["--route-name", "elephant.shop.db.tusk.local"]),
        "{args:?}"
    );
    let token = secret_value(&customer_kubectl, APPS, "elephant-tunnel-token", "token");
    assert!(tunnel_request::is_token(&token), "a 64-digit token");
    assert!(!deployment.to_string().contains(&token));
    assert_eq!(
        shop.ok(&[
            "get",
            "postgresremotecluster",
            "elephant-customer",
            "-o",
            "jsonpath={.status.tunnelTokenSha256}",
        ]),
        tunnel_request::token_digest(&token)
    );

    // The token rotated in its Secret (here to one the customer chose) takes effect without
    // restarting anything by hand: once the operator looks again (at once when the link is
    // touched), the link publishes the new digest, the tunnel's pod template carries it so its
    // pods roll and read the new token, the tunnel keeps working, and the old token opens
    // nothing any more.
    let old_token = token;
    let token = "5eed".repeat(16);
    let rotated: Value = serde_json::from_str(&customer_kubectl.ok(&[
        "--namespace",
        APPS,
        "create",
        "secret",
        "generic",
        "elephant-tunnel-token",
        &format!("--from-literal=token={token}"),
        "--dry-run=client",
        "-o",
        "json",
    ]))
    .expect("the Secret as JSON");
    customer_kubectl.apply_json(&rotated);
    shop.ok(&[
        "annotate",
        "postgresremotecluster",
        "elephant-customer",
        "example.com/token-rotated=1",
    ]);
    let digest = tunnel_request::token_digest(&token);
    shop.until(
        "the link to publish the new digest",
        Duration::from_secs(60),
        || match shop.run(&[
            "get",
            "postgresremotecluster",
            "elephant-customer",
            "-o",
            "jsonpath={.status.tunnelTokenSha256}",
        ])? {
            published if published == digest => Ok(()),
            published => Err(published),
        },
    );
    let template_digest = customer_kubectl.ok(&[
        "--namespace",
        APPS,
        "get",
        "deployment",
        "elephant-tunnel",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.postgres\\.tusk\\.dev/tunnel-token-sha256}",
    ]);
    assert_eq!(template_digest, digest, "the pods roll to the new token");
    customer_kubectl.until(
        "a connection through the tunnel with the new token",
        Duration::from_secs(120),
        || psql(&through_tunnel, &password, "SELECT 1"),
    );
    let (old, old_task) = own_tunnel(router, "elephant.shop.db.tusk.local", &old_token).await;
    refused_as_unknown(psql(
        &verify_full_at("elephant.apps.svc", "127.0.0.1", old, &ca),
        &password,
        "SELECT 1",
    ))
    .expect("the old token opens nothing");
    old_task.abort();

    // Elephant is open to no source by name: the router does not know it to a client that
    // names it. The token opens it from wherever it is presented (here, outside the customer's
    // cluster): like the password, it is a credential of the database's owner.
    let by_name = verify_full_at("elephant.shop.db.tusk.local", "127.0.0.1", router, &ca);
    refused_as_unknown(psql(&by_name, &password, "SELECT 1")).expect("elephant is not open");
    let (reused, reused_task) = own_tunnel(router, "elephant.shop.db.tusk.local", &token).await;
    let through_reused = verify_full_at("elephant.apps.svc", "127.0.0.1", reused, &ca);
    assert_eq!(
        psql(&through_reused, &password, "SELECT 1").as_deref(),
        Ok("1")
    );

    // The attacks: a made-up token for elephant, and elephant's own token naming another
    // tenant's database (open, and reached by its name first), are refused as an unknown name.
    zoo.wait_ready("mammoth");
    let mammoth_ca = write(
        files.path(),
        "mammoth.crt",
        &secret_value(&admin, "zoo", "mammoth-credentials", "ca.crt"),
    );
    let mammoth_password = secret_value(&admin, "zoo", "mammoth-credentials", "password");
    let mammoth_by_name = verify_full_at(
        "mammoth.zoo.db.tusk.local",
        "127.0.0.1",
        router,
        &mammoth_ca,
    );
    zoo.until(
        "mammoth through the router",
        Duration::from_secs(30),
        || psql(&mammoth_by_name, &mammoth_password, "SELECT 1"),
    );
    let (forged, forged_task) =
        own_tunnel(router, "elephant.shop.db.tusk.local", &"0".repeat(64)).await;
    let (crossed, crossed_task) = own_tunnel(router, "mammoth.zoo.db.tusk.local", &token).await;
    for (what, port, host, ca, password) in [
        (
            "a forged token",
            forged,
            "elephant.apps.svc",
            &ca,
            &password,
        ),
        (
            "elephant's token for mammoth",
            crossed,
            "mammoth.zoo.db.tusk.local",
            &mammoth_ca,
            &mammoth_password,
        ),
    ] {
        let connection = verify_full_at(host, "127.0.0.1", port, ca);
        refused_as_unknown(psql(&connection, password, "SELECT 1"))
            .unwrap_or_else(|error| panic!("{what}: {error}"));
    }
    forged_task.abort();
    crossed_task.abort();

    // A client that trusts another CA fails, and so does a name the certificate lacks.
    let stranger = write(files.path(), "stranger.crt", &stranger_ca_pem());
    let failed = psql(
        &format!("{uri}&hostaddr={tunnel}&sslrootcert={stranger}"),
        &password,
        "SELECT 1",
    )
    .expect_err("another CA fails");
    assert!(failed.contains("certificate verify failed"), "{failed}");
    let failed = psql(
        &verify_full("elephant.other.svc", &tunnel, &ca),
        &password,
        "SELECT 1",
    )
    .expect_err("another name fails");
    assert!(failed.contains("does not match host name"), "{failed}");

    // The attack: a kubeconfig whose namespace would make the tunnel's names another
    // database's host (`elephant.other.db.tusk.local` is how `tusk dev` routes to a cluster
    // elephant in the project other). The link is refused and the name never certified.
    link(
        &admin,
        &shop,
        "elephant-hostile",
        &kubeconfig_in(&customer, "other.db.tusk.local"),
    );
    let refusal = shop.until(
        "the hostile link to be refused",
        Duration::from_secs(60),
        || invalid_spec(&shop, "elephant-hostile"),
    );
    assert!(
        refusal.contains("contexts[0].context.namespace"),
        "{refusal}"
    );
    let names = served_names(&database).expect("the served certificate");
    assert!(
        !names
            .iter()
            .any(|name| name.contains("other.db.tusk.local")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name == "elephant.apps.svc"),
        "{names:?}"
    );

    // Unlinked, the tunnel's names leave the certificate, again by reload.
    shop.ok(&["delete", "postgresremotecluster", "elephant-customer"]);
    let names = shop.until(
        "the certificate to drop the tunnel's names",
        Duration::from_secs(60),
        || match served_names(&database)? {
            names if names.iter().any(|name| name.starts_with("elephant.apps")) => {
                Err(format!("{names:?}"))
            }
            names => Ok(names),
        },
    );
    assert!(
        names.contains(&"elephant-rw.shop.svc".to_owned()),
        "{names:?}"
    );
    let direct = verify_full("elephant-rw.shop.svc", &database, &ca);
    assert_eq!(psql(&direct, &password, "SELECT 1").as_deref(), Ok("1"));
    assert_eq!(pod_incarnation(&admin, "shop", "elephant-0"), incarnation);
    // The link's limited identity removed the tunnel: nothing of it is left in the customer's
    // namespace.
    customer_kubectl.until(
        "the tunnel to leave the customer's cluster",
        Duration::from_secs(60),
        || {
            let left = customer_kubectl.run(&[
                "--namespace",
                APPS,
                "get",
                "deployments,services,secrets",
                "-o",
                "name",
            ])?;
            let tunnel: Vec<_> = left
                .lines()
                .filter(|name| name.contains("elephant"))
                .collect();
            if tunnel.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {tunnel:?}"))
            }
        },
    );
    // Unlinked, the token opens nothing any more.
    shop.until(
        "the router to close the tunnel's way in",
        Duration::from_secs(10),
        || refused_as_unknown(psql(&through_reused, &password, "SELECT 1")),
    );
    reused_task.abort();
    customer.shutdown().await;
}
