//! The HTTP layer: authentication, routing, request decoding and response encoding.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::Authenticator;
use super::discovery;
use super::error::ApiError;
use super::ext::{self, FieldSelector, LabelSelector};
use super::impersonation;
use super::list_options::{
    ContinueToken, FRESHNESS_WAIT, ListOptions, ListRead, TOO_LARGE_RETRY_SECONDS,
    parse_resource_version,
};
use super::ops::{
    self, DeleteRequest, Deleted, FieldValidation, PatchType, Propagation, WriteOptions, present,
};
use super::protobuf;
use super::rbac;
use super::resources::{CRD_STORAGE, ResourceType};
use super::reviews;
use super::scale;
use super::store::{Key, Store};
use super::streams;
use super::typed;
use super::watch::{self, Shape, WatchRequest, partial_object_metadata};
use super::{LogRequest, PodLogs};

/// kube-apiserver's limit on request bodies.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Shared by every connection.
pub(crate) struct Server {
    pub store: Arc<Store>,
    pub auth: Authenticator,
    pub address: String,
    pub shutdown: CancellationToken,
    pub pod_logs: Option<Arc<dyn PodLogs>>,
    /// The local runtime's running pods and containers, for exec, attach and port-forward.
    pub pod_access: Option<Arc<crate::runtime::exec::PodAccess>>,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    UnsyncBoxBody::new(Full::new(bytes.into()))
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(code, body)
}

