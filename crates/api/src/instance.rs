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

use serde::{Deserialize, Serialize};

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

    #[test]
    fn printable_text_has_no_control_characters_and_a_bounded_length() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a b [31m");
        assert_eq!(printable(&"é".repeat(10), 5), "éé");
    }
}
