//! The storage behind the embedded S3 server: a directory per bucket, a file per object at the
//! path its key spells, and what else S3 keeps about an object (its ETag, content type and user
//! metadata) in one small file named after a hash of its key.
//!
//! Naming that file by a hash keeps its name short whatever the key's length: a key is up to
//! 1,024 bytes, a file name at most 255. Deleting an object removes its data, its metadata and
//! the directories its key left empty, so that the directory holds exactly what the store
//! holds. Deleting a missing object succeeds, as on S3, and concurrent deletions of one key
//! both do.
//!
//! ```text
//! <root>/<bucket>/<key>                       the object's bytes
//! <root>/.metadata/<bucket>/<sha256(key)>.json  its ETag, content type and user metadata
//! <root>/.upload-<id>.json                    an unfinished multipart upload
//! <root>/.upload_id-<id>.part-<n>             one of its parts
//! <root>/.tmp-<random>                        a file being written
//! ```
//!
//! Writes go to a temporary file first and are renamed into place, so a reader sees an object
//! whole or not at all.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::RngExt;
use s3s::crypto::{Checksum, Md5, Sha256};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, Bucket, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, DeletedObject, ETag, ETagCondition, Error, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsV2Input, ListObjectsV2Output, Metadata, Object,
    PutObjectInput, PutObjectOutput, StreamingBlob, Timestamp, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

/// The directory of the metadata files, beside the buckets (bucket names never start with a
/// dot).
const METADATA_DIR: &str = ".metadata";
/// The prefix of files being written.
const TEMPORARY_PREFIX: &str = ".tmp-";
/// S3's page size for listings.
const MAX_KEYS: usize = 1000;
/// The highest part number of a multipart upload.
const MAX_PART_NUMBER: i32 = 10_000;
/// The longest file name the file system takes.
const MAX_NAME_BYTES: usize = 255;
/// The longest object key S3 takes.
const MAX_KEY_BYTES: usize = 1024;

/// What the store keeps about an object besides its bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ObjectInfo {
    /// The key, so that the file says whose it is.
    key: String,
    /// The ETag, without quotes: the MD5 of the bytes, or for a multipart upload the MD5 of
    /// its parts' MD5s and the part count.
    e_tag: String,
    content_type: Option<String>,
    metadata: Option<Metadata>,
}

/// An unfinished multipart upload.
#[derive(Debug, Serialize, Deserialize)]
struct UploadInfo {
    bucket: String,
    key: String,
    /// The access key that started it: only it may add parts, complete or abort.
    access_key: Option<String>,
    content_type: Option<String>,
    metadata: Option<Metadata>,
}

/// The file-system store. See the module documentation for its layout.
#[derive(Debug)]
pub(crate) struct DirectoryStore {
    root: PathBuf,
    /// Held while an object's data and metadata change together (a write's commit, a
    /// deletion), so that a reader never pairs one object's bytes with another's metadata.
    changes: Mutex<()>,
}

fn internal(error: io::Error) -> S3Error {
    s3_error!(error, InternalError)
}

fn not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn random_id() -> String {
    hex(rand::rng().random::<[u8; 16]>())
}

/// Whether `key` can be an object's path below its bucket: segments that are neither empty nor
/// `.` or `..`, each short enough to be a file name.
fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(KeyTooLongError));
    }
    let storable = !key.contains('\0')
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.len() <= MAX_NAME_BYTES
        });
    if storable {
        Ok(())
    } else {
        Err(s3_error!(
            InvalidArgument,
            "This server stores keys as paths: no empty, '.' or '..' segment, none over 255 bytes"
        ))
    }
}

/// The bytes of a stored file from an offset, as a response body of known length.
struct FileBody {
    reader: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    remaining: u64,
}

impl Stream for FileBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.reader).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (remaining, Some(remaining))
    }
}

/// A file written under a temporary name, with the MD5 of what was written.
struct Written {
    path: PathBuf,
    md5: [u8; 16],
    size: u64,
}

