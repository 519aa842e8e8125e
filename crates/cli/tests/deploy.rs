//! The install manifests in deploy/: they render with the real `kubectl kustomize`, hold what
//! an installation needs, and pass the security policy (no root, no privilege, limits on
//! every container, no Secret values in plain text). The backup Jobs' rules in deploy/ are
//! the ones the operator grants. And deploy/ installs on the target cluster (a real one with
//! `TUSK_E2E_KUBECONFIG`, docs/testing.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use target_cluster::{DEPLOY_IMAGE, TargetCluster};

// Shared with the tenant_isolation suite, whose helpers this test does not all need.
#[allow(dead_code)]
#[path = "tenant_isolation/support.rs"]
mod support;
#[path = "shared/target_cluster.rs"]
mod target_cluster;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `kubectl kustomize deploy/`, as YAML.
fn rendered_text() -> String {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join("deploy"))
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `kubectl kustomize deploy/`, one JSON value per rendered object.
fn rendered() -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&rendered_text())
        .map(|document| serde::Deserialize::deserialize(document).expect("a YAML object"))
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn kind_and_name(object: &Value) -> (String, String) {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("/kind"), text("/metadata/name"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_and_name(o) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("deploy/ renders no {kind} {name}"))
}

/// The pod spec of a workload object, if it runs pods.
fn pod_spec(object: &Value) -> Option<&Value> {
    match object.get("kind")?.as_str()? {
        "Pod" => object.get("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer("/spec/template/spec")
        }
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// Every way a pod spec breaks the policy, described.
fn policy_violations(pod: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    let pod_context = pod.get("securityContext");
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|field| pod.get(*field)?.as_array())
        .flatten();
    for container in containers {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
        let context = container.get("securityContext");
        // A container's own setting wins over the pod's.
        let setting = |field: &str| {
            context
                .and_then(|c| c.get(field))
                .or_else(|| pod_context.and_then(|c| c.get(field)))
        };
        if setting("runAsNonRoot") != Some(&Value::Bool(true)) {
            violations.push(format!("{name}: runAsNonRoot is not true"));
        }
        match setting("runAsUser").and_then(Value::as_i64) {
            Some(0) => violations.push(format!("{name}: runs as uid 0")),
            Some(_) => {}
            None => violations.push(format!("{name}: no runAsUser")),
        }
        if context.and_then(|c| c.get("privileged")) == Some(&Value::Bool(true)) {
            violations.push(format!("{name}: privileged"));
        }
        if context.and_then(|c| c.get("allowPrivilegeEscalation")) != Some(&Value::Bool(false)) {
            violations.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        for resource in ["cpu", "memory"] {
            if container
                .pointer(&format!("/resources/limits/{resource}"))
                .is_none()
            {
                violations.push(format!("{name}: no {resource} limit"));
            }
        }
    }
    violations
}

#[test]
fn deploy_renders_everything_an_installation_needs() {
    let objects = rendered();
    find(&objects, "Namespace", "tusk-system");
    for plural in [
        "postgresclusters",
        "postgresbackuprequests",
        "postgresbackups",
        "postgresbackupschedules",
        "postgresremoteclusters",
        "postgresrestoretests",
    ] {
        find(
            &objects,
            "CustomResourceDefinition",
            &format!("{plural}.postgres.tusk.dev"),
        );
    }
    find(&objects, "ServiceAccount", "tusk-operator");
    find(&objects, "ClusterRole", "tusk-operator");
    find(&objects, "ClusterRole", "tusk-backup-job");
    find(&objects, "ClusterRole", "tusk-restore-check-job");
    let binding = find(&objects, "ClusterRoleBinding", "tusk-operator");
    assert_eq!(
        binding.pointer("/subjects/0/namespace"),
        Some(&Value::from("tusk-system"))
    );
    find(&objects, "Role", "tusk-operator-leader-election");
    find(&objects, "RoleBinding", "tusk-operator-leader-election");
    find(&objects, "Role", "tusk-operator-ca");
    find(&objects, "RoleBinding", "tusk-operator-ca");
    find(&objects, "ConfigMap", "tusk-operator");
    find(&objects, "Service", "tusk-operator-metrics");
    find(&objects, "NetworkPolicy", "tusk-operator");
    let deployment = find(&objects, "Deployment", "tusk-operator");
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&Value::from(2)));
    let container = deployment
        .pointer("/spec/template/spec/containers/0")
        .expect("a container");
    assert!(container.get("livenessProbe").is_some());
    assert!(container.get("readinessProbe").is_some());
    assert_eq!(
        deployment.pointer("/spec/template/spec/serviceAccountName"),
        Some(&Value::from("tusk-operator"))
    );
}

