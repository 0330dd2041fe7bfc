//! Child processes: `lockkeeper run` / `lockkeeper exec` (release build), `etcdctl lock`, the
//! python-etcd3 driver, and the tiny "helper" command that `etcdctl lock` and `lockkeeper exec`
//! run while they hold the lock. Also the /proc readers of the footprint phase.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use crate::http::BoxError;

/// Everything the phases need to start processes.
pub struct Env {
    pub endpoints: Vec<String>,
    pub lockkeeper: PathBuf,
    pub etcdctl: PathBuf,
    pub python: PathBuf,
    pub pylock: PathBuf,
    pub work: PathBuf,
    pub hub: HelperHub,
    seq: std::sync::atomic::AtomicU64,
}

impl Env {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoints: Vec<String>,
        lockkeeper: PathBuf,
        etcdctl: PathBuf,
        python: PathBuf,
        pylock: PathBuf,
        work: PathBuf,
        hub: HelperHub,
    ) -> Env {
        Env {
            endpoints,
            lockkeeper,
            etcdctl,
            python,
            pylock,
            work,
            hub,
            seq: Default::default(),
        }
    }

    /// A name unique within this run (lock names, identities, log files).
    pub fn unique(&self, what: &str) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{what}-{n}")
    }

    fn log_file(&self, name: &str) -> std::io::Result<std::fs::File> {
        std::fs::File::create(self.work.join(format!("{name}.log")))
    }

    /// `etcdctl`'s `--endpoints` / lockkeeper's `--etcd-endpoints` value.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// `host:port` of member `i` (python-etcd3 talks to one member).
    pub fn member(&self, i: usize) -> (String, u16) {
        let a = crate::http::authority(&self.endpoints[i % self.endpoints.len()]);
        let (h, p) = a.rsplit_once(':').expect("host:port");
        (h.to_owned(), p.parse().expect("port"))
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

// === The helper command ===

/// `lockbench helper SOCKET ID`: connect to the bench, say who we are, then block until the
/// bench writes a byte or goes away, and exit. Plain std, no runtime, to start fast.
pub fn helper_main(args: &[String]) -> ! {
    use std::io::{Read, Write};
    let (Some(sock), Some(id)) = (args.first(), args.get(1)) else {
        eprintln!("usage: lockbench helper SOCKET ID");
        std::process::exit(2);
    };
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        std::process::exit(3);
    };
    let _ = s.write_all(format!("{id}\n").as_bytes());
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
    std::process::exit(0);
}

/// One helper that started (its command is running: the lock is held) and the instant its
/// hello arrived.
pub struct Arrival {
    pub at: Instant,
    conn: UnixStream,
}

impl Arrival {
    /// Lets the helper exit (its command ends, so its lock holder releases).
    pub async fn finish(mut self) {
        let _ = self.conn.write_all(b"x").await;
        let _ = self.conn.shutdown().await;
    }
}

/// The bench's end of the helper socket: helpers announce themselves by id.
pub struct HelperHub {
    pub path: PathBuf,
    pub exe: PathBuf,
    expected: Arc<Mutex<HashMap<String, oneshot::Sender<Arrival>>>>,
}

impl HelperHub {
    pub fn bind(path: &Path) -> std::io::Result<HelperHub> {
        let listener = UnixListener::bind(path)?;
        let expected: Arc<Mutex<HashMap<String, oneshot::Sender<Arrival>>>> = Default::default();
        let map = expected.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let map = map.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(conn);
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let at = Instant::now();
                    let id = line.trim().to_owned();
                    let tx = map.lock().expect("hub map").remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(Arrival {
                            at,
                            conn: reader.into_inner(),
                        });
                    }
                });
            }
        });
        Ok(HelperHub {
            path: path.to_owned(),
            exe: std::env::current_exe()?,
            expected,
        })
    }

    /// Register interest in helper `id` before starting the process that will run it.
    pub fn expect(&self, id: &str) -> oneshot::Receiver<Arrival> {
        let (tx, rx) = oneshot::channel();
        self.expected
            .lock()
            .expect("hub map")
            .insert(id.to_owned(), tx);
        rx
    }

    /// The command line that runs helper `id`.
    pub fn command(&self, id: &str) -> Vec<String> {
        vec![
            self.exe.display().to_string(),
            "helper".into(),
            self.path.display().to_string(),
            id.into(),
        ]
    }
}

pub async fn arrival(
    rx: oneshot::Receiver<Arrival>,
    deadline: Instant,
    what: &str,
) -> Result<Arrival, BoxError> {
    match timeout_at(deadline, rx).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(_)) => Err(format!("{what}: helper registration dropped").into()),
        Err(_) => Err(format!("{what}: timed out waiting for the lock holder's command").into()),
    }
}

// === lockkeeper run / exec, etcdctl lock ===

/// `lockkeeper run` with its HTTP port.
pub struct Sidecar {
    pub child: Child,
    pub port: u16,
    pub pid: u32,
}

