//! One container's life: start it, probe it, restart it with the kubelet's crash-loop
//! back-off, and stop it when asked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::sync::{Notify, watch};

use super::Node;
use super::beneath::{Dir, components};
use super::env::{self, expand};
use super::probe::{ProbeRunner, Target};
use super::process::{ContainerProcess, Identity, Launch, exit_code, resolve_program};
use super::status::{ContainerRecord, PodState, State, Termination};
use super::termination;
use super::volumes::Rebase;
use crate::apiserver::ops::now;

/// A container that ran this long without failing starts its back-off over, as the kubelet's
/// does after twice its maximum back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// What every container of a pod shares.
pub(crate) struct PodContext {
    pub node: Arc<Node>,
    pub pod: Arc<Pod>,
    pub uid: String,
    pub pod_ip: String,
    pub rebase: Rebase,
    pub state: Arc<Mutex<PodState>>,
    pub changed: Arc<Notify>,
    pub pod_identity: Option<Identity>,
    pub pg_bindir: Option<std::path::PathBuf>,
    /// Set to the grace period when the containers must stop.
    pub stop: watch::Receiver<Option<Duration>>,
}

impl PodContext {
    fn update(&self, init: bool, index: usize, f: impl FnOnce(&mut ContainerRecord)) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let records = if init {
                &mut state.init
            } else {
                &mut state.containers
            };
            if let Some(record) = records.get_mut(index) {
                f(record);
            }
        }
        self.changed.notify_one();
    }

    fn record(&self, init: bool, index: usize) -> Option<ContainerRecord> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let records = if init { &state.init } else { &state.containers };
        records.get(index).cloned()
    }

    fn pod_name(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.name_any(),
            self.pod.namespace().unwrap_or_default(),
            self.uid
        )
    }

    /// Waits until the containers must stop; returns the grace period.
    async fn stop_requested(&self) -> Duration {
        let mut stop = self.stop.clone();
        loop {
            if let Some(grace) = *stop.borrow_and_update() {
                return grace;
            }
            if stop.changed().await.is_err() {
                // The pod worker is gone: nobody will wait for a graceful stop.
                return Duration::ZERO;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }
}

/// How a container instance ended, from the runtime's point of view.
enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Unhealthy(std::io::Result<std::process::ExitStatus>),
    Stopped(std::io::Result<std::process::ExitStatus>),
}

