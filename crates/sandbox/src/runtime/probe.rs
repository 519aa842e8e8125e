//! Container probes: httpGet, tcpSocket and exec, with the kubelet's thresholds.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use super::process::{Launch, run_probe_command};
use super::volumes::Rebase;

/// What a probe runs against.
pub(crate) struct Target<'a> {
    pub pod_ip: &'a str,
    pub container: &'a Container,
    pub launch: &'a Launch,
    pub rebase: &'a Rebase,
}

/// One probe of one container, with its run of consecutive results.
pub(crate) struct ProbeRunner {
    probe: Probe,
    successes: i32,
    failures: i32,
    verdict: Option<bool>,
}

impl ProbeRunner {
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// When, after the container started, this probe first runs as a startup or liveness
    /// probe: the kubelet's prober ticks every period from the moment it took the pod (here,
    /// when the container starts) and skips the ticks within `initialDelaySeconds`, so the
    /// first probe comes one period after the start at the earliest, never at once.
    pub fn first_tick(&self) -> Duration {
        let period = self.period();
        let delay = seconds(self.probe.initial_delay_seconds, 0);
        let ticks = delay.as_nanos().div_ceil(period.as_nanos()).max(1);
        period * u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// When, after the container started (and passed its startup probe), this probe first runs
    /// as a readiness probe: at once without `initialDelaySeconds`, because the kubelet
    /// triggers a readiness probe as soon as a started container has no result yet, and
    /// otherwise at the first tick past the delay.
    pub fn first_readiness_check(&self) -> Duration {
        if self.probe.initial_delay_seconds.unwrap_or(0) > 0 {
            self.first_tick()
        } else {
            Duration::ZERO
        }
    }

    pub fn period(&self) -> Duration {
        seconds(self.probe.period_seconds, 10)
    }

    /// Probes once. Returns the failure message if it failed, and the new verdict when the
    /// thresholds change it.
    pub async fn step(&mut self, target: &Target<'_>) -> (Option<String>, Option<bool>) {
        let timeout = seconds(self.probe.timeout_seconds, 1);
        let outcome = match tokio::time::timeout(timeout, check(&self.probe, target, timeout)).await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "context deadline exceeded (Client.Timeout exceeded while awaiting headers) after {}s",
                timeout.as_secs()
            )),
        };
        let threshold = |value: Option<i32>| value.filter(|v| *v > 0).unwrap_or(1);
        let (failure, verdict) = match outcome {
            Ok(()) => {
                self.successes += 1;
                self.failures = 0;
                let enough = self.successes >= threshold(self.probe.success_threshold);
                (None, enough.then_some(true))
            }
            Err(message) => {
                self.failures += 1;
                self.successes = 0;
                let enough =
                    self.failures >= self.probe.failure_threshold.filter(|v| *v > 0).unwrap_or(3);
                (Some(message), enough.then_some(false))
            }
        };
        let changed = match verdict {
            Some(verdict) if self.verdict != Some(verdict) => {
                self.verdict = Some(verdict);
                Some(verdict)
            }
            _ => None,
        };
        (failure, changed)
    }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

/// The port a probe names, by number or by the container's port name.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => {
            u16::try_from(*number).map_err(|_| format!("invalid port number: {number}"))
        }
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("couldn't find port {name} in container {}", container.name)),
    }
}

async fn check(probe: &Probe, target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let port = port(target.container, &http.port)?;
        let host = http.host.as_deref().unwrap_or(target.pod_ip);
        if http.scheme.as_deref() == Some("HTTPS") {
            return Err("HTTPS probes are not supported by the sandbox".to_string());
        }
        let path = http.path.as_deref().unwrap_or("/");
        let stream = TcpStream::connect((host, port)).await.map_err(|error| {
            format!("Get \"http://{host}:{port}{path}\": dial tcp {host}:{port}: {error}")
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("Get \"http://{host}:{port}{path}\": {error}"))?;
        let connection = tokio::spawn(connection);
        let mut request = http::Request::get(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::USER_AGENT, "kube-probe/1.34")
            .header(http::header::ACCEPT, "*/*");
        for header in probe
            .http_get
            .as_ref()
            .and_then(|h| h.http_headers.as_ref())
            .into_iter()
            .flatten()
        {
            request = request.header(header.name.as_str(), header.value.as_str());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| format!("invalid probe request: {error}"))?;
        let response = sender.send_request(request).await;
        connection.abort();
        let response =
            response.map_err(|error| format!("Get \"http://{host}:{port}{path}\": {error}"))?;
        let code = response.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(target.container, &tcp.port)?;
        let host = tcp.host.as_deref().unwrap_or(target.pod_ip);
        return TcpStream::connect((host, port))
            .await
            .map(drop)
            .map_err(|error| format!("dial tcp {host}:{port}: {error}"));
    }
    if let Some(exec) = &probe.exec {
        let command: Vec<String> = exec
            .command
            .iter()
            .flatten()
            .map(|word| target.rebase.path(word))
            .collect();
        return run_probe_command(target.launch, &command, timeout).await;
    }
    Err("the probe has no handler the sandbox supports".to_string())
}
