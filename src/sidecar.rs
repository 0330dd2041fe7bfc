//! Wiring for `lockkeeper run`: agent + HTTP server + metrics + optional Kubernetes reporter,
//! with signal handling (first SIGTERM/SIGINT steps down and releases, a second exits at once;
//! see [`crate::signals`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::{Agent, AgentConfig};
use crate::config::{Config, KubeMode};
use crate::http;
use crate::kubernetes::{self, KubeReporter, KubeSettings};
use crate::metrics::Metrics;
use crate::signals;
use crate::status::Status;

pub use crate::signals::EXIT_INTERRUPTED;
/// Exit code when the sidecar cannot start (e.g. the listen address is taken).
pub const EXIT_STARTUP: i32 = 1;

/// The running parts shared by `run` and `exec`.
pub struct Parts {
    /// The agent, not yet running.
    pub agent: Agent,
    /// Its status channel.
    pub status: watch::Receiver<Status>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Liveness flag served at `/livez`.
    pub live: Arc<AtomicBool>,
}

/// Builds the agent and its observers from a validated configuration.
pub fn build(cfg: &Config) -> Parts {
    let metrics = Arc::new(Metrics::new(&cfg.lock_name, env!("CARGO_PKG_VERSION")));
    let agent = Agent::new(agent_config(cfg), metrics.clone());
    let status = agent.subscribe();
    Parts {
        agent,
        status,
        metrics,
        live: Arc::new(AtomicBool::new(true)),
    }
}

/// The agent's settings from the sidecar configuration.
pub fn agent_config(cfg: &Config) -> AgentConfig {
    AgentConfig {
        lock: cfg.lock_name.clone(),
        lock_options: cfg.lock_options(),
        etcd: cfg.etcd_options(),
        request_timeout: cfg.request_timeout(),
        drain_delay: cfg.drain_delay,
        shutdown_timeout: cfg.shutdown_timeout,
        max_backoff: Duration::from_secs(5).min(cfg.ttl),
    }
}

/// Binds and starts the admin server if configured; returns its task and a shutdown trigger.
pub async fn start_http(
    cfg: &Config,
    parts: &Parts,
) -> std::io::Result<Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>> {
    let Some(addr) = cfg.listen else {
        return Ok(None);
    };
    let bound = http::bind(
        addr,
        http::AdminState {
            status: parts.status.clone(),
            metrics: parts.metrics.clone(),
            live: parts.live.clone(),
        },
    )
    .await?;
    tracing::info!(addr = %bound.local_addr(), "admin HTTP server listening");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Ok(Some((task, tx)))
}

/// Starts the Kubernetes reporter when enabled (or auto-detected); never fails the sidecar.
pub async fn start_kube(cfg: &Config, parts: &Parts) -> Option<JoinHandle<()>> {
    let enabled = match cfg.kube.mode {
        KubeMode::Off => false,
        KubeMode::On => true,
        KubeMode::Auto => kubernetes::auto_detect(),
    };
    if !enabled {
        return None;
    }
    let (Some(pod), Some(ns)) = (&cfg.kube.pod_name, &cfg.kube.namespace) else {
        tracing::warn!("Kubernetes integration needs POD_NAME and POD_NAMESPACE; it stays off");
        return None;
    };
    let client = match kubernetes::client_from_env().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a Kubernetes client; pod condition, label and events stay off");
            return None;
        }
    };
    let settings = KubeSettings::new(pod.clone(), ns.clone())
        .with_condition_type(cfg.kube.condition_type.clone())
        .with_label(cfg.kube.label.clone())
        .with_events(cfg.kube.events);
    let reporter = KubeReporter::new(client, settings, parts.metrics.registry())
        .with_request_timeout(kubernetes::request_timeout_for(cfg.ttl));
    Some(reporter.spawn(parts.status.clone()))
}

/// `lockkeeper run`: hold the configured lock until a signal; returns the exit code.
pub async fn run(cfg: Config) -> i32 {
    if let Some(path) = &cfg.history_file {
        if let Err(e) = crate::history::install(path) {
            eprintln!(
                "lockkeeper: cannot open the history file {}: {e}",
                path.display()
            );
            return EXIT_STARTUP;
        }
    }
    let parts = build(&cfg);
    let http = match start_http(&cfg, &parts).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "lockkeeper: cannot listen on {}: {e}",
                cfg.listen.map(|a| a.to_string()).unwrap_or_default()
            );
            return EXIT_STARTUP;
        }
    };
    let kube = start_kube(&cfg, &parts).await;
    let shutdown = signals::first_signal();
    let live = parts.live.clone();
    let agent = tokio::spawn(parts.agent.run(shutdown));
    if let Err(e) = agent.await {
        live.store(false, Ordering::SeqCst);
        tracing::error!(error = %e, "agent task failed");
    }
    finish(kube, http, cfg.shutdown_timeout).await;
    0
}

/// Lets the Kubernetes reporter publish the final state, then stops the HTTP server.
pub async fn finish(
    kube: Option<JoinHandle<()>>,
    http: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    bound: Duration,
) {
    if let Some(k) = kube {
        if tokio::time::timeout(bound, k).await.is_err() {
            tracing::warn!("Kubernetes reporter did not finish within the shutdown timeout");
        }
    }
    if let Some((task, stop)) = http {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
}
