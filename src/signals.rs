//! Signal handling shared by `lockkeeper run` and `lockkeeper exec`.
//!
//! Both listen through [`Signals`], a set of Unix signals received one at a time:
//! - `run` uses [`first_signal`]: the first SIGTERM or SIGINT steps down (readiness off, drain,
//!   release), a second one exits at once with [`EXIT_INTERRUPTED`] without releasing;
//! - `exec` listens to [`Signals::forwarded`] and passes every signal on to its child (see
//!   [`crate::exec`]).

use std::future::Future;
use std::task::Poll;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// Exit code when a second signal cuts the shutdown short.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A set of Unix signals, received one at a time as [`Signal`] values. The handlers are
/// installed when the set is built and stay installed for the life of the process.
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// SIGTERM and SIGINT: the requests to stop.
    pub fn shutdown() -> std::io::Result<Self> {
        Self::new(&[
            (Signal::SIGTERM, SignalKind::terminate()),
            (Signal::SIGINT, SignalKind::interrupt()),
        ])
    }

    /// The signals `exec` forwards to its child: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and
    /// SIGUSR2.
    pub fn forwarded() -> std::io::Result<Self> {
        Self::new(&[
            (Signal::SIGTERM, SignalKind::terminate()),
            (Signal::SIGINT, SignalKind::interrupt()),
            (Signal::SIGHUP, SignalKind::hangup()),
            (Signal::SIGQUIT, SignalKind::quit()),
            (Signal::SIGUSR1, SignalKind::user_defined1()),
            (Signal::SIGUSR2, SignalKind::user_defined2()),
        ])
    }

    fn new(kinds: &[(Signal, SignalKind)]) -> std::io::Result<Self> {
        let streams = kinds
            .iter()
            .map(|&(sig, kind)| Ok((sig, signal(kind)?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { streams })
    }

    /// The next signal of the set; `None` if a handler stopped delivering (it does not in
    /// practice).
    pub async fn recv(&mut self) -> Option<Signal> {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if let Poll::Ready(got) = stream.poll_recv(cx) {
                    return Poll::Ready(got.map(|()| *sig));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// For `run`: a future that resolves on the first SIGTERM or SIGINT; a second one exits the
/// process at once with [`EXIT_INTERRUPTED`]. If the handlers cannot be installed, the error is
/// logged and the future resolves at once (the sidecar steps down rather than run unstoppable).
pub fn first_signal() -> impl Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut signals = match Signals::shutdown() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM/SIGINT handlers");
                return;
            }
        };
        let first = signals.recv().await;
        tracing::info!(
            signal = first.map_or("none", Signal::as_str),
            "shutting down: stepping down and releasing"
        );
        let _ = tx.send(());
        signals.recv().await;
        tracing::warn!("second signal: exiting at once without releasing");
        std::process::exit(EXIT_INTERRUPTED);
    });
    async move {
        let _ = rx.await;
    }
}
