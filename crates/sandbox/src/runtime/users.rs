//! Local users for pods. A runtime running as root gives each pod a user and a group of its
//! own, from a dedicated range no host user or subordinate-id range uses, so that no pod
//! reads another's `/proc/<pid>/environ` (where its passwords and store keys are), files or
//! volumes, and no pod acts as a host user (PostgreSQL's `postgres`, say).
//!
//! The users are real passwd and group entries, created with `groupadd` and `useradd` (which
//! take the same locks as every other tool that edits those files), because programs look
//! themselves up: PostgreSQL's initdb asks getpwuid for its own name. Each entry's comment
//! names the pod and the runtime's pods directory, so that a pod keeps its user across a
//! restart of the runtime, and several runtimes (tests in parallel, several `tusk dev`s) can
//! share one host: an entry goes when its pod's directory does, whichever runtime notices.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// The first uid (and gid) of the pods' range: above the subordinate ids `useradd` hands out
/// (SUB_UID_MAX is 600100000 by default) and below 2^31, which some tools mishandle.
pub(crate) const FIRST_ID: u32 = 1_900_000_000;
/// How many ids the range holds.
pub(crate) const ID_COUNT: u32 = 200_000_000;
/// How many candidates a pod tries before giving up (each taken one moves it on).
const ATTEMPTS: u32 = 64;
/// How long to wait for another program's lock on /etc/passwd.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// What the comment of every pod user starts with.
const COMMENT_PREFIX: &str = "tusk pod ";

/// One runtime's pod users.
#[derive(Debug)]
pub(crate) struct PodUsers {
    /// Names the runtime's pods directory in each entry's comment.
    pods_dir: String,
    /// One change at a time from this process: the tools refuse to wait for each other.
    changes: Mutex<()>,
}

/// A pod's local user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodUser {
    pub uid: u32,
    pub gid: u32,
}

/// Why a pod has no user (the message of its FailedCreatePodSandBox Event).
#[derive(Debug, thiserror::Error)]
#[error("cannot create the pod's local user: {0}")]
pub(crate) struct UserError(String);

impl PodUsers {
    /// The users of the runtime whose pods live in `pods_dir`.
    pub fn new(pods_dir: &Path) -> Self {
        let canonical = std::fs::canonicalize(pods_dir).unwrap_or_else(|_| pods_dir.to_path_buf());
        Self {
            pods_dir: canonical.to_string_lossy().into_owned(),
            changes: Mutex::new(()),
        }
    }

    fn comment(&self, pod_uid: &str) -> String {
        format!("{COMMENT_PREFIX}{pod_uid} {}", self.pods_dir)
    }

