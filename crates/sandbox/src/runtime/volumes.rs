//! Pod volumes, without mounts: each volume is a directory, and each mountPath is a symlink
//! to it under the pod's own root directory. Secret, ConfigMap, downward-API and projected
//! volumes are written as the kubelet's atomic writer does: the files live in a timestamped
//! directory that the `..data` symlink points at, and an update swaps that symlink in one
//! rename, so a reader never sees half of an update.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::Node;
use super::beneath::{Dir, Owner, components, is_plain_name, starts_with_dots};
use super::env::pod_field;

/// Where Kubernetes mounts the service-account token, CA and namespace.
pub(crate) const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The name of the implicit service-account volume.
const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access";
/// The kubelet's default file mode for projected files (0644).
const DEFAULT_MODE: i32 = 0o644;

/// A volume could not be set up (the message of a FailedMount Event).
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub(crate) struct MountError {
    pub volume: String,
    pub message: String,
}

/// Rewrites paths under a mountPath to the same path under the pod's root directory.
#[derive(Clone, Debug)]
pub(crate) struct Rebase {
    root: PathBuf,
    /// How the paths handed to the pod's processes name its root: the root itself, or a short
    /// link to it (see `short_roots`).
    named_root: PathBuf,
    /// Longest first, so that the innermost mount wins.
    mount_paths: Vec<String>,
}

impl Rebase {
    pub fn new(root: PathBuf, mut mount_paths: Vec<String>) -> Self {
        mount_paths.sort_by_key(|path| std::cmp::Reverse(path.len()));
        mount_paths.dedup();
        Self {
            named_root: root.clone(),
            root,
            mount_paths,
        }
    }

    /// Rebased paths name the root through `link`, a link to it.
    pub fn named_through(mut self, link: &Path) -> Self {
        self.named_root = link.to_path_buf();
        self
    }

    /// The pod's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `value` with a leading mountPath moved under the pod's root (named as the pod's
    /// processes see it); anything else unchanged.
    pub fn path(&self, value: &str) -> String {
        for mount in &self.mount_paths {
            let mount = mount.trim_end_matches('/');
            if mount.is_empty() {
                continue;
            }
            if value == mount || value.starts_with(&format!("{mount}/")) {
                return format!(
                    "{}/{}",
                    self.named_root.display(),
                    value.trim_start_matches('/')
                );
            }
        }
        value.to_string()
    }

    /// `path` relative to the pod's root, whichever way it names the root.
    pub fn below_root<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.named_root)
            .or_else(|_| path.strip_prefix(&self.root))
            .ok()
    }

    /// Where a mountPath lives under the pod's root.
    pub fn mount_point(&self, mount_path: &str) -> PathBuf {
        self.root.join(mount_path.trim_start_matches('/'))
    }
}

/// One file of a projected volume.
#[derive(Clone, Debug, PartialEq, Eq)]
struct File {
    bytes: Vec<u8>,
    mode: u32,
}

type Payload = BTreeMap<String, File>;

/// The volumes of one pod, set up.
pub(crate) struct PodVolumes {
    /// Each volume's directory, by volume name.
    pub dirs: BTreeMap<String, PathBuf>,
    /// The projected volumes and what was last written to each.
    projected: Vec<(Volume, Payload)>,
    /// The runtime's directory of the pod's volumes.
    volumes_dir: PathBuf,
    owner: Owner,
}

/// The volumes of `pod`, the implicit service-account one included.
pub(crate) async fn pod_volume_list(node: &Node, pod: &Pod) -> Vec<Volume> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut volumes = spec.volumes.clone().unwrap_or_default();
    if automounts_token(node, pod).await {
        let projected = serde_json::json!({
            "name": SERVICE_ACCOUNT_VOLUME,
            "projected": {
                "defaultMode": DEFAULT_MODE,
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        });
        if let Ok(volume) = serde_json::from_value(projected) {
            volumes.push(volume);
        }
    }
    volumes
}

/// Whether the pod gets the service-account token: unless the pod, or failing that its
/// ServiceAccount, says `automountServiceAccountToken: false`.
async fn automounts_token(node: &Node, pod: &Pod) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    if let Some(choice) = spec.automount_service_account_token {
        return choice;
    }
    let name = spec
        .service_account_name
        .unwrap_or_else(|| "default".to_string());
    let accounts: Api<ServiceAccount> =
        Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default());
    match accounts.get_opt(&name).await {
        Ok(Some(account)) => account.automount_service_account_token != Some(false),
        _ => true,
    }
}

