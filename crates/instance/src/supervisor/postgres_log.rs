//! PostgreSQL's own messages, and the one line that says why the instance stopped.
//!
//! PostgreSQL writes its log to stderr. The supervisor passes every line on to its own stderr
//! (the container log) and remembers the most recent ones, so that when it gives up it can
//! name PostgreSQL's reason (`invalid value for parameter "shared_buffers": "banana"`,
//! `recovery ended before configured recovery target was reached`) rather than only its own
//! ("postgres exited"). That line, followed by the supervisor's error, is written to the
//! container's termination message file, which the kubelet turns into
//! `state.terminated.message`; the operator shows it on the PostgresCluster.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tusk_api::restore_progress::{Lsn, Reported};

/// Where the kubelet reads a container's termination message by default.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// How many of PostgreSQL's most recent lines are remembered.
const REMEMBERED_LINES: usize = 64;
/// The most of a line that is remembered.
const MAX_LINE: usize = 512;

/// The most recent lines PostgreSQL wrote to stderr.
#[derive(Debug, Default)]
pub struct PostgresLog {
    recent: Mutex<VecDeque<String>>,
    /// The furthest WAL location PostgreSQL said its replay reached.
    replayed: AtomicU64,
    /// The archive command's last error line.
    archive_error: Mutex<Option<String>>,
}

impl PostgresLog {
    /// Passes `stream` (a PostgreSQL process's stderr) on to this process's stderr line by line,
    /// remembering each line, until the stream ends.
    pub async fn forward(&self, stream: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // The container log gets the line whatever happens to the memory of it.
            let _ = writeln!(std::io::stderr(), "{line}");
            // Recovery reads ahead (it may fetch the next segment before replaying the rest
            // of this one), so only a location past every one reported before is reported.
            if let Some(location) = replayed_location(&line)
                && self.replayed.fetch_max(location.0, Ordering::Relaxed) < location.0
            {
                super::bootstrap::print_progress(Reported::WalReplay(location));
            }
            if let Some(error) = archive_error(&line) {
                *self.archive_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            }
            self.remember(line);
        }
    }

    fn remember(&self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == REMEMBERED_LINES {
            recent.pop_front();
        }
        recent.push_back(line);
    }

    /// The archive command's last error line, if it printed one.
    pub fn last_archive_error(&self) -> Option<String> {
        self.archive_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The line of PostgreSQL's that best says why it stopped, if it said anything.
    pub fn decisive_line(&self) -> Option<String> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        decisive_line(recent.iter().map(String::as_str))
    }
}

/// The error of `tusk wal-push` on `line`, bounded and printable, if `line` is one: it starts
/// the line, which PostgreSQL's own messages never do (they start with the log line prefix, and
/// their continuation lines with a tab), so only a program the server runs can print it.
fn archive_error(line: &str) -> Option<String> {
    line.strip_prefix("tusk: ")?
        .starts_with(tusk_api::instance::ARCHIVE_ERROR_PREFIX)
        .then(|| tusk_api::instance::printable(&line["tusk: ".len()..], MAX_LINE))
}

/// Severities whose messages explain a failure, as PostgreSQL prints them.
const FAILURE_SEVERITIES: [&str; 3] = ["PANIC:", "FATAL:", "ERROR:"];

/// Messages PostgreSQL logs at LOG level while reading its configuration, right before the
/// FATAL "configuration file ... contains errors" that only names the file.
const CONFIGURATION_COMPLAINTS: [&str; 4] = [
    "invalid value for parameter",
    "unrecognized configuration parameter",
    "parameter \"",
    "syntax error in file",
];

/// The size of a WAL segment file: PostgreSQL's default, which tusk never changes.
const WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// Where WAL replay got, if `line` is one of PostgreSQL's recovery messages that says:
/// `redo starts at 0/2000028`, `redo in progress, elapsed time: 1.00 s, current LSN:
/// 0/5A000028` (every `log_startup_progress_interval`), `restored log file
/// "00000001000000000000005A" from archive` (replay is about to enter that segment), `redo
/// done at 0/5A000028 ...`.
pub fn replayed_location(line: &str) -> Option<Lsn> {
    let word_after = |marker: &str| {
        let (_, rest) = line.split_once(marker)?;
        rest.split([' ', ',']).next()
    };
    if let Some(location) = word_after("redo in progress, elapsed time: ")
        .and(word_after("current LSN: "))
        .or_else(|| word_after("redo starts at "))
        .or_else(|| word_after("redo done at "))
    {
        return Lsn::parse(location);
    }
    let (_, rest) = line.split_once("restored log file \"")?;
    let (segment, _) = rest.split_once("\" from archive")?;
    Lsn::of_segment(segment, WAL_SEGMENT_SIZE)
}

