//! `tusk sandbox --runtime-dir` survives a hard kill: the containers the killed process left
//! running as orphans are ended when it starts again, before their pods run afresh.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A running `tusk sandbox`, SIGKILLed with whatever it left if the test fails midway.
struct SandboxProcess {
    child: Child,
    marker: String,
}

impl SandboxProcess {
    fn start(dir: &Path, marker: &str) -> Self {
        let kubeconfig = dir.join("kubeconfig");
        // A restart must not be mistaken for ready by the previous run's kubeconfig.
        let _ = std::fs::remove_file(&kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sandbox.log"))
            .expect("log file opens");
        let child = Command::new(env!("CARGO_BIN_EXE_tusk"))
            .arg("sandbox")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--runtime-dir")
            .arg(dir.join("runtime"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file clones"))
            .stderr(log)
            .spawn()
            .expect("tusk sandbox starts");
        let process = Self {
            child,
            marker: marker.to_string(),
        };
        wait_for(dir, "the kubeconfig", Duration::from_secs(60), || {
            kubeconfig.exists().then_some(())
        });
        process
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"))
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for process in processes_with(&self.marker) {
            let _ = killpg(Pid::from_raw(process.group), Signal::SIGKILL);
        }
    }
}

/// A live process, as /proc shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    group: i32,
}

/// The live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<Process> {
    let entries = std::fs::read_dir("/proc").expect("/proc is readable");
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .filter_map(live_process)
        .collect()
}

/// The process `pid` if it runs (a zombie has ended, it only awaits its reaper).
fn live_process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if matches!(*fields.first()?, "Z" | "X") {
        return None;
    }
    Some(Process {
        pid,
        group: fields.get(2)?.parse().ok()?,
    })
}

/// The live processes of process group `group`.
fn group_members(group: i32) -> Vec<Process> {
    let entries = std::fs::read_dir("/proc").expect("/proc is readable");
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(live_process)
        .filter(|process| process.group == group)
        .collect()
}

fn kubectl(dir: &Path, args: &[&str], stdin: Option<&str>) -> Option<String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().expect("kubectl's stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("kubectl reads its input");
    drop(input);
    let output = child.wait_with_output().expect("kubectl finishes");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `probe` until it yields, or fails the test with the sandbox's log after `limit`.
fn wait_for<T>(dir: &Path, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("sandbox.log")).unwrap_or_default();
            panic!("timed out waiting for {what}; tusk sandbox's log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The process groups the runtime's records (`pods/<uid>/containers/<name>.pgid`) name.
fn recorded_groups(dir: &Path) -> Vec<i32> {
    let pods = std::fs::read_dir(dir.join("runtime/pods")).expect("the runtime has a pods dir");
    pods.flatten()
        .filter_map(|pod| std::fs::read_dir(pod.path().join("containers")).ok())
        .flat_map(|records| records.flatten())
        .filter(|record| record.path().extension().is_some_and(|e| e == "pgid"))
        .map(|record| {
            let text = std::fs::read_to_string(record.path()).expect("a record is readable");
            let group = text
                .split_whitespace()
                .next()
                .expect("a record names a group");
            group.parse().expect("a group id is a number")
        })
        .collect()
}

/// The pod's phase and its container's restart count, once it is Running.
fn running_restart_count(dir: &Path) -> Option<i64> {
    let jsonpath = "{.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}";
    let output = kubectl(
        dir,
        &[
            "get",
            "pod",
            "sleeper",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ],
        None,
    )?;
    let mut words = output.split_whitespace();
    let phase = words.next()?;
    let restarts = words.next()?.parse().ok()?;
    let started = words.next();
    (phase == "Running" && started.is_some()).then_some(restarts)
}

#[test]
fn containers_orphaned_by_a_killed_sandbox_are_ended_before_their_pods_run_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir: PathBuf = dir.path().to_path_buf();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos();
    let marker = format!("tusk-orphan-marker-{}-{nanos}", std::process::id());
    // It ignores SIGTERM, as a busy server may: only a kill of its group ends it.
    let script = format!("trap '' TERM; sleep 1000; : {marker}");
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    })
    .to_string();

    let mut first = SandboxProcess::start(&dir, &marker);
    wait_for(
        &dir,
        "the pod to be created",
        Duration::from_secs(30),
        || kubectl(&dir, &["apply", "-f", "-"], Some(&pod)),
    );
    wait_for(&dir, "the pod to run", Duration::from_secs(30), || {
        running_restart_count(&dir)
    });
    let orphan = wait_for(
        &dir,
        "the container's process",
        Duration::from_secs(10),
        || processes_with(&marker).first().copied(),
    );

    first.child.kill().expect("SIGKILL reaches tusk sandbox");
    first.child.wait().expect("tusk sandbox is reaped");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        live_process(orphan.pid),
        Some(orphan),
        "the container should outlive its killed host, as an orphan"
    );

    let mut second = SandboxProcess::start(&dir, &marker);
    wait_for(
        &dir,
        "the orphan to be killed",
        Duration::from_secs(30),
        || group_members(orphan.group).is_empty().then_some(()),
    );
    let restarts = wait_for(
        &dir,
        "the pod to run again",
        Duration::from_secs(30),
        || running_restart_count(&dir).filter(|restarts| *restarts >= 1),
    );
    assert!(restarts >= 1);
    let successor = wait_for(
        &dir,
        "the new container's process",
        Duration::from_secs(10),
        || processes_with(&marker).first().copied(),
    );
    assert_ne!(successor.group, orphan.group);
    assert_eq!(
        processes_with(&marker),
        vec![successor],
        "exactly one instance of the container should run"
    );
    assert_eq!(
        recorded_groups(&dir),
        vec![successor.group],
        "the runtime should record the running container's process group, and only it"
    );
    let log = std::fs::read_to_string(dir.join("sandbox.log")).unwrap_or_default();
    assert!(
        log.contains("left behind"),
        "the restarted sandbox should say what it cleaned up:\n{log}"
    );

    // The container crashing under the same runtime: it restarts, and its record follows.
    killpg(Pid::from_raw(successor.group), Signal::SIGKILL).expect("the container can be killed");
    wait_for(
        &dir,
        "the restart to be counted",
        Duration::from_secs(30),
        || running_restart_count(&dir).filter(|count| *count > restarts),
    );
    let restarted = wait_for(
        &dir,
        "the restarted container's process",
        Duration::from_secs(10),
        || processes_with(&marker).first().copied(),
    );
    assert_ne!(restarted.group, successor.group);
    assert_eq!(
        recorded_groups(&dir),
        vec![restarted.group],
        "a restart should replace the container's record"
    );

    kill(second.pid(), Signal::SIGINT).expect("SIGINT reaches tusk sandbox");
    let exited = wait_for(
        &dir,
        "tusk sandbox to stop",
        Duration::from_secs(30),
        || {
            second
                .child
                .try_wait()
                .expect("tusk sandbox can be waited for")
        },
    );
    assert!(exited.success(), "tusk sandbox exited with {exited}");
    assert_eq!(
        processes_with(&marker),
        Vec::new(),
        "no container process should outlive a stopped sandbox"
    );
    assert!(group_members(restarted.group).is_empty());
    assert_eq!(
        recorded_groups(&dir),
        Vec::<i32>::new(),
        "the runtime should forget the groups it stopped itself"
    );
}