/// The mounts of every container: `(mountPath, volume, subPath)`, plus the service-account
/// mount where the pod has that volume.
pub(crate) fn mounts(pod: &Pod, volumes: &[Volume]) -> Vec<(String, String, Option<String>)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            out.push((
                mount.mount_path.clone(),
                mount.name.clone(),
                mount.sub_path.clone().filter(|p| !p.is_empty()),
            ));
        }
    }
    let has_token = volumes.iter().any(|v| v.name == SERVICE_ACCOUNT_VOLUME);
    if has_token && !out.iter().any(|(path, _, _)| path == SERVICE_ACCOUNT_PATH) {
        out.push((
            SERVICE_ACCOUNT_PATH.to_string(),
            SERVICE_ACCOUNT_VOLUME.to_string(),
            None,
        ));
    }
    out
}

impl PodVolumes {
    /// Sets up every volume under `volumes_dir` and links every mount under the pod's root.
    /// Nothing the pod names (volume names, mount paths, subPaths) leads the runtime outside
    /// those two directories and the pod's claims, and no symlink in them is followed.
    pub async fn set_up(
        node: &Node,
        pod: &Pod,
        volumes: &[Volume],
        volumes_dir: &Path,
        rebase: &Rebase,
        owner: Owner,
    ) -> Result<Self, MountError> {
        let mut this = Self {
            dirs: BTreeMap::new(),
            projected: Vec::new(),
            volumes_dir: volumes_dir.to_path_buf(),
            owner,
        };
        let io = |volume: &str| {
            let volume = volume.to_string();
            move |error: std::io::Error| MountError {
                volume,
                message: error.to_string(),
            }
        };
        let refuse = |volume: &str, message: String| MountError {
            volume: volume.to_string(),
            message,
        };
        for volume in volumes {
            let name = &volume.name;
            // The name becomes a directory name.
            if !is_volume_name(name) {
                return Err(refuse(
                    name,
                    "a volume name must be a lowercase RFC 1123 label".to_string(),
                ));
            }
        }
        let pod_volumes = Dir::open(volumes_dir).map_err(io("(all)"))?;
        for volume in volumes {
            let name = &volume.name;
            let dir = if volume.empty_dir.is_some() {
                // emptyDir is world-writable, as the kubelet makes it; the pod's volumes
                // directory keeps every other pod out.
                let dir = pod_volumes
                    .child_or_create(OsStr::new(name), 0o777, owner)
                    .map_err(io(name))?;
                dir.chmod(0o777).map_err(io(name))?;
                dir.chown(owner).map_err(io(name))?;
                volumes_dir.join(name)
            } else if let Some(claim) = &volume.persistent_volume_claim {
                claim_dir(node, pod, &claim.claim_name, owner)
                    .await
                    .map_err(|message| refuse(name, message))?
            } else if volume.host_path.is_some() {
                // The pods run on the host itself, without a mount namespace: a hostPath
                // would hand the host's files to a tenant.
                return Err(refuse(
                    name,
                    "hostPath volumes are not allowed: the sandbox runs pods on the host itself, so a hostPath would expose the host's files".to_string(),
                ));
            } else if volume.secret.is_some()
                || volume.config_map.is_some()
                || volume.projected.is_some()
                || volume.downward_api.is_some()
            {
                let payload = payload(node, pod, volume)
                    .await
                    .map_err(|message| refuse(name, message))?;
                write_atomically(&pod_volumes, name, &payload, owner).map_err(io(name))?;
                this.projected.push((volume.clone(), payload));
                volumes_dir.join(name)
            } else {
                return Err(refuse(
                    name,
                    "this kind of volume is not supported by the sandbox".to_string(),
                ));
            };
            this.dirs.insert(name.clone(), dir);
        }
        let pod_root = Dir::open(rebase.root()).map_err(io("(root)"))?;
        for (mount_path, volume, sub_path) in mounts(pod, volumes) {
            let Some(dir) = this.dirs.get(&volume) else {
                return Err(MountError {
                    message: format!("volume \"{volume}\" is not declared by the pod"),
                    volume,
                });
            };
            let mount = components(&mount_path)
                .map_err(|error| refuse(&volume, format!("invalid mountPath: {error}")))?;
            let Some((mount_name, mount_parents)) = mount.split_last() else {
                return Err(refuse(
                    &volume,
                    "invalid mountPath: \"/\" cannot be a mount point".to_string(),
                ));
            };
            let target = match &sub_path {
                Some(sub) => {
                    let relative = components(sub)
                        .map_err(|error| refuse(&volume, format!("invalid subPath: {error}")))?;
                    if !sub_path_is_relative(sub) {
                        return Err(refuse(
                            &volume,
                            format!("invalid subPath: {sub:?} must be a relative path"),
                        ));
                    }
                    if let Some((last, parents)) = relative.split_last() {
                        let parent = Dir::open(dir)
                            .and_then(|volume_dir| volume_dir.descend(parents, 0o755, owner))
                            .map_err(io(&volume))?;
                        // What is there already is the pod's to follow, not the runtime's.
                        if !parent.exists(last).map_err(io(&volume))? {
                            parent
                                .child_or_create(last, 0o755, owner)
                                .map_err(io(&volume))?;
                        }
                    }
                    relative
                        .iter()
                        .fold(dir.clone(), |path, name| path.join(name))
                }
                None => dir.clone(),
            };
            pod_root
                .descend(mount_parents, 0o755, owner)
                .and_then(|parent| parent.replace_with_symlink(&target, mount_name))
                .map_err(io(&volume))?;
        }
        Ok(this)
    }

