//! Command-line interface. Every flag can also be set through the
//! environment variable named in its help, which is how the Deployment
//! and the Helm chart configure the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin::explain::{ExplainRequest, QueryError, add_header, parse_method};
use crate::admin::explain_command::Target;
use crate::admin::{AdminOptions, AdminToken};
use crate::api::{ByteSize, Duration};
use crate::cache::StoreSettings;
use crate::controller::{ControllerConfig, Publish};
use crate::gateway::{GatewayConfig, LogTarget, TelemetryConfig};
use crate::http::client::PoolConfig;
use crate::plugins::limit::redis::RedisTarget;
use crate::proxy::{Http2Settings, Http3Settings, ProxySettings, TlsSettings};
use crate::routing::EncodedSlashes;
use crate::source::dns::DnsSettings;
use crate::source::kube::WatchScope;
use crate::status::lease::{LeaseConfig, LeaseConfigError};
use crate::telemetry::{access_log, trace};
use crate::translate::{ObjectKey, OwnPorts, TranslateOptions};

#[derive(Debug, Parser)]
#[command(
    name = "sluicegate",
    version,
    about = "Kubernetes ingress controller and API gateway"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a directory of Kubernetes manifests, applying edits live.
    Standalone {
        /// Directory of *.yaml / *.yml manifests (searched recursively,
        /// hidden entries skipped).
        #[arg(long, env = "SLUICEGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Run as the ingress controller of a Kubernetes cluster (in-cluster
    /// config, or --kubeconfig).
    Controller {
        #[command(flatten)]
        kube: Box<KubeArgs>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Explain which route a request gets and why: the precedence rule
    /// that decided, the candidates it beat, the route's plugins in
    /// execution order and its upstreams, from a directory of manifests
    /// (offline) or from a running gateway's admin port.
    Explain(Box<ExplainArgs>),
    /// Validate manifests offline (for CI before a GitOps sync): exit 1 on
    /// errors, or on warnings with --strict.
    Check(crate::check::CheckArgs),
    /// Run the gateway on the demo manifests with two echo backends.
    Demo {
        /// Manifest directory; the built-in copies are used when it does
        /// not exist.
        #[arg(long, env = "SLUICEGATE_DEMO_DIR", default_value = "examples/demo")]
        dir: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// Flags of Kubernetes mode.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Kubeconfig file; without it the in-cluster configuration is used,
    /// else $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "SLUICEGATE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace to watch (repeatable, or comma-separated in the
    /// environment variable); all namespaces when absent.
    #[arg(
        long = "watch-namespace",
        env = "SLUICEGATE_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// Service (NAMESPACE/NAME) whose addresses Ingresses show in
    /// status.loadBalancer.
    #[arg(long, env = "SLUICEGATE_PUBLISH_SERVICE", value_parser = parse_namespaced)]
    pub publish_service: Option<(String, String)>,
    /// IPs or hostnames Ingresses show in status.loadBalancer, instead of a
    /// Service's (repeatable, or comma-separated).
    #[arg(
        long = "publish-address",
        env = "SLUICEGATE_PUBLISH_ADDRESSES",
        value_delimiter = ',',
        conflicts_with = "publish_service"
    )]
    pub publish_addresses: Vec<String>,
    /// Serve the Gateway API (GatewayClasses of controller
    /// sluicegate.io/gateway-controller, their Gateways and routes) when
    /// its CRDs are installed; `false` never watches its kinds (for
    /// installations without RBAC for them).
    #[arg(
        long,
        env = "SLUICEGATE_GATEWAY_API",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub gateway_api: bool,
    /// Write status without leader election (only for a single replica).
    #[arg(long, env = "SLUICEGATE_DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
    /// Namespace of the leader election Lease; defaults to POD_NAMESPACE,
    /// else the client's namespace (the service account's in a pod, the
    /// kubeconfig context's outside one).
    #[arg(long, env = "SLUICEGATE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "SLUICEGATE_LEADER_ELECTION_NAME",
        default_value = "sluicegate-leader"
    )]
    pub leader_election_name: String,
    /// How long the Lease is valid after its last renewal.
    #[arg(long, env = "SLUICEGATE_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a renewal before it steps down.
    #[arg(long, env = "SLUICEGATE_RENEW_DEADLINE", default_value = "10s")]
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or tried.
    #[arg(long, env = "SLUICEGATE_RETRY_PERIOD", default_value = "2s")]
    pub retry_period: Duration,
    /// The longest a failed watch waits before it lists and watches again
    /// (delays start at 0.5 s, double, and are jittered).
    #[arg(long, env = "SLUICEGATE_WATCH_RETRY_MAX", default_value = "5s")]
    pub watch_retry_max: Duration,
    /// This replica's name: the leader election identity.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The namespace this replica runs in.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

