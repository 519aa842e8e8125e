//! Authentication: who is making a request, and the TokenRequest API that issues
//! ServiceAccount tokens.
//!
//! Two kinds of bearer token are accepted, as on a kubeadm cluster:
//! - the kubeconfig's admin token, which authenticates `kubernetes-admin` in `system:masters`
//!   (the group RBAC never restricts);
//! - ServiceAccount tokens issued by `POST .../serviceaccounts/<name>/token`. They are JWTs
//!   with kube-apiserver's claims, and they stop authenticating when they expire, when the
//!   ServiceAccount is deleted (or recreated: the uid is checked), or when the pod they are
//!   bound to is deleted.
//!
//! Real clusters sign with RS256 so that others can verify tokens through the OIDC discovery
//! endpoints; the sandbox is the only verifier, so an HMAC (ring, already linked for TLS) is
//! enough. The key is kept in the data directory so that tokens outlive a restart, as they
//! outlive an API server restart on a real cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, header};
use rand::RngExt;
use ring::hmac;
use serde_json::{Value, json};

use super::error::ApiError;
use super::ext::Cause;
use super::ops::meta_str;
use super::resources::{ResourceType, storage_key};
use super::store::{Key, State};

/// The issuer and audience of kube-apiserver's default `--service-account-issuer`.
pub(crate) const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The user the kubeconfig's token authenticates.
const ADMIN_USER: &str = "kubernetes-admin";
/// What a TokenRequest gets when it asks for no particular lifetime.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// kube-apiserver refuses shorter lifetimes.
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// kube-apiserver refuses longer lifetimes (2^32 seconds).
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
const KEY_FILE: &str = "service-account.key";

/// Who a request comes from: kube-apiserver's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct User {
    pub name: String,
    /// Empty when the authenticator knows none (the admin token's user).
    pub uid: String,
    pub groups: Vec<String>,
    /// What else the authenticator says about the user, such as the pod a token is bound to.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    fn anonymous() -> Self {
        User {
            name: ANONYMOUS.to_string(),
            groups: vec![UNAUTHENTICATED.to_string()],
            ..User::default()
        }
    }

    /// A ServiceAccount's user, without the uid and extras a token adds.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut groups = service_account_groups(namespace);
        groups.push(AUTHENTICATED.to_string());
        User {
            name: format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            groups,
            ..User::default()
        }
    }

    /// Whether the user is in `system:masters`, which no authorizer may restrict.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// For a ServiceAccount user, its namespace and name.
    pub fn service_account_name(&self) -> Option<(&str, &str)> {
        self.name
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
            .split_once(':')
    }
}

/// The prefix of every ServiceAccount's user name.
pub(crate) const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The user of requests without credentials.
pub(crate) const ANONYMOUS: &str = "system:anonymous";
/// The group of every authenticated user.
pub(crate) const AUTHENTICATED: &str = "system:authenticated";
/// The group of the anonymous user.
pub(crate) const UNAUTHENTICATED: &str = "system:unauthenticated";

/// The groups of every ServiceAccount of `namespace` (`serviceaccount.MakeGroupNames`).
pub(crate) fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
    ]
}

/// Reading or creating the token signing key failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read or create the service account signing key {path}: {source}")]
pub struct SigningKeyError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Checks bearer tokens and issues ServiceAccount tokens.
pub(crate) struct Authenticator {
    admin_token: String,
    signing_key: hmac::Key,
}

