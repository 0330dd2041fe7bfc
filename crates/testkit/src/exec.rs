//! `lockkeeper exec` (and short `lockkeeper` invocations) as child processes, plus the process
//! and clock utilities their tests need: bounded waits, "was it refused?", timestamp files that
//! shell children write with `date +%s%N`, and liveness of a grandchild by pid.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::process::{process_state, remove_env_with_prefix, send_signal};
use crate::sidecar::lockkeeper_bin;

/// The `lockkeeper` binary with a clean environment: inherited `LOCKKEEPER_*` variables and the
/// Kubernetes ones are removed, so the test alone decides the configuration.
pub fn lockkeeper_command() -> Command {
    let mut cmd = Command::new(lockkeeper_bin());
    remove_env_with_prefix(&mut cmd, "LOCKKEEPER_");
    cmd.env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST");
    cmd
}

/// One running `lockkeeper exec … -- sh -c SCRIPT`, its stderr in a file. Killed on drop (the
/// child's own children are the test's business, see [`kill_pid`]).
pub struct Exec {
    child: Option<Child>,
    log: PathBuf,
    /// When it was spawned (the test process's monotonic clock).
    pub started: Instant,
}

impl Exec {
    /// Starts `lockkeeper exec` on `lock` against `endpoints` with `--ttl ttl`, extra flags, and
    /// `sh -c script` as the child; stderr (JSON logs, `lockkeeper=debug`) goes to `log`.
    pub fn start(
        endpoints: &[String],
        lock: &str,
        ttl: &str,
        extra: &[&str],
        script: &str,
        log: &Path,
    ) -> Exec {
        let started = Instant::now();
        let child = lockkeeper_command()
            .args(["exec", "--etcd-endpoints", &endpoints.join(",")])
            .args(["--lock", lock, "--ttl", ttl, "--identity", "exec"])
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,lockkeeper=debug",
            ])
            .args(extra)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).expect("exec log file"))
            .spawn()
            .expect("spawn lockkeeper exec");
        Exec {
            child: Some(child),
            log: log.to_owned(),
            started,
        }
    }

    /// Waits up to `limit` for it to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        wait_bounded(child, limit)
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The last `lines` lines it logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_lines(&fs::read_to_string(&self.log).unwrap_or_default(), lines)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `child` until it exits or `limit` passes.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
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

/// What a `lockkeeper` invocation did within its time bound.
#[derive(Debug)]
pub enum Outcome {
    /// It exited with this code (None: killed by a signal) and stderr.
    Exited { code: Option<i32>, stderr: String },
    /// It was still running at the bound (then killed); what it had written to stderr.
    StillRunning { after: Duration, stderr: String },
}

/// Runs `lockkeeper ARGS` with extra environment variables for at most `limit`; a process still
/// running then is killed. For "is this configuration refused?" checks: a refused one exits 2
/// at once, an accepted one keeps trying to reach etcd.
pub fn run_bounded<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)], limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = dir.path().join("stderr");
    let mut child = lockkeeper_command()
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn lockkeeper");
    let status = wait_bounded(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    match status {
        Some(s) => Outcome::Exited {
            code: s.code(),
            stderr,
        },
        None => Outcome::StillRunning {
            after: limit,
            stderr,
        },
    }
}

/// Nanoseconds since the epoch on the wall clock: the clock of `date +%s%N` in a child.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// The `date +%s%N` stamps in a file, one per line, in file order; a partial last line (being
/// written right now) is ignored.
pub fn read_stamps(path: &Path) -> Vec<i128> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits up to `limit` for the first stamp in `path`.
pub fn wait_first_stamp(path: &Path, limit: Duration) -> Option<i128> {
    let started = Instant::now();
    loop {
        if let Some(first) = read_stamps(path).first() {
            return Some(*first);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pid written by a child (`echo $$ > FILE`), once it is there.
pub fn wait_pid_file(path: &Path, limit: Duration) -> Option<u32> {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while `pid` exists and is not a zombie (a killed child not yet reaped is gone).
pub fn process_alive(pid: u32) -> bool {
    !matches!(process_state(pid), None | Some('Z') | Some('X'))
}

/// Waits up to `limit` until `pid` is gone; returns whether it is.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while process_alive(pid) {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// SIGKILLs `pid` if it still runs: cleanup for grandchildren that outlived their `exec`.
pub fn kill_pid(pid: u32) {
    if pid == 0 || !process_alive(pid) {
        return;
    }
    let _ = send_signal(pid, Signal::SIGKILL);
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