/// Flags of `sluicegate explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The request's host (a port is ignored, as routing ignores it).
    #[arg(long)]
    pub host: String,
    /// The request's path, optionally with `?query`.
    #[arg(long)]
    pub path: String,
    /// The request's method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header as NAME=VALUE or NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Directory of manifests to explain against, as `standalone --config`
    /// reads it.
    #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
    pub config: Option<PathBuf>,
    /// Admin URL of a running gateway, e.g. http://127.0.0.1:9180.
    #[arg(long)]
    pub admin: Option<String>,
    /// The token of that admin port, if it asks for one.
    #[arg(long, env = "SLUICEGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --config: the IngressClass name the gateway serves.
    #[arg(long, default_value = "sluicegate")]
    pub ingress_class: String,
    /// With --config: the gateway also serves Ingresses without a class.
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// With --config: the PluginConfig (NAMESPACE/NAME) that runs on every
    /// route.
    #[arg(long, value_parser = parse_namespaced)]
    pub global_plugin_config: Option<(String, String)>,
    /// With --config: what encoded slashes in paths mean (keep, reject,
    /// decode).
    #[arg(long, default_value = "keep")]
    pub path_encoded_slashes: EncodedSlashes,
}

impl ExplainArgs {
    /// The request to explain, or which flag is wrong.
    pub fn request(&self) -> Result<ExplainRequest, QueryError> {
        let mut headers = http::HeaderMap::new();
        for h in &self.headers {
            let at = h
                .find(['=', ':'])
                .ok_or_else(|| QueryError::Header(h.clone()))?;
            add_header(&mut headers, &h[..at], &h[at + 1..])?;
        }
        Ok(ExplainRequest {
            host: self.host.clone(),
            path: self.path.clone(),
            method: parse_method(&self.method)?,
            headers,
        })
    }

    /// Where the configuration comes from.
    pub fn target(&self) -> Target {
        match (&self.config, &self.admin) {
            (Some(dir), _) => Target::Config {
                dir: dir.clone(),
                options: TranslateOptions {
                    ingress_class: self.ingress_class.clone(),
                    watch_ingress_without_class: self.watch_ingress_without_class,
                    global_plugins: self
                        .global_plugin_config
                        .as_ref()
                        .map(|(ns, name)| ObjectKey::new(ns.clone(), name.clone())),
                    ..TranslateOptions::default()
                },
                slashes: self.path_encoded_slashes,
            },
            (None, admin) => Target::Admin {
                url: admin.clone().unwrap_or_default(),
                token: self.admin_token.clone(),
            },
        }
    }
}

/// A listener address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "off" | "" => Ok(OptionalAddr(None)),
            t => t
                .parse()
                .map(|a| OptionalAddr(Some(a)))
                .map_err(|e| format!("expected an address like 0.0.0.0:8443, or off: {e}")),
        }
    }
}

fn parse_namespaced(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
    }
}

