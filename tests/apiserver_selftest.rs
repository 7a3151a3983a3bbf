//! Exercises the API server test double (`tests/apiserver`) with a real
//! `kube::Client` and kube-runtime's watcher, so that other tests can trust
//! it to behave like a cluster.

use crate::apiserver;

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver::ApiServer;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, VersionMatch, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(10);
const ROUTE_API_VERSION: &str = "sluicegate.io/v1alpha1";

fn service(name: &str, app: Option<&str>) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": 80}]},
    });
    if let Some(app) = app {
        svc["metadata"]["labels"] = json!({"app": app});
    }
    svc
}

fn route(name: &str, host: &str) -> Value {
    json!({
        "apiVersion": ROUTE_API_VERSION,
        "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": [host],
            "routes": [{"name": "all", "backends": [{"name": "web", "port": 80}]}],
        },
    })
}

fn routes(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("sluicegate.io", "v1alpha1", "ApiRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "apiroutes");
    Api::namespaced_with(client, "default", &resource)
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(ResourceExt::name_any).collect()
}

fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_with_selectors_and_consistent_pagination() {
    let server = ApiServer::start().await;
    for (name, app) in [
        ("a", Some("web")),
        ("b", Some("db")),
        ("c", Some("web")),
        ("d", None),
        ("e", Some("web")),
    ] {
        server.apply(service(name, app));
    }
    let services: Api<Service> = Api::default_namespaced(server.client());

    for (selector, expected) in [
        ("app=web", vec!["a", "c", "e"]),
        ("app==web", vec!["a", "c", "e"]),
        ("app!=web", vec!["b", "d"]),
        ("app", vec!["a", "b", "c", "e"]),
        ("!app", vec!["d"]),
        ("app in (db, web),app notin (web)", vec!["b"]),
    ] {
        let list = services
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(&list.items), expected, "labelSelector {selector}");
    }
    let (code, _) = api_code(
        services
            .list(&ListParams::default().labels("app in (web"))
            .await,
    );
    assert_eq!(code, 400);

    // Pagination: later pages come from the first page's snapshot even if
    // objects change in between.
    let page1 = services
        .list(&ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(names(&page1.items), ["a", "b"]);
    let snapshot_rv = page1.metadata.resource_version.clone().unwrap();
    let c_before = server.get("v1", "Service", Some("default"), "c").unwrap();
    server.apply(service("c", Some("changed")));
    server.delete("v1", "Service", Some("default"), "d");
    server.apply(service("f", None));
    let token = page1.metadata.continue_.clone().expect("a continue token");
    assert_eq!(page1.metadata.remaining_item_count, Some(3));
    let page2 = services
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&page2.items), ["c", "d"]);
    assert_eq!(
        page2.metadata.resource_version.as_deref(),
        Some(snapshot_rv.as_str())
    );
    assert_eq!(
        page2.items[0].metadata.resource_version.as_deref(),
        c_before["metadata"]["resourceVersion"].as_str(),
        "page 2 shows c as of the snapshot"
    );
    let token = page2.metadata.continue_.clone().expect("a continue token");
    let page3 = services
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&page3.items), ["e"]);
    assert!(page3.metadata.continue_.is_none());
    let now = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&now.items), ["a", "b", "c", "e", "f"]);

    // An exact snapshot is served until compaction, then it is 410 Gone,
    // and so is a continue token from before the compaction.
    let exact = ListParams::default()
        .at(&snapshot_rv)
        .matching(VersionMatch::Exact);
    assert_eq!(
        names(&services.list(&exact).await.unwrap().items),
        ["a", "b", "c", "d", "e"]
    );
    server.compact();
    assert_eq!(
        api_code(services.list(&exact).await),
        (410, "Expired".into())
    );
    assert_eq!(
        api_code(
            services
                .list(&ListParams::default().limit(2).continue_token(&token))
                .await
        ),
        (410, "Expired".into())
    );
    // A resourceVersion from the future is the real server's 504 (which
    // kube's client retries for minutes by default, so ask without retries).
    let future = (server.resource_version().parse::<u64>().unwrap() + 100).to_string();
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_retry = false;
    let no_retry: Api<Service> = Api::default_namespaced(Client::try_from(config).unwrap());
    let (code, _) = api_code(
        no_retry
            .list(
                &ListParams::default()
                    .at(&future)
                    .matching(VersionMatch::NotOlderThan),
            )
            .await,
    );
    assert_eq!(code, 504);

    // Field selectors: `type` on Secrets, and unsupported labels are 400.
    for (name, type_) in [("tls", "kubernetes.io/tls"), ("plain", "Opaque")] {
        server.apply(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "type": type_,
        }));
    }
    let secrets: Api<Secret> = Api::all(server.client());
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(names(&tls.items), ["tls"]);
    let not_tls = secrets
        .list(&ListParams::default().fields("type!=kubernetes.io/tls,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(names(&not_tls.items), ["plain"]);
    let (code, _) = api_code(
        secrets
            .list(&ListParams::default().fields("spec.x=y"))
            .await,
    );
    assert_eq!(code, 400);

    // What kube-runtime's watcher sends on its first list.
    let list_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.param("limit").as_deref() == Some("2"))
        .collect();
    assert!(list_requests.iter().any(|r| r.param("continue").is_some()));
}