/// Runs container `index` (of the init containers if `init`) until it is done for good: it
/// completed under its restart policy, or the pod stops. Returns its last exit code.
pub(crate) async fn supervise(ctx: &PodContext, init: bool, index: usize) -> Option<i32> {
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    let list = if init {
        spec.init_containers.clone().unwrap_or_default()
    } else {
        spec.containers.clone()
    };
    let container = list.get(index)?.clone();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".to_string());
    let pod_grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30),
    );
    let backoff_initial = ctx.node.options.backoff_initial;
    let backoff_max = ctx.node.options.backoff_max;
    let mut backoff: Option<Duration> = None;
    let mut last_exit = None;
    let mut ran_before = false;
    loop {
        if ctx.stopping() {
            return last_exit;
        }
        let owner = ctx.pod_identity.as_ref().map(|id| (id.uid, id.gid));
        let prepared = match prepare(ctx, &container).await {
            Ok(launch) => termination::MessageFile::create(ctx.rebase.root(), &container, owner)
                .map(|file| (launch, file)),
            Err(message) => Err(message),
        };
        let (launch, message_file) = match prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                ctx.update(init, index, |record| {
                    record.state = State::Waiting {
                        reason: "CreateContainerConfigError".to_string(),
                        message: Some(message.clone()),
                    };
                });
                ctx.node
                    .event(&ctx.pod, true, "Failed", format!("Error: {message}"))
                    .await;
                let delay = next_backoff(&mut backoff, backoff_initial, backoff_max);
                tokio::select! {
                    _ = tokio::time::sleep(delay.max(Duration::from_secs(1))) => {}
                    _ = ctx.stop_requested() => return last_exit,
                }
                continue;
            }
        };
        if ran_before {
            ctx.update(init, index, |record| record.restart_count += 1);
        }
        ran_before = true;
        let restart_count = ctx.record(init, index).map_or(0, |r| r.restart_count);
        let started = Instant::now();
        let started_at = now();
        let mut log_path = None;
        let spawned = ctx
            .node
            .logs
            .create(&ctx.uid, &container.name, restart_count)
            .and_then(|(path, file)| {
                log_path = Some(path);
                let record = super::leftovers::record_path(
                    &ctx.node.options.pods_dir(),
                    &ctx.uid,
                    &container.name,
                );
                ContainerProcess::spawn(&launch, file, record)
            });
        let mut process = match spawned {
            Ok(process) => process,
            Err(error) => {
                if let Some(path) = &log_path {
                    ctx.node.logs.finished(path);
                }
                // The program as the container sees it: under a mountPath, not the pod's root.
                let program = match ctx.rebase.below_root(&launch.program) {
                    Some(inside) => std::path::Path::new("/").join(inside),
                    None => launch.program.clone(),
                };
                let message = format!(
                    "failed to start container \"{}\": exec: \"{}\": {}",
                    container.name,
                    program.display(),
                    start_error_cause(&error)
                );
                ctx.node
                    .event(&ctx.pod, true, "Failed", format!("Error: {message}"))
                    .await;
                let termination = Termination {
                    exit_code: 128,
                    reason: "StartError".to_string(),
                    message: Some(message.clone()),
                    started_at: None,
                    finished_at: now(),
                    container_id: None,
                };
                last_exit = Some(128);
                if restarts_after_failure(&policy) && !ctx.stopping() {
                    // The kubelet's sync that failed to start the container records why, and
                    // the container waits with that reason until the pod's next sync, an error
                    // back-off later; only then does the crash-loop back-off show.
                    ctx.update(init, index, |record| {
                        record.state = State::Waiting {
                            reason: "RunContainerError".to_string(),
                            message: Some(message),
                        };
                        record.last = Some(termination.clone());
                        record.ready = false;
                        record.started = false;
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff_initial) => {}
                        _ = ctx.stop_requested() => {}
                    }
                }
                if !restart_after(
                    ctx,
                    init,
                    index,
                    &policy,
                    termination,
                    &mut backoff,
                    started,
                    &container.name,
                )
                .await
                {
                    return last_exit;
                }
                continue;
            }
        };
        // Reachable for exec while it runs.
        let _running = ctx.node.access.register_container(
            &ctx.uid,
            &container.name,
            &launch,
            &ctx.rebase,
            ctx.node.tusk_executable.clone(),
            ctx.pg_bindir.clone(),
        );
        let container_id = format!("sandbox://{}-{}-{restart_count}", ctx.uid, container.name);
        let image = container.image.as_deref().unwrap_or_default();
        ctx.node
            .event(
                &ctx.pod,
                false,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            )
            .await;
        ctx.node
            .event(
                &ctx.pod,
                false,
                "Created",
                format!("Created container: {}", container.name),
            )
            .await;
        ctx.node
            .event(
                &ctx.pod,
                false,
                "Started",
                format!("Started container {}", container.name),
            )
            .await;
        let has_startup = container.startup_probe.is_some() && !init;
        let has_readiness = container.readiness_probe.is_some() && !init;
        ctx.update(init, index, |record| {
            record.state = State::Running {
                started_at: started_at.clone(),
            };
            record.container_id = Some(container_id.clone());
            record.started = !has_startup;
            record.ready = !init && !has_startup && !has_readiness;
        });
        let target = Target {
            pod_ip: &ctx.pod_ip,
            container: &container,
            launch: &launch,
            rebase: &ctx.rebase,
        };
        let ended = tokio::select! {
            status = process.wait() => Ended::Exited(status),
            failure = probe(ctx, init, index, &target) => {
                ctx.node.event(&ctx.pod, false, "Killing", format!("Container {} {failure}, will be restarted", container.name)).await;
                Ended::Unhealthy(process.stop(pod_grace).await)
            }
            grace = ctx.stop_requested() => {
                if !ctx.node.shutdown.is_cancelled() {
                    ctx.node.event(&ctx.pod, false, "Killing", format!("Stopping container {}", container.name)).await;
                }
                Ended::Stopped(process.stop(grace).await)
            }
        };
        if let Some(path) = &log_path {
            ctx.node.logs.finished(path);
        }
        let (status, stopped) = match ended {
            Ended::Exited(status) | Ended::Unhealthy(status) => (status, false),
            Ended::Stopped(status) => (status, true),
        };
        let code = status.as_ref().map(exit_code).unwrap_or(128);
        last_exit = Some(code);
        let termination = Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
            message: termination::message(&container, &message_file, code, log_path.as_deref()),
            started_at: Some(started_at),
            finished_at: now(),
            container_id: Some(container_id),
        };
        if stopped {
            ctx.update(init, index, |record| {
                record.state = State::Terminated(termination);
                record.ready = false;
                record.started = false;
            });
            return last_exit;
        }
        if !restart_after(
            ctx,
            init,
            index,
            &policy,
            termination,
            &mut backoff,
            started,
            &container.name,
        )
        .await
        {
            return last_exit;
        }
    }
}

