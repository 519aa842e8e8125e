//! `tusk restore-test check`: the check Job of a restore test. It connects to the throwaway
//! cluster as its owner role (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), runs
//! `pg_amcheck` on every database, reads when the last transaction that recovery replayed
//! committed, and reports both on its PostgresRestoreTest's status. The report is a claim: the
//! operator records it only for the run whose throwaway's uid it names, and judges the data's
//! age itself. The Job's token may patch that one test's status and nothing else.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::process::Command;
use tusk_api::PostgresRestoreTest;
use tusk_api::restore_test::RestoreCheckReport;

use crate::source::find_pg_binary;

/// How long the check waits for the throwaway to accept its login.
pub const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// The most of pg_amcheck's output the report carries (its last characters).
pub const MAX_OUTPUT: usize = 2000;

/// Failures of the check Job itself (a failed check is a report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Writing the report failed.
    #[error("cannot report on PostgresRestoreTest {name}: {source}")]
    Report {
        /// The test.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The last `max` characters of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(max)).collect()
}

/// Connects with the libpq variables of the environment, retrying for up to [`CONNECT_WAIT`]:
/// the Service may route to the pod a moment after it is Ready.
async fn connect() -> Result<tokio_postgres::Client, String> {
    // Over TLS verified against the cluster's CA when PGSSLMODE says verify-full.
    let connection = crate::PgConnection::from_env().map_err(|error| error.to_string())?;
    let dbname = std::env::var("PGDATABASE")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "postgres".to_owned());
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    loop {
        match connection.open(&dbname, "tusk-restore-check").await {
            // The driver task runs on by itself until the client is dropped.
            Ok((client, _driver)) => return Ok(client),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("cannot connect to the throwaway cluster: {error}"));
            }
            Err(error) => {
                tracing::info!(%error, "the throwaway cluster does not accept the login yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The commit time of the last transaction recovery replayed, as RFC 3339 in UTC; `None` when
/// it replayed none (a quiet database during its backup).
async fn last_replayed_commit(
    client: &tokio_postgres::Client,
) -> Result<Option<jiff::Timestamp>, String> {
    let row = client
        .query_one(
            "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(|error| format!("cannot read the last replayed transaction: {error}"))?;
    let text: Option<String> = row.get(0);
    text.map(|text| {
        text.parse()
            .map_err(|error| format!("unexpected timestamp {text:?}: {error}"))
    })
    .transpose()
}

/// Runs `pg_amcheck` on every database; whether it found everything sound, and its output.
async fn amcheck() -> Result<(bool, String), String> {
    let program = find_pg_binary("pg_amcheck").ok_or_else(|| {
        "pg_amcheck not found (looked on PATH, in `pg_config --bindir` and /usr/lib/postgresql/*/bin)"
            .to_owned()
    })?;
    // The connection comes from the libpq variables of the environment: no credential in
    // the arguments.
    let output = Command::new(program)
        .args(["--all", "--no-password", "--progress"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| format!("cannot run pg_amcheck: {error}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = tail(text.trim(), MAX_OUTPUT);
    let summary = if summary.is_empty() {
        format!("pg_amcheck exited with {}", output.status)
    } else {
        summary
    };
    Ok((output.status.success(), summary))
}

/// Checks the throwaway cluster and builds the report for run `run_id`.
pub async fn check(run_id: &str) -> RestoreCheckReport {
    let mut report = RestoreCheckReport {
        run_id: run_id.to_owned(),
        ..RestoreCheckReport::default()
    };
    let client = match connect().await {
        Ok(client) => client,
        Err(error) => {
            report.error = Some(tail(&error, MAX_OUTPUT));
            return report;
        }
    };
    match last_replayed_commit(&client).await {
        Ok(commit) => report.last_replayed_commit = commit.map(Time),
        Err(error) => {
            report.error = Some(tail(&error, MAX_OUTPUT));
            return report;
        }
    }
    match amcheck().await {
        Ok((passed, output)) => {
            report.amcheck_passed = passed;
            report.amcheck_output = output;
        }
        Err(error) => report.error = Some(tail(&error, MAX_OUTPUT)),
    }
    report
}

/// Runs the check and writes the report on PostgresRestoreTest `test` in `namespace`.
pub async fn run_check(
    client: Client,
    namespace: &str,
    test: &str,
    run_id: &str,
) -> Result<RestoreCheckReport, CheckError> {
    let report = check(run_id).await;
    let tests: Api<PostgresRestoreTest> = Api::namespaced(client, namespace);
    tests
        .patch_status(
            test,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "report": report } })),
        )
        .await
        .map_err(|source| CheckError::Report {
            name: test.to_owned(),
            source,
        })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn the_tail_keeps_the_end_on_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(tail("ééé", 2), "éé");
    }
}
