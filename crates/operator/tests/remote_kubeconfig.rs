//! Attacks through a PostgresRemoteCluster's kubeconfig, which a tenant writes into a Secret of
//! its own namespace: the operator must never run, read or contact what it names. Each test runs
//! the operator against the sandbox over HTTP; a small TLS server plays the tenant's "remote
//! cluster" and records every request it receives.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use support::{Operator, elephant, events_about, eventually, namespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_api::common::ClusterReference;
use tusk_api::remote_cluster::RemoteClusterReference;
use tusk_api::{PostgresCluster, PostgresRemoteCluster, PostgresRemoteClusterSpec};

const NS: &str = "project-a";

/// A TLS server standing in for a tenant's cluster: it records each connection and the head of
/// each request, and answers every request with `answer`.
struct RecordingServer {
    url: String,
    ca_pem: String,
    connections: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingServer {
    async fn start(answer: String) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let connections = Arc::new(Mutex::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, heads) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *seen.lock().unwrap() += 1;
                let (acceptor, heads, answer) = (acceptor.clone(), heads.clone(), answer.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(read) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        heads
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buffer[..end]).into_owned());
                        buffer.drain(..end + 4);
                        if tls.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            ca_pem: ca.pem(),
            connections,
            requests,
        }
    }

    fn ca_data(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn unauthorized() -> String {
    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}"#;
    format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A kubeconfig for `server` with `user` as the body of its only user (indented by four).
fn kubeconfig(server: &str, ca_data: &str, cluster_extra: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: customer
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
{cluster_extra}users:
- name: customer
  user:
{user}contexts:
- name: customer
  context:
    cluster: customer
    user: customer
    namespace: default
current-context: customer
"
    )
}

async fn put_kubeconfig(client: &Client, name: &str, kubeconfig: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                "kubeconfig".to_owned(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            name,
            &PatchParams::apply("tenant").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("the tenant writes its kubeconfig Secret");
}

async fn link(client: &Client, name: &str, secret: &str) {
    let link = PostgresRemoteCluster::new(
        name,
        PostgresRemoteClusterSpec {
            cluster: ClusterReference::new("elephant"),
            remote_cluster: RemoteClusterReference {
                name: secret.into(),
            },
        },
    );
    Api::<PostgresRemoteCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &link)
        .await
        .expect("the tenant links a cluster");
}

/// The message of the link's `InvalidSpec` condition once it is True.
async fn refused(client: &Client, name: &str) -> String {
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    eventually(&format!("{name} is refused as InvalidSpec"), || async {
        let link = links.get_opt(name).await.ok()??;
        let condition = link
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "InvalidSpec" && c.status == "True")?;
        assert_eq!(condition.reason, "RefusedKubeconfig");
        Some(condition.message)
    })
    .await
}

/// Waits until the operator has acted on the link's kubeconfig: refused it, or done what it
/// asked (`acted` observes that). Returns the refusal message, if any.
async fn outcome(client: &Client, name: &str, acted: impl Fn() -> bool) -> Option<String> {
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    eventually(&format!("the operator acts on {name}"), || async {
        if acted() {
            return Some(None);
        }
        let link = links.get_opt(name).await.ok()??;
        let condition = link
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "InvalidSpec" && c.status == "True")?;
        Some(Some(condition.message))
    })
    .await
}

async fn warnings(client: &Client, name: &str, reason: &str) -> Vec<Event> {
    events_about(client, NS, name)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .collect()
}

/// The sandbox, the operator, and a cluster whose credentials exist (a link waits for them
/// before it reads its kubeconfig).
async fn setup() -> (
    tempfile::TempDir,
    tusk_sandbox::Sandbox,
    Client,
    tusk_sandbox::s3::S3Server,
    Operator,
) {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &elephant())
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    eventually("the cluster's credentials exist", || async {
        secrets.get_opt("elephant-credentials").await.ok()?
    })
    .await;
    (dir, sandbox, client, s3, operator)
}

