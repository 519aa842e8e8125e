//! The options of a list or watch that say which resourceVersion it reads, defaulted and
//! validated as kube-apiserver does (`SetListOptionsDefaults` and `ValidateListOptions`, with
//! the WatchList feature on, as from 1.34 and in 1.32), and the continue tokens of paginated
//! lists.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::ApiError;
use super::ext::Cause;
use super::store::Key;

/// How long a request for a resourceVersion the store has not reached yet waits for it
/// (kube-apiserver's watch cache `blockTimeout`).
pub(crate) const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// The `retryAfterSeconds` of the 504 that answers it when the wait is over.
pub(crate) const TOO_LARGE_RETRY_SECONDS: u32 = 1;

/// `resourceVersionMatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceVersionMatch {
    Unset,
    Exact,
    NotOlderThan,
}

/// The resourceVersion options of one list or watch request.
#[derive(Debug, Clone)]
pub(crate) struct ListOptions {
    /// `resourceVersion` as given: absent and empty are the same.
    pub resource_version: String,
    pub resource_version_match: ResourceVersionMatch,
    /// `sendInitialEvents`, after defaulting: a watch from no resourceVersion (or "0") is a
    /// watch that starts with the current objects.
    pub send_initial_events: Option<bool>,
    pub continue_token: Option<String>,
    /// `limit`, 0 for none.
    pub limit: usize,
}

/// Which state of the collection a list reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListRead {
    /// The latest state (no resourceVersion, or "0": any state will do, and the latest is one).
    Latest,
    /// A state at least as new as this resourceVersion: the latest, once the store has it.
    NotOlderThan(u64),
    /// The state exactly at this resourceVersion.
    Exact(u64),
    /// The next page of a paginated list.
    Continue(ContinueToken),
}

/// Where a paginated list resumes: the state it lists (`None`: the latest, after the one it
/// started from was compacted) and the last key already returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContinueToken {
    pub resource_version: Option<u64>,
    pub after: Key,
}

/// Go's `strconv.ParseBool`, which decodes boolean query parameters.
fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name}: strconv.ParseBool: parsing {text:?}: invalid syntax"
        ))),
    }
}

fn forbidden(message: &str) -> Cause {
    Cause {
        field: "resourceVersionMatch".into(),
        reason: "FieldValueForbidden",
        message: format!("Forbidden: {message}"),
    }
}

fn not_supported(value: &str, supported: &[&str]) -> Cause {
    let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        field: "resourceVersionMatch".into(),
        reason: "FieldValueNotSupported",
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            supported.join(", ")
        ),
    }
}

/// A resourceVersion as kube-apiserver parses one: "" and "0" mean none.
pub(crate) fn parse_resource_version(text: &str) -> Result<Option<u64>, ApiError> {
    match text {
        "" | "0" => Ok(None),
        text => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text}"))),
    }
}

