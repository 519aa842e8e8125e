//! Container processes: each in a process group of its own, so that stopping a container
//! stops everything it started, as a container runtime does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Who a container's processes run as, when not as the runtime itself: its pod's own local
/// user (see `users`), whatever `runAsUser` the pod asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// `HOME` for a container that sets none: the pod's root directory.
    pub home: PathBuf,
}

/// Everything needed to start one container process.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub identity: Option<Identity>,
}

impl Launch {
    /// The command that starts this process, its standard input empty.
    pub(super) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.working_dir)
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(identity) = &self.identity {
            command.uid(identity.uid).gid(identity.gid);
        }
        command
    }
}

/// A running container process (the leader of its process group).
pub(crate) struct ContainerProcess {
    child: Child,
    group: Option<Pid>,
    /// Where the group is recorded for a later run of the runtime, should this one be killed.
    record: PathBuf,
    /// The tasks copying its stdout and stderr into the log; they end when the group has.
    copiers: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a stopped container's last output may take to reach its log.
const LOG_DRAIN: Duration = Duration::from_secs(5);

impl ContainerProcess {
    /// Starts the process, its output appended to `log`, its process group recorded in
    /// `record` until it is stopped.
    pub fn spawn(launch: &Launch, log: std::fs::File, record: PathBuf) -> std::io::Result<Self> {
        // A bare name is one `resolve_program` found nowhere the pod may run it from; left to
        // execvp, it would report the last directory it could not enter instead.
        if !launch
            .program
            .as_os_str()
            .as_encoded_bytes()
            .contains(&b'/')
        {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        // One pipe takes both outputs, so that their lines keep the order they were written
        // in; the runtime timestamps each line it reads from it, as the kubelet's container
        // runtime does, for `kubectl logs --timestamps` and `--since`.
        let (reader, writer) = std::io::pipe()?;
        let child = launch
            .command()
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer))
            .spawn()?;
        let output =
            tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let copiers = vec![tokio::spawn(super::logs::copy_lines(output, log))];
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        if let Some(group) = group
            && let Err(error) = super::leftovers::record(&record, group)
        {
            // The container runs all the same; only a crash of the runtime would orphan it.
            tracing::warn!(%error, record = %record.display(), "cannot record a container's process group");
        }
        Ok(Self {
            child,
            group,
            record,
            copiers,
        })
    }

    /// Waits until the process exits, then kills whatever it left in its group, as a container's
    /// processes die with its main process.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.kill_group();
        self.drain_output().await;
        status
    }

    /// Waits until everything the group wrote is in the log.
    async fn drain_output(&mut self) {
        for copier in self.copiers.drain(..) {
            let _ = tokio::time::timeout(LOG_DRAIN, copier).await;
        }
    }

    /// SIGTERM to the group, then SIGKILL once `grace` has passed.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(group) = self.group {
            let _ = killpg(group, Signal::SIGTERM);
        }
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                self.kill_group();
                status
            }
            Err(_) => {
                self.kill_group();
                self.child.wait().await
            }
        };
        self.drain_output().await;
        status
    }

    fn kill_group(&mut self) {
        // The group id cannot be reused while any member lives, so this reaches only ours.
        if let Some(group) = self.group.take() {
            let _ = killpg(group, Signal::SIGKILL);
            super::leftovers::forget(&self.record);
        }
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        // A runtime dropped without a shutdown still leaves no process behind.
        self.kill_group();
    }
}

/// The exit code Kubernetes reports: the process's, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128)
}

/// Runs an exec probe's command like the container (same user, env and directory), killed
/// if it outlives `timeout`. `Ok` when it exits 0.
pub(crate) async fn run_probe_command(
    launch: &Launch,
    command: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("the exec probe has no command".to_string());
    };
    let probe = Launch {
        program: PathBuf::from(program),
        args: args.to_vec(),
        ..launch.clone()
    };
    let mut child = probe
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    let output = tokio::time::timeout(timeout, async {
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out).await;
        }
        (child.wait().await, out)
    })
    .await;
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    match output {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), out)) => Err(format!(
            "command exited with {}: {}",
            exit_code(&status),
            String::from_utf8_lossy(&out).trim()
        )),
        Ok((Err(error), _)) => Err(format!("cannot wait for the probe command: {error}")),
        Err(_) => Err(format!(
            "command timed out after {}s",
            timeout.as_secs_f64()
        )),
    }
}

/// Finds a container's program: `tusk` is the tusk executable, a path is taken as is, and
/// other names are looked up in PATH, then in PostgreSQL's bin directory, skipping what the
/// pod's user could not run (the runtime's PATH may lead through its own private home).
pub(crate) fn resolve_program(
    name: &str,
    tusk: &Path,
    search_path: Option<&str>,
    pg_bindir: Option<&Path>,
    identity: Option<&Identity>,
) -> Option<PathBuf> {
    if name == "tusk" {
        return Some(tusk.to_path_buf());
    }
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let system_path: Option<OsString> = std::env::var_os("PATH");
    let dirs: Vec<PathBuf> = match search_path {
        Some(path) => std::env::split_paths(path).collect(),
        None => system_path
            .as_deref()
            .map(|path| std::env::split_paths(path).collect())
            .unwrap_or_default(),
    };
    dirs.iter()
        .map(PathBuf::as_path)
        .chain(pg_bindir)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate, identity))
}

/// Whether `path` is an executable file that `identity` (the runtime itself if `None`) may
/// reach and run, by the permission bits of the file and of every directory on its way.
fn is_executable(path: &Path, identity: Option<&Identity>) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return false;
    }
    let Some(identity) = identity else {
        return true;
    };
    let may_execute = |meta: &std::fs::Metadata| {
        let mode = meta.mode();
        let bit = if meta.uid() == identity.uid {
            0o100
        } else if meta.gid() == identity.gid {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    };
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    may_execute(&meta)
        && real
            .ancestors()
            .skip(1)
            .all(|dir| std::fs::metadata(dir).is_ok_and(|meta| may_execute(&meta)))
}

/// PostgreSQL's programs: `pg_config --bindir`, or the newest of Debian's packages.
pub(crate) fn postgres_bindir() -> Option<PathBuf> {
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|dir| dir.join("postgres").exists());
    from_pg_config.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("postgres").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}
