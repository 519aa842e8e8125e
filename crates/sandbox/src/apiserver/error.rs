//! API errors, each answered as a `kind: Status` object with kube-apiserver's code, reason and
//! message wording.

use serde_json::{Value, json};

use super::ext::{Cause, PatchFailure};
use super::resources::ResourceType;

/// A request that failed: everything needed to answer with a `Status`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(rt: &ResourceType, name: &str) -> Value {
    json!({"name": name, "group": rt.group, "kind": rt.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(details(rt, name))
    }

    /// A 404 for a path that names no served resource.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(details(rt, name))
    }

    /// The optimistic-concurrency failure of a write carrying a stale resourceVersion.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::conflict_with(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict_with(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        )
        .with_details(details(rt, name))
    }

    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_kind(&rt.group, &rt.kind, name, causes)
    }

    /// A 422 for invalid request options, such as `CreateOptions.meta.k8s.io "" is invalid:
    /// dryRun: ...`.
    pub fn invalid_options(options_kind: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_kind("meta.k8s.io", options_kind, "", causes)
    }

    /// A 422 for an object of `kind` in `group` that is not one of a resource's own kinds.
    pub fn invalid_kind(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified_plural()),
        )
        .with_details(details(rt, name))
    }

    /// kube-apiserver's `InternalError` Status.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// An Accept header asking for a conversion that does not apply to the answer.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(json!({}))
    }

    /// A request body in a media type the endpoint does not take; built-in kinds also take
    /// protobuf.
    pub fn unsupported_media_type(content_type: &str, builtin: bool) -> Self {
        let protobuf = if builtin {
            ", application/vnd.kubernetes.protobuf"
        } else {
            ""
        };
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml{protobuf} ({content_type})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// A resourceVersion older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// A request for a resourceVersion the store has not reached within the time
    /// kube-apiserver waits for it: 504 with the cause `ResourceVersionTooLarge`, and when
    /// `retry_after_seconds` is not 0, that hint.
    pub fn too_large_resource_version(
        requested: u64,
        current: u64,
        retry_after_seconds: u32,
    ) -> Self {
        let mut details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]});
        if retry_after_seconds > 0 {
            details["retryAfterSeconds"] = json!(retry_after_seconds);
        }
        Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        )
        .with_details(details)
    }

    /// A patch module failure, with the HTTP status the patch module chose. An apply conflict
    /// lists each field in `details.causes` (reason `FieldManagerConflict`), and, as
    /// kube-apiserver's, names no object.
    pub fn from_patch(rt: &ResourceType, name: &str, failure: PatchFailure) -> Self {
        let PatchFailure {
            status,
            message,
            conflicts,
            operation_failed,
        } = failure;
        match status {
            409 if !conflicts.is_empty() => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with {}", c.manager),
                            "field": c.field,
                        })
                    })
                    .collect();
                Self::new(409, "Conflict", message).with_details(json!({"causes": causes}))
            }
            409 => Self::new(409, "Conflict", message).with_details(details(rt, name)),
            415 => Self::new(415, "UnsupportedMediaType", message),
            // apimachinery's NewGenericServerResponse: the patch library's error as the cause.
            422 if operation_failed => Self::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            )
            .with_details(json!({
                "causes": [{"reason": "UnexpectedServerResponse", "message": message}],
            })),
            422 => Self::new(422, "Invalid", message).with_details(details(rt, name)),
            500 => Self::new(500, "InternalError", message),
            _ => Self::new(400, "BadRequest", message),
        }
    }

    /// The `Status` object answering this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}