#[test]
fn the_configuration_in_deploy_is_accepted_by_the_operator() {
    let objects = rendered();
    let config_map = find(&objects, "ConfigMap", "tusk-operator");
    let text = config_map
        .pointer("/data/config.yaml")
        .and_then(Value::as_str)
        .expect("config.yaml");
    let config = tusk_operator::config::OperatorConfig::from_yaml(text).expect("valid config");
    assert!(config.leader_election.enabled);
    assert_eq!(config.leader_election.lease_namespace, "tusk-system");
}

#[test]
fn no_container_runs_as_root_or_privileged_or_without_limits() {
    let objects = rendered();
    let mut checked = 0;
    for object in &objects {
        if let Some(pod) = pod_spec(object) {
            checked += 1;
            let violations = policy_violations(pod);
            assert!(
                violations.is_empty(),
                "{:?} breaks the policy: {violations:?}",
                kind_and_name(object)
            );
        }
    }
    assert!(checked > 0, "deploy/ renders no workload");
}

#[test]
fn the_policy_check_catches_what_it_forbids() {
    let compliant = serde_json::json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 999},
        "containers": [{
            "name": "ok",
            "securityContext": {"allowPrivilegeEscalation": false},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        }],
    });
    assert!(policy_violations(&compliant).is_empty());
    let root = serde_json::json!({
        "containers": [{
            "name": "bad",
            "securityContext": {"privileged": true, "runAsUser": 0},
            "resources": {"limits": {"cpu": "1"}},
        }],
    });
    let violations = policy_violations(&root);
    for expected in [
        "bad: runAsNonRoot is not true",
        "bad: runs as uid 0",
        "bad: privileged",
        "bad: allowPrivilegeEscalation is not false",
        "bad: no memory limit",
    ] {
        assert!(
            violations.iter().any(|v| v == expected),
            "{expected} not reported in {violations:?}"
        );
    }
}

#[test]
fn no_secret_value_is_written_in_deploy() {
    let objects = rendered();
    for object in objects.iter().filter(|o| o["kind"] == "Secret") {
        for field in ["data", "stringData"] {
            let values = object.get(field).and_then(Value::as_object);
            assert!(
                values.is_none_or(|v| v.is_empty()),
                "Secret {:?} holds values in {field}",
                kind_and_name(object)
            );
        }
    }
}

#[test]
fn the_backup_job_rules_in_deploy_are_the_ones_the_operator_grants() {
    let objects = rendered();
    let shipped = find(&objects, "ClusterRole", "tusk-backup-job")
        .get("rules")
        .cloned()
        .expect("rules");
    let rules = tusk_operator::controllers::backup_request::build::backup_job_rules();
    let granted = serde_json::to_value(rules).expect("JSON");
    assert_eq!(shipped, granted);
}

#[test]
fn the_restore_check_job_rules_in_deploy_are_the_ones_the_operator_grants() {
    let objects = rendered();
    let shipped = find(&objects, "ClusterRole", "tusk-restore-check-job")
        .get("rules")
        .cloned()
        .expect("rules");
    let rules = tusk_operator::controllers::restore_test::build::check_job_rules();
    let granted = serde_json::to_value(rules).expect("JSON");
    assert_eq!(shipped, granted);
}

mod in_a_cluster {
    //! The RBAC in deploy/ exercised: `kubectl apply -k deploy/` on a sandbox, then the real
    //! operator acting as its ServiceAccount takes examples/elephant.yaml through its children,
    //! a backup request's Job and deletion without one refused request, and the backup Jobs'
    //! token can do its job and nothing more.

    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
    use kube::Client;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use serde_json::{Value, json};
    use tusk_api::{PostgresBackupRequest, PostgresBackupSchedule, PostgresCluster};
    use tusk_operator::RunOptions;
    use tusk_sandbox::Sandbox;
    use tusk_sandbox::s3::{S3Options, S3Server};

    const NS: &str = "shop";

