//! What exec, attach and port-forward reach in the runtime: the containers running now, each
//! with how it was started, and the address of each running pod.
//!
//! A command exec'd into a container runs as that container's process does: as the pod's own
//! user, with its environment and working directory, its program found the same way, and paths
//! under its mountPaths rebased into the pod's root. It runs in a process group of its own,
//! killed when the session ends or the container stops, as a real exec dies with its container.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

pub(crate) use super::process::exit_code;
use super::process::{Launch, resolve_program};
use super::volumes::Rebase;

/// A running container, as exec needs it.
struct RunningContainer {
    launch: Launch,
    rebase: Rebase,
    tusk_executable: PathBuf,
    pg_bindir: Option<PathBuf>,
    /// Cancelled when the container stops.
    stopped: CancellationToken,
}

/// The pods and containers the runtime runs now, shared with the API server's streaming
/// subresources. Entries are keyed by pod uid: the server looks a pod up by the uid of the
/// object the caller was authorized for, never by anything the pod's spec or status says.
#[derive(Default)]
pub(crate) struct PodAccess {
    containers: Mutex<HashMap<(String, String), Arc<RunningContainer>>>,
    addresses: Mutex<HashMap<String, Ipv4Addr>>,
}

impl std::fmt::Debug for PodAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodAccess").finish_non_exhaustive()
    }
}

/// Keeps a container (or a pod address) reachable until dropped.
pub(crate) struct Registration {
    access: Arc<PodAccess>,
    entry: Entry,
}

enum Entry {
    Container((String, String), CancellationToken),
    Address(String),
}