    /// Rewrites the projected volumes whose content changed (a Secret or ConfigMap update, or
    /// a token to renew). Failures are reported and the old files stay, as with the kubelet.
    pub async fn refresh(&mut self, node: &Node, pod: &Pod) -> Vec<MountError> {
        let mut errors = Vec::new();
        for (volume, written) in &mut self.projected {
            match payload(node, pod, volume).await {
                Ok(payload) if payload == *written => {}
                Ok(payload) => match Dir::open(&self.volumes_dir).and_then(|pod_volumes| {
                    write_atomically(&pod_volumes, &volume.name, &payload, self.owner)
                }) {
                    Ok(()) => *written = payload,
                    Err(error) => errors.push(MountError {
                        volume: volume.name.clone(),
                        message: error.to_string(),
                    }),
                },
                Err(message) => errors.push(MountError {
                    volume: volume.name.clone(),
                    message,
                }),
            }
        }
        errors
    }

    /// How often the service-account tokens must be renewed: when 80% of the shortest one's
    /// lifetime has passed, as the kubelet does. `None` without tokens.
    pub fn token_renewal(&self) -> Option<std::time::Duration> {
        self.projected
            .iter()
            .flat_map(|(volume, _)| volume.projected.iter())
            .flat_map(|projected| projected.sources.iter().flatten())
            .filter_map(|source| source.service_account_token.as_ref())
            .map(|token| token.expiration_seconds.unwrap_or(3607).max(600))
            .min()
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map(|seconds| std::time::Duration::from_secs(seconds * 4 / 5))
    }

    /// Whether a change to this Secret or ConfigMap concerns one of the projected volumes.
    pub fn uses(&self, secret: Option<&str>, config_map: Option<&str>) -> bool {
        self.projected.iter().any(|(volume, _)| {
            let secrets = volume
                .secret
                .iter()
                .filter_map(|s| s.secret_name.clone())
                .chain(
                    volume
                        .projected
                        .iter()
                        .flat_map(|p| p.sources.iter().flatten())
                        .filter_map(|s| s.secret.as_ref().map(|s| s.name.clone())),
                )
                .collect::<Vec<_>>();
            let maps = volume
                .config_map
                .iter()
                .map(|m| m.name.clone())
                .chain(
                    volume
                        .projected
                        .iter()
                        .flat_map(|p| p.sources.iter().flatten())
                        .filter_map(|s| s.config_map.as_ref().map(|m| m.name.clone())),
                )
                .collect::<Vec<_>>();
            secret.is_some_and(|name| secrets.iter().any(|s| s == name))
                || config_map.is_some_and(|name| maps.iter().any(|m| m == name))
        })
    }
}

