//! New configurations are checked by PostgreSQL itself before the running server sees them.
//!
//! A typo in a parameter (`shared_buffers: banana`) must never take a running database down,
//! and a reload-only typo (`work_mem: banana`) must not be silently ignored. So before the
//! checked copy in the data directory is replaced and PostgreSQL reloaded, the candidate is
//! handed to `postgres -C` in a scratch directory: that parses and validates every setting
//! exactly as a server start would (same binary, same check hooks) without touching the running
//! server or its data. A refused candidate leaves the running configuration in force, and the
//! refusal (PostgreSQL's own lines, per setting) is reported at
//! [`tusk_api::instance::PARAMETERS_PATH`]. An accepted one is written and loaded (SIGHUP),
//! and the reload is confirmed with `pg_conf_load_time()`; settings that only a restart
//! changes are then listed from `pg_settings.pending_restart`, and the operator restarts the
//! pod for them only after this check has passed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tokio::process::Command;
use tusk_api::instance::{ParameterOutcome, ParameterReport, RefusedParameter};

use super::RunAs;
use super::database::Connection;
use super::settings;

/// How long `postgres -C` may take to judge a configuration.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// The most refused settings a report lists.
const MAX_REFUSED: usize = 16;
/// The most of one PostgreSQL message a report carries.
const MAX_MESSAGE: usize = 512;
/// The severities that start PostgreSQL's message text on a log line, after its
/// `log_line_prefix` (which the customer may set, so the prefix is never parsed).
const SEVERITIES: [&str; 5] = ["FATAL:  ", "ERROR:  ", "LOG:  ", "DETAIL:  ", "HINT:  "];

/// The SHA-256 of a mounted configuration, as the report names it.
pub fn config_sha256(mounted: &[u8]) -> String {
    Sha256::digest(mounted)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Asks PostgreSQL whether it would start with `candidate` as the checked settings: runs
/// `postgres -C config_file` on a scratch directory holding tusk's postgresql.conf and the
/// candidate, with an empty environment and as the PostgreSQL user. Returns what PostgreSQL
/// refused, one entry per setting it named.
pub async fn check(
    postgres: &Path,
    candidate: &str,
    run_as: Option<RunAs>,
) -> Result<(), Vec<RefusedParameter>> {
    let unchecked = |message: String| {
        vec![RefusedParameter {
            name: String::new(),
            message,
        }]
    };
    let scratch = scratch_dir(candidate, run_as)
        .map_err(|error| unchecked(format!("cannot prepare the check: {error}")))?;
    let mut command = Command::new(postgres);
    command
        .arg("-D")
        .arg(scratch.path())
        .args(["-C", "config_file"])
        // Nothing of the supervisor's environment (passwords) reaches the check but PATH.
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    super::drop_privileges(&mut command, run_as);
    let output = match tokio::time::timeout(CHECK_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return Err(unchecked(format!("cannot run postgres -C: {error}"))),
        Err(_) => return Err(unchecked("postgres -C did not answer in time".to_owned())),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let scratch_path = format!("{}/", scratch.path().display());
    let refused = refusals(&stderr.replace(&scratch_path, ""));
    if refused.is_empty() {
        return Err(unchecked(format!(
            "postgres -C refused the configuration ({})",
            output.status
        )));
    }
    Err(refused)
}

/// A private directory holding tusk's postgresql.conf and `candidate` as the checked settings,
/// owned by the PostgreSQL user; removed when dropped.
fn scratch_dir(candidate: &str, run_as: Option<RunAs>) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("tusk-check-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let files = [
        (settings::POSTGRESQL_CONF, settings::postgresql_conf()),
        (settings::CHECKED_SETTINGS, candidate.to_owned()),
    ];
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content)?;
    }
    if let Some(user) = run_as.filter(|_| nix::unistd::geteuid().is_root()) {
        for path in [
            dir.path().to_owned(),
            dir.path().join(settings::POSTGRESQL_CONF),
            dir.path().join(settings::CHECKED_SETTINGS),
        ] {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(dir)
}

/// PostgreSQL's complaints about settings in its stderr: each line that names a parameter
/// starts an entry, and the DETAIL and HINT lines after it are added to it.
fn refusals(stderr: &str) -> Vec<RefusedParameter> {
    let mut refused: Vec<RefusedParameter> = Vec::new();
    for line in stderr.lines() {
        let Some((severity, text)) = SEVERITIES
            .iter()
            .filter_map(|severity| line.find(severity).map(|at| (at, severity)))
            .min()
            .map(|(at, severity)| (*severity, line[at + severity.len()..].trim()))
        else {
            continue;
        };
        if matches!(severity, "DETAIL:  " | "HINT:  ") {
            if let Some(last) = refused.last_mut() {
                last.message = bounded(&format!("{} {text}", last.message));
            }
            continue;
        }
        if let Some(name) = parameter_named(text)
            && refused.len() < MAX_REFUSED
        {
            refused.push(RefusedParameter {
                name,
                message: bounded(text),
            });
        }
    }
    refused
}

/// The parameter a PostgreSQL message names (`... parameter "work_mem" ...`).
fn parameter_named(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("parameter \"")?;
    let (name, _) = rest.split_once('"')?;
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    plain.then(|| name.to_owned())
}

/// `text` fit for the report, cut to [`MAX_MESSAGE`] bytes.
fn bounded(text: &str) -> String {
    tusk_api::instance::printable(text, MAX_MESSAGE)
}

/// The report for a configuration PostgreSQL refused.
pub fn refused_report(mounted: &[u8], refused: Vec<RefusedParameter>) -> ParameterReport {
    ParameterReport {
        config_sha256: config_sha256(mounted),
        outcome: ParameterOutcome::Refused,
        refused,
        pending_restart: Vec::new(),
    }
}

/// The report for a configuration the running server was asked to load at `signalled`:
/// `Loaded`, with the settings that wait for a restart, once the server says it has reloaded
/// since; `Loading` until then or while it cannot be asked.
pub async fn loaded_report(
    connection: &Connection,
    mounted: &[u8],
    signalled: SystemTime,
) -> ParameterReport {
    let mut report = ParameterReport {
        config_sha256: config_sha256(mounted),
        outcome: ParameterOutcome::Loading,
        refused: Vec::new(),
        pending_restart: Vec::new(),
    };
    match reload_state(connection, signalled).await {
        Ok(Some(pending_restart)) => {
            report.outcome = ParameterOutcome::Loaded;
            report.pending_restart = pending_restart;
        }
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "cannot confirm the reload yet"),
    }
    report
}

