//! The real `lockkeeper` binary as a child process, with its HTTP endpoints probed over TCP.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::http_get;

/// Path of the binary Cargo built for this test run.
pub fn lockkeeper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockkeeper"))
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One running `lockkeeper run` process; killed on drop.
pub struct Sidecar {
    /// Its identity (also the value of its key).
    pub identity: String,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
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

    /// The same, with extra environment variables (the inherited `LOCKKEEPER_*` ones are
    /// removed so the test alone decides the configuration).
    pub fn start_with_env(
        endpoints: &[String],
        lock: &str,
        identity: &str,
        ttl: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sidecar.log");
        let port = free_port();
        let mut cmd = Command::new(lockkeeper_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("LOCKKEEPER_")) {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .args([
                "run",
                "--etcd-endpoints",
                &endpoints.join(","),
                "--lock",
                lock,
            ])
            .args(["--identity", identity, "--ttl", ttl])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            .args(["--log-level", "info,lockkeeper=debug"])
            .args(extra)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log")).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn lockkeeper");
        let s = Sidecar {
            identity: identity.to_owned(),
            port,
            child: Some(child),
            log,
            _dir: dir,
        };
        s.wait_http(Duration::from_secs(10));
        s
    }

    /// `host:port` of its HTTP server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_http(&self, limit: Duration) {
        let started = Instant::now();
        while http_get(&self.addr(), "/livez", Duration::from_millis(500)).is_err() {
            assert!(
                started.elapsed() < limit,
                "sidecar {} never served HTTP; log:\n{}",
                self.identity,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `Some(true)` on `/readyz` 200, `Some(false)` on 503, `None` when it does not answer.
    pub fn ready(&self) -> Option<bool> {
        http_get(&self.addr(), "/readyz", Duration::from_millis(500))
            .ok()
            .map(|r| r.status == 200)
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let r = http_get(&self.addr(), "/status", Duration::from_secs(2)).expect("GET /status");
        serde_json::from_str(&r.body).expect("status is JSON")
    }

    /// GET a path, returning (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = http_get(&self.addr(), path, Duration::from_secs(2)).expect("GET");
        (r.status, r.body)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while self.ready() != Some(true) {
            assert!(
                started.elapsed() < limit,
                "sidecar {} not ready within {limit:?}; log:\n{}",
                self.identity,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill -{sig} {}", c.id());
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
