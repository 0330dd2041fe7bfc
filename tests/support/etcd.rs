//! Real etcd clusters for integration tests: free ports for every listener, a temporary data
//! dir per member, health waits that watch for early exit, and fault injection by signals.
//!
//! Everything here is blocking (std::process, std::net) and short, so it is fine to call from
//! `#[tokio::test]` functions.
//!
//! Clusters start plain (`http://`) by default; `EtcdCluster::start_with` with an [`EtcdTls`]
//! serves clients over `https://` only (optionally requiring client certificates), and the
//! harness then checks health and leadership through `etcdctl` with its own client identity.

use std::collections::BTreeSet;
use std::env;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::{http_get, http_request};

/// How long a member (or a whole cluster) may take to become healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-cluster start attempts when a port turns out to be taken by someone else.
const START_ATTEMPTS: usize = 5;
/// How long a SIGTERM'd member may take to exit before it is SIGKILL'd.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on every HTTP probe, so a paused member cannot hang the harness.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// etcd's own defaults: a dead leader is replaced within 1–2 s, and a loaded CI machine
/// (several clusters on two cores) does not see spurious elections.
const HEARTBEAT_MS: u32 = 100;
const ELECTION_TIMEOUT_MS: u32 = 1000;
const LOG_TAIL_LINES: usize = 40;

/// A real etcd cluster of 1..n members on 127.0.0.1. Dropping it SIGKILLs every member,
/// waits for each to exit and removes their data dirs.
pub struct EtcdCluster {
    bin: PathBuf,
    token: String,
    setup: EtcdSetup,
    members: Vec<Member>,
}

/// How to start a cluster; `EtcdSetup::default()` is what `start` uses (plain HTTP).
#[derive(Clone, Debug, Default)]
pub struct EtcdSetup {
    /// Serve clients over TLS (peers stay on plain HTTP).
    pub tls: Option<EtcdTls>,
}

/// Server-side TLS files of every member, plus the client identity the harness itself uses
/// (health waits, leader lookups, `etcdctl()`). The files are read again when a member
/// restarts, so they must outlive the cluster (e.g. keep the `TestPki` alive).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// CA bundle: etcd's `--trusted-ca-file` for client certs, and what the harness trusts.
    pub ca_file: PathBuf,
    /// Server certificate (SAN IP 127.0.0.1) and key: `--cert-file`, `--key-file`.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `--client-cert-auth`: refuse clients without a certificate signed by `ca_file`.
    pub client_cert_auth: bool,
    /// Client certificate and key the harness presents (signed by `ca_file`).
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    /// `None` while stopped or killed.
    child: Mutex<Option<Child>>,
    paused: bool,
}

/// Why a start or health wait failed; `port_clash` means a retry with new ports may succeed.
struct StartFailure {
    message: String,
    port_clash: bool,
}

// === impl EtcdCluster ===

impl EtcdCluster {
    /// A one-member cluster, healthy on return.
    pub fn single() -> EtcdCluster {
        Self::start(1)
    }

    /// A three-member cluster (static bootstrap), every member healthy on return.
    pub fn three() -> EtcdCluster {
        Self::start(3)
    }

