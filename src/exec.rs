//! `lockkeeper exec -- COMMAND`: the child runs only while the lock is held.
//!
//! The child starts once the lock is held, with `LOCKKEEPER_FENCING_TOKEN`, `LOCKKEEPER_LOCK_KEY`
//! and `LOCKKEEPER_LEASE_ID` in its environment. It never runs past the lock: SIGTERM at
//! `deadline − kill_after` unless a renewal moves the deadline first, SIGKILL at the deadline at
//! the latest, and SIGKILL at once when holding ends (key deleted, lease gone). Signals sent to
//! lockkeeper are forwarded to the child. When the child exits,
//! the lock is released and lockkeeper exits with the child's code (128 + signal if it was
//! killed by a signal).

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use lockkeeper::clock;

use crate::config::Config;
use crate::sidecar;
use crate::signals::Signals;
use crate::status::{AgentState, Status};

/// Exit code when the command cannot be started.
pub const EXIT_CANNOT_RUN: i32 = 127;

/// `lockkeeper exec`: returns the exit code to exit with.
pub async fn run(cfg: Config, command: Vec<OsString>) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("lockkeeper: exec needs a command after --");
        return 2;
    };
    let mut signals = match Signals::forwarded() {
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
    supervise(&mut child, pid, status, signals, cfg.kill_after).await
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
    // Nothing runs past the lock, not even when lockkeeper itself is SIGKILLed or OOM-killed and
    // no code of ours gets to stop the child: the kernel SIGKILLs it when its parent goes. The
    // signal follows the thread that spawned the child, so this must run on a thread that lives
    // as long as the process (the runtime's main or worker threads, never a blocking-pool one).
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
    // (prctl, getppid) and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before the request above took effect: then exec nothing.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    tracing::info!(
        pid = child.id(),
        token = held.fencing_token,
        "child started while holding the lock"
    );
    Ok(child)
}

/// Waits for the child, and makes sure it never runs past the lock: SIGTERM at
/// `deadline − kill_after`, SIGKILL at the deadline at the latest, SIGKILL at once when holding
/// ends. Every renewal moves the deadline (the status notifies on each extension), and with it
/// both times. A SIGTERM/SIGINT sent to lockkeeper is forwarded and followed by SIGKILL after
/// `kill_after` (or at the deadline, whichever comes first). Returns the child's exit code.
async fn supervise(
    child: &mut Child,
    pid: Option<Pid>,
    status: &mut watch::Receiver<Status>,
    signals: &mut Signals,
    kill_after: Duration,
) -> i32 {
    let mut termed = false;
    let mut killed = false;
    let mut agent_gone = false;
    let mut stop_by: Option<Instant> = None;
    loop {
        // The end of safe holding: the deadline while held, now once holding has ended.
        let end = {
            let st = status.borrow();
            match (st.state, st.deadline) {
                (AgentState::Held, Some(d)) if !agent_gone => d,
                _ => clock::now(),
            }
        };
        let kill_at = stop_by.map_or(end, |s| s.min(end));
        let term_at = end.checked_sub(kill_after).unwrap_or(end);
        if !killed && kill_at <= clock::now() {
            let why = status.borrow().last_loss.clone();
            tracing::warn!(
                reason = why.as_deref().unwrap_or("deadline"),
                "lock no longer safely held: killing the child"
            );
            send(pid, Signal::SIGKILL);
            killed = true;
        }
        tokio::select! {
            exit = child.wait() => return exit_code(exit),
            _ = clock::sleep_until(term_at), if !termed && !killed => {
                tracing::warn!(deadline_in_ms = end.saturating_duration_since(clock::now()).as_millis() as u64, "lock not renewed in time: stopping the child");
                send(pid, Signal::SIGTERM);
                termed = true;
            }
            _ = clock::sleep_until(kill_at), if !killed => {}
            r = status.changed(), if !agent_gone => agent_gone = r.is_err(),
            sig = signals.recv() => if let Some(sig) = sig {
                tracing::info!(signal = ?sig, "forwarding signal to the child");
                send(pid, sig);
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT) && stop_by.is_none() {
                    stop_by = Some(clock::now() + kill_after);
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
