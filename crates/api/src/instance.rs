//! What `tusk instance` tells the operator, served as JSON on the instance's health port: what
//! became of the configuration it was given, at [`PARAMETERS_PATH`], and how full its data
//! volume is, at [`DISK_PATH`].
//!
//! The instance checks every new configuration against PostgreSQL itself before the running
//! server sees it. The operator reads this report to know whether the spec's parameters are in
//! force, and lets the pod restart for a restart-only setting only once the report says the new
//! configuration passed the check. The tenant controls the database the instance runs, so the
//! operator treats the report as untrusted text: it reads a bounded body
//! ([`MAX_REPORT_BYTES`]) and cleans every string before it reaches a status or an Event.
//!
//! The same port serves the WAL archiver's state at [`ARCHIVER_PATH`] ([`ArchiverReport`]),
//! read from `pg_stat_archiver` by the instance, under the same limits.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::restore_progress::Lsn;

/// The HTTP path of the report on the instance's health port.
pub const PARAMETERS_PATH: &str = "/parameters";

/// The largest report body the operator reads.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// What the instance did with the last configuration it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterReport {
    /// The SHA-256 (lowercase hex) of the mounted configuration file this report is about,
    /// byte for byte as the ConfigMap holds it.
    pub config_sha256: String,
    /// What became of it.
    pub outcome: ParameterOutcome,
    /// When refused: each setting PostgreSQL refused, with its message.
    #[serde(default)]
    pub refused: Vec<RefusedParameter>,
    /// Settings PostgreSQL holds at their old value until the server restarts
    /// (`pg_settings.pending_restart`).
    #[serde(default)]
    pub pending_restart: Vec<String>,
}

/// What became of a configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParameterOutcome {
    /// It passed the check and PostgreSQL was asked to reload; the reload is not confirmed yet.
    #[default]
    Loading,
    /// It passed the check and the running server has loaded it (settings that need a restart
    /// are listed in `pendingRestart`).
    Loaded,
    /// PostgreSQL refused it; the previous configuration stays in force.
    Refused,
}

/// A setting PostgreSQL refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedParameter {
    /// The setting's name (empty when PostgreSQL's message named none).
    pub name: String,
    /// PostgreSQL's message.
    pub message: String,
}

/// The HTTP path of the archiver's report on the instance's health port.
pub const ARCHIVER_PATH: &str = "/archiver";

/// How an error of `tusk wal-push` (PostgreSQL's archive command) starts, after `tusk: `, on
/// the stderr it shares with PostgreSQL: `cannot archive <file>: <why>`. The instance keeps the
/// last such line for [`ArchiverReport::last_error`].
pub const ARCHIVE_ERROR_PREFIX: &str = "cannot archive ";

/// The size of a WAL segment file: PostgreSQL's default, which tusk never changes.
pub const WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The WAL archiver's state: `pg_stat_archiver`, where the server writes WAL now, and the
/// archive command's last error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiverReport {
    /// WAL files archived since the statistics were last reset.
    pub archived_count: i64,
    /// The last WAL file archived.
    #[serde(default)]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default)]
    pub last_archived_time: Option<Time>,
    /// Failed attempts to archive WAL since the statistics were last reset.
    pub failed_count: i64,
    /// The WAL file of the last failed attempt.
    #[serde(default)]
    pub last_failed_wal: Option<String>,
    /// When it failed.
    #[serde(default)]
    pub last_failed_time: Option<Time>,
    /// Where the server writes WAL now (`pg_current_wal_lsn()`).
    pub current_lsn: String,
    /// The archive command's last error line (`tusk: cannot archive <file>: ...`), as
    /// PostgreSQL's stderr carried it.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl ArchiverReport {
    /// Whether archiving fails now: its last attempt failed, and nothing was archived since.
    pub fn failing(&self) -> bool {
        match (&self.last_failed_time, &self.last_archived_time) {
            (Some(failed), Some(archived)) => failed.0 >= archived.0,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// How far archiving is behind: the completed segments not archived yet, and the bytes of
    /// WAL written after the end of the last archived segment. `None` when either end is
    /// unknown (nothing archived yet, a history file last, a malformed location).
    pub fn lag(&self) -> Option<ArchiveLag> {
        let current = Lsn::parse(&self.current_lsn)?.0;
        let archived = self.last_archived_wal.as_deref()?;
        // A segment, `<segment>.partial` or `<segment>.<offset>.backup`: the segment counts.
        let segment = archived.get(..24)?;
        let archived_end = Lsn::of_segment(segment, WAL_SEGMENT_SIZE)?.0 + WAL_SEGMENT_SIZE;
        let segments = (current / WAL_SEGMENT_SIZE).saturating_sub(archived_end / WAL_SEGMENT_SIZE);
        Some(ArchiveLag {
            segments,
            bytes: current.saturating_sub(archived_end),
        })
    }
}

/// The moment `millis` milliseconds after the Unix epoch, if it is one.
pub fn unix_time(millis: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(millis)
        .ok()
        .map(Time)
}

/// How far WAL archiving is behind the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLag {
    /// Completed segments not archived yet.
    pub segments: u64,
    /// Bytes written after the end of the last archived segment.
    pub bytes: u64,
}

