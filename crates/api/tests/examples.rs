//! Every manifest in examples/ is a valid instance of our Rust types, and nothing in it is lost
//! when it passes through them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tusk_api::{
    PostgresBackup, PostgresBackupRequest, PostgresBackupSchedule, PostgresCluster,
    PostgresRemoteCluster,
};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            found.extend(manifests(&path));
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Whether everything in `original` is also in `round_tripped`, with the same value. The round
/// trip may add fields (defaults the types spell out), but it must never drop or change one.
fn missing_from(original: &Value, round_tripped: &Value, path: &str) -> Vec<String> {
    match (original, round_tripped) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .flat_map(|(key, value)| match have.get(key) {
                Some(got) => missing_from(value, got, &format!("{path}.{key}")),
                None => vec![format!("{path}.{key}")],
            })
            .collect(),
        (want, have) if want == have => Vec::new(),
        _ => vec![format!("{path} (was {original}, became {round_tripped})")],
    }
}

fn round_trip<K: DeserializeOwned + Serialize>(document: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(document.clone()).map_err(|error| error.to_string())?;
    serde_json::to_value(&typed).map_err(|error| error.to_string())
}

#[test]
fn every_example_round_trips_through_the_rust_types_without_losing_a_field() {
    let files = manifests(&examples_dir());
    assert!(
        files.len() >= 4,
        "expected the seed manifests in examples/, found {files:?}"
    );
    let mut kinds_seen = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example is readable");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let document: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|error| panic!("{} is not YAML: {error}", file.display()));
            assert_eq!(
                document["apiVersion"],
                "postgres.tusk.dev/v1",
                "{} uses the wrong group",
                file.display()
            );
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            let result = match kind.as_str() {
                "PostgresCluster" => round_trip::<PostgresCluster>(&document),
                "PostgresRemoteCluster" => round_trip::<PostgresRemoteCluster>(&document),
                "PostgresBackupRequest" => round_trip::<PostgresBackupRequest>(&document),
                "PostgresBackup" => round_trip::<PostgresBackup>(&document),
                "PostgresBackupSchedule" => round_trip::<PostgresBackupSchedule>(&document),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            };
            let round_tripped = result.unwrap_or_else(|error| {
                panic!("{} does not deserialize as {kind}: {error}", file.display())
            });
            let lost = missing_from(&document, &round_tripped, "");
            assert!(
                lost.is_empty(),
                "{}: the round trip lost {lost:?}",
                file.display()
            );
            kinds_seen.insert(kind);
        }
    }
    for kind in [
        "PostgresCluster",
        "PostgresRemoteCluster",
        "PostgresBackupRequest",
        "PostgresBackupSchedule",
    ] {
        assert!(kinds_seen.contains(kind), "no example of {kind}");
    }
}

#[test]
fn the_elephant_example_is_the_seed_cluster() {
    let text = std::fs::read_to_string(examples_dir().join("elephant.yaml")).expect("elephant");
    let elephant: PostgresCluster = serde_yaml_ng::from_str(&text).expect("a PostgresCluster");
    assert_eq!(elephant.metadata.name.as_deref(), Some("elephant"));
    assert_eq!(elephant.spec.display_name, "my-elephant-cluster");
    assert_eq!(elephant.spec.memory_size, 2);
    assert_eq!(elephant.spec.postgres_disk_size, 1);
    assert!(elephant.spec.wal_archiving);
}

#[test]
fn a_round_trip_that_drops_a_field_is_detected() {
    let original = serde_json::json!({"spec": {"interval": 24, "unknownField": 1}});
    let round_tripped = serde_json::json!({"spec": {"interval": 24}});
    assert_eq!(
        missing_from(&original, &round_tripped, ""),
        vec![".spec.unknownField".to_owned()]
    );
}
