//! Server-side apply under a controller's field manager.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The field manager of a controller: `tusk.dev/<controller>`.
pub fn field_manager(controller: &str) -> String {
    format!("tusk.dev/{controller}")
}

/// Applies `desired` with server-side apply, forcing ownership of the fields it sets: the
/// controller is the only writer of its children. Applying an unchanged object is a no-op on
/// the API server, so periodic reconciles do not bump resourceVersions.
pub async fn apply<K>(api: &Api<K>, controller: &str, desired: &K) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.name_any();
    let params = PatchParams::apply(&field_manager(controller)).force();
    api.patch(&name, &params, &Patch::Apply(desired))
        .await
        .map_err(|source| Error::ApplyChild {
            kind: std::any::type_name::<K>()
                .rsplit("::")
                .next()
                .unwrap_or("object"),
            name,
            source,
        })
}