/// A watcher's events, reduced to what the tests compare.
fn describe(event: &Result<watcher::Event<DynamicObject>, watcher::Error>) -> String {
    match event {
        Ok(watcher::Event::Init) => "Init".into(),
        Ok(watcher::Event::InitApply(o)) => format!("InitApply({})", o.name_any()),
        Ok(watcher::Event::InitDone) => "InitDone".into(),
        Ok(watcher::Event::Apply(o)) => format!("Apply({})", o.name_any()),
        Ok(watcher::Event::Delete(o)) => format!("Delete({})", o.name_any()),
        Err(watcher::Error::WatchError(status)) => format!("WatchError({})", status.code),
        Err(other) => format!("Err({other})"),
    }
}

/// Runs kube-runtime's watcher in a task and forwards its events.
fn spawn_watcher(
    api: Api<DynamicObject>,
) -> mpsc::UnboundedReceiver<Result<watcher::Event<DynamicObject>, watcher::Error>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collects watcher events, keeping a reflector-like view of the objects,
/// until `until` has been seen.
struct Collected {
    seen: Vec<String>,
    objects: BTreeSet<String>,
    relisting: Option<BTreeSet<String>>,
}

impl Collected {
    fn new() -> Collected {
        Collected {
            seen: Vec::new(),
            objects: BTreeSet::new(),
            relisting: None,
        }
    }

