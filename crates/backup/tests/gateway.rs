//! The object-store gateway, attacked with real clients: the embedded S3 server is the store,
//! the gateway stands in front of it, and tenants talk to the gateway with object_store's
//! AmazonS3 client (as instances and backup Jobs do) or with hand-signed SigV4 requests (for
//! what object_store refuses to send). Each refusal is checked at the store: nothing of the
//! other tenant's changed and nothing was written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use hmac::{Hmac, KeyInit, Mac};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_backup::gateway::{
    ClusterDirectory, ClusterIdentity, ClusterRecord, GatewayKey, GatewayOptions, StoreGateway,
};
use tusk_backup::store::{BackupStore, StoreConfig};
use tusk_sandbox::s3::{S3Options, S3Server};

const BUCKET: &str = "tusk-backups";
const PREFIX: &str = "prod";

/// The clusters that exist, as the API server would answer, and what each restores from.
#[derive(Default)]
struct Clusters(Mutex<HashMap<ClusterIdentity, ClusterRecord>>);

impl Clusters {
    fn add(&self, cluster: &ClusterIdentity, restore_source: Option<&ClusterIdentity>) {
        self.0.lock().unwrap().insert(
            cluster.clone(),
            ClusterRecord {
                restore_source: restore_source.cloned(),
            },
        );
    }

    fn remove(&self, cluster: &ClusterIdentity) {
        self.0.lock().unwrap().remove(cluster);
    }
}

#[async_trait::async_trait]
impl ClusterDirectory for Clusters {
    async fn lookup(&self, cluster: &ClusterIdentity) -> Result<Option<ClusterRecord>, String> {
        Ok(self.0.lock().unwrap().get(cluster).cloned())
    }
}