    /// The user of pod `pod_uid`: the one it had (across restarts of the runtime), or a new
    /// one. Blocking: it may run `groupadd` and `useradd`.
    pub fn ensure(&self, pod_uid: &str) -> Result<PodUser, UserError> {
        if !pod_uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(UserError(format!(
                "the pod uid {pod_uid:?} cannot name a user"
            )));
        }
        // The comment field cannot hold these; useradd would refuse the entry.
        if self.pods_dir.contains([':', '\n', ',', '=']) {
            return Err(UserError(format!(
                "the runtime directory {:?} holds a character a passwd entry cannot",
                self.pods_dir
            )));
        }
        let comment = self.comment(pod_uid);
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..ATTEMPTS {
            let id = candidate(pod_uid, attempt);
            match User::from_uid(Uid::from_raw(id)) {
                Ok(Some(user)) if user.gecos.to_bytes() == comment.as_bytes() => {
                    return Ok(PodUser {
                        uid: id,
                        gid: user.gid.as_raw(),
                    });
                }
                // Someone else's: the next candidate.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => return Err(UserError(format!("cannot look up uid {id}: {error}"))),
            }
            if Group::from_gid(Gid::from_raw(id)).ok().flatten().is_some() {
                continue;
            }
            let name = format!("tusk{id}");
            let gid = id.to_string();
            match run_tool("groupadd", &["-g", &gid, &name])? {
                Outcome::Done => {}
                Outcome::Taken => continue,
            }
            let created = run_tool(
                "useradd",
                &[
                    // A system account: no subordinate ids, no aging, no lastlog entry.
                    "--system",
                    "--no-log-init",
                    "--no-create-home",
                    "--no-user-group",
                    "--uid",
                    &gid,
                    "--gid",
                    &gid,
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--comment",
                    &comment,
                    &name,
                ],
            );
            match created {
                Ok(Outcome::Done) => return Ok(PodUser { uid: id, gid: id }),
                Ok(Outcome::Taken) => {
                    let _ = run_tool("groupdel", &[&name]);
                }
                Err(error) => {
                    let _ = run_tool("groupdel", &[&name]);
                    return Err(error);
                }
            }
        }
        Err(UserError(format!(
            "no free uid for it after {ATTEMPTS} tries in {FIRST_ID}..{}",
            FIRST_ID + ID_COUNT
        )))
    }

    /// Removes the user of pod `pod_uid`, if it has one, once its processes are gone; any
    /// process still running under it (one that left its container's process group) is
    /// killed first, so that the uid is free for another pod. Blocking.
    pub fn release(&self, pod_uid: &str) {
        self.release_entry(&self.comment(pod_uid));
    }

    /// Removes the users whose comment is `comment`.
    fn release_entry(&self, comment: &str) {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        for (name, uid) in entries()
            .into_iter()
            .filter(|(_, _, c)| c == comment)
            .map(|(n, u, _)| (n, u))
        {
            kill_processes_of(uid);
            // --force: a killed process not yet reaped (a zombie) still counts as the user's.
            if let Err(error) = run_tool("userdel", &["--force", &name]) {
                tracing::warn!(%error, user = %name, "cannot remove a pod's local user");
            }
            // userdel removes the group of the same name where USERGROUPS_ENAB says so.
            if Group::from_name(&name).ok().flatten().is_some() {
                let _ = run_tool("groupdel", &[&name]);
            }
        }
    }

    /// Removes the pod users whose pods have no directory any more: this runtime's pods that
    /// went while it was not running, and the pods of runtimes whose directory is gone (a
    /// test's temporary one). Blocking; meant to run before the runtime runs any pod.
    pub fn remove_orphans(&self) -> usize {
        let orphans: Vec<String> = entries()
            .into_iter()
            .filter_map(|(_, _, comment)| {
                let rest = comment.strip_prefix(COMMENT_PREFIX)?;
                let (pod_uid, pods_dir) = rest.split_once(' ')?;
                let pods_dir = Path::new(pods_dir);
                let gone = pods_dir.is_absolute()
                    && !pod_uid.is_empty()
                    && !pods_dir.join(pod_uid).exists();
                gone.then_some(comment)
            })
            .collect();
        for comment in &orphans {
            self.release_entry(comment);
        }
        orphans.len()
    }
}

/// The pod's `attempt`-th candidate id: derived from its uid, so that it is stable and two
/// pods rarely try the same one.
fn candidate(pod_uid: &str, attempt: u32) -> u32 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{pod_uid}/{attempt}").as_bytes(),
    );
    let bytes = digest.as_ref();
    let value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    FIRST_ID + value % ID_COUNT
}

/// The pod users in /etc/passwd: `(name, uid, comment)`.
fn entries() -> Vec<(String, u32, String)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, uid, comment) = (fields.first()?, fields.get(2)?, fields.get(4)?);
            let uid: u32 = uid.parse().ok()?;
            ((FIRST_ID..FIRST_ID + ID_COUNT).contains(&uid) && comment.starts_with(COMMENT_PREFIX))
                .then(|| (name.to_string(), uid, comment.to_string()))
        })
        .collect()
}

/// SIGKILL to every process whose effective uid is `uid`.
fn kill_processes_of(uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if entry.metadata().is_ok_and(|m| m.uid() == uid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// How a user-management tool ended.
enum Outcome {
    Done,
    /// The id or name is someone else's.
    Taken,
}

/// Runs `groupadd`, `useradd`, `userdel` or `groupdel`, retrying while another program holds
/// the lock on the account files.
fn run_tool(program: &str, args: &[&str]) -> Result<Outcome, UserError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let output = Command::new(program)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .map_err(|error| UserError(format!("cannot run {program}: {error}")))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => return Ok(Outcome::Done),
            // Not unique (4) or name in use (9), for groupadd and useradd alike.
            Some(4 | 9) if program.ends_with("add") => return Ok(Outcome::Taken),
            _ if stderr.contains("cannot lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                return Err(UserError(format!(
                    "{program} failed ({}): {}",
                    output.status,
                    stderr.trim()
                )));
            }
        }
    }
}
