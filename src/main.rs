//! The `sluicegate` binary: parse flags, set up logging, run a mode.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluicegate::admin::explain::render_text;
use sluicegate::admin::explain_command;
use sluicegate::cli::{Cli, Command, ExplainArgs, LogFormat};
use sluicegate::controller::Controller;
use sluicegate::demo::Demo;
use sluicegate::gateway::Standalone;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluicegate::memory::set_collector(collect_freed_memory);
    // Before anything builds a TLS configuration.
    sluicegate::crypto::provider();
    // `check` prints its report on stdout and needs neither logs nor a
    // runtime.
    let command = match cli.command {
        Command::Check(args) => return sluicegate::check::main(&args),
        command => command,
    };
    let filter = EnvFilter::try_new(log_directives(&cli.log.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A command that prints its answer keeps stdout for it.
    let to_stderr = matches!(command, Command::Explain(_));
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    match cli.log.log_format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(!to_stderr && std::io::stdout().is_terminal())
                .init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
    // The control plane (admin server, config watching, signals) is light
    // and runs here; the proxy runs on its own worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter: the user's, plus silence for kube-runtime's watcher
/// unless the user names it. Its warnings repeat on every retry with the
/// API server's whole `Status` object; Sluicegate logs each failure streak
/// once itself, in one line.
fn log_directives(level: &str) -> String {
    if level.contains("kube_runtime") {
        level.to_owned()
    } else {
        format!("{level},kube_runtime::watcher=error")
    }
}

/// Makes mimalloc give back what this thread freed: retired pages, and
/// ranges free for longer than its purge delay.
fn collect_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time
    // from any thread: it walks the calling thread's own heap, then purges
    // the process's arenas under the allocator's own locks.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

async fn run(command: Command) -> anyhow::Result<()> {
    sluicegate::memory::spawn_collector();
    if let Command::Explain(args) = &command {
        return explain(args).await;
    }
    // Handlers first, so that a SIGTERM during startup is not lost.
    let signal = shutdown_signal()?;
    // Before any series is registered.
    if let Command::Standalone { gateway, .. }
    | Command::Controller { gateway, .. }
    | Command::Demo { gateway, .. } = &command
    {
        sluicegate::metrics::disable_labels(gateway.metrics_disabled_labels.clone());
        sluicegate::metrics::set_detail(gateway.metrics_detail);
    }
    match command {
        Command::Explain(_) => {}
        Command::Standalone { config, gateway } => {
            let sa = Standalone::start(gateway.config(), config).await?;
            signal.await;
            info!("shutting down: draining in-flight requests");
            sa.shutdown().await;
        }
        Command::Controller { kube, gateway } => {
            let client = kube_client(kube.kubeconfig.as_deref()).await?;
            let gateway = gateway.config();
            info!(
                workers = gateway.workers,
                "proxy workers (the cgroup CPU quota rounded up, or --workers)"
            );
            let config = kube.config(gateway, client.default_namespace())?;
            match &config.lease {
                Some(l) => {
                    info!(lease = %format!("{}/{}", l.namespace, l.name), identity = %l.identity, "leader election on")
                }
                None => info!("leader election off: this replica writes status"),
            }
            let controller = Controller::start(config, client).await?;
            info!("controller running; waiting for every watcher to sync");
            signal.await;
            info!("shutting down: releasing the lease, draining in-flight requests");
            controller.shutdown().await;
        }
        // Handled in main, before logging and the runtime start.
        Command::Check(_) => anyhow::bail!("check runs without the runtime"),
        Command::Demo { dir, gateway } => {
            let demo = Demo::start(gateway.config(), &dir).await?;
            println!("{}", demo.instructions());
            signal.await;
            demo.standalone.shutdown().await;
        }
    }
    Ok(())
}

/// Prints the explanation of a request.
async fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let req = args.request()?;
    let explanation = explain_command::run(&args.target(), &req).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", render_text(&explanation));
    }
    Ok(())
}

/// A client from `kubeconfig`, or else the in-cluster configuration, or
/// else $KUBECONFIG / ~/.kube/config.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster configuration and no kubeconfig")?,
    };
    kube::Client::try_from(sluicegate::source::kube::client_config(config))
        .context("creating the Kubernetes client")
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
