//! The operator guide in docs/ is checked against the code: every configuration key and
//! `TUSK_*` variable the operator reads is documented, and every `sh` example is run, page by
//! page, against a sandbox API server with the real kubectl and the real `tusk` binary.

#[path = "../../backup/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{Postgres, S3};
use tusk_backup::{BackupOptions, Compression, Progress, WalMode, run_backup};

const PASSPHRASE: &str = "docs example passphrase";

/// The pages with examples, in the order a reader follows them: installing first, since the
/// others use what it creates.
const PAGES_BEFORE_BACKUP: &[&str] = &[
    "installing.md",
    "configuration.md",
    "object-stores.md",
    "troubleshooting.md",
    "metrics.md",
];
/// Pages that need a backup to exist.
const PAGES_WITH_BACKUP: &[&str] = &["restore-outside-kubernetes.md", "deletion.md"];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn read_doc(page: &str) -> String {
    let path = workspace_root().join("docs").join(page);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The contents of the page's fenced blocks whose info string is `sh`.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == "sh" => current = Some(String::new()),
            (None, Some(_)) => current = Some("\u{0}".to_string()),
            (Some(block), Some(_)) => {
                if !block.starts_with('\u{0}') {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), None) => {
                if !block.starts_with('\u{0}') {
                    block.push_str(line);
                    block.push('\n');
                }
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The key paths of the configuration file, read from the structs of the operator's
/// config.rs: `pub field: Type` lines, camelCased, nested where Type is another struct there.
fn configuration_keys(source: &str) -> Vec<String> {
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            structs.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if line.starts_with('}') {
            current = None;
        } else if let (Some(name), Some(field)) = (&current, line.strip_prefix("    pub ")) {
            let (field, field_type) = field.split_once(':').expect("a typed field");
            structs.get_mut(name).expect("open struct").push((
                camel_case(field.trim()),
                field_type.trim().trim_end_matches(',').to_string(),
            ));
        }
    }
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        for (field, field_type) in &structs[name] {
            let path = format!("{prefix}{field}");
            let inner = field_type
                .strip_prefix("Option<")
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(field_type);
            if structs.contains_key(inner) {
                walk(structs, inner, &format!("{path}."), out);
            } else {
                out.push(path);
            }
        }
    }
    let mut keys = Vec::new();
    walk(&structs, "OperatorConfig", "", &mut keys);
    keys
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn tusk_variables(source: &str) -> Vec<String> {
    let mut variables: Vec<String> = source
        .match_indices("TUSK_")
        .map(|(start, _)| {
            source[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        // `TUSK_*` in prose is not a variable.
        .filter(|name| name.len() > "TUSK_".len())
        .collect();
    variables.sort();
    variables.dedup();
    variables
}

#[test]
fn every_configuration_key_and_variable_is_documented() {
    let root = workspace_root();
    let config =
        std::fs::read_to_string(root.join("crates/operator/src/config.rs")).expect("config.rs");
    let flags = std::fs::read_to_string(root.join("crates/cli/src/commands/operator.rs"))
        .expect("operator.rs");
    let documented = read_doc("configuration.md");
    let keys = configuration_keys(&config);
    // The parser found the file's sections; an empty list would make this test vacuous.
    for expected in [
        "store.url",
        "store.credentials.name",
        "leaderElection.leaseDuration",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{expected} not found in {keys:?}"
        );
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !documented.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented configuration keys: {missing:?}"
    );
    let variables = tusk_variables(&format!("{config}\n{flags}"));
    assert!(variables.len() >= 10, "{variables:?}");
    let missing: Vec<&String> = variables
        .iter()
        .filter(|variable| !documented.contains(&format!("`{variable}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented variables: {missing:?}");
}

#[test]
fn every_page_with_examples_is_run() {
    let run: Vec<&str> = PAGES_BEFORE_BACKUP
        .iter()
        .chain(PAGES_WITH_BACKUP)
        .copied()
        .collect();
    for entry in std::fs::read_dir(workspace_root().join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        let page = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if page.ends_with(".md") && !shell_blocks(&read_doc(page)).is_empty() {
            assert!(
                run.contains(&page),
                "the examples of docs/{page} are never run"
            );
        }
    }
}

/// Runs one page's `sh` blocks in one shell, so that later blocks see earlier variables.
fn run_page(page: &str, dir: &Path, env: &[(String, String)]) {
    let script = shell_blocks(&read_doc(page)).join("\n");
    let output = Command::new("bash")
        .args(["-e", "-u", "-o", "pipefail", "-c", &script])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "the examples of docs/{page} failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What the operator would have made for one finished backup of `elephant`: the encrypted
/// object in the store, its PostgresBackup, and the passphrase Secret.
async fn backup_of_elephant(client: &kube::Client, s3: &S3) -> Vec<u8> {
    let source = Postgres::init(&[]);
    let store = s3.store("");
    let key = "production/default/elephant/base/20261123T225000Z.tar.gz.dare";
    run_backup(
        &source.connection(),
        &store,
        key,
        &BackupOptions {
            compression: Compression::Gzip { level: 1 },
            passphrase: PASSPHRASE.as_bytes().to_vec(),
            wal: WalMode::Include,
            label: "docs".into(),
            pg_basebackup: None,
        },
        Arc::new(Progress::default()),
    )
    .await
    .expect("backup taken");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    // The sandbox keeps `stringData` as written, so the passphrase goes in `data`.
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("elephant-backup-passphrase".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "passphrase".to_string(),
            k8s_openapi::ByteString(PASSPHRASE.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    let gvk = GroupVersionKind::gvk("postgres.tusk.dev", "v1", "PostgresBackup");
    let backups: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "postgresbackups"),
    );
    let backup = serde_json::from_value(json!({
        "apiVersion": "postgres.tusk.dev/v1",
        "kind": "PostgresBackup",
        "metadata": {"name": "elephant-20261123-225000", "labels": {"postgres.tusk.dev/cluster": "elephant"}},
        "spec": {
            "cluster": {"name": "elephant"},
            "displayName": "elephant 2026-11-23 22:50",
            "encryption": {"passphraseSecretRef": {"name": "elephant-backup-passphrase", "key": "passphrase"}},
            "s3": {"bucket": s3.bucket, "endpoint": s3.server.endpoint(), "path": key},
            "size": 1,
        },
    }))
    .expect("backup object");
    backups
        .create(&PostParams::default(), &backup)
        .await
        .expect("PostgresBackup created");
    object_store::ObjectStoreExt::get(
        store.object_store().as_ref(),
        &object_store::path::Path::from(key),
    )
    .await
    .expect("object")
    .bytes()
    .await
    .expect("bytes")
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_in_the_docs_runs() {
    let sandbox = tusk_sandbox::Sandbox::builder()
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let s3 = S3::start().await;
    // The examples' working directory: the repository's deploy/ and examples/, and room for
    // the files the examples write.
    let dir = tempfile::tempdir().expect("work dir");
    let root = workspace_root();
    for linked in ["deploy", "examples"] {
        std::os::unix::fs::symlink(root.join(linked), dir.path().join(linked)).expect("link");
    }
    let tusk_dir = Path::new(env!("CARGO_BIN_EXE_tusk"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        tusk_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = vec![
        ("PATH".to_string(), path),
        (
            "KUBECONFIG".to_string(),
            sandbox.kubeconfig_path().display().to_string(),
        ),
        ("HOME".to_string(), dir.path().display().to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ];
    for page in PAGES_BEFORE_BACKUP {
        run_page(page, dir.path(), &env);
    }
    let object = backup_of_elephant(&client, &s3).await;
    std::fs::write(dir.path().join("backup.dare"), object).expect("object file");
    env.extend(
        s3.env("")
            .into_iter()
            .filter(|(name, _)| name != "TUSK_STORE_URL"),
    );
    for page in PAGES_WITH_BACKUP {
        run_page(page, dir.path(), &env);
    }
    // The deletion page's example retained the backup.
    let gvk = GroupVersionKind::gvk("postgres.tusk.dev", "v1", "PostgresBackup");
    let backups: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "postgresbackups"),
    );
    let retained = backups
        .get("elephant-20261123-225000")
        .await
        .expect("backup");
    assert_eq!(retained.data["spec"]["deletionPolicy"], "Retain");
    sandbox.shutdown().await;
}
