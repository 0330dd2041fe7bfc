//! A fault-injection scenario: a real etcd cluster, real `lockkeeper run` sidecars (optionally
//! behind fault proxies, optionally under `faketime`), an external prober, a watch on the lock
//! prefix, a fenced store written by a model application, and a schedule of faults. At the end
//! every sidecar is shut down cleanly and the recorded evidence is checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::{self, Violation};
use super::history::{
    raw_now, read_history, FencedStore, Interval, Prober, StoreStats, Watcher, Writers,
};
use super::proxy::{Dir, FaultProxy};
use crate::support::{free_port, http_get, lockkeeper_bin, unique_name, EtcdCluster};

/// Lease TTL of every sidecar in these scenarios (etcd grants whole seconds).
pub const TTL: Duration = Duration::from_secs(3);
/// A holder must exist again within TTL + this after a fault heals (generous: CI machines are
/// slow and several scenarios share two cores).
pub const LIVENESS_SLACK: Duration = Duration::from_secs(6);
/// Extra allowance after an etcd quorum comes back (election, lease promotion).
pub const QUORUM_SLACK: Duration = Duration::from_secs(6);

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL the holder (restarted afterwards).
    KillHolder,
    /// SIGKILL a waiting sidecar (restarted afterwards).
    KillWaiter,
    /// SIGSTOP the holder for TTL + 1.5 s, then SIGCONT.
    StopHolder,
    /// SIGTERM the holder: it must exit 0 and hand over at once (restarted afterwards).
    TermHolder,
    /// 300 ms each way between the holder and etcd, for 4 s.
    Delay,
    /// 50 ms + uniform(0..400 ms) each way between the holder and etcd, for 4 s.
    Jitter,
    /// Nothing between the holder and etcd for TTL + 2 s (connections stay open).
    Blackhole,
    /// Every connection of the holder to etcd reset, and new ones too, for 3 s.
    Reset,
    /// etcd → holder bytes lost for TTL + 2 s (keepalives still arrive).
    LossDown,
    /// holder → etcd bytes lost for TTL + 2 s.
    LossUp,
    /// SIGKILL an etcd follower for 3 s, then restart it.
    KillFollower,
    /// SIGSTOP an etcd follower for 3 s.
    PauseFollower,
    /// SIGKILL the etcd leader for 3 s, then restart it.
    KillLeader,
    /// SIGSTOP the etcd leader for 4 s.
    PauseLeader,
    /// SIGKILL two of three etcd members for 4 s, then restart them.
    KillQuorum,
    /// SIGSTOP two of three etcd members for 4 s.
    PauseQuorum,
    /// 8 s of churn (SIGTERM holder / SIGKILL waiter, restarts) with `etcdctl compact` every
    /// 250 ms.
    CompactChurn,
    /// Cut the clock-skewed sidecar off from etcd (blackhole) for 2 × TTL + 1 s while it holds.
    SkewCutoff,
}