    /// Every log line of the process, to look for refused requests in.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    /// Polls `probe` until it returns `Some`, for at most 60 seconds; on timeout the
    /// operator's logs say why.
    async fn eventually<T, F, Fut>(logs: &Logs, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}; the logs:\n{}",
                logs.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kubectl(sandbox: &Sandbox, args: &[&str]) -> String {
        let output = std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", sandbox.kubeconfig_path())
            .current_dir(super::workspace_root())
            .output()
            .expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A client that authenticates with a fresh token of the ServiceAccount.
    async fn client_as(sandbox: &Sandbox, admin: &Client, namespace: &str, name: &str) -> Client {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let request = serde_json::from_value(json!({"spec": {"audiences": []}})).expect("request");
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("token issued")
            .status
            .and_then(|status| status.token)
            .expect("a token");
        let mut kubeconfig =
            kube::config::Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig");
        for user in &mut kubeconfig.auth_infos {
            if let Some(auth) = user.auth_info.as_mut() {
                auth.token = Some(token.clone().into());
            }
        }
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        config.default_namespace = namespace.to_string();
        Client::try_from(config).expect("client")
    }

    fn status_code(error: kube::Error) -> u16 {
        match error {
            kube::Error::Api(status) => status.code,
            other => panic!("expected an API error, got {other}"),
        }
    }

    fn yaml_file(path: &str) -> Value {
        let text = std::fs::read_to_string(super::workspace_root().join(path)).expect("file");
        serde_yaml_ng::from_str(&text).expect("YAML")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_operator_needs_nothing_beyond_its_shipped_roles() {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            // kube-runtime warns of a watch refused with 403; the operator logs its errors.
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        tusk_operator::install_crypto_provider();
        let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
        let admin = sandbox.client().await.expect("admin client");
        kubectl(&sandbox, &["apply", "-k", "deploy/"]);
        let clusters: Api<PostgresCluster> = Api::namespaced(admin.clone(), NS);
        eventually(&logs, "the CRDs are served", || async {
            clusters.list(&ListParams::default()).await.ok()
        })
        .await;

        let dir = tempfile::tempdir().expect("temp dir");
        let s3 = S3Server::start(dir.path().join("s3"), S3Options::default())
            .await
            .expect("S3 starts");
        s3.create_bucket("tusk-backups").expect("bucket");
        // The sandbox keeps `stringData` as written, so the keys go in `data`.
        let store_keys = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("tusk-backup-store".into()),
                ..Default::default()
            },
            data: Some(
                [
                    ("access-key-id", s3.access_key()),
                    ("secret-access-key", s3.secret_key()),
                ]
                .into_iter()
                .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(admin.clone(), "tusk-system")
            .create(&PostParams::default(), &store_keys)
            .await
            .expect("store Secret created");

        // The configuration shipped in deploy/, pointed at the embedded S3.
        let shipped = yaml_file("deploy/configmap.yaml");
        let mut config = tusk_operator::config::OperatorConfig::from_yaml(
            shipped["data"]["config.yaml"]
                .as_str()
                .expect("config.yaml"),
        )
        .expect("shipped configuration");
        config.store.url = "s3://tusk-backups/prod".into();
        config.store.endpoint = Some(s3.endpoint().to_string());
        config.store.allow_http = true;
        config.http_address = "127.0.0.1:0".parse().expect("address");

        let operator_client = client_as(&sandbox, &admin, "tusk-system", "tusk-operator").await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(tusk_operator::run_with(
            config,
            operator_client,
            RunOptions {
                identity: "tusk-operator-0".into(),
                ..RunOptions::default()
            },
            async move {
                let _ = stopped.await;
            },
        ));

        let namespace =
            serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
        Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");
        kubectl(
            &sandbox,
            &["-n", NS, "apply", "-f", "examples/elephant.yaml"],
        );
        let selector = "postgres.tusk.dev/cluster=elephant";
        let in_shop = |what: &'static str| {
            let admin = admin.clone();
            async move {
                let listed = match what {
                    "statefulsets" => Api::<StatefulSet>::namespaced(admin, NS)
                        .list(&ListParams::default().labels(selector))
                        .await
                        .map(|l| l.items.len()),
                    "services" => Api::<Service>::namespaced(admin, NS)
                        .list(&ListParams::default().labels(selector))
                        .await
                        .map(|l| l.items.len()),
                    "configmaps" => Api::<ConfigMap>::namespaced(admin, NS)
                        .list(&ListParams::default().labels(selector))
                        .await
                        .map(|l| l.items.len()),
                    "secrets" => Api::<Secret>::namespaced(admin, NS)
                        .list(&ListParams::default().labels(selector))
                        .await
                        .map(|l| l.items.len()),
                    _ => Api::<PostgresBackupSchedule>::namespaced(admin, NS)
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items.len()),
                };
                listed.ok().filter(|count| *count > 0)
            }
        };
        for kind in [
            "statefulsets",
            "services",
            "configmaps",
            "secrets",
            "schedules",
        ] {
            eventually(&logs, kind, || in_shop(kind)).await;
        }

        // A backup request gets its Job, run as the tusk-backup ServiceAccount.
        kubectl(
            &sandbox,
            &["-n", NS, "apply", "-f", "examples/my-backup.yaml"],
        );
        let requests: Api<PostgresBackupRequest> = Api::namespaced(admin.clone(), NS);
        let job_name = eventually(&logs, "the backup Job is started", || async {
            let request = requests.get("my-backup").await.ok()?;
            let status = serde_json::to_value(request.status?).ok()?;
            status.get("jobName")?.as_str().map(str::to_string)
        })
        .await;
        let job = Api::<Job>::namespaced(admin.clone(), NS)
            .get(&job_name)
            .await
            .expect("the Job exists");
        let pod_spec = job.spec.and_then(|s| s.template.spec).expect("pod spec");
        assert_eq!(
            pod_spec.service_account_name.as_deref(),
            Some("my-backup-backup")
        );

        // The Job's token: its own request's status, and nothing else.
        let job_client = client_as(&sandbox, &admin, NS, "my-backup-backup").await;
        let own_requests: Api<PostgresBackupRequest> = Api::namespaced(job_client.clone(), NS);
        own_requests
            .get("my-backup")
            .await
            .expect("reads its request");
        let reported = own_requests
            .patch_status(
                "my-backup",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"message": "copying the data directory"}})),
            )
            .await
            .expect("reports on its request");
        assert_eq!(
            reported.status.and_then(|s| s.message).as_deref(),
            Some("copying the data directory")
        );
        let other_secrets: Api<Secret> = Api::namespaced(job_client.clone(), "tusk-system");
        assert_eq!(
            status_code(
                other_secrets
                    .get("tusk-backup-store")
                    .await
                    .expect_err("not its Secret")
            ),
            403
        );
        let job_clusters: Api<PostgresCluster> = Api::namespaced(job_client, NS);
        assert_eq!(
            status_code(
                job_clusters
                    .delete("elephant", &DeleteParams::default())
                    .await
                    .expect_err("not its to delete")
            ),
            403
        );

        // The cluster's CA is kept in the operator's namespace, named after the cluster's uid.
        let uid = clusters
            .get("elephant")
            .await
            .expect("the cluster")
            .metadata
            .uid
            .expect("a uid");
        let operator_secrets: Api<Secret> = Api::namespaced(admin.clone(), "tusk-system");
        let ca_secret = format!("tusk-ca-{uid}");
        eventually(&logs, "the cluster's CA", || async {
            operator_secrets.get_opt(&ca_secret).await.ok()?
        })
        .await;

        // Deletion takes everything along, the CA in the operator's namespace too.
        clusters
            .delete("elephant", &DeleteParams::default())
            .await
            .expect("deleted");
        eventually(&logs, "the cluster's CA is gone", || async {
            operator_secrets
                .get_opt(&ca_secret)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        eventually(&logs, "elephant and its children are gone", || async {
            let cluster_gone = clusters.get_opt("elephant").await.ok()?.is_none();
            let children = Api::<StatefulSet>::namespaced(admin.clone(), NS)
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?
                .items
                .len()
                + requests
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .len();
            (cluster_gone && children == 0).then_some(())
        })
        .await;

        let _ = stop.send(());
        operator
            .await
            .expect("operator task")
            .expect("the operator stops cleanly");
        let text = logs.text();
        assert!(
            text.contains("tusk-operator-0"),
            "the operator's logs were not captured"
        );
        let refused: Vec<&str> = text
            .lines()
            // A 403 Status always says "Forbidden" or "is forbidden".
            .filter(|line| line.to_lowercase().contains("forbidden"))
            .collect();
        assert!(refused.is_empty(), "refused requests: {refused:#?}");
    }
}

