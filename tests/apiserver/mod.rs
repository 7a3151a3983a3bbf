//! A Kubernetes API server test double for integration tests.
//!
//! It speaks the real HTTP API, the way kube-rs' client and kube-runtime's
//! watcher use it, so controller code runs unchanged against it and against
//! a real cluster: paginated lists with consistent `continue` snapshots,
//! watches resumed from a resourceVersion, bookmarks, 410 Gone after
//! compaction, label and field selectors, create/replace with optimistic
//! concurrency, merge patch and (simplified) server-side apply with
//! `managedFields`, and `/status` subresources.
//!
//! ```ignore
//! mod apiserver;
//!
//! let server = apiserver::ApiServer::start().await;
//! server.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}));
//! let client = server.client(); // a kube::Client for this server
//! ```
//!
//! Layout: [`resources`] is the table of served kinds and URL routing,
//! [`store`] the objects, history and watches, [`server`] the HTTP layer,
//! [`merge`] merge patch and server-side apply, [`selector`] selectors and
//! query strings, [`status`] the `metav1.Status` errors.
//!
//! Simplified on purpose (see each module): no authentication, admission,
//! schema validation or defaulting; namespaces need not exist; deletion is
//! immediate (no finalizers or grace periods); core/v1 and events.k8s.io/v1
//! Events are separate stores; strategic merge patch is a merge patch;
//! server-side apply treats lists as atomic.
#![allow(dead_code)]

mod merge;
mod resources;
mod selector;
mod server;
mod status;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use resources::{RESOURCES, by_kind_or_panic};
use selector::Query;
use store::{Key, Store, key_of, prepare_update, validate_name};

/// How often open watches that asked for bookmarks get one. The real
/// server sends them about once a minute; tests want them sooner.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// URL path, e.g. `/apis/sluicegate.io/v1alpha1/namespaces/default/apiroutes/a/status`.
    pub path: String,
    /// The raw (still percent-encoded) query string, `""` if none.
    pub query: String,
    /// The `Content-Type` header, `""` if none.
    pub content_type: String,
    pub body: String,
    /// The HTTP status the server answered with (200 for a watch).
    pub status: u16,
}

impl Recorded {
    /// A decoded query parameter (`None` when absent or empty).
    pub fn param(&self, name: &str) -> Option<String> {
        Query::parse(&self.query).get(name).map(str::to_string)
    }

