//! Following a backup Job: what the request's state should become, from the Job, its pod and
//! the progress the Job reports. Pure, so every outcome is unit-tested.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use tusk_api::PostgresBackupRequest;

use crate::context::ProgressMark;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No Job yet: create it.
    StartJob,
    /// The Job is working; look again after this long at the latest.
    Wait(Duration),
    /// The request has failed; `delete_job` when the Job must be stopped.
    Fail {
        /// A sentence for a person.
        message: String,
        /// Whether the Job is still running and must be deleted.
        delete_job: bool,
    },
    /// The Job finished: check the request once more against the API server, since the
    /// program reports success just before it exits.
    ConfirmOutcome,
}

fn condition_true<'a>(job: &'a Job, type_: &str) -> Option<(&'a str, &'a str)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == type_ && condition.status == "True")
        .map(|condition| {
            (
                condition.reason.as_deref().unwrap_or_default(),
                condition.message.as_deref().unwrap_or_default(),
            )
        })
}

/// Why the Job's pod stopped, or why it cannot start, from its container state.
pub fn pod_reason(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .find_map(|container| {
            let state = container.state.as_ref()?;
            if let Some(terminated) = &state.terminated {
                let message = terminated
                    .message
                    .as_deref()
                    .map(str::trim)
                    .unwrap_or_default();
                let reason = terminated.reason.as_deref().unwrap_or_default();
                return Some(match (reason.is_empty(), message.is_empty()) {
                    (_, false) => last_line(message),
                    (false, true) => format!("{reason} (exit code {})", terminated.exit_code),
                    (true, true) => format!("exit code {}", terminated.exit_code),
                });
            }
            let waiting = state.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            Some(match waiting.message.as_deref() {
                Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                _ => reason.to_owned(),
            })
        })
}

/// The last non-empty line of a termination message (logs on error): the error itself.
fn last_line(message: &str) -> String {
    let line = message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(message)
        .trim();
    line.chars().take(512).collect()
}

/// Tracks progress: the mark stays while `bytes_done` is unchanged, and restarts otherwise.
pub fn next_mark(previous: Option<&ProgressMark>, bytes_done: i64, now: Timestamp) -> ProgressMark {
    match previous {
        Some(mark) if mark.bytes_done == bytes_done => mark.clone(),
        _ => ProgressMark {
            bytes_done,
            seen_at: now,
        },
    }
}