    async fn until(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Result<watcher::Event<DynamicObject>, watcher::Error>>,
        until: &str,
    ) -> Vec<String> {
        let mut batch = Vec::new();
        loop {
            let event = tokio::time::timeout(TIMEOUT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {until} within {TIMEOUT:?}; saw {batch:?}"))
                .expect("watcher task ended");
            match &event {
                Ok(watcher::Event::Init) => self.relisting = Some(BTreeSet::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(r) = self.relisting.as_mut() {
                        r.insert(o.name_any());
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.objects = self.relisting.take().unwrap_or_default();
                }
                Ok(watcher::Event::Apply(o)) => {
                    self.objects.insert(o.name_any());
                }
                Ok(watcher::Event::Delete(o)) => {
                    self.objects.remove(&o.name_any());
                }
                Err(_) => {}
            }
            let d = describe(&event);
            // The client does not retry by itself (as the controller's
            // does not): while the double is down, each attempt of the
            // watcher fails, as many times as its backoff allows.
            if d.contains("ApiServer::set_down") {
                continue;
            }
            self.seen.push(d.clone());
            batch.push(d.clone());
            if d == until {
                return batch;
            }
        }
    }
}

fn stored_route_names(server: &ApiServer) -> BTreeSet<String> {
    server
        .list(ROUTE_API_VERSION, "ApiRoute")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn watcher_follows_changes_and_relists_after_compaction() {
    let server = ApiServer::start().await;
    server.apply(route("a", "a.example.com"));
    server.apply(route("b", "b.example.com"));
    let mut rx = spawn_watcher(routes(server.client()));
    let mut c = Collected::new();

    assert_eq!(
        c.until(&mut rx, "InitDone").await,
        ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]
    );
    // The initial list is paged as kube-runtime does it.
    let first_list = server
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && !r.is_watch())
        .unwrap();
    assert_eq!(
        first_list.path,
        "/apis/sluicegate.io/v1alpha1/namespaces/default/apiroutes"
    );
    assert_eq!(first_list.param("limit").as_deref(), Some("500"));

    // Live events; the watch was started with bookmarks and a timeout.
    server.apply(route("c", "c.example.com"));
    assert_eq!(c.until(&mut rx, "Apply(c)").await, ["Apply(c)"]);
    let updated = server.apply(route("a", "new.example.com"));
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(c.until(&mut rx, "Apply(a)").await, ["Apply(a)"]);
    server.delete(ROUTE_API_VERSION, "ApiRoute", Some("default"), "b");
    assert_eq!(c.until(&mut rx, "Delete(b)").await, ["Delete(b)"]);
    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.is_watch())
        .unwrap();
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.param("timeoutSeconds").as_deref(), Some("290"));
    assert!(watch.param("resourceVersion").is_some());
    assert!(watch.param("sendInitialEvents").is_none());

    // Compaction plus a closed watch: resuming gets 410 and the watcher
    // relists.
    server.compact();
    server.close_watches();
    assert_eq!(
        c.until(&mut rx, "InitDone").await,
        [
            "WatchError(410)",
            "Init",
            "InitApply(a)",
            "InitApply(c)",
            "InitDone"
        ]
    );
    assert_eq!(c.objects, stored_route_names(&server));

    // An outage during which objects change and history is compacted: the
    // watcher catches up by relisting and loses nothing.
    server.set_down(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.apply(route("d", "d.example.com"));
    server.delete(ROUTE_API_VERSION, "ApiRoute", Some("default"), "a");
    server.compact();
    server.set_down(false);
    assert_eq!(
        c.until(&mut rx, "InitDone").await,
        [
            "WatchError(410)",
            "Init",
            "InitApply(c)",
            "InitApply(d)",
            "InitDone"
        ]
    );
    assert_eq!(c.objects, stored_route_names(&server));
    assert!(
        server.requests().iter().any(|r| r.status == 503),
        "requests during the outage got 503"
    );

    // Without compaction a closed watch resumes without relisting and
    // replays what it missed.
    server.close_watches();
    server.apply(route("e", "e.example.com"));
    assert_eq!(c.until(&mut rx, "Apply(e)").await, ["Apply(e)"]);
    assert_eq!(c.objects, stored_route_names(&server));
}

