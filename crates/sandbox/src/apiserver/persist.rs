//! Persistence of the store in an embedded database (redb), for `tusk dev` data directories.
//!
//! Writes happen on a dedicated thread that commits whatever accumulated since its last commit
//! in one transaction, so that persistence costs the request path only a channel send.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use super::store::{Change, EventType, object_key};

/// Objects by `storage \0 namespace \0 name`, as JSON.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// The global resourceVersion, under the key `rv`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Opening, reading or writing the data directory's database failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The database file could not be created or opened.
    #[error("cannot open the sandbox database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// Reading the stored objects back failed.
    #[error("cannot read the sandbox database: {0}")]
    Load(String),
}

enum Op {
    Put { key: String, json: Vec<u8>, rv: u64 },
    Delete { key: String, rv: u64 },
    Flush(mpsc::Sender<()>),
}

/// The handle to the writer thread.
pub(crate) struct Persist {
    ops: mpsc::Sender<Op>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

fn db_key(storage: &str, namespace: &str, name: &str) -> String {
    format!("{storage}\0{namespace}\0{name}")
}

/// What was on disk: the resourceVersion and every object with its storage key.
pub(crate) type Loaded = (u64, Vec<(Arc<str>, Value)>);

impl Persist {
    /// Opens (or creates) `dir/store.redb`, returns what it holds and a writer for new changes.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), PersistError> {
        let path = dir.join("store.redb");
        let db = Database::create(&path).map_err(|source| PersistError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let load_error = |e: &dyn std::fmt::Display| PersistError::Load(e.to_string());
        {
            // Creating the tables up front makes reading an empty database uniform.
            let txn = db.begin_write().map_err(|e| load_error(&e))?;
            txn.open_table(OBJECTS).map_err(|e| load_error(&e))?;
            txn.open_table(META).map_err(|e| load_error(&e))?;
            txn.commit().map_err(|e| load_error(&e))?;
        }
        let mut objects = Vec::new();
        let rv;
        {
            let txn = db.begin_read().map_err(|e| load_error(&e))?;
            let meta = txn.open_table(META).map_err(|e| load_error(&e))?;
            rv = meta
                .get("rv")
                .map_err(|e| load_error(&e))?
                .map(|v| v.value())
                .unwrap_or(0);
            let table = txn.open_table(OBJECTS).map_err(|e| load_error(&e))?;
            for entry in table.iter().map_err(|e| load_error(&e))? {
                let (key, value) = entry.map_err(|e| load_error(&e))?;
                let storage = key
                    .value()
                    .split('\0')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let object: Value =
                    serde_json::from_slice(value.value()).map_err(|e| load_error(&e))?;
                objects.push((Arc::from(storage), object));
            }
        }
        let (ops, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("sandbox-persist".into())
            .spawn(move || write_loop(db, receiver))
            .map_err(|e| load_error(&e))?;
        Ok((
            Persist {
                ops,
                writer: std::sync::Mutex::new(Some(writer)),
            },
            (rv, objects),
        ))
    }

    /// Queues one committed change for writing.
    pub fn record(&self, change: &Change) {
        let (namespace, name) = object_key(&change.object);
        let key = db_key(&change.storage, &namespace, &name);
        let op = match change.event_type {
            EventType::Deleted => Op::Delete { key, rv: change.rv },
            _ => Op::Put {
                key,
                json: serde_json::to_vec(&*change.object).unwrap_or_default(),
                rv: change.rv,
            },
        };
        // The writer only stops when this handle is dropped.
        let _ = self.ops.send(op);
    }

    /// Blocks until every queued change is committed.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for Persist {
    fn drop(&mut self) {
        self.flush();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        // Closing the channel ends the writer loop; replace the sender to close ours.
        let (closed, _) = mpsc::channel();
        self.ops = closed;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn write_loop(db: Database, ops: mpsc::Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while let Ok(more) = ops.try_recv() {
            batch.push(more);
            if batch.len() >= 50_000 {
                break;
            }
        }
        let mut waiting = Vec::new();
        if let Err(error) = write_batch(&db, batch, &mut waiting) {
            tracing::error!(%error, "the sandbox could not persist its changes");
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

fn write_batch(
    db: &Database,
    batch: Vec<Op>,
    waiting: &mut Vec<mpsc::Sender<()>>,
) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(OBJECTS)?;
        let mut meta = txn.open_table(META)?;
        let mut newest = None;
        for op in batch {
            match op {
                Op::Put { key, json, rv } => {
                    table.insert(key.as_str(), json.as_slice())?;
                    newest = Some(rv);
                }
                Op::Delete { key, rv } => {
                    table.remove(key.as_str())?;
                    newest = Some(rv);
                }
                Op::Flush(done) => waiting.push(done),
            }
        }
        if let Some(rv) = newest {
            meta.insert("rv", rv)?;
        }
    }
    txn.commit()?;
    Ok(())
}