impl Authenticator {
    /// Signs with the key kept in `data_dir` (made on first use), or with a fresh key.
    pub fn new(admin_token: String, data_dir: Option<&Path>) -> Result<Self, SigningKeyError> {
        let secret = match data_dir {
            Some(dir) => load_or_create_key(&dir.join(KEY_FILE))?,
            None => rand::rng().random::<[u8; 32]>().to_vec(),
        };
        Ok(Authenticator {
            admin_token,
            signing_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// Identifies the sender of a request, or refuses it with 401.
    pub fn authenticate(
        &self,
        state: &State,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<User, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim());
        match presented {
            Some(token) if same_secret(token.as_bytes(), self.admin_token.as_bytes()) => Ok(User {
                name: ADMIN_USER.to_string(),
                groups: vec!["system:masters".to_string(), AUTHENTICATED.to_string()],
                ..User::default()
            }),
            Some(token) => self
                .service_account_user(state, token, &[API_AUDIENCE])
                .map(|(user, _)| user)
                .ok_or_else(ApiError::unauthorized),
            // Like kube-apiserver's system:public-info-viewer: anonymous health and version.
            None if matches!(path, "/healthz" | "/readyz" | "/livez" | "/version") => {
                Ok(User::anonymous())
            }
            None => Err(ApiError::unauthorized()),
        }
    }

    /// Answers a TokenReview: the user `token` authenticates and the audiences of `audiences`
    /// (this API server's when empty) it is meant for, or `None` when it authenticates nobody
    /// for any of them.
    pub fn review_token(
        &self,
        state: &State,
        token: &str,
        audiences: &[&str],
    ) -> Option<(User, Vec<String>)> {
        let audiences = if audiences.is_empty() {
            &[API_AUDIENCE][..]
        } else {
            audiences
        };
        if same_secret(token.as_bytes(), self.admin_token.as_bytes()) {
            // Like a static token, the admin's is meant for whoever asks.
            let user = User {
                name: ADMIN_USER.to_string(),
                groups: vec!["system:masters".to_string(), AUTHENTICATED.to_string()],
                ..User::default()
            };
            return Some((user, audiences.iter().map(|a| a.to_string()).collect()));
        }
        self.service_account_user(state, token, audiences)
    }

    /// The ServiceAccount a token was issued to and which of `audiences` it is meant for, if
    /// the token is genuine, current, meant for one of them, and what it is bound to still
    /// exists.
    fn service_account_user(
        &self,
        state: &State,
        token: &str,
        audiences: &[&str],
    ) -> Option<(User, Vec<String>)> {
        let claims = self.verify(token)?;
        let now = jiff::Timestamp::now().as_second();
        let expires = claims.get("exp")?.as_i64()?;
        let not_before = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now >= expires || now < not_before {
            return None;
        }
        let meant_for: Vec<String> = claims
            .get("aud")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| audiences.contains(a))
            .map(str::to_string)
            .collect();
        if meant_for.is_empty() {
            return None;
        }
        let bound = claims.get("kubernetes.io")?;
        let namespace = bound.get("namespace")?.as_str()?;
        let account = bound.get("serviceaccount")?;
        let still_exists = |plural: &str, reference: &Value| -> Option<()> {
            let name = reference.get("name")?.as_str()?;
            let uid = reference.get("uid")?.as_str()?;
            let key: Key = (namespace.to_string(), name.to_string());
            let object = state.get(&storage_key("", plural), &key)?;
            (meta_str(object, "uid") == Some(uid)).then_some(())
        };
        still_exists("serviceaccounts", account)?;
        if let Some(pod) = bound.get("pod") {
            still_exists("pods", pod)?;
        }
        if let Some(secret) = bound.get("secret") {
            still_exists("secrets", secret)?;
        }
        let name = account.get("name")?.as_str()?;
        let mut user = User::service_account(namespace, name);
        user.uid = account.get("uid")?.as_str()?.to_string();
        // What kube-apiserver's ServiceAccount authenticator adds for a token, so that
        // `kubectl auth whoami` shows the same.
        let mut extra = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                user.extra.insert(
                    format!("authentication.kubernetes.io/{key}"),
                    vec![value.to_string()],
                );
            }
        };
        extra(
            "credential-id",
            claims
                .get("jti")
                .and_then(Value::as_str)
                .map(|jti| format!("JTI={jti}"))
                .as_deref(),
        );
        if let Some(pod) = bound.get("pod") {
            extra("pod-name", pod.get("name").and_then(Value::as_str));
            extra("pod-uid", pod.get("uid").and_then(Value::as_str));
        }
        Some((user, meant_for))
    }

    /// Answers `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: a token for the
    /// ServiceAccount at `key`, as the TokenRequest object kube-apiserver returns.
    pub fn token_request(
        &self,
        state: &State,
        service_accounts: &ResourceType,
        key: &Key,
        request: Value,
    ) -> Result<Value, ApiError> {
        let (namespace, name) = key;
        let account = state
            .get(&service_accounts.storage, key)
            .ok_or_else(|| ApiError::not_found(service_accounts, name))?;
        let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
        let invalid = |field: &str, message: String| {
            let cause = Cause {
                reason: "FieldValueInvalid",
                field: field.to_string(),
                message,
            };
            token_request_invalid(name, cause)
        };
        let lifetime = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(value) => value.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "spec.expirationSeconds: expected an integer, got {value}"
                ))
            })?,
        };
        if lifetime < MIN_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {lifetime}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if lifetime > MAX_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {lifetime}: may not specify a duration larger than 2^32 seconds"
                ),
            ));
        }
        let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => vec![API_AUDIENCE.to_string()],
        };
        let now = jiff::Timestamp::now().as_second();
        let expires = now + lifetime;
        let mut bound = json!({
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": meta_str(account, "uid").unwrap_or_default()},
        });
        let bound_object = spec.get("boundObjectRef").filter(|r| !r.is_null());
        if let Some(reference) = bound_object {
            let (claim, plural) = match reference.get("kind").and_then(Value::as_str) {
                Some("Pod") => ("pod", "pods"),
                Some("Secret") => ("secret", "secrets"),
                other => {
                    return Err(invalid(
                        "spec.boundObjectRef.kind",
                        format!(
                            "Unsupported value: {:?}: supported values: \"Pod\", \"Secret\"",
                            other.unwrap_or_default()
                        ),
                    ));
                }
            };
            let object_name = reference
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let object = state
                .get(
                    &storage_key("", plural),
                    &(namespace.clone(), object_name.to_string()),
                )
                .ok_or_else(|| core_not_found(plural, object_name))?;
            let uid = meta_str(object, "uid").unwrap_or_default();
            if let Some(asked) = reference.get("uid").and_then(Value::as_str)
                && !asked.is_empty()
                && asked != uid
            {
                return Err(ApiError::conflict_with(
                    service_accounts,
                    name,
                    &format!(
                        "the UID in the bound object reference ({asked}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            bound[claim] = json!({"name": object_name, "uid": uid});
        }
        let claims = json!({
            "aud": audiences,
            "exp": expires,
            "iat": now,
            "nbf": now,
            "iss": API_AUDIENCE,
            "jti": uuid_like(),
            "kubernetes.io": bound,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        let token = self.sign(&claims);
        let mut echoed_spec = json!({"audiences": audiences, "expirationSeconds": lifetime});
        if let Some(reference) = bound_object {
            echoed_spec["boundObjectRef"] = reference.clone();
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
            "spec": echoed_spec,
            "status": {
                "token": token,
                "expirationTimestamp": jiff::Timestamp::from_second(expires)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            },
        }))
    }

    /// A compact JWS (`header.claims.signature`, base64url) over `claims`.
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = hmac::sign(&self.signing_key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The claims of a token this server signed, or `None` for anything else.
    fn verify(&self, token: &str) -> Option<Value> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.signing_key, signed.as_bytes(), &signature).ok()?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")? != "HS256" {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }
}

fn token_request_invalid(name: &str, cause: Cause) -> ApiError {
    let message = format!(
        "TokenRequest.authentication.k8s.io \"{name}\" is invalid: {}: {}",
        cause.field, cause.message
    );
    ApiError {
        code: 422,
        reason: "Invalid",
        message,
        details: Some(json!({
            "name": name,
            "group": "authentication.k8s.io",
            "kind": "TokenRequest",
            "causes": [{"reason": cause.reason, "message": cause.message, "field": cause.field}],
        })),
    }
}

/// kube-apiserver's 404 for a core/v1 object.
fn core_not_found(plural: &str, name: &str) -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: format!("{plural} \"{name}\" not found"),
        details: Some(json!({"name": name, "group": "", "kind": plural})),
    }
}

/// A random version-4-shaped uid.
pub(crate) fn uuid_like() -> String {
    let hex = format!("{:032x}", rand::rng().random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Constant-time comparison, so that the token cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the signing key, or writes a new random one with mode 0600.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, SigningKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| SigningKeyError {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(fail(error)),
    }
    let secret: [u8; 32] = rand::rng().random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(&secret).map_err(fail)?;
    Ok(secret.to_vec())
}