fn bytes_response(code: u16, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An object or list in the encoding the client asked for: protobuf when it asked for that
/// first and the object has a protobuf form (every built-in kind's), JSON otherwise.
fn encoded_response(code: u16, value: &Value, encoding: protobuf::Encoding) -> Response<Body> {
    if encoding != protobuf::Encoding::Json
        && let Ok(body) = protobuf::encode_object(value)
    {
        let mut response = bytes_response(code, body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(protobuf::MEDIA_TYPE),
        );
        return response;
    }
    json_response(code, value)
}

/// An error's Status, negotiated like any answer: in protobuf for a client that asked for
/// protobuf first. A 406 is the negotiation itself failing, which kube-apiserver answers in
/// JSON whatever was asked for.
fn error_response(error: &ApiError, encoding: protobuf::Encoding) -> Response<Body> {
    let encoding = match error.code {
        406 => protobuf::Encoding::Json,
        _ => encoding,
    };
    encoded_response(error.code, &error.status(), encoding)
}

type Query = HashMap<String, String>;

/// A request header as text; absent or not text reads as empty, as the API server treats both.
fn header_text(request: &Request<Incoming>, name: header::HeaderName) -> String {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn parse_query(query: Option<&str>) -> Query {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn flag(query: &Query, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("true" | "1"))
}

/// Where a request is going.
enum Target {
    Collection {
        rt: Arc<ResourceType>,
        namespace: Option<String>,
    },
    Object {
        rt: Arc<ResourceType>,
        key: Key,
        subresource: Option<String>,
    },
}

impl Server {
    /// Answers one request; never fails (every failure is a Status response).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let encoding = protobuf::negotiate(&header_text(&request, header::ACCEPT));
        let response = match self.clone().route(request).await {
            Ok(response) => response,
            Err(error) => error_response(&error, encoding),
        };
        Ok(response)
    }

    async fn route(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let path = request.uri().path().trim_end_matches('/').to_string();
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        let user = {
            let state = self.store.read();
            let requester = self.auth.authenticate(&state, request.headers(), &path)?;
            impersonation::effective_user(&state, requester, request.headers())?
        };
        let query = parse_query(request.uri().query());
        let method = request.method().clone();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["healthz" | "readyz" | "livez"]) => {
                let mut response = Response::new(full("ok"));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return Ok(response);
            }
            (Method::GET, ["version"]) => return Ok(json_response(200, &discovery::version())),
            (Method::GET, ["api"]) => {
                return Ok(json_response(200, &discovery::core_versions(&self.address)));
            }
            (Method::GET, ["apis"]) => {
                return Ok(json_response(
                    200,
                    &discovery::group_list(&self.store.read().registry),
                ));
            }
            (Method::GET, ["apis", group]) => {
                return discovery::group(&self.store.read().registry, group)
                    .map(|g| json_response(200, &g))
                    .ok_or_else(ApiError::no_route);
            }
            (Method::GET, ["openapi", "v2"]) => {
                let accept = header_text(&request, header::ACCEPT);
                if accept.contains("protobuf") {
                    return Ok(openapi_v2_protobuf());
                }
                let resources: Vec<_> = self.store.read().registry.all().cloned().collect();
                return Ok(json_response(
                    200,
                    &ext::openapi_v2(&self.crds(None), &resources),
                ));
            }
            (Method::GET, ["openapi", "v3"]) => {
                let group_versions = self.group_versions();
                let resources: Vec<_> = self.store.read().registry.all().cloned().collect();
                return Ok(json_response(
                    200,
                    &ext::openapi_v3_index(&group_versions, &self.crds(None), &resources),
                ));
            }
            (Method::GET, ["openapi", "v3", "api", version]) => {
                return self.openapi_v3_group_version("", version);
            }
            (Method::GET, ["openapi", "v3", "apis", group, version]) => {
                return self.openapi_v3_group_version(group, version);
            }
            _ => {}
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route()),
        };
        if rest.is_empty() {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            return discovery::resource_list(&self.store.read().registry, group, version)
                .map(|list| json_response(200, &list))
                .ok_or_else(ApiError::no_route);
        }
        let target = self.resolve(group, version, rest)?;
        let accept = header_text(&request, header::ACCEPT);
        let content_type = header_text(&request, header::CONTENT_TYPE);
        let user_agent = header_text(&request, header::USER_AGENT);
        let access = access_request(&method, &target, &query, &content_type);
        rbac::authorize_request(&self.store.read(), &user, &access)?;
        if let Target::Object {
            rt,
            key,
            subresource,
        } = &target
            && streams::is_streaming(rt, subresource.as_deref())
        {
            let subresource = subresource.as_deref().unwrap_or_default();
            return streams::connect(&self, request, rt, key, subresource);
        }
        let body = read_body(request).await?;
        if rbac::may_escalate(&user, &access) {
            // An apply patch is the whole object, in YAML (or JSON, which YAML includes).
            let media = if access.apply_patch {
                "application/yaml"
            } else {
                &content_type
            };
            let (Target::Collection { rt, .. } | Target::Object { rt, .. }) = &target;
            let object = decode(&body, media, rt, &rt.kind)?;
            rbac::check_escalation(&self.store.read(), &user, &access, &object)?;
        }
        // Deletions check their dryRun with their DeleteOptions; reads ignore it.
        let options_kind = match method {
            Method::POST => Some("CreateOptions"),
            Method::PUT => Some("UpdateOptions"),
            Method::PATCH => Some("PatchOptions"),
            _ => None,
        };
        let dry_run = match options_kind {
            Some(kind) => ops::dry_run(query.get("dryRun").map(String::as_str).as_slice(), kind)?,
            None => false,
        };
        let mut opts = WriteOptions {
            dry_run,
            field_manager: query
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| default_manager(&user_agent)),
            field_validation: match query.get("fieldValidation").map(String::as_str) {
                Some("Strict") => FieldValidation::Strict,
                Some("Ignore") => FieldValidation::Ignore,
                _ => FieldValidation::Warn,
            },
            warnings: Vec::new(),
            duplicate_fields: json_object_body_duplicates(&content_type, &body),
            user: Some(user.clone()),
        };
        let conversion = requested_conversion(&accept);
        let shape = match conversion {
            Some("Table") => Shape::Table(
                query
                    .get("includeObject")
                    .cloned()
                    .unwrap_or_else(|| "Metadata".to_string()),
            ),
            Some(PARTIAL_OBJECT | PARTIAL_LIST) => Shape::Metadata,
            _ => Shape::Objects,
        };
        let encoding = protobuf::negotiate(&accept);
        let (Target::Collection { rt, .. } | Target::Object { rt, .. }) = &target;
        if rt.custom
            && encoding
                == (protobuf::Encoding::Protobuf {
                    json_acceptable: false,
                })
        {
            // Custom resources have no protobuf form; kube-apiserver refuses before acting.
            return Err(ApiError::not_acceptable(
                "only the following media types are accepted: application/json, application/yaml",
            ));
        }
        // kube-apiserver turns an object into metadata only with `as=PartialObjectMetadata`,
        // and a list with `as=PartialObjectMetadataList`; the other way round is refused.
        let is_list = matches!(&target, Target::Collection { .. }) && method == Method::GET;
        match conversion {
            Some(PARTIAL_OBJECT) if is_list && !flag(&query, "watch") => {
                return Err(ApiError::not_acceptable(format!(
                    "you requested {PARTIAL_OBJECT}, but the requested object is a list"
                )));
            }
            Some(PARTIAL_LIST) if !is_list || flag(&query, "watch") => {
                return Err(ApiError::not_acceptable(format!(
                    "you requested {PARTIAL_LIST}, but the requested object is not a list"
                )));
            }
            _ => {}
        }
        let result = match (method, target) {
            (
                Method::POST,
                Target::Object {
                    rt,
                    key,
                    subresource,
                },
            ) if subresource.as_deref() == Some("token") => {
                let request = decode(&body, &content_type, &rt, "TokenRequest")?;
                let state = self.store.read();
                let answer = self.auth.token_request(&state, &rt, &key, request)?;
                return Ok(json_response(201, &answer));
            }
            (method, Target::Object { subresource, .. })
                if subresource.as_deref() == Some("token") =>
            {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            (Method::POST, Target::Collection { rt, namespace })
                if rt.create_only && (namespace.is_some() || !rt.namespaced) =>
            {
                let request = decode(&body, &content_type, &rt, &rt.kind)?;
                let state = self.store.read();
                let answer = reviews::answer(
                    &state,
                    &self.auth,
                    &user,
                    &rt,
                    namespace.as_deref(),
                    request,
                )?;
                return Ok(json_response(201, &answer));
            }
            (method, Target::Collection { rt, .. } | Target::Object { rt, .. })
                if rt.create_only =>
            {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            (
                method,
                Target::Object {
                    rt,
                    key,
                    subresource: Some(subresource),
                },
            ) if subresource == "scale" => {
                let scale = match method {
                    Method::GET => scale::get(&self.store, &rt, &key)?,
                    Method::PUT => {
                        let body = decode(&body, &content_type, &rt, "Scale")?;
                        scale::update(&self.store, &rt, &key, body, &mut opts)?
                    }
                    Method::PATCH => {
                        let patch_type = patch_type(&content_type, &query)?;
                        scale::patch(&self.store, &rt, &key, patch_type, &body, &mut opts)?
                    }
                    other => return Err(ApiError::method_not_allowed(other.as_str())),
                };
                Ok((200, scale, rt))
            }
            (Method::GET, Target::Collection { rt, namespace }) => {
                if flag(&query, "watch") {
                    return self.watch(rt, namespace, &query, shape, encoding);
                }
                return self
                    .list(&rt, namespace.as_deref(), &query, &shape, encoding)
                    .await;
            }
            (Method::POST, Target::Collection { rt, namespace }) => {
                if rt.namespaced && namespace.is_none() {
                    return Err(ApiError::method_not_allowed("POST"));
                }
                let object = decode(&body, &content_type, &rt, &rt.kind)?;
                let created =
                    ops::create(&self.store, &rt, namespace.as_deref(), object, &mut opts)?;
                Ok((201, present(&rt, &created), rt))
            }
            (Method::DELETE, Target::Collection { rt, namespace }) => {
                return self.delete_collection(&rt, namespace.as_deref(), &query, &body);
            }
            (
                Method::GET,
                Target::Object {
                    rt,
                    key,
                    subresource,
                },
            ) => {
                match subresource.as_deref() {
                    Some("log") => return self.pod_log(&rt, &key, &query),
                    Some("binding" | "eviction") => {
                        return Err(ApiError::method_not_allowed("GET"));
                    }
                    _ => {}
                }
                let object = self.store.read().get(&rt.storage, &key).cloned();
                let object = object.ok_or_else(|| ApiError::not_found(&rt, &key.1))?;
                if let Shape::Table(include) = &shape {
                    let served = present(&rt, &object);
                    let table = ext::render_table(
                        &rt.api_version(),
                        &rt.kind,
                        rt.columns.as_deref(),
                        &[served],
                        include,
                        json!({"resourceVersion": ""}),
                    );
                    return Ok(json_response(200, &table));
                }
                Ok((200, present(&rt, &object), rt))
            }
            (
                Method::PUT,
                Target::Object {
                    rt,
                    key,
                    subresource,
                },
            ) => {
                let object = decode(&body, &content_type, &rt, &rt.kind)?;
                let stored = ops::replace(
                    &self.store,
                    &rt,
                    &key,
                    object,
                    subresource.as_deref(),
                    &mut opts,
                )?;
                Ok((200, present(&rt, &stored), rt))
            }
            (
                Method::PATCH,
                Target::Object {
                    rt,
                    key,
                    subresource,
                },
            ) => {
                let patch_type = patch_type(&content_type, &query)?;
                let (stored, created) = ops::patch(
                    &self.store,
                    &rt,
                    &key,
                    patch_type,
                    &body,
                    subresource.as_deref(),
                    &mut opts,
                )?;
                Ok((if created { 201 } else { 200 }, present(&rt, &stored), rt))
            }
            (
                Method::DELETE,
                Target::Object {
                    rt,
                    key,
                    subresource: None,
                },
            ) => {
                let request = delete_request(&query, &body)?;
                let grace = grace_period(&query, &body);
                let current = self.store.read().get(&rt.storage, &key).cloned();
                if let Some(current) = current {
                    opts.dry_run = request.dry_run;
                    ops::admit(
                        &self.store,
                        &rt,
                        "DELETE",
                        None,
                        None,
                        Some(&current),
                        &mut opts,
                    )?;
                }
                match ops::delete_with_grace(&self.store, &rt, &key, &request, grace)? {
                    Deleted::Pending(object) => {
                        let status = if request.orphan_dependents_false {
                            202
                        } else {
                            200
                        };
                        Ok((status, present(&rt, &object), rt))
                    }
                    Deleted::Gone(object)
                        if rt.returns_deleted_object || &*rt.storage == CRD_STORAGE =>
                    {
                        Ok((200, present(&rt, &object), rt))
                    }
                    Deleted::Gone(object) => {
                        let details = json!({"name": key.1, "group": rt.group, "kind": rt.plural, "uid": ops::meta_str(&object, "uid")});
                        Ok((
                            200,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                            rt,
                        ))
                    }
                }
            }
            (
                Method::POST,
                Target::Object {
                    rt,
                    key,
                    subresource: Some(subresource),
                },
            ) if subresource == "binding" => {
                let binding = decode(&body, &content_type, &rt, "Binding")?;
                self.bind_pod(&rt, &key, &binding)?;
                Ok((
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    rt,
                ))
            }
            (
                Method::POST,
                Target::Object {
                    rt,
                    key,
                    subresource: Some(subresource),
                },
            ) if subresource == "eviction" => {
                let eviction = decode(&body, &content_type, &rt, "Eviction")?;
                let options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
                let options = serde_json::to_vec(&options).unwrap_or_default();
                let request = delete_request(&query, &options)?;
                super::eviction::admit(&self.store, &rt, &key, &eviction, request.dry_run)?;
                let grace = grace_period(&query, &options);
                ops::delete_with_grace(&self.store, &rt, &key, &request, grace)?;
                Ok((
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    rt,
                ))
            }
            (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
        };
        let (code, mut object, _rt) = result?;
        if shape == Shape::Metadata && object.get("kind").and_then(Value::as_str) != Some("Status")
        {
            object = partial_object_metadata(&object);
        }
        let mut response = encoded_response(code, &object, encoding);
        // A write retried after a race validates again; each warning is sent once.
        let mut sent = std::collections::HashSet::new();
        opts.warnings.retain(|w| sent.insert(w.clone()));
        for warning in &opts.warnings {
            if let Ok(value) = header::HeaderValue::from_str(&format!(
                "299 - \"{}\"",
                warning.replace('"', "\\\"")
            )) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        Ok(response)
    }

    fn crds(&self, group: Option<&str>) -> Vec<Value> {
        let state = self.store.read();
        state
            .objects(CRD_STORAGE, None)
            .filter(|(_, crd)| {
                group.is_none_or(|g| crd.pointer("/spec/group").and_then(Value::as_str) == Some(g))
            })
            .map(|(_, crd)| (**crd).clone())
            .collect()
    }

    /// Every served group-version, the core group's (`""`, `v1`) first.
    fn group_versions(&self) -> Vec<(String, String)> {
        let state = self.store.read();
        let mut out = vec![(String::new(), "v1".to_string())];
        for (group, versions) in state.registry.groups() {
            if group.is_empty() {
                continue;
            }
            out.extend(versions.iter().map(|v| (group.clone(), v.clone())));
        }
        out
    }

    /// `/openapi/v3/<group-version>`: 404 for a group-version nothing is served in.
    fn openapi_v3_group_version(
        &self,
        group: &str,
        version: &str,
    ) -> Result<Response<Body>, ApiError> {
        let crds = self.crds(Some(group));
        let resources = self.store.read().registry.in_group_version(group, version);
        if resources.is_empty() {
            return Err(ApiError::no_route());
        }
        Ok(json_response(
            200,
            &ext::openapi_v3_group_version(group, version, &crds, &resources),
        ))
    }

    fn resolve(&self, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
        let namespaced_path = rest.len() >= 3
            && rest[0] == "namespaces"
            && !(rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"));
        let (namespace, rest) = if namespaced_path {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        if rest.len() > 3 {
            return Err(ApiError::no_route());
        }
        let rt = self
            .store
            .read()
            .registry
            .get(group, version, rest[0])
            .ok_or_else(ApiError::no_route)?;
        if !rt.namespaced && namespace.is_some() {
            return Err(ApiError::no_route());
        }
        let Some(name) = rest.get(1) else {
            return Ok(Target::Collection { rt, namespace });
        };
        if rt.namespaced && namespace.is_none() {
            return Err(ApiError::no_route());
        }
        let subresource = rest.get(2).map(|s| s.to_string());
        if let Some(sub) = &subresource {
            let served = (sub == "status" && rt.status_subresource)
                || (sub == "scale" && rt.scale.is_some())
                || rt.extra_subresources.contains(&sub.as_str());
            if !served {
                return Err(ApiError::no_route());
            }
        }
        Ok(Target::Object {
            key: (namespace.unwrap_or_default(), name.to_string()),
            rt,
            subresource,
        })
    }

    fn selectors(
        &self,
        rt: &ResourceType,
        query: &Query,
    ) -> Result<(Option<LabelSelector>, Option<FieldSelector>), ApiError> {
        let labels =
            match query.get("labelSelector").filter(|s| !s.is_empty()) {
                Some(text) => Some(LabelSelector::parse(text).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match query.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(text) => {
                let selector = FieldSelector::parse(text)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
                for field in selector.fields() {
                    if !field_supported(rt, &field) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                }
                Some(selector)
            }
            None => None,
        };
        Ok((labels, fields))
    }

    async fn list(
        &self,
        rt: &Arc<ResourceType>,
        namespace: Option<&str>,
        query: &Query,
        shape: &Shape,
        encoding: protobuf::Encoding,
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = self.selectors(rt, query)?;
        let options = ListOptions::parse(query, false)?;
        let limit = options.limit;
        let read = options.list_read()?;
        if let ListRead::NotOlderThan(rv) | ListRead::Exact(rv) = read {
            self.store
                .wait_until(rv, FRESHNESS_WAIT)
                .await
                .map_err(|current| {
                    ApiError::too_large_resource_version(rv, current, TOO_LARGE_RETRY_SECONDS)
                })?;
        }
        let matcher = WatchRequest {
            rt: rt.clone(),
            namespace: namespace.map(str::to_string),
            labels,
            fields,
            resource_version: None,
            timeout: None,
            bookmarks: false,
            send_initial_events: None,
            shape: Shape::Objects,
        };
        let (items, list_rv, next, remaining) = {
            let state = self.store.read();
            let (snapshot_rv, after) = match &read {
                ListRead::Latest | ListRead::NotOlderThan(_) => (None, None),
                ListRead::Exact(rv) => (Some(*rv), None),
                ListRead::Continue(token) => (token.resource_version, Some(&token.after)),
            };
            let snapshot = match snapshot_rv {
                Some(rv) => match state.snapshot(&rt.storage, namespace, rv) {
                    Some(snapshot) => Some(snapshot),
                    None => return Ok(expired_list(&read)),
                },
                None => None,
            };
            let list_rv = snapshot_rv.unwrap_or(state.rv);
            let objects: Box<dyn Iterator<Item = (&Key, &Arc<Value>)>> = match &snapshot {
                Some(snapshot) => Box::new(snapshot.iter()),
                None => state.objects(&rt.storage, namespace),
            };
            let mut items = Vec::new();
            let mut next = None;
            let mut remaining = 0usize;
            for (key, object) in objects {
                if after.is_some_and(|after| key <= after) {
                    continue;
                }
                if !matcher.matches(object) {
                    continue;
                }
                if limit > 0 && items.len() >= limit {
                    if next.is_none() {
                        next = Some(items_last_key(&items));
                    }
                    remaining += 1;
                    continue;
                }
                items.push((key.clone(), object.clone()));
            }
            (items, list_rv, next.flatten(), remaining)
        };
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(after) = next {
            let token = ContinueToken {
                resource_version: Some(list_rv),
                after,
            };
            metadata["continue"] = json!(token.encode());
            metadata["remainingItemCount"] = json!(remaining);
        }
        if *shape == Shape::Metadata {
            let items: Vec<Value> = items
                .iter()
                .map(|(_, o)| partial_object_metadata(o))
                .collect();
            return Ok(json_response(
                200,
                &json!({"kind": PARTIAL_LIST, "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "items": items}),
            ));
        }
        if let Shape::Table(include) = shape {
            let served: Vec<Value> = items.iter().map(|(_, o)| present(rt, o)).collect();
            let table = ext::render_table(
                &rt.api_version(),
                &rt.kind,
                rt.columns.as_deref(),
                &served,
                include,
                metadata,
            );
            return Ok(json_response(200, &table));
        }
        // Written piece by piece so that a large list is not first built as one Value.
        let mut out = Vec::with_capacity(items.len() * 512 + 256);
        out.extend_from_slice(b"{\"kind\":");
        let _ = serde_json::to_writer(&mut out, &format!("{}List", rt.kind));
        out.extend_from_slice(b",\"apiVersion\":");
        let _ = serde_json::to_writer(&mut out, &rt.api_version());
        out.extend_from_slice(b",\"metadata\":");
        let _ = serde_json::to_writer(&mut out, &metadata);
        out.extend_from_slice(b",\"items\":[");
        let convert = rt.group == "events.k8s.io" || rt.custom;
        for (index, (_, object)) in items.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            if convert
                && object.get("apiVersion").and_then(Value::as_str)
                    != Some(rt.api_version().as_str())
                || rt.group == "events.k8s.io"
            {
                let _ = serde_json::to_writer(&mut out, &present(rt, object));
            } else {
                let _ = serde_json::to_writer(&mut out, &**object);
            }
        }
        out.extend_from_slice(b"]}");
        if encoding != protobuf::Encoding::Json
            && let Ok(list) = serde_json::from_slice::<Value>(&out)
        {
            return Ok(encoded_response(200, &list, encoding));
        }
        Ok(bytes_response(200, out))
    }

    fn watch(
        &self,
        rt: Arc<ResourceType>,
        namespace: Option<String>,
        query: &Query,
        shape: Shape,
        encoding: protobuf::Encoding,
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = self.selectors(&rt, query)?;
        let timeout = match query.get("timeoutSeconds") {
            Some(text) => Some(Duration::from_secs(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds: {text}"))
            })?)),
            None => None,
        };
        let options = ListOptions::parse(query, true)?;
        let rt_custom = rt.custom;
        let request = WatchRequest {
            rt,
            namespace,
            labels,
            fields,
            resource_version: parse_resource_version(&options.resource_version)?,
            timeout,
            bookmarks: flag(query, "allowWatchBookmarks"),
            send_initial_events: options.send_initial_events,
            shape,
        };
        let lines = watch::start(self.store.clone(), request, self.shutdown.clone());
        let protobuf = encoding != protobuf::Encoding::Json && !rt_custom;
        let stream = futures::stream::unfold(lines, move |mut lines| async move {
            let mut line = lines.recv().await?;
            if protobuf {
                // Every event of a built-in kind has a protobuf form; one that would not
                // encode is sent as an ERROR rather than as JSON in a protobuf stream.
                line = protobuf::watch_frame(&line)
                    .or_else(|reason| {
                        let status = ApiError::internal(reason).status();
                        protobuf::watch_frame(&super::store::watch_line("ERROR", &status))
                    })
                    .map(Bytes::from)
                    .unwrap_or_default();
            }
            Some((Ok::<_, Infallible>(Frame::data(line)), lines))
        });
        let mut response = Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(if protobuf {
                protobuf::WATCH_MEDIA_TYPE
            } else {
                "application/json"
            }),
        );
        response.headers_mut().insert(
            header::TRANSFER_ENCODING,
            header::HeaderValue::from_static("chunked"),
        );
        Ok(response)
    }

    fn delete_collection(
        &self,
        rt: &Arc<ResourceType>,
        namespace: Option<&str>,
        query: &Query,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = self.selectors(rt, query)?;
        let request = delete_request(query, body)?;
        let grace = grace_period(query, body);
        let matcher = WatchRequest {
            rt: rt.clone(),
            namespace: namespace.map(str::to_string),
            labels,
            fields,
            resource_version: None,
            timeout: None,
            bookmarks: false,
            send_initial_events: None,
            shape: Shape::Objects,
        };
        let keys: Vec<Key> = {
            let state = self.store.read();
            state
                .objects(&rt.storage, namespace)
                .filter(|(_, o)| matcher.matches(o))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut deleted = Vec::new();
        for key in keys {
            match ops::delete_with_grace(&self.store, rt, &key, &request, grace) {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(present(rt, &o)),
                Err(error) if error.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let rv = self.store.read().rv;
        Ok(json_response(
            200,
            &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
        ))
    }

    /// `GET pods/<name>/log`: resolves the container as kube-apiserver does, then streams the
    /// log from the runtime.
    fn pod_log(
        &self,
        rt: &ResourceType,
        key: &Key,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        let pod = self.store.read().get(&rt.storage, key).cloned();
        let pod = pod.ok_or_else(|| ApiError::not_found(rt, &key.1))?;
        let container =
            resolve_container(&pod, &key.1, query.get("container").map(String::as_str))?;
        let tail_lines = match query.get("tailLines") {
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("tailLines: Invalid value: \"{text}\""))
            })?),
            None => None,
        };
        // As the kubelet does: the output ends after this many bytes, mid-line if need be.
        let limit_bytes = match query.get("limitBytes") {
            Some(text) => Some(
                text.parse::<usize>()
                    .ok()
                    .filter(|limit| *limit > 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limitBytes: Invalid value: {text}: must be greater than 0"
                        ))
                    })?,
            ),
            None => None,
        };
        let since = log_since(query, &key.1)?;
        let request = LogRequest {
            since,
            timestamps: flag(query, "timestamps"),
            namespace: key.0.clone(),
            pod: key.1.clone(),
            uid: ops::meta_str(&pod, "uid").unwrap_or_default().to_string(),
            container,
            previous: flag(query, "previous"),
            follow: flag(query, "follow"),
            tail_lines,
        };
        let body = match &self.pod_logs {
            Some(logs) => {
                let chunks = logs.logs(request).map_err(ApiError::bad_request)?;
                let chunks = match limit_bytes {
                    Some(limit) => first_bytes(chunks, limit),
                    None => chunks,
                };
                let shutdown = self.shutdown.clone();
                let chunks = futures::StreamExt::take_until(chunks, shutdown.cancelled_owned());
                UnsyncBoxBody::new(StreamBody::new(futures::StreamExt::map(chunks, |chunk| {
                    Ok::<_, Infallible>(Frame::data(chunk))
                })))
            }
            None => full(""),
        };
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        Ok(response)
    }

    /// `POST pods/<name>/binding`: what a scheduler calls to assign a pod to a node.
    fn bind_pod(&self, rt: &ResourceType, key: &Key, binding: &Value) -> Result<(), ApiError> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|node| !node.is_empty())
            .ok_or_else(|| ApiError::bad_request("Binding target.name: Required value"))?
            .to_string();
        let pod = self.store.read().get(&rt.storage, key).cloned();
        let pod = pod.ok_or_else(|| ApiError::not_found(rt, &key.1))?;
        if let Some(bound) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|bound| !bound.is_empty())
        {
            return Err(ApiError::conflict_with(
                rt,
                &key.1,
                &format!("pod {} is already assigned to node \"{bound}\"", key.1),
            ));
        }
        if ops::is_deleting(&pod) {
            return Err(ApiError::conflict_with(
                rt,
                &key.1,
                &format!(
                    "pod {} is being deleted, cannot be assigned to a host",
                    key.1
                ),
            ));
        }
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": ops::now()});
        ops::edit(&self.store, rt, key, |pod| {
            pod["spec"]["nodeName"] = Value::String(node.clone());
            if !pod["status"].is_object() {
                pod["status"] = json!({});
            }
            let conditions = &mut pod["status"]["conditions"];
            if !conditions.is_array() {
                *conditions = json!([]);
            }
            if let Some(list) = conditions.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.insert(0, scheduled.clone());
            }
        })
    }
}

