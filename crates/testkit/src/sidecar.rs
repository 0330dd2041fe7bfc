//! The real `lockkeeper` binary as a child process (`lockkeeper run`), with its HTTP endpoints
//! probed over TCP: the one way the test kit starts, signals and stops a sidecar, whether a test
//! starts one by hand or the fault world starts (and restarts) its nodes.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::exec::{lockkeeper_command, wait_bounded};
use crate::http::http_get;
use crate::process::send_signal;

/// Path of the agent binary, `lockkeeper`, for this test run: `$LOCKKEEPER_AGENT_BIN` if set,
/// else the one Cargo built beside the running test (a test executable lives in
/// `target/<profile>/deps/`, the binary in `target/<profile>/`). Cargo builds it before the agent
/// package's integration tests; a test elsewhere needs `cargo build --bin lockkeeper` first.
/// Panics, saying so, when it is not there.
pub fn lockkeeper_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LOCKKEEPER_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(|d| d.parent())
        .unwrap_or_else(|| panic!("{} is not in a Cargo target dir's deps/", exe.display()));
    let bin = profile_dir.join(format!("lockkeeper{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --bin lockkeeper` (or set LOCKKEEPER_AGENT_BIN)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The Debian faketime preload library.
pub fn libfaketime() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("libfaketime not found: install it (`apt-get install faketime`, or run scripts/install-deps.sh)")
        })
}

/// How to start one `lockkeeper run`: the flags every sidecar gets (endpoints, lock, identity,
/// TTL, listen address, JSON logs at a log level), then the caller's flags and environment. The
/// environment is clean: inherited `LOCKKEEPER_*`, Kubernetes and `RUST_LOG` variables are
/// removed, so the test alone decides the configuration.
#[derive(Clone, Debug)]
pub struct Launch {
    endpoints: Vec<String>,
    lock: String,
    identity: String,
    ttl: String,
    log_level: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    port: Option<u16>,
    log_file: Option<PathBuf>,
    http_wait: Duration,
}

impl Launch {
    /// `lockkeeper run` for `lock` against `endpoints` as `identity` with `--ttl ttl`.
    pub fn new(endpoints: &[String], lock: &str, identity: &str, ttl: &str) -> Launch {
        Launch {
            endpoints: endpoints.to_vec(),
            lock: lock.to_owned(),
            identity: identity.to_owned(),
            ttl: ttl.to_owned(),
            log_level: "info,lockkeeper=debug".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            port: None,
            log_file: None,
            http_wait: Duration::from_secs(10),
        }
    }