/// The directory of a bound claim, which outlives every pod using it. It belongs to the pod
/// mounting it: a claim's next pod (a StatefulSet's pod created again, with a user of its own)
/// is given everything in it, as the kubelet gives a volume to the pod's fsGroup.
async fn claim_dir(node: &Node, pod: &Pod, claim: &str, owner: Owner) -> Result<PathBuf, String> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default());
    let found = claims
        .get_opt(claim)
        .await
        .map_err(|error| format!("cannot read persistentvolumeclaim \"{claim}\": {error}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let bound = found.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound {
        return Err(format!(
            "persistentvolumeclaim \"{claim}\" is not bound yet"
        ));
    }
    // Mounted before use (after a restart of the runtime, say), and grown if it waited for no
    // pod to have it mounted.
    super::pvc::bind(node, &found)
        .await
        .map_err(|error| format!("persistentvolumeclaim \"{claim}\": {error}"))?;
    let uid = found
        .uid()
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" has no uid"))?;
    if !is_plain_name(&uid) {
        return Err(format!(
            "persistentvolumeclaim \"{claim}\" has an invalid uid"
        ));
    }
    let path = super::pvc::claim_dir(&node.options, &uid);
    let claims_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let owned = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let dir = Dir::open(&claims_dir)?.child_or_create(OsStr::new(&uid), 0o770, owner)?;
        dir.chmod(0o770)?;
        if let Some(owner) = owner
            && dir.owner()? != owner
        {
            dir.chown_tree(Some(owner))?;
        }
        Ok(())
    })
    .await;
    match owned {
        Ok(Ok(())) => Ok(path),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// Which keys of a Secret or ConfigMap a volume projects, and with which file mode.
struct Keys<'a> {
    namespace: &'a str,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
    mode: i32,
}