impl Sidecar {
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub fn spawn_sidecar(env: &Env, lock: &str, id: &str, ttl_s: u64) -> Result<Sidecar, BoxError> {
    spawn_sidecar_with(env, lock, id, ttl_s, &[])
}

/// [`spawn_sidecar`] with extra flags.
pub fn spawn_sidecar_with(
    env: &Env,
    lock: &str,
    id: &str,
    ttl_s: u64,
    extra: &[&str],
) -> Result<Sidecar, BoxError> {
    let port = free_port();
    let child = Command::new(&env.lockkeeper)
        .args([
            "run",
            "--etcd-endpoints",
            &env.endpoint_list(),
            "--lock",
            lock,
        ])
        .args(["--identity", id, "--ttl", &format!("{ttl_s}s")])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .args(extra)
        .env_remove("POD_NAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(env.log_file(&format!("sidecar-{id}"))?)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("sidecar exited at once")?;
    Ok(Sidecar { child, port, pid })
}

/// `lockkeeper exec --lock LOCK -- helper ID`.
pub fn spawn_exec(env: &Env, lock: &str, id: &str, ttl_s: u64) -> Result<Child, BoxError> {
    let child = Command::new(&env.lockkeeper)
        .args([
            "exec",
            "--etcd-endpoints",
            &env.endpoint_list(),
            "--lock",
            lock,
        ])
        .args(["--identity", id, "--ttl", &format!("{ttl_s}s")])
        .args(["--log-format", "json", "--"])
        .args(env.hub.command(id))
        .env_remove("POD_NAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(env.log_file(&format!("exec-{id}"))?)
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

/// `etcdctl lock --ttl TTL /locks/LOCK helper ID` (or without a command: it then prints the
/// key once it holds the lock and holds until signalled).
pub fn spawn_etcdctl(
    env: &Env,
    lock: &str,
    id: &str,
    ttl_s: u64,
    with_command: bool,
) -> Result<Child, BoxError> {
    let mut cmd = Command::new(&env.etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", &env.endpoint_list(), "lock"])
        .args(["--ttl", &ttl_s.to_string(), &format!("/locks/{lock}")]);
    if with_command {
        cmd.args(env.hub.command(id));
        cmd.stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let child = cmd
        .stdin(Stdio::null())
        .stderr(env.log_file(&format!("etcdctl-{id}"))?)
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

// === python-etcd3 driver ===

/// `python scripts/bench_peers/pylock.py MODE ...`, talking line by line over stdin/stdout.
pub struct Py {
    pub child: Child,
    pub pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    name: String,
}

impl Py {
    pub fn spawn(env: &Env, name: &str, member: usize, args: &[String]) -> Result<Py, BoxError> {
        let (host, port) = env.member(member);
        let mut child = Command::new(&env.python)
            .arg(&env.pylock)
            .args(["--host", &host, "--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(env.log_file(&format!("py-{name}"))?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("python exited at once")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Py {
            child,
            pid,
            stdin,
            lines: BufReader::new(stdout).lines(),
            name: name.to_owned(),
        })
    }

    /// The next line that starts with `word`, and when it arrived. Other lines are skipped.
    pub async fn expect(
        &mut self,
        word: &str,
        deadline: Instant,
    ) -> Result<(String, Instant), BoxError> {
        loop {
            let line = timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| format!("python {}: timed out waiting for {word:?}", self.name))??
                .ok_or_else(|| {
                    format!("python {}: exited while waiting for {word:?}", self.name)
                })?;
            let at = Instant::now();
            if line.split_whitespace().next() == Some(word) {
                return Ok((line, at));
            }
            if line.starts_with("error") {
                return Err(format!("python {}: {line}", self.name).into());
            }
        }
    }

    /// The next line whose first word is one of `words`: (that word, the line, when it arrived).
    pub async fn expect_any<'w>(
        &mut self,
        words: &[&'w str],
        deadline: Instant,
    ) -> Result<(&'w str, String, Instant), BoxError> {
        loop {
            let line = timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| format!("python {}: timed out waiting for {words:?}", self.name))??
                .ok_or_else(|| {
                    format!("python {}: exited while waiting for {words:?}", self.name)
                })?;
            let at = Instant::now();
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some(w) = words.iter().find(|w| **w == first) {
                return Ok((w, line, at));
            }
            if first == "error" {
                return Err(format!("python {}: {line}", self.name).into());
            }
        }
    }

    pub async fn send(&mut self, line: &str) -> Result<(), BoxError> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    pub async fn finish(mut self, deadline: Instant) {
        drop(self.stdin);
        if timeout_at(deadline, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Reads everything a child printed on stdout up to the first newline (etcdctl lock without a
/// command prints the key it holds the lock with).
pub async fn first_line(stdout: &mut ChildStdout, deadline: Instant) -> Result<Instant, BoxError> {
    let mut buf = [0u8; 256];
    loop {
        let n = timeout_at(deadline, stdout.read(&mut buf))
            .await
            .map_err(|_| "timed out waiting for etcdctl to print its key")??;
        if n == 0 {
            return Err("etcdctl exited before holding the lock".into());
        }
        if buf[..n].contains(&b'\n') {
            return Ok(Instant::now());
        }
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within `grace`.
pub async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        signal(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

// === /proc ===

/// User + system CPU time of a process (all its threads, live and exited), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15 (1-based, man proc).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (VmRSS, VmHWM) in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