#[tokio::test]
async fn raw_watch_bookmarks_selectors_timeouts_and_gone() {
    let server = ApiServer::start().await;
    server.apply(service("a", Some("web")));
    server.apply(service("b", Some("db")));
    let services: Api<Service> = Api::default_namespaced(server.client());

    // From "0": synthetic ADDED for the matching objects, then live events.
    // An object leaving the selection is DELETED, entering it ADDED.
    let params = WatchParams::default().labels("app=web");
    let mut stream = services.watch(&params, "0").await.unwrap().boxed();
    let mut next = async || {
        tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .expect("a watch event in time")
            .expect("the stream is open")
            .expect("a valid event")
    };
    let describe = |e: &WatchEvent<Service>| match e {
        WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
        WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
        WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    };
    assert_eq!(describe(&next().await), "ADDED a");
    server.apply(service("a", Some("db")));
    assert_eq!(describe(&next().await), "DELETED a");
    server.apply(service("b", Some("web")));
    assert_eq!(describe(&next().await), "ADDED b");
    server.apply(service("b", Some("web"))); // identical: no event
    server.bookmark_now();
    let rv = server.resource_version();
    assert_eq!(describe(&next().await), format!("BOOKMARK {rv}"));

    // A resourceVersion from before a compaction: one ERROR event, 410.
    server.compact();
    let mut gone = services
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match gone.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        gone.next().await.is_none(),
        "the stream ends after the error"
    );

    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    let mut short = services
        .watch(
            &WatchParams::default().timeout(1),
            &server.resource_version(),
        )
        .await
        .unwrap()
        .boxed();
    // (Bookmarks may arrive first.)
    while let Some(event) = tokio::time::timeout(TIMEOUT, short.next()).await.unwrap() {
        assert!(matches!(event, Ok(WatchEvent::Bookmark(_))), "{event:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Streaming lists (sendInitialEvents) end the initial events with an
    // annotated bookmark.
    let params = WatchParams::streaming_lists();
    let mut initial = services.watch(&params, "0").await.unwrap().boxed();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, initial.next()).await.unwrap() {
            Some(Ok(WatchEvent::Added(s))) => seen.push(s.name_any()),
            Some(Ok(WatchEvent::Bookmark(b))) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["a", "b"]);
}

#[tokio::test]
async fn server_side_apply_status() {
    let server = ApiServer::start().await;
    server.apply(route("a", "a.example.com"));
    let api = routes(server.client());
    let params = PatchParams::apply("sluicegate").force();
    let status = |reason: &str| {
        json!({
            "apiVersion": ROUTE_API_VERSION,
            "kind": "ApiRoute",
            "status": {"conditions": [{
                "type": "Accepted", "status": "True", "reason": reason, "message": "",
                "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z",
            }]},
        })
    };

    let first = api
        .patch_status("a", &params, &Patch::Apply(status("Valid")))
        .await
        .unwrap();
    assert_eq!(first.data["status"], status("Valid")["status"]);
    assert_eq!(
        first.metadata.generation,
        Some(1),
        "status writes keep generation"
    );
    let managed = first.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managed
            .iter()
            .any(|m| m.manager.as_deref() == Some("sluicegate")
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref() == Some("status")),
        "managedFields: {managed:?}"
    );
    assert_eq!(first.data["spec"]["hosts"], json!(["a.example.com"]));

    // The same apply again is a no-op: same resourceVersion, no event.
    let again = api
        .patch_status("a", &params, &Patch::Apply(status("Valid")))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );

    // A real change bumps the resourceVersion but not the generation.
    let changed = api
        .patch_status("a", &params, &Patch::Apply(status("Changed")))
        .await
        .unwrap();
    assert_ne!(
        changed.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(changed.metadata.generation, Some(1));

    let patches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 3);
    for p in &patches {
        assert_eq!(
            p.path,
            "/apis/sluicegate.io/v1alpha1/namespaces/default/apiroutes/a/status"
        );
        assert_eq!(p.content_type, "application/apply-patch+yaml");
        assert_eq!(p.param("fieldManager").as_deref(), Some("sluicegate"));
        assert_eq!(p.param("force").as_deref(), Some("true"));
    }

    // A spec change by the "user" bumps generation and keeps the status.
    let user = server.apply(route("a", "b.example.com"));
    assert_eq!(user["metadata"]["generation"], 2);
    assert_eq!(user["status"], status("Changed")["status"]);

    // A status in a main-resource write is ignored.
    let merged = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null, "spec": {"hosts": ["c.example.com"]}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["status"], status("Changed")["status"]);
    assert_eq!(merged.metadata.generation, Some(3));

    // Another manager's conflicting apply is refused without force.
    let other = api
        .patch_status(
            "a",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(status("Mine")),
        )
        .await;
    assert_eq!(api_code(other), (409, "Conflict".into()));

    // /status of a missing object is 404; apply without fieldManager 400.
    let missing = api
        .patch_status("nope", &params, &Patch::Apply(status("Valid")))
        .await;
    assert_eq!(api_code(missing), (404, "NotFound".into()));
    let raw =
        http::Request::patch("/apis/sluicegate.io/v1alpha1/namespaces/default/apiroutes/a/status")
            .header("content-type", "application/apply-patch+yaml")
            .body(serde_json::to_vec(&status("Valid")).unwrap())
            .unwrap();
    let (code, _) = api_code(server.client().request::<Value>(raw).await);
    assert_eq!(code, 400);

    // Apply on the main resource creates, then updates and drops fields the
    // manager no longer applies.
    let apply = PatchParams::apply("gitops");
    let mut desired = route("new", "x.example.com");
    desired["metadata"]["labels"] = json!({"team": "a", "tier": "edge"});
    let created = api
        .patch("new", &apply, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.labels().len(), 2);
    desired["metadata"]["labels"] = json!({"team": "a"});
    desired["spec"]["hosts"] = json!(["y.example.com"]);
    let updated = api
        .patch("new", &apply, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(updated.labels().keys().collect::<Vec<_>>(), ["team"]);
    assert_eq!(updated.data["spec"]["hosts"], json!(["y.example.com"]));
}

