//! Command-line interface. Every flag can also be set through the
//! environment variable named in its help, which is how the Deployment
//! and the Helm chart configure the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Duration;
use crate::gateway::GatewayConfig;
use crate::proxy::{PoolConfig, ProxySettings};
use crate::translate::TranslateOptions;

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
    /// Address of the admin server (/healthz, /readyz, /routes, /metrics).
    #[arg(long, env = "SLUICEGATE_ADMIN_ADDR", default_value = "0.0.0.0:9180")]
    pub admin_addr: SocketAddr,
    /// Proxy worker threads; each runs its own event loop. Defaults to the
    /// number of CPUs available.
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
    /// Time a client has to send a complete request head.
    #[arg(long, env = "SLUICEGATE_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub header_read_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may still run.
    #[arg(long, env = "SLUICEGATE_SHUTDOWN_GRACE", default_value = "25s")]
    pub shutdown_grace: Duration,
}

impl GatewayArgs {
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            http_addr: self.http_addr,
            admin_addr: self.admin_addr,
            workers: self
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
                .max(1),
            proxy: ProxySettings {
                connect_timeout: self.connect_timeout.0,
                request_timeout: self.request_timeout.0,
                trust_forwarded: self.trust_forwarded_headers,
                header_read_timeout: self.header_read_timeout.0,
                shutdown_grace: self.shutdown_grace.0,
                pool: PoolConfig {
                    max_idle_per_endpoint: self.upstream_max_idle,
                    idle_timeout: self.upstream_idle_timeout.0,
                },
            },
            translate: TranslateOptions {
                ingress_class: self.ingress_class.clone(),
                watch_ingress_without_class: self.watch_ingress_without_class,
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
    }
}
