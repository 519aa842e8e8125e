//! The storage rules kube-apiserver applies to claims, with the sandbox's own StorageClass:
//!
//! - the sandbox serves a default StorageClass, [`DEFAULT_CLASS`], whose volumes are the
//!   runtime's claim volumes and may grow (`allowVolumeExpansion: true`), as a cluster's
//!   storage add-on installs one (kind's `standard`);
//! - a claim created without a class gets the default one (the `DefaultStorageClass`
//!   admission plugin): the newest class marked default, by name when two are as new;
//! - a claim's storage request grows only when it is bound and its class allows expansion (the
//!   `PersistentVolumeClaimResize` admission plugin), with that plugin's messages.

use serde_json::{Value, json};

use super::error::ApiError;
use super::resources::{ResourceType, storage_key};
use super::store::{State, Txn};

/// The name of the sandbox's StorageClass.
pub(crate) const DEFAULT_CLASS: &str = "standard";

/// The provisioner the sandbox's StorageClass names: the runtime's claim volumes.
pub(crate) const PROVISIONER: &str = "sandbox.tusk.dev/claim-volume";

/// The annotation that makes a StorageClass the default one, and its beta form, which
/// kube-apiserver still honours.
const DEFAULT_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The beta annotation that named a claim's class before `spec.storageClassName`; a claim
/// that has it is left alone, as the admission plugin does.
const BETA_CLAIM_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The group of StorageClass.
const GROUP: &str = "storage.k8s.io";

/// Whether a resource type is the claims'.
pub(crate) fn is_claim(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "persistentvolumeclaims"
}

/// Puts the sandbox's StorageClass in a store that has no StorageClass at all, at each start
/// (a data directory from before the sandbox served one gets it too). One a user changed is
/// left as it is; a store whose classes were all deleted gets it back, as a cluster's add-on
/// manager puts its class back.
pub(crate) fn seed(txn: &mut Txn<'_>) {
    let classes = storage_key(GROUP, "storageclasses");
    if txn.state.objects(&classes, None).next().is_some() {
        return;
    }
    txn.put(
        &classes,
        json!({
            "kind": "StorageClass",
            "apiVersion": "storage.k8s.io/v1",
            "metadata": {
                "name": DEFAULT_CLASS,
                "uid": super::auth::uuid_like(),
                "creationTimestamp": super::ops::now(),
                "annotations": {DEFAULT_ANNOTATIONS[0]: "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": true,
        }),
    );
}

/// The DefaultStorageClass admission plugin: a claim created with no `storageClassName` at all
/// gets the default class, when there is one. An empty name asks for no class and stays.
pub(crate) fn default_class(state: &State, claim: &mut Value) {
    if claim
        .pointer("/spec/storageClassName")
        .is_some_and(|class| !class.is_null())
        || claim
            .pointer("/metadata/annotations")
            .and_then(|annotations| annotations.get(BETA_CLAIM_CLASS))
            .is_some()
    {
        return;
    }
    let Some(class) = default_class_name(state) else {
        return;
    };
    if !claim.get("spec").is_some_and(Value::is_object) {
        claim["spec"] = json!({});
    }
    claim["spec"]["storageClassName"] = json!(class);
}

/// The default StorageClass: of those marked default, the newest, then the first by name
/// (kube-apiserver's choice since 1.26, when several are marked).
fn default_class_name(state: &State) -> Option<String> {
    let classes = storage_key(GROUP, "storageclasses");
    state
        .objects(&classes, None)
        .filter(|(_, class)| {
            DEFAULT_ANNOTATIONS.iter().any(|annotation| {
                class
                    .pointer("/metadata/annotations")
                    .and_then(|annotations| annotations.get(*annotation))
                    .and_then(Value::as_str)
                    == Some("true")
            })
        })
        .map(|((_, name), class)| {
            let created = class
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (created, name.clone())
        })
        // Newest first; among equals, the first name.
        .max_by(|(created_a, name_a), (created_b, name_b)| {
            created_a.cmp(created_b).then_with(|| name_b.cmp(name_a))
        })
        .map(|(_, name)| name)
}

/// The PersistentVolumeClaimResize admission plugin: an update that raises a claim's storage
/// request is refused unless the claim is bound and its class, unchanged, allows expansion.
pub(crate) fn admit_resize(
    state: &State,
    rt: &ResourceType,
    name: &str,
    claim: &Value,
    old_claim: &Value,
) -> Result<(), ApiError> {
    let storage = |claim: &Value| {
        claim
            .pointer("/spec/resources/requests/storage")
            .and_then(super::validation::quantity)
    };
    let (Some(new_size), Some(old_size)) = (storage(claim), storage(old_claim)) else {
        return Ok(());
    };
    if new_size <= old_size {
        return Ok(());
    }
    if old_claim.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return Err(ApiError::forbidden(
            rt,
            name,
            "Only bound persistent volume claims can be expanded",
        ));
    }
    // The beta annotation, where a claim has it, names the class before the spec does.
    let class = |claim: &Value| {
        claim
            .pointer("/metadata/annotations")
            .and_then(|annotations| annotations.get(BETA_CLAIM_CLASS))
            .or_else(|| claim.pointer("/spec/storageClassName"))
            .and_then(Value::as_str)
            .filter(|class| !class.is_empty())
            .map(str::to_owned)
    };
    let allowed = match (class(claim), class(old_claim)) {
        (Some(class), Some(old_class)) if class == old_class => state
            .get(
                &storage_key(GROUP, "storageclasses"),
                &(String::new(), class),
            )
            .and_then(|class| class.get("allowVolumeExpansion"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            rt,
            name,
            "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        ))
    }
}
