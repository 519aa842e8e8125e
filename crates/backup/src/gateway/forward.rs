//! The S3 operations the gateway forwards to the real store through object_store, with the
//! platform's credentials. Requests reach this only after [`super::access`] has authorized
//! them; each operation checks its key again before touching the store, so a mistake in one
//! layer does not open the store.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CreateMultipartUploadInput,
    CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, DeletedObject, ETag, GetObjectInput, GetObjectOutput, HeadObjectInput,
    HeadObjectOutput, ListObjectsV2Input, ListObjectsV2Output, Object, PutObjectInput,
    PutObjectOutput, Range, StreamingBlob, Timestamp, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::access::{READ_OPERATIONS, StoreLayout, authorized_record, signer};

/// S3's own page size for listings.
const MAX_KEYS: usize = 1000;
/// Request bodies are held in memory (object_store sends a payload whole); they are counted
/// against the buffer limit in units of this size.
const BUFFER_UNIT: u64 = 1024 * 1024;

/// The S3 service in front of the real store.
pub struct Forwarder {
    objects: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    layout: StoreLayout,
    buffers: Arc<Semaphore>,
    buffer_limit: u64,
}

impl Forwarder {
    /// Forwards to `objects`/`multipart`, holding at most `buffer_limit` bytes of request
    /// bodies at once; a single body larger than that is refused.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        layout: StoreLayout,
        buffer_limit: u64,
    ) -> Self {
        let units = buffer_limit.div_ceil(BUFFER_UNIT).max(1);
        Self {
            objects,
            multipart,
            layout,
            buffers: Arc::new(Semaphore::new(
                usize::try_from(units).unwrap_or(Semaphore::MAX_PERMITS),
            )),
            buffer_limit: units * BUFFER_UNIT,
        }
    }

    /// The store path of `key`, after checking again that the signer may use it for
    /// `operation`.
    fn path<T>(
        &self,
        operation: &str,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
    ) -> S3Result<ObjectPath> {
        let cluster = signer(req.credentials.as_ref())?;
        let record = authorized_record(&req.extensions)?;
        if bucket != self.layout.bucket {
            return Err(s3_error!(AccessDenied));
        }
        if READ_OPERATIONS.contains(&operation) {
            self.layout.check_read_key(&cluster, record, key)?;
        } else {
            self.layout.check_key(&cluster, key)?;
        }
        ObjectPath::parse(key).map_err(|_| s3_error!(InvalidArgument, "Invalid object key"))
    }

    /// Reads a request body whole, within the buffer limit. The declared length is required,
    /// so that room is reserved before anything is read.
    async fn read_body(
        &self,
        body: Option<StreamingBlob>,
        content_length: Option<i64>,
    ) -> S3Result<(PutPayload, OwnedSemaphorePermit)> {
        let length = content_length
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| s3_error!(MissingContentLength))?;
        if length > self.buffer_limit {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!(
                    "The store gateway accepts bodies of at most {} bytes",
                    self.buffer_limit
                ),
            ));
        }
        let units = u32::try_from(length.div_ceil(BUFFER_UNIT).max(1)).unwrap_or(u32::MAX);
        let permit = self
            .buffers
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| s3_error!(ServiceUnavailable))?;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut received = 0u64;
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|_| s3_error!(IncompleteBody))?;
                received += chunk.len() as u64;
                if received > length {
                    return Err(s3_error!(
                        IncompleteBody,
                        "The body is longer than its Content-Length"
                    ));
                }
                chunks.push(chunk);
            }
        }
        if received != length {
            return Err(s3_error!(IncompleteBody));
        }
        Ok((chunks.into_iter().collect(), permit))
    }
}

/// An ETag as object_store reports it (the header's value, quoted or not).
fn etag(value: Option<&str>) -> Option<ETag> {
    let value = value?;
    Some(
        ETag::parse_http_header(value.as_bytes())
            .unwrap_or_else(|_| ETag::Strong(value.trim_matches('"').to_owned())),
    )
}

fn timestamp(meta: &ObjectMeta) -> Timestamp {
    Timestamp::from(std::time::SystemTime::from(meta.last_modified))
}

