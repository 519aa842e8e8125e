//! Records of the process groups the runtime runs containers in, so that a runtime whose host
//! process was killed outright (SIGKILL, a crash) can end, when it starts again, the containers
//! the previous run left behind: a kubelet after a node crash finds the containers of the
//! previous boot gone too, and starts the pods' containers afresh. Without this, a restarted
//! PostgreSQL would collide with its orphaned predecessor (port, `postmaster.pid`), and the
//! containers of pods deleted meanwhile would run forever.
//!
//! A record is `<pods dir>/<pod uid>/containers/<container>.pgid`, holding the group id, the
//! leader's start time (in clock ticks since boot) and the boot id: together they tell the
//! group apart from an unrelated one that reuses its id later.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a killed group may take to disappear before the runtime moves on.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often to look whether a killed group is gone.
const KILL_POLL: Duration = Duration::from_millis(20);
/// The extension of a record's file name.
const RECORD_EXTENSION: &str = "pgid";

/// Where the record of container `name` of pod `uid` lives.
pub(crate) fn record_path(pods_dir: &Path, uid: &str, name: &str) -> PathBuf {
    pods_dir
        .join(uid)
        .join("containers")
        .join(format!("{name}.{RECORD_EXTENSION}"))
}

/// What identifies a process group across runs of the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupIdentity {
    group: i32,
    leader_start: u64,
    boot_id: String,
}

impl GroupIdentity {
    fn render(&self) -> String {
        format!("{} {} {}\n", self.group, self.leader_start, self.boot_id)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let identity = Self {
            group: words.next()?.parse().ok().filter(|group| *group > 1)?,
            leader_start: words.next()?.parse().ok()?,
            boot_id: words.next()?.to_string(),
        };
        words.next().is_none().then_some(identity)
    }
}

/// Records that the process `leader` (just started, leading a group of its own) runs a
/// container, replacing the record of the container's previous instance.
pub(crate) fn record(path: &Path, leader: Pid) -> std::io::Result<()> {
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such process");
    let stat = ProcessStat::read(leader.as_raw()).ok_or_else(not_found)?;
    let identity = GroupIdentity {
        group: leader.as_raw(),
        leader_start: stat.start_time,
        boot_id: boot_id()?,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A host killed mid-write must not leave a torn record: write aside, then rename.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, identity.render())?;
    std::fs::rename(&partial, path)
}

/// Forgets a record once the runtime itself has ended its process group.
pub(crate) fn forget(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, record = %path.display(), "cannot remove a container's process record");
    }
}

/// Ends every process group recorded under `pods_dir` that still runs (SIGKILL to the whole
/// group, then a bounded wait until it is gone) and removes all records. Returns how many
/// groups it killed. Blocking: it is meant to run once, before the runtime runs any pod.
pub(crate) fn kill_leftovers(pods_dir: &Path) -> usize {
    let current_boot = boot_id().ok();
    let mut killed = 0;
    for path in records(pods_dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let identity = GroupIdentity::parse(&text);
        let uid = path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let container = path
            .file_stem()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        match identity {
            None => {
                tracing::warn!(record = %path.display(), "ignoring an unreadable container process record");
            }
            // Groups of an earlier boot died with it; the id may belong to anyone now.
            Some(identity) if current_boot.as_deref() != Some(identity.boot_id.as_str()) => {}
            Some(identity) => {
                if kill_if_ours(&identity) {
                    killed += 1;
                    tracing::info!(
                        pod_uid = %uid,
                        container = %container,
                        process_group = identity.group,
                        "killed the processes of a container a previous run of the runtime left behind"
                    );
                }
            }
        }
        forget(&path);
    }
    killed
}

/// Every record file under `pods_dir`.
fn records(pods_dir: &Path) -> Vec<PathBuf> {
    let Ok(pods) = std::fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    pods.flatten()
        .filter_map(|pod| std::fs::read_dir(pod.path().join("containers")).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == RECORD_EXTENSION)
        })
        .collect()
}

/// Kills the group if it is the recorded one; waits (bounded) until it is gone. `true` if it
/// still ran.
fn kill_if_ours(identity: &GroupIdentity) -> bool {
    let members = group_members(identity.group);
    let ours = match members.iter().find(|member| member.pid == identity.group) {
        Some(leader) => leader.start_time == identity.leader_start,
        // The leader is gone but members live: the group id cannot have been reused while
        // they do, yet a member older than the recorded leader would betray a different group.
        None => {
            !members.is_empty()
                && members
                    .iter()
                    .all(|member| member.start_time >= identity.leader_start)
        }
    };
    if !ours {
        return false;
    }
    if let Err(error) = killpg(Pid::from_raw(identity.group), Signal::SIGKILL) {
        tracing::warn!(%error, process_group = identity.group, "cannot kill a leftover container process group");
        return false;
    }
    let deadline = Instant::now() + KILL_WAIT;
    while !group_members(identity.group).is_empty() {
        if Instant::now() >= deadline {
            tracing::warn!(
                process_group = identity.group,
                "a killed leftover container process group is still there after {}s",
                KILL_WAIT.as_secs()
            );
            break;
        }
        std::thread::sleep(KILL_POLL);
    }
    true
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug)]
struct ProcessStat {
    pid: i32,
    zombie: bool,
    group: i32,
    start_time: u64,
}

impl ProcessStat {
    fn read(pid: i32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(pid, &text)
    }

    fn parse(pid: i32, text: &str) -> Option<Self> {
        // The command name (field 2) may hold spaces and parentheses: fields after it start
        // after its last closing parenthesis, with the state (field 3).
        let (_, after_name) = text.rsplit_once(')')?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        Some(Self {
            pid,
            zombie: matches!(*fields.first()?, "Z" | "X"),
            group: fields.get(2)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }
}

/// The live (not zombie) processes of group `group`.
fn group_members(group: i32) -> Vec<ProcessStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(ProcessStat::read)
        .filter(|stat| stat.group == group && !stat.zombie)
        .collect()
}

/// This boot's id: process start times count from boot, so they identify a process only
/// together with it.
fn boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line =
            "4242 (a (b) c) S 1 4200 4200 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3";
        let stat = ProcessStat::parse(4242, line).expect("parses");
        assert_eq!(stat.group, 4200);
        assert_eq!(stat.start_time, 987654);
        assert!(!stat.zombie);
    }

    #[test]
    fn a_record_reads_back_and_a_torn_one_does_not() {
        let identity = GroupIdentity {
            group: 4200,
            leader_start: 987654,
            boot_id: "0b1f".to_string(),
        };
        assert_eq!(
            GroupIdentity::parse(&identity.render()),
            Some(identity.clone())
        );
        assert_eq!(GroupIdentity::parse("4200 9876"), None);
        assert_eq!(GroupIdentity::parse("1 9876 0b1f"), None);
    }
}