impl Fault {
    pub const ALL: [Fault; 18] = [
        Fault::KillHolder,
        Fault::KillWaiter,
        Fault::StopHolder,
        Fault::TermHolder,
        Fault::Delay,
        Fault::Jitter,
        Fault::Blackhole,
        Fault::Reset,
        Fault::LossDown,
        Fault::LossUp,
        Fault::KillFollower,
        Fault::PauseFollower,
        Fault::KillLeader,
        Fault::PauseLeader,
        Fault::KillQuorum,
        Fault::PauseQuorum,
        Fault::CompactChurn,
        Fault::SkewCutoff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillHolder => "sidecar SIGKILL (holder)",
            Fault::KillWaiter => "sidecar SIGKILL (waiter)",
            Fault::StopHolder => "sidecar SIGSTOP > TTL (holder)",
            Fault::TermHolder => "sidecar SIGTERM (holder)",
            Fault::Delay => "proxy delay 300 ms",
            Fault::Jitter => "proxy jitter 50-450 ms",
            Fault::Blackhole => "proxy blackhole",
            Fault::Reset => "proxy connection resets",
            Fault::LossDown => "proxy one-way loss etcd→sidecar",
            Fault::LossUp => "proxy one-way loss sidecar→etcd",
            Fault::KillFollower => "etcd SIGKILL follower",
            Fault::PauseFollower => "etcd SIGSTOP follower",
            Fault::KillLeader => "etcd SIGKILL leader",
            Fault::PauseLeader => "etcd SIGSTOP leader",
            Fault::KillQuorum => "etcd SIGKILL quorum (2 of 3)",
            Fault::PauseQuorum => "etcd SIGSTOP quorum (2 of 3)",
            Fault::CompactChurn => "etcdctl compact during churn",
            Fault::SkewCutoff => "clock-skewed holder cut off",
        }
    }

    /// Needs the sidecars behind fault proxies.
    pub fn needs_proxies(self) -> bool {
        matches!(
            self,
            Fault::Delay
                | Fault::Jitter
                | Fault::Blackhole
                | Fault::Reset
                | Fault::LossDown
                | Fault::LossUp
                | Fault::SkewCutoff
        )
    }

    /// Needs a three-member cluster.
    pub fn needs_members(self) -> bool {
        matches!(
            self,
            Fault::KillFollower
                | Fault::PauseFollower
                | Fault::KillLeader
                | Fault::PauseLeader
                | Fault::KillQuorum
                | Fault::PauseQuorum
        )
    }

    fn quorum(self) -> bool {
        matches!(self, Fault::KillQuorum | Fault::PauseQuorum)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    /// etcd members (1 or 3).
    pub members: usize,
    /// Sidecars.
    pub nodes: usize,
    /// Sidecars reach etcd through one fault proxy per member.
    pub proxied: bool,
    /// Safety margin of every sidecar.
    pub margin: Duration,
    /// One sidecar under `faketime` at this clock rate, with this safety margin. It starts
    /// first, so it holds first.
    pub skew: Option<Skew>,
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// A negative control: violations are expected, so its files are not kept for them.
    pub negative: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Skew {
    pub node: usize,
    pub rate: f64,
    pub margin: Duration,
}

impl Spec {
    pub fn new(name: &str, members: usize, nodes: usize, faults: &[Fault]) -> Spec {
        Spec {
            name: name.to_owned(),
            members,
            nodes,
            proxied: faults.iter().any(|f| f.needs_proxies()),
            margin: Duration::from_millis(600),
            skew: None,
            faults: faults.to_vec(),
            seed: 1,
            negative: false,
        }
    }
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub fault: Fault,
    pub inject: u64,
    pub heal: u64,
    /// Token of the holder when the fault was injected.
    pub token_before: Option<i64>,
    /// From the heal to the first `/readyz` 200 seen by polling (zero when a holder was there).
    pub time_to_holder: Option<Duration>,
    /// From the injection to the start of the next holding (a higher token), if any.
    pub failover: Option<Duration>,
    /// From the end of the holding at injection to the start of the next one: no holder.
    pub gap: Option<Duration>,
    /// The holding at injection was still there after the heal.
    pub kept: bool,
}

/// Everything one scenario produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub spec: Spec,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    pub intervals: Vec<Interval>,
    pub store: StoreStats,
    pub probes_200: usize,
    pub probes_total: usize,
    pub compactions: u64,
    pub duration: Duration,
    /// Where the logs and histories are kept (only when there were violations).
    pub kept_dir: Option<PathBuf>,
}