/// The namespace deploy/ installs into, which the test's own namespace replaces.
const DEPLOY_NAMESPACE: &str = "tusk-system";

/// `kubectl kustomize deploy/`, moved into `namespace` and given `image`: every mention of
/// deploy/'s namespace and image is replaced, those in the operator's configuration file
/// included.
fn rendered_for(namespace: &str, image: &str) -> String {
    rendered_text()
        .replace(DEPLOY_NAMESPACE, namespace)
        .replace(DEPLOY_IMAGE, image)
}

/// The cluster-scoped objects of a rendering, as `kind/name` for kubectl.
fn cluster_scoped(text: &str) -> Vec<String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|document| {
            let object: Value = serde::Deserialize::deserialize(document).ok()?;
            let kind = object.get("kind")?.as_str()?;
            let name = object.pointer("/metadata/name")?.as_str()?;
            let cluster_wide = matches!(
                kind,
                "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
            );
            cluster_wide.then(|| format!("{}/{name}", kind.to_lowercase()))
        })
        .collect()
}

/// Deletes, when the test ends, the cluster-scoped objects the installation created (the
/// namespace goes with the target).
struct Installed {
    target_kubectl: support::Kubectl,
    objects: Vec<String>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for object in &self.objects {
            let _ =
                self.target_kubectl
                    .run(&["delete", object, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// deploy/ installed on the target cluster (shared/target_cluster.rs): a real one when
/// `TUSK_E2E_KUBECONFIG` names it, a sandbox of the test's own otherwise, by the same steps.
/// The manifests are moved into the test's fresh namespace and given the image
/// `TUSK_E2E_IMAGE` names; the API server must accept every object, serve the CRDs, and apply
/// their validation to a PostgresCluster.
#[test]
fn deploy_installs_on_the_target_cluster() {
    let target = TargetCluster::start();
    let namespace = target.namespace().to_string();
    let image = target.image();
    let text = rendered_for(&namespace, &image);
    let cluster = target.cluster_kubectl();
    let kubectl = target.kubectl();

    // An installation already there would be overwritten, and removed afterwards.
    let objects = cluster_scoped(&text);
    let present: Vec<&String> = objects
        .iter()
        .filter(|object| cluster.run(&["get", object]).is_ok())
        .collect();
    assert!(
        present.is_empty(),
        "tusk is already installed on the target cluster ({present:?}); run the end-to-end tests on a cluster without it"
    );
    let temp = tempfile::tempdir().expect("a temporary directory");
    let manifest = temp.path().join("deploy.yaml");
    std::fs::write(&manifest, &text).expect("the manifest is written");
    let _installed = Installed {
        target_kubectl: target.cluster_kubectl(),
        objects: objects.clone(),
    };

    // The real namespace object is the target's, already there: apply the rest over it.
    let applied = cluster.ok(&[
        "apply",
        "--server-side",
        "--field-manager=tusk-e2e",
        "-f",
        &manifest.to_string_lossy(),
    ]);
    for object in &objects {
        assert!(
            applied.contains(object.split('/').nth(1).unwrap_or_default()),
            "{object} is not in kubectl's answer:\n{applied}"
        );
    }
    cluster.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/postgresclusters.postgres.tusk.dev",
    ]);

    // The workloads landed in the test's namespace, with the image asked for.
    let deployment: Value =
        serde_json::from_str(&kubectl.ok(&["get", "deployment", "tusk-operator", "-o", "json"]))
            .expect("JSON");
    assert_eq!(
        deployment.pointer("/spec/template/spec/containers/0/image"),
        Some(&Value::from(image.as_str()))
    );
    let binding: Value = serde_json::from_str(&cluster.ok(&[
        "get",
        "clusterrolebinding",
        "tusk-operator",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(
        binding.pointer("/subjects/0/namespace"),
        Some(&Value::from(namespace.as_str()))
    );

    // The served CRD validates as written: the example is accepted, a forbidden parameter is
    // refused with the CRD's message. The CRD may take a moment to be served everywhere.
    let example = workspace_root().join("examples/elephant.yaml");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let accepted = loop {
        match kubectl.run(&[
            "apply",
            "--dry-run=server",
            "-f",
            &example.to_string_lossy(),
        ]) {
            Ok(answer) => break answer,
            Err(error) if std::time::Instant::now() >= deadline => panic!("{error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert!(
        accepted.contains("postgrescluster.postgres.tusk.dev/elephant created (server dry run)"),
        "{accepted}"
    );
    let forbidden = temp.path().join("forbidden.yaml");
    std::fs::write(
        &forbidden,
        "apiVersion: postgres.tusk.dev/v1\nkind: PostgresCluster\nmetadata:\n  name: rogue\nspec:\n  memorySize: 2\n  postgresDiskSize: 1\n  parameters:\n    archive_command: \"sh -c 'id'\"\n",
    )
    .expect("written");
    let refused = kubectl
        .run(&[
            "apply",
            "--dry-run=server",
            "-f",
            &forbidden.to_string_lossy(),
        ])
        .expect_err("a forbidden parameter is refused");
    assert!(
        refused.contains("parameters may not set archive_command"),
        "{refused}"
    );
}