fn cluster(namespace: &str, name: &str, uid: &str) -> ClusterIdentity {
    ClusterIdentity {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn own_prefix(cluster: &ClusterIdentity) -> String {
    format!(
        "{}/",
        tusk_api::names::cluster_storage_prefix(
            PREFIX,
            &cluster.namespace,
            &cluster.name,
            &cluster.uid
        )
    )
}

struct World {
    _dir: tempfile::TempDir,
    s3: S3Server,
    /// The operator's own client, with the platform's keys: the ground truth.
    platform: BackupStore,
    gateway: StoreGateway,
    key: GatewayKey,
    clusters: Arc<Clusters>,
    a: ClusterIdentity,
    b: ClusterIdentity,
}

impl World {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Server::start(dir.path().join("s3"), S3Options::default())
            .await
            .unwrap();
        s3.create_bucket(BUCKET).unwrap();
        s3.create_bucket("other-bucket").unwrap();
        let platform = BackupStore::new(&StoreConfig {
            url: format!("s3://{BUCKET}/{PREFIX}"),
            endpoint: Some(s3.endpoint().to_owned()),
            access_key_id: Some(s3.access_key().to_owned()),
            secret_access_key: Some(s3.secret_key().to_owned()),
            allow_http: true,
            ..StoreConfig::default()
        })
        .unwrap();
        let a = cluster(
            "project-a",
            "elephant",
            "0b9e4c51-aaaa-4d1e-9f00-000000000001",
        );
        let b = cluster(
            "project-b",
            "mammoth",
            "7f3d2a10-bbbb-4c2e-8e00-000000000002",
        );
        let clusters = Arc::new(Clusters::default());
        clusters.add(&a, None);
        clusters.add(&b, None);
        let key = GatewayKey::generate();
        let gateway = StoreGateway::start(
            &platform,
            GatewayOptions {
                address: "127.0.0.1:0".parse().unwrap(),
                key: key.clone(),
                buffer_limit: 64 * 1024 * 1024,
                cluster_cache_ttl: Duration::from_millis(200),
            },
            clusters.clone(),
        )
        .await
        .unwrap();
        Self {
            _dir: dir,
            s3,
            platform,
            gateway,
            key,
            clusters,
            a,
            b,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.gateway.address())
    }

    /// A tenant's client, as `store_env` configures pods: the gateway, the configured bucket
    /// and prefix, and the cluster's derived keys.
    fn tenant(&self, cluster: &ClusterIdentity) -> Arc<dyn ObjectStore> {
        let credentials = self.key.credentials_for(cluster);
        self.client(
            BUCKET,
            &credentials.access_key_id,
            &credentials.secret_access_key,
        )
    }

    fn client(&self, bucket: &str, access_key_id: &str, secret: &str) -> Arc<dyn ObjectStore> {
        BackupStore::new(&StoreConfig {
            url: format!("s3://{bucket}/{PREFIX}"),
            endpoint: Some(self.endpoint()),
            access_key_id: Some(access_key_id.to_owned()),
            secret_access_key: Some(secret.to_owned()),
            allow_http: true,
            ..StoreConfig::default()
        })
        .unwrap()
        .object_store()
        .clone()
    }

    /// What the store holds, read with the platform's keys.
    async fn stored(&self, key: &str) -> Option<Vec<u8>> {
        match self
            .platform
            .object_store()
            .get(&ObjectPath::from(key))
            .await
        {
            Ok(result) => Some(result.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => panic!("the platform cannot read {key}: {error}"),
        }
    }

    async fn plant(&self, key: &str, content: &'static [u8]) {
        self.platform
            .object_store()
            .put(&ObjectPath::from(key), PutPayload::from_static(content))
            .await
            .unwrap();
    }
}

fn refused<T: std::fmt::Debug>(what: &str, result: object_store::Result<T>) -> String {
    let error = result.expect_err(what).to_string();
    assert!(
        !error.contains("NotFound") || error.contains("AccessDenied"),
        "{what}: refused for the wrong reason: {error}"
    );
    error
}

#[tokio::test]
async fn a_cluster_reaches_its_own_prefix_with_every_operation_the_data_path_uses() {
    let world = World::start().await;
    let tenant = world.tenant(&world.a);
    let own = own_prefix(&world.a);

    // put, conditional create, get (whole and ranged), head.
    let segment = ObjectPath::from(format!("{own}wal/000000010000000000000001.gz.dare"));
    tenant
        .put(&segment, PutPayload::from_static(b"first segment"))
        .await
        .unwrap();
    let again = tenant
        .put_opts(
            &segment,
            PutPayload::from_static(b"planted"),
            PutOptions::from(PutMode::Create),
        )
        .await
        .expect_err("If-None-Match: * must not overwrite");
    assert!(
        matches!(again, object_store::Error::AlreadyExists { .. }),
        "{again}"
    );
    assert_eq!(
        tenant.get(&segment).await.unwrap().bytes().await.unwrap(),
        &b"first segment"[..]
    );
    assert_eq!(
        tenant.get_range(&segment, 6..13).await.unwrap(),
        &b"segment"[..]
    );
    assert_eq!(tenant.head(&segment).await.unwrap().size, 13);

    // A multipart upload of three parts, as the backup sink sends it.
    let base = ObjectPath::from(format!("{own}base/b1.tar.gz.dare"));
    let mut upload = WriteMultipart::new_with_chunk_size(
        tenant.put_multipart(&base).await.unwrap(),
        5 * 1024 * 1024,
    );
    let content: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    upload.write(&content);
    upload.finish().await.unwrap();
    assert_eq!(
        world.stored(base.as_ref()).await.as_deref(),
        Some(&content[..])
    );

    // An aborted upload leaves nothing behind.
    let mut aborted = tenant
        .put_multipart(&ObjectPath::from(format!("{own}base/b2.tar.gz.dare")))
        .await
        .unwrap();
    aborted
        .put_part(PutPayload::from(vec![1u8; 5 * 1024 * 1024]))
        .await
        .unwrap();
    aborted.abort().await.unwrap();
    assert_eq!(world.s3.pending_multipart_uploads().unwrap(), 0);

    // list (recursive and by folder), then delete.
    let listed: Vec<_> = tenant
        .list(Some(&ObjectPath::from(own.trim_end_matches('/'))))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let folders = tenant
        .list_with_delimiter(Some(&ObjectPath::from(own.trim_end_matches('/'))))
        .await
        .unwrap();
    let mut folders: Vec<String> = folders
        .common_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    folders.sort();
    assert_eq!(folders, [format!("{own}base"), format!("{own}wal")]);
    tenant.delete(&segment).await.unwrap();
    assert_eq!(world.stored(segment.as_ref()).await, None);

    // BackupStore's own helpers, as the Job and the instance call them.
    let client = BackupStore::new(&StoreConfig {
        url: format!("s3://{BUCKET}/{PREFIX}"),
        endpoint: Some(world.endpoint()),
        access_key_id: Some(world.key.credentials_for(&world.a).access_key_id),
        secret_access_key: Some(world.key.credentials_for(&world.a).secret_access_key),
        allow_http: true,
        ..StoreConfig::default()
    })
    .unwrap();
    assert!(client.exists(base.as_ref()).await.unwrap());
    assert_eq!(
        client.delete_prefix(&format!("{own}base")).await.unwrap(),
        1
    );
    assert_eq!(world.stored(base.as_ref()).await, None);
}

#[tokio::test]
async fn another_clusters_objects_are_out_of_reach() {
    let world = World::start().await;
    let attacker = world.tenant(&world.a);
    let victim = own_prefix(&world.b);
    let victim_segment = format!("{victim}wal/000000010000000000000001.gz.dare");
    world.plant(&victim_segment, b"victim's segment").await;

    // Read, overwrite, plant the next segment (which froze the victim's archiving), delete.
    refused(
        "reading B's segment",
        attacker
            .get(&ObjectPath::from(victim_segment.as_str()))
            .await,
    );
    refused(
        "overwriting B's segment",
        attacker
            .put(
                &ObjectPath::from(victim_segment.as_str()),
                PutPayload::from_static(b"garbage"),
            )
            .await,
    );
    let next = format!("{victim}wal/000000010000000000000002.gz.dare");
    refused(
        "planting B's next segment",
        attacker
            .put(
                &ObjectPath::from(next.as_str()),
                PutPayload::from_static(b"garbage"),
            )
            .await,
    );
    refused(
        "a multipart upload into B's prefix",
        attacker
            .put_multipart(&ObjectPath::from(format!("{victim}base/x")))
            .await,
    );
    refused(
        "deleting B's segment",
        attacker
            .delete(&ObjectPath::from(victim_segment.as_str()))
            .await,
    );
    assert_eq!(
        world.stored(&victim_segment).await.as_deref(),
        Some(&b"victim's segment"[..])
    );
    assert_eq!(world.stored(&next).await, None);

    // Listing B's prefix, the store prefix, or the bucket root.
    for prefix in [
        Some(ObjectPath::from(victim.trim_end_matches('/'))),
        Some(ObjectPath::from(PREFIX)),
        Some(ObjectPath::from(format!("{PREFIX}/project-b"))),
        None,
    ] {
        let listed: object_store::Result<Vec<_>> =
            attacker.list(prefix.as_ref()).try_collect().await;
        refused(&format!("listing {prefix:?}"), listed);
        refused(
            &format!("listing {prefix:?} by folder"),
            attacker.list_with_delimiter(prefix.as_ref()).await,
        );
    }

    // A prefix that merely starts like A's: `<uid>x/` is another cluster's, not A's.
    let confusion = format!("{}x/wal/1", own_prefix(&world.a).trim_end_matches('/'));
    refused(
        "writing under <uid>x/",
        attacker
            .put(
                &ObjectPath::from(confusion.as_str()),
                PutPayload::from_static(b"x"),
            )
            .await,
    );
    assert_eq!(world.stored(&confusion).await, None);

    // Another bucket of the same store, even under A's own prefix.
    let credentials = world.key.credentials_for(&world.a);
    let elsewhere = world.client(
        "other-bucket",
        &credentials.access_key_id,
        &credentials.secret_access_key,
    );
    let in_other_bucket = ObjectPath::from(format!("{}wal/1", own_prefix(&world.a)));
    refused(
        "writing to another bucket",
        elsewhere
            .put(&in_other_bucket, PutPayload::from_static(b"x"))
            .await,
    );
    assert!(
        std::fs::read_dir(world.s3.root().join("other-bucket"))
            .unwrap()
            .next()
            .is_none(),
        "nothing was written to the other bucket"
    );
}

#[tokio::test]
async fn forged_wrong_and_void_credentials_are_refused() {
    let world = World::start().await;
    let own = own_prefix(&world.a);
    let key = ObjectPath::from(format!("{own}wal/1"));
    world.plant(key.as_ref(), b"mine").await;

    // A's access key id with a wrong secret, and with a secret derived under another key.
    let credentials = world.key.credentials_for(&world.a);
    let wrong = world.client(BUCKET, &credentials.access_key_id, "0123456789abcdef");
    let error = refused("a wrong secret", wrong.get(&key).await);
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");
    let forged = GatewayKey::generate().credentials_for(&world.a);
    let forged = world.client(BUCKET, &forged.access_key_id, &forged.secret_access_key);
    refused("a forged secret", forged.get(&key).await);

    // The platform's own keys are not gateway keys: the gateway is no open relay.
    let platform = world.client(BUCKET, world.s3.access_key(), world.s3.secret_key());
    let error = refused("the platform's keys", platform.get(&key).await);
    assert!(error.contains("InvalidAccessKeyId"), "{error}");

    // The cluster is deleted: its credentials stop working once the cached answer expires,
    // and a re-created cluster of the same name (another uid) does not revive them.
    let tenant = world.tenant(&world.a);
    tenant.get(&key).await.expect("A reads its own object");
    let reborn = cluster(&world.a.namespace, &world.a.name, "a-new-uid");
    world.clusters.remove(&world.a);
    world.clusters.add(&reborn, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = refused("a deleted cluster's credentials", tenant.get(&key).await);
    assert!(error.contains("no longer exists"), "{error}");
    refused(
        "a deleted cluster's credentials writing",
        tenant
            .put(
                &ObjectPath::from(format!("{own}wal/2")),
                PutPayload::from_static(b"x"),
            )
            .await,
    );
    assert_eq!(world.stored(&format!("{own}wal/2")).await, None);
}

#[tokio::test]
async fn a_restored_cluster_reads_its_source_and_writes_only_its_own_prefix() {
    let world = World::start().await;
    let source = own_prefix(&world.a);
    let backup = format!("{source}base/b1.tar.gz.dare");
    world.plant(&backup, b"base backup").await;
    world
        .plant(&format!("{source}wal/1.gz.dare"), b"segment")
        .await;
    world
        .plant(
            &format!("{}wal/1.gz.dare", own_prefix(&world.b)),
            b"other tenant",
        )
        .await;

    // elephant-restored, in A's namespace, restores from a backup of A.
    let restored = cluster(
        "project-a",
        "elephant-restored",
        "5e0c1b7d-cccc-4a3e-8d00-000000000003",
    );
    world.clusters.add(&restored, Some(&world.a));
    let tenant = world.tenant(&restored);
    assert_eq!(
        tenant
            .get(&ObjectPath::from(backup.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        &b"base backup"[..]
    );
    let wal: Vec<_> = tenant
        .list(Some(&ObjectPath::from(format!("{source}wal"))))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(wal.len(), 1);
    // Reading is all: the source's objects cannot be changed or added to.
    refused(
        "overwriting the source's backup",
        tenant
            .put(
                &ObjectPath::from(backup.as_str()),
                PutPayload::from_static(b"x"),
            )
            .await,
    );
    refused(
        "deleting the source's backup",
        tenant.delete(&ObjectPath::from(backup.as_str())).await,
    );
    assert_eq!(
        world.stored(&backup).await.as_deref(),
        Some(&b"base backup"[..])
    );
    // Its own prefix is writable as usual.
    tenant
        .put(
            &ObjectPath::from(format!("{}wal/1.gz.dare", own_prefix(&restored))),
            PutPayload::from_static(b"new timeline"),
        )
        .await
        .unwrap();

    // A restore source in another namespace grants nothing, whatever the directory says.
    let thief = cluster("project-a", "thief", "9a9a9a9a-dddd-4b4b-8c00-000000000004");
    world.clusters.add(&thief, Some(&world.b));
    let thief = world.tenant(&thief);
    refused(
        "reading another namespace's restore source",
        thief
            .get(&ObjectPath::from(format!(
                "{}wal/1.gz.dare",
                own_prefix(&world.b)
            )))
            .await,
    );
}

/// A GET signed by hand (SigV4, header form), for paths object_store will not produce.
async fn signed_get(
    endpoint: &str,
    path: &str,
    query: &str,
    access_key_id: &str,
    secret: &str,
) -> (u16, String) {
    let host = endpoint.trim_start_matches("http://");
    let now = jiff::Timestamp::now();
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let empty_hash = hex(&Sha256::digest(b""));
    let canonical = format!(
        "GET\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{empty_hash}\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty_hash}"
    );
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut signing_key = format!("AWS4{secret}").into_bytes();
    for part in [date, "us-east-1", "s3", "aws4_request"] {
        signing_key = hmac(&signing_key, part.as_bytes());
    }
    let signature = hex(&hmac(&signing_key, to_sign.as_bytes()));
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {amz_date}\r\nx-amz-content-sha256: {empty_hash}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn dot_dot_segments_do_not_climb_out_of_the_prefix() {
    let world = World::start().await;
    let victim = format!("{}wal/1", own_prefix(&world.b));
    world.plant(&victim, b"victim's").await;
    let own = own_prefix(&world.a);
    world.plant(&format!("{own}wal/1"), b"mine").await;
    let credentials = world.key.credentials_for(&world.a);
    let get = |path: String, query: &'static str| {
        let endpoint = world.endpoint();
        let credentials = credentials.clone();
        async move {
            signed_get(
                &endpoint,
                &path,
                query,
                &credentials.access_key_id,
                &credentials.secret_access_key,
            )
            .await
        }
    };

    // The hand-signed request works where it should, so a refusal below is the gateway's.
    let (status, response) = get(format!("/{BUCKET}/{own}wal/1"), "").await;
    assert_eq!(status, 200, "{response}");
    assert!(response.ends_with("mine"), "{response}");

    let climbing = format!(
        "/{BUCKET}/{own}../../../../project-b/mammoth/{}/wal/1",
        world.b.uid
    );
    let (status, response) = get(climbing, "").await;
    assert_eq!(status, 403, "{response}");
    assert!(!response.contains("victim's"), "{response}");
    let (status, response) = get(format!("/{BUCKET}/{own}./wal/1"), "").await;
    assert_eq!(status, 403, "{response}");
    // Listing the bucket root, and listing through a `..` in the prefix.
    let (status, response) = get(format!("/{BUCKET}"), "list-type=2").await;
    assert_eq!(status, 403, "{response}");
    let (status, response) = get(
        format!("/{BUCKET}"),
        "list-type=2&prefix=prod%2Fproject-a%2Felephant%2F0b9e4c51-aaaa-4d1e-9f00-000000000001%2F..%2F..%2F",
    )
    .await;
    assert_eq!(status, 403, "{response}");
}