#[tokio::test]
async fn lease_optimistic_concurrency() {
    let server = ApiServer::start().await;
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("sluicegate-leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        api_code(leases.create(&PostParams::default(), &lease).await),
        (409, "AlreadyExists".into())
    );

    let mut takeover = created.clone();
    takeover.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let replaced = leases
        .replace("sluicegate-leader", &PostParams::default(), &takeover)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );

    // `takeover` still carries the old resourceVersion.
    assert_eq!(
        api_code(
            leases
                .replace("sluicegate-leader", &PostParams::default(), &takeover)
                .await
        ),
        (409, "Conflict".into())
    );
    let stored = server
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("default"),
            "sluicegate-leader",
        )
        .unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "pod-b");

    assert!(leases.get_opt("other").await.unwrap().is_none());
    leases
        .delete("sluicegate-leader", &DeleteParams::default())
        .await
        .unwrap();
    assert!(server.list("coordination.k8s.io/v1", "Lease").is_empty());
}

#[tokio::test]
async fn recorder_events_land_in_events() {
    let server = ApiServer::start().await;
    let recorder = Recorder::new(
        server.client(),
        Reporter {
            controller: "sluicegate".into(),
            instance: Some("pod-a".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some(ROUTE_API_VERSION.into()),
        kind: Some("ApiRoute".into()),
        name: Some("a".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "InvalidRoute".into(),
        note: Some("spec.routes[0]: no backends".into()),
        action: "Validate".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(events[0]["reason"], "InvalidRoute");
    assert_eq!(events[0]["regarding"]["name"], "a");
    assert_eq!(events[0]["reportingController"], "sluicegate");

    // A repeat is a merge patch that adds a series to the same Event.
    recorder.publish(&event, &reference).await.unwrap();
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["series"]["count"], 2);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.content_type == "application/merge-patch+json")
    );
}

#[tokio::test]
async fn unknown_paths_and_discovery() {
    let server = ApiServer::start().await;
    let client = server.client();
    let raw = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
    let (code, reason) = api_code(
        client
            .request::<Value>(raw("/apis/nope.io/v1/things"))
            .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _) = api_code(
        client
            .request::<Value>(raw("/api/v1/namespaces/default/ingressclasses"))
            .await,
    );
    assert_eq!(code, 404, "cluster-scoped kinds have no namespaced path");

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let resources = client
        .request::<Value>(raw("/apis/networking.k8s.io/v1"))
        .await
        .unwrap();
    let served: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(served, ["ingresses", "ingresses/status", "ingressclasses"]);

    // Cluster-scoped objects have no namespace.
    let class = server.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "sluicegate"},
        "spec": {"controller": "sluicegate.io/ingress-controller"},
    }));
    assert!(class["metadata"].get("namespace").is_none());
    let classes: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(client);
    assert_eq!(
        names(&classes.list(&ListParams::default()).await.unwrap().items),
        ["sluicegate"]
    );
}
