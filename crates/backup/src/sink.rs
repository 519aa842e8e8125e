//! Upload stage: a multipart upload with a bounded number of parts in flight. Any failure, of the
//! store or of an earlier stage, aborts the upload, so no partial object and no orphaned part
//! remains. A process killed mid-upload cannot abort, so the upload's id is reported as soon as
//! the store hands it out (see [`UploadStarted`]) for the operator to abort it later.

use std::time::Duration;

use std::sync::Arc;

use futures::future::BoxFuture;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, MultipartUpload, ObjectStoreExt, PutPayload, PutPayloadMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::pipe::UploadMessage;
use crate::store::{BackupStore, StoreError};

/// Size of the first parts. S3 needs at least 5 MiB (except for the last part) and allows
/// 10,000 parts, so the last parts grow (see [`part_size`]).
pub const FIRST_PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of [`FIRST_PART_SIZE`] before any grows: objects of up to about 31 GiB (a database of
/// some 100 GB) upload in parts of one size, with the upload's memory at [`UPLOAD_MEMORY`]. The
/// whole object's size is not known until its stream ends, so parts grow with the object.
const FIRST_SIZE_PARTS: usize = 4000;

/// After the first [`FIRST_SIZE_PARTS`], parts double every this many, from 16 MiB up to
/// 512 MiB: objects of up to about 1 TiB fit in S3's 10,000 parts, and up to about 500 GiB in
/// parts of at most 256 MiB, the store gateway's default buffer.
const PARTS_PER_SIZE_STEP: usize = 1000;

/// The most times a part doubles: 8 MiB << 6 is 512 MiB.
const MOST_DOUBLINGS: usize = 6;

/// The parts an upload holds at once (the one being filled and those in flight), as long as
/// parts are [`FIRST_PART_SIZE`]: two in flight and one filling.
const UPLOAD_MEMORY: usize = 3 * FIRST_PART_SIZE;

/// The size of part number `index` (0-based).
pub fn part_size(index: usize) -> usize {
    if index < FIRST_SIZE_PARTS {
        return FIRST_PART_SIZE;
    }
    let doublings = (index - FIRST_SIZE_PARTS) / PARTS_PER_SIZE_STEP + 1;
    FIRST_PART_SIZE << doublings.min(MOST_DOUBLINGS)
}

/// How many parts of `part_size` may be uploading while the next one fills: as many as fit in
/// [`UPLOAD_MEMORY`] besides it, and at least one, so larger parts trade concurrency for
/// memory.
pub fn parts_in_flight(part_size: usize) -> usize {
    (UPLOAD_MEMORY / part_size).saturating_sub(1).max(1)
}

/// Failures of the upload stage.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The multipart upload could not be started.
    #[error("cannot start the upload: {0}")]
    Start(#[source] StoreError),
    /// A part could not be uploaded.
    #[error("uploading a part failed: {0}")]
    Part(#[source] StoreError),
    /// The upload could not be completed.
    #[error("completing the upload failed: {0}")]
    Complete(#[source] StoreError),
    /// The stages before the upload stopped without finishing the stream; their own error says
    /// why. The upload was aborted.
    #[error("the backup stream ended before it was complete")]
    Incomplete,
    /// The upload failed and aborting it failed too, so parts may remain in the store until a
    /// lifecycle rule removes them.
    #[error("{failure}; aborting the multipart upload also failed: {abort}")]
    AbortFailed {
        /// The failure that made the upload stop.
        failure: Box<SinkError>,
        /// Why the abort failed.
        abort: StoreError,
    },
}

impl SinkError {
    /// Whether the failure is the upload's own (as opposed to an earlier stage stopping).
    pub fn is_own_failure(&self) -> bool {
        match self {
            SinkError::Incomplete => false,
            SinkError::AbortFailed { failure, .. } => failure.is_own_failure(),
            _ => true,
        }
    }
}

/// Attempts at aborting, spaced out so that a store that was briefly unreachable (the usual
/// reason an upload failed) has come back by the last one.
const ABORT_ATTEMPTS: u32 = 4;

/// Told the upload's id once the store has started the upload, before any part is sent, so that
/// whoever outlives this process (the operator) can abort the upload should the process die.
pub type UploadStarted = Box<dyn FnOnce(String) -> BoxFuture<'static, ()> + Send>;

/// A multipart upload in progress, through whichever interface the store offers.
enum Upload {
    /// Addressed by its id, which another process can use to abort it.
    Identified {
        store: Arc<dyn MultipartStore>,
        path: ObjectPath,
        id: MultipartId,
    },
    /// A store without upload ids (`file://`), whose unfinished uploads are local files.
    Anonymous(Box<dyn MultipartUpload>),
}

/// One uploaded part: its index and, for an identified upload, the id completion needs.
type PartDone = object_store::Result<(usize, Option<PartId>)>;

impl Upload {
    async fn start(store: &BackupStore, key: &str) -> object_store::Result<Self> {
        let path = ObjectPath::from(key);
        Ok(match store.multipart_store() {
            Some(multipart) => Upload::Identified {
                id: multipart.create_multipart(&path).await?,
                store: multipart.clone(),
                path,
            },
            None => Upload::Anonymous(store.object_store().put_multipart(&path).await?),
        })
    }

    fn id(&self) -> Option<&str> {
        match self {
            Upload::Identified { id, .. } => Some(id),
            Upload::Anonymous(_) => None,
        }
    }

    fn put_part(&mut self, index: usize, payload: PutPayload) -> BoxFuture<'static, PartDone> {
        match self {
            Upload::Identified { store, path, id } => {
                let (store, path, id) = (store.clone(), path.clone(), id.clone());
                Box::pin(async move {
                    let part = store.put_part(&path, &id, index, payload).await?;
                    Ok((index, Some(part)))
                })
            }
            Upload::Anonymous(upload) => {
                let part = upload.put_part(payload);
                Box::pin(async move { part.await.map(|()| (index, None)) })
            }
        }
    }

    async fn complete(
        &mut self,
        mut parts: Vec<(usize, Option<PartId>)>,
    ) -> object_store::Result<()> {
        match self {
            Upload::Identified { store, path, id } => {
                parts.sort_by_key(|(index, _)| *index);
                let parts = parts.into_iter().filter_map(|(_, part)| part).collect();
                store.complete_multipart(path, id, parts).await.map(|_| ())
            }
            Upload::Anonymous(upload) => upload.complete().await.map(|_| ()),
        }
    }

    async fn abort_once(&mut self) -> object_store::Result<()> {
        match self {
            Upload::Identified { store, path, id } => store.abort_multipart(path, id).await,
            Upload::Anonymous(upload) => upload.abort().await,
        }
    }

    async fn abort(&mut self, key: &str) -> Result<(), StoreError> {
        let mut delay = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match self.abort_once().await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= ABORT_ATTEMPTS => {
                    return Err(StoreError::request("aborting the upload of", key, error));
                }
                Err(error) => {
                    tracing::warn!(%key, %error, attempt, "aborting the multipart upload failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// What was stored: the object's size and the SHA-256 of its bytes, exactly as uploaded. A
/// restore checks the object it reads against both before PostgreSQL ever sees the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// Uploads everything received on `chunks` to `key` and returns what was stored. The object
/// is committed only when [`UploadMessage::End`] arrives; if the channel closes first, or the
/// store fails, the upload is aborted. `started` hears the upload's id, where the store has one,
/// before the first part is sent.
pub async fn upload(
    store: &BackupStore,
    key: &str,
    mut chunks: mpsc::Receiver<UploadMessage>,
    started: Option<UploadStarted>,
) -> Result<StoredObject, SinkError> {
    let mut upload = Upload::start(store, key).await.map_err(|error| {
        SinkError::Start(StoreError::request("starting the upload of", key, error))
    })?;
    if let (Some(started), Some(id)) = (started, upload.id()) {
        started(id.to_owned()).await;
    }
    let mut parts = JoinSet::new();
    let result = send_parts(&mut upload, &mut parts, key, &mut chunks).await;
    // Stop the producer promptly whatever happened: it blocks on a full channel otherwise.
    drop(chunks);
    match result {
        Ok((stored, uploaded)) => match upload.complete(uploaded).await {
            Ok(()) => Ok(stored),
            Err(error) => {
                let failure = SinkError::Complete(StoreError::request(
                    "completing the upload of",
                    key,
                    error,
                ));
                Err(abort_after(&mut upload, key, failure).await)
            }
        },
        Err(failure) => {
            parts.shutdown().await;
            Err(abort_after(&mut upload, key, failure).await)
        }
    }
}

async fn abort_after(upload: &mut Upload, key: &str, failure: SinkError) -> SinkError {
    match upload.abort(key).await {
        Ok(()) => {
            tracing::info!(%key, "aborted the multipart upload");
            failure
        }
        Err(abort) => SinkError::AbortFailed {
            failure: Box::new(failure),
            abort,
        },
    }
}

async fn send_parts(
    upload: &mut Upload,
    parts: &mut JoinSet<PartDone>,
    key: &str,
    chunks: &mut mpsc::Receiver<UploadMessage>,
) -> Result<(StoredObject, Vec<(usize, Option<PartId>)>), SinkError> {
    let part_failed =
        |error| SinkError::Part(StoreError::request("uploading a part of", key, error));
    let joined = |finished: Result<PartDone, tokio::task::JoinError>| {
        finished
            .map_err(|error| part_failed(object_store::Error::JoinError { source: error }))?
            .map_err(part_failed)
    };
    let mut uploaded = Vec::new();
    let mut size = 0u64;
    let mut digest = Sha256::new();
    let mut part = PutPayloadMut::new();
    let mut part_index = 0;
    loop {
        let message = chunks.recv().await.ok_or(SinkError::Incomplete)?;
        let last = match message {
            UploadMessage::Data(chunk) => {
                size += chunk.len() as u64;
                digest.update(&chunk);
                part.push(chunk);
                false
            }
            UploadMessage::End => true,
        };
        if part.content_length() >= part_size(part_index) || (last && part.content_length() > 0) {
            while parts.len() >= parts_in_flight(part_size(part_index)) {
                if let Some(finished) = parts.join_next().await {
                    uploaded.push(joined(finished)?);
                }
            }
            parts.spawn(upload.put_part(part_index, std::mem::take(&mut part).freeze()));
            part_index += 1;
        }
        // A failed part ends the upload as soon as it is noticed, not at the end.
        while let Some(finished) = parts.try_join_next() {
            uploaded.push(joined(finished)?);
        }
        if last {
            while let Some(finished) = parts.join_next().await {
                uploaded.push(joined(finished)?);
            }
            let stored = StoredObject {
                size,
                sha256: hex_digest(digest),
            };
            return Ok((stored, uploaded));
        }
    }
}

/// A finished SHA-256 as lowercase hex, the form recorded on a PostgresBackup.
pub fn hex_digest(digest: Sha256) -> String {
    digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_keep_one_size_up_to_31_gib_and_grow_so_large_objects_fit_in_ten_thousand_parts() {
        assert_eq!(part_size(0), FIRST_PART_SIZE);
        assert_eq!(part_size(3999), FIRST_PART_SIZE);
        assert_eq!(part_size(4000), 2 * FIRST_PART_SIZE);
        assert_eq!(part_size(4999), 2 * FIRST_PART_SIZE);
        assert_eq!(part_size(5000), 4 * FIRST_PART_SIZE);
        assert_eq!(part_size(9999), 512 << 20);
        let gib = |bytes: u64| bytes >> 30;
        let sum = |parts: std::ops::Range<usize>| -> u64 {
            parts.map(|index| part_size(index) as u64).sum()
        };
        assert_eq!(gib(sum(0..4000)), 31);
        // The store gateway's default buffer takes parts of up to 256 MiB.
        assert_eq!(part_size(8999), 256 << 20);
        assert!(gib(sum(0..9000)) >= 500, "{}", gib(sum(0..9000)));
        assert!(gib(sum(0..10_000)) >= 1000, "{}", gib(sum(0..10_000)));
    }

    #[test]
    fn an_upload_holds_three_first_size_parts_and_at_least_one_part_in_flight() {
        assert_eq!(parts_in_flight(FIRST_PART_SIZE), 2);
        assert_eq!(parts_in_flight(2 * FIRST_PART_SIZE), 1);
        assert_eq!(parts_in_flight(part_size(9999)), 1);
        // Filling one and uploading the rest: 24 MiB while parts are 8 MiB, 32 MiB at 16 MiB.
        let held = |size: usize| (parts_in_flight(size) + 1) * size;
        assert_eq!(held(FIRST_PART_SIZE), UPLOAD_MEMORY);
        assert_eq!(held(2 * FIRST_PART_SIZE), 32 << 20);
    }
}
