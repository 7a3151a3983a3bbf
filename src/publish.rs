//! Publishing: turning cluster states into live route tables, and the
//! view of the live configuration that `/routes`, status and the
//! dashboard read.
//!
//! Kept apart from the servers (`crate::gateway`) so that the admin
//! server, the controller and the status writer depend on the publisher
//! without depending on what starts them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics as m;
use crate::routing::{RouteTable, TableSpec, UpstreamRegistry};
use crate::source::dns;
use crate::source::health::WatchHealth;
use crate::source::standalone::SourceIssue;
use crate::translate::{
    self, ClusterState, Diagnostics, GatewayApiStatus, Severity, TranslateOptions,
};

/// What `/routes` shows: the live table and everything wrong with the
/// configuration it came from.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub generation: u64,
    /// Seconds since the Unix epoch when this table went live.
    pub applied_at: u64,
    pub table: TableSpec,
    pub diagnostics: Diagnostics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_issues: Vec<SourceIssue>,
    /// The status of the Gateway API objects, as translation concluded.
    #[serde(skip_serializing_if = "GatewayApiStatus::is_empty")]
    pub gateway_api: GatewayApiStatus,
}

/// Ports Gateway listeners want open: port, and whether it is HTTPS.
pub type WantedPorts = Arc<Vec<(u16, bool)>>;

/// Turns cluster states into live route tables.
pub struct Publisher {
    table: Arc<ArcSwap<RouteTable>>,
    registry: Arc<UpstreamRegistry>,
    health: crate::proxy::HealthChecks,
    /// The upstreams of the live table that DNS fills.
    dns_targets: watch::Sender<dns::Targets>,
    options: TranslateOptions,
    view: ArcSwap<ConfigView>,
    ready: AtomicBool,
    generation: AtomicU64,
    /// Findings already logged, so that each is logged once, not per reload.
    reported: Mutex<HashSet<String>>,
    /// The watches' health, in Kubernetes mode.
    watch_health: OnceLock<Arc<WatchHealth>>,
    /// Ports the live table's Gateway listeners need open.
    ports: watch::Sender<WantedPorts>,
    /// Why ports of Gateway listeners could not be opened, by port.
    port_errors: watch::Sender<BTreeMap<u16, String>>,
    /// Label sets of the diagnostics gauges last set, so that those no
    /// longer present are cleared.
    gauges: Mutex<PublishedGauges>,
}

#[derive(Default)]
struct PublishedGauges {
    diagnostics: HashSet<(&'static str, String)>,
}

impl Publisher {
    pub fn new(options: TranslateOptions) -> Arc<Self> {
        // The recorder first: the first table's metrics are set before the
        // admin server starts.
        crate::admin::metrics::handle();
        Arc::new(Publisher {
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            registry: Arc::new(UpstreamRegistry::new()),
            health: crate::proxy::HealthChecks::default(),
            dns_targets: watch::channel(dns::Targets::from([])).0,
            options,
            view: ArcSwap::from_pointee(ConfigView::default()),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            reported: Mutex::new(HashSet::new()),
            watch_health: OnceLock::new(),
            ports: watch::channel(WantedPorts::default()).0,
            port_errors: watch::channel(BTreeMap::new()).0,
            gauges: Mutex::default(),
        })
    }

    /// Follows the ports the live table's Gateway listeners need open.
    pub fn wanted_ports(&self) -> watch::Receiver<WantedPorts> {
        self.ports.subscribe()
    }

    /// Follows the ports of Gateway listeners that could not be opened,
    /// with why.
    pub fn port_errors(&self) -> watch::Receiver<BTreeMap<u16, String>> {
        self.port_errors.subscribe()
    }

    /// Records the outcome of opening the wanted ports.
    pub fn set_port_errors(&self, errors: BTreeMap<u16, String>) {
        self.port_errors.send_if_modified(|current| {
            let changed = *current != errors;
            if changed {
                *current = errors;
            }
            changed
        });
    }

    /// Shows the watches' health in `/readyz` and `/metrics`.
    pub fn set_watch_health(&self, health: Arc<WatchHealth>) {
        let _ = self.watch_health.set(health);
    }

    /// The watches' health, in Kubernetes mode.
    pub fn watch_health(&self) -> Option<&WatchHealth> {
        self.watch_health.get().map(Arc::as_ref)
    }

    /// The generation of the live table (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The table handle the proxy reads.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    pub fn registry(&self) -> &UpstreamRegistry {
        &self.registry
    }

    /// Shares the registry, for the DNS resolver.
    pub fn registry_handle(&self) -> Arc<UpstreamRegistry> {
        self.registry.clone()
    }

    /// Follows the upstreams of the live table that are named by DNS.
    pub fn dns_targets(&self) -> watch::Receiver<dns::Targets> {
        self.dns_targets.subscribe()
    }

