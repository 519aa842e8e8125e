//! What every reconcile shares: the client, the configuration, the one Event recorder, the
//! metrics and the clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::Client;

use crate::clock::Clock;
use crate::config::OperatorConfig;
use crate::events::{Recorder, Reporter};
use crate::metrics::Metrics;

/// The shared context of every controller.
pub struct Context {
    /// The workload cluster's client.
    pub client: Client,
    /// The operator's configuration.
    pub config: OperatorConfig,
    /// The one Event recorder.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The current time.
    pub clock: Arc<dyn Clock>,
    /// The last progress each running backup request reported, and when the operator first saw
    /// it, keyed by the request's uid. Kept in memory: after a restart, a stalled backup is
    /// detected at most one stall timeout later than it would have been.
    pub backup_progress: Mutex<HashMap<String, ProgressMark>>,
    /// How many times each cluster's instance containers had restarted when the operator last
    /// looked, keyed by the cluster's uid: a higher count is a crash, reported with an Event.
    /// Kept in memory: after an operator restart, a crash that happened meanwhile is reported
    /// by the condition alone.
    pub instance_restarts: Mutex<HashMap<String, i32>>,
    /// When each cluster was last fully reconciled, and at which generation, keyed by the
    /// cluster's uid: a restoring cluster is only refreshed in between (see
    /// [`crate::controllers::cluster::restore_refresh`]).
    pub full_applies: Mutex<HashMap<String, (Option<i64>, Timestamp)>>,
}

/// A backup's progress as last seen by the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressMark {
    /// Bytes done at that moment.
    pub bytes_done: i64,
    /// When the operator first saw this value.
    pub seen_at: Timestamp,
}

impl Context {
    /// A context whose Events are reported as `tusk-operator` from `identity`.
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
        identity: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "tusk-operator".to_owned(),
                instance: Some(identity.to_owned()),
            },
        );
        Self {
            client,
            config,
            recorder,
            metrics,
            clock,
            backup_progress: Mutex::new(HashMap::new()),
            instance_restarts: Mutex::new(HashMap::new()),
            full_applies: Mutex::new(HashMap::new()),
        }
    }
}
