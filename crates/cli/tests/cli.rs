//! The `tusk` binary's surface: version, help, `tusk crds`, and honest failure of commands that
//! are not built yet.

use std::process::{Command, Output};

fn tusk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .output()
        .expect("tusk runs")
}

#[test]
fn version_names_the_binary_and_the_crate_version() {
    let output = tusk(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("tusk {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_command_the_architecture_names() {
    let output = tusk(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "operator",
        "backup",
        "restore",
        "wal-push",
        "wal-fetch",
        "instance",
        "tunnel",
        "router",
        "crds",
        "dev",
        "sandbox",
    ] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "`tusk --help` does not list {command}:\n{help}"
        );
    }
    let backup_help = String::from_utf8_lossy(&tusk(&["backup", "--help"]).stdout).into_owned();
    for command in ["run", "decrypt", "download"] {
        assert!(backup_help.contains(command), "{backup_help}");
    }
}

#[test]
fn crds_prints_the_six_definitions_that_deploy_crds_holds() {
    let output = tusk(&["crds"]);
    assert!(output.status.success());
    let stream = String::from_utf8(output.stdout).expect("YAML is UTF-8");
    assert_eq!(stream, tusk_api::crds_yaml().expect("CRDs render"));
    let names: Vec<String> = stream
        .split("---\n")
        .filter(|document| !document.trim().is_empty())
        .map(|document| {
            let crd: serde_yaml_ng::Value = serde_yaml_ng::from_str(document).expect("valid YAML");
            crd["metadata"]["name"].as_str().expect("named").to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "postgresclusters.postgres.tusk.dev",
            "postgresremoteclusters.postgres.tusk.dev",
            "postgresbackuprequests.postgres.tusk.dev",
            "postgresbackups.postgres.tusk.dev",
            "postgresbackupschedules.postgres.tusk.dev",
            "postgresrestoretests.postgres.tusk.dev",
        ]
    );
}

#[test]
fn crds_output_dir_writes_one_file_per_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = tusk(&[
        "crds",
        "--output-dir",
        dir.path().to_str().expect("UTF-8 path"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("listable")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    assert!(files.contains(&"postgresclusters.postgres.tusk.dev.yaml".to_owned()));
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let output = tusk(&["frobnicate"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage"));
}

#[test]
fn tusk_dev_names_a_data_directory_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_directory = dir.path().join("taken");
    std::fs::write(&not_a_directory, "a file, not a directory").unwrap();
    let output = tusk(&["dev", "--data-dir", not_a_directory.to_str().unwrap()]);
    assert!(
        !output.status.success(),
        "`tusk dev` started on a file as its data directory"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot create {}", not_a_directory.display())),
        "{stderr}"
    );
}