/// Picks the decisive line from PostgreSQL's lines, oldest first: the last complaint about a
/// setting if there is one (the FATAL that follows it only names the file), else the last
/// PANIC, FATAL or ERROR. The line starts at its severity (the log line prefix, time and
/// process id, is dropped). DETAIL, HINT and STATEMENT lines are never chosen: a statement can
/// hold a value nobody should see in a status.
pub fn decisive_line<'a>(lines: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut complaint = None;
    let mut failure = None;
    for line in lines {
        let Some(start) = severity_start(line) else {
            continue;
        };
        let message = line[start..].trim_end();
        if CONFIGURATION_COMPLAINTS
            .iter()
            .any(|complaint| message.contains(complaint))
        {
            complaint = Some(message.to_owned());
        } else if FAILURE_SEVERITIES
            .iter()
            .any(|severity| message.starts_with(severity))
        {
            failure = Some(message.to_owned());
        }
    }
    complaint.or(failure)
}

/// Where a log line's severity word starts, for the severities that report something.
fn severity_start(line: &str) -> Option<usize> {
    FAILURE_SEVERITIES
        .iter()
        .chain(&["LOG:", "WARNING:"])
        .filter_map(|severity| line.find(severity))
        .min()
}

/// The termination message: PostgreSQL's decisive line when there is one, then the
/// supervisor's own error.
pub fn termination_message(postgres_line: Option<&str>, error: &str) -> String {
    match postgres_line {
        Some(line) => format!("{line}\n{error}\n"),
        None => format!("{error}\n"),
    }
}

/// Writes `message` to the container's termination message file: under the sandbox's pod
/// root when the sandbox runs the pod, else at the kubelet's path. Only an existing file is
/// written (the kubelet creates it), so a supervisor run outside a pod writes nothing.
pub fn write_termination_message(message: &str) {
    let path = match std::env::var_os("TUSK_SANDBOX_POD_ROOT").filter(|root| !root.is_empty()) {
        Some(root) => PathBuf::from(root).join(TERMINATION_MESSAGE_PATH.trim_start_matches('/')),
        None => PathBuf::from(TERMINATION_MESSAGE_PATH),
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| file.write_all(message.as_bytes()));
    if let Err(error) = written {
        tracing::debug!(path = %path.display(), %error, "no termination message file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_archive_commands_last_error_is_kept() {
        let log = PostgresLog::default();
        let stderr = "tusk: cannot archive 000000010000000000000003: already archived\n\
            2026-12-06 LOG:  archive command failed with exit code 1\n\
            \ttusk: cannot archive forged\n\
            tusk: restore failed\n";
        log.forward(stderr.as_bytes()).await;
        assert_eq!(
            log.last_archive_error().as_deref(),
            Some("cannot archive 000000010000000000000003: already archived")
        );
    }

    #[test]
    fn recovery_messages_say_where_replay_got() {
        for (line, expected) in [
            (
                "2026-12-06 06:00:00.000 UTC [7] LOG:  redo starts at 0/2000028",
                Some(0x200_0028),
            ),
            (
                "LOG:  redo in progress, elapsed time: 1.00 s, current LSN: 0/5A000028",
                Some(0x5A00_0028),
            ),
            (
                "LOG:  restored log file \"00000001000000010000005A\" from archive",
                Some(0x1_5A00_0000),
            ),
            (
                "LOG:  redo done at 1/5A000028 system usage: CPU",
                Some(0x1_5A00_0028),
            ),
            (
                "LOG:  restored log file \"00000002.history\" from archive",
                None,
            ),
            ("LOG:  database system is ready to accept connections", None),
        ] {
            assert_eq!(replayed_location(line), expected.map(Lsn), "{line}");
        }
    }

    #[test]
    fn a_setting_postgresql_refuses_is_the_decisive_line() {
        let log = [
            "2026-12-06 03:00:00.000 UTC [42] LOG:  invalid value for parameter \"shared_buffers\": \"banana\"",
            "2026-12-06 03:00:00.000 UTC [42] HINT:  Valid units for this parameter are \"B\", \"kB\".",
            "2026-12-06 03:00:00.000 UTC [42] FATAL:  configuration file \"/data/postgresql.conf\" contains errors",
        ];
        assert_eq!(
            decisive_line(log.into_iter()).as_deref(),
            Some("LOG:  invalid value for parameter \"shared_buffers\": \"banana\"")
        );
    }

    #[test]
    fn otherwise_the_last_failure_is() {
        let log = [
            "LOG:  starting PostgreSQL 15.4",
            "LOG:  redo starts at 0/2000028",
            "FATAL:  recovery ended before configured recovery target was reached",
            "STATEMENT:  ALTER ROLE x PASSWORD 'SCRAM-SHA-256$...'",
            "LOG:  startup process (PID 12) exited with exit code 1",
        ];
        assert_eq!(
            decisive_line(log.into_iter()).as_deref(),
            Some("FATAL:  recovery ended before configured recovery target was reached")
        );
        assert_eq!(decisive_line(["LOG:  all is well"].into_iter()), None);
    }

    #[test]
    fn long_lines_are_cut_and_old_ones_forgotten() {
        let log = PostgresLog::default();
        log.remember(format!("FATAL:  {}", "é".repeat(1000)));
        for n in 0..REMEMBERED_LINES - 1 {
            log.remember(format!("LOG:  line {n}"));
        }
        assert!(log.decisive_line().unwrap().len() <= MAX_LINE);
        log.remember("LOG:  one more".to_owned());
        assert_eq!(log.decisive_line(), None);
    }
}