    /// More flags, after the common ones.
    pub fn args<I>(mut self, args: I) -> Launch
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--history-file PATH`: the sidecar records its own readiness there.
    pub fn history_file(self, path: &Path) -> Launch {
        self.args([OsStr::new("--history-file"), path.as_os_str()])
    }

    /// One more environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The process's clocks, the monotonic one included, run at `rate` under `faketime`
    /// (nothing is preloaded at 1.0).
    pub fn clock_rate(self, rate: f64) -> Launch {
        if (rate - 1.0).abs() <= 1e-9 {
            return self;
        }
        self.env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", format!("+0 x{rate}"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "0")
    }

    /// `--log-level` (default `info,lockkeeper=debug`).
    pub fn log_level(mut self, level: &str) -> Launch {
        self.log_level = level.to_owned();
        self
    }

    /// Serve HTTP on this port of 127.0.0.1 (a restart gives the same again to keep its
    /// address); default a free one.
    pub fn port(mut self, port: u16) -> Launch {
        self.port = Some(port);
        self
    }

    /// Its log (stderr) goes to this file; default a file in a temporary directory the
    /// [`Sidecar`] owns and removes.
    pub fn log_file(mut self, path: &Path) -> Launch {
        self.log_file = Some(path.to_owned());
        self
    }

    /// How long it may take to serve HTTP before `start` panics (default 10 s).
    pub fn http_wait(mut self, limit: Duration) -> Launch {
        self.http_wait = limit;
        self
    }

    /// Spawns it and waits until it serves HTTP (`/livez`).
    pub fn start(self) -> Sidecar {
        let (dir, log) = match &self.log_file {
            Some(log) => (None, log.clone()),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let log = dir.path().join("sidecar.log");
                (Some(dir), log)
            }
        };
        let port = self.port.unwrap_or_else(free_port);
        let child = lockkeeper_command()
            .args(["run", "--etcd-endpoints", &self.endpoints.join(",")])
            .args(["--lock", &self.lock, "--identity", &self.identity])
            .args(["--ttl", &self.ttl])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json", "--log-level", &self.log_level])
            .args(&self.args)
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("sidecar log file"))
            .spawn()
            .expect("spawn lockkeeper");
        let s = Sidecar {
            identity: self.identity,
            port,
            child: Some(child),
            log,
            _dir: dir,
        };
        s.wait_http(self.http_wait);
        s
    }
}

/// One running `lockkeeper run` process; killed on drop.
pub struct Sidecar {
    /// Its identity (also the value of its key).
    pub identity: String,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// The directory of its log, unless the caller chose where the log goes.
    _dir: Option<tempfile::TempDir>,
}

impl Sidecar {
    /// Starts `lockkeeper run` for `lock` against `endpoints` with `ttl` and extra flags.
    pub fn start(
        endpoints: &[String],
        lock: &str,
        identity: &str,
        ttl: &str,
        extra: &[&str],
    ) -> Sidecar {
        Self::start_with_env(endpoints, lock, identity, ttl, extra, &[])
    }

    /// The same, with extra environment variables.
    pub fn start_with_env(
        endpoints: &[String],
        lock: &str,
        identity: &str,
        ttl: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sidecar {
        env.iter()
            .fold(
                Launch::new(endpoints, lock, identity, ttl).args(extra),
                |launch, (key, value)| launch.env(key, value),
            )
            .start()
    }

    /// `host:port` of its HTTP server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_http(&self, limit: Duration) {
        self.wait_until(limit, Duration::from_millis(20), "never served HTTP", |s| {
            http_get(&s.addr(), "/livez", Duration::from_millis(500)).is_ok()
        });
    }

    /// Polls `done` every `step` until it holds; after `limit` panics, saying the sidecar `what`
    /// and showing its log.
    fn wait_until(
        &self,
        limit: Duration,
        step: Duration,
        what: &str,
        done: impl Fn(&Sidecar) -> bool,
    ) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < limit,
                "sidecar {} {what}; log:\n{}",
                self.identity,
                self.log()
            );
            std::thread::sleep(step);
        }
    }

    /// `Some(true)` on `/readyz` 200, `Some(false)` on 503, `None` when it does not answer.
    pub fn ready(&self) -> Option<bool> {
        self.ready_within(Duration::from_millis(500))
    }

    /// [`Sidecar::ready`] with its own bound on the request.
    pub fn ready_within(&self, timeout: Duration) -> Option<bool> {
        http_get(&self.addr(), "/readyz", timeout)
            .ok()
            .map(|r| r.status == 200)
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let r = http_get(&self.addr(), "/status", Duration::from_secs(2)).expect("GET /status");
        serde_json::from_str(&r.body).expect("status is JSON")
    }

    /// The `/status` document, `None` when it does not answer within `timeout`.
    pub fn try_status(&self, timeout: Duration) -> Option<serde_json::Value> {
        let r = http_get(&self.addr(), "/status", timeout).ok()?;
        serde_json::from_str(&r.body).ok()
    }

    /// GET a path, returning (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = http_get(&self.addr(), path, Duration::from_secs(2)).expect("GET");
        (r.status, r.body)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let what = format!("not ready within {limit:?}");
        self.wait_until(limit, Duration::from_millis(10), &what, |s| {
            s.ready() == Some(true)
        });
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`), asserting that it was sent.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let signal: Signal = format!("SIG{sig}")
                .parse()
                .unwrap_or_else(|_| panic!("no signal {sig}"));
            assert!(
                send_signal(c.id(), signal).is_ok(),
                "kill -{sig} {}",
                c.id()
            );
        }
    }

    /// Sends `sig`; false when there is no process to send it to.
    pub fn send(&self, sig: Signal) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| send_signal(c.id(), sig).is_ok())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_bounded(self.child.as_mut()?, limit)
    }

    /// How it exited, if it has (without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Sidecar {
    /// Checks for `period` that `/readyz` answers 503, `/livez` 200 and the process runs.
    pub fn assert_unready_but_live(&mut self, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            assert!(self.is_running(), "sidecar exited:\n{}", self.log());
            assert_eq!(self.get("/readyz").0, 503, "{}", self.log());
            assert_eq!(self.get("/livez").0, 200, "{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn sigterm_and_wait(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        match self.wait_exit(limit) {
            Some(status) => status,
            None => panic!(
                "sidecar still running {limit:?} after SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = send_signal(c.id(), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
