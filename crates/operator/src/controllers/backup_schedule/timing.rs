//! When a schedule runs next. Pure functions of the spec, the last run and the cluster's uid.

use croner::Cron;
use croner::parser::CronParser;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use sha2::{Digest, Sha256};
use tusk_api::PostgresBackupScheduleSpec;

use crate::error::{Error, Result};

/// A deterministic offset in `[0, interval)` derived from the cluster's uid. Schedules of
/// clusters created together (500 projects' daily backups) start spread over the interval
/// instead of all in the same minute, and each cluster keeps its slot across operator restarts.
pub fn offset(cluster_uid: &str, interval: SignedDuration) -> SignedDuration {
    let seconds = interval.as_secs().max(1) as u64;
    let digest = Sha256::digest(cluster_uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    SignedDuration::from_secs((u64::from_be_bytes(first) % seconds) as i64)
}

fn parse_cron(expression: &str) -> Result<Cron> {
    CronParser::new()
        .parse(expression)
        .map_err(|error| Error::InvalidSchedule {
            schedule: expression.to_owned(),
            message: error.to_string(),
        })
}

/// The shortest time between two runs of one schedule, whatever its spec says. Admission
/// already refuses a cron expression that could fire more often; this holds for a schedule
/// admitted under older rules, or by an API server that skipped them.
pub const MIN_GAP: SignedDuration = SignedDuration::from_hours(1);

/// The moment the schedule is next due, never less than [`MIN_GAP`] after the last run.
/// `created_at` is the schedule's creation time, the anchor of its first run.
pub fn next_run(
    spec: &PostgresBackupScheduleSpec,
    created_at: Timestamp,
    last_run_at: Option<Timestamp>,
    cluster_uid: &str,
) -> Result<Timestamp> {
    let next = planned_run(spec, created_at, last_run_at, cluster_uid)?;
    Ok(match last_run_at {
        Some(last) => next.max(last + MIN_GAP),
        None => next,
    })
}

/// The moment the spec asks for, before [`MIN_GAP`] is applied.
fn planned_run(
    spec: &PostgresBackupScheduleSpec,
    created_at: Timestamp,
    last_run_at: Option<Timestamp>,
    cluster_uid: &str,
) -> Result<Timestamp> {
    if let Some(expression) = &spec.schedule {
        let cron = parse_cron(expression)?;
        let after = last_run_at.unwrap_or(created_at).to_zoned(TimeZone::UTC);
        let next =
            cron.find_next_occurrence(&after, false)
                .map_err(|error| Error::InvalidSchedule {
                    schedule: expression.clone(),
                    message: error.to_string(),
                })?;
        return Ok(next.timestamp());
    }
    let hours = spec.interval.unwrap_or(24).max(1);
    let interval = SignedDuration::from_hours(i64::from(hours));
    Ok(match last_run_at {
        Some(last) => last + interval,
        None => created_at + offset(cluster_uid, interval),
    })
}

/// The name of the request a schedule creates at `at`: stable for a given minute, so a retried
/// reconcile finds the request it already created instead of making a second one.
pub fn request_name(cluster: &str, schedule: &str, at: Timestamp) -> String {
    format!(
        "{cluster}-{schedule}-{}",
        at.to_zoned(TimeZone::UTC).strftime("%Y%m%d-%H%M")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::common::ClusterReference;

    fn spec(interval: Option<i32>, schedule: Option<&str>) -> PostgresBackupScheduleSpec {
        PostgresBackupScheduleSpec {
            cluster: ClusterReference::new("elephant"),
            interval,
            schedule: schedule.map(str::to_owned),
            keep: None,
            suspend: false,
            triggered_by: Default::default(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_first_run_is_offset_and_later_runs_follow_the_interval() {
        let created = at("2026-01-01T00:00:00Z");
        let first = next_run(&spec(Some(24), None), created, None, "uid-1").unwrap();
        assert!(first >= created && first < created + SignedDuration::from_hours(24));
        assert_eq!(
            first,
            next_run(&spec(Some(24), None), created, None, "uid-1").unwrap()
        );
        let ran = at("2026-01-01T05:00:00Z");
        assert_eq!(
            next_run(&spec(Some(24), None), created, Some(ran), "uid-1").unwrap(),
            at("2026-01-02T05:00:00Z")
        );
    }

    #[test]
    fn five_hundred_clusters_spread_across_the_day() {
        let interval = SignedDuration::from_hours(24);
        let mut per_hour = [0usize; 24];
        let mut minutes = std::collections::HashSet::new();
        for project in 0..500 {
            let uid = format!("6f1e2d3c-0000-4000-8000-{project:012}");
            let offset = offset(&uid, interval);
            assert!(offset >= SignedDuration::ZERO && offset < interval);
            per_hour[(offset.as_secs() / 3600) as usize] += 1;
            minutes.insert(offset.as_secs() / 60);
        }
        // 500 over 24 hours is about 21 per hour; no hour gets a crowd.
        assert!(
            per_hour.iter().all(|&count| count > 5 && count < 45),
            "{per_hour:?}"
        );
        assert!(
            minutes.len() > 400,
            "only {} distinct minutes",
            minutes.len()
        );
    }

    #[test]
    fn cron_schedules_run_at_their_times() {
        let created = at("2026-01-01T10:00:00Z");
        let daily = spec(None, Some("30 2 * * *"));
        assert_eq!(
            next_run(&daily, created, None, "u").unwrap(),
            at("2026-01-02T02:30:00Z")
        );
        assert_eq!(
            next_run(&daily, created, Some(at("2026-01-02T02:30:00Z")), "u").unwrap(),
            at("2026-01-03T02:30:00Z")
        );
        let hourly = spec(None, Some("@hourly"));
        assert_eq!(
            next_run(&hourly, created, None, "u").unwrap(),
            at("2026-01-01T11:00:00Z")
        );
        assert!(next_run(&spec(None, Some("61 * * * *")), created, None, "u").is_err());
    }

    #[test]
    fn no_expression_runs_a_schedule_twice_within_an_hour() {
        let created = at("2026-01-01T10:00:30Z");
        for expression in ["* * * * *", "*/5 * * * *", "0,30 * * * *", "0 * * * * *"] {
            let every_minute = spec(None, Some(expression));
            let first = next_run(&every_minute, created, None, "u").unwrap();
            assert!(first > created, "{expression}");
            let second = next_run(&every_minute, created, Some(first), "u").unwrap();
            assert!(
                second >= first + MIN_GAP,
                "{expression}: {first} then {second}"
            );
        }
        // An hourly cron keeps its minute when runs are on time.
        let hourly = spec(None, Some("15 * * * *"));
        assert_eq!(
            next_run(&hourly, created, Some(at("2026-01-01T10:15:00Z")), "u").unwrap(),
            at("2026-01-01T11:15:00Z")
        );
    }

    #[test]
    fn request_names_are_stable_within_a_minute() {
        assert_eq!(
            request_name("elephant", "default", at("2026-03-04T05:06:59Z")),
            "elephant-default-20260304-0506"
        );
    }
}