impl DirectoryStore {
    /// A store in `root` (which must exist). Files left half-written by a previous run are
    /// removed.
    pub(crate) fn new(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize()?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPORARY_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            root,
            changes: Mutex::new(()),
        })
    }

    fn bucket_path(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    fn info_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root
            .join(METADATA_DIR)
            .join(bucket)
            .join(format!("{}.json", hex(Sha256::checksum(key.as_bytes()))))
    }

    fn upload_path(&self, upload_id: &str) -> PathBuf {
        self.root.join(format!(".upload-{upload_id}.json"))
    }

    fn part_path(&self, upload_id: &str, part_number: i32) -> PathBuf {
        self.root
            .join(format!(".upload_id-{upload_id}.part-{part_number}"))
    }

    fn temporary_path(&self) -> PathBuf {
        self.root.join(format!("{TEMPORARY_PREFIX}{}", random_id()))
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<PathBuf> {
        let path = self.bucket_path(bucket);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ))
        }
    }

    /// Writes a request body to a temporary file, checking its declared length and MD5.
    async fn write_body(
        &self,
        body: Option<StreamingBlob>,
        content_length: Option<i64>,
        content_md5: Option<&str>,
    ) -> S3Result<Written> {
        let Some(mut body) = body else {
            return Err(s3_error!(IncompleteBody));
        };
        let path = self.temporary_path();
        let result = async {
            let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
            let mut md5 = Md5::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|error| match error.downcast::<S3Error>() {
                    Ok(error) => *error,
                    Err(_) => s3_error!(IncompleteBody),
                })?;
                md5.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.sync_all().await.map_err(internal)?;
            if content_length.is_some_and(|length| u64::try_from(length).ok() != Some(size)) {
                return Err(s3_error!(IncompleteBody));
            }
            let md5 = md5.finalize();
            if let Some(expected) = content_md5 {
                use base64::Engine as _;
                let expected = base64::engine::general_purpose::STANDARD
                    .decode(expected)
                    .map_err(|_| s3_error!(InvalidDigest))?;
                if expected != md5 {
                    return Err(s3_error!(BadDigest));
                }
            }
            Ok(Written {
                path: path.clone(),
                md5,
                size,
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }

    /// What the store knows of an object, if it exists. An object stored without a metadata
    /// file (by an earlier version of this server) gets its ETag from its bytes.
    async fn stat(
        &self,
        bucket: &str,
        key: &str,
    ) -> S3Result<Option<(ObjectInfo, std::fs::Metadata)>> {
        if check_key(key).is_err() {
            return Ok(None);
        }
        let path = self.object_path(bucket, key);
        let file = match tokio::fs::metadata(&path).await {
            Ok(file) if file.is_file() => file,
            Ok(_) => return Ok(None),
            // Not a directory: a prefix of the key is an object, so the key is none.
            Err(error) if not_found(&error) || error.kind() == io::ErrorKind::NotADirectory => {
                return Ok(None);
            }
            Err(error) => return Err(internal(error)),
        };
        let info = match tokio::fs::read(self.info_path(bucket, key)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                s3_error!(InternalError, "metadata of {key} is unreadable: {error}")
            })?,
            Err(error) if not_found(&error) => ObjectInfo {
                key: key.to_owned(),
                e_tag: hex(md5_of_file(&path).await.map_err(internal)?),
                ..ObjectInfo::default()
            },
            Err(error) => return Err(internal(error)),
        };
        Ok(Some((info, file)))
    }

    /// Puts a written file in place as `key`, with its metadata, if the request's
    /// If-None-Match and If-Match hold for what is stored now; otherwise removes it.
    async fn commit(
        &self,
        bucket: &str,
        key: &str,
        written: &Written,
        info: &ObjectInfo,
        if_none_match: Option<&ETagCondition>,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        let committed = self
            .put_in_place(bucket, key, written, info, if_none_match, if_match)
            .await;
        if committed.is_err() {
            let _ = tokio::fs::remove_file(&written.path).await;
        }
        committed
    }

    async fn put_in_place(
        &self,
        bucket: &str,
        key: &str,
        written: &Written,
        info: &ObjectInfo,
        if_none_match: Option<&ETagCondition>,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        let _changing = self.changes.lock().await;
        self.require_bucket(bucket)?;
        let current = self.stat(bucket, key).await?;
        if if_none_match.is_some_and(ETagCondition::is_any) && current.is_some() {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        if let Some(condition) = if_match {
            let holds = match (&current, condition) {
                (None, _) => false,
                (Some(_), condition) if condition.is_any() => true,
                (Some((stored, _)), ETagCondition::ETag(expected)) => {
                    ETag::Strong(stored.e_tag.clone()).strong_cmp(expected)
                }
                (Some(_), _) => false,
            };
            if !holds {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        let data = self.object_path(bucket, key);
        let info_path = self.info_path(bucket, key);
        for parent in [data.parent(), info_path.parent()].into_iter().flatten() {
            tokio::fs::create_dir_all(parent).await.map_err(|error| {
                s3_error!(error, InvalidArgument, "A prefix of this key is an object")
            })?;
        }
        let info_temporary = self.temporary_path();
        let encoded =
            serde_json::to_vec(info).map_err(|error| s3_error!(InternalError, "{error}"))?;
        tokio::fs::write(&info_temporary, encoded)
            .await
            .map_err(internal)?;
        tokio::fs::rename(&info_temporary, &info_path)
            .await
            .map_err(internal)?;
        if let Err(error) = tokio::fs::rename(&written.path, &data).await {
            // The key is a directory (a prefix of other objects): S3 could store both, a
            // file system cannot.
            let _ = tokio::fs::remove_file(&info_path).await;
            return Err(s3_error!(
                error,
                InvalidArgument,
                "This server cannot store an object whose key is a prefix of other keys"
            ));
        }
        Ok(())
    }

    /// Removes an object's data and metadata, then the directories that held only them.
    /// Removing what is not there succeeds.
    async fn remove(&self, bucket: &str, key: &str) -> S3Result<()> {
        if check_key(key).is_err() {
            return Ok(());
        }
        let _changing = self.changes.lock().await;
        let data = self.object_path(bucket, key);
        match tokio::fs::symlink_metadata(&data).await {
            Ok(file) if file.is_file() => match tokio::fs::remove_file(&data).await {
                Ok(()) => {}
                Err(error) if not_found(&error) => {}
                Err(error) => return Err(internal(error)),
            },
            // A directory is a prefix of other objects, not an object.
            Ok(_) => return Ok(()),
            Err(_) => {}
        }
        let info = self.info_path(bucket, key);
        match tokio::fs::remove_file(&info).await {
            Ok(()) => {}
            Err(error) if not_found(&error) => {}
            Err(error) => return Err(internal(error)),
        }
        self.prune(&data, &self.bucket_path(bucket)).await;
        self.prune(&info, &self.root).await;
        Ok(())
    }

    /// Removes the empty directories from `path`'s parent up to, not including, `top`.
    async fn prune(&self, path: &Path, top: &Path) {
        let mut directory = path.parent();
        while let Some(current) = directory {
            if current == top || !current.starts_with(top) {
                break;
            }
            // Fails, and stops here, once a directory holds anything.
            if tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            directory = current.parent();
        }
    }

    /// Every object key in a bucket, in order.
    async fn keys(&self, bucket: &Path) -> S3Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        let mut pending = vec![bucket.to_owned()];
        while let Some(directory) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&directory).await {
                Ok(entries) => entries,
                // Pruned by a deletion meanwhile.
                Err(error) if not_found(&error) => continue,
                Err(error) => return Err(internal(error)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(internal)? {
                let path = entry.path();
                let kind = entry.file_type().await.map_err(internal)?;
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file()
                    && let Ok(relative) = path.strip_prefix(bucket)
                    && let Some(key) = relative.to_str()
                {
                    keys.insert(key.to_owned());
                }
            }
        }
        Ok(keys)
    }

    async fn load_upload(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
        access_key: Option<&str>,
    ) -> S3Result<UploadInfo> {
        let no_such_upload = || {
            s3_error!(
                NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            )
        };
        if !upload_id.bytes().all(|byte| byte.is_ascii_hexdigit()) || upload_id.is_empty() {
            return Err(no_such_upload());
        }
        let bytes = match tokio::fs::read(self.upload_path(upload_id)).await {
            Ok(bytes) => bytes,
            Err(error) if not_found(&error) => return Err(no_such_upload()),
            Err(error) => return Err(internal(error)),
        };
        let upload: UploadInfo = serde_json::from_slice(&bytes).map_err(|_| no_such_upload())?;
        if upload.bucket != bucket
            || upload.key != key
            || upload.access_key.as_deref() != access_key
        {
            return Err(no_such_upload());
        }
        Ok(upload)
    }

    /// Removes an upload's parts and its record.
    async fn forget_upload(&self, upload_id: &str) -> S3Result<()> {
        let part_prefix = format!(".upload_id-{upload_id}.part-");
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(internal)?;
        while let Some(entry) = entries.next_entry().await.map_err(internal)? {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&part_prefix)
            {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => {}
                    Err(error) if not_found(&error) => {}
                    Err(error) => return Err(internal(error)),
                }
            }
        }
        match tokio::fs::remove_file(self.upload_path(upload_id)).await {
            Ok(()) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(internal(error)),
        }
    }
}