/// The container a request to a pod's log, exec or attach names, resolved as kube-apiserver
/// does: the one asked for, if the pod has it (among its containers or init containers), or
/// else the pod's only container.
pub(super) fn resolve_container(
    pod: &Value,
    pod_name: &str,
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    match asked.filter(|name| !name.is_empty()) {
        Some(name) => {
            if !containers.iter().any(|c| c == name)
                && !names("initContainers").iter().any(|c| c == name)
            {
                return Err(ApiError::bad_request(format!(
                    "container {name} is not valid for pod {pod_name}"
                )));
            }
            Ok(name.to_string())
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// kubectl asks for /openapi/v2 as protobuf only, and fails on anything it cannot parse. This
/// is a minimal gnostic `openapi_v2.Document` (swagger = 1, info = 2 with title = 1 and
/// version = 2): valid, describing no kind, so kubectl leaves validation to the server.
fn openapi_v2_protobuf() -> Response<Body> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(
        &mut info,
        2,
        format!("v{}.{}.0", discovery::MAJOR, discovery::MINOR).as_bytes(),
    );
    let mut document = Vec::new();
    field(&mut document, 1, b"2.0");
    field(&mut document, 2, &info);
    let mut response = Response::new(full(document));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Where a log starts, from `sinceSeconds` (counted back from now) or `sinceTime`, validated
/// as kube-apiserver validates PodLogOptions.
fn log_since(query: &Query, pod: &str) -> Result<Option<jiff::Timestamp>, ApiError> {
    let invalid = |field: &str, reason: &'static str, message: String| {
        ApiError::invalid_kind(
            "",
            "PodLogOptions",
            pod,
            vec![ext::Cause {
                field: field.to_string(),
                reason,
                message,
            }],
        )
    };
    let seconds = match query.get("sinceSeconds") {
        Some(text) => {
            let seconds = text.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("sinceSeconds: invalid value \"{text}\""))
            })?;
            if seconds < 1 {
                return Err(invalid(
                    "sinceSeconds",
                    "FieldValueInvalid",
                    format!("Invalid value: {seconds}: must be greater than 0"),
                ));
            }
            Some(seconds)
        }
        None => None,
    };
    let time = match query.get("sinceTime") {
        Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|e| {
            ApiError::bad_request(format!("sinceTime: invalid value \"{text}\": {e}"))
        })?),
        None => None,
    };
    match (seconds, time) {
        (Some(_), Some(_)) => Err(invalid(
            "",
            "FieldValueForbidden",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".to_string(),
        )),
        (Some(seconds), None) => Ok(Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(jiff::Timestamp::MIN),
        )),
        (None, time) => Ok(time),
    }
}

