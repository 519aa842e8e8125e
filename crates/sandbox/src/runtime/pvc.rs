//! The local volume provisioner: every PersistentVolumeClaim is bound at once to a volume of
//! its own, a filesystem of the capacity it requests (see [`super::claim_volume`]); raising
//! the request expands it, as a CSI driver with volume expansion does. The volume goes when
//! the claim does (reclaim policy Delete).
//!
//! A growth the host cannot carry out is reported on the claim as the CSI external-resizer
//! reports a failed `ControllerExpandVolume`: `status.allocatedResources["storage"]` holds the
//! size asked, `status.allocatedResourceStatuses["storage"]` is `ControllerResizeInfeasible`
//! when the host lacks the room (or `ControllerResizeInProgress` for an error a retry may
//! clear), a `ControllerResizeError` condition carries the host's error, and a Warning
//! `VolumeResizeFailed` Event says it. The volume keeps its size and stays in use; the growth
//! is tried again every [`GROWTH_RETRY`], and once it succeeds those go and a Normal
//! `VolumeResizeSuccessful` Event says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::beneath::is_plain_name;
use super::claim_volume::{Backing, ClaimVolume, GrowthRefusal, Provided};
use super::{Node, RuntimeOptions};

/// The condition of a claim whose volume grows only once no pod has it mounted.
const RESIZE_PENDING: &str = "FileSystemResizePending";

/// The condition of a claim whose volume the storage system failed to grow.
const CONTROLLER_RESIZE_ERROR: &str = "ControllerResizeError";

/// `status.allocatedResourceStatuses["storage"]` of a growth the host has no room for.
const RESIZE_INFEASIBLE: &str = "ControllerResizeInfeasible";

/// `status.allocatedResourceStatuses["storage"]` of a failed growth that is retried as is.
const RESIZE_IN_PROGRESS: &str = "ControllerResizeInProgress";

/// How soon a refused growth is tried again (the external-resizer backs off too; the host may
/// have room by then).
const GROWTH_RETRY: Duration = Duration::from_secs(10);

/// The claims' volumes of one runtime.
pub(crate) struct ClaimVolumes {
    /// How volumes get their size on this machine.
    pub backing: Backing,
}

impl ClaimVolumes {
    /// The volumes of a runtime running as root or not.
    pub fn new(as_root: bool) -> Self {
        let backing = Backing::detect(as_root);
        if let Backing::Directory(reason) = &backing {
            tracing::warn!(%reason, "claims' volumes are plain directories, of no size of their own");
        }
        Self { backing }
    }
}

/// Where a claim's data lives, by the claim's uid: a claim deleted and created again under
/// the same name starts empty, as with a dynamically provisioned volume.
pub(crate) fn claim_dir(options: &RuntimeOptions, uid: &str) -> PathBuf {
    options.claims_dir().join(uid)
}

/// Binds and resizes claims until the runtime stops.
pub(crate) async fn provision(node: Arc<Node>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(node.client.clone());
    let stream = watcher(claims, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut retry = tokio::time::interval(GROWTH_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => break,
            },
            _ = retry.tick() => {
                retry_refused_growths(&node).await;
                continue;
            }
        };
        match event {
            Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => {
                if let Err(error) = bind(&node, &claim).await {
                    tracing::debug!(%error, claim = %claim.name_any(), "a claim is not bound");
                }
            }
            Ok(watcher::Event::Delete(claim)) => {
                if let Some(uid) = claim.uid().filter(|uid| is_plain_name(uid)) {
                    let (backing, claims_dir) = (
                        node.claim_volumes.backing.clone(),
                        node.options.claims_dir(),
                    );
                    let _ = tokio::task::spawn_blocking(move || {
                        let volume = ClaimVolume {
                            backing: &backing,
                            claims_dir: &claims_dir,
                            uid: &uid,
                        };
                        volume.remove();
                    })
                    .await;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "the provisioner's claim watch failed; retrying"),
        }
    }
}

/// Tries again the growths the claims say failed: nothing else changes such a claim when the
/// host gets the room.
async fn retry_refused_growths(node: &Node) {
    let claims: Api<PersistentVolumeClaim> = Api::all(node.client.clone());
    let Ok(claims) = claims.list(&Default::default()).await else {
        return;
    };
    for claim in claims
        .items
        .iter()
        .filter(|claim| growth_state(claim).is_some())
    {
        if let Err(error) = bind(node, claim).await {
            tracing::debug!(%error, claim = %claim.name_any(), "a claim's growth failed again");
        }
    }
}

/// The claim's `allocatedResourceStatuses["storage"]`, if any.
fn growth_state(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .status
        .as_ref()?
        .allocated_resource_statuses
        .as_ref()?
        .get("storage")
        .map(String::as_str)
}