/// Decides what happens to an unfinished request.
pub fn decide(
    request: &PostgresBackupRequest,
    job: Option<&Job>,
    pods: &[Pod],
    mark: &ProgressMark,
    now: Timestamp,
    stall_timeout: Duration,
) -> Verdict {
    let status = request.status.clone().unwrap_or_default();
    let Some(job) = job else {
        return match status.job_name {
            Some(job_name) => Verdict::Fail {
                message: format!(
                    "The backup Job {job_name} disappeared before the backup finished; request a new backup"
                ),
                delete_job: false,
            },
            None => Verdict::StartJob,
        };
    };
    if let Some((reason, message)) =
        condition_true(job, "Failed").or_else(|| condition_true(job, "FailureTarget"))
    {
        let cause = pod_reason(pods);
        let mut text = format!("The backup Job failed ({reason}");
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(message);
        }
        text.push(')');
        if let Some(cause) = cause {
            text.push_str(": ");
            text.push_str(&cause);
        }
        return Verdict::Fail {
            message: text,
            delete_job: false,
        };
    }
    if condition_true(job, "Complete").is_some()
        || condition_true(job, "SuccessCriteriaMet").is_some()
    {
        return Verdict::ConfirmOutcome;
    }
    let timeout = SignedDuration::try_from(stall_timeout).unwrap_or(SignedDuration::MAX);
    let deadline = mark
        .seen_at
        .saturating_add(timeout)
        .unwrap_or(Timestamp::MAX);
    if now >= deadline {
        let waited = humantime::format_duration(stall_timeout);
        // The Job's own diagnosis (WAL not being archived) names the cause better than the
        // pod, which is merely waiting.
        let message = match (status.stall_cause.as_deref(), pod_reason(pods)) {
            (Some(cause), _) => {
                format!("{cause}. The backup waited {waited} for it and its Job was stopped")
            }
            (None, Some(cause)) => {
                format!("The backup made no progress for {waited}; its Job was stopped: {cause}")
            }
            (None, None) => {
                format!("The backup made no progress for {waited}; its Job was stopped")
            }
        };
        return Verdict::Fail {
            message,
            delete_job: true,
        };
    }
    Verdict::Wait(Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use tusk_api::PostgresBackupRequestSpec;
    use tusk_api::backup_request::PostgresBackupRequestStatus;
    use tusk_api::common::ClusterReference;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn request(job_name: Option<&str>) -> PostgresBackupRequest {
        let mut request = PostgresBackupRequest::new(
            "r",
            PostgresBackupRequestSpec {
                cluster: ClusterReference::new("elephant"),
            },
        );
        request.status = Some(PostgresBackupRequestStatus {
            job_name: job_name.map(str::to_owned),
            ..Default::default()
        });
        request
    }

    fn job(condition: Option<(&str, &str, &str)>) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: condition.map(|(type_, reason, message)| {
                    vec![JobCondition {
                        type_: type_.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(state: ContainerState) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "backup".into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    fn mark(second: i64) -> ProgressMark {
        ProgressMark {
            bytes_done: 0,
            seen_at: at(second),
        }
    }

    #[test]
    fn a_new_request_starts_a_job_and_a_vanished_job_fails_it() {
        assert_eq!(
            decide(&request(None), None, &[], &mark(0), at(0), TEN_MINUTES),
            Verdict::StartJob
        );
        let verdict = decide(
            &request(Some("r-backup")),
            None,
            &[],
            &mark(0),
            at(0),
            TEN_MINUTES,
        );
        assert!(
            matches!(verdict, Verdict::Fail { ref message, .. } if message.contains("r-backup disappeared"))
        );
    }

    #[test]
    fn a_failed_job_fails_the_request_with_its_reason_and_the_pods_message() {
        let failed = job(Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        )));
        let terminated = pod(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                reason: Some("Error".into()),
                message: Some(
                    "starting\npg_basebackup: error: connection to server failed\n".into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        let verdict = decide(
            &request(Some("r-backup")),
            Some(&failed),
            &[terminated],
            &mark(0),
            at(1),
            TEN_MINUTES,
        );
        assert_eq!(
            verdict,
            Verdict::Fail {
                message: "The backup Job failed (BackoffLimitExceeded: Job has reached the specified backoff limit): pg_basebackup: error: connection to server failed".into(),
                delete_job: false,
            }
        );
    }

    #[test]
    fn no_progress_for_the_timeout_fails_and_stops_the_job() {
        let running = job(None);
        assert_eq!(
            decide(
                &request(Some("j")),
                Some(&running),
                &[],
                &mark(100),
                at(400),
                TEN_MINUTES
            ),
            Verdict::Wait(Duration::from_secs(300))
        );
        let stuck = pod(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image".into()),
            }),
            ..Default::default()
        });
        let verdict = decide(
            &request(Some("j")),
            Some(&running),
            &[stuck],
            &mark(100),
            at(700),
            TEN_MINUTES,
        );
        assert_eq!(
            verdict,
            Verdict::Fail {
                message: "The backup made no progress for 10m; its Job was stopped: ImagePullBackOff: Back-off pulling image".into(),
                delete_job: true,
            }
        );
    }

    #[test]
    fn a_stall_names_the_cause_the_job_found() {
        let mut waiting = request(Some("j"));
        waiting.status.as_mut().unwrap().stall_cause = Some(
            "WAL is not being archived: archiving segment 000000010000000000000003 failed".into(),
        );
        let verdict = decide(
            &waiting,
            Some(&job(None)),
            &[],
            &mark(100),
            at(700),
            TEN_MINUTES,
        );
        assert_eq!(
            verdict,
            Verdict::Fail {
                message: "WAL is not being archived: archiving segment 000000010000000000000003 failed. The backup waited 10m for it and its Job was stopped".into(),
                delete_job: true,
            }
        );
    }

    #[test]
    fn progress_restarts_the_stall_timer() {
        let first = next_mark(None, 10, at(0));
        assert_eq!(next_mark(Some(&first), 10, at(50)), first);
        assert_eq!(next_mark(Some(&first), 20, at(50)).seen_at, at(50));
    }

    #[test]
    fn a_completed_job_is_confirmed_against_the_request() {
        let complete = job(Some(("Complete", "", "")));
        assert_eq!(
            decide(
                &request(Some("j")),
                Some(&complete),
                &[],
                &mark(0),
                at(1),
                TEN_MINUTES
            ),
            Verdict::ConfirmOutcome
        );
    }
}
