//! `lockkeeper exec -- COMMAND`: the child runs only while the lock is held.
//!
//! The child starts once the lock is held, with `LOCKKEEPER_FENCING_TOKEN`, `LOCKKEEPER_LOCK_KEY`
//! and `LOCKKEEPER_LEASE_ID` in its environment. If holding ends — or the local deadline comes
//! within one safety margin without a renewal — the child gets SIGTERM, then SIGKILL after
//! `kill_after`. Signals sent to lockkeeper are forwarded to the child. When the child exits,
//! the lock is released and lockkeeper exits with the child's code (128 + signal if it was
//! killed by a signal).

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::config::Config;
use crate::sidecar;
use crate::status::{AgentState, Status};

/// Exit code when the command cannot be started.
pub const EXIT_CANNOT_RUN: i32 = 127;

/// `lockkeeper exec`: returns the exit code to exit with.
pub async fn run(cfg: Config, command: Vec<OsString>) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("lockkeeper: exec needs a command after --");
        return 2;
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lockkeeper: cannot install signal handlers: {e}");
            return sidecar::EXIT_STARTUP;
        }
    };
    let parts = sidecar::build(&cfg);
    let http = match sidecar::start_http(&cfg, &parts).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lockkeeper: cannot listen: {e}");
            return sidecar::EXIT_STARTUP;
        }
    };
    let kube = sidecar::start_kube(&cfg, &parts).await;
    let mut status = parts.status.clone();
    let (stop_agent, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(parts.agent.run(async move {
        let _ = stop_rx.await;
    }));

    let code = while_held(program, args, &mut status, &mut signals, &cfg).await;

    // Whatever ended it: release, let the observers publish it, exit with the code.
    let _ = stop_agent.send(());
    let _ = agent.await;
    sidecar::finish(kube, http, cfg.shutdown_timeout).await;
    code
}

/// Waits for the lock (or a signal), then runs the child while held; returns the exit code.
async fn while_held(
    program: &OsString,
    args: &[OsString],
    status: &mut watch::Receiver<Status>,
    signals: &mut Signals,
    cfg: &Config,
) -> i32 {
    let held = loop {
        if status.borrow().is_ready() {
            break status.borrow().clone();
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { return 1 },
            sig = signals.recv() => {
                tracing::info!(signal = ?sig, "signal before the lock was acquired; stopping");
                return 0;
            }
        }
    };
    let mut child = match spawn_child(program, args, &held) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockkeeper: cannot run {}: {e}", program.to_string_lossy());
            return EXIT_CANNOT_RUN;
        }
    };
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    supervise(
        &mut child,
        pid,
        status,
        signals,
        cfg.safety_margin,
        cfg.kill_after,
    )
    .await
}

fn spawn_child(program: &OsString, args: &[OsString], held: &Status) -> std::io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(
            "LOCKKEEPER_FENCING_TOKEN",
            held.fencing_token.unwrap_or_default().to_string(),
        )
        .env("LOCKKEEPER_LOCK_KEY", held.key.clone().unwrap_or_default())
        .env(
            "LOCKKEEPER_LEASE_ID",
            held.lease_id.clone().unwrap_or_default(),
        )
        .env("LOCKKEEPER_LOCK", &held.lock)
        .env("LOCKKEEPER_IDENTITY", &held.identity)
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    tracing::info!(
        pid = child.id(),
        token = held.fencing_token,
        "child started while holding the lock"
    );
    Ok(child)
}

/// Waits for the child; stops it when holding ends or is about to. Returns its exit code.
async fn supervise(
    child: &mut Child,
    pid: Option<Pid>,
    status: &mut watch::Receiver<Status>,
    signals: &mut Signals,
    lead: Duration,
    kill_after: Duration,
) -> i32 {
    let far = || Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut kill_at: Option<Instant> = None;
    loop {
        // SIGTERM one safety margin before the local deadline, unless renewed before then.
        let term_at = {
            let st = status.borrow();
            match (st.state, st.deadline) {
                (AgentState::Held, Some(d)) => d.checked_sub(lead).unwrap_or_else(Instant::now),
                _ => Instant::now(),
            }
        };
        tokio::select! {
            exit = child.wait() => return exit_code(exit),
            _ = sleep_until(term_at), if kill_at.is_none() => {
                let why = status.borrow().last_loss.clone().unwrap_or_else(|| "deadline near".into());
                tracing::warn!(reason = %why, "lock no longer safely held: stopping the child");
                send(pid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + kill_after);
            }
            _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                tracing::warn!("child still running after --kill-after: SIGKILL");
                send(pid, Signal::SIGKILL);
                kill_at = Some(far());
            }
            r = status.changed() => if r.is_err() && kill_at.is_none() {
                send(pid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + kill_after);
            },
            sig = signals.recv() => if let Some(sig) = sig {
                tracing::info!(signal = ?sig, "forwarding signal to the child");
                send(pid, sig);
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT) && kill_at.is_none() {
                    kill_at = Some(Instant::now() + kill_after);
                }
            },
        }
    }
}

fn send(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        if let Err(e) = kill(pid, sig) {
            tracing::debug!(error = %e, ?sig, "signal to child failed (already gone?)");
        }
    }
}

fn exit_code(exit: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match exit {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            tracing::error!(error = %e, "waiting for the child failed");
            1
        }
    }
}

/// The signals lockkeeper forwards to its child.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn recv(&mut self) -> Option<Signal> {
        tokio::select! {
            s = self.term.recv() => s.map(|_| Signal::SIGTERM),
            s = self.int.recv() => s.map(|_| Signal::SIGINT),
            s = self.hup.recv() => s.map(|_| Signal::SIGHUP),
            s = self.quit.recv() => s.map(|_| Signal::SIGQUIT),
            s = self.usr1.recv() => s.map(|_| Signal::SIGUSR1),
            s = self.usr2.recv() => s.map(|_| Signal::SIGUSR2),
        }
    }
}