/// Provides the claim's volume at its requested size and writes the status a bound claim of
/// that size has, unless it already has it. Returns whether the volume is ready for a pod.
pub(crate) async fn bind(node: &Node, claim: &PersistentVolumeClaim) -> Result<(), String> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Err("the claim is being deleted".to_string());
    }
    let uid = claim
        .uid()
        .filter(|uid| is_plain_name(uid))
        .ok_or("the claim has no valid uid")?;
    let spec = claim.spec.clone().unwrap_or_default();
    let requested = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    let bytes = requested
        .as_ref()
        .and_then(|quantity| quantity_bytes(&quantity.0))
        .ok_or("the claim requests no storage")?;
    let provided = {
        let (backing, claims_dir) = (
            node.claim_volumes.backing.clone(),
            node.options.claims_dir(),
        );
        tokio::task::spawn_blocking(move || {
            ClaimVolume {
                backing: &backing,
                claims_dir: &claims_dir,
                uid: &uid,
            }
            .provide(bytes)
        })
        .await
        .map_err(|error| error.to_string())?
    };
    let status = claim.status.clone().unwrap_or_default();
    let bound = status.phase.as_deref() == Some("Bound");
    let provided = match provided {
        Ok(provided) => provided,
        Err(error) => {
            let message = format!("cannot provide the volume: {error}");
            claim_event(node, claim, true, "ProvisioningFailed", &message).await;
            return Err(message);
        }
    };
    if let Provided::GrowthRefused(refusal) = &provided {
        let requested = requested.map(|quantity| quantity.0).unwrap_or_default();
        report_refused_growth(node, claim, &requested, refusal).await;
        return Ok(());
    }
    if !bound && let Provided::Unsized(reason) = &provided {
        let message = format!(
            "the volume is a plain directory on the host's disk, of no size of its own: {reason}"
        );
        claim_event(node, claim, true, "VolumeSizeNotEnforced", &message).await;
    }
    let capacity = status.capacity.and_then(|c| c.get("storage").cloned());
    let pending_now = matches!(provided, Provided::ResizePending(_));
    let pending_before = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == RESIZE_PENDING);
    let failed_before = growth_state(claim).is_some();
    if bound
        && !failed_before
        && pending_now == pending_before
        && (pending_now || capacity == requested)
    {
        return Ok(());
    }
    let access_modes = spec
        .access_modes
        .unwrap_or_else(|| vec!["ReadWriteOnce".to_string()]);
    let conditions = if pending_now {
        json!([{
            "type": RESIZE_PENDING,
            "status": "True",
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
        }])
    } else {
        serde_json::Value::Null
    };
    let mut patch = json!({
        "status": {
            "phase": "Bound",
            "accessModes": access_modes,
            "conditions": conditions,
            "allocatedResourceStatuses": null,
        }
    });
    // A volume waiting to grow keeps the capacity it has.
    match (&provided, &capacity) {
        (Provided::ResizePending(_), Some(_)) => {}
        _ => patch["status"]["capacity"] = json!({"storage": requested}),
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(node.client.clone(), &claim.namespace().unwrap_or_default());
    if let Err(error) = api
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(%error, claim = %claim.name_any(), "cannot bind a claim");
    } else if failed_before && matches!(provided, Provided::Sized(_)) {
        claim_event(
            node,
            claim,
            false,
            "VolumeResizeSuccessful",
            "Resize volume succeeded",
        )
        .await;
    }
    Ok(())
}

/// Says on the claim that its volume could not grow to `requested`, as the external-resizer
/// does, unless the claim says so already (a retry that fails alike writes nothing).
async fn report_refused_growth(
    node: &Node,
    claim: &PersistentVolumeClaim,
    requested: &str,
    refusal: &GrowthRefusal,
) {
    let state = if refusal.no_room {
        RESIZE_INFEASIBLE
    } else {
        RESIZE_IN_PROGRESS
    };
    let volume = format!("pvc-{}", claim.uid().unwrap_or_default());
    let message = format!(
        "resize volume {volume:?} by resizer {:?} failed: {}",
        crate::apiserver::storage_classes::PROVISIONER,
        refusal.message
    );
    let status = claim.status.clone().unwrap_or_default();
    let reported = growth_state(claim) == Some(state)
        && status.conditions.iter().flatten().any(|condition| {
            condition.type_ == CONTROLLER_RESIZE_ERROR
                && condition.message.as_deref() == Some(message.as_str())
        });
    if reported {
        return;
    }
    let patch = json!({
        "status": {
            "allocatedResources": {"storage": requested},
            "allocatedResourceStatuses": {"storage": state},
            "conditions": [{
                "type": CONTROLLER_RESIZE_ERROR,
                "status": "True",
                "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "message": message,
            }],
        }
    });
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(node.client.clone(), &claim.namespace().unwrap_or_default());
    match api
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => claim_event(node, claim, true, "VolumeResizeFailed", &message).await,
        Err(error) => {
            tracing::debug!(%error, claim = %claim.name_any(), "cannot report a refused growth")
        }
    }
}

/// Records an Event on a claim, as the provisioner does.
async fn claim_event(
    node: &Node,
    claim: &PersistentVolumeClaim,
    warning: bool,
    reason: &str,
    note: &str,
) {
    node.events
        .record(&claim.object_ref(&()), warning, reason, note)
        .await;
}

/// The bytes a storage quantity stands for, rounded up; `None` unless positive.
fn quantity_bytes(quantity: &str) -> Option<u64> {
    let value =
        crate::apiserver::validation::quantity(&serde_json::Value::String(quantity.to_string()))?;
    (value.is_finite() && value > 0.0 && value < u64::MAX as f64).then(|| value.ceil() as u64)
}
