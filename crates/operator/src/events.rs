//! Event reasons, and the one [`Recorder`] in the context that publishes Events.
//!
//! Notes are sentences a person can act on, and never contain a secret value.
//!
//! A repeat of an Event is counted on the Event already published (its `series`, shown as
//! `(x5 over 3m)` by `kubectl describe`) rather than published again. kube's own `Recorder` (like
//! client-go's) takes an Event for a repeat when its type, reason, action and object match,
//! whatever its note: a second failure with the same reason but another message would only add
//! to the first one's count, and its message would be lost. This recorder takes an Event for a
//! repeat only when its note matches too, so two different failures are two Events.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;

/// Event reasons (PascalCase).
pub mod reasons {
    /// A backup Job was started for a request.
    pub const BACKUP_STARTED: &str = "BackupStarted";
    /// A backup request succeeded.
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    /// A backup request failed.
    pub const BACKUP_FAILED: &str = "BackupFailed";
    /// A finalizer step is running.
    pub const FINALIZER: &str = "Finalizer";
    /// A step failed; the note is the failure's message.
    pub const ERROR: &str = "Error";
    /// The spec, or something it names, cannot be used as written; the note says which field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A schedule created a backup request.
    pub const BACKUP_SCHEDULED: &str = "BackupScheduled";
    /// A schedule deleted a backup beyond its `keep`.
    pub const BACKUP_PRUNED: &str = "BackupPruned";
    /// A persistent volume claim was asked to grow.
    pub const VOLUME_EXPANDING: &str = "VolumeExpanding";
    /// A remote cluster cannot be reached.
    pub const UNREACHABLE: &str = "Unreachable";
    /// The tunnel in a remote cluster was created or updated.
    pub const TUNNEL_READY: &str = "TunnelReady";
    /// The tunnel could not be cleaned up because the remote cluster's kubeconfig is gone.
    pub const CLEANUP_SKIPPED: &str = "CleanupSkipped";
    /// A PostgresBackup names a location that is not where tusk stores its cluster's backups:
    /// tusk neither deletes nor restores anything on its word.
    pub const LOCATION_MISMATCH: &str = "LocationMismatch";
    /// A backup Job's report did not match what the object store holds.
    pub const BACKUP_UNVERIFIED: &str = "BackupUnverified";
    /// A cluster's CA or server certificate could not be made, read or stored.
    pub const CERTIFICATE_FAILED: &str = "CertificateFailed";
    /// A cluster got its first server certificate.
    pub const CERTIFICATE_ISSUED: &str = "CertificateIssued";
    /// A cluster's server certificate was replaced (it was due, a name or the CA changed, or
    /// the Secret it is brought in changed); PostgreSQL loads it without a restart.
    pub const CERTIFICATE_RENEWED: &str = "CertificateRenewed";
    /// A deleted PostgresBackup's data was removed from the object store.
    pub const BACKUP_DATA_DELETED: &str = "BackupDataDeleted";
}

/// How long after its last occurrence an Event can still be counted again: the same six minutes
/// as kube's and client-go's recorders.
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The most series remembered at once. Notes carry text a tenant influences (PostgreSQL's
/// messages), so the number of distinct Events is theirs to choose: past this bound the oldest
/// series is forgotten, and its next repeat starts a new Event.
const MAX_SERIES: usize = 4096;

/// Publishes Events, counting a repeat of an Event published within [`SERIES_TTL`] on that
/// Event. A repeat has the same type, reason, action, note, object and related object.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Mutex<HashMap<SeriesKey, Series>>,
}

/// What makes two Events one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
    regarding: ReferenceKey,
    related: Option<ReferenceKey>,
}

/// The fields of an object reference that name the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ReferenceKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for ReferenceKey {
    fn from(reference: &ObjectReference) -> Self {
        Self {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }
}

/// A published Event and how often it occurred.
#[derive(Clone, Debug)]
struct Series {
    /// The Event's name.
    name: String,
    /// How many times it occurred.
    count: i32,
    /// When it last occurred.
    last_observed: Timestamp,
}

impl Recorder {
    /// A recorder whose Events name `reporter` as their reporting controller and instance.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `event` about `regarding`: a new Event, or one more occurrence of the same
    /// Event published within [`SERIES_TTL`].
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = SeriesKey {
            type_: type_name(event.type_),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
            regarding: regarding.into(),
            related: event.secondary.as_ref().map(ReferenceKey::from),
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        let repeat = {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            series.retain(|_, series| series.last_observed + SERIES_TTL > now);
            series.get_mut(&key).map(|series| {
                series.count += 1;
                series.last_observed = now;
                series.clone()
            })
        };
        if let Some(series) = repeat {
            let patch = json!({
                "series": EventSeries {
                    count: series.count,
                    last_observed_time: MicroTime(now),
                }
            });
            match events
                .patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The Event expired or was deleted: the occurrence starts a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let created = events
            .create(
                &PostParams::default(),
                &self.new_event(event, regarding, now),
            )
            .await?;
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            let oldest = series
                .iter()
                .min_by_key(|(_, series)| series.last_observed)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                series.remove(&oldest);
            }
        }
        series.insert(
            key,
            Series {
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                last_observed: now,
            },
        );
        Ok(())
    }

    /// The first occurrence of `event`, named after the object and the time as kube-rs and
    /// client-go name theirs.
    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> KubeEvent {
        let subject = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        KubeEvent {
            metadata: ObjectMeta {
                name: Some(format!("{subject}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_name(event.type_).to_owned()),
            reason: Some(event.reason.clone()),
            action: Some(event.action.clone()),
            note: event.note.clone(),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..KubeEvent::default()
        }
    }
}

/// An Event type as the API spells it.
fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// Publishes an Event about `regarding`. A failure to publish is logged and otherwise ignored:
/// an Event is a courtesy to a person, never a reason to fail a reconcile.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, regarding).await {
        tracing::warn!(
            %error,
            reason,
            object = regarding.name.as_deref().unwrap_or_default(),
            "cannot publish an Event"
        );
    }
}

#[cfg(test)]
mod tests {
    /// The string values of the `pub const`s in `pub mod reasons { ... }` of `source`.
    fn reasons_in(source: &str) -> Vec<String> {
        let start = source.find("pub mod reasons {").expect("a reasons module");
        let module = &source[start..];
        let end = module.find("\n}\n").expect("the module's end");
        module[..end]
            .lines()
            .filter(|line| line.trim_start().starts_with("pub const "))
            .map(|line| {
                let value = line.split('"').nth(1).expect("a string constant");
                value.to_owned()
            })
            .collect()
    }

    #[test]
    fn every_condition_and_event_reason_is_documented_with_what_to_do() {
        let doc = include_str!("../../../docs/troubleshooting.md");
        let conditions = reasons_in(include_str!("../../api/src/conditions.rs"));
        let events = reasons_in(include_str!("events.rs"));
        assert!(conditions.contains(&"CrashLoop".to_owned()) && events.contains(&"Error".into()));
        for reason in conditions.iter().chain(&events) {
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{reason}` |")))
                .unwrap_or_else(|| {
                    panic!("docs/troubleshooting.md has no row for the reason {reason}")
                });
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
            assert!(
                cells.len() >= 3 && cells.iter().all(|cell| !cell.trim().is_empty()),
                "the row of {reason} does not say what it means and what to do: {row}"
            );
        }
    }
}
