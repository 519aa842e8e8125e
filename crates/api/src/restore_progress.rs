//! How a restoring instance tells the operator how far it got: one line in the container log.
//!
//! `tusk instance` writes `tusk-restore-progress base-backup <bytes>` while it downloads and
//! unpacks the base backup, and `tusk-restore-progress wal-replay <LSN>` while PostgreSQL
//! replays WAL. The operator reads the end of the container log (bounded in lines and bytes)
//! and keeps the last line that parses. Whatever runs in the pod can write such a line, so a
//! parsed line is untrusted: it may only set the two numbers below, each checked for its form,
//! for the status of the cluster whose pod wrote it. See docs/security.md.

use std::fmt;

/// What every progress line starts with.
pub const PREFIX: &str = "tusk-restore-progress";

/// The longest line [`parse_line`] looks at; anything longer is not a progress line.
pub const MAX_LINE: usize = 80;

/// What a restoring instance reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    /// Bytes of the backup object downloaded and unpacked so far.
    BaseBackup(u64),
    /// The WAL location PostgreSQL replayed up to.
    WalReplay(Lsn),
}

impl fmt::Display for Reported {
    /// The progress line, without its line break.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BaseBackup(bytes) => write!(f, "{PREFIX} base-backup {bytes}"),
            Self::WalReplay(lsn) => write!(f, "{PREFIX} wal-replay {lsn}"),
        }
    }
}

/// A WAL location (log sequence number), written as PostgreSQL writes it: `16/B374D848`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's form: two groups of one to eight hex digits around a `/`.
    pub fn parse(text: &str) -> Option<Self> {
        let (high, low) = text.split_once('/')?;
        let group = |part: &str| {
            (!part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(part, 16).ok())
                .flatten()
        };
        Some(Self(
            (u64::from(group(high)?) << 32) | u64::from(group(low)?),
        ))
    }

    /// Where the WAL segment file `name` (24 hex digits: timeline, log, segment) begins, for
    /// segments of `segment_size` bytes.
    pub fn of_segment(name: &str, segment_size: u64) -> Option<Self> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) || segment_size == 0 {
            return None;
        }
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let segment = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per_log = 0x1_0000_0000 / segment_size;
        if segment >= per_log {
            return None;
        }
        Some(Self(
            log.checked_mul(0x1_0000_0000)? + segment * segment_size,
        ))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Reads one progress line; `None` for any other line, and for one that is too long or whose
/// phase or number does not parse.
pub fn parse_line(line: &str) -> Option<Reported> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE {
        return None;
    }
    let mut words = line.strip_prefix(PREFIX)?.strip_prefix(' ')?.split(' ');
    let reported = match (words.next()?, words.next()?) {
        ("base-backup", bytes) if bytes.bytes().all(|b| b.is_ascii_digit()) => {
            Reported::BaseBackup(bytes.parse().ok()?)
        }
        ("wal-replay", lsn) => Reported::WalReplay(Lsn::parse(lsn)?),
        _ => return None,
    };
    words.next().is_none().then_some(reported)
}

/// The last progress line in `log` (the end of a container log), if any.
pub fn latest(log: &str) -> Option<Reported> {
    log.lines().rev().find_map(parse_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_the_last_one_counts() {
        let log = format!(
            "LOG:  starting\n{}\nLOG:  restored log file\n{}\n",
            Reported::BaseBackup(1234),
            Reported::WalReplay(Lsn(0x16_B374_D848))
        );
        assert_eq!(latest(&log), Some(Reported::WalReplay(Lsn(0x16_B374_D848))));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(
            parse_line("tusk-restore-progress base-backup 1234"),
            Some(Reported::BaseBackup(1234))
        );
    }

    #[test]
    fn anything_malformed_is_not_progress() {
        for line in [
            "tusk-restore-progress base-backup -1",
            "tusk-restore-progress base-backup +1",
            "tusk-restore-progress base-backup 99999999999999999999999",
            "tusk-restore-progress base-backup 1 2",
            "tusk-restore-progress wal-replay 1/2/3",
            "tusk-restore-progress wal-replay 123456789/0",
            "tusk-restore-progress wal-replay G/0",
            "tusk-restore-progress unpacking 1",
            " tusk-restore-progress base-backup 1",
            "LOG: tusk-restore-progress base-backup 1",
            "tusk-restore-progress base-backup",
        ] {
            assert_eq!(parse_line(line), None, "{line}");
        }
        let long = format!("tusk-restore-progress base-backup {}", "0".repeat(60));
        assert_eq!(parse_line(&long), None);
    }

    #[test]
    fn a_segment_name_gives_where_it_starts() {
        let mib16 = 16 * 1024 * 1024;
        assert_eq!(
            Lsn::of_segment("000000010000000200000003", mib16),
            Some(Lsn(0x2_0300_0000))
        );
        assert_eq!(Lsn::of_segment("000000010000000200000100", mib16), None);
        assert_eq!(Lsn::of_segment("00000002.history", mib16), None);
    }
}