/// `None` while the server has not reloaded its configuration since `signalled`; else the
/// settings that wait for a restart.
async fn reload_state(
    connection: &Connection,
    signalled: SystemTime,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let client = connection.connect().await?;
    let signalled = signalled
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let row = client
        .query_one(
            "SELECT extract(epoch FROM pg_conf_load_time())::float8 >= $1, \
                    array(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name)",
            &[&signalled],
        )
        .await?;
    let reloaded: bool = row.try_get(0)?;
    reloaded.then(|| row.try_get(1)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refused_setting_carries_postgresqls_lines() {
        let stderr = "2026-12-06 06:15:35.952 GMT [24169] LOG:  skipping missing configuration file \"postgresql.auto.conf\"\n\
            2026-12-06 06:15:35.952 GMT [24169] LOG:  invalid value for parameter \"shared_buffers\": \"banana\"\n\
            2026-12-06 06:15:35.952 GMT [24169] HINT:  Valid units for this parameter are \"B\", \"kB\".\n\
            x FATAL:  configuration file \"tusk-settings.conf\" contains errors\n";
        assert_eq!(
            refusals(stderr),
            [RefusedParameter {
                name: "shared_buffers".into(),
                message: "invalid value for parameter \"shared_buffers\": \"banana\" \
                          Valid units for this parameter are \"B\", \"kB\"."
                    .into(),
            }]
        );
    }

    #[test]
    fn a_customer_prefix_does_not_change_what_is_read() {
        // log_line_prefix is the customer's: it may even look like a severity.
        let stderr = "LOG: x LOG:  1 kB is outside the valid range for parameter \"work_mem\" (64 .. 2147483647)\n";
        let refused = refusals(stderr);
        assert_eq!(refused[0].name, "work_mem");
        assert!(refused[0].message.starts_with("1 kB is outside"));
        assert!(refusals(&"LOG:  bad parameter \"x\"\u{7}\n".repeat(100)).len() <= MAX_REFUSED);
        assert_eq!(parameter_named("parameter \"a b\""), None);
        assert!(bounded(&"é".repeat(1000)).len() <= MAX_MESSAGE);
    }
}