/// The kind of patch a PATCH request's content type names.
fn patch_type(content_type: &str, query: &Query) -> Result<PatchType, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    Ok(match media {
        "application/merge-patch+json" => PatchType::Merge,
        "application/json-patch+json" => PatchType::Json,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+cbor"
            if media.ends_with("yaml") =>
        {
            if !query.contains_key("fieldManager") {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            PatchType::Apply {
                force: flag(query, "force"),
            }
        }
        other => return Err(ApiError::unsupported_media_type(other, false)),
    })
}

/// The request as RBAC sees it.
fn access_request<'a>(
    method: &'a Method,
    target: &'a Target,
    query: &Query,
    content_type: &str,
) -> rbac::Request<'a> {
    let (rt, namespace, name, subresource) = match target {
        Target::Collection { rt, namespace } => (rt, namespace.as_deref(), "", None),
        Target::Object {
            rt,
            key,
            subresource,
        } => (
            rt,
            Some(key.0.as_str()),
            key.1.as_str(),
            subresource.as_deref(),
        ),
    };
    rbac::Request {
        method,
        rt,
        namespace: namespace.unwrap_or_default(),
        name,
        subresource,
        watch: flag(query, "watch"),
        apply_patch: content_type.starts_with("application/apply-patch"),
    }
}