fn length(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a not-found answer is about the bucket rather than the object.
fn is_missing_bucket(error: &object_store::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = cause {
        if current.to_string().contains("NoSuchBucket") {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The S3 answer for a store failure. Details stay in the operator's log: they name the real
/// store, which tenants have no business knowing.
fn backend_error(operation: &'static str, key: &str, error: object_store::Error) -> S3Error {
    match &error {
        object_store::Error::NotFound { .. } if is_missing_bucket(&error) => S3Error::with_message(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        ),
        object_store::Error::NotFound { .. } => s3_error!(NoSuchKey),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            s3_error!(
                PreconditionFailed,
                "At least one of the preconditions failed"
            )
        }
        _ => {
            tracing::warn!(%operation, %key, %error, "store gateway: the store failed");
            s3_error!(InternalError, "The backing store failed; retry later")
        }
    }
}

/// A part's identity at the store travels to the client as the part's ETag, hex-encoded so
/// that any store's form (S3's quoted ETag, Azure's block id) survives the round trip.
fn part_etag(part: &PartId) -> ETag {
    ETag::Strong(
        part.content_id
            .bytes()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    )
}

fn part_from_etag(etag: &ETag) -> Option<PartId> {
    let hex = etag.value();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PartId {
        content_id: String::from_utf8(bytes).ok()?,
    })
}

/// s3s wants a `Sync` body; object_store's stream is only `Send`. The stream is only ever
/// polled through `&mut`, so the mutex is never contended.
struct SyncStream(std::sync::Mutex<BoxStream<'static, object_store::Result<Bytes>>>);

impl Stream for SyncStream {
    type Item = object_store::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .poll_next_unpin(cx)
    }
}

/// One entry of a listing page: an object or a common prefix.
enum Entry {
    Object(ObjectMeta),
    Prefix(String),
}

impl Entry {
    fn key(&self) -> String {
        match self {
            Entry::Object(meta) => meta.location.to_string(),
            Entry::Prefix(prefix) => prefix.clone(),
        }
    }
}

#[async_trait::async_trait]
impl S3 for Forwarder {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let path = self.path("GetObject", &req, &req.input.bucket, &req.input.key)?;
        let range = req.input.range.map(|range| match range {
            Range::Int {
                first,
                last: Some(last),
            } => GetRange::Bounded(first..last.saturating_add(1)),
            Range::Int { first, last: None } => GetRange::Offset(first),
            Range::Suffix { length } => GetRange::Suffix(length),
        });
        let ranged = range.is_some();
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        let result = self
            .objects
            .get_opts(&path, options)
            .await
            .map_err(|error| backend_error("GetObject", &req.input.key, error))?;
        let content_range = ranged.then(|| {
            format!(
                "bytes {}-{}/{}",
                result.range.start,
                result.range.end.saturating_sub(1),
                result.meta.size
            )
        });
        let output = GetObjectOutput {
            content_length: Some(length(result.range.end - result.range.start)),
            content_range,
            last_modified: Some(timestamp(&result.meta)),
            e_tag: etag(result.meta.e_tag.as_deref()),
            body: Some(StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(
                result.into_stream(),
            )))),
            ..GetObjectOutput::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let path = self.path("HeadObject", &req, &req.input.bucket, &req.input.key)?;
        let meta = self
            .objects
            .head(&path)
            .await
            .map_err(|error| backend_error("HeadObject", &req.input.key, error))?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(length(meta.size)),
            last_modified: Some(timestamp(&meta)),
            e_tag: etag(meta.e_tag.as_deref()),
            ..HeadObjectOutput::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let path = self.path("PutObject", &req, &req.input.bucket, &req.input.key)?;
        let PutObjectInput {
            body,
            content_length,
            if_match,
            if_none_match,
            key,
            ..
        } = req.input;
        if if_match.is_some() {
            return Err(s3_error!(NotImplemented, "If-Match is not supported"));
        }
        let mode = match if_none_match {
            None => PutMode::Overwrite,
            Some(condition) if condition.is_any() => PutMode::Create,
            Some(_) => {
                return Err(s3_error!(
                    NotImplemented,
                    "Only If-None-Match: * is supported"
                ));
            }
        };
        let (payload, _permit) = self.read_body(body, content_length).await?;
        let result = self
            .objects
            .put_opts(&path, payload, PutOptions::from(mode))
            .await
            .map_err(|error| backend_error("PutObject", &key, error))?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: etag(result.e_tag.as_deref()),
            ..PutObjectOutput::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let path = self.path("DeleteObject", &req, &req.input.bucket, &req.input.key)?;
        match self.objects.delete(&path).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(backend_error("DeleteObject", &req.input.key, error)),
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let mut deleted = Vec::new();
        for object in &req.input.delete.objects {
            let path = self.path("DeleteObjects", &req, &req.input.bucket, &object.key)?;
            match self.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(backend_error("DeleteObjects", &object.key, error)),
            }
            deleted.push(DeletedObject {
                key: Some(object.key.clone()),
                ..DeletedObject::default()
            });
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let cluster = signer(req.credentials.as_ref())?;
        let input = req.input;
        if input.bucket != self.layout.bucket {
            return Err(s3_error!(AccessDenied));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        self.layout.check_read_list_prefix(
            &cluster,
            authorized_record(&req.extensions)?,
            &prefix,
        )?;
        // object_store lists folders; S3 prefixes are plain strings. List the folder the
        // prefix ends in, then keep what starts with the prefix.
        let folder = &prefix[..prefix.rfind('/').unwrap_or(0)];
        let folder = ObjectPath::parse(folder)
            .map_err(|_| s3_error!(InvalidArgument, "Invalid list prefix"))?;
        let mut entries: Vec<Entry> = match input.delimiter.as_deref() {
            None => self
                .objects
                .list(Some(&folder))
                .map_ok(Entry::Object)
                .try_collect()
                .await
                .map_err(|error| backend_error("ListObjectsV2", &prefix, error))?,
            Some("/") => {
                let listed = self
                    .objects
                    .list_with_delimiter(Some(&folder))
                    .await
                    .map_err(|error| backend_error("ListObjectsV2", &prefix, error))?;
                listed
                    .objects
                    .into_iter()
                    .map(Entry::Object)
                    .chain(
                        listed
                            .common_prefixes
                            .into_iter()
                            .map(|path| Entry::Prefix(format!("{path}/"))),
                    )
                    .collect()
            }
            Some(_) => {
                return Err(s3_error!(
                    NotImplemented,
                    "Only the delimiter '/' is supported"
                ));
            }
        };
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), Some(start)) => Some(token.clone().max(start.clone())),
            (token, start) => token.clone().or_else(|| start.clone()),
        };
        entries.retain(|entry| {
            let key = entry.key();
            key.starts_with(&prefix) && after.as_ref().is_none_or(|after| key > *after)
        });
        entries.sort_by_key(Entry::key);
        let max_keys = input
            .max_keys
            .and_then(|max| usize::try_from(max).ok())
            .unwrap_or(MAX_KEYS)
            .min(MAX_KEYS);
        let is_truncated = entries.len() > max_keys;
        entries.truncate(max_keys);
        let next_continuation_token = is_truncated
            .then(|| entries.last().map(Entry::key))
            .flatten();
        let key_count = i32::try_from(entries.len()).unwrap_or(i32::MAX);
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in entries {
            match entry {
                Entry::Object(meta) => contents.push(Object {
                    key: Some(meta.location.to_string()),
                    size: Some(length(meta.size)),
                    last_modified: Some(timestamp(&meta)),
                    e_tag: etag(meta.e_tag.as_deref()),
                    ..Object::default()
                }),
                Entry::Prefix(prefix) => common_prefixes.push(CommonPrefix {
                    prefix: Some(prefix),
                }),
            }
        }
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(i32::try_from(max_keys).unwrap_or(i32::MAX)),
            key_count: Some(key_count),
            is_truncated: Some(is_truncated),
            continuation_token: input.continuation_token,
            next_continuation_token,
            start_after: input.start_after,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let path = self.path(
            "CreateMultipartUpload",
            &req,
            &req.input.bucket,
            &req.input.key,
        )?;
        let upload_id = self
            .multipart
            .create_multipart(&path)
            .await
            .map_err(|error| backend_error("CreateMultipartUpload", &req.input.key, error))?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(req.input.bucket),
            key: Some(req.input.key),
            upload_id: Some(upload_id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let path = self.path("UploadPart", &req, &req.input.bucket, &req.input.key)?;
        let UploadPartInput {
            body,
            content_length,
            key,
            part_number,
            upload_id,
            ..
        } = req.input;
        let index = usize::try_from(part_number)
            .ok()
            .filter(|number| (1..=10_000).contains(number))
            .ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "Part number must be an integer between 1 and 10000, inclusive"
                )
            })?
            - 1;
        let (payload, _permit) = self.read_body(body, content_length).await?;
        let part = self
            .multipart
            .put_part(&path, &upload_id, index, payload)
            .await
            .map_err(|error| backend_error("UploadPart", &key, error))?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(part_etag(&part)),
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let path = self.path(
            "CompleteMultipartUpload",
            &req,
            &req.input.bucket,
            &req.input.key,
        )?;
        let CompleteMultipartUploadInput {
            bucket,
            if_match,
            if_none_match,
            key,
            multipart_upload,
            upload_id,
            ..
        } = req.input;
        if if_match.is_some() || if_none_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "Conditional completion is not supported"
            ));
        }
        let listed = multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(InvalidPart, "You must specify at least one part"));
        }
        // object_store numbers parts 0..n in order; S3 clients send 1..=n ascending.
        let mut parts = Vec::with_capacity(listed.len());
        for (index, part) in listed.iter().enumerate() {
            let expected = i32::try_from(index + 1).unwrap_or(i32::MAX);
            if part.part_number != Some(expected) {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "Parts must be numbered 1, 2, 3... in ascending order"
                ));
            }
            let part = part
                .e_tag
                .as_ref()
                .and_then(part_from_etag)
                .ok_or_else(|| s3_error!(InvalidPart, "Unknown part ETag"))?;
            parts.push(part);
        }
        let result = self
            .multipart
            .complete_multipart(&path, &upload_id, parts)
            .await
            .map_err(|error| backend_error("CompleteMultipartUpload", &key, error))?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            e_tag: etag(result.e_tag.as_deref()),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let path = self.path(
            "AbortMultipartUpload",
            &req,
            &req.input.bucket,
            &req.input.key,
        )?;
        self.multipart
            .abort_multipart(&path, &req.input.upload_id)
            .await
            .map_err(|error| backend_error("AbortMultipartUpload", &req.input.key, error))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_ids_survive_the_etag_round_trip() {
        for content_id in ["\"9b2cf535f27731c974343645a3985328\"", "AAAAAA==", ""] {
            let part = PartId {
                content_id: content_id.to_owned(),
            };
            let back = part_from_etag(&part_etag(&part)).unwrap();
            assert_eq!(back.content_id, content_id);
        }
        assert!(part_from_etag(&ETag::Strong("xyz".into())).is_none());
    }
}
