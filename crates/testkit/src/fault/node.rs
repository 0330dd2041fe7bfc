//! One sidecar slot of the fault world: its identity, address and flags stay, its process comes
//! and goes (each start is a new run, with its own log and history file).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::scenario::TTL;
use crate::{Launch, Sidecar};

/// The files of one process run of a node.
pub(super) struct Run {
    pub(super) history: PathBuf,
    pub(super) log: PathBuf,
    pub(super) rate: f64,
}

pub(super) struct Node {
    pub(super) identity: String,
    pub(super) port: u16,
    pub(super) endpoints: Vec<String>,
    pub(super) margin: Duration,
    pub(super) lock_delay: Option<Duration>,
    pub(super) rate: f64,
    pub(super) lock: String,
    pub(super) dir: PathBuf,
    pub(super) runs: Vec<Run>,
    /// The current run's process.
    pub(super) sidecar: Option<Sidecar>,
    pub(super) stopped: bool,
}

impl Node {
    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(super) fn spawn(&mut self) {
        assert!(self.sidecar.is_none(), "{} already running", self.identity);
        let run = self.runs.len();
        let history = self
            .dir
            .join(format!("{}-{run}.history.jsonl", self.identity));
        let log = self.dir.join(format!("{}-{run}.log", self.identity));
        let ttl = format!("{}s", TTL.as_secs());
        let lock_delay = self
            .lock_delay
            .map(|d| ["--lock-delay".to_string(), format!("{}ms", d.as_millis())]);
        // The run is recorded before the process serves HTTP: its files are evidence either way.
        self.runs.push(Run {
            history: history.clone(),
            log: log.clone(),
            rate: self.rate,
        });
        let sidecar = Launch::new(&self.endpoints, &self.lock, &self.identity, &ttl)
            .args(["--renew-interval", "1s"])
            .args(["--safety-margin", &format!("{}ms", self.margin.as_millis())])
            .args(lock_delay.into_iter().flatten())
            .args(["--kube", "off"])
            .args(["--shutdown-timeout", "5s", "--etcd-request-timeout", "2s"])
            .history_file(&history)
            .clock_rate(self.rate)
            .log_level("info")
            .port(self.port)
            .log_file(&log)
            .http_wait(Duration::from_secs(15))
            .start();
        self.sidecar = Some(sidecar);
        self.stopped = false;
    }

    pub(super) fn running(&self) -> bool {
        self.sidecar.is_some()
    }

    pub(super) fn signal(&self, sig: Signal) {
        if let Some(s) = &self.sidecar {
            s.send(sig);
        }
    }

    pub(super) fn kill(&mut self) {
        self.sidecar = None; // SIGKILLed and reaped on drop
        self.stopped = false;
    }

    pub(super) fn pause(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.stopped = true;
    }

    pub(super) fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
        self.stopped = false;
    }

    /// SIGTERM and wait; `Err` if it does not exit 0 within 10 s.
    pub(super) fn term(&mut self) -> Result<(), String> {
        if self.stopped {
            self.resume();
        }
        self.signal(Signal::SIGTERM);
        let Some(mut s) = self.sidecar.take() else {
            return Ok(());
        };
        match s.wait_exit(Duration::from_secs(10)) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("exited with {status} after SIGTERM")),
            None => Err("still running 10 s after SIGTERM".into()), // killed on drop
        }
    }

    /// `Err` if the process exited on its own.
    pub(super) fn check_alive(&mut self) -> Result<(), String> {
        if let Some(status) = self.sidecar.as_mut().and_then(Sidecar::exit_status) {
            self.sidecar = None;
            return Err(format!("exited on its own with {status}"));
        }
        Ok(())
    }

    pub(super) fn ready(&self) -> bool {
        !self.stopped
            && self
                .sidecar
                .as_ref()
                .is_some_and(|s| s.ready_within(Duration::from_millis(300)) == Some(true))
    }

    pub(super) fn status(&self) -> Option<serde_json::Value> {
        if self.stopped {
            return None;
        }
        self.sidecar
            .as_ref()?
            .try_status(Duration::from_millis(500))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped {
            self.resume();
        }
        self.kill();
    }
}