/// The 410 Gone of a list whose snapshot was compacted away, worded as kube-apiserver words
/// it; a continued list also gets a token that continues from the latest state instead.
fn expired_list(read: &ListRead) -> Response<Body> {
    let mut status = match read {
        ListRead::Continue(token) => {
            let mut status = ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            )
            .status();
            let latest = ContinueToken {
                resource_version: None,
                after: token.after.clone(),
            };
            status["metadata"] = json!({"continue": latest.encode()});
            status
        }
        _ => ApiError::expired("The resourceVersion for the provided list is too old.").status(),
    };
    status["code"] = json!(410);
    json_response(410, &status)
}

fn items_last_key(items: &[(Key, Arc<Value>)]) -> Option<Key> {
    items.last().map(|(k, _)| k.clone())
}

/// Field selectors kube-apiserver accepts, per kind: metadata.name and metadata.namespace
/// everywhere, plus each kind's own.
fn field_supported(rt: &ResourceType, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Event") => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "source" | "type" | "reportingComponent")
        }
        ("events.k8s.io", "Event") => {
            field.starts_with("regarding.")
                || matches!(
                    field,
                    "reason" | "type" | "reportingController" | "deprecatedSource"
                )
        }
        ("", "Pod") => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        ("", "Secret") => field == "type",
        ("", "Namespace") => field == "status.phase",
        ("batch", "Job") => field == "status.successful",
        _ => false,
    }
}