/// What a projected volume holds right now.
async fn payload(node: &Node, pod: &Pod, volume: &Volume) -> Result<Payload, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut out = Payload::new();
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let keys = Keys {
            namespace: &namespace,
            name: &name,
            items: source.items.as_deref(),
            optional: source.optional.unwrap_or(false),
            mode: source.default_mode.unwrap_or(DEFAULT_MODE),
        };
        secret_files(node, &keys, &mut out).await?;
    }
    if let Some(source) = &volume.config_map {
        let keys = Keys {
            namespace: &namespace,
            name: &source.name,
            items: source.items.as_deref(),
            optional: source.optional.unwrap_or(false),
            mode: source.default_mode.unwrap_or(DEFAULT_MODE),
        };
        map_files(node, &keys, &mut out).await?;
    }
    if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        downward_files(
            pod,
            source.items.as_deref().unwrap_or_default(),
            mode,
            &mut out,
        )?;
    }
    if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(secret) = &source.secret {
                let keys = Keys {
                    namespace: &namespace,
                    name: &secret.name,
                    items: secret.items.as_deref(),
                    optional: secret.optional.unwrap_or(false),
                    mode,
                };
                secret_files(node, &keys, &mut out).await?;
            }
            if let Some(map) = &source.config_map {
                let keys = Keys {
                    namespace: &namespace,
                    name: &map.name,
                    items: map.items.as_deref(),
                    optional: map.optional.unwrap_or(false),
                    mode,
                };
                map_files(node, &keys, &mut out).await?;
            }
            if let Some(downward) = &source.downward_api {
                downward_files(
                    pod,
                    downward.items.as_deref().unwrap_or_default(),
                    mode,
                    &mut out,
                )?;
            }
            if let Some(token) = &source.service_account_token {
                let value =
                    request_token(node, pod, token.audience.clone(), token.expiration_seconds)
                        .await?;
                out.insert(
                    token.path.clone(),
                    File {
                        bytes: value.into_bytes(),
                        mode: 0o600,
                    },
                );
                // The CA that signs the API server's certificate comes with the token.
                out.insert(
                    "ca.crt".to_string(),
                    File {
                        bytes: node.api.ca_pem.clone().into_bytes(),
                        mode: file_mode(mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

fn file_mode(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(0o644) & 0o777
}

/// Files for `entries` (`None`: the object does not exist), all or only the selected keys.
fn entry_files(
    kind: &str,
    keys: &Keys<'_>,
    entries: Option<BTreeMap<String, Vec<u8>>>,
    out: &mut Payload,
) -> Result<(), String> {
    let Some(entries) = entries else {
        if keys.optional {
            return Ok(());
        }
        return Err(format!(
            "{} \"{}\" not found",
            kind.to_lowercase(),
            keys.name
        ));
    };
    match keys.items {
        None => {
            for (key, bytes) in entries {
                out.insert(
                    key,
                    File {
                        bytes,
                        mode: file_mode(keys.mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match entries.get(&item.key) {
                    Some(bytes) => {
                        out.insert(
                            item.path.clone(),
                            File {
                                bytes: bytes.clone(),
                                mode: file_mode(item.mode.unwrap_or(keys.mode)),
                            },
                        );
                    }
                    None if keys.optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {} in {kind} {}/{}",
                            item.key, keys.namespace, keys.name
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn secret_files(node: &Node, keys: &Keys<'_>, out: &mut Payload) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(node.client.clone(), keys.namespace);
    let secret = api
        .get_opt(keys.name)
        .await
        .map_err(|error| format!("cannot read secret \"{}\": {error}", keys.name))?;
    let entries = secret.map(|secret| {
        let mut entries: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        entries.extend(
            secret
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        entries
    });
    entry_files("Secret", keys, entries, out)
}

async fn map_files(node: &Node, keys: &Keys<'_>, out: &mut Payload) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(node.client.clone(), keys.namespace);
    let map = api
        .get_opt(keys.name)
        .await
        .map_err(|error| format!("cannot read configmap \"{}\": {error}", keys.name))?;
    let entries = map.map(|map| {
        let mut entries: BTreeMap<String, Vec<u8>> = map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        entries.extend(
            map.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        entries
    });
    entry_files("ConfigMap", keys, entries, out)
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    out: &mut Payload,
) -> Result<(), String> {
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), _) => pod_field(pod, &pod_ip, &field.field_path).map_err(|e| e.0)?,
            (None, Some(_)) => "0".to_string(),
            (None, None) => continue,
        };
        out.insert(
            item.path.clone(),
            File {
                bytes: value.into_bytes(),
                mode: file_mode(item.mode.unwrap_or(mode)),
            },
        );
    }
    Ok(())
}

/// A token for the pod's ServiceAccount, bound to the pod, from the TokenRequest API.
async fn request_token(
    node: &Node,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let account = spec
        .service_account_name
        .unwrap_or_else(|| "default".to_string());
    let accounts: Api<ServiceAccount> =
        Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|audience| vec![audience]),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|error| {
            format!("failed to fetch token: cannot request a token for serviceaccount \"{account}\": {error}")
        })?;
    issued
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| format!("failed to fetch token: the token request for serviceaccount \"{account}\" returned no token"))
}

/// Whether `name` is a DNS-1123 label, as Kubernetes requires of volume names.
fn is_volume_name(name: &str) -> bool {
    super::container::is_container_name(name)
}

/// A subPath is relative to its volume, as Kubernetes requires.
fn sub_path_is_relative(sub: &str) -> bool {
    !sub.starts_with('/')
}

/// Writes `payload` into the volume `name` of `pod_volumes` with the `..data` symlink swap.
/// The volume's directory and the timestamped directories belong to the runtime, so the pod
/// can change nothing in them; only the files are the pod's (for modes like 0600 to let it
/// read them).
fn write_atomically(
    pod_volumes: &Dir,
    name: &str,
    payload: &Payload,
    owner: Owner,
) -> std::io::Result<()> {
    let runtime_only = None;
    let dir = pod_volumes.child_or_create(OsStr::new(name), 0o755, runtime_only)?;
    dir.chmod(0o755)?;
    let stamp = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let stamp_name = OsStr::new(&stamp);
    dir.remove(stamp_name)?;
    let fresh = dir.child_or_create(stamp_name, 0o755, runtime_only)?;
    for (path, file) in payload {
        let Ok(relative) = components(path) else {
            continue;
        };
        let Some((file_name, parents)) = relative.split_last() else {
            continue;
        };
        let parent = fresh.descend(parents, 0o755, runtime_only)?;
        parent.remove(file_name)?;
        parent.write_new(file_name, &file.bytes, file.mode, owner)?;
    }
    let data = OsStr::new("..data");
    let previous = dir.read_link(data);
    let staging = OsStr::new("..data_tmp");
    dir.replace_with_symlink(Path::new(&stamp), staging)?;
    dir.rename(staging, data)?;
    // The visible names: one symlink per top-level entry, through `..data`.
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|path| {
            components(path)
                .ok()?
                .first()
                .map(|top| top.to_string_lossy().into_owned())
        })
        .collect();
    for top in &tops {
        let visible = OsStr::new(top);
        if !dir.exists(visible)? {
            dir.replace_with_symlink(&Path::new("..data").join(top), visible)?;
        }
    }
    for entry in dir.names()? {
        if !starts_with_dots(&entry) && !tops.contains(entry.to_string_lossy().as_ref()) {
            dir.remove(&entry)?;
        }
    }
    if let Some(previous) = previous.filter(|p| p.as_os_str() != stamp_name)
        && starts_with_dots(&previous)
        && is_plain_name(&previous.to_string_lossy())
        && previous != data
    {
        dir.remove(&previous)?;
    }
    Ok(())
}