impl KubeArgs {
    /// The controller's settings around `gateway`. `client_namespace` is
    /// the Kubernetes client's default namespace, where the Lease goes
    /// unless a flag or POD_NAMESPACE says otherwise.
    pub fn config(
        &self,
        gateway: GatewayConfig,
        client_namespace: &str,
    ) -> Result<ControllerConfig, LeaseConfigError> {
        let identity = self
            .pod_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("sluicegate-{}", std::process::id()));
        let lease = if self.disable_leader_election {
            None
        } else {
            let lease = LeaseConfig {
                namespace: self
                    .leader_election_namespace
                    .clone()
                    .or_else(|| self.pod_namespace.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| client_namespace.to_owned()),
                name: self.leader_election_name.clone(),
                identity: identity.clone(),
                lease_duration: self.lease_duration.0,
                renew_deadline: self.renew_deadline.0,
                retry_period: self.retry_period.0,
            };
            lease.validate()?;
            Some(lease)
        };
        let publish = match (&self.publish_service, &self.publish_addresses) {
            (Some((ns, name)), _) => Publish::Service(ns.clone(), name.clone()),
            (None, list) if !list.is_empty() => Publish::Addresses(list.clone()),
            _ => Publish::Nothing,
        };
        let mut namespaces: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Ok(ControllerConfig {
            gateway,
            scope: WatchScope {
                namespaces,
                retry_max: self
                    .watch_retry_max
                    .0
                    .max(std::time::Duration::from_millis(100)),
                gateway_api: self.gateway_api,
                ..WatchScope::default()
            },
            publish,
            lease,
            instance: Some(identity),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `sluicegate=debug,hyper=info`.
    #[arg(long, env = "SLUICEGATE_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(
        long,
        env = "SLUICEGATE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Flags shared by every mode that runs the gateway.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address of the HTTP proxy listener.
    #[arg(long, env = "SLUICEGATE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the HTTPS listener; `off` disables TLS.
    #[arg(long, env = "SLUICEGATE_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: OptionalAddr,
    /// The HTTPS port clients use (the load balancer's), for redirects
    /// from HTTP.
    #[arg(long, env = "SLUICEGATE_HTTPS_REDIRECT_PORT", default_value_t = 443)]
    pub https_redirect_port: u16,
    /// `Strict-Transport-Security` header for responses over HTTPS, e.g.
    /// `max-age=31536000; includeSubDomains`; none when unset.
    #[arg(long, env = "SLUICEGATE_HSTS")]
    pub hsts: Option<http::HeaderValue>,
    /// Secret (NAMESPACE/NAME) whose certificate clients get when no other
    /// matches their SNI; a self-signed one otherwise.
    #[arg(long, env = "SLUICEGATE_DEFAULT_CERTIFICATE", value_parser = parse_namespaced)]
    pub default_certificate: Option<(String, String)>,
    /// Time a client has to complete its TLS handshake, from the accept.
    #[arg(long, env = "SLUICEGATE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes in progress per worker; a new connection past it
    /// makes the one that has waited longest go.
    #[arg(
        long,
        env = "SLUICEGATE_TLS_MAX_PENDING_HANDSHAKES",
        default_value_t = 1024
    )]
    pub tls_max_pending_handshakes: usize,
    /// Threads that compute TLS handshakes (key exchange, signature) off
    /// the workers' event loops; 0 computes them on the event loops.
    /// Defaults to the number of workers.
    #[arg(long, env = "SLUICEGATE_TLS_HANDSHAKE_THREADS")]
    pub tls_handshake_threads: Option<usize>,
    /// Secret (NAMESPACE/NAME) holding the session ticket keys that all
    /// replicas share, so that a session made with one replica resumes on
    /// another; in Kubernetes mode the leader creates and rotates them.
    /// Without it each process uses keys of its own.
    #[arg(long, env = "SLUICEGATE_TLS_TICKET_KEYS_SECRET", value_parser = parse_namespaced)]
    pub tls_ticket_keys_secret: Option<(String, String)>,
    /// How long a session ticket key encrypts new tickets; it decrypts
    /// them for one more period.
    #[arg(long, env = "SLUICEGATE_TLS_TICKET_KEY_ROTATION", default_value = "6h")]
    pub tls_ticket_key_rotation: Duration,
    /// PluginConfig (NAMESPACE/NAME) whose plugins run on every route.
    #[arg(long, env = "SLUICEGATE_GLOBAL_PLUGIN_CONFIG", value_parser = parse_namespaced)]
    pub global_plugin_config: Option<(String, String)>,
    /// Redis for rate limits shared by replicas (`policy: Redis`), e.g.
    /// `redis://redis:6379`; several comma-separated URLs for a cluster.
    #[arg(long, env = "SLUICEGATE_REDIS_URL", value_parser = parse_redis_urls)]
    pub redis_url: Option<String>,
    /// The Redis of --redis-url is a Redis Cluster.
    #[arg(long, env = "SLUICEGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Password for --redis-url (better set through the environment, from
    /// a Secret).
    #[arg(long, env = "SLUICEGATE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Bound of the proxy cache's memory storage (and of the memory in
    /// front of Tiered storages), e.g. `256Mi`.
    #[arg(long, env = "SLUICEGATE_CACHE_MEMORY_SIZE", default_value = "256Mi")]
    pub cache_memory_size: ByteSize,
    /// Directory of the proxy cache's disk storage (`storage: Disk`);
    /// entries there survive restarts. No disk storage when unset.
    #[arg(long, env = "SLUICEGATE_CACHE_DISK_DIR")]
    pub cache_disk_dir: Option<PathBuf>,
    /// Bound of the disk storage, e.g. `10Gi`.
    #[arg(long, env = "SLUICEGATE_CACHE_DISK_SIZE", default_value = "1Gi")]
    pub cache_disk_size: ByteSize,
    /// Redis of the proxy cache (`storage: Redis` or `Tiered`) and of its
    /// purges across replicas, e.g. `redis://redis:6379`; several
    /// comma-separated URLs for a cluster.
    #[arg(long, env = "SLUICEGATE_CACHE_REDIS_URL", value_parser = parse_redis_urls)]
    pub cache_redis_url: Option<String>,
    /// The Redis of --cache-redis-url is a Redis Cluster.
    #[arg(long, env = "SLUICEGATE_CACHE_REDIS_CLUSTER")]
    pub cache_redis_cluster: bool,
    /// Password for --cache-redis-url.
    #[arg(long, env = "SLUICEGATE_CACHE_REDIS_PASSWORD", hide_env_values = true)]
    pub cache_redis_password: Option<String>,
    /// Memcached servers of the proxy cache (`storage: Memcached` or
    /// `Tiered`), `host:port`, comma-separated.
    #[arg(
        long,
        env = "SLUICEGATE_CACHE_MEMCACHED_SERVERS",
        value_delimiter = ',',
        value_parser = parse_memcached_server
    )]
    pub cache_memcached_servers: Vec<String>,
    /// Time allowed per call to the cache's Redis or Memcached; a slower
    /// call is a miss.
    #[arg(long, env = "SLUICEGATE_CACHE_STORE_TIMEOUT", default_value = "200ms")]
    pub cache_store_timeout: Duration,
    /// Address of the admin server: the dashboard, /healthz, /readyz,
    /// /metrics, /routes, /explain and the dashboard's /api/*.
    #[arg(long, env = "SLUICEGATE_ADMIN_ADDR", default_value = "0.0.0.0:9180")]
    pub admin_addr: SocketAddr,
    /// Token the admin server asks for (`Authorization: Bearer`, or Basic
    /// with the token as password) on every path but /healthz, /readyz
    /// and /metrics. Set it through the environment, from a Secret.
    #[arg(long, env = "SLUICEGATE_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_admin_token)]
    pub admin_token: Option<AdminToken>,
    /// Proxy worker threads; each runs its own event loop. Defaults to the
    /// cgroup CPU quota rounded up (at least 1, at most the CPUs this
    /// process may use), or the CPU count without a quota.
    #[arg(long, env = "SLUICEGATE_WORKERS")]
    pub workers: Option<usize>,
    /// IngressClass name served by this instance.
    #[arg(long, env = "SLUICEGATE_INGRESS_CLASS", default_value = "sluicegate")]
    pub ingress_class: String,
    /// Also serve Ingresses that name no class.
    #[arg(long, env = "SLUICEGATE_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,
    /// Upstream connect timeout for routes that set none.
    #[arg(long, env = "SLUICEGATE_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: Duration,
    /// Time to an upstream's response head, for routes that set none.
    #[arg(long, env = "SLUICEGATE_REQUEST_TIMEOUT", default_value = "60s")]
    pub request_timeout: Duration,
    /// Idle upstream keep-alive connections are closed after this long.
    #[arg(long, env = "SLUICEGATE_UPSTREAM_IDLE_TIMEOUT", default_value = "30s")]
    pub upstream_idle_timeout: Duration,
    /// Idle keep-alive connections kept per upstream endpoint and worker.
    #[arg(long, env = "SLUICEGATE_UPSTREAM_MAX_IDLE", default_value_t = 64)]
    pub upstream_max_idle: usize,
    /// Trust X-Forwarded-* headers sent by clients (only behind a proxy
    /// or load balancer that sets them).
    #[arg(long, env = "SLUICEGATE_TRUST_FORWARDED_HEADERS")]
    pub trust_forwarded_headers: bool,
    /// Time a client has to send a complete request head, from its first
    /// byte (from the connection's start for its first request).
    #[arg(long, env = "SLUICEGATE_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub header_read_timeout: Duration,
    /// How long a client connection may wait for its next request
    /// (HTTP/1.1 keep-alive; HTTP/2 without open streams).
    #[arg(long, env = "SLUICEGATE_KEEPALIVE_TIMEOUT", default_value = "60s")]
    pub keepalive_timeout: Duration,
    /// How long a response may make no progress towards a client that
    /// does not read it before both connections close; routes may set
    /// their own (`timeouts.send`).
    #[arg(long, env = "SLUICEGATE_SEND_TIMEOUT", default_value = "60s")]
    pub send_timeout: Duration,
    /// Streams an HTTP/2 client may have open at once.
    #[arg(
        long,
        env = "SLUICEGATE_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 128
    )]
    pub http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list accepted, in bytes.
    #[arg(
        long,
        env = "SLUICEGATE_HTTP2_MAX_HEADER_LIST_SIZE",
        default_value_t = 65536
    )]
    pub http2_max_header_list_size: u32,
    /// An HTTP/2 PING is sent after this long without a frame from the
    /// client...
    #[arg(
        long,
        env = "SLUICEGATE_HTTP2_KEEPALIVE_INTERVAL",
        default_value = "30s"
    )]
    pub http2_keepalive_interval: Duration,
    /// ...and the connection closes when it is not answered within this.
    #[arg(
        long,
        env = "SLUICEGATE_HTTP2_KEEPALIVE_TIMEOUT",
        default_value = "20s"
    )]
    pub http2_keepalive_timeout: Duration,
    /// Serve HTTP/3 (QUIC) on the HTTPS port over UDP, and advertise it
    /// with `Alt-Svc` on HTTPS responses.
    #[arg(long, env = "SLUICEGATE_HTTP3")]
    pub http3: bool,
    /// Request streams an HTTP/3 client may have open at once.
    #[arg(long, env = "SLUICEGATE_HTTP3_MAX_STREAMS", default_value_t = 128)]
    pub http3_max_streams: u32,
    /// QUIC connections each worker serves at once.
    #[arg(
        long,
        env = "SLUICEGATE_HTTP3_MAX_CONNECTIONS",
        default_value_t = 10000
    )]
    pub http3_max_connections: usize,
    /// What `%2F` and `%5C` in request paths mean, for routing and
    /// forwarding alike: `keep` (part of a segment), `reject` (400) or
    /// `decode` (separators).
    #[arg(long, env = "SLUICEGATE_PATH_ENCODED_SLASHES", default_value = "keep")]
    pub path_encoded_slashes: EncodedSlashes,
    /// Access log: `off`, `stdout`, or a file to append to.
    #[arg(long, env = "SLUICEGATE_ACCESS_LOG", default_value = "off")]
    pub access_log: String,
    /// Access log line format: `json` or `text` (logfmt).
    #[arg(long, env = "SLUICEGATE_ACCESS_LOG_FORMAT", default_value = "json")]
    pub access_log_format: access_log::Format,
    /// Access log fields, comma-separated, in the order written; all when
    /// empty. Fields: time, client, method, host, path, protocol, status,
    /// request_bytes, response_bytes, route, upstream, attempts,
    /// duration_ms, upstream_ms, consumer, request_id, trace_id,
    /// answered_by, user_agent, ai_instance, prompt_tokens,
    /// completion_tokens, ttft_ms.
    #[arg(long, env = "SLUICEGATE_ACCESS_LOG_FIELDS", value_delimiter = ',')]
    pub access_log_fields: Vec<access_log::Field>,
    /// The share of requests answered under 400 that are logged, 0 to 1;
    /// errors are always logged.
    #[arg(long, env = "SLUICEGATE_ACCESS_LOG_SAMPLE", default_value_t = 1.0)]
    pub access_log_sample: f64,
    /// OTLP endpoint for traces, e.g. `http://otel-collector:4317` (gRPC)
    /// or `http://otel-collector:4318/v1/traces` (HTTP); no tracing when
    /// unset.
    #[arg(long, env = "SLUICEGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: `grpc` or `http/protobuf`.
    #[arg(long, env = "SLUICEGATE_OTLP_PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: trace::Protocol,
    /// The share of new traces sampled, 0 to 1; a request that carries a
    /// sampling decision in `traceparent` keeps it.
    #[arg(long, env = "SLUICEGATE_TRACE_SAMPLE_RATIO", default_value_t = 0.01)]
    pub trace_sample_ratio: f64,
    /// The `service.name` of exported spans.
    #[arg(long, env = "SLUICEGATE_SERVICE_NAME", default_value = "sluicegate")]
    pub service_name: String,
    /// Metric labels to drop from every series, comma-separated (e.g.
    /// `route,plugin`): fewer series, less detail.
    #[arg(
        long,
        env = "SLUICEGATE_METRICS_DISABLED_LABELS",
        value_delimiter = ','
    )]
    pub metrics_disabled_labels: Vec<String>,
    /// Per-route detail of the histograms: `basic` (latency per route;
    /// sizes, upstream latency and plugin time overall or per plugin;
    /// endpoints counted per upstream) or `full` (all of them per route,
    /// and gauges per endpoint).
    #[arg(long, env = "SLUICEGATE_METRICS_DETAIL", default_value = "basic")]
    pub metrics_detail: crate::metrics::Detail,
    /// On SIGTERM, how long in-flight requests may still run.
    #[arg(long, env = "SLUICEGATE_SHUTDOWN_GRACE", default_value = "25s")]
    pub shutdown_grace: Duration,
    /// Name server (IP or IP:PORT) for the hosts of ExternalName Services
    /// and host backends, instead of those of /etc/resolv.conf.
    #[arg(long, env = "SLUICEGATE_DNS_SERVER", value_parser = parse_dns_server, hide = true)]
    pub dns_server: Option<SocketAddr>,
}