async fn md5_of_file(path: &Path) -> io::Result<[u8; 16]> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut md5 = Md5::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(md5.finalize());
        }
        md5.update(&buffer[..read]);
    }
}

fn access_key<T>(req: &S3Request<T>) -> Option<&str> {
    req.credentials
        .as_ref()
        .map(|credentials| credentials.access_key.as_str())
}

fn last_modified(file: &std::fs::Metadata) -> Option<Timestamp> {
    file.modified().ok().map(Timestamp::from)
}

fn length(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl S3 for DirectoryStore {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let path = self.bucket_path(&req.input.bucket);
        match tokio::fs::create_dir(&path).await {
            Ok(()) => Ok(S3Response::new(CreateBucketOutput::default())),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            )),
            Err(error) => Err(internal(error)),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let path = self.require_bucket(&req.input.bucket)?;
        match tokio::fs::remove_dir(&path).await {
            Ok(()) => {
                let _ =
                    tokio::fs::remove_dir_all(self.root.join(METADATA_DIR).join(&req.input.bucket))
                        .await;
                Ok(S3Response::new(DeleteBucketOutput::default()))
            }
            Err(_) => Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            )),
        }
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let mut buckets = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(internal)?;
        while let Some(entry) = entries.next_entry().await.map_err(internal)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type().await.map_err(internal)?.is_dir() {
                continue;
            }
            let created = entry.metadata().await.ok().as_ref().and_then(last_modified);
            buckets.push(Bucket {
                name: Some(name),
                creation_date: created,
                ..Bucket::default()
            });
        }
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..ListBucketsOutput::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        self.require_bucket(&input.bucket)?;
        let written = self
            .write_body(
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
            )
            .await?;
        let info = ObjectInfo {
            key: input.key.clone(),
            e_tag: hex(written.md5),
            content_type: input.content_type,
            metadata: input.metadata,
        };
        self.commit(
            &input.bucket,
            &input.key,
            &written,
            &info,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )
        .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(info.e_tag)),
            size: Some(length(written.size)),
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket)?;
        let no_such_key = || s3_error!(NoSuchKey, "The specified key does not exist.");
        let (info, stat) = self
            .stat(&input.bucket, &input.key)
            .await?
            .ok_or_else(no_such_key)?;
        let mut file =
            match tokio::fs::File::open(self.object_path(&input.bucket, &input.key)).await {
                Ok(file) => file,
                // Deleted since it was looked at.
                Err(error) if not_found(&error) => return Err(no_such_key()),
                Err(error) => return Err(internal(error)),
            };
        let size = stat.len();
        let (range, content_range) = match &input.range {
            None => (0..size, None),
            Some(requested) => {
                let range = requested.check(size)?;
                let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
                (range, Some(content_range))
            }
        };
        file.seek(io::SeekFrom::Start(range.start))
            .await
            .map_err(internal)?;
        let remaining = range.end - range.start;
        let body = FileBody {
            reader: ReaderStream::new(file.take(remaining)),
            remaining,
        };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(length(remaining)),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            last_modified: last_modified(&stat),
            e_tag: Some(ETag::Strong(info.e_tag)),
            content_type: info.content_type,
            metadata: info.metadata,
            ..GetObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket)?;
        let (info, stat) = self
            .stat(&input.bucket, &input.key)
            .await?
            .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(length(stat.len())),
            accept_ranges: Some("bytes".to_owned()),
            last_modified: last_modified(&stat),
            e_tag: Some(ETag::Strong(info.e_tag)),
            content_type: info.content_type,
            metadata: info.metadata,
            ..HeadObjectOutput::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.remove(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket)?;
        let quiet = input.delete.quiet == Some(true);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            match self.remove(&input.bucket, &object.key).await {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..DeletedObject::default()
                }),
                Err(error) => errors.push(Error {
                    key: Some(object.key),
                    code: Some(error.code().as_str().to_owned()),
                    message: error.message().map(str::to_owned),
                    ..Error::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let bucket_path = self.require_bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_keys = input.max_keys.map_or(MAX_KEYS, |max| {
            usize::try_from(max).unwrap_or(0).min(MAX_KEYS)
        });
        // Entries after the continuation token (the last entry of the previous page), or after
        // start-after.
        let after = input
            .continuation_token
            .clone()
            .or_else(|| input.start_after.clone())
            .unwrap_or_default();

        let mut contents = Vec::new();
        let mut common_prefixes: Vec<String> = Vec::new();
        let mut last_entry = None;
        let mut truncated = false;
        for key in self.keys(&bucket_path).await? {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match &delimiter {
                Some(delimiter) => match rest.find(delimiter.as_str()) {
                    Some(at) => Err(format!("{prefix}{}", &rest[..at + delimiter.len()])),
                    None => Ok(key.clone()),
                },
                None => Ok(key.clone()),
            };
            let name = match &entry {
                Ok(key) | Err(key) => key.clone(),
            };
            // Already returned: before the token, or inside a common prefix that was.
            // Returned on an earlier page (a common prefix is its own token, and every key in
            // it shares the prefix as its entry).
            if name.as_str() <= after.as_str() {
                continue;
            }
            if common_prefixes.last() == Some(&name) {
                continue;
            }
            if contents.len() + common_prefixes.len() >= max_keys {
                truncated = true;
                break;
            }
            match entry {
                Ok(key) => {
                    let Some((info, stat)) = self.stat(&input.bucket, &key).await? else {
                        continue;
                    };
                    contents.push(Object {
                        key: Some(key),
                        size: Some(length(stat.len())),
                        e_tag: Some(ETag::Strong(info.e_tag)),
                        last_modified: last_modified(&stat),
                        ..Object::default()
                    });
                }
                Err(common) => common_prefixes.push(common),
            }
            last_entry = Some(name);
        }
        let key_count = contents.len() + common_prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter,
            max_keys: Some(i32::try_from(max_keys).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: truncated.then_some(last_entry).flatten(),
            start_after: input.start_after,
            contents: Some(contents),
            common_prefixes: Some(
                common_prefixes
                    .into_iter()
                    .map(|prefix| CommonPrefix {
                        prefix: Some(prefix),
                    })
                    .collect(),
            ),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let access_key = access_key(&req).map(str::to_owned);
        let input = req.input;
        check_key(&input.key)?;
        self.require_bucket(&input.bucket)?;
        let upload_id = random_id();
        let upload = UploadInfo {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            access_key,
            content_type: input.content_type,
            metadata: input.metadata,
        };
        let temporary = self.temporary_path();
        let encoded =
            serde_json::to_vec(&upload).map_err(|error| s3_error!(InternalError, "{error}"))?;
        tokio::fs::write(&temporary, encoded)
            .await
            .map_err(internal)?;
        tokio::fs::rename(&temporary, self.upload_path(&upload_id))
            .await
            .map_err(internal)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let access_key = access_key(&req).map(str::to_owned);
        let input = req.input;
        self.load_upload(
            &input.upload_id,
            &input.bucket,
            &input.key,
            access_key.as_deref(),
        )
        .await?;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let written = self
            .write_body(
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
            )
            .await?;
        if let Err(error) = tokio::fs::rename(
            &written.path,
            self.part_path(&input.upload_id, input.part_number),
        )
        .await
        {
            let _ = tokio::fs::remove_file(&written.path).await;
            return Err(internal(error));
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex(written.md5))),
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let access_key = access_key(&req).map(str::to_owned);
        let input = req.input;
        let upload = self
            .load_upload(
                &input.upload_id,
                &input.bucket,
                &input.key,
                access_key.as_deref(),
            )
            .await?;
        let parts = input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let invalid_part = || {
            s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."
            )
        };
        let temporary = self.temporary_path();
        let assembled = async {
            let mut output = tokio::fs::File::create(&temporary).await.map_err(internal)?;
            let mut md5_of_md5s = Md5::new();
            let mut previous = 0;
            let mut buffer = vec![0; 64 * 1024];
            let mut size = 0u64;
            for part in &parts {
                let number = part.part_number.unwrap_or(0);
                if number <= previous {
                    return Err(s3_error!(
                        InvalidPartOrder,
                        "The list of parts was not in ascending order. The parts list must be specified in order by part number."
                    ));
                }
                previous = number;
                let mut file = match tokio::fs::File::open(self.part_path(&input.upload_id, number)).await {
                    Ok(file) => file,
                    Err(error) if not_found(&error) => return Err(invalid_part()),
                    Err(error) => return Err(internal(error)),
                };
                let mut md5 = Md5::new();
                loop {
                    let read = file.read(&mut buffer).await.map_err(internal)?;
                    if read == 0 {
                        break;
                    }
                    md5.update(&buffer[..read]);
                    output.write_all(&buffer[..read]).await.map_err(internal)?;
                    size += read as u64;
                }
                let md5 = md5.finalize();
                let matches = part
                    .e_tag
                    .as_ref()
                    .is_none_or(|e_tag| e_tag.value() == hex(md5));
                if !matches {
                    return Err(invalid_part());
                }
                md5_of_md5s.update(&md5);
            }
            output.sync_all().await.map_err(internal)?;
            Ok(Written {
                path: temporary.clone(),
                md5: md5_of_md5s.finalize(),
                size,
            })
        }
        .await;
        let written = match assembled {
            Ok(written) => written,
            Err(error) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                return Err(error);
            }
        };
        let info = ObjectInfo {
            key: input.key.clone(),
            e_tag: format!("{}-{}", hex(written.md5), parts.len()),
            content_type: upload.content_type,
            metadata: upload.metadata,
        };
        self.commit(
            &input.bucket,
            &input.key,
            &written,
            &info,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )
        .await?;
        self.forget_upload(&input.upload_id).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(info.e_tag)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let access_key = access_key(&req).map(str::to_owned);
        let input = req.input;
        self.load_upload(
            &input.upload_id,
            &input.bucket,
            &input.key,
            access_key.as_deref(),
        )
        .await?;
        self.forget_upload(&input.upload_id).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    #[test]
    fn keys_are_stored_as_paths_only_when_they_can_be() {
        assert!(check_key("dev/shop/a/b.tar.gz").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        for bad in ["", "a//b", "/a", "a/", "a/../b", "./a", &"k".repeat(256)] {
            assert!(check_key(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            check_key(&"a/".repeat(600)).unwrap_err().code(),
            &S3ErrorCode::KeyTooLongError
        );
    }
}
