//! The seed story, end to end: tusk driven with the real kubectl and psql, as a newcomer would
//! after the README's quick start. Every step asserts what the user sees, and a failure says
//! what they would have seen instead. The story runs on `tusk dev`, or on a real cluster with
//! tusk installed when `TUSK_E2E_KUBECONFIG` names one (docs/testing.md), by the same steps.

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;
// Shared with deploy.rs, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "shared/target_cluster.rs"]
mod target_cluster;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use serde_json::Value;
use support::Dev;
use target_cluster::TargetCluster;
use tusk_backup::store::{BackupStore, StoreConfig};
use tusk_sandbox::Sandbox;
use tusk_sandbox::runtime::RuntimeOptions;

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
const BUCKET: &str = "tusk-backups";

/// kubectl against one cluster, in one namespace when one is given.
struct Kubectl {
    kubeconfig: PathBuf,
    namespace: Option<String>,
}

impl Kubectl {
    /// kubectl with `kubeconfig`, in its current context's namespace.
    fn on(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig,
            namespace: None,
        }
    }

    /// kubectl on the same cluster, in `namespace`.
    fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            kubeconfig: self.kubeconfig.clone(),
            namespace: Some(namespace.to_owned()),
        }
    }

    /// The command with the kubeconfig and namespace set, for `args`.
    fn command(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(namespace) = &self.namespace {
            command.args(["--namespace", namespace]);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.command().args(args).output().expect("kubectl runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "`kubectl {}` failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ))
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|error| panic!("{error}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl prints JSON")
    }

    fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        self.run(&all)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    }

    /// A Secret's value, decoded the way users do it with kubectl.
    fn secret_value(&self, secret: &str, key: &str) -> String {
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let value = self.ok(&["get", "secret", secret, "-o", &template]);
        assert!(!value.is_empty(), "Secret {secret} has no key {key}");
        value
    }

    /// Polls `probe` until it returns `Some`; on timeout (`limit` times the wait factor),
    /// fails with what the user saw last.
    fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let limit = limit * wait_factor();
        let deadline = Instant::now() + limit;
        loop {
            match probe() {
                Ok(value) => return value,
                Err(seen) if Instant::now() >= deadline => {
                    panic!("waited {limit:?} for {what}; instead the user saw: {seen}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn wait_ready(&self, kind: &str, name: &str, limit: Duration) {
        self.until(&format!("{kind} {name} to become Ready"), limit, || {
            let text = self.run(&["get", kind, name, "-o", "jsonpath={.status.phase}"])?;
            if text == "Ready" {
                Ok(())
            } else {
                Err(format!(
                    "phase {text:?}; {}",
                    self.run(&["describe", kind, name]).unwrap_or_default()
                ))
            }
        });
    }
}

/// `kubectl port-forward` to a Service's PostgreSQL port on a free local port, as a user
/// outside the cluster reaches a database on any cluster; stopped when dropped.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn to_service(kubectl: &Kubectl, service: &str) -> Result<Self, String> {
        let mut child = kubectl
            .command()
            .args([
                "port-forward",
                "--address",
                "127.0.0.1",
                &format!("service/{service}"),
                ":5432",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        const FORWARDING: &str = "Forwarding from 127.0.0.1:";
        let printed = first_lines(
            &mut child,
            |line| line.starts_with(FORWARDING),
            Duration::from_secs(20),
        );
        let port = printed.as_ref().ok().and_then(|text| {
            let (_, rest) = text.split_once(FORWARDING)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
        let mut forward = Self { child, port: 0 };
        match port {
            Some(port) => {
                forward.port = port;
                Ok(forward)
            }
            None => Err(format!(
                "kubectl port-forward to service/{service} forwards nothing: {}",
                printed.unwrap_or_else(|seen| seen)
            )),
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// psql through a port-forward to `service`, with a login from a Secret.
fn psql_through(
    kubectl: &Kubectl,
    service: &str,
    login: &Login,
    sql: &str,
) -> Result<String, String> {
    let forward = PortForward::to_service(kubectl, service)?;
    psql("127.0.0.1", forward.port, login, sql)
}

/// A role's login to a database.
struct Login {
    user: String,
    password: String,
    database: String,
}

fn psql(host: &str, port: u16, login: &Login, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            &login.user,
            "-d",
            &login.database,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", &login.password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// The customer's connection to a cluster through its `-rw` Service, as a user outside the
/// cluster makes it: `kubectl port-forward` and the owner role's login from the generated
/// Secret.
fn owner_sql(kubectl: &Kubectl, cluster: &str, sql: &str) -> Result<String, String> {
    psql_through(
        kubectl,
        &format!("{cluster}-rw"),
        &owner_login(kubectl, cluster),
        sql,
    )
}

/// The owner role's login to `cluster`, from the generated Secret.
fn owner_login(kubectl: &Kubectl, cluster: &str) -> Login {
    let credentials = format!("{cluster}-credentials");
    Login {
        user: kubectl.secret_value(&credentials, "username"),
        password: kubectl.secret_value(&credentials, "password"),
        database: kubectl.secret_value(&credentials, "dbname"),
    }
}

/// psql at a Service's cluster IP, through the Service's own routing rather than to one pod
/// kubectl picks: reachable from this machine only when the cluster runs on it (`tusk dev`,
/// the test's own customer sandbox), so an extra check there, never the story's only one.
/// Waits up to 30 seconds for an answer.
fn psql_at_cluster_ip(kubectl: &Kubectl, service: &str, login: &Login, sql: &str) -> String {
    kubectl.until(
        &format!("psql at service/{service}'s cluster IP"),
        Duration::from_secs(30),
        || {
            let address = kubectl.run(&[
                "get",
                "service",
                service,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])?;
            psql(&address, 5432, login, sql)
        },
    )
}

fn postgres_processes_under(dir: &Path) -> Vec<String> {
    let output = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .expect("ps runs");
    let needle = dir.to_string_lossy().into_owned();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("postgres") && line.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn objects_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.to_string_lossy().contains(".s3s") {
                found.push(path);
            }
        }
    }
    found
}

/// The variable naming the platform's store URL in real-cluster mode (`s3://bucket/prefix`, as
/// the operator's `store.url`).
const STORE_URL_VARIABLE: &str = "TUSK_E2E_STORE_URL";
/// The variable naming the store's S3 endpoint, when it is not AWS.
const STORE_ENDPOINT_VARIABLE: &str = "TUSK_E2E_STORE_ENDPOINT";
/// The variable naming the store's region.
const STORE_REGION_VARIABLE: &str = "TUSK_E2E_STORE_REGION";
/// The variable naming the Secret the operator reads the store's keys from, `namespace/name`.
const STORE_SECRET_VARIABLE: &str = "TUSK_E2E_STORE_SECRET";
/// The variable naming the kubeconfig of a customer's cluster to link in real-cluster mode.
const CUSTOMER_KUBECONFIG_VARIABLE: &str = "TUSK_E2E_CUSTOMER_KUBECONFIG";
/// The Secret deploy/ has the operator read the store's keys from.
const DEPLOY_STORE_SECRET: &str = "tusk-system/tusk-backup-store";
/// The keys of that Secret (the operator's defaults).
const ACCESS_KEY_ID_KEY: &str = "access-key-id";
const SECRET_ACCESS_KEY_KEY: &str = "secret-access-key";

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The variable multiplying every wait of the story, for a cluster slower than `tusk dev`
/// (one that pulls images, provisions volumes on a cloud).
const WAIT_FACTOR_VARIABLE: &str = "TUSK_E2E_WAIT_FACTOR";

/// `TUSK_E2E_WAIT_FACTOR`, a whole number of at least 1; 1 when unset.
fn wait_factor() -> u32 {
    variable(WAIT_FACTOR_VARIABLE).map_or(1, |text| {
        text.parse()
            .ok()
            .filter(|factor| *factor >= 1)
            .unwrap_or_else(|| {
                panic!("{WAIT_FACTOR_VARIABLE} is not a whole number of at least 1: {text}")
            })
    })
}

/// The platform's object store, read through the S3 API with the keys the operator reads from
/// its Secret, as any S3 client reads it: `tusk dev`'s embedded server, or the store the
/// `TUSK_E2E_STORE_*` variables name.
struct PlatformStore {
    store: BackupStore,
    /// kubectl in the namespace of the Secret holding the operator's store keys.
    secret_kubectl: Kubectl,
    /// That Secret's name.
    secret_name: String,
}

impl PlatformStore {
    fn of(target: &TargetCluster) -> Self {
        let (url, endpoint, region, secret) = match target.dev() {
            Some(dev) => {
                // tusk dev's settings: its bucket and prefix, the port it keeps in s3.json,
                // and the Secret it installs.
                let state: Value = serde_json::from_slice(
                    &std::fs::read(dev.data_dir().join("s3.json")).expect("tusk dev's s3.json"),
                )
                .expect("s3.json is JSON");
                let port = state["port"].as_u64().expect("s3.json names the port");
                (
                    format!("s3://{BUCKET}/dev"),
                    Some(format!("http://127.0.0.1:{port}")),
                    None,
                    "tusk-system/tusk-dev-store".to_owned(),
                )
            }
            None => (
                variable(STORE_URL_VARIABLE).unwrap_or_else(|| {
                    panic!(
                        "{} names a cluster: {STORE_URL_VARIABLE} must name its store (docs/testing.md)",
                        target_cluster::KUBECONFIG_VARIABLE
                    )
                }),
                variable(STORE_ENDPOINT_VARIABLE),
                variable(STORE_REGION_VARIABLE),
                variable(STORE_SECRET_VARIABLE).unwrap_or_else(|| DEPLOY_STORE_SECRET.to_owned()),
            ),
        };
        let (secret_namespace, secret_name) = secret
            .split_once('/')
            .unwrap_or_else(|| panic!("{STORE_SECRET_VARIABLE} is not namespace/name: {secret}"));
        let secret_kubectl =
            Kubectl::on(target.kubeconfig().to_owned()).in_namespace(secret_namespace);
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|endpoint| endpoint.starts_with("http://"));
        let store = BackupStore::new(&StoreConfig {
            url,
            endpoint,
            region,
            access_key_id: Some(secret_kubectl.secret_value(secret_name, ACCESS_KEY_ID_KEY)),
            secret_access_key: Some(
                secret_kubectl.secret_value(secret_name, SECRET_ACCESS_KEY_KEY),
            ),
            allow_http,
        })
        .expect("the store's settings are valid");
        Self {
            store,
            secret_kubectl,
            secret_name: secret_name.to_owned(),
        }
    }

    async fn exists(&self, key: &str) -> bool {
        self.store
            .exists(key)
            .await
            .unwrap_or_else(|error| panic!("the store answers for {key}: {error}"))
    }

    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, String> {
        self.store
            .list(prefix)
            .await
            .map(|objects| objects.into_iter().map(|object| object.key).collect())
            .map_err(|error| error.to_string())
    }

    async fn download(&self, key: &str, to: &Path) {
        let object = self
            .store
            .object_store()
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap_or_else(|error| panic!("the store serves {key}: {error}"));
        let bytes = object.bytes().await.expect("the object is read");
        std::fs::write(to, &bytes).expect("the object is written");
    }

    /// Gives the operator a wrong secret key, as a store whose keys were rotated or revoked
    /// refuses it: the signature of every request it makes no longer matches. The right key
    /// is put back when the returned guard drops, also when the test fails before that.
    fn revoke_operator_keys(&self, temp: &Path) -> RevokedKeys<'_> {
        let encoded = self.secret_kubectl.ok(&[
            "get",
            "secret",
            &self.secret_name,
            "-o",
            &format!("jsonpath={{.data.{SECRET_ACCESS_KEY_KEY}}}"),
        ]);
        let revoked = RevokedKeys {
            store: self,
            original: temp.join("original-keys.json"),
        };
        // In files, not arguments: a secret key in a process's arguments is visible to every
        // user of the machine.
        write_private(
            &revoked.original,
            &serde_json::json!({"data": {SECRET_ACCESS_KEY_KEY: encoded}}).to_string(),
        );
        let wrong = temp.join("wrong-keys.json");
        write_private(
            &wrong,
            &serde_json::json!({"stringData": {SECRET_ACCESS_KEY_KEY: "revoked-by-the-seed-story"}})
                .to_string(),
        );
        self.patch_secret(&wrong);
        revoked
    }

    fn patch_secret(&self, patch: &Path) {
        self.secret_kubectl.ok(&[
            "patch",
            "secret",
            &self.secret_name,
            "--type=merge",
            "--patch-file",
            &patch.to_string_lossy(),
        ]);
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("a private file is written");
}

/// The operator's store keys while revoked; put back when dropped.
struct RevokedKeys<'a> {
    store: &'a PlatformStore,
    /// A merge patch holding the right key.
    original: PathBuf,
}

impl Drop for RevokedKeys<'_> {
    fn drop(&mut self) {
        self.store.patch_secret(&self.original);
        let _ = std::fs::remove_file(&self.original);
    }
}

/// The customer's cluster the story links elephant to: the one
/// `TUSK_E2E_CUSTOMER_KUBECONFIG` names, else a sandbox of the test's own.
enum CustomerCluster {
    Named(PathBuf),
    Own(Sandbox),
}

impl CustomerCluster {
    async fn start(dir: &Path) -> Self {
        if let Some(path) = variable(CUSTOMER_KUBECONFIG_VARIABLE) {
            return Self::Named(PathBuf::from(path));
        }
        let sandbox = Sandbox::builder()
            .data_dir(dir.join("apiserver"))
            .kubeconfig_path(dir.join("kubeconfig"))
            .runtime(
                RuntimeOptions::new(dir.join("runtime"))
                    .tusk_executable(TUSK)
                    .pod_network(std::net::Ipv4Addr::new(127, 32, 0, 0), 16),
            )
            .start()
            .await
            .expect("the customer's sandbox starts");
        Self::Own(sandbox)
    }

    fn kubeconfig(&self) -> &Path {
        match self {
            Self::Named(path) => path,
            Self::Own(sandbox) => sandbox.kubeconfig_path(),
        }
    }

    async fn stop(self) {
        if let Self::Own(sandbox) = self {
            sandbox.shutdown().await;
        }
    }
}

/// The seed story. On `tusk dev` by default; with `TUSK_E2E_KUBECONFIG`, on that cluster,
/// where tusk must be installed and running, by the same steps (docs/testing.md): PostgreSQL is
/// reached through `kubectl port-forward`, the store through the S3 API, and a store failure is
/// made by revoking the operator's keys. What only a cluster on this machine shows (its
/// Services' cluster IPs, its processes) is checked there on top of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_story_runs_end_to_end_on_tusk_dev() {
    let temp = tempfile::tempdir().unwrap();
    let mut target = TargetCluster::start_with_tusk();
    let namespace = target.namespace().to_owned();
    let kubectl = Kubectl::on(target.kubeconfig().to_owned()).in_namespace(&namespace);
    let store = PlatformStore::of(&target);
    let example = |name: &str| format!("{EXAMPLES}/{name}");

    // 1. A database on demand.
    kubectl.ok(&["apply", "-f", &example("elephant.yaml")]);
    kubectl.wait_ready("postgrescluster", "elephant", Duration::from_secs(90));
    kubectl.until(
        "psql to create a table in elephant",
        Duration::from_secs(30),
        || {
            owner_sql(
                &kubectl,
                "elephant",
                "CREATE TABLE IF NOT EXISTS animals (name text); \
             INSERT INTO animals VALUES ('asian'), ('african'), ('mammoth');",
            )
        },
    );
    // The customer's login is no superuser: the server's environment, which holds what WAL
    // archiving needs, stays out of its reach.
    let escape = owner_sql(
        &kubectl,
        "elephant",
        "CREATE TEMP TABLE env (line text); COPY env FROM PROGRAM 'env'",
    );
    assert!(
        escape
            .as_ref()
            .is_err_and(|error| error.contains("pg_execute_server_program")),
        "the owner role ran a program on the server: {escape:?}"
    );
    if target.dev().is_some() {
        let counted = psql_at_cluster_ip(
            &kubectl,
            "elephant-rw",
            &owner_login(&kubectl, "elephant"),
            "SELECT count(*) FROM animals",
        );
        assert_eq!(
            counted, "3",
            "elephant-rw's cluster IP reaches another database"
        );
    }

    // 2. A backup, watched to the end.
    kubectl.ok(&["apply", "-f", &example("my-backup.yaml")]);
    let listing = kubectl.until("my-backup to succeed", Duration::from_secs(120), || {
        let text = kubectl.run(&["get", "pgbr", "my-backup"])?;
        if text.contains("Succeeded") {
            Ok(text)
        } else if text.contains("Failed") {
            panic!(
                "the backup failed: {text}\n{}",
                kubectl
                    .run(&["describe", "pgbr", "my-backup"])
                    .unwrap_or_default()
            )
        } else {
            Err(text)
        }
    });
    assert!(listing.contains("100"), "progress is not shown: {listing}");
    let backup = kubectl.json(&["get", "pgb", "my-backup"]);
    let spec = &backup["spec"];
    for field in ["size", "startLsn", "stopLsn", "runDuration"] {
        assert!(
            spec.get(field).is_some_and(|value| !value.is_null()),
            "PostgresBackup my-backup shows no {field}: {backup}"
        );
    }
    let key = spec["s3"]["path"]
        .as_str()
        .expect("the backup records its path")
        .to_owned();
    assert!(
        store.exists(&key).await,
        "the backup's object {key} is not in the platform's store"
    );
    let object = temp.path().join("my-backup.tar.gz.dare");
    store.download(&key, &object).await;
    let passphrase = kubectl.secret_value("elephant-credentials", "backup-passphrase");
    let tarball = temp.path().join("my-backup.tar");
    let passphrase_file = temp.path().join("passphrase");
    write_private(&passphrase_file, &passphrase);
    let decrypted = Command::new(TUSK)
        .args(["backup", "decrypt", "--passphrase-file"])
        .arg(&passphrase_file)
        .arg(&object)
        .arg(&tarball)
        .output()
        .expect("tusk backup decrypt runs");
    assert!(
        decrypted.status.success(),
        "tusk backup decrypt: {}",
        String::from_utf8_lossy(&decrypted.stderr)
    );
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(&tarball)
        .output()
        .expect("tar runs");
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && names.contains("PG_VERSION"),
        "the decrypted backup is not a tar of a data directory: {names}"
    );

    // 3. A restore into a new cluster.
    kubectl.ok(&["apply", "-f", &example("restore/elephant-restored.yaml")]);
    kubectl.wait_ready(
        "postgrescluster",
        "elephant-restored",
        Duration::from_secs(120),
    );
    let rows = kubectl.until("the restored rows", Duration::from_secs(30), || {
        owner_sql(
            &kubectl,
            "elephant-restored",
            "SELECT string_agg(name, ',' ORDER BY name) FROM animals",
        )
    });
    assert_eq!(rows, "african,asian,mammoth");
    if target.dev().is_some() {
        let restored = psql_at_cluster_ip(
            &kubectl,
            "elephant-restored-rw",
            &owner_login(&kubectl, "elephant-restored"),
            "SELECT string_agg(name, ',' ORDER BY name) FROM animals",
        );
        assert_eq!(restored, "african,asian,mammoth");
    }

    // 4. The customer's cluster gets a tunnel to elephant.
    let customer = CustomerCluster::start(&temp.path().join("customer")).await;
    let customer_kubectl = Kubectl::on(customer.kubeconfig().to_owned());
    let secret = kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "customer-kubeconfig",
        &format!("--from-file=kubeconfig={}", customer.kubeconfig().display()),
        "--dry-run=client",
        "-o",
        "json",
    ]);
    apply_text(&kubectl, &secret);
    kubectl.ok(&["apply", "-f", &example("remote-cluster.yaml")]);
    customer_kubectl.until(
        "the tunnel Service in the customer's cluster",
        Duration::from_secs(60),
        || {
            customer_kubectl
                .run(&[
                    "get",
                    "service",
                    "elephant",
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ])
                .and_then(|ip| {
                    if ip.is_empty() {
                        Err("no IP yet".into())
                    } else {
                        Ok(ip)
                    }
                })
        },
    );
    let login = Login {
        user: customer_kubectl.secret_value("elephant-connection", "user"),
        password: customer_kubectl.secret_value("elephant-connection", "password"),
        database: customer_kubectl.secret_value("elephant-connection", "dbname"),
    };
    let through_tunnel =
        customer_kubectl.until("psql through the tunnel", Duration::from_secs(60), || {
            psql_through(&customer_kubectl, "elephant", &login, "SELECT current_user")
        });
    assert_eq!(through_tunnel, login.user);
    if let CustomerCluster::Own(_) = &customer {
        let at_address =
            psql_at_cluster_ip(&customer_kubectl, "elephant", &login, "SELECT current_user");
        assert_eq!(at_address, login.user);
    }

    // 5. Deleting a backup deletes its data.
    let second = r#"{"apiVersion":"postgres.tusk.dev/v1","kind":"PostgresBackupRequest","metadata":{"name":"second-backup"},"spec":{"cluster":{"name":"elephant"}}}"#;
    apply_text(&kubectl, second);
    kubectl.until("second-backup to succeed", Duration::from_secs(120), || {
        let phase = kubectl.run(&[
            "get",
            "pgbr",
            "second-backup",
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        (phase == "Succeeded").then_some(()).ok_or(phase)
    });
    kubectl.ok(&["delete", "pgb", "my-backup", "--timeout=60s"]);
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=my-backup",
    ]);
    assert!(
        events.contains("Deleting backup my-backup from the object store"),
        "no Finalizer event: {events}"
    );
    assert!(
        !store.exists(&key).await,
        "the deleted backup's object is still in the store"
    );

    // 6. A store that refuses the operator's keys blocks deletion with the store's words,
    // until the keys are right again.
    let revoked = store.revoke_operator_keys(temp.path());
    kubectl.ok(&["delete", "pgb", "second-backup", "--wait=false"]);
    let described = kubectl.until(
        "a repeated Warning about the refused keys",
        Duration::from_secs(120),
        || {
            let text = kubectl.run(&["describe", "pgb", "second-backup"])?;
            (text.contains("Warning")
                && text.contains("SignatureDoesNotMatch")
                && text.contains("(x"))
            .then(|| text.clone())
            .ok_or(text)
        },
    );
    assert!(described.contains("Error"), "{described}");
    drop(revoked);
    kubectl.until(
        "second-backup to be deleted",
        Duration::from_secs(120),
        || match kubectl.get_json(&["pgb", "second-backup"]) {
            None => Ok(()),
            Some(_) => Err(kubectl
                .run(&["describe", "pgb", "second-backup"])
                .unwrap_or_default()),
        },
    );

    // 7. Deleting the project leaves nothing behind.
    kubectl.ok(&["delete", "pgrc", "elephant-customer", "--timeout=60s"]);
    kubectl.ok(&["delete", "postgrescluster", "elephant", "--timeout=120s"]);
    kubectl.until(
        "elephant's objects to be gone",
        Duration::from_secs(60),
        || {
            let left = kubectl.ok(&[
            "get",
            "secrets,configmaps,services,statefulsets,pods,persistentvolumeclaims,pgbr,pgbs,pgb",
            "-l",
            "postgres.tusk.dev/cluster=elephant",
            "-o",
            "name",
        ]);
            left.trim().is_empty().then_some(()).ok_or(left)
        },
    );
    let elephant_prefix = store.store.key(&format!("{namespace}/elephant"));
    let limit = Duration::from_secs(60) * wait_factor();
    let deadline = Instant::now() + limit;
    loop {
        let left = store.keys_under(&elephant_prefix).await;
        if left.as_ref().is_ok_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for elephant's prefix {elephant_prefix} to be empty; it holds {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    customer.stop().await;

    // On `tusk dev` only, this machine's processes show what the API showed: elephant's
    // PostgreSQL stopped with its pod, and Ctrl-C stops every other.
    if let Some(dev) = target.take_dev() {
        let runtime_dir = dev.data_dir().join("runtime");
        kubectl.until(
            "elephant's PostgreSQL to stop",
            Duration::from_secs(60),
            || {
                let left: Vec<String> = postgres_processes_under(&runtime_dir)
                    .into_iter()
                    .filter(|line| line.contains("elephant-0") || line.contains("/elephant/"))
                    .filter(|line| !line.contains("elephant-restored"))
                    .collect();
                left.is_empty().then_some(()).ok_or(format!("{left:?}"))
            },
        );
        let dev_dir = dev.data_dir().to_owned();
        dev.interrupt();
        let left = postgres_processes_under(&dev_dir);
        assert!(
            left.is_empty(),
            "PostgreSQL still runs after Ctrl-C: {left:?}"
        );
    }
}