impl Outcome {
    pub fn kinds(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.kind()).or_default() += 1;
        }
        m
    }

    /// A readable summary (first violations of each kind in full).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "scenario {} (seed {}): {} faults, {} holdings, prober {}/{} ready answers, store {} accepted / {} rejected, {} compactions, {:.1} s\n",
            self.spec.name,
            self.spec.seed,
            self.faults.len(),
            self.intervals.len(),
            self.probes_200,
            self.probes_total,
            self.store.accepted,
            self.store.rejected,
            self.compactions,
            self.duration.as_secs_f64()
        );
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  {:<36} token {:?} kept {} failover {:?} gap {:?} holder after heal {:?}",
                f.fault.name(),
                f.token_before,
                f.kept,
                f.failover,
                f.gap,
                f.time_to_holder
            );
        }
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            let n = shown.entry(v.kind()).or_default();
            *n += 1;
            if *n <= 3 {
                let _ = writeln!(s, "  VIOLATION {v}");
            }
        }
        if !self.violations.is_empty() {
            let _ = writeln!(s, "  violations by kind: {:?}", self.kinds());
        }
        if let Some(d) = &self.kept_dir {
            let _ = writeln!(s, "  logs and histories kept in {}", d.display());
        }
        s
    }
}

// === sidecar processes ===

struct Run {
    history: PathBuf,
    log: PathBuf,
    rate: f64,
}