impl Drop for Registration {
    fn drop(&mut self) {
        match &self.entry {
            Entry::Container(key, stopped) => {
                stopped.cancel();
                lock(&self.access.containers).remove(key);
            }
            Entry::Address(uid) => {
                lock(&self.access.addresses).remove(uid);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a command could not be exec'd.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The container is not running (not started yet, between restarts, or stopped).
    #[error("container not found ({0:?})")]
    NotRunning(String),
    /// The exec request has no command.
    #[error("you must specify at least one command for the container")]
    NoCommand,
    /// The process could not start.
    #[error("exec: {program:?}: {cause}")]
    Start {
        /// The program asked for.
        program: String,
        /// Why it did not start.
        cause: String,
    },
}

/// How an exec'd process is connected.
pub(crate) struct ExecOptions {
    /// The caller sends input.
    pub stdin: bool,
    /// The caller reads standard output.
    pub stdout: bool,
    /// The caller reads standard error (never with a terminal, which merges it).
    pub stderr: bool,
    /// A pseudo-terminal is the process's standard streams and controlling terminal.
    pub tty: bool,
}

/// Where the caller's input goes.
pub(crate) enum ExecInput {
    /// Nowhere: the process's standard input is empty.
    None,
    /// A pipe to the process's standard input.
    Pipe(tokio::process::ChildStdin),
    /// The pseudo-terminal: input, and the window size.
    Terminal(pty_process::OwnedWritePty),
}

/// An exec'd process and its streams. Dropping it kills the process and its group.
pub(crate) struct ExecProcess {
    pub child: Child,
    pub input: ExecInput,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Cancelled when the container stops.
    pub container_stopped: CancellationToken,
    group: Option<Pid>,
}

impl ExecProcess {
    /// What kills the process and its group, usable while the process is borrowed.
    pub fn killer(&self) -> Killer {
        Killer(self.group)
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        self.killer().kill();
    }
}

/// Kills an exec'd process group.
#[derive(Clone, Copy)]
pub(crate) struct Killer(Option<Pid>);

impl Killer {
    /// SIGKILL to the group. The group id cannot be reused while any member lives, so this
    /// reaches only the exec'd processes (or, once they are all gone, no one).
    pub fn kill(self) {
        if let Some(group) = self.0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

impl PodAccess {
    /// Makes a running container reachable for exec until the returned guard is dropped.
    pub(crate) fn register_container(
        self: &Arc<Self>,
        uid: &str,
        container: &str,
        launch: &Launch,
        rebase: &Rebase,
        tusk_executable: PathBuf,
        pg_bindir: Option<PathBuf>,
    ) -> Registration {
        let key = (uid.to_string(), container.to_string());
        let stopped = CancellationToken::new();
        let running = RunningContainer {
            launch: launch.clone(),
            rebase: rebase.clone(),
            tusk_executable,
            pg_bindir,
            stopped: stopped.clone(),
        };
        lock(&self.containers).insert(key.clone(), Arc::new(running));
        Registration {
            access: self.clone(),
            entry: Entry::Container(key, stopped),
        }
    }

    /// Makes a pod's address reachable for port-forward until the returned guard is dropped.
    pub(crate) fn register_address(self: &Arc<Self>, uid: &str, address: Ipv4Addr) -> Registration {
        lock(&self.addresses).insert(uid.to_string(), address);
        Registration {
            access: self.clone(),
            entry: Entry::Address(uid.to_string()),
        }
    }

    /// The address of the running pod with this uid.
    pub(crate) fn address(&self, uid: &str) -> Option<Ipv4Addr> {
        lock(&self.addresses).get(uid).copied()
    }

    /// Whether the runtime runs a container of this name in the pod with this uid.
    pub(crate) fn is_running(&self, uid: &str, container: &str) -> bool {
        lock(&self.containers).contains_key(&(uid.to_string(), container.to_string()))
    }

    /// Starts `command` in a running container of the pod with this uid.
    pub(crate) fn exec(
        &self,
        uid: &str,
        container: &str,
        command: &[String],
        options: &ExecOptions,
    ) -> Result<ExecProcess, ExecError> {
        let running = lock(&self.containers)
            .get(&(uid.to_string(), container.to_string()))
            .cloned()
            .ok_or_else(|| ExecError::NotRunning(container.to_string()))?;
        let (name, arguments) = command.split_first().ok_or(ExecError::NoCommand)?;
        let name = running.rebase.path(name);
        let launch = &running.launch;
        let search_path = launch
            .env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.as_str());
        let program = resolve_program(
            &name,
            &running.tusk_executable,
            search_path,
            running.pg_bindir.as_deref(),
            launch.identity.as_ref(),
        )
        .ok_or_else(|| ExecError::Start {
            program: name.clone(),
            cause: "executable file not found in $PATH".to_string(),
        })?;
        let exec = Launch {
            program,
            args: arguments
                .iter()
                .map(|word| exec_argument(&running.rebase, &launch.working_dir, word))
                .collect(),
            ..launch.clone()
        };
        let cannot_start = |error: std::io::Error| ExecError::Start {
            program: name.clone(),
            cause: error.to_string(),
        };
        let mut process = if options.tty {
            spawn_in_terminal(&exec, options).map_err(cannot_start)?
        } else {
            spawn_with_pipes(&exec, options).map_err(cannot_start)?
        };
        process.container_stopped = running.stopped.clone();
        Ok(process)
    }
}

/// An argument of an exec'd command. A path under a mountPath is rebased as the container's
/// own arguments are, but written relative to the working directory: it reaches the same file,
/// and what a program records of it is the path the pod knows without its leading slash, as
/// in a real container. `kubectl cp` relies on that: it checks the member names of the archive
/// `tar cf - <path>` writes.
fn exec_argument(rebase: &Rebase, working_dir: &Path, word: &str) -> String {
    let rebased = rebase.path(word);
    if rebased == word {
        return rebased;
    }
    let Some(below_root) = rebase.below_root(working_dir) else {
        return rebased;
    };
    let mut relative = "../".repeat(below_root.components().count());
    relative.push_str(word.trim_start_matches('/'));
    relative
}

fn spawn_with_pipes(exec: &Launch, options: &ExecOptions) -> std::io::Result<ExecProcess> {
    let piped = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut child = exec
        .command()
        .stdin(piped(options.stdin))
        .stdout(piped(options.stdout))
        .stderr(piped(options.stderr))
        .kill_on_drop(true)
        .spawn()?;
    let input = match child.stdin.take() {
        Some(stdin) => ExecInput::Pipe(stdin),
        None => ExecInput::None,
    };
    let stdout = child
        .stdout
        .take()
        .map(|out| Box::new(out) as Box<dyn AsyncRead + Send + Unpin>);
    let stderr = child
        .stderr
        .take()
        .map(|err| Box::new(err) as Box<dyn AsyncRead + Send + Unpin>);
    Ok(ExecProcess {
        group: process_group(&child),
        child,
        input,
        stdout,
        stderr,
        container_stopped: CancellationToken::new(),
    })
}

fn spawn_in_terminal(exec: &Launch, options: &ExecOptions) -> std::io::Result<ExecProcess> {
    let to_io = |error: pty_process::Error| std::io::Error::other(error.to_string());
    let (pty, pts) = pty_process::open().map_err(to_io)?;
    let mut command = pty_process::Command::new(&exec.program)
        .args(&exec.args)
        .env_clear()
        .envs(exec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&exec.working_dir)
        .kill_on_drop(true);
    if let Some(identity) = &exec.identity {
        command = command.uid(identity.uid).gid(identity.gid);
    }
    // The terminal makes the process a session (and group) leader of its own.
    let child = command.spawn(pts).map_err(to_io)?;
    let (output, input) = pty.into_split();
    Ok(ExecProcess {
        group: process_group(&child),
        child,
        input: if options.stdin || options.tty {
            ExecInput::Terminal(input)
        } else {
            ExecInput::None
        },
        stdout: Some(Box::new(output)),
        stderr: None,
        container_stopped: CancellationToken::new(),
    })
}

fn process_group(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
}

/// Writes a caller's input to the process, if it takes any.
pub(crate) async fn write_input(input: &mut ExecInput, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match input {
        ExecInput::None => Ok(()),
        ExecInput::Pipe(stdin) => stdin.write_all(bytes).await,
        ExecInput::Terminal(terminal) => terminal.write_all(bytes).await,
    }
}

/// Resizes the process's terminal, if it has one.
pub(crate) fn resize(input: &ExecInput, rows: u16, columns: u16) {
    if let ExecInput::Terminal(terminal) = input {
        let _ = terminal.resize(pty_process::Size::new(rows, columns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_under_a_mount_are_relative_to_the_working_directory() {
        let rebase = Rebase::new(PathBuf::from("/pods/p/root"), vec!["/data".to_string()]);
        let root = rebase.root().to_path_buf();
        assert_eq!(exec_argument(&rebase, &root, "/data/a.txt"), "data/a.txt");
        assert_eq!(exec_argument(&rebase, &root, "/data"), "data");
        assert_eq!(
            exec_argument(&rebase, &root.join("data/work"), "/data/a.txt"),
            "../../data/a.txt"
        );
        // Not under a mount: as given.
        assert_eq!(
            exec_argument(&rebase, &root, "/etc/hostname"),
            "/etc/hostname"
        );
        assert_eq!(exec_argument(&rebase, &root, "-xmf"), "-xmf");
        // A working directory outside the pod's root: the rebased absolute path.
        assert_eq!(
            exec_argument(&rebase, Path::new("/usr"), "/data/a.txt"),
            "/pods/p/root/data/a.txt"
        );
    }
}