/// Workers for this process's CPU budget (see [`crate::cgroup`]).
pub fn default_workers() -> usize {
    let fallback = std::thread::available_parallelism().map_or(1, usize::from);
    crate::cgroup::CpuBudget::detect().workers(fallback)
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("expected an IP address with an optional port, got {text:?}"))
}

fn parse_admin_token(text: &str) -> Result<AdminToken, String> {
    AdminToken::new(text).map_err(|e| e.to_string())
}

fn parse_memcached_server(text: &str) -> Result<String, String> {
    let t = text.trim();
    match t.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(t.to_owned())
        }
        _ => Err(format!("expected HOST:PORT, got {text:?}")),
    }
}

fn parse_redis_urls(text: &str) -> Result<String, String> {
    RedisTarget::parse(text, true, None).map(|_| text.to_owned())
}

impl GatewayArgs {
    /// The proxy cache's storages.
    pub fn cache(&self) -> StoreSettings {
        StoreSettings {
            memory_size: self.cache_memory_size.0,
            disk: self
                .cache_disk_dir
                .clone()
                .map(|d| (d, self.cache_disk_size.0)),
            redis: self.cache_redis_url.as_ref().and_then(|urls| {
                let cluster = self.cache_redis_cluster || urls.contains(',');
                RedisTarget::parse(urls, cluster, self.cache_redis_password.clone()).ok()
            }),
            memcached: self
                .cache_memcached_servers
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            timeout: self
                .cache_store_timeout
                .0
                .max(std::time::Duration::from_millis(1)),
        }
    }