    /// Whether this was a watch request.
    pub fn is_watch(&self) -> bool {
        Query::parse(&self.query).flag("watch")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// State shared by the handle and the server tasks.
struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<Recorded>>,
}

impl Shared {
    /// The store lock. A panicking test thread must not turn every later
    /// request into a second panic, so poisoning is ignored.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: Recorded) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// A fake API server on `127.0.0.1:<random port>`, served by tasks of the
/// current tokio runtime. Dropping it stops the server and cuts every
/// connection.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropping the sender (with the server) stops the tasks.
    _shutdown: watch::Sender<bool>,
}

impl ApiServer {
    /// Binds a port and starts serving. Must be called inside a tokio
    /// runtime (e.g. `#[tokio::test]`).
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test API server");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            requests: Mutex::new(Vec::new()),
        });
        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(server::serve(listener, shared.clone(), stop.clone()));
        tokio::spawn(bookmarks(shared.clone(), stop));
        ApiServer {
            shared,
            addr,
            _shutdown: shutdown,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server: plain http, default namespace
    /// `default`, configured as the controller configures its own.
    pub fn client(&self) -> kube::Client {
        let uri = self.url().parse().expect("server URL is a valid URI");
        // The controller's own client settings (no hidden retries).
        let config = sluicegate::source::kube::client_config(kube::Config::new(uri));
        kube::Client::try_from(config).expect("build kube client")
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store()
    }

    /// Creates or replaces an object as a test fixture (the "user" side,
    /// like `kubectl apply` without field management), sending ADDED or
    /// MODIFIED to watches. The object needs `apiVersion`, `kind` and
    /// `metadata.name`; namespaced kinds default to namespace `default`.
    /// Server-owned metadata is assigned as on a real server; `status` is
    /// taken from `obj` when present, otherwise an existing status is kept.
    /// Replacing with an identical object is a no-op. Returns the stored
    /// object.
    ///
    /// Panics on an unknown kind or an invalid name: that is a test bug.
    pub fn apply(&self, mut obj: Value) -> Value {
        assert!(obj.is_object(), "ApiServer::apply: not an object: {obj}");
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let id = by_kind_or_panic(&api_version, &kind);
        let res = &RESOURCES[id];
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if res.namespaced {
            if obj["metadata"]["namespace"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                obj["metadata"]["namespace"] = json!("default");
            }
        } else if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Err(e) = validate_name(res, &name) {
            panic!("ApiServer::apply: {}", e.message);
        }
        let mut store = self.store();
        match store.get(id, &key_of(&obj)).cloned() {
            None => {
                if let Some(meta) = obj["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                }
                store
                    .create(id, obj)
                    .unwrap_or_else(|e| panic!("ApiServer::apply: {}", e.message))
            }
            Some(old) => {
                let status = obj.get("status").cloned();
                let mut new = prepare_update(res, &old, obj, false);
                if let Some(status) = status {
                    new["status"] = status;
                }
                store.update(id, new)
            }
        }
    }

    /// Deletes an object, sending DELETED (with the final object and a new
    /// resourceVersion). Returns whether it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let id = by_kind_or_panic(api_version, kind);
        let key = object_key(id, namespace, name);
        self.store().remove(id, &key).is_some()
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let id = by_kind_or_panic(api_version, kind);
        let key = object_key(id, namespace, name);
        self.store().get(id, &key).cloned()
    }

    /// Every stored object of a kind, sorted by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let id = by_kind_or_panic(api_version, kind);
        self.store().objects(id).cloned().collect()
    }

    /// The current resourceVersion of the whole store (as a list would
    /// report it).
    pub fn resource_version(&self) -> String {
        self.store().current_rv().to_string()
    }

    /// Forgets the history, as an etcd compaction does: from now on a
    /// watch or list from any resourceVersion handed out before this call
    /// gets 410 Gone (watches: an ERROR event with a `Status` of code 410,
    /// reason `Expired`), and kube-runtime's watcher must relist. Open
    /// watches keep running; combine with [`ApiServer::close_watches`] to
    /// force the resume.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Ends every open watch stream, as the real server does at
    /// `timeoutSeconds`; events already queued are delivered first.
    pub fn close_watches(&self) {
        self.store().close_watches();
    }

    /// Simulates an outage: while down, every request gets 503 with a
    /// `Status` body, and going down ends every open watch. The
    /// controller's client does not retry inside a request, so callers see
    /// the errors and retry on their own schedule.
    pub fn set_down(&self, down: bool) {
        let mut store = self.store();
        store.down = down;
        if down {
            store.close_watches();
        }
    }

    /// Sends a BOOKMARK now to every open watch that asked for bookmarks
    /// (they also get one every second).
    pub fn bookmark_now(&self) {
        self.store().bookmark_all();
    }

    /// Every request received so far, in order of completion.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The stored Events, core/v1 and events.k8s.io/v1, in creation order.
    pub fn events(&self) -> Vec<Value> {
        let store = self.store();
        let mut events: Vec<Value> = [("v1", "Event"), ("events.k8s.io/v1", "Event")]
            .into_iter()
            .flat_map(|(av, kind)| {
                store
                    .objects(by_kind_or_panic(av, kind))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        // uids come from one counter, zero-padded: they sort by creation.
        events.sort_by(|a, b| {
            a.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .cmp(&b.pointer("/metadata/uid").and_then(Value::as_str))
        });
        events
    }

    /// Polls `what` every 10 ms until it holds or `timeout` passes; returns
    /// its last result.
    pub async fn wait_for(&self, what: impl Fn(&ApiServer) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The shutdown sender is dropped right after this, which stops the
        // accept loop and cuts connections; ending the watches here also
        // lets their bodies finish if a connection outlives that.
        self.store().close_watches();
    }
}

fn object_key(id: resources::ResId, namespace: Option<&str>, name: &str) -> Key {
    let ns = if RESOURCES[id].namespaced {
        namespace.unwrap_or("default")
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

/// Sends the periodic bookmarks until the server stops.
async fn bookmarks(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => shared.store().bookmark_all(),
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