fn apply_text(kubectl: &Kubectl, manifest: &str) {
    let mut child = kubectl
        .command()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The data directory's `postmaster.pid` of the PostgreSQL serving `claim`, found under the
/// runtime's directory by the claim's uid (PVC directories are named by it).
fn postmaster_pid(runtime_dir: &Path, claim_uid: &str) -> Option<i32> {
    objects_under(runtime_dir)
        .into_iter()
        .filter(|path| path.ends_with("postmaster.pid"))
        .filter(|path| path.to_string_lossy().contains(claim_uid))
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tusk_dev_recovers_from_a_killed_postgres_and_from_being_killed_itself() {
    let mut dev = Dev::start();
    let dev_dir = dev.data_dir().to_owned();
    let kubectl = Kubectl::on(dev.kubeconfig());
    kubectl.ok(&["apply", "-f", &format!("{EXAMPLES}/elephant.yaml")]);
    kubectl.wait_ready("postgrescluster", "elephant", Duration::from_secs(90));
    // Enough data that a backup takes a while, in rows that do not compress away.
    kubectl.until(
        "psql to load data into elephant",
        Duration::from_secs(60),
        || {
            owner_sql(
                &kubectl,
                "elephant",
                "CREATE TABLE IF NOT EXISTS noise AS \
             SELECT g, md5(g::text) || md5((g * 7)::text) AS digest \
             FROM generate_series(1, 1500000) g",
            )
        },
    );

    // PostgreSQL killed outright: the runtime restarts the container and the cluster heals.
    let claim_uid = kubectl.ok(&[
        "get",
        "pvc",
        "data-elephant-0",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let runtime_dir = dev_dir.join("runtime");
    let pid = postmaster_pid(&runtime_dir, &claim_uid)
        .expect("elephant's data directory has a postmaster.pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("PostgreSQL is killed");
    kubectl.until(
        "elephant-0 to be restarted",
        Duration::from_secs(60),
        || {
            let restarts = kubectl.run(&[
                "get",
                "pod",
                "elephant-0",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])?;
            (restarts.parse::<u32>().unwrap_or(0) >= 1)
                .then_some(())
                .ok_or(format!("restartCount {restarts:?}"))
        },
    );
    kubectl.wait_ready("postgrescluster", "elephant", Duration::from_secs(90));
    let rows = kubectl.until("elephant to answer again", Duration::from_secs(60), || {
        owner_sql(&kubectl, "elephant", "SELECT count(*) FROM noise")
    });
    assert_eq!(rows, "1500000", "rows lost in the crash");

    // tusk dev killed outright in the middle of a backup, then started again.
    let request = r#"{"apiVersion":"postgres.tusk.dev/v1","kind":"PostgresBackupRequest","metadata":{"name":"interrupted"},"spec":{"cluster":{"name":"elephant"}}}"#;
    apply_text(&kubectl, request);
    kubectl.until("the backup to be running", Duration::from_secs(60), || {
        let phase = kubectl.run(&[
            "get",
            "pgbr",
            "interrupted",
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        match phase.as_str() {
            "Running" | "Succeeded" | "Failed" => Ok(()),
            _ => Err(phase),
        }
    });
    dev.kill_and_restart();
    let outcome = kubectl.until(
        "the interrupted backup to end",
        Duration::from_secs(240),
        || {
            let phase = kubectl.run(&[
                "get",
                "pgbr",
                "interrupted",
                "-o",
                "jsonpath={.status.phase}",
            ])?;
            match phase.as_str() {
                "Succeeded" | "Failed" => Ok(phase),
                _ => Err(format!(
                    "phase {phase:?}; {}",
                    kubectl
                        .run(&["describe", "pgbr", "interrupted"])
                        .unwrap_or_default()
                )),
            }
        },
    );
    // Every object under base/ belongs to a PostgresBackup that exists.
    let recorded: Vec<String> = kubectl.json(&["get", "pgb"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|backup| backup["spec"]["s3"]["path"].as_str().map(str::to_owned))
        .collect();
    let bucket_dir = dev_dir.join("s3").join(BUCKET);
    let orphans: Vec<PathBuf> = objects_under(&bucket_dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains("/base/"))
        .filter(|path| !recorded.iter().any(|key| path.ends_with(key)))
        .collect();
    assert!(
        orphans.is_empty(),
        "the {outcome} backup left objects no PostgresBackup records: {orphans:?}"
    );
    if outcome == "Succeeded" {
        assert!(
            !recorded.is_empty(),
            "the request succeeded without a PostgresBackup"
        );
    }
    kubectl.wait_ready("postgrescluster", "elephant", Duration::from_secs(90));

    dev.interrupt();
    let left = postgres_processes_under(&dev_dir);
    assert!(
        left.is_empty(),
        "PostgreSQL still runs after Ctrl-C: {left:?}"
    );
}

/// Run as root from a private directory (mode 0700, as a checkout under `/root` is), with the
/// executable and the data directory both inside it, `tusk dev` runs databases: the users
/// pods run as cannot pass through that directory, so the runtime keeps pods, volumes and a
/// copy of the executable in a directory of its own, and the user's directory stays private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tusk_dev_runs_databases_from_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    let private = temp.path().join("checkout");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tusk = private.join("tusk");
    std::fs::copy(TUSK, &tusk).unwrap();
    let dev_dir = private.join("dev");
    let dev = Dev::start_at(&tusk, dev_dir.clone(), temp, &[]);
    let node_dir = std::fs::read_link(dev_dir.join("runtime").join("node")).ok();
    let kubectl = Kubectl::on(dev.kubeconfig());
    kubectl.ok(&["apply", "-f", &format!("{EXAMPLES}/elephant.yaml")]);
    kubectl.wait_ready("postgrescluster", "elephant", Duration::from_secs(180));
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "tusk dev opened the private directory to others"
    );
    dev.interrupt();
    if let Some(node_dir) = node_dir {
        std::fs::remove_dir_all(&node_dir).unwrap();
    }
}

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
/// What the person at the keyboard types into an interactive session (`kubectl exec -it`).
const TYPED: &str = "SELECT current_user, inet_server_addr() IS NULL AS over_the_socket, count(*) FROM animals;\n\\q\n";

/// The README's walk-through, as written: the commands of the quick start's `sh` block that
/// starts with `export KUBECONFIG`, one a line, comments and blank lines left out.
fn readme_walk_through() -> Vec<String> {
    let text = std::fs::read_to_string(README).expect("README.md");
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        let line = line.trim();
        match &mut block {
            None if line == "```sh" => block = Some(Vec::new()),
            None => {}
            Some(lines) if line.starts_with("```") => {
                if lines
                    .first()
                    .is_some_and(|first| first.starts_with("export KUBECONFIG="))
                {
                    return std::mem::take(lines);
                }
                block = None;
            }
            Some(lines) if !line.is_empty() && !line.starts_with('#') => {
                lines.push(line.to_owned());
            }
            Some(_) => {}
        }
    }
    panic!("README.md has no sh block starting with `export KUBECONFIG`");
}

/// A person following the walk-through in one terminal: each line runs in bash, in a checkout
/// (`examples/` and `.tusk/`), with the variables earlier lines exported.
struct Terminal {
    checkout: PathBuf,
    exported: Vec<(String, String)>,
    /// Commands left running with `&`, stopped when the terminal closes.
    background: Vec<Child>,
}

impl Terminal {
    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(&self.checkout)
            .env_clear()
            .envs(
                ["PATH", "HOME"]
                    .into_iter()
                    .filter_map(|name| std::env::var(name).ok().map(|value| (name, value))),
            )
            .envs(self.exported.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Runs one line as the person would, and returns what it printed.
    fn run(&mut self, line: &str) -> String {
        if let Some(assignment) = line.strip_prefix("export ") {
            let (name, _) = assignment.split_once('=').expect("export NAME=value");
            let output = self
                .bash(&format!("{line}\nprintf '%s' \"${name}\""))
                .output()
                .expect("bash runs");
            let value = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success() && !value.is_empty(),
                "`{line}` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            self.exported.push((name.to_owned(), value));
            return String::new();
        }
        if let Some(command) = line.strip_suffix(" &") {
            // Left running; the next line may use it once it says it is ready.
            let mut child = self
                .bash(&format!("exec {command}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash runs");
            let first = first_lines(&mut child, |_| true, Duration::from_secs(30))
                .unwrap_or_else(|seen| panic!("`{line}` printed nothing: {seen}"));
            self.background.push(child);
            return first;
        }
        if line.ends_with(" -w") {
            // Watched until it shows the end, then Ctrl-C.
            let mut child = self
                .bash(&format!("exec {line}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash runs");
            let finished = |row: &str| {
                assert!(!row.contains("Failed"), "`{line}` shows a failure: {row}");
                row.contains("Ready") || row.contains("Succeeded")
            };
            let seen = first_lines(&mut child, finished, Duration::from_secs(240));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = child.wait();
            return seen.unwrap_or_else(|seen| panic!("`{line}` never showed the end: {seen}"));
        }
        let interactive = line.contains(" -it ") || line.contains(" -i ");
        let mut child = self
            .bash(line)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(TYPED.as_bytes()).expect("typed");
        }
        let output = child.wait_with_output().expect("bash runs");
        assert!(
            output.status.success(),
            "`{line}` failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `child`'s output until a line satisfies `done`: `Ok` with every line so far, or `Err`
/// with them once `limit` has passed or the output ended.
fn first_lines(
    child: &mut Child,
    mut done: impl FnMut(&str) -> bool,
    limit: Duration,
) -> Result<String, String> {
    let (sender, lines) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            // Read to the end even once nobody listens: a program whose output pipe closes
            // dies of SIGPIPE at its next line (port-forward prints one per connection).
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
    }
    drop(sender);
    let deadline = Instant::now() + limit;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if done(&line) {
                    return Ok(seen);
                }
            }
            Err(_) => return Err(seen),
        }
    }
}

/// The README's walk-through runs as written, line by line, against `tusk dev`: a project's
/// namespace made with `kubectl create namespace`, psql in the database's container with
/// `kubectl exec` (given a command, and typed into with `-it`: over the pod's Unix socket, as
/// tusk's management role), psql through `kubectl port-forward`, then the backup, the restore
/// and the deletions. It reads the lines from README.md, so the doc cannot drift from what works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_through_runs_as_written() {
    let dev = Dev::start();
    let checkout = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dev.data_dir(), checkout.path().join(".tusk")).unwrap();
    std::os::unix::fs::symlink(EXAMPLES, checkout.path().join("examples")).unwrap();
    let mut terminal = Terminal {
        checkout: checkout.path().to_owned(),
        exported: Vec::new(),
        background: Vec::new(),
    };
    let lines = readme_walk_through();
    let mut printed = Vec::new();
    for line in &lines {
        printed.push((line.clone(), terminal.run(line)));
    }
    let output_of = |prefix: &str| {
        printed
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, output)| output.clone())
            .unwrap_or_else(|| panic!("README.md's walk-through has no `{prefix}` line"))
    };
    assert!(
        output_of("kubectl create namespace").contains("namespace/zoo created"),
        "{printed:?}"
    );
    let counted = output_of("kubectl exec elephant-0 -- psql");
    assert!(
        counted.lines().any(|row| row.trim() == "1") && counted.contains("(1 row)"),
        "psql in the container does not count the one animal: {counted}"
    );
    let typed = output_of("kubectl exec -it elephant-0 -- psql");
    let row = typed
        .lines()
        .find(|row| row.contains('|') && !row.contains("current_user"))
        .unwrap_or_else(|| panic!("the interactive psql answered no row: {typed}"));
    let columns: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(
        columns,
        ["postgres", "t", "1"],
        "psql in the container is not the management role over the Unix socket: {typed}"
    );
    assert!(
        output_of("kubectl port-forward").contains("Forwarding from 127.0.0.1:15432"),
        "{printed:?}"
    );
    let forwarded = output_of("psql \"$DATABASE_URL&hostaddr=127.0.0.1&port=15432\"");
    assert!(
        forwarded.contains("mammoth"),
        "psql through the port-forward: {forwarded}"
    );
    assert!(
        output_of("kubectl delete pgc").contains("elephant-restored"),
        "{printed:?}"
    );
    drop(terminal);
    dev.interrupt();
}
