//! Command-line interface. Every flag can also be set through the
//! environment variable named in its help, which is how the Deployment
//! and the Helm chart configure the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Duration;
use crate::controller::{ControllerConfig, Publish};
use crate::gateway::{GatewayConfig, LogTarget, TelemetryConfig};
use crate::http::client::PoolConfig;
use crate::plugins::limit::redis::RedisTarget;
use crate::proxy::{Http2Settings, ProxySettings};
use crate::routing::EncodedSlashes;
use crate::source::dns::DnsSettings;
use crate::source::kube::WatchScope;
use crate::status::lease::{LeaseConfig, LeaseConfigError};
use crate::telemetry::{access_log, trace};
use crate::translate::{ObjectKey, TranslateOptions};

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
    /// Address of the admin server (/healthz, /readyz, /routes, /metrics).
    #[arg(long, env = "SLUICEGATE_ADMIN_ADDR", default_value = "0.0.0.0:9180")]
    pub admin_addr: SocketAddr,
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
    /// answered_by, user_agent.
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
    /// sizes, upstream latency and plugin time overall or per plugin) or
    /// `full` (all of them per route).
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

fn parse_redis_urls(text: &str) -> Result<String, String> {
    RedisTarget::parse(text, true, None).map(|_| text.to_owned())
}

impl GatewayArgs {
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            http_addr: self.http_addr,
            https_addr: self.https_addr.0,
            admin_addr: self.admin_addr,
            workers: self.workers.unwrap_or_else(default_workers).max(1),
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
                redis: self.redis_url.as_ref().and_then(|urls| {
                    let cluster = self.redis_cluster || urls.contains(',');
                    RedisTarget::parse(urls, cluster, self.redis_password.clone()).ok()
                }),
            },
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
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_into_config() {
        let cli = Cli::parse_from([
            "sluicegate",
            "standalone",
            "--config",
            "/etc/sg",
            "--workers",
            "3",
            "--connect-timeout",
            "250ms",
            "--http-addr",
            "127.0.0.1:18080",
        ]);
        let Command::Standalone { config, gateway } = cli.command else {
            panic!("expected standalone");
        };
        assert_eq!(config, PathBuf::from("/etc/sg"));
        let cfg = gateway.config();
        assert_eq!(cfg.workers, 3);
        assert_eq!(
            cfg.proxy.connect_timeout,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(cfg.http_addr.port(), 18080);
        assert_eq!(cfg.https_addr, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(cfg.dns.server, None);
        let cli = Cli::parse_from([
            "sluicegate",
            "standalone",
            "--config",
            "d",
            "--https-addr",
            "off",
        ]);
        let Command::Standalone { gateway, .. } = cli.command else {
            panic!("expected standalone");
        };
        assert_eq!(gateway.config().https_addr, None);
        for (flag, want) in [("127.0.0.1:5353", "127.0.0.1:5353"), ("::1", "[::1]:53")] {
            let cli = Cli::parse_from([
                "sluicegate",
                "standalone",
                "--config",
                "d",
                "--dns-server",
                flag,
            ]);
            let Command::Standalone { gateway, .. } = cli.command else {
                panic!("expected standalone");
            };
            assert_eq!(gateway.config().dns.server, Some(want.parse().unwrap()));
        }
        assert!(
            Cli::try_parse_from([
                "sluicegate",
                "standalone",
                "--config",
                "d",
                "--dns-server",
                "dns.local"
            ])
            .is_err()
        );
    }

    #[test]
    fn controller_flags() {
        let cli = Cli::parse_from([
            "sluicegate",
            "controller",
            "--watch-namespace",
            "b,a",
            "--watch-namespace",
            "a",
            "--publish-service",
            "ingress/sluicegate",
            "--pod-name",
            "sg-0",
            "--pod-namespace",
            "ingress",
            "--lease-duration",
            "20s",
        ]);
        let Command::Controller { kube, gateway } = cli.command else {
            panic!("expected controller");
        };
        let cfg = kube.config(gateway.config(), "elsewhere").unwrap();
        assert_eq!(cfg.scope.namespaces, ["a", "b"]);
        assert_eq!(cfg.scope.retry_max, std::time::Duration::from_secs(5));
        assert!(
            matches!(cfg.publish, Publish::Service(ref ns, ref n) if ns == "ingress" && n == "sluicegate")
        );
        let lease = cfg.lease.unwrap();
        assert_eq!(
            (lease.namespace.as_str(), lease.identity.as_str()),
            ("ingress", "sg-0")
        );
        assert_eq!(lease.lease_duration, std::time::Duration::from_secs(20));
    }

    #[test]
    fn the_lease_goes_to_the_clients_namespace_unless_told() {
        let lease_ns = |args: &[&str]| {
            let mut argv = vec!["sluicegate", "controller", "--pod-name", "sg-0"];
            argv.extend_from_slice(args);
            let Command::Controller { kube, gateway } = Cli::parse_from(argv).command else {
                panic!("expected controller");
            };
            kube.config(gateway.config(), "from-kubeconfig")
                .unwrap()
                .lease
                .unwrap()
                .namespace
        };
        assert_eq!(lease_ns(&[]), "from-kubeconfig");
        assert_eq!(lease_ns(&["--pod-namespace", ""]), "from-kubeconfig");
        assert_eq!(lease_ns(&["--pod-namespace", "pods"]), "pods");
        assert_eq!(
            lease_ns(&[
                "--pod-namespace",
                "pods",
                "--leader-election-namespace",
                "leases"
            ]),
            "leases"
        );
    }

    #[test]
    fn bad_controller_flags_are_refused() {
        for args in [
            &["--publish-service", "no-slash"][..],
            &["--publish-service", "a/b", "--publish-address", "1.2.3.4"],
        ] {
            let mut argv = vec!["sluicegate", "controller"];
            argv.extend_from_slice(args);
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
        let cli = Cli::parse_from([
            "sluicegate",
            "controller",
            "--renew-deadline",
            "20s",
            "--pod-name",
            "x",
        ]);
        let Command::Controller { kube, gateway } = cli.command else {
            panic!("expected controller");
        };
        let err = kube.config(gateway.config(), "x").unwrap_err().to_string();
        assert!(err.contains("--renew-deadline"), "{err}");
    }
}