fn default_manager(user_agent: &str) -> String {
    let manager = user_agent.split('/').next().unwrap_or("").trim();
    if manager.is_empty() {
        "unknown".to_string()
    } else {
        manager.to_string()
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && length > MAX_BODY
    {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(error) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {error}"
        ))),
    }
}

/// The keys a JSON object body (a created or replaced object, a merge or strategic merge patch)
/// gives twice, for the strict decoding kube-apiserver does of such bodies.
fn json_object_body_duplicates(content_type: &str, body: &[u8]) -> Vec<String> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json"
        | ""
        | "*/*"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => typed::duplicate_fields(body),
        _ => Vec::new(),
    }
}

/// Decodes a JSON, YAML or (for built-in kinds) protobuf request body to an endpoint of `rt`
/// that takes a `kind`.
fn decode(
    body: &[u8],
    content_type: &str,
    rt: &ResourceType,
    kind: &str,
) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}"))),
        protobuf::MEDIA_TYPE if !rt.custom => protobuf::decode_object(body, kind),
        other => Err(ApiError::unsupported_media_type(other, !rt.custom)),
    }
}

/// DeleteOptions' `gracePeriodSeconds`, from the body or the query.
fn grace_period(query: &Query, body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|options| options.get("gracePeriodSeconds").and_then(Value::as_i64))
        .or_else(|| query.get("gracePeriodSeconds")?.parse().ok())
}