struct Node {
    identity: String,
    port: u16,
    endpoints: Vec<String>,
    margin: Duration,
    rate: f64,
    lock: String,
    dir: PathBuf,
    runs: Vec<Run>,
    child: Option<Child>,
    stopped: bool,
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

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.identity);
        let run = self.runs.len();
        let history = self
            .dir
            .join(format!("{}-{run}.history.jsonl", self.identity));
        let log = self.dir.join(format!("{}-{run}.log", self.identity));
        let mut cmd = Command::new(lockkeeper_bin());
        cmd.args(["run", "--etcd-endpoints", &self.endpoints.join(",")])
            .args(["--lock", &self.lock, "--identity", &self.identity])
            .args([
                "--ttl",
                &format!("{}s", TTL.as_secs()),
                "--renew-interval",
                "1s",
            ])
            .args(["--safety-margin", &format!("{}ms", self.margin.as_millis())])
            .args(["--listen", &self.addr(), "--log-format", "json"])
            .args(["--log-level", "info", "--kube", "off"])
            .args(["--shutdown-timeout", "5s", "--etcd-request-timeout", "2s"])
            .arg("--history-file")
            .arg(&history)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sidecar log file"));
        if (self.rate - 1.0).abs() > 1e-9 {
            cmd.env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", format!("+0 x{}", self.rate))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "0");
        }
        let child = cmd.spawn().expect("spawn lockkeeper");
        self.child = Some(child);
        self.stopped = false;
        self.runs.push(Run {
            history,
            log,
            rate: self.rate,
        });
        let started = Instant::now();
        while http_get(&self.addr(), "/livez", Duration::from_millis(300)).is_err() {
            if started.elapsed() > Duration::from_secs(15) {
                panic!(
                    "sidecar {} never served HTTP; log:\n{}",
                    self.identity,
                    self.last_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn last_log(&self) -> String {
        self.runs
            .last()
            .and_then(|r| std::fs::read_to_string(&r.log).ok())
            .unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    fn pause(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        self.stopped = true;
    }

    fn resume(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.stopped = false;
    }

    /// SIGTERM and wait; `Err` if it does not exit 0 within 10 s.
    fn term(&mut self) -> Result<(), String> {
        if self.stopped {
            self.resume();
        }
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let started = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("exited with {status} after SIGTERM")),
                _ if started.elapsed() > Duration::from_secs(10) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err("still running 10 s after SIGTERM".into());
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// `Err` if the process exited on its own.
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Err(format!("exited on its own with {status}"));
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.running()
            && !self.stopped
            && http_get(&self.addr(), "/readyz", Duration::from_millis(300))
                .is_ok_and(|r| r.status == 200)
    }

    fn status(&self) -> Option<serde_json::Value> {
        if !self.running() || self.stopped {
            return None;
        }
        let r = http_get(&self.addr(), "/status", Duration::from_millis(500)).ok()?;
        serde_json::from_str(&r.body).ok()
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

// === the world ===

struct World {
    spec: Spec,
    rng: StdRng,
    cluster: EtcdCluster,
    lock: String,
    /// proxies[node][member]
    proxies: Vec<Vec<FaultProxy>>,
    nodes: Vec<Node>,
    violations: Vec<Violation>,
    records: Vec<FaultRecord>,
    compactions: Arc<AtomicU64>,
    /// The prefix watch's progress: compacting up to it loses no event.
    watch_rev: Arc<AtomicI64>,
    dir: tempfile::TempDir,
}

fn etcdctl_out(cluster: &EtcdCluster, args: &[&str]) -> Option<String> {
    let out = cluster
        .etcdctl()
        .args(["--dial-timeout=1s", "--command-timeout=3s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cluster_revision(cluster: &EtcdCluster, prefix: &str) -> Option<i64> {
    let out = etcdctl_out(cluster, &["get", "--prefix", prefix, "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["header"]["revision"].as_i64()
}

impl World {
    fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].ready())
    }

    /// Polls until some sidecar is ready; the time since `from` (raw ns) when it is.
    fn await_holder(&self, from: u64, bound: Duration) -> Result<Duration, Duration> {
        loop {
            if self.holder().is_some() {
                return Ok(Duration::from_nanos(raw_now().saturating_sub(from)));
            }
            let waited = Duration::from_nanos(raw_now().saturating_sub(from));
            if waited > bound {
                return Err(waited);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_holder(&self, limit: Duration) -> Option<usize> {
        let started = Instant::now();
        loop {
            if let Some(h) = self.holder() {
                return Some(h);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_processes(&mut self) {
        for n in &mut self.nodes {
            if let Err(e) = n.check_alive() {
                self.violations.push(Violation::Crash {
                    identity: n.identity.clone(),
                    detail: e,
                });
                n.spawn(); // keep the scenario going
            }
        }
    }

    fn token_of(&self, i: usize) -> Option<i64> {
        self.nodes[i].status()?["fencing_token"].as_i64()
    }

    fn restart(&mut self, i: usize) {
        if !self.nodes[i].running() {
            self.nodes[i].spawn();
        }
    }

    fn term(&mut self, i: usize) {
        if let Err(e) = self.nodes[i].term() {
            self.violations.push(Violation::Crash {
                identity: self.nodes[i].identity.clone(),
                detail: e,
            });
        }
    }

    fn leader(&self) -> usize {
        self.cluster.wait_leader(&[], Duration::from_secs(20))
    }

    fn run_fault(&mut self, fault: Fault) {
        self.check_processes();
        let Some(h) = self.wait_holder(TTL + LIVENESS_SLACK + QUORUM_SLACK) else {
            self.violations.push(Violation::Liveness {
                fault: format!("(before {})", fault.name()),
                waited_ms: (TTL + LIVENESS_SLACK + QUORUM_SLACK).as_millis() as u64,
                bound_ms: (TTL + LIVENESS_SLACK + QUORUM_SLACK).as_millis() as u64,
            });
            return;
        };
        let h = if fault == Fault::SkewCutoff {
            match self.make_skewed_hold(h) {
                Some(h) => h,
                None => return,
            }
        } else {
            h
        };
        let token_before = self.token_of(h);
        let inject = raw_now();
        let mut restart_after: Vec<usize> = Vec::new();
        let m = self.spec.members;
        match fault {
            Fault::KillHolder => {
                self.nodes[h].kill();
                restart_after.push(h);
            }
            Fault::KillWaiter => {
                let waiters: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| i != h && self.nodes[i].running())
                    .collect();
                if let Some(&w) = waiters.get(self.rng.random_range(0..waiters.len().max(1))) {
                    self.nodes[w].kill();
                    restart_after.push(w);
                }
            }
            Fault::StopHolder => {
                self.nodes[h].pause();
                std::thread::sleep(TTL + Duration::from_millis(1500));
                self.nodes[h].resume();
            }
            Fault::TermHolder => {
                self.term(h);
                restart_after.push(h);
            }
            Fault::Delay | Fault::Jitter => {
                let (base, jitter) = if fault == Fault::Delay {
                    (Duration::from_millis(300), Duration::ZERO)
                } else {
                    (Duration::from_millis(50), Duration::from_millis(400))
                };
                self.proxies[h].iter().for_each(|p| p.delay(base, jitter));
                std::thread::sleep(Duration::from_secs(4));
                self.proxies[h].iter().for_each(FaultProxy::heal);
            }
            Fault::Blackhole | Fault::SkewCutoff => {
                self.proxies[h].iter().for_each(FaultProxy::blackhole);
                let hold = if fault == Fault::SkewCutoff {
                    TTL * 2 + Duration::from_secs(1)
                } else {
                    TTL + Duration::from_secs(2)
                };
                std::thread::sleep(hold);
                self.proxies[h].iter().for_each(FaultProxy::heal);
            }
            Fault::Reset => {
                self.proxies[h].iter().for_each(FaultProxy::reset);
                std::thread::sleep(Duration::from_secs(3));
                self.proxies[h].iter().for_each(FaultProxy::heal);
            }
            Fault::LossDown | Fault::LossUp => {
                let dir = if fault == Fault::LossDown {
                    Dir::Down
                } else {
                    Dir::Up
                };
                self.proxies[h].iter().for_each(|p| p.one_way_loss(dir));
                std::thread::sleep(TTL + Duration::from_secs(2));
                self.proxies[h].iter().for_each(FaultProxy::heal);
            }
            Fault::KillFollower | Fault::PauseFollower | Fault::KillLeader | Fault::PauseLeader
                if m >= 3 =>
            {
                let leader = self.leader();
                let target = if matches!(fault, Fault::KillLeader | Fault::PauseLeader) {
                    leader
                } else {
                    (leader + 1 + self.rng.random_range(0..m - 1)) % m
                };
                let kill = matches!(fault, Fault::KillFollower | Fault::KillLeader);
                if kill {
                    self.cluster.kill_member(target);
                } else {
                    self.cluster.pause_member(target);
                }
                let hold = if fault == Fault::PauseLeader { 4 } else { 3 };
                std::thread::sleep(Duration::from_secs(hold));
                if kill {
                    self.cluster.restart_member(target);
                } else {
                    self.cluster.resume_member(target);
                }
            }
            Fault::KillQuorum | Fault::PauseQuorum if m >= 3 => {
                let leader = self.leader();
                let targets = [leader, (leader + 1) % m];
                for &t in &targets {
                    if fault == Fault::KillQuorum {
                        self.cluster.kill_member(t);
                    } else {
                        self.cluster.pause_member(t);
                    }
                }
                std::thread::sleep(Duration::from_secs(4));
                for &t in &targets {
                    if fault == Fault::KillQuorum {
                        self.cluster.start_member(t);
                    } else {
                        self.cluster.resume_member(t);
                    }
                }
                self.cluster.wait_healthy(Duration::from_secs(30));
            }
            Fault::CompactChurn => self.churn_with_compaction(Duration::from_secs(8)),
            other => panic!("{} needs a 3-member cluster", other.name()),
        }
        let heal = raw_now();
        let bound = if fault.quorum() {
            TTL + LIVENESS_SLACK + QUORUM_SLACK
        } else {
            TTL + LIVENESS_SLACK
        };
        let time_to_holder = match self.await_holder(heal, bound) {
            Ok(t) => Some(t),
            Err(waited) => {
                self.violations.push(Violation::Liveness {
                    fault: fault.name().to_owned(),
                    waited_ms: waited.as_millis() as u64,
                    bound_ms: bound.as_millis() as u64,
                });
                None
            }
        };
        for i in restart_after {
            self.restart(i);
        }
        self.records.push(FaultRecord {
            fault,
            inject,
            heal,
            token_before,
            time_to_holder,
            failover: None,
            gap: None,
            kept: false,
        });
        let settle = self.rng.random_range(300..1200);
        std::thread::sleep(Duration::from_millis(settle));
    }

    /// Makes the skewed sidecar the holder (SIGTERM whoever else holds, restarting them).
    fn make_skewed_hold(&mut self, mut h: usize) -> Option<usize> {
        let s = self
            .spec
            .skew
            .expect("SkewCutoff needs a skewed sidecar")
            .node;
        for _ in 0..self.nodes.len() + 2 {
            if h == s {
                return Some(s);
            }
            self.term(h);
            self.restart(h);
            h = self.wait_holder(TTL + LIVENESS_SLACK)?;
        }
        (h == s).then_some(s)
    }

    fn churn_with_compaction(&mut self, length: Duration) {
        let stop = Arc::new(AtomicBool::new(false));
        let endpoints = self.cluster.endpoints();
        let compactions = self.compactions.clone();
        let watch_rev = self.watch_rev.clone();
        let st = stop.clone();
        let etcdctl = crate::support::etcdctl_bin();
        let compactor = std::thread::spawn(move || {
            let mut last = 0;
            while !st.load(Ordering::SeqCst) {
                let rev = watch_rev.load(Ordering::SeqCst);
                if rev > last {
                    let ok = Command::new(&etcdctl)
                        .env("ETCDCTL_API", "3")
                        .arg(format!("--endpoints={}", endpoints.join(",")))
                        .args(["--dial-timeout=1s", "--command-timeout=2s", "compact"])
                        .arg(rev.to_string())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        compactions.fetch_add(1, Ordering::SeqCst);
                        last = rev;
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < length {
            self.check_processes();
            if let Some(h) = self.wait_holder(TTL + LIVENESS_SLACK) {
                if n % 2 == 0 {
                    self.term(h);
                    self.restart(h);
                } else {
                    let waiters: Vec<usize> = (0..self.nodes.len()).filter(|&i| i != h).collect();
                    let w = waiters[self.rng.random_range(0..waiters.len())];
                    self.nodes[w].kill();
                    self.restart(w);
                }
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(self.rng.random_range(300..900)));
        }
        stop.store(true, Ordering::SeqCst);
        let _ = compactor.join();
    }
}

/// Runs one scenario to the end and checks it.
pub fn run(spec: Spec) -> Outcome {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix(&format!("lockkeeper-safety-{}-", spec.name))
        .tempdir()
        .expect("scenario dir");
    let cluster = EtcdCluster::start(spec.members);
    let lock = unique_name(&spec.name);
    let prefix = format!("/locks/{lock}/");
    let watcher = Watcher::start(cluster.endpoints(), prefix.clone());
    let proxies: Vec<Vec<FaultProxy>> = (0..spec.nodes)
        .map(|_| {
            if spec.proxied {
                (0..spec.members)
                    .map(|m| FaultProxy::start(&cluster.endpoint(m)))
                    .collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    let nodes: Vec<Node> = (0..spec.nodes)
        .map(|i| {
            let skew = spec.skew.filter(|s| s.node == i);
            Node {
                identity: format!("n{i}"),
                port: free_port(),
                endpoints: if spec.proxied {
                    proxies[i].iter().map(|p| p.endpoint.clone()).collect()
                } else {
                    cluster.endpoints()
                },
                margin: skew.map_or(spec.margin, |s| s.margin),
                rate: skew.map_or(1.0, |s| s.rate),
                lock: lock.clone(),
                dir: dir.path().to_owned(),
                runs: Vec::new(),
                child: None,
                stopped: false,
            }
        })
        .collect();
    let targets: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.identity.clone(), n.addr()))
        .collect();
    let prober = Prober::start(targets.clone());
    let store = FencedStore::default();
    let writers = Writers::start(targets, store.clone());
    let mut world = World {
        rng: StdRng::seed_from_u64(spec.seed),
        spec: spec.clone(),
        cluster,
        lock,
        proxies,
        nodes,
        violations: Vec::new(),
        records: Vec::new(),
        compactions: Arc::new(AtomicU64::new(0)),
        watch_rev: watcher.progress(),
        dir,
    };
    // The skewed sidecar first, so that it holds first.
    let order: Vec<usize> = match spec.skew {
        Some(s) => std::iter::once(s.node)
            .chain((0..spec.nodes).filter(|&i| i != s.node))
            .collect(),
        None => (0..spec.nodes).collect(),
    };
    for (k, &i) in order.iter().enumerate() {
        world.nodes[i].spawn();
        if k == 0 && world.await_holder(raw_now(), TTL + LIVENESS_SLACK).is_err() {
            world.violations.push(Violation::Liveness {
                fault: "(start)".into(),
                waited_ms: (TTL + LIVENESS_SLACK).as_millis() as u64,
                bound_ms: (TTL + LIVENESS_SLACK).as_millis() as u64,
            });
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    for fault in spec.faults.clone() {
        world.run_fault(fault);
    }

    // === clean shutdown: nothing may be left behind ===
    world.check_processes();
    if world.wait_holder(TTL + LIVENESS_SLACK).is_none() {
        world.violations.push(Violation::Liveness {
            fault: "(end)".into(),
            waited_ms: (TTL + LIVENESS_SLACK).as_millis() as u64,
            bound_ms: (TTL + LIVENESS_SLACK).as_millis() as u64,
        });
    }
    let clean_leases: BTreeSet<String> = world
        .nodes
        .iter()
        .filter_map(|n| n.status()?["lease_id"].as_str().map(str::to_owned))
        .collect();
    for i in 0..world.nodes.len() {
        world.term(i);
    }
    let keys = etcdctl_out(&world.cluster, &["get", "--prefix", "--keys-only", &prefix])
        .unwrap_or_default();
    let leases = etcdctl_out(&world.cluster, &["lease", "list"]).unwrap_or_default();
    for lease in &clean_leases {
        if keys
            .lines()
            .any(|k| k.trim().ends_with(&format!("/{lease}")))
        {
            world.violations.push(Violation::Leftover {
                detail: format!("key of lease {lease} after a clean shutdown"),
            });
        }
        if leases.lines().any(|l| l.trim() == lease) {
            world.violations.push(Violation::Leftover {
                detail: format!("lease {lease} after a clean shutdown"),
            });
        }
    }
    // Leases of killed sidecars expire on their own.
    let drained = Instant::now();
    loop {
        let keys = etcdctl_out(&world.cluster, &["get", "--prefix", "--keys-only", &prefix]);
        let leases = etcdctl_out(&world.cluster, &["lease", "list"]);
        let empty = keys.as_deref().is_some_and(|k| k.trim().is_empty())
            && leases
                .as_deref()
                .is_some_and(|l| l.lines().filter(|x| !x.trim().is_empty()).count() <= 1);
        if empty {
            break;
        }
        if drained.elapsed() > TTL + Duration::from_secs(12) {
            world.violations.push(Violation::Leftover {
                detail: format!(
                    "{:?} and {:?} still there {:?} after shutdown",
                    keys,
                    leases,
                    drained.elapsed()
                ),
            });
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let revision = cluster_revision(&world.cluster, &prefix).unwrap_or(0);
    if !watcher.caught_up(revision, Duration::from_secs(10)) {
        world.violations.push(Violation::Evidence(format!(
            "the prefix watch did not reach revision {revision}"
        )));
    }
    let probes = prober.finish();
    writers.finish();
    let (creations, watch_errors) = watcher.finish();
    for e in watch_errors {
        world.violations.push(Violation::Evidence(e));
    }

    // === evidence ===
    let mut intervals = Vec::new();
    for n in &world.nodes {
        for (run, r) in n.runs.iter().enumerate() {
            match read_history(&r.history, &n.identity, run, r.rate) {
                Ok(h) => {
                    if let Some(m) = h.clock.measured_rate {
                        if h.clock.baseline_ns >= 2_000_000_000
                            && (m - r.rate).abs() > 0.03 * r.rate
                        {
                            world.violations.push(Violation::ClockRate {
                                identity: n.identity.clone(),
                                run,
                                expected: r.rate,
                                measured: m,
                            });
                        }
                    }
                    intervals.extend(h.intervals);
                }
                Err(e) => world.violations.push(Violation::Evidence(e)),
            }
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            if log.contains("panicked") {
                world.violations.push(Violation::Crash {
                    identity: n.identity.clone(),
                    detail: format!("run {run} panicked (see {})", r.log.display()),
                });
            }
        }
    }
    let store_stats = store.stats();
    world.violations.extend(checker::check_all(
        &intervals,
        &probes,
        &creations,
        &store_stats,
    ));

    // Per fault: did the holding survive it, and how long until the next holder?
    let mut records = std::mem::take(&mut world.records);
    let next_injects: Vec<u64> = records
        .iter()
        .skip(1)
        .map(|r| r.inject)
        .chain(std::iter::once(u64::MAX))
        .collect();
    for (r, next_inject) in records.iter_mut().zip(next_injects) {
        if let Some(t) = r.token_before {
            // The next holding that began before the next fault, if any.
            let next = intervals
                .iter()
                .filter(|i| i.token > t && i.start >= r.inject && i.start < next_inject)
                .map(|i| i.start)
                .min();
            r.kept = next.is_none();
            r.failover = next.map(|s| Duration::from_nanos(s - r.inject));
            let old_end = intervals
                .iter()
                .filter(|i| i.token == t)
                .map(|i| i.end)
                .max();
            if let (Some(f), Some(end)) = (r.failover, old_end) {
                let next = r.inject + f.as_nanos() as u64;
                r.gap = Some(Duration::from_nanos(next.saturating_sub(end)));
            }
            // Faults aimed at the holder alone: someone else must take over within the bound.
            let holder_only = matches!(
                r.fault,
                Fault::KillHolder
                    | Fault::StopHolder
                    | Fault::TermHolder
                    | Fault::Blackhole
                    | Fault::Reset
                    | Fault::LossDown
                    | Fault::LossUp
                    | Fault::SkewCutoff
            );
            let bound = TTL + LIVENESS_SLACK;
            if holder_only && !r.kept && r.failover.is_none_or(|f| f > bound) {
                world.violations.push(Violation::Liveness {
                    fault: format!("{} (fail-over {:?})", r.fault.name(), r.failover),
                    waited_ms: r.failover.map_or(u64::MAX, |f| f.as_millis() as u64),
                    bound_ms: bound.as_millis() as u64,
                });
            }
        }
    }
    let probes_total = probes.values().map(Vec::len).sum();
    let probes_200 = probes
        .values()
        .flatten()
        .filter(|p| p.ready == Some(true))
        .count();
    let keep_anyway = std::env::var_os("LOCKKEEPER_SAFETY_KEEP").is_some();
    let kept_dir = if (world.violations.is_empty() || spec.negative) && !keep_anyway {
        None
    } else {
        let dir = std::mem::replace(&mut world.dir, tempfile::tempdir().unwrap());
        Some(dir.keep())
    };
    Outcome {
        spec,
        faults: records,
        violations: world.violations.clone(),
        intervals,
        store: store_stats,
        probes_200,
        probes_total,
        compactions: world.compactions.load(Ordering::SeqCst),
        duration: started.elapsed(),
        kept_dir,
    }
}

/// Runs scenarios on up to `parallel` threads; outcomes in spec order.
pub fn run_many(specs: Vec<Spec>, parallel: usize) -> Vec<Outcome> {
    let queue = Arc::new(std::sync::Mutex::new(
        specs.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (q, r) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let next = q.lock().unwrap().pop();
                let Some((i, spec)) = next else { return };
                let name = spec.name.clone();
                let outcome = std::panic::catch_unwind(|| run(spec.clone()));
                match outcome {
                    Ok(o) => {
                        eprint!("{}", o.summary());
                        r.lock().unwrap().push((i, o));
                    }
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        r.lock().unwrap().push((
                            i,
                            Outcome {
                                spec,
                                faults: Vec::new(),
                                violations: vec![Violation::Evidence(format!(
                                    "scenario {name} panicked: {msg}"
                                ))],
                                intervals: Vec::new(),
                                store: StoreStats::default(),
                                probes_200: 0,
                                probes_total: 0,
                                compactions: 0,
                                duration: Duration::ZERO,
                                kept_dir: None,
                            },
                        ));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// Where scenario artefacts would go (for messages).
pub fn describe(dir: &Path) -> String {
    dir.display().to_string()
}
