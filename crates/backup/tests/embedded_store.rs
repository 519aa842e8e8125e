//! The embedded S3 server's storage (what `tusk dev` keeps backups in), used with object_store's
//! AmazonS3 client as tusk uses it: keys as long as a long cluster name makes them, and
//! deletions that leave nothing in the store's directory, succeed for missing keys and succeed
//! together for one key.

mod support;

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, WriteMultipart};
use support::S3;

/// Every file and directory below `dir`, relative to it, the server's bookkeeping included.
fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path.strip_prefix(dir).expect("below").to_owned());
        }
    }
    found.sort();
    found
}

/// A key shaped like a backup's, under a project and a cluster with long names and their uids.
fn backup_key(file: &str) -> String {
    format!(
        "dev/{}/{}/0b7c4f0e-7a53-4d4c-9a2e-3d1c5b2a9f10/backups/\
         5a1d3e2c-8f4b-4c6d-9e7a-1b2c3d4e5f60/{file}",
        "the-projects-namespace-with-a-longer-name-of-fifty-two",
        "a-cluster-with-a-rather-long-name-of-40c"
    )
}

#[tokio::test]
async fn long_keys_are_stored_and_deleting_them_leaves_an_empty_store() {
    let s3 = S3::start().await;
    let store = s3.store("");
    let objects = store.object_store();
    let root = s3.server.root().to_owned();
    let empty = everything_under(&root);
    assert_eq!(
        empty,
        [PathBuf::from("backups")],
        "a fresh store holds its bucket"
    );

    // A single put, and a multipart upload of two parts (the first at S3's 5 MiB minimum).
    let small = backup_key("backup.json");
    objects
        .put(&ObjectPath::from(small.as_str()), "{}".into())
        .await
        .expect("a long key is stored");
    let large = backup_key("base.tar.gz");
    assert!(
        large.len().div_ceil(3) * 4 > 255,
        "the key ({} bytes) is long enough that its base64 alone exceeds a file name",
        large.len()
    );
    let upload = objects
        .put_multipart(&ObjectPath::from(large.as_str()))
        .await
        .expect("an upload starts");
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    let body: Vec<u8> = (0..(5 * 1024 * 1024 + 1000))
        .map(|i| (i % 251) as u8)
        .collect();
    writer.write(&body);
    writer.finish().await.expect("the upload completes");

    let listed: Vec<_> = objects
        .list(Some(&ObjectPath::from("dev")))
        .try_collect()
        .await
        .expect("listed");
    let mut keys: Vec<String> = listed.iter().map(|o| o.location.to_string()).collect();
    keys.sort();
    let mut expected = vec![large.clone(), small.clone()];
    expected.sort();
    assert_eq!(keys, expected);
    let read = objects
        .get(&ObjectPath::from(large.as_str()))
        .await
        .expect("read back")
        .bytes()
        .await
        .expect("body");
    assert!(read == body, "the upload reads back as written");
    let range = objects
        .get_range(&ObjectPath::from(large.as_str()), 10..20)
        .await
        .expect("a range");
    assert_eq!(&range[..], &body[10..20]);
    let head = objects
        .head(&ObjectPath::from(large.as_str()))
        .await
        .expect("head");
    assert_eq!(head.size, body.len() as u64);
    assert!(
        head.e_tag
            .as_deref()
            .is_some_and(|tag| tag.ends_with("-2\"") || tag.ends_with("-2")),
        "a multipart upload's ETag counts its parts: {:?}",
        head.e_tag
    );

    // A create-only put of an existing key is refused, as on S3.
    let again = objects
        .put_opts(
            &ObjectPath::from(small.as_str()),
            "other".into(),
            PutOptions::from(PutMode::Create),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );

    for key in [&small, &large] {
        objects
            .delete(&ObjectPath::from(key.as_str()))
            .await
            .expect("deleted");
    }
    assert_eq!(
        everything_under(&root),
        empty,
        "deleting every object leaves the store as it was: no data, metadata or directory"
    );
    assert!(
        objects
            .head(&ObjectPath::from(small.as_str()))
            .await
            .is_err_and(|error| matches!(error, object_store::Error::NotFound { .. }))
    );

    // Deleting what is not there succeeds, as on S3.
    objects
        .delete(&ObjectPath::from(small.as_str()))
        .await
        .expect("deleting a missing key succeeds");
    s3.server.shutdown().await;
}

#[tokio::test]
async fn concurrent_deletions_of_one_key_all_succeed() {
    let s3 = S3::start().await;
    let store = s3.store("");
    let objects = store.object_store().clone();
    let root = s3.server.root().to_owned();
    let empty = everything_under(&root);
    for round in 0..20 {
        let key = ObjectPath::from(backup_key(&format!("wal/{round:08}")).as_str());
        objects
            .put(&key, vec![7u8; 4096].into())
            .await
            .expect("stored");
        let deletions: Vec<_> = (0..4)
            .map(|_| {
                let objects = objects.clone();
                let key = key.clone();
                tokio::spawn(async move { objects.delete(&key).await })
            })
            .collect();
        for deletion in deletions {
            deletion
                .await
                .expect("joined")
                .unwrap_or_else(|error| panic!("round {round}: a deletion failed: {error}"));
        }
    }
    assert_eq!(everything_under(&root), empty);
    s3.server.shutdown().await;
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing() {
    let s3 = S3::start().await;
    let store = s3.store("");
    let objects = store.object_store();
    let root = s3.server.root().to_owned();
    let empty = everything_under(&root);
    let mut upload = objects
        .put_multipart(&ObjectPath::from(backup_key("base.tar.gz").as_str()))
        .await
        .expect("an upload starts");
    upload
        .put_part(vec![1u8; 5 * 1024 * 1024].into())
        .await
        .expect("a part");
    assert_eq!(s3.server.pending_multipart_uploads().unwrap(), 1);
    upload.abort().await.expect("aborted");
    assert_eq!(s3.server.pending_multipart_uploads().unwrap(), 0);
    assert_eq!(everything_under(&root), empty);
    s3.server.shutdown().await;
}
