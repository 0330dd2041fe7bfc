//! The members' processes: how one is started (its command line), stopped, killed, paused and
//! resumed, and where its data and logs live.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::health::tail;
use super::{
    EtcdCluster, ELECTION_TIMEOUT_MS, HEARTBEAT_MS, LOG_TAIL_LINES, POLL_INTERVAL, PROBE_TIMEOUT,
    STARTUP_TIMEOUT, STOP_TIMEOUT,
};
use crate::process::{process_state, remove_env_with_prefix, send_signal};

pub(super) struct Member {
    pub(super) name: String,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    pub(super) dir: TempDir,
    /// `None` while stopped or killed.
    pub(super) child: Mutex<Option<Child>>,
    pub(super) paused: bool,
}

impl EtcdCluster {
    /// Gracefully stops member `i` (SIGTERM, a paused member is resumed first) and waits for it
    /// to exit; after `STOP_TIMEOUT` it is SIGKILL'd.
    pub fn stop_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut child = member.take_running(i);
        if member.paused {
            signal(&child, Signal::SIGCONT);
            member.paused = false;
        }
        signal(&child, Signal::SIGTERM);
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
        let pid = member.signal_running(i, Signal::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_state(pid) != Some('T') && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        member.paused = true;
    }

    /// Unfreezes member `i` (SIGCONT).
    pub fn resume_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.signal_running(i, Signal::SIGCONT);
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

    pub(super) fn spawn(&self, i: usize, cluster_state: &str) -> Child {
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
        cmd.args(&self.setup.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone etcd.out handle"))
            .stderr(out);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }
}

impl Member {
    pub(super) fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the Child intact; keep using it.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn take_running(&mut self, i: usize) -> Child {
        self.lock_child()
            .take()
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    /// Sends `sig` to member `i` (this one), which must be running; returns its pid.
    fn signal_running(&self, i: usize, sig: Signal) -> u32 {
        let guard = self.lock_child();
        let child = guard
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        signal(child, sig);
        child.id()
    }

    pub(super) fn exit_status(&self) -> Option<ExitStatus> {
        self.lock_child().as_mut()?.try_wait().ok().flatten()
    }

    pub(super) fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub(super) fn client_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Whether the client port accepts TCP connections (cheap, before spawning etcdctl).
    pub(super) fn port_open(&self) -> bool {
        let addr = ([127, 0, 0, 1], self.client_port).into();
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub(super) fn out_path(&self) -> PathBuf {
        self.dir.path().join("etcd.out")
    }

    pub(super) fn log_tail(&self) -> String {
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

/// Picks `count` distinct free ports on 127.0.0.1, never handing out a port twice in this
/// process (tests run on parallel threads). Other processes may still grab one before etcd
/// binds it; `EtcdCluster::start` retries that case.
pub(super) fn reserve_ports(count: usize) -> Vec<u16> {
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

/// Sends `sig` to a member's process; panics if it cannot (the child is ours and unreaped, so
/// its pid cannot have been recycled).
fn signal(child: &Child, sig: Signal) {
    if let Err(e) = send_signal(child.id(), sig) {
        panic!("kill({}, {sig}) failed: {e}", child.id());
    }
}