/// The HTTP path, on the instance's health port, of the usage of the data volume.
pub const DISK_PATH: &str = "/disk";

/// The largest disk report body the operator reads.
pub const MAX_DISK_REPORT_BYTES: usize = 1024;

/// How full the filesystem that holds the data directory is, as `statvfs(3)` tells and `df`
/// shows it: `usedBytes` are taken, `availableBytes` are left for PostgreSQL (blocks reserved
/// for root are in neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskReport {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes PostgreSQL can still write.
    pub available_bytes: u64,
}

/// `text` with each control character replaced by a space, cut to at most `limit` bytes (at a
/// character boundary): how the report's text is made fit for a status, an Event or a log line.
pub fn printable(text: &str, limit: usize) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > limit {
        let mut end = limit;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(current: &str, archived: Option<&str>) -> ArchiverReport {
        ArchiverReport {
            current_lsn: current.into(),
            last_archived_wal: archived.map(str::to_owned),
            ..ArchiverReport::default()
        }
    }

    #[test]
    fn the_lag_counts_completed_segments_and_bytes_past_the_last_archived_one() {
        // Writing in segment 5 with segment 4 archived: nothing waits.
        let current = report("0/5000100", Some("000000010000000000000004"));
        assert_eq!(
            current.lag(),
            Some(ArchiveLag {
                segments: 0,
                bytes: 0x100
            })
        );
        // Writing in segment 1/02 with 0/FE archived: 0/FF and 1/00, 1/01 wait.
        let behind = report("1/2000000", Some("0000000100000000000000FE"));
        assert_eq!(
            behind.lag(),
            Some(ArchiveLag {
                segments: 3,
                bytes: 3 * WAL_SEGMENT_SIZE
            })
        );
        let backup = report(
            "0/5000000",
            Some("000000010000000000000004.00000028.backup"),
        );
        assert_eq!(backup.lag().map(|lag| lag.segments), Some(0));
        assert_eq!(report("0/5000000", Some("00000002.history")).lag(), None);
        assert_eq!(report("0/5000000", None).lag(), None);
        assert_eq!(
            report("banana", Some("000000010000000000000004")).lag(),
            None
        );
    }

    #[test]
    fn archiving_fails_while_the_last_attempt_failed() {
        let at = |second| Some(Time(jiff_second(second)));
        let mut state = ArchiverReport::default();
        assert!(!state.failing());
        state.last_failed_time = at(10);
        assert!(state.failing());
        state.last_archived_time = at(20);
        assert!(!state.failing());
        state.last_failed_time = at(30);
        assert!(state.failing());
    }

    fn jiff_second(second: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn printable_text_has_no_control_characters_and_a_bounded_length() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a b [31m");
        assert_eq!(printable(&"é".repeat(10), 5), "éé");
    }
}