impl ListOptions {
    /// Reads the options of a list (`watch` false) or watch request, refusing the
    /// combinations kube-apiserver refuses with its 422 on `ListOptions.meta.k8s.io`.
    pub fn parse(query: &HashMap<String, String>, watch: bool) -> Result<Self, ApiError> {
        let text = |name: &str| query.get(name).cloned().unwrap_or_default();
        let resource_version = text("resourceVersion");
        let match_text = text("resourceVersionMatch");
        let mut send_initial_events = match query.get("sendInitialEvents") {
            Some(value) => Some(parse_bool("sendInitialEvents", value)?),
            None => None,
        };
        let continue_token = Some(text("continue")).filter(|c| !c.is_empty());
        let limit = match query.get("limit") {
            Some(text) => text
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {text}")))?
                .max(0) as usize,
            None => 0,
        };
        let mut match_text = match_text;
        // SetListOptionsDefaults: a watch from "now" sends the current objects first.
        let legacy = resource_version.is_empty() || resource_version == "0";
        if watch && legacy && send_initial_events.is_none() && match_text.is_empty() {
            send_initial_events = Some(true);
            match_text = "NotOlderThan".into();
        }
        let mut causes = Vec::new();
        if watch {
            if send_initial_events.is_some() && match_text != "NotOlderThan" {
                causes.push(forbidden(
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !match_text.is_empty() {
                if send_initial_events.is_none() {
                    causes.push(forbidden(
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if match_text != "NotOlderThan" {
                    causes.push(not_supported(&match_text, &["NotOlderThan"]));
                }
                if continue_token.is_some() {
                    causes.push(forbidden(
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if !match_text.is_empty() {
                if resource_version.is_empty() {
                    causes.push(forbidden(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if continue_token.is_some() {
                    causes.push(forbidden(
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if match_text != "Exact" && match_text != "NotOlderThan" {
                    causes.push(not_supported(&match_text, &["Exact", "NotOlderThan", ""]));
                }
                if match_text == "Exact" && resource_version == "0" {
                    causes.push(forbidden(
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if send_initial_events.is_some() {
                causes.push(Cause {
                    field: "sendInitialEvents".into(),
                    reason: "FieldValueForbidden",
                    message: "Forbidden: sendInitialEvents is forbidden for list".into(),
                });
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid_options("ListOptions", causes));
        }
        parse_resource_version(&resource_version)?;
        let resource_version_match = match match_text.as_str() {
            "Exact" => ResourceVersionMatch::Exact,
            "NotOlderThan" => ResourceVersionMatch::NotOlderThan,
            _ => ResourceVersionMatch::Unset,
        };
        Ok(ListOptions {
            resource_version,
            resource_version_match,
            send_initial_events,
            continue_token,
            limit,
        })
    }

    /// The state a list reads, as kube-apiserver's storage chooses it: a continue token
    /// resumes its own snapshot; `Exact`, and a non-zero resourceVersion with a limit, read
    /// that snapshot; any other non-zero resourceVersion is a lower bound.
    pub fn list_read(&self) -> Result<ListRead, ApiError> {
        if let Some(token) = &self.continue_token {
            if parse_resource_version(&self.resource_version)?.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            return ContinueToken::decode(token).map(ListRead::Continue);
        }
        let Some(rv) = parse_resource_version(&self.resource_version)? else {
            return Ok(ListRead::Latest);
        };
        let exact = match self.resource_version_match {
            ResourceVersionMatch::Exact => true,
            ResourceVersionMatch::NotOlderThan => false,
            ResourceVersionMatch::Unset => self.limit > 0,
        };
        Ok(if exact {
            ListRead::Exact(rv)
        } else {
            ListRead::NotOlderThan(rv)
        })
    }
}

impl ContinueToken {
    /// The opaque token clients send back: hex of a small JSON document.
    pub fn encode(&self) -> String {
        let raw = serde_json::to_vec(&json!({
            "rv": self.resource_version.map_or(-1, |rv| rv as i64),
            "ns": self.after.0,
            "name": self.after.1,
        }))
        .unwrap_or_default();
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::bad_request("continue key is not valid: the token is malformed");
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(invalid());
        }
        let raw: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        let rv = value
            .get("rv")
            .and_then(Value::as_i64)
            .ok_or_else(invalid)?;
        let text = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(invalid)
        };
        Ok(ContinueToken {
            resource_version: u64::try_from(rv).ok().filter(|rv| *rv > 0),
            after: (text("ns")?, text("name")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &str)], watch: bool) -> String {
        let error = ListOptions::parse(&query(pairs), watch).expect_err("refused");
        assert_eq!(error.code, 422);
        error.message
    }

    /// The messages kube-apiserver's ValidateListOptions gives, for lists.
    #[test]
    fn list_combinations_are_refused_as_kube_apiserver_refuses_them() {
        assert_eq!(
            refusal(&[("resourceVersionMatch", "NotARealMatch")], false),
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, resourceVersionMatch: Unsupported value: \"NotARealMatch\": supported values: \"Exact\", \"NotOlderThan\", \"\"]"
        );
        assert_eq!(
            refusal(
                &[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")],
                false
            ),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        assert_eq!(
            refusal(
                &[
                    ("resourceVersion", "5"),
                    ("resourceVersionMatch", "Exact"),
                    ("continue", "00")
                ],
                false
            ),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided"
        );
        assert_eq!(
            refusal(&[("sendInitialEvents", "true")], false),
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"
        );
    }

    /// And for watches, after a watch from "now" is defaulted to send the initial events.
    #[test]
    fn watch_combinations_are_refused_as_kube_apiserver_refuses_them() {
        assert_eq!(
            refusal(
                &[("resourceVersion", "5"), ("sendInitialEvents", "true")],
                true
            ),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
        assert_eq!(
            refusal(
                &[
                    ("resourceVersion", "5"),
                    ("resourceVersionMatch", "NotOlderThan")
                ],
                true
            ),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        );
        assert_eq!(
            refusal(
                &[
                    ("resourceVersion", "5"),
                    ("resourceVersionMatch", "Exact"),
                    ("sendInitialEvents", "true")
                ],
                true
            ),
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]"
        );
        let defaulted = ListOptions::parse(&query(&[("resourceVersion", "0")]), true)
            .expect("a watch from 0 is valid");
        assert_eq!(defaulted.send_initial_events, Some(true));
        assert_eq!(
            defaulted.resource_version_match,
            ResourceVersionMatch::NotOlderThan
        );
    }

    /// A non-zero resourceVersion with a limit is the legacy spelling of `Exact`.
    #[test]
    fn lists_read_the_state_kube_apiserver_reads() {
        let read = |pairs: &[(&str, &str)]| {
            ListOptions::parse(&query(pairs), false)
                .and_then(|o| o.list_read())
                .expect("valid")
        };
        assert_eq!(read(&[]), ListRead::Latest);
        assert_eq!(
            read(&[("resourceVersion", "0"), ("limit", "2")]),
            ListRead::Latest
        );
        assert_eq!(read(&[("resourceVersion", "7")]), ListRead::NotOlderThan(7));
        assert_eq!(
            read(&[("resourceVersion", "7"), ("limit", "2")]),
            ListRead::Exact(7)
        );
        assert_eq!(
            read(&[
                ("resourceVersion", "7"),
                ("resourceVersionMatch", "NotOlderThan"),
                ("limit", "2")
            ]),
            ListRead::NotOlderThan(7)
        );
        let token = ContinueToken {
            resource_version: None,
            after: ("default".into(), "b".into()),
        };
        assert_eq!(
            read(&[("continue", &token.encode())]),
            ListRead::Continue(token)
        );
    }
}
