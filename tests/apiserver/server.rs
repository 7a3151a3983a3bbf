//! The HTTP side: a hyper 1 HTTP/1.1 server (what kube's client speaks over
//! plain http) that maps requests onto the store.
//!
//! Every request is handled synchronously under the store lock once its
//! body has been read; the lock is never held across an await. A watch
//! response is a streaming body fed by a per-watch unbounded channel that
//! the store writes into, so a slow client never loses events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::merge::{Apply, merge_patch};
use super::resources::{RESOURCES, ResourceType, Route, Target, route};
use super::selector::{FieldSelector, LabelSelector, Query};
use super::status::ApiError;
use super::store::{
    Key, ListParams, Selection, Store, WatchFrom, now_rfc3339, parse_rv, prepare_update,
    validate_name,
};
use super::{Recorded, Shared};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Accepts connections until `shutdown` turns true (or its sender is
/// dropped); open connections, watches included, are cut at that moment.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // E.g. out of file descriptors: wait instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// What a request produces.
enum Reply {
    Json(StatusCode, Value),
    /// A watch: lines from the store until the channel closes or the
    /// deadline (`timeoutSeconds`) passes.
    Watch(mpsc::UnboundedReceiver<Bytes>, Option<Instant>),
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let query = Query::parse(&raw_query);
    let reply = {
        let mut store = shared.store();
        if store.down {
            Err(ApiError::unavailable())
        } else {
            dispatch(
                &mut store,
                &method,
                &path,
                &query,
                content_type.as_deref(),
                &body,
            )
        }
    };
    let (status, response) = match reply {
        Ok(Reply::Json(status, value)) => (status, json_response(status, &value)),
        Ok(Reply::Watch(rx, deadline)) => (StatusCode::OK, watch_response(rx, deadline)),
        Err(err) => {
            let status =
                StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, json_response(status, &err.to_status()))
        }
    };
    shared.record(Recorded {
        method: method.to_string(),
        path,
        query: raw_query,
        content_type: content_type.unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: status.as_u16(),
    });
    Ok(response)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A chunked body, one JSON event per line, as the real server streams.
fn watch_response(rx: mpsc::UnboundedReceiver<Bytes>, deadline: Option<Instant>) -> Response<Body> {
    let lines = futures_util::stream::unfold((rx, deadline), |(mut rx, deadline)| async move {
        let next = match deadline {
            Some(deadline) => tokio::select! {
                line = rx.recv() => line,
                _ = tokio::time::sleep_until(deadline) => None,
            },
            None => rx.recv().await,
        };
        next.map(|line| (Ok::<_, Infallible>(Frame::data(line)), (rx, deadline)))
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn dispatch(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let hidden = |group: &str| store.hidden_groups.iter().any(|g| g == group);
    if let Some(group) = path
        .strip_prefix("/apis/")
        .map(|p| p.split('/').next().unwrap_or(""))
        && hidden(group)
    {
        return Err(ApiError::unknown_path());
    }
    let target = match route(path)? {
        Route::Discovery(mut doc) if method == Method::GET => {
            if let Some(groups) = doc["groups"].as_array_mut() {
                groups.retain(|g| !g["name"].as_str().is_some_and(hidden));
            }
            return Ok(Reply::Json(StatusCode::OK, doc));
        }
        Route::Discovery(_) => return Err(ApiError::method_not_allowed(method.as_str())),
        Route::Resource(target) => target,
    };
    let req = Req {
        res: &RESOURCES[target.res],
        target: &target,
        query,
        dry_run: query.get("dryRun") == Some("All"),
    };
    match (method, target.name.is_some()) {
        (&Method::GET, false) if query.flag("watch") => req.watch(store),
        (&Method::GET, false) => req.list(store),
        (&Method::GET, true) if query.flag("watch") => Err(ApiError::bad_request(
            "watch is only served on collections; use fieldSelector=metadata.name=<name>",
        )),
        (&Method::GET, true) => req.get(store),
        (&Method::POST, false) => req.create(store, body),
        (&Method::PUT, true) => req.replace(store, body),
        (&Method::PATCH, true) => req.patch(store, content_type, body),
        (&Method::DELETE, true) if !target.status => req.delete(store, body),
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// A request on a resource URL.
struct Req<'a> {
    res: &'static ResourceType,
    target: &'a Target,
    query: &'a Query,
    dry_run: bool,
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn meta_str<'v>(obj: &'v Value, field: &str) -> Option<&'v str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Req<'_> {
    fn key(&self) -> Key {
        (
            self.target.namespace.clone().unwrap_or_default(),
            self.target.name.clone().unwrap_or_default(),
        )
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }

    fn selection(&self) -> Result<Selection, ApiError> {
        Ok(Selection {
            res: self.target.res,
            namespace: self.target.namespace.clone(),
            labels: LabelSelector::parse(self.query.get("labelSelector"))?,
            fields: FieldSelector::parse(self.query.get("fieldSelector"), self.res)?,
        })
    }

    /// `apiVersion` and `kind` in a body must name this resource when set.
    fn check_type(&self, obj: &Value) -> Result<(), ApiError> {
        let expected = self.res.api_version();
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != expected
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected})"
            )));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != self.res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                self.res.kind
            )));
        }
        Ok(())
    }

    /// Name and namespace in a body must match the URL when set.
    fn check_identity(&self, obj: &Value) -> Result<(), ApiError> {
        if let Some(name) = meta_str(obj, "name")
            && Some(name) != self.target.name.as_deref()
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                self.name()
            )));
        }
        if let Some(ns) = meta_str(obj, "namespace")
            && self.res.namespaced
            && Some(ns) != self.target.namespace.as_deref()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    fn existing(&self, store: &Store) -> Result<Value, ApiError> {
        store
            .get(self.target.res, &self.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(self.res, self.name()))
    }

    fn list(&self, store: &Store) -> Result<Reply, ApiError> {
        let limit = match self.query.get("limit") {
            None => None,
            Some(l) => {
                let l: i64 = l
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\"")))?;
                usize::try_from(l).ok().filter(|l| *l > 0)
            }
        };
        let params = ListParams {
            limit,
            continue_token: self.query.get("continue"),
            resource_version: self.query.get("resourceVersion"),
            version_match: self.query.get("resourceVersionMatch"),
        };
        let list = store.list(&self.selection()?, &params)?;
        Ok(Reply::Json(StatusCode::OK, list))
    }

    /// Watch parameters as the real server validates them; see
    /// [`WatchFrom`] for where each combination starts.
    fn watch(&self, store: &mut Store) -> Result<Reply, ApiError> {
        let q = self.query;
        let bookmarks = q.flag("allowWatchBookmarks");
        let send_initial = q.get("sendInitialEvents").map(|v| v == "true" || v == "1");
        let version_match = q.get("resourceVersionMatch");
        match (send_initial, version_match) {
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            (Some(true), m) if m != Some("NotOlderThan") => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Unsupported value: sendInitialEvents requires resourceVersionMatch=NotOlderThan",
                ));
            }
            (Some(true), _) if !bookmarks => {
                return Err(ApiError::bad_request(
                    "allowWatchBookmarks: Required value: sendInitialEvents requires allowWatchBookmarks=true",
                ));
            }
            _ => {}
        }
        let rv = q.get("resourceVersion");
        let from = match (send_initial, rv) {
            (Some(true), _) => WatchFrom::InitialEvents,
            (Some(false), None | Some("0")) => WatchFrom::After(store.current_rv()),
            (None, None | Some("0")) => WatchFrom::Current,
            (_, Some(rv)) => WatchFrom::After(parse_rv(rv)?),
        };
        let deadline = match q.get("timeoutSeconds") {
            None => None,
            Some(t) => {
                let secs: u64 = t.parse().map_err(|_| {
                    ApiError::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\""))
                })?;
                (secs > 0).then(|| Instant::now() + Duration::from_secs(secs))
            }
        };
        let rx = store.watch(self.selection()?, from, bookmarks);
        Ok(Reply::Watch(rx, deadline))
    }

    fn get(&self, store: &Store) -> Result<Reply, ApiError> {
        Ok(Reply::Json(StatusCode::OK, self.existing(store)?))
    }

    /// POST: a new object in the URL's namespace. As on a real cluster the
    /// status of a kind with a status subresource is dropped on create.
    fn create(&self, store: &mut Store, body: &[u8]) -> Result<Reply, ApiError> {
        if self.res.namespaced && self.target.namespace.is_none() {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let obj = self.new_object(store, parse_body(body)?, false)?;
        if self.dry_run {
            return Ok(Reply::Json(StatusCode::CREATED, obj));
        }
        let created = store.create(self.target.res, obj)?;
        Ok(Reply::Json(StatusCode::CREATED, created))
    }

    /// Validates and normalises a body that creates an object (POST, or
    /// server-side apply of a missing object).
    fn new_object(
        &self,
        store: &mut Store,
        mut obj: Value,
        from_apply: bool,
    ) -> Result<Value, ApiError> {
        self.check_type(&obj)?;
        obj["apiVersion"] = json!(self.res.api_version());
        obj["kind"] = json!(self.res.kind);
        match obj.get("metadata") {
            None => obj["metadata"] = json!({}),
            Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
        }
        if meta_str(&obj, "resourceVersion").is_some() && !from_apply {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let ns = self.target.namespace.clone();
        if let Some(body_ns) = meta_str(&obj, "namespace")
            && self.res.namespaced
            && Some(body_ns) != ns.as_deref()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match (meta_str(&obj, "name"), &self.target.name) {
            (_, Some(url_name)) => url_name.clone(),
            (Some(name), None) => name.to_string(),
            (None, None) => match meta_str(&obj, "generateName") {
                Some(prefix) => store.generate_name(prefix),
                None => {
                    return Err(ApiError::invalid(
                        self.res,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(self.res, &name)?;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), json!(name));
            match ns.filter(|_| self.res.namespaced) {
                Some(ns) => meta.insert("namespace".into(), json!(ns)),
                None => meta.remove("namespace"),
            };
            for server_owned in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
            ] {
                meta.remove(server_owned);
            }
        }
        if self.res.status
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        Ok(obj)
    }

    /// PUT: replace, with optimistic concurrency on
    /// `metadata.resourceVersion` (what lease-based leader election relies
    /// on). A missing object is 404: these resources do not create on
    /// update.
    fn replace(&self, store: &mut Store, body: &[u8]) -> Result<Reply, ApiError> {
        let obj = parse_body(body)?;
        self.check_type(&obj)?;
        self.check_identity(&obj)?;
        let old = self.existing(store)?;
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(self.res, self.name()));
        }
        let new = prepare_update(self.res, &old, obj, self.target.status);
        if self.dry_run {
            return Ok(Reply::Json(StatusCode::OK, new));
        }
        Ok(Reply::Json(
            StatusCode::OK,
            store.update(self.target.res, new),
        ))
    }

    fn patch(
        &self,
        store: &mut Store,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let media = content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let force = self.query.get("force");
        match media {
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                self.apply_patch(store, body)
            }
            _ if force.is_some() => Err(ApiError::bad_request(
                "force: Forbidden: may not be specified for non-apply patch",
            )),
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                self.merge_patch(store, body)
            }
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// Merge patch (strategic merge patch is treated as a merge patch: no
    /// patch-merge-key list merging). A `metadata.resourceVersion` in the
    /// patch is a precondition, as on a real server.
    fn merge_patch(&self, store: &mut Store, body: &[u8]) -> Result<Reply, ApiError> {
        let patch = parse_body(body)?;
        let old = self.existing(store)?;
        if let Some(rv) = meta_str(&patch, "resourceVersion")
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(self.res, self.name()));
        }
        let mut patched = old.clone();
        merge_patch(&mut patched, &patch);
        self.check_type(&patched)?;
        self.check_identity(&patched)?;
        let new = prepare_update(self.res, &old, patched, self.target.status);
        if self.dry_run {
            return Ok(Reply::Json(StatusCode::OK, new));
        }
        Ok(Reply::Json(
            StatusCode::OK,
            store.update(self.target.res, new),
        ))
    }

    /// Server-side apply (see `merge.rs` for what is modelled). The body
    /// is JSON, which kube sends and which is valid YAML; other YAML is
    /// rejected with 400. Applying to a missing object creates it, except
    /// on `/status` (404).
    fn apply_patch(&self, store: &mut Store, body: &[u8]) -> Result<Reply, ApiError> {
        let manager = self.query.get("fieldManager").ok_or_else(|| {
            ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        })?;
        let force = match self.query.get("force") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "force: Invalid value: \"{other}\""
                )));
            }
        };
        let patch = parse_body(body).map_err(|_| {
            ApiError::bad_request(
                "the apply patch must be a JSON object (YAML is not supported by the test double)",
            )
        })?;
        for field in ["apiVersion", "kind"] {
            if patch
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{field} must be set in an apply patch"
                )));
            }
        }
        self.check_type(&patch)?;
        self.check_identity(&patch)?;
        let now = now_rfc3339();
        let apply = Apply {
            res: self.res,
            name: self.name(),
            manager,
            force,
            status_sub: self.target.status,
            now: &now,
        };
        match store.get(self.target.res, &self.key()).cloned() {
            Some(old) => {
                if let Some(rv) = meta_str(&patch, "resourceVersion")
                    && Some(rv) != meta_str(&old, "resourceVersion")
                {
                    return Err(ApiError::conflict(self.res, self.name()));
                }
                let applied = apply.run(Some(&old), &patch)?;
                let new = prepare_update(self.res, &old, applied, self.target.status);
                if self.dry_run {
                    return Ok(Reply::Json(StatusCode::OK, new));
                }
                Ok(Reply::Json(
                    StatusCode::OK,
                    store.update(self.target.res, new),
                ))
            }
            None if self.target.status => Err(ApiError::not_found(self.res, self.name())),
            None => {
                let mut applied = apply.run(None, &patch)?;
                if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("name".into(), json!(self.name()));
                }
                let obj = self.new_object(store, applied, true)?;
                if self.dry_run {
                    return Ok(Reply::Json(StatusCode::CREATED, obj));
                }
                let created = store.create(self.target.res, obj)?;
                Ok(Reply::Json(StatusCode::CREATED, created))
            }
        }
    }

    /// DELETE: immediate (finalizers and graceful deletion are not
    /// modelled); honours `preconditions` in DeleteOptions. Answers with a
    /// success Status, as the real server does for most kinds.
    fn delete(&self, store: &mut Store, body: &[u8]) -> Result<Reply, ApiError> {
        let old = self.existing(store)?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            let options = parse_body(body)?;
            for (field, meta_field) in [("resourceVersion", "resourceVersion"), ("uid", "uid")] {
                if let Some(want) = options
                    .pointer(&format!("/preconditions/{field}"))
                    .and_then(Value::as_str)
                    && Some(want) != meta_str(&old, meta_field)
                {
                    return Err(ApiError::conflict_message(
                        self.res,
                        self.name(),
                        format!(
                            "Precondition failed: {field} in precondition: {want}, {field} in object meta: {}",
                            meta_str(&old, meta_field).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        if !self.dry_run {
            store.remove(self.target.res, &self.key());
        }
        Ok(Reply::Json(
            StatusCode::OK,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": self.name(),
                    "group": self.res.group,
                    "kind": self.res.plural,
                    "uid": meta_str(&old, "uid").unwrap_or_default(),
                },
            }),
        ))
    }
}