/// `as=PartialObjectMetadata` in an Accept header.
const PARTIAL_OBJECT: &str = "PartialObjectMetadata";
/// `as=PartialObjectMetadataList` in an Accept header.
const PARTIAL_LIST: &str = "PartialObjectMetadataList";

/// The conversion (`as=` parameter) of the first media type in an Accept header that asks
/// for one of meta.k8s.io's: `Table`, `PartialObjectMetadata` or `PartialObjectMetadataList`.
fn requested_conversion(accept: &str) -> Option<&'static str> {
    accept.split(',').find_map(|media_type| {
        media_type
            .split(';')
            .filter_map(|parameter| parameter.trim().strip_prefix("as="))
            .find_map(|kind| {
                ["Table", PARTIAL_OBJECT, PARTIAL_LIST]
                    .into_iter()
                    .find(|known| *known == kind)
            })
    })
}

fn delete_request(query: &Query, body: &[u8]) -> Result<DeleteRequest, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions are not valid JSON: {e}"))
        })?
    };
    let text = |field: &str| {
        options
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| query.get(field).cloned())
    };
    let orphan = options
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| query.get("orphanDependents").map(|v| v == "true"));
    let propagation = match text("propagationPolicy").as_deref() {
        None => match orphan {
            Some(true) => Some(Propagation::Orphan),
            _ => None,
        },
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let mut dry_run_values: Vec<&str> = options
        .get("dryRun")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default())
        .collect();
    dry_run_values.extend(query.get("dryRun").map(String::as_str));
    let dry_run = ops::dry_run(&dry_run_values, "DeleteOptions")?;
    Ok(DeleteRequest {
        propagation,
        precondition_uid: options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
        orphan_dependents_false: orphan == Some(false),
    })
}

/// The first `limit` bytes of a log stream, which then ends.
fn first_bytes(chunks: super::LogStream, limit: usize) -> super::LogStream {
    Box::pin(futures::StreamExt::scan(
        chunks,
        limit,
        |remaining, mut chunk: Bytes| {
            if *remaining == 0 {
                return futures::future::ready(None);
            }
            chunk.truncate(*remaining);
            *remaining -= chunk.len();
            futures::future::ready(Some(chunk))
        },
    ))
}