    /// True once a first table is live.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn view(&self) -> Arc<ConfigView> {
        self.view.load_full()
    }

    /// Translates `state`, builds its table and swaps it in atomically.
    /// Requests already running finish on the table they started with.
    pub fn apply(&self, state: &ClusterState, source_issues: Vec<SourceIssue>) -> Arc<ConfigView> {
        let started = Instant::now();
        let translation = translate::translate(state, &self.options);
        let table = RouteTable::build(&translation.table, &self.registry);
        let routes = table.len();
        retire(self.table.swap(Arc::new(table)));
        self.health.sync(&self.registry);
        // After the table: the resolver fills upstreams the registry holds.
        let targets = dns::targets(&translation.table.upstreams);
        self.dns_targets.send_if_modified(|current| {
            let changed = **current != *targets;
            if changed {
                *current = targets;
            }
            changed
        });
        // After the table: a new port's requests find their routes.
        let mut wanted: Vec<(u16, bool)> = translation
            .table
            .listeners
            .iter()
            .filter(|l| !l.shared)
            .map(|l| (l.port, l.tls))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        self.ports.send_if_modified(|current| {
            let changed = **current != wanted;
            if changed {
                *current = Arc::new(wanted);
            }
            changed
        });
        self.ready.store(true, Ordering::Release);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.report(&translation.diagnostics, &source_issues);
        let errors = translation
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
            + source_issues
                .iter()
                .filter(|i| i.severity == Severity::Error)
                .count();
        metrics::counter!(m::TABLE_UPDATES).increment(1);
        metrics::gauge!(m::TABLE_ROUTES).set(routes as f64);
        metrics::gauge!(m::CONFIG_DIAGNOSTICS, m::labels(&[("severity", "error")]))
            .set(errors as f64);
        metrics::gauge!(m::TABLE_GENERATION).set(generation as f64);
        metrics::gauge!(m::CONFIG_LAST_RELOAD).set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.publish_gauges(&translation);
        info!(
            generation,
            routes,
            errors,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "route table published"
        );
        let view = Arc::new(ConfigView {
            generation,
            applied_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            table: translation.table,
            diagnostics: translation.diagnostics,
            source_issues,
            gateway_api: translation.gateway_api,
        });
        retire(self.view.swap(view.clone()));
        view
    }

    /// Objects with diagnostics by kind and reason, and each certificate's
    /// expiry; gauges of label sets that went away are cleared.
    fn publish_gauges(&self, translation: &translate::Translation) {
        let mut by_reason: std::collections::HashMap<(&'static str, String), HashSet<String>> =
            Default::default();
        for d in translation.diagnostics.iter() {
            by_reason
                .entry((d.object.kind.as_str(), format!("{:?}", d.reason)))
                .or_default()
                .insert(format!("{}/{}", d.object.namespace, d.object.name));
        }
        let mut certificates = std::collections::HashMap::new();
        for c in &translation.table.tls {
            if let Some(t) = c.not_after {
                certificates.insert(c.secret.clone(), t);
            }
        }
        let mut last = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in last
            .diagnostics
            .iter()
            .filter(|k| !by_reason.contains_key(*k))
        {
            metrics::gauge!(
                m::CONFIG_OBJECTS_WITH_DIAGNOSTICS,
                m::labels(&[("kind", gone.0), ("reason", &gone.1)])
            )
            .set(0.0);
        }
        for ((kind, reason), objects) in &by_reason {
            metrics::gauge!(
                m::CONFIG_OBJECTS_WITH_DIAGNOSTICS,
                m::labels(&[("kind", kind), ("reason", reason)])
            )
            .set(objects.len() as f64);
        }
        for (secret, t) in &certificates {
            metrics::gauge!(m::CERTIFICATE_EXPIRY, m::labels(&[("secret", secret)])).set(*t as f64);
        }
        // A certificate no longer used stops being reported once its
        // series goes idle; setting it to 0 would read as "expired".
        last.diagnostics = by_reason.into_keys().collect();
    }

    fn report(&self, diagnostics: &Diagnostics, issues: &[SourceIssue]) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = HashSet::new();
        for (severity, text) in diagnostics
            .iter()
            .map(|d| (d.severity, d.to_string()))
            .chain(issues.iter().map(|i| (i.severity, i.to_string())))
        {
            if !reported.contains(&text) {
                if severity == Severity::Error && issues.iter().any(|i| i.to_string() == text) {
                    metrics::counter!(m::CONFIG_RELOAD_FAILURES).increment(1);
                }
                match severity {
                    Severity::Error => warn!(problem = %text, "configuration rejected"),
                    Severity::Warning => warn!(problem = %text, "configuration warning"),
                }
            }
            current.insert(text);
        }
        *reported = current;
    }
}

/// Frees `value` on a background thread.
///
/// A replaced table and its view hold every route, upstream link and
/// diagnostic of the previous generation: with 10,000 routes freeing them
/// takes several milliseconds, which would otherwise delay the next change
/// on the control-plane thread. Requests still running on the old table
/// keep it alive regardless; this only moves where the last reference goes.
pub fn retire<T: Send + 'static>(value: T) {
    use std::sync::mpsc::{Sender, channel};
    type Garbage = Box<dyn Send>;
    static DROPPER: OnceLock<Option<Sender<Garbage>>> = OnceLock::new();
    let dropper = DROPPER.get_or_init(|| {
        let (tx, rx) = channel::<Garbage>();
        std::thread::Builder::new()
            .name("sluicegate-free".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    match dropper {
        // If the thread is gone the value comes back and drops here.
        Some(tx) => drop(tx.send(Box::new(value))),
        None => drop(value),
    }
}
