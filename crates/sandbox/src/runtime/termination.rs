//! Termination messages, as the kubelet handles them.
//!
//! Before each start of a container the kubelet gives it an empty file at its
//! `terminationMessagePath` (by default `/dev/termination-log`), writable by the container's
//! user. When the container ends, what the process wrote there (at most 4096 bytes) becomes
//! `state.terminated.message`, and later `lastState.terminated.message`. With
//! `terminationMessagePolicy: FallbackToLogsOnError`, a container that failed (non-zero exit)
//! and left the file empty gets the end of its log instead: the last 80 lines, at most the
//! last 2048 bytes of them.
//!
//! The sandbox has no mount namespaces: the file is created at the same path under the pod's
//! root directory, where the process finds it the way it finds everything else of the pod's
//! (`$TUSK_SANDBOX_POD_ROOT/dev/termination-log`). Unlike the kubelet's per-container files,
//! two containers of one pod that name the same path share that file.

use std::ffi::OsString;
use std::path::Path;

use k8s_openapi::api::core::v1::Container;

use super::beneath::{Dir, Owner, components};

/// Where a container's termination message is written when its spec names no path.
pub(crate) const DEFAULT_PATH: &str = "/dev/termination-log";
/// The most of the file the kubelet reads.
const MAX_MESSAGE_BYTES: usize = 4096;
/// The most lines of the log a fallback message holds.
const MAX_LOG_LINES: usize = 80;
/// The most bytes of the log a fallback message holds.
const MAX_LOG_BYTES: usize = 2048;

/// A container's termination-message file under the pod's root.
pub(crate) struct MessageFile {
    dir: Dir,
    name: OsString,
}

impl MessageFile {
    /// Creates the container's empty message file (replacing whatever the previous instance
    /// left there), writable by the pod's user as the kubelet's file is by the container's.
    pub fn create(pod_root: &Path, container: &Container, owner: Owner) -> Result<Self, String> {
        let path = container
            .termination_message_path
            .as_deref()
            .filter(|path| !path.is_empty())
            .unwrap_or(DEFAULT_PATH);
        let mut relative =
            components(path).map_err(|error| format!("invalid terminationMessagePath: {error}"))?;
        let name = relative
            .pop()
            .ok_or_else(|| format!("invalid terminationMessagePath {path:?}: names no file"))?;
        let cannot = |error: std::io::Error| {
            format!("cannot create the termination message file {path}: {error}")
        };
        let dir = Dir::open(pod_root)
            .and_then(|root| root.descend(&relative, 0o755, owner))
            .map_err(cannot)?;
        dir.remove(&name).map_err(cannot)?;
        dir.write_new(&name, b"", 0o666, owner).map_err(cannot)?;
        Ok(Self { dir, name })
    }

    /// What the process wrote, at most the kubelet's limit.
    fn read(&self) -> String {
        let bytes = self
            .dir
            .read_prefix(&self.name, MAX_MESSAGE_BYTES)
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The termination message of a container instance that ended with `exit_code`: the file's
/// content, or with `FallbackToLogsOnError` and a failure, the end of `log`.
pub(crate) fn message(
    container: &Container,
    file: &MessageFile,
    exit_code: i32,
    log: Option<&Path>,
) -> Option<String> {
    let written = file.read();
    if !written.is_empty() {
        return Some(written);
    }
    let falls_back =
        container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if !falls_back || exit_code == 0 {
        return None;
    }
    let log = super::logs::plain_text(&std::fs::read(log?).ok()?);
    let tail = log_tail(&log);
    (!tail.is_empty()).then_some(tail)
}

/// The last [`MAX_LOG_LINES`] lines of `log`, cut to its last [`MAX_LOG_BYTES`] bytes.
fn log_tail(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(MAX_LOG_LINES)..].join("\n");
    if text.ends_with('\n') && !tail.is_empty() {
        tail.push('\n');
    }
    if tail.len() > MAX_LOG_BYTES {
        let mut start = tail.len() - MAX_LOG_BYTES;
        while !tail.is_char_boundary(start) {
            start += 1;
        }
        tail.drain(..start);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(policy: Option<&str>, path: Option<&str>) -> Container {
        Container {
            name: "app".into(),
            termination_message_policy: policy.map(str::to_owned),
            termination_message_path: path.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn the_file_the_process_writes_is_the_message_whatever_the_exit_code() {
        let root = tempfile::tempdir().unwrap();
        let spec = container(None, None);
        let file = MessageFile::create(root.path(), &spec, None).unwrap();
        let written = root.path().join("dev/termination-log");
        assert_eq!(std::fs::read(&written).unwrap(), b"");
        std::fs::write(&written, "restore failed: object tampered").unwrap();
        assert_eq!(
            message(&spec, &file, 0, None).as_deref(),
            Some("restore failed: object tampered")
        );
        // A new instance starts with an empty file again.
        let again = MessageFile::create(root.path(), &spec, None).unwrap();
        assert_eq!(message(&spec, &again, 1, None), None);
    }

    #[test]
    fn a_long_message_is_cut_to_the_kubelets_limit() {
        let root = tempfile::tempdir().unwrap();
        let spec = container(None, Some("/tmp/why"));
        let file = MessageFile::create(root.path(), &spec, None).unwrap();
        std::fs::write(root.path().join("tmp/why"), "x".repeat(10_000)).unwrap();
        assert_eq!(message(&spec, &file, 1, None).unwrap().len(), 4096);
    }

    #[test]
    fn a_symlink_planted_at_the_path_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "host secret").unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dev/termination-log"))
            .unwrap();
        let spec = container(None, None);
        let file = MessageFile::create(root.path(), &spec, None).unwrap();
        assert_eq!(message(&spec, &file, 1, None), None);
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"host secret");
    }

    #[test]
    fn fallback_to_logs_takes_the_end_of_a_failed_containers_log() {
        let root = tempfile::tempdir().unwrap();
        let log = root.path().join("0.log");
        let lines: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, &lines).unwrap();
        let spec = container(Some("FallbackToLogsOnError"), None);
        let file = MessageFile::create(root.path(), &spec, None).unwrap();

        let tail = message(&spec, &file, 1, Some(&log)).unwrap();
        assert!(tail.starts_with("line 21\n"), "{tail}");
        assert!(tail.ends_with("line 100\n"));
        // A success, or the File policy, never reads the log.
        assert_eq!(message(&spec, &file, 0, Some(&log)), None);
        let file_policy = container(Some("File"), None);
        assert_eq!(message(&file_policy, &file, 1, Some(&log)), None);

        // Long lines: the last 2048 bytes.
        std::fs::write(&log, format!("{}\nFATAL: the end\n", "y".repeat(5000))).unwrap();
        let tail = message(&spec, &file, 1, Some(&log)).unwrap();
        assert_eq!(tail.len(), 2048);
        assert!(tail.ends_with("FATAL: the end\n"));
    }
}
