//! The platform under attack: `tusk dev` as a child process, the real kubectl, and tenants who
//! hold nothing but a token of a ServiceAccount in their own namespace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");

/// `tusk dev` as a child process, with what it printed kept for failure messages.
pub struct Dev {
    child: Child,
    /// The `tusk` executable it runs (which its pods' `tusk` runs too), to start it again alike.
    #[allow(dead_code)] // read by `restart`, which the tenant_isolation suite does not use
    tusk: PathBuf,
    data_dir: PathBuf,
    /// The arguments it was started with, to start it again alike.
    #[allow(dead_code)] // read by `restart`, which the tenant_isolation suite does not use
    arguments: Vec<String>,
    output: Arc<Mutex<String>>,
    _temp: tempfile::TempDir,
}

/// Starts `tusk dev` from the executable `tusk` on `data_dir`, collecting what it prints.
fn launch(tusk: &Path, data_dir: &Path, arguments: &[String]) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(tusk)
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .args(arguments)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tusk dev starts");
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut text = output.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    (child, output)
}

impl Dev {
    /// Starts `tusk dev` in a fresh data directory and installs the customer ClusterRole, as a
    /// platform team's `kubectl apply -k deploy/` does.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Dev::start`] with more arguments for `tusk dev`, such as `--backup-stall-timeout`.
    pub fn start_with(arguments: &[&str]) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("a temporary directory"),
            arguments,
        )
    }

    /// [`Dev::start_with`] with its data directory `dev` in `temp`, which the caller may have
    /// prepared.
    pub fn start_in(temp: tempfile::TempDir, arguments: &[&str]) -> Self {
        Self::start_from(Path::new(TUSK), temp, arguments)
    }

    /// [`Dev::start_in`] running the tusk executable at `executable` (a copy of the one built),
    /// which its pods' `tusk` runs too.
    pub fn start_from(executable: &Path, temp: tempfile::TempDir, arguments: &[&str]) -> Self {
        let data_dir = temp.path().join("dev");
        Self::start_at(executable, data_dir, temp, arguments)
    }

    /// [`Dev::start_in`] from the executable `tusk`, with its data directory at `data_dir`
    /// (which `temp` holds).
    pub fn start_at(
        tusk: &Path,
        data_dir: PathBuf,
        temp: tempfile::TempDir,
        arguments: &[&str],
    ) -> Self {
        let arguments: Vec<String> = arguments.iter().map(|a| (*a).to_owned()).collect();
        let (child, output) = launch(tusk, &data_dir, &arguments);
        let dev = Self {
            child,
            tusk: tusk.to_owned(),
            data_dir,
            arguments,
            output,
            _temp: temp,
        };
        dev.wait_until_running();
        dev.admin().ok(&[
            "apply",
            "-f",
            &format!("{DEPLOY}/customer-clusterrole.yaml"),
        ]);
        dev
    }

    fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.printed().contains("tusk dev is running") {
            assert!(
                Instant::now() < deadline,
                "tusk dev never started; it printed:\n{}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops `tusk dev` with Ctrl-C, as a person does, and starts it again on the same data
    /// directory; returns once it says it is running. What it printed before is forgotten.
    #[allow(dead_code)] // the tenant_isolation suite, which includes this file, never restarts
    pub fn restart(&mut self) {
        self.stop();
        self.launch_again();
    }

    /// Kills `tusk dev` outright (SIGKILL, as a crash or an OOM kill does) and starts it again
    /// on the same data directory; returns once it says it is running.
    #[allow(dead_code)] // the tenant_isolation suite, which includes this file, never crashes it
    pub fn kill_and_restart(&mut self) {
        self.child.kill().expect("tusk dev is killed");
        self.child.wait().expect("tusk dev is reaped");
        self.launch_again();
    }

    #[allow(dead_code)] // the tenant_isolation suite never starts it again
    fn launch_again(&mut self) {
        let (child, output) = launch(&self.tusk, &self.data_dir, &self.arguments);
        self.child = child;
        self.output = output;
        self.wait_until_running();
    }

    /// Ctrl-C, as a person stops it; fails unless it stops, successfully, within 90 seconds.
    #[allow(dead_code)] // the tenant_isolation suite, which includes this file, stops it on drop
    pub fn interrupt(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT is sent");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().expect("tusk dev's status") {
                assert!(
                    status.success(),
                    "tusk dev exited with {status} after Ctrl-C; it printed:\n{}",
                    self.printed()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tusk dev does not stop after Ctrl-C; it printed:\n{}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its data directory (`.tusk` in a checkout).
    #[allow(dead_code)] // not every suite that includes this file needs it
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Sends SIGINT and waits for the process to end (killing it after a minute).
    fn stop(&mut self) {
        interrupt(&mut self.child);
    }

    /// The administrator's kubeconfig, which `tusk dev` writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The embedded S3 server's directory: every bucket is a directory in it.
    pub fn s3_dir(&self) -> PathBuf {
        self.data_dir.join("s3")
    }

    /// kubectl as the platform's administrator.
    pub fn admin(&self) -> Kubectl {
        Kubectl::for_kubeconfig(self.kubeconfig(), None)
    }

    /// A kube client as the administrator.
    pub async fn admin_client(&self) -> kube::Client {
        client_from(&self.kubeconfig()).await
    }

    /// A kube client with nothing but `token`.
    pub async fn client_with_token(&self, token: &str, file: &str) -> kube::Client {
        let kubectl = self.kubectl_with_token(token, "default", file);
        client_from(&kubectl.kubeconfig).await
    }

    /// Everything `tusk dev` printed so far.
    pub fn printed(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The port of `tusk dev`'s router on 127.0.0.1, from what it printed.
    #[allow(dead_code)] // the router and tunnel tests use it, the tenant_isolation suite does not
    pub fn router_port(&self) -> u16 {
        let printed = self.printed();
        let (_, rest) = printed
            .split_once("The router listens at 127.0.0.1:")
            .unwrap_or_else(|| panic!("tusk dev names its router:\n{printed}"));
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port")
    }

    /// A project: its namespace, and a ServiceAccount `tenant` there bound to the shipped
    /// `tusk-customer` ClusterRole. With `hostile`, the token may also do anything to tusk's
    /// kinds, Secrets, ConfigMaps, Services and Pods in its namespace: the strongest tenant
    /// the threat model allows.
    pub async fn tenant(&self, namespace: &str, hostile: bool) -> Kubectl {
        let admin = self.admin();
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "tenant", "namespace": namespace}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "tenant-customer", "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "tusk-customer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "tenant",
                                 "namespace": namespace}]}),
        ];
        if hostile {
            objects.push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "hostile", "namespace": namespace},
                "rules": [
                    {"apiGroups": ["postgres.tusk.dev"], "resources": ["*"], "verbs": ["*"]},
                    {"apiGroups": [""],
                     "resources": ["secrets", "configmaps", "services", "pods", "pods/log"],
                     "verbs": ["*"]}
                ]}),
            );
            objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "hostile", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "hostile"},
                "subjects": [{"kind": "ServiceAccount", "name": "tenant",
                              "namespace": namespace}]}));
        }
        for object in objects {
            admin.apply_json(&object);
        }
        let client = self.admin_client().await;
        let token = token_of(&client, namespace, "tenant").await;
        self.kubectl_with_token(&token, namespace, &format!("tenant-{namespace}"))
    }

    /// kubectl with nothing but `token`, defaulting to `namespace`.
    pub fn kubectl_with_token(&self, token: &str, namespace: &str, file: &str) -> Kubectl {
        let mut kubeconfig: Value = serde_json::to_value(
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig"),
        )
        .expect("kubeconfig as JSON");
        for user in kubeconfig["users"].as_array_mut().expect("users") {
            user["user"] = json!({"token": token});
        }
        let path = self.data_dir.join(format!("{file}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec(&kubeconfig).expect("JSON")).expect("written");
        Kubectl {
            kubeconfig: path,
            namespace: Some(namespace.to_owned()),
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops a process as Ctrl-C does: SIGINT, then a minute to end before it is killed.
pub fn interrupt(child: &mut std::process::Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A kube client from a kubeconfig file.
async fn client_from(path: &Path) -> kube::Client {
    tusk_operator::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// A fresh token of a ServiceAccount, as anyone who can create pods with that account (or a
/// TokenRequest) can obtain it.
pub async fn token_of(admin: &kube::Client, namespace: &str, account: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = serde_json::from_value(json!({"spec": {"audiences": []}})).expect("TokenRequest");
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token is issued")
        .status
        .and_then(|status| status.token)
        .expect("a token")
}

/// The real kubectl with one kubeconfig.
pub struct Kubectl {
    kubeconfig: PathBuf,
    namespace: Option<String>,
}

impl Kubectl {
    /// kubectl with `kubeconfig`, in `namespace` when one is given.
    pub fn for_kubeconfig(kubeconfig: PathBuf, namespace: Option<String>) -> Self {
        Self {
            kubeconfig,
            namespace,
        }
    }

    /// Runs kubectl; the error carries what kubectl printed.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.run_with_input(args, None)
    }

    fn run_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Result<String, String> {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(namespace) = &self.namespace {
            command.args(["--namespace", namespace]);
        }
        command
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl runs");
        if let Some(input) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("kubectl reads its input");
        }
        let output = child.wait_with_output().expect("kubectl ends");
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

    /// Runs kubectl and fails the test if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// `kubectl apply -f -` of one object.
    pub fn apply_json(&self, object: &Value) -> String {
        self.try_apply_json(object)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// `kubectl apply -f -` of one object, which may be refused.
    pub fn try_apply_json(&self, object: &Value) -> Result<String, String> {
        let body = serde_json::to_vec(object).expect("JSON");
        self.run_with_input(&["apply", "-f", "-"], Some(&body))
    }

    /// `kubectl get ... -o json`, or `None` when it fails (not found, forbidden).
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        self.run(&all)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    }

    /// The Events about one object, as `(type, reason, note)`.
    pub fn events_about(&self, name: &str) -> Vec<(String, String, String)> {
        self.events_regarding(&format!("regarding.name={name}"))
    }

    /// The Events matching a field selector on `regarding.*`, as `(type, reason, note)`.
    pub fn events_regarding(&self, selector: &str) -> Vec<(String, String, String)> {
        let Some(list) = self.get_json(&["events.events.k8s.io", "--field-selector", selector])
        else {
            return Vec::new();
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| {
                let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
                (text("type"), text("reason"), text("note"))
            })
            .collect()
    }

    /// Polls `probe` until it returns `Ok`; on timeout, fails with what was seen last.
    pub fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match probe() {
                Ok(value) => return value,
                Err(seen) if Instant::now() >= deadline => {
                    panic!("waited {limit:?} for {what}; instead saw: {seen}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Waits for a PostgresCluster to be Ready.
    pub fn wait_ready(&self, cluster: &str) {
        self.until(
            &format!("PostgresCluster {cluster} to become Ready"),
            Duration::from_secs(120),
            || {
                let phase = self.run(&[
                    "get",
                    "postgrescluster",
                    cluster,
                    "-o",
                    "jsonpath={.status.phase}",
                ])?;
                (phase == "Ready").then_some(()).ok_or(phase)
            },
        );
    }

    /// Creates a backup request and waits for it to end; returns its final phase and message.
    pub fn backup(&self, cluster: &str, request: &str) -> (String, String) {
        self.apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupRequest",
            "metadata": {"name": request}, "spec": {"cluster": {"name": cluster}}
        }));
        self.outcome_of(request)
    }

    /// Waits for a backup request to end; returns its final phase and message.
    pub fn outcome_of(&self, request: &str) -> (String, String) {
        self.until(
            &format!("backup request {request} to end"),
            Duration::from_secs(120),
            || {
                let status = self
                    .get_json(&["pgbr", request])
                    .map(|request| request["status"].clone())
                    .ok_or("no request")?;
                match status["phase"].as_str() {
                    Some(phase @ ("Succeeded" | "Failed")) => Ok((
                        phase.to_owned(),
                        status["message"].as_str().unwrap_or_default().to_owned(),
                    )),
                    other => Err(format!("phase {other:?}")),
                }
            },
        )
    }
}

/// Every regular file below `dir`, except the S3 server's own metadata.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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