#[tokio::test]
async fn an_exec_credential_plugin_in_a_remote_kubeconfig_never_runs() {
    let (dir, _sandbox, client, _s3, operator) = setup().await;
    let server = RecordingServer::start(unauthorized()).await;
    let marker = dir.path().join("exec-ran");
    let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-exec"}}"#;
    // JSON is YAML too, and spares the shell script a second level of quoting.
    let exec = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/bin/sh",
        "args": ["-c", format!("touch {} && echo '{credential}'", marker.display())],
        "interactiveMode": "Never",
    });
    let user = format!("    exec: {exec}\n");
    put_kubeconfig(
        &client,
        "exec-kubeconfig",
        &kubeconfig(&server.url, &server.ca_data(), "", &user),
    )
    .await;
    link(&client, "elephant-exec", "exec-kubeconfig").await;

    let message = outcome(&client, "elephant-exec", || marker.exists()).await;
    // Give a plugin that would have run every chance to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !marker.exists(),
        "the operator ran the tenant's exec plugin"
    );
    let message = message.unwrap_or_default();
    assert!(message.contains("users[0].user.exec"), "{message}");
    assert_eq!(server.connections(), 0, "the operator contacted the server");
    assert_eq!(
        warnings(&client, "elephant-exec", "InvalidSpec")
            .await
            .len(),
        1
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_token_file_in_a_remote_kubeconfig_is_never_read_or_sent() {
    let (dir, _sandbox, client, _s3, operator) = setup().await;
    let server = RecordingServer::start(unauthorized()).await;
    // A file of the operator's that a tenant would love to read, such as its service account
    // token; here a file with a value the test knows.
    let operator_file = dir.path().join("operator-token");
    let value = "operator-only-3b1f9e0c";
    std::fs::write(&operator_file, value).unwrap();
    let user = format!("    tokenFile: {}\n", operator_file.display());
    put_kubeconfig(
        &client,
        "token-file-kubeconfig",
        &kubeconfig(&server.url, &server.ca_data(), "", &user),
    )
    .await;
    link(&client, "elephant-token-file", "token-file-kubeconfig").await;

    let message = outcome(&client, "elephant-token-file", || {
        !server.requests().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = server.requests();
    assert!(
        requests.iter().all(|head| !head.contains(value)),
        "the operator sent its own file's content to the tenant's server: {requests:?}"
    );
    let message = message.unwrap_or_default();
    assert!(message.contains("users[0].user.tokenFile"), "{message}");
    assert!(!message.contains(value), "{message}");
    assert_eq!(server.connections(), 0, "the operator contacted the server");
    operator.stop().await;
}

#[tokio::test]
async fn every_refused_kubeconfig_field_is_named_in_a_condition_and_a_warning() {
    let (_dir, _sandbox, client, _s3, operator) = setup().await;
    let server = RecordingServer::start(unauthorized()).await;
    let ca = server.ca_data();
    let token = "    token: tenant-token\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "auth-provider",
            kubeconfig(
                &server.url,
                &ca,
                "",
                "    auth-provider:\n      name: oidc\n",
            ),
            "users[0].user.auth-provider",
        ),
        (
            "client-certificate",
            kubeconfig(
                &server.url,
                &ca,
                "",
                "    client-certificate: /etc/tusk/tls.crt\n    client-key: /etc/tusk/tls.key\n",
            ),
            "users[0].user.client-certificate",
        ),
        (
            "client-key",
            kubeconfig(&server.url, &ca, "", "    client-key: /etc/tusk/tls.key\n"),
            "users[0].user.client-key",
        ),
        (
            "certificate-authority",
            kubeconfig(
                &server.url,
                &ca,
                "    certificate-authority: /etc/ssl/private/ca.pem\n",
                token,
            ),
            "clusters[0].cluster.certificate-authority",
        ),
        (
            "proxy-url",
            kubeconfig(
                &server.url,
                &ca,
                "    proxy-url: socks5://127.0.0.1:1080\n",
                token,
            ),
            "clusters[0].cluster.proxy-url",
        ),
        (
            "basic-auth",
            kubeconfig(
                &server.url,
                &ca,
                "",
                "    username: admin\n    password: hunter2\n",
            ),
            "users[0].user.username",
        ),
        (
            "impersonation",
            kubeconfig(
                &server.url,
                &ca,
                "",
                &format!("{token}    as: system:admin\n"),
            ),
            "users[0].user.as",
        ),
        (
            "metadata-v4",
            kubeconfig("https://169.254.169.254", &ca, "", token),
            "clusters[0].cluster.server",
        ),
        (
            "metadata-v6",
            kubeconfig("https://[fd00:ec2::254]:443", &ca, "", token),
            "clusters[0].cluster.server",
        ),
        (
            "plain-http",
            kubeconfig(&server.url.replace("https", "http"), &ca, "", token),
            "clusters[0].cluster.server",
        ),
    ];
    for (case, text, _) in &cases {
        put_kubeconfig(&client, &format!("{case}-kubeconfig"), text).await;
        link(
            &client,
            &format!("elephant-{case}"),
            &format!("{case}-kubeconfig"),
        )
        .await;
    }
    for (case, _, field) in &cases {
        let name = format!("elephant-{case}");
        let message = refused(&client, &name).await;
        assert!(message.contains(field), "{case}: {message}");
        assert!(!message.contains("hunter2"), "{case}: {message}");
        let warning = eventually(&format!("{case} has a Warning Event"), || async {
            warnings(&client, &name, "InvalidSpec")
                .await
                .into_iter()
                .next()
        })
        .await;
        assert!(
            warning.note.as_deref().unwrap_or_default().contains(field),
            "{case}: {warning:?}"
        );
    }
    assert_eq!(server.connections(), 0, "the operator contacted the server");
    operator.stop().await;
}

#[tokio::test]
async fn a_refused_kubeconfig_waits_for_its_secret_and_a_fixed_one_is_used() {
    let (_dir, _sandbox, client, _s3, operator) = setup().await;
    let (customer, _customer_client) = support::sandbox().await;
    let good = std::fs::read_to_string(customer.kubeconfig_path()).unwrap();
    let bad = good.replace("\"token\":", "\"tokenFile\": \"/etc/passwd\", \"token\":");
    assert_ne!(good, bad);
    put_kubeconfig(&client, "customer-kubeconfig", &bad).await;
    link(&client, "elephant-customer", "customer-kubeconfig").await;
    refused(&client, "elephant-customer").await;

    // No retry loop: nothing about the link changes while its Secret stays as it is.
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    let before = links.get("elephant-customer").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = links.get("elephant-customer").await.unwrap();
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the refused link was written again"
    );
    assert_eq!(
        warnings(&client, "elephant-customer", "InvalidSpec")
            .await
            .len(),
        1
    );

    // Fixing the Secret alone is enough: the link is used without being touched.
    put_kubeconfig(&client, "customer-kubeconfig", &good).await;
    eventually("the fixed link is Ready", || async {
        let link = links.get_opt("elephant-customer").await.ok()??;
        let conditions = link.status?.conditions;
        let ready = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let valid = conditions
            .iter()
            .any(|c| c.type_ == "InvalidSpec" && c.status == "False");
        (ready && valid).then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_remote_servers_error_text_is_cut_short_in_events_and_status() {
    let (_dir, _sandbox, client, _s3, operator) = setup().await;
    let flood = format!("{}\nInjected: line", "A".repeat(20_000));
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Forbidden", "code": 403, "message": flood,
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = RecordingServer::start(answer).await;
    put_kubeconfig(
        &client,
        "chatty-kubeconfig",
        &kubeconfig(
            &server.url,
            &server.ca_data(),
            "",
            "    token: tenant-token\n",
        ),
    )
    .await;
    link(&client, "elephant-chatty", "chatty-kubeconfig").await;
    let warning = eventually("an Unreachable Warning", || async {
        warnings(&client, "elephant-chatty", "Unreachable")
            .await
            .into_iter()
            .next()
    })
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("403"), "{note}");
    assert!(note.len() < 400, "the note has {} bytes", note.len());
    assert!(!note.contains('\n') && !note.contains("Injected"), "{note}");
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    let link = links.get("elephant-chatty").await.unwrap();
    let ready = link
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "Unreachable");
    assert!(ready.message.len() < 400, "{}", ready.message.len());
    assert!(
        server
            .requests()
            .iter()
            .any(|head| head.contains("Bearer tenant-token")),
        "the valid kubeconfig was used"
    );
    operator.stop().await;
}
