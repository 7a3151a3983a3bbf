//! Wiring: running the gateway's servers for standalone and demo modes
//! (tables are published by [`crate::publish`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::admin::{AdminOptions, AdminServer};
use crate::cache::{StoreSettings, Stores};
use crate::http::dns::Resolver;
use crate::proxy::{ProxyServer, ProxySettings, Shared};
use crate::source::dns::{DnsResolver, DnsSettings};
use crate::source::standalone::{self, DirSource};
use crate::telemetry::{Telemetry, access_log, trace};
use crate::translate::TranslateOptions;

pub use crate::publish::{ConfigView, Publisher, WantedPorts, retire};

/// Addresses and settings of a gateway's servers.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    /// The HTTPS listener; none when TLS is off.
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub admin: AdminOptions,
    pub workers: usize,
    pub proxy: ProxySettings,
    pub translate: TranslateOptions,
    pub dns: DnsSettings,
    pub telemetry: TelemetryConfig,
    /// The proxy cache's storages (routes may only name those the
    /// translate options list as available).
    pub cache: StoreSettings,
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
            admin: AdminOptions::default(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            proxy: ProxySettings::default(),
            translate: TranslateOptions::default(),
            dns: DnsSettings::default(),
            cache: StoreSettings::default(),
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
    #[error("cannot open the disk cache in {dir}: {source}")]
    CacheDir {
        dir: PathBuf,
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
    /// Opens and closes the ports of Gateway listeners.
    ports: tokio::task::JoinHandle<()>,
    cache: Arc<Stores>,
    /// Hears tag purges from other replicas.
    cache_bus: tokio::task::JoinHandle<()>,
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
        let cache =
            Arc::new(
                Stores::open(&config.cache).map_err(|source| StartError::CacheDir {
                    dir: config.cache.disk.clone().map(|d| d.0).unwrap_or_default(),
                    source,
                })?,
            );
        let shared = Arc::new(Shared {
            table: publisher.table(),
            settings: Arc::new(config.proxy.clone()),
            cache: cache.clone(),
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
        let cache_bus = tokio::spawn(crate::cache::bus::listen(cache.clone()));
        let admin_options = AdminOptions {
            encoded_slashes: config.proxy.encoded_slashes,
            ..config.admin.clone()
        };
        let admin = AdminServer::start(
            config.admin_addr,
            publisher.clone(),
            admin_options,
            cache.clone(),
        )
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
        let ports = tokio::spawn(open_ports(proxy.ports(), publisher.clone()));
        Ok(Gateway {
            publisher,
            proxy,
            admin,
            dns,
            ports,
            cache,
            cache_bus,
            resolver,
        })
    }

    /// The ports open for Gateway listeners now.
    pub fn gateway_ports(&self) -> Vec<u16> {
        self.proxy.ports().open_ports()
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

    /// The proxy cache's storages.
    pub fn cache(&self) -> &Arc<Stores> {
        &self.cache
    }

    /// Stops accepting and drains in-flight requests.
    pub async fn shutdown(self) {
        self.ports.abort();
        drop(self.dns);
        self.cache_bus.abort();
        crate::http::dns::uninstall(&self.resolver);
        self.admin.stop();
        self.proxy.shutdown().await;
    }
}

/// Keeps the ports Gateway listeners want open, as tables are published.
/// A port is opened right after the table that serves it goes live, so
/// its first request finds its routes.
async fn open_ports(ports: Arc<crate::proxy::Ports>, publisher: Arc<Publisher>) {
    let mut wanted = publisher.wanted_ports();
    loop {
        let list = wanted.borrow_and_update().clone();
        // Binding is quick, but it is a system call per worker: done off
        // the runtime's other tasks.
        let p = ports.clone();
        let errors = tokio::task::spawn_blocking(move || p.set(&list))
            .await
            .unwrap_or_default();
        publisher.set_port_errors(errors);
        if wanted.changed().await.is_err() {
            return;
        }
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
        // The first table should hold every file (a file rewritten without
        // pause is picked up by the watcher later).
        source
            .settle()
            .await
            .map_err(|source| StartError::ConfigDir {
                dir: dir.clone(),
                source,
            })?;
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