    /// An `n`-member cluster, every member healthy on return. Retries with fresh ports when a
    /// port was taken between picking and binding; any other failure panics with the log tails.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, EtcdSetup::default())
    }

    /// A one-member cluster serving clients over TLS, healthy on return; endpoints are
    /// `https://127.0.0.1:PORT`.
    pub fn single_tls(tls: &EtcdTls) -> EtcdCluster {
        Self::start_with(
            1,
            EtcdSetup {
                tls: Some(tls.clone()),
            },
        )
    }

    /// Like `start`, with the given setup (e.g. TLS).
    pub fn start_with(n: usize, setup: EtcdSetup) -> EtcdCluster {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        if let Some(tls) = &setup.tls {
            for file in [
                &tls.ca_file,
                &tls.cert_file,
                &tls.key_file,
                &tls.client_cert_file,
                &tls.client_key_file,
            ] {
                assert!(file.is_file(), "TLS file {} is missing", file.display());
            }
        }
        let bin = etcd_bin();
        for attempt in 1..=START_ATTEMPTS {
            let cluster = Self::launch(bin.clone(), n, setup.clone());
            let all: Vec<usize> = (0..n).collect();
            match cluster.wait_members(&all, STARTUP_TIMEOUT) {
                Ok(()) => return cluster,
                Err(failure) if failure.port_clash && attempt < START_ATTEMPTS => {
                    eprintln!(
                        "etcd harness: port clash on attempt {attempt}, retrying with new ports"
                    );
                }
                Err(failure) => panic!("etcd cluster of {n} failed to start:\n{}", failure.message),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Client URLs (`http://127.0.0.1:PORT`, or `https://` with TLS) of all members, in
    /// member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url(self.setup.tls.is_some())
    }

    /// The TLS settings the cluster was started with, if any.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.setup.tls.as_ref()
    }

    /// Number of members, whatever their state.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The member's process id, or `None` while it is stopped or killed.
    pub fn member_pid(&self, i: usize) -> Option<u32> {
        self.members[i].lock_child().as_ref().map(Child::id)
    }

    /// The member's data directory (removed when the cluster is dropped).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir()
    }

    /// Gracefully stops member `i` (SIGTERM, a paused member is resumed first) and waits for it
    /// to exit; after `STOP_TIMEOUT` it is SIGKILL'd.
    pub fn stop_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut child = member.take_running(i);
        if member.paused {
            signal(&child, libc::SIGCONT);
            member.paused = false;
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        eprintln!("etcd harness: member {i} ignored SIGTERM for {STOP_TIMEOUT:?}, killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills member `i` at once (SIGKILL) and waits for it to exit.
    pub fn kill_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut child = member.take_running(i);
        member.paused = false;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes member `i` (SIGSTOP): it keeps its sockets but answers nothing. Returns once the
    /// kernel reports the process stopped.
    pub fn pause_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let guard = member.lock_child();
        let child = guard
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        signal(child, libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_state(child.id()) != Some('T') && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
        member.paused = true;
    }

    /// Unfreezes member `i` (SIGCONT).
    pub fn resume_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let guard = member.lock_child();
        let child = guard
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        signal(child, libc::SIGCONT);
        drop(guard);
        member.paused = false;
    }

    /// Starts a stopped or killed member again (same data dir, name and ports) and waits until
    /// it is healthy, which needs a quorum of the cluster to be up.
    pub fn restart_member(&mut self, i: usize) {
        self.start_member(i);
        if let Err(failure) = self.wait_members(&[i], STARTUP_TIMEOUT) {
            panic!("etcd member {i} failed to restart:\n{}", failure.message);
        }
    }

    /// Starts a stopped or killed member again without waiting for health, e.g. to bring back
    /// several members of a cluster that has lost quorum; follow with `wait_healthy`.
    pub fn start_member(&mut self, i: usize) {
        assert!(
            self.members[i].lock_child().is_none(),
            "member {i} is still running; stop or kill it first"
        );
        let child = self.spawn(i, "existing");
        *self.members[i].lock_child() = Some(child);
    }

    /// Index of the current leader, as claimed by a running, unpaused member (the highest raft
    /// term wins if a stale leader has not yet heard of its successor). `None` during elections.
    pub fn leader_index(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in self.live_members() {
            let Some(body) = self.member_status(i) else {
                continue;
            };
            let fields = (
                json_u64(&body, "member_id"),
                json_u64(&body, "leader"),
                json_u64(&body, "raftTerm"),
            );
            if let (Some(id), Some(leader), Some(term)) = fields {
                if id == leader && best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Polls `leader_index` until some member other than those in `except` leads; panics after
    /// `timeout`.
    pub fn wait_leader(&self, except: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader_index() {
                Some(i) if !except.contains(&i) => return i,
                _ if Instant::now() >= deadline => {
                    panic!(
                        "no etcd leader outside {except:?} after {timeout:?}:\n{}",
                        self.all_log_tails()
                    )
                }
                _ => thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Waits until every running, unpaused member answers `/health` with `"health":"true"`;
    /// panics (with log tails) if one exits or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) {
        let live: Vec<usize> = self.live_members().collect();
        if let Err(failure) = self.wait_members(&live, timeout) {
            panic!("etcd cluster not healthy:\n{}", failure.message);
        }
    }

    /// `etcdctl` (API v3) with `--endpoints` set to every member; add the subcommand and run it.
    /// With TLS it also trusts the cluster's CA and presents the harness's client certificate.
    /// Once etcd auth is enabled, add `--user=NAME:PASSWORD`.
    pub fn etcdctl(&self) -> Command {
        etcdctl_command(&self.endpoints(), self.setup.tls.as_ref())
    }

    /// `etcdctl` (API v3) talking to member `i` only. (A second `--endpoints` flag would add
    /// to the first, not replace it.)
    pub fn etcdctl_member(&self, i: usize) -> Command {
        etcdctl_command(&[self.endpoint(i)], self.setup.tls.as_ref())
    }

    // --- internals ---

    fn launch(bin: PathBuf, n: usize, setup: EtcdSetup) -> EtcdCluster {
        let ports = reserve_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: tempfile::Builder::new()
                    .prefix("lockkeeper-etcd-")
                    .tempdir()
                    .expect("create etcd member dir"),
                child: Mutex::new(None),
                paused: false,
            })
            .collect();
        // A unique token keeps members of different clusters from ever joining each other.
        let token = super::unique_name("lockkeeper-test");
        let cluster = EtcdCluster {
            bin,
            token,
            setup,
            members,
        };
        for i in 0..n {
            let child = cluster.spawn(i, "new");
            *cluster.members[i].lock_child() = Some(child);
        }
        cluster
    }

    fn spawn(&self, i: usize, cluster_state: &str) -> Child {
        let m = &self.members[i];
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|p| format!("{}=http://127.0.0.1:{}", p.name, p.peer_port))
            .collect();
        // Output before the logger is set up (e.g. flag errors) lands in etcd.out.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.out_path())
            .expect("open etcd.out");
        let client_url = m.client_url(self.setup.tls.is_some());
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(&self.bin);
        // etcd also reads ETCD_* variables and refuses ones that conflict with flags.
        remove_env_with_prefix(&mut cmd, "ETCD_");
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data_dir().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
            .arg(format!("--initial-cluster-state={cluster_state}"))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg(format!("--heartbeat-interval={HEARTBEAT_MS}"))
            .arg(format!("--election-timeout={ELECTION_TIMEOUT_MS}"))
            // etcd ≥ 3.5's default: a member returning from a pause or partition does not
            // depose a healthy leader.
            .arg("--pre-vote=true")
            .arg("--logger=zap")
            .arg(format!("--log-outputs={}", m.log_path().display()));
        if let Some(tls) = &self.setup.tls {
            cmd.arg(format!("--cert-file={}", tls.cert_file.display()))
                .arg(format!("--key-file={}", tls.key_file.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca_file.display()))
                .arg(format!("--client-cert-auth={}", tls.client_cert_auth));
        }
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone etcd.out handle"))
            .stderr(out);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Running members that are not paused: the ones that can answer.
    fn live_members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len())
            .filter(|&i| !self.members[i].paused && self.members[i].lock_child().is_some())
    }

    fn wait_members(&self, which: &[usize], timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let mut pending = which.to_vec();
        loop {
            for &i in &pending {
                if let Some(status) = self.members[i].exit_status() {
                    let tail = self.members[i].log_tail();
                    return Err(StartFailure {
                        port_clash: tail.contains("address already in use"),
                        message: format!("member {i} exited early ({status}):\n{tail}"),
                    });
                }
            }
            pending.retain(|&i| !self.member_healthy(i));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = pending
                    .iter()
                    .map(|&i| self.members[i].log_tail())
                    .collect();
                return Err(StartFailure {
                    port_clash: false,
                    message: format!(
                        "members {pending:?} not healthy after {timeout:?}:\n{}",
                        tails.join("\n")
                    ),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether member `i` answers a health check: `/health` over plain HTTP, or (with TLS,
    /// where that needs a client certificate) `etcdctl endpoint health` once the port accepts
    /// connections.
    fn member_healthy(&self, i: usize) -> bool {
        let member = &self.members[i];
        if self.setup.tls.is_none() {
            return match http_get(&member.client_addr(), "/health", PROBE_TIMEOUT) {
                Ok(resp) => resp.status == 200 && resp.body.contains(r#""health":"true""#),
                Err(_) => false,
            };
        }
        if !member.port_open() {
            return false;
        }
        let mut cmd = self.etcdctl_member(i);
        cmd.args(etcdctl_probe_timeouts())
            .args(["endpoint", "health"])
            .stdin(Stdio::null());
        cmd.output().is_ok_and(|out| out.status.success())
    }

    /// The status JSON of member `i` (`member_id`, `leader`, `raftTerm`...), or `None` if it
    /// does not answer within the probe timeout.
    fn member_status(&self, i: usize) -> Option<String> {
        let member = &self.members[i];
        if self.setup.tls.is_none() {
            let resp = http_request(
                &member.client_addr(),
                "POST",
                "/v3/maintenance/status",
                "{}",
                PROBE_TIMEOUT,
            )
            .ok()?;
            return (resp.status == 200).then_some(resp.body);
        }
        if !member.port_open() {
            return None;
        }
        let mut cmd = self.etcdctl_member(i);
        cmd.args(etcdctl_probe_timeouts())
            .args(["endpoint", "status", "--write-out=json"])
            .stdin(Stdio::null());
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn all_log_tails(&self) -> String {
        let tails: Vec<String> = self.members.iter().map(Member::log_tail).collect();
        tails.join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let taken = member.lock_child().take();
            if let Some(mut child) = taken {
                if member.paused {
                    signal(&child, libc::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The TempDirs are dropped (removed) after this, with the members.
    }
}

// === impl Member ===

impl Member {
    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the Child intact; keep using it.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_running(&mut self, i: usize) -> Child {
        self.lock_child()
            .take()
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.lock_child().as_mut()?.try_wait().ok().flatten()
    }

    fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn client_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Whether the client port accepts TCP connections (cheap, before spawning etcdctl).
    fn port_open(&self) -> bool {
        let addr = ([127, 0, 0, 1], self.client_port).into();
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn out_path(&self) -> PathBuf {
        self.dir.path().join("etcd.out")
    }

    fn log_tail(&self) -> String {
        let mut text = format!(
            "--- {} (client {}, peer {}): last {LOG_TAIL_LINES} lines of {} ---\n",
            self.name,
            self.client_port,
            self.peer_port,
            self.log_path().display()
        );
        text.push_str(&tail(&self.log_path(), LOG_TAIL_LINES));
        let out = tail(&self.out_path(), LOG_TAIL_LINES);
        if !out.trim().is_empty() {
            text.push_str("--- stdout/stderr ---\n");
            text.push_str(&out);
        }
        text
    }
}

// === binaries ===

/// The etcd server: `$LOCKKEEPER_ETCD_BIN`, else `etcd` on PATH, else /usr/bin/etcd. Panics
/// with install instructions when missing (tests never skip).
pub fn etcd_bin() -> PathBuf {
    find_binary("LOCKKEEPER_ETCD_BIN", "etcd", "etcd-server")
}

/// etcdctl: `$LOCKKEEPER_ETCDCTL_BIN`, else `etcdctl` on PATH, else /usr/bin/etcdctl.
pub fn etcdctl_bin() -> PathBuf {
    find_binary("LOCKKEEPER_ETCDCTL_BIN", "etcdctl", "etcd-client")
}

fn etcdctl_command(endpoints: &[String], tls: Option<&EtcdTls>) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    // ETCDCTL_* variables (e.g. ETCDCTL_ENDPOINTS) from the environment would conflict.
    remove_env_with_prefix(&mut cmd, "ETCDCTL_");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")));
    if let Some(tls) = tls {
        cmd.arg(format!("--cacert={}", tls.ca_file.display()))
            .arg(format!("--cert={}", tls.client_cert_file.display()))
            .arg(format!("--key={}", tls.client_key_file.display()));
    }
    cmd
}

/// Bounds for one etcdctl probe, so a slow or stuck member cannot hang a health wait.
fn etcdctl_probe_timeouts() -> [String; 2] {
    let ms = PROBE_TIMEOUT.as_millis();
    [
        format!("--dial-timeout={ms}ms"),
        format!("--command-timeout={ms}ms"),
    ]
}

fn find_binary(env_var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "{env_var}={} is not an executable file",
            path.display()
        );
        return path;
    }
    let on_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let fallback = Path::new("/usr/bin").join(name);
    on_path
        .chain([fallback])
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found: set {env_var}, put it on PATH, or install it \
                 (`apt-get install {package}`, or run `scripts/install-deps.sh`)"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// === helpers ===

/// Picks `count` distinct free ports on 127.0.0.1, never handing out a port twice in this
/// process (tests run on parallel threads). Other processes may still grab one before etcd
/// binds it; `EtcdCluster::start` retries that case.
fn reserve_ports(count: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Hold every listener until all are picked, so the kernel cannot return a port twice.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    ports
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child, so
    // it cannot have been recycled for another process.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        panic!("kill({pid}, {sig}) failed: {}", io::Error::last_os_error());
    }
}

/// The state letter from /proc/PID/stat (`R`, `S`, `T` for stopped, `Z`...).
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; the state follows it.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with(prefix)) {
            cmd.env_remove(key);
        }
    }
}

/// The unsigned integer after `"key":` in a JSON text (the gRPC gateway quotes 64-bit values).
fn json_u64(json: &str, key: &str) -> Option<u64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[start..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let mut out = all[all.len().saturating_sub(lines)..].join("\n");
            out.push('\n');
            out
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}
