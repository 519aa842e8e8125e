//! The ServiceAccount controller of kube-controller-manager: every active namespace has a
//! ServiceAccount named `default`, recreated if someone deletes it, so that pods which name no
//! ServiceAccount can run.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::ops::{self, FieldValidation, WriteOptions, is_deleting};
use super::resources::NAMESPACE_STORAGE;
use super::store::{Key, Store};

const DEFAULT_ACCOUNT: &str = "default";

/// Runs until `shutdown`, acting on each change to a namespace or a ServiceAccount.
pub(crate) async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let mut changes = {
        // Subscribing under the read lock, then reconciling, misses no change.
        let _state = store.read();
        store.subscribe()
    };
    let accounts_storage = super::resources::storage_key("", "serviceaccounts");
    reconcile(&store);
    loop {
        let relevant = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    change.storage == accounts_storage || &*change.storage == NAMESPACE_STORAGE
                }
                // Fell behind: some changes were not seen, so look at everything.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        if relevant {
            reconcile(&store);
        }
    }
}

/// Creates the `default` ServiceAccount in every active namespace that lacks one.
fn reconcile(store: &Store) {
    let (service_accounts, missing) = {
        let state = store.read();
        let Some(rt) = state.registry.get("", "v1", "serviceaccounts") else {
            return;
        };
        let missing: Vec<String> = state
            .objects(NAMESPACE_STORAGE, None)
            .filter(|(_, namespace)| !is_deleting(namespace))
            .map(|(key, _)| key.1.clone())
            .filter(|namespace| {
                let key: Key = (namespace.clone(), DEFAULT_ACCOUNT.to_string());
                state.get(&rt.storage, &key).is_none()
            })
            .collect();
        (rt, missing)
    };
    for namespace in missing {
        let mut options = WriteOptions {
            dry_run: false,
            field_manager: "kube-controller-manager".to_string(),
            field_validation: FieldValidation::Ignore,
            warnings: Vec::new(),
            duplicate_fields: Vec::new(),
            user: None,
        };
        let account = json!({
            "kind": "ServiceAccount",
            "apiVersion": "v1",
            "metadata": {"name": DEFAULT_ACCOUNT},
        });
        // Losing a race with a user's create, or with the namespace's deletion, is fine: the
        // account then exists, or is no longer wanted.
        if let Err(error) = ops::create(
            store,
            &service_accounts,
            Some(&namespace),
            account,
            &mut options,
        ) {
            tracing::debug!(namespace, message = %error.message, "default ServiceAccount not created");
        }
    }
}
