//! What a tenant writes into a spec or a Secret: a kubeconfig that would run a program in the
//! operator, PostgreSQL settings that would read host files or give up durability, a schedule
//! that would back up every minute, and a pod that reads other processes' environments.

use std::time::Duration;

use serde_json::json;

use crate::support::Dev;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_kubeconfig_with_an_exec_plugin_never_runs_in_the_operator() {
    let dev = Dev::start();
    let attacker = dev.tenant("attacker", true).await;
    let marker = tempfile::tempdir().expect("a directory");
    let marker = marker.path().join("ran-in-the-operator");
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "/bin/sh",
            "args": ["-c", format!("touch {}", marker.display())],
            "interactiveMode": "Never"
        }}}]
    });
    let encoded =
        serde_json::to_value(k8s_openapi::ByteString(kubeconfig.to_string().into_bytes()))
            .expect("base64");
    attacker.apply_json(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "their-cluster"},
        "data": {"kubeconfig": encoded}
    }));
    attacker.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "mallory"},
        "spec": {"displayName": "mallory", "memorySize": 1, "postgresDiskSize": 1}
    }));
    attacker.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresRemoteCluster",
        "metadata": {"name": "link"},
        "spec": {"cluster": {"name": "mallory"}, "remoteCluster": {"name": "their-cluster"}}
    }));
    let message = attacker.until("the link to be refused", Duration::from_secs(60), || {
        let link = attacker.get_json(&["pgrc", "link"]).ok_or("no link")?;
        link["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|condition| condition["type"] == "InvalidSpec" && condition["status"] == "True")
            .and_then(|condition| condition["message"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("{}", link["status"]))
    });
    assert!(message.contains("users[0].user.exec"), "{message}");
    let events = attacker.events_about("link");
    assert!(
        events.iter().any(|(type_, _, _)| type_ == "Warning"),
        "{events:?}"
    );
    // Give a careless operator every chance to have run it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !marker.exists(),
        "the operator ran the tenant's exec plugin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_reach_files_or_durability_and_minutely_schedules_are_refused() {
    let dev = Dev::start();
    let attacker = dev.tenant("attacker", true).await;
    // Each on its own: a refusal names one refused setting (naming them all would cost more
    // CEL than kube-apiserver accepts in a CRD).
    for (setting, value) in [
        ("include_dir", "/etc"),
        ("fsync", "off"),
        ("log_directory", "/var/lib"),
    ] {
        let refused = attacker
            .try_apply_json(&json!({
                "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
                "metadata": {"name": "mallory"},
                "spec": {"displayName": "mallory", "memorySize": 1, "postgresDiskSize": 1,
                         "parameters": {setting: value}}
            }))
            .expect_err("the setting is refused");
        assert!(refused.contains(setting), "{setting} not named: {refused}");
    }
    let refused = attacker
        .try_apply_json(&json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackupSchedule",
            "metadata": {"name": "every-minute"},
            "spec": {"cluster": {"name": "mallory"}, "schedule": "* * * * *"}
        }))
        .expect_err("a schedule running every minute is refused");
    assert!(refused.contains("at most once an hour"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_name_too_long_for_its_pod_is_refused_and_the_longest_allowed_runs() {
    let dev = Dev::start();
    let tenant = dev.tenant("tenant", true).await;
    let cluster = |name: &str| {
        json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": name},
            "spec": {"displayName": "long", "memorySize": 1, "postgresDiskSize": 1}
        })
    };
    // 53 characters: the pod's controller-revision-hash label would have 64.
    let too_long = format!("a{}", "b".repeat(52));
    let refused = tenant
        .try_apply_json(&cluster(&too_long))
        .expect_err("a 53-character cluster name is refused");
    assert!(
        refused.contains("at most 52 characters") && refused.contains("controller-revision-hash"),
        "{refused}"
    );
    assert!(tenant.get_json(&["pgc", &too_long]).is_none());
    // 52 characters: its StatefulSet's pod is created and PostgreSQL runs.
    let longest = format!("a{}", "b".repeat(51));
    tenant.apply_json(&cluster(&longest));
    tenant.wait_ready(&longest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_pod_reads_no_other_pods_environment() {
    if !nix::unistd::geteuid().is_root() {
        // Without root the runtime cannot give pods users of their own (docs/security.md);
        // CI and the documented setup run as root.
        eprintln!("skipped: the runtime isolates pods only when it runs as root");
        return;
    }
    let dev = Dev::start();
    let victim = dev.tenant("victim", false).await;
    victim.apply_json(&json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "elephant"},
        "spec": {"displayName": "elephant", "memorySize": 1, "postgresDiskSize": 1}
    }));
    victim.wait_ready("elephant");
    let password = dev.admin().ok(&[
        "get",
        "secret",
        "elephant-credentials",
        "-n",
        "victim",
        "-o",
        "go-template={{index .data \"password\" | base64decode}}",
    ]);
    assert!(!password.is_empty());

    // The attacker's pod reads every process environment it can and prints what it finds.
    let attacker = dev.tenant("attacker", true).await;
    let script = "import glob\n\
                  found = []\n\
                  for path in glob.glob('/proc/[0-9]*/environ'):\n\
                  \x20   try:\n\
                  \x20       found.append(open(path, 'rb').read().decode('utf-8', 'replace'))\n\
                  \x20   except OSError:\n\
                  \x20       pass\n\
                  print('READABLE', len(found))\n\
                  print('\\n'.join(found))\n";
    attacker.apply_json(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "snoop"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "snoop", "image": "python",
                                 "command": ["python3", "-c", script]}]}
    }));
    let log = attacker.until(
        "the snooping pod to finish",
        Duration::from_secs(60),
        || {
            let log = attacker.run(&["logs", "snoop"])?;
            if log.contains("READABLE") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    );
    assert!(
        !log.contains(password.trim()),
        "a tenant's pod read another tenant's password from a process environment"
    );
    assert!(
        !log.contains("TUSK_OWNER_PASSWORD"),
        "a tenant's pod read the database server's environment"
    );
}