/// Records a finished instance and decides, by the restart policy, whether another follows;
/// waits out the crash-loop back-off first. `false`: the container is done.
#[allow(clippy::too_many_arguments)]
async fn restart_after(
    ctx: &PodContext,
    init: bool,
    index: usize,
    policy: &str,
    termination: Termination,
    backoff: &mut Option<Duration>,
    started: Instant,
    name: &str,
) -> bool {
    let succeeded = termination.exit_code == 0;
    let restart = match policy {
        "Never" => false,
        // Init containers are done once they succeed, whatever the policy.
        "OnFailure" => !succeeded,
        _ => !(init && succeeded),
    };
    if !restart || ctx.stopping() {
        ctx.update(init, index, |record| {
            record.state = State::Terminated(termination);
            record.ready = false;
            record.started = false;
        });
        return false;
    }
    if started.elapsed() >= BACKOFF_RESET_AFTER {
        *backoff = None;
    }
    let delay = next_backoff(
        backoff,
        ctx.node.options.backoff_initial,
        ctx.node.options.backoff_max,
    );
    if delay.is_zero() {
        ctx.update(init, index, |record| {
            record.state = State::Terminated(termination.clone());
            record.last = Some(termination);
            record.ready = false;
            record.started = false;
        });
        return true;
    }
    let message = format!(
        "back-off {}s restarting failed container={name} pod={}",
        delay.as_secs(),
        ctx.pod_name()
    );
    ctx.update(init, index, |record| {
        record.state = State::Waiting {
            reason: "CrashLoopBackOff".to_string(),
            message: Some(message),
        };
        record.last = Some(termination);
        record.ready = false;
        record.started = false;
    });
    ctx.node
        .event(
            &ctx.pod,
            true,
            "BackOff",
            format!(
                "Back-off restarting failed container {name} in pod {}",
                ctx.pod_name()
            ),
        )
        .await;
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = ctx.stop_requested() => false,
    }
}

/// Whether a container that failed is started again under the pod's restart `policy`.
fn restarts_after_failure(policy: &str) -> bool {
    policy != "Never"
}

/// Why a container's process could not be started, as the OCI runtime words it (Go's text for
/// an errno, such as `permission denied`), or as the kubelet words a program found nowhere.
fn start_error_cause(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound && error.raw_os_error().is_none() {
        return "executable file not found in $PATH".to_string();
    }
    match error.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect()
            })
        }
        None => error.to_string(),
    }
}

/// The kubelet's back-off: the first restart is immediate, then `initial`, doubling to `max`.
fn next_backoff(current: &mut Option<Duration>, initial: Duration, max: Duration) -> Duration {
    let delay = match *current {
        None => Duration::ZERO,
        Some(previous) if previous.is_zero() => initial,
        Some(previous) => (previous * 2).min(max),
    };
    *current = Some(delay);
    delay
}

