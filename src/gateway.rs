//! Wiring: publishing translated tables, and running the gateway's
//! servers for standalone and demo modes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::AdminServer;
use crate::http::dns::Resolver;
use crate::metrics as m;
use crate::proxy::{ProxyServer, ProxySettings, Shared};
use crate::routing::{RouteTable, TableSpec, UpstreamRegistry};
use crate::source::dns::{self, DnsResolver, DnsSettings};
use crate::source::health::WatchHealth;
use crate::source::standalone::{self, DirSource, SourceIssue};
use crate::telemetry::{Telemetry, access_log, trace};
use crate::translate::{self, ClusterState, Diagnostics, Severity, TranslateOptions};

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
}

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
            gauges: Mutex::default(),
        })
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

/// Addresses and settings of a gateway's servers.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    /// The HTTPS listener; none when TLS is off.
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub workers: usize,
    pub proxy: ProxySettings,
    pub translate: TranslateOptions,
    pub dns: DnsSettings,
    pub telemetry: TelemetryConfig,
}

/// Where the access log goes.
#[derive(Clone, Debug)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// The access log and tracing, each off unless configured.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    pub access_log: Option<(LogTarget, access_log::Settings)>,
    pub tracing: Option<trace::Settings>,
}

impl TelemetryConfig {
    /// Starts what is configured; tracing exports from the current runtime.
    fn start(&self) -> Result<Telemetry, StartError> {
        let access_log = match &self.access_log {
            None => None,
            Some((target, settings)) => {
                let out: Box<dyn std::io::Write + Send> = match target {
                    LogTarget::Stdout => Box::new(std::io::stdout()),
                    LogTarget::File(path) => Box::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|source| StartError::AccessLog {
                                path: path.clone(),
                                source,
                            })?,
                    ),
                };
                Some(
                    access_log::AccessLog::start(settings.clone(), out).map_err(|source| {
                        StartError::AccessLog {
                            path: PathBuf::from("-"),
                            source,
                        }
                    })?,
                )
            }
        };
        let tracer = match &self.tracing {
            None => None,
            Some(settings) => Some(trace::Tracer::start(settings).map_err(StartError::Tracing)?),
        };
        Ok(Telemetry { access_log, tracer })
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            https_addr: None,
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9180)),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            proxy: ProxySettings::default(),
            translate: TranslateOptions::default(),
            dns: DnsSettings::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read config directory {dir}: {source}")]
    ConfigDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracing: {0}")]
    Tracing(String),
}

/// A running proxy and admin server around one publisher, and the DNS
/// resolver that fills its upstreams outside the cluster and answers its
/// own calls (forwardAuth, JWKS).
pub struct Gateway {
    publisher: Arc<Publisher>,
    proxy: ProxyServer,
    admin: AdminServer,
    dns: DnsResolver,
    resolver: Resolver,
}

impl Gateway {
    /// Starts the servers. Must run inside a Tokio runtime, which hosts the
    /// admin server; the proxy runs on its own worker threads.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        let publisher = Publisher::new(config.translate.clone());
        Self::start_with(config, publisher).await
    }

    /// Starts the servers around an existing publisher, which may already
    /// hold a table: then no request is ever answered from an empty one.
    pub async fn start_with(
        config: GatewayConfig,
        publisher: Arc<Publisher>,
    ) -> Result<Gateway, StartError> {
        let shared = Arc::new(Shared {
            table: publisher.table(),
            settings: Arc::new(config.proxy.clone()),
            telemetry: Arc::new(config.telemetry.start()?),
        });
        // Owned by a task of this runtime, which outlives the workers; the
        // workers ask it, and so does everything else in the process that
        // resolves a name (the last gateway started wins).
        let resolver = Resolver::start(&config.dns);
        crate::http::dns::install(&resolver);
        let proxy = ProxyServer::start(
            config.http_addr,
            config.https_addr,
            config.workers,
            shared,
            Some(resolver.clone()),
        )
        .map_err(|source| StartError::Bind {
            addr: config.http_addr,
            source,
        })?;
        let admin = AdminServer::start(config.admin_addr, publisher.clone())
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin_addr,
                source,
            })?;
        let dns = DnsResolver::start_with(
            resolver.clone(),
            config.dns.clone(),
            publisher.registry_handle(),
            publisher.dns_targets(),
        );
        Ok(Gateway {
            publisher,
            proxy,
            admin,
            dns,
            resolver,
        })
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.proxy.https_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Stops accepting and drains in-flight requests.
    pub async fn shutdown(self) {
        drop(self.dns);
        crate::http::dns::uninstall(&self.resolver);
        self.admin.stop();
        self.proxy.shutdown().await;
    }
}

/// How often standalone mode looks for changed manifests.
pub const STANDALONE_POLL: Duration = Duration::from_millis(250);

/// A gateway serving a directory of manifests.
pub struct Standalone {
    gateway: Gateway,
    watcher: tokio::task::JoinHandle<()>,
}

impl Standalone {
    /// Loads `dir`, publishes its first table, and watches it for changes.
    pub async fn start(config: GatewayConfig, dir: PathBuf) -> Result<Standalone, StartError> {
        let mut source = DirSource::new(dir.clone());
        // The first table should hold every file, so files still being
        // written get a moment to settle (bounded: a file rewritten without
        // pause is picked up by the watcher later).
        for _ in 0..100 {
            let scan = source.scan().map_err(|source| StartError::ConfigDir {
                dir: dir.clone(),
                source,
            })?;
            if !scan.pending {
                break;
            }
            tokio::time::sleep(standalone::QUIET).await;
        }
        let (state, issues) = source.state();
        let publisher = Publisher::new(config.translate.clone());
        publisher.apply(&state, issues);
        let gateway = Gateway::start_with(config, publisher.clone()).await?;
        info!(dir = %dir.display(), "serving manifests; edits apply live");
        let watcher = tokio::spawn(standalone::watch(
            source,
            STANDALONE_POLL,
            move |state, issues| {
                publisher.apply(&state, issues);
            },
        ));
        Ok(Standalone { gateway, watcher })
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    pub async fn shutdown(self) {
        self.watcher.abort();
        self.gateway.shutdown().await;
    }
}
