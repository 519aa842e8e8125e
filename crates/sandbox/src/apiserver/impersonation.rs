//! Impersonation: kube-apiserver's `WithImpersonation` filter.
//!
//! A request may carry `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid`
//! and `Impersonate-Extra-<key>` headers, which `kubectl --as`, `--as-group` and `--as-uid` send.
//! Each thing asked for is authorized for the requester with the `impersonate` verb (on
//! `serviceaccounts` in the account's namespace, `users`, `groups`, or `uids` and
//! `userextras/<key>` in `authentication.k8s.io`), and the request then runs as the user those
//! headers describe: its own RBAC applies, never the requester's. Without the right, the request
//! is refused with 403 before anything else happens.

use http::HeaderMap;

use super::auth::{
    ANONYMOUS, AUTHENTICATED, SERVICE_ACCOUNT_PREFIX, UNAUTHENTICATED, User, service_account_groups,
};
use super::error::ApiError;
use super::rbac::{self, Attributes};
use super::store::State;
use super::validation::dns1123_label_error;

const USER_HEADER: &str = "impersonate-user";
const GROUP_HEADER: &str = "impersonate-group";
const UID_HEADER: &str = "impersonate-uid";
const EXTRA_HEADER_PREFIX: &str = "impersonate-extra-";
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// One thing a request asks to act as.
#[derive(Debug)]
enum Requested {
    ServiceAccount { namespace: String, name: String },
    User(String),
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

impl Requested {
    /// What the requester must be allowed to `impersonate` for this.
    fn attributes(&self) -> Attributes<'_> {
        let (group, resource, subresource, namespace, name) = match self {
            Requested::ServiceAccount { namespace, name } => (
                "",
                "serviceaccounts",
                None,
                namespace.as_str(),
                name.as_str(),
            ),
            Requested::User(name) => ("", "users", None, "", name.as_str()),
            Requested::Group(name) => ("", "groups", None, "", name.as_str()),
            Requested::Extra { key, value } => (
                AUTHENTICATION_GROUP,
                "userextras",
                Some(key.as_str()),
                "",
                value.as_str(),
            ),
            Requested::Uid(uid) => (AUTHENTICATION_GROUP, "uids", None, "", uid.as_str()),
        };
        Attributes {
            verb: "impersonate",
            group,
            resource,
            subresource,
            name,
            namespace,
        }
    }
}

/// The user a request runs as: `requester` itself when it asks to impersonate nobody, or the
/// impersonated user once every part of it is authorized for `requester`.
pub(crate) fn effective_user(
    state: &State,
    requester: User,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let requested = requested(headers)?;
    if requested.is_empty() {
        return Ok(requester);
    }
    for wanted in &requested {
        rbac::authorize(state, &requester, &wanted.attributes())?;
    }
    // Groups given in headers are the whole truth, as in kube-apiserver; a ServiceAccount
    // impersonated without them gets its fixed groups.
    let groups_given = requested
        .iter()
        .any(|wanted| matches!(wanted, Requested::Group(_)));
    let mut user = User::default();
    for wanted in requested {
        match wanted {
            Requested::ServiceAccount { namespace, name } => {
                user.name = format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}");
                if !groups_given {
                    user.groups = service_account_groups(&namespace);
                }
            }
            Requested::User(name) => user.name = name,
            Requested::Group(group) => user.groups.push(group),
            Requested::Extra { key, value } => user.extra.entry(key).or_default().push(value),
            Requested::Uid(uid) => user.uid = uid,
        }
    }
    let has = |group: &str| user.groups.iter().any(|g| g == group);
    if user.name == ANONYMOUS {
        if !has(UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.to_string());
        }
    } else if !has(AUTHENTICATED) && !has(UNAUTHENTICATED) {
        user.groups.push(AUTHENTICATED.to_string());
    }
    Ok(user)
}

/// Everything the headers ask to impersonate, in kube-apiserver's order; asking for groups,
/// extras or a uid without a user is refused as it refuses it.
fn requested(headers: &HeaderMap) -> Result<Vec<Requested>, ApiError> {
    let text = |value: &http::HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    let mut requested = Vec::new();
    let user = headers.get(USER_HEADER).map(text).filter(|u| !u.is_empty());
    if let Some(user) = &user {
        requested.push(match split_service_account(user) {
            Some((namespace, name)) => Requested::ServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            None => Requested::User(user.clone()),
        });
    }
    requested.extend(
        headers
            .get_all(GROUP_HEADER)
            .iter()
            .map(|g| Requested::Group(text(g))),
    );
    for (name, value) in headers {
        // HTTP header names arrive lowercased, as kube-apiserver lowercases the extra's key.
        if let Some(key) = name.as_str().strip_prefix(EXTRA_HEADER_PREFIX) {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8()
                .map(|k| k.into_owned())
                .unwrap_or_else(|_| key.to_string());
            requested.push(Requested::Extra {
                key,
                value: text(value),
            });
        }
    }
    if let Some(uid) = headers.get(UID_HEADER).map(text).filter(|u| !u.is_empty()) {
        requested.push(Requested::Uid(uid));
    }
    if user.is_none() && !requested.is_empty() {
        return Err(ApiError::internal(format!(
            "requested {requested:?} without impersonating a user"
        )));
    }
    Ok(requested)
}

/// The namespace and name of a ServiceAccount's user name (`serviceaccount.SplitUsername`): both
/// must be valid names, or the name is an ordinary user's.
fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    let valid_subdomain = name.len() <= 253
        && name
            .split('.')
            .all(|part| dns1123_label_error(part).is_none());
    (dns1123_label_error(namespace).is_none() && valid_subdomain).then_some((namespace, name))
}