/// Runs the container's probes while it runs. Returns only when a liveness (or startup)
/// probe has failed for good, with the reason.
async fn probe(ctx: &PodContext, init: bool, index: usize, target: &Target<'_>) -> String {
    if init {
        return std::future::pending().await;
    }
    let container = target.container;
    if let Some(startup) = &container.startup_probe {
        let mut runner = ProbeRunner::new(startup.clone());
        tokio::time::sleep(runner.first_tick()).await;
        loop {
            let (failure, verdict) = runner.step(target).await;
            if let Some(message) = failure {
                ctx.node
                    .event(
                        &ctx.pod,
                        true,
                        "Unhealthy",
                        format!("Startup probe failed: {message}"),
                    )
                    .await;
            }
            match verdict {
                Some(true) => break,
                Some(false) => return "failed startup probe".to_string(),
                None => tokio::time::sleep(runner.period()).await,
            }
        }
        ctx.update(init, index, |record| {
            record.started = true;
            record.ready = container.readiness_probe.is_none();
        });
    }
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            return std::future::pending().await;
        };
        let mut runner = ProbeRunner::new(probe.clone());
        tokio::time::sleep(runner.first_readiness_check()).await;
        loop {
            let (failure, verdict) = runner.step(target).await;
            if let Some(message) = failure {
                ctx.node
                    .event(
                        &ctx.pod,
                        true,
                        "Unhealthy",
                        format!("Readiness probe failed: {message}"),
                    )
                    .await;
            }
            if let Some(ready) = verdict {
                ctx.update(init, index, |record| record.ready = ready);
            }
            tokio::time::sleep(runner.period()).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return std::future::pending().await;
        };
        let mut runner = ProbeRunner::new(probe.clone());
        tokio::time::sleep(runner.first_tick()).await;
        loop {
            let (failure, verdict) = runner.step(target).await;
            if let Some(message) = failure {
                ctx.node
                    .event(
                        &ctx.pod,
                        true,
                        "Unhealthy",
                        format!("Liveness probe failed: {message}"),
                    )
                    .await;
            }
            if verdict == Some(false) {
                return "failed liveness probe".to_string();
            }
            tokio::time::sleep(runner.period()).await;
        }
    };
    tokio::select! {
        reason = liveness => reason,
        never = readiness => never,
    }
}

/// Resolves the container's command, arguments, environment, directory and user.
async fn prepare(ctx: &PodContext, container: &Container) -> Result<Launch, String> {
    // The name becomes a file name (its logs, its process record).
    if !is_container_name(&container.name) {
        return Err(format!(
            "invalid container name {:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            container.name
        ));
    }
    let environment = env::build(&ctx.node, &ctx.pod, container, &ctx.pod_ip, &ctx.rebase)
        .await
        .map_err(|error| error.0)?;
    let lookup = |name: &str| environment.get(name).map(str::to_string);
    let mut words: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|word| ctx.rebase.path(&expand(word, lookup)))
        .collect();
    if words.is_empty() {
        return Err(format!(
            "container {} has no command: the sandbox ignores images, so it needs one",
            container.name
        ));
    }
    let name = words.remove(0);
    // A program found nowhere fails to start, as a missing binary in an image does.
    let program = resolve_program(
        &name,
        &ctx.node.tusk_executable,
        environment.get("PATH"),
        ctx.pg_bindir.as_deref(),
        ctx.pod_identity.as_ref(),
    )
    .unwrap_or_else(|| std::path::PathBuf::from(&name));
    let working_dir = match container.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(dir) => {
            let rebased = ctx.rebase.path(dir);
            let path = std::path::PathBuf::from(&rebased);
            if rebased == dir && !path.exists() {
                // A directory the image would have had: it lives in the pod's root, created
                // without following any symlink the pod may have put there.
                let cannot = |error: std::io::Error| {
                    format!("cannot create the working directory {dir}: {error}")
                };
                let relative =
                    components(dir).map_err(|error| format!("invalid workingDir: {error}"))?;
                let owner = ctx.pod_identity.as_ref().map(|id| (id.uid, id.gid));
                Dir::open(ctx.rebase.root())
                    .and_then(|root| root.descend(&relative, 0o755, owner))
                    .map_err(cannot)?;
                ctx.rebase.mount_point(dir)
            } else {
                path
            }
        }
        None => ctx.rebase.root().to_path_buf(),
    };
    // The pod's own user runs every container: a container's runAsUser cannot pick another
    // local user (some other pod's, or a host user's).
    let identity = ctx.pod_identity.clone();
    let mut env = environment;
    if env.get("HOME").is_none() {
        let home = identity
            .as_ref()
            .map(|i| i.home.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/root".to_string());
        env.set("HOME", home);
    }
    Ok(Launch {
        program,
        args: words,
        env: env.into_entries(),
        working_dir,
        identity,
    })
}

/// Whether `name` is a DNS-1123 label, as Kubernetes requires of container names.
pub(crate) fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