    pub fn config(&self) -> GatewayConfig {
        let workers = self.workers.unwrap_or_else(default_workers).max(1);
        let cache = self.cache();
        GatewayConfig {
            http_addr: self.http_addr,
            https_addr: self.https_addr.0,
            admin_addr: self.admin_addr,
            admin: AdminOptions {
                token: self.admin_token.clone(),
                ..AdminOptions::default()
            },
            workers,
            proxy: ProxySettings {
                connect_timeout: self.connect_timeout.0,
                request_timeout: self.request_timeout.0,
                trust_forwarded: self.trust_forwarded_headers,
                header_read_timeout: self.header_read_timeout.0,
                keepalive_timeout: self.keepalive_timeout.0,
                send_timeout: self.send_timeout.0,
                http2: Http2Settings {
                    max_concurrent_streams: self.http2_max_concurrent_streams,
                    max_header_list_size: self.http2_max_header_list_size,
                    keepalive_interval: self.http2_keepalive_interval.0,
                    keepalive_timeout: self.http2_keepalive_timeout.0,
                    ..Http2Settings::default()
                },
                encoded_slashes: self.path_encoded_slashes,
                shutdown_grace: self.shutdown_grace.0,
                https_redirect_port: self.https_redirect_port,
                hsts: self.hsts.clone(),
                pool: PoolConfig {
                    max_idle_per_endpoint: self.upstream_max_idle,
                    idle_timeout: self.upstream_idle_timeout.0,
                },
                tls: TlsSettings {
                    handshake_timeout: self.tls_handshake_timeout.0,
                    max_pending_handshakes: self.tls_max_pending_handshakes.max(1),
                    handshake_threads: self.tls_handshake_threads.unwrap_or(workers),
                    ticket_key_rotation: self.tls_ticket_key_rotation.0,
                },
                http3: self.http3.then_some(Http3Settings {
                    max_streams: self.http3_max_streams.max(1),
                    max_connections: self.http3_max_connections.max(1),
                }),
            },
            translate: TranslateOptions {
                ingress_class: self.ingress_class.clone(),
                watch_ingress_without_class: self.watch_ingress_without_class,
                default_certificate: self
                    .default_certificate
                    .as_ref()
                    .map(|(ns, name)| ObjectKey::new(ns.clone(), name.clone())),
                global_plugins: self
                    .global_plugin_config
                    .as_ref()
                    .map(|(ns, name)| ObjectKey::new(ns.clone(), name.clone())),
                ticket_keys_secret: self
                    .tls_ticket_keys_secret
                    .as_ref()
                    .map(|(ns, name)| ObjectKey::new(ns.clone(), name.clone())),
                redis: self.redis_url.as_ref().and_then(|urls| {
                    let cluster = self.redis_cluster || urls.contains(',');
                    RedisTarget::parse(urls, cluster, self.redis_password.clone()).ok()
                }),
                own_ports: OwnPorts {
                    http: self.http_addr.port(),
                    https: self.https_addr.0.map(|a| a.port()),
                },
                cache: cache.available(),
            },
            cache,
            dns: DnsSettings {
                server: self.dns_server,
                ..DnsSettings::default()
            },
            telemetry: TelemetryConfig {
                access_log: match self.access_log.as_str() {
                    "off" | "" => None,
                    target => Some((
                        if target == "stdout" || target == "-" {
                            LogTarget::Stdout
                        } else {
                            LogTarget::File(target.into())
                        },
                        access_log::Settings {
                            format: self.access_log_format,
                            fields: self.access_log_fields.clone(),
                            sample: self.access_log_sample,
                        },
                    )),
                },
                tracing: self.otlp_endpoint.as_ref().map(|endpoint| trace::Settings {
                    endpoint: endpoint.clone(),
                    protocol: self.otlp_protocol,
                    ratio: self.trace_sample_ratio,
                    service_name: self.service_name.clone(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests;
