//! The world a scenario runs in: a real etcd cluster, real `lockkeeper run` sidecars (optionally
//! behind fault proxies, optionally under `faketime`), an external prober, a watch on the lock
//! prefix, a fenced store written by a model application beside each sidecar, and on a busy
//! machine CPU hogs. It starts the sidecars, tells who holds the lock, and at the end shuts every
//! sidecar down cleanly, checks that nothing is left in etcd and hands over the evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tempfile::TempDir;

use super::checker::Violation;
use super::history::{raw_now, read_history, Interval};
use super::node::Node;
use super::outcome::FaultRecord;
use super::prober::{Probe, Prober};
use super::proxy::FaultProxy;
use super::scenario::{Spec, LIVENESS_SLACK, TTL};
use super::store::{FencedStore, StoreStats, Writers};
use super::watch::{Creation, Deletion, Watcher};
use crate::{free_port, unique_name, EtcdCluster};

/// How many hogs a busy scenario runs.
pub const HOGS: usize = 2;

/// Busy-loop processes competing with etcd and the sidecars for the CPU; killed on drop.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start(n: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) struct World {
    pub(super) spec: Spec,
    pub(super) rng: StdRng,
    pub(super) cluster: EtcdCluster,
    /// proxies[node][member]
    pub(super) proxies: Vec<Vec<FaultProxy>>,
    pub(super) nodes: Vec<Node>,
    pub(super) violations: Vec<Violation>,
    pub(super) records: Vec<FaultRecord>,
    pub(super) compactions: Arc<AtomicU64>,
    /// The prefix watch's progress: compacting up to it loses no event.
    pub(super) watch_rev: Arc<AtomicI64>,
    pub(super) etcd_crashes: Vec<String>,
    /// The lock's key prefix.
    prefix: String,
    /// The sidecars' logs and histories.
    dir: TempDir,
    watcher: Watcher,
    prober: Prober,
    store: FencedStore,
    writers: Writers,
    hogs: Option<Hogs>,
}

/// What the recorders saw, beside the sidecars' own histories.
pub(super) struct Evidence {
    pub(super) intervals: Vec<Interval>,
    pub(super) probes: BTreeMap<String, Vec<Probe>>,
    pub(super) creations: Vec<Creation>,
    pub(super) deletions: Vec<Deletion>,
    pub(super) store: StoreStats,
}

/// What is left of a world once it is shut down.
pub(super) struct Ended {
    pub(super) violations: Vec<Violation>,
    pub(super) records: Vec<FaultRecord>,
    pub(super) compactions: u64,
    pub(super) etcd_crashes: Vec<String>,
    pub(super) dir: TempDir,
    pub(super) evidence: Evidence,
}

/// `etcdctl ARGS` on the cluster with short timeouts; its stdout, `None` if it failed.
pub(super) fn etcdctl_out(cluster: &EtcdCluster, args: &[&str]) -> Option<String> {
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
    /// The cluster, proxies, recorders and (not yet started) sidecars for `spec`.
    pub(super) fn new(spec: &Spec) -> World {
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
                    lock_delay: spec.lock_delay,
                    rate: skew.map_or(1.0, |s| s.rate),
                    lock: lock.clone(),
                    dir: dir.path().to_owned(),
                    runs: Vec::new(),
                    sidecar: None,
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
        let hogs = spec.busy.then(|| Hogs::start(HOGS));
        World {
            rng: StdRng::seed_from_u64(spec.seed),
            spec: spec.clone(),
            cluster,
            proxies,
            nodes,
            violations: Vec::new(),
            records: Vec::new(),
            compactions: Arc::new(AtomicU64::new(0)),
            watch_rev: watcher.progress(),
            etcd_crashes: Vec::new(),
            prefix,
            dir,
            watcher,
            prober,
            store,
            writers,
            hogs,
        }
    }

    /// Starts every sidecar, the skewed one first, and waits for the first holder.
    pub(super) fn start_sidecars(&mut self) {
        // The skewed sidecar first, so that it holds first.
        let order: Vec<usize> = match self.spec.skew {
            Some(s) => std::iter::once(s.node)
                .chain((0..self.spec.nodes).filter(|&i| i != s.node))
                .collect(),
            None => (0..self.spec.nodes).collect(),
        };
        for (k, &i) in order.iter().enumerate() {
            self.nodes[i].spawn();
            if k == 0 && self.await_holder(raw_now(), TTL + LIVENESS_SLACK).is_err() {
                self.no_holder("(start)".into(), TTL + LIVENESS_SLACK);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    /// No holder within `bound`, at `when`.
    pub(super) fn no_holder(&mut self, when: String, bound: Duration) {
        let ms = bound.as_millis() as u64;
        self.violations.push(Violation::Liveness {
            fault: when,
            waited_ms: ms,
            bound_ms: ms,
        });
    }

    pub(super) fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].ready())
    }

    /// Polls until some sidecar is ready; the time since `from` (raw ns) when it is.
    pub(super) fn await_holder(&self, from: u64, bound: Duration) -> Result<Duration, Duration> {
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

    pub(super) fn wait_holder(&self, limit: Duration) -> Option<usize> {
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

    pub(super) fn check_processes(&mut self) {
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

    pub(super) fn token_of(&self, i: usize) -> Option<i64> {
        self.nodes[i].status()?["fencing_token"].as_i64()
    }

    pub(super) fn restart(&mut self, i: usize) {
        if !self.nodes[i].running() {
            self.nodes[i].spawn();
        }
    }

    pub(super) fn term(&mut self, i: usize) {
        if let Err(e) = self.nodes[i].term() {
            self.violations.push(Violation::Crash {
                identity: self.nodes[i].identity.clone(),
                detail: e,
            });
        }
    }

    /// Restarts etcd members that exited on their own, noting why they did.
    pub(super) fn revive_crashed_members(&mut self) {
        for i in 0..self.cluster.member_count() {
            if let Some(why) = self.cluster.member_crash(i) {
                self.etcd_crashes
                    .push(format!("m{i} during {}: {why}", self.spec.name));
                self.cluster.kill_member(i);
                self.cluster.restart_member(i);
            }
        }
    }

    pub(super) fn leader(&self) -> usize {
        self.cluster.wait_leader(&[], Duration::from_secs(20))
    }

    /// Shuts every sidecar down cleanly (nothing may be left behind in etcd), stops the
    /// recorders, and reads the sidecars' histories.
    pub(super) fn shut_down(mut self) -> Ended {
        self.check_processes();
        if self.wait_holder(TTL + LIVENESS_SLACK).is_none() {
            self.no_holder("(end)".into(), TTL + LIVENESS_SLACK);
        }
        let clean_leases: BTreeSet<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.status()?["lease_id"].as_str().map(str::to_owned))
            .collect();
        for i in 0..self.nodes.len() {
            self.term(i);
        }
        self.check_nothing_left(&clean_leases);
        let revision = cluster_revision(&self.cluster, &self.prefix).unwrap_or(0);
        if !self.watcher.caught_up(revision, Duration::from_secs(10)) {
            self.violations.push(Violation::Evidence(format!(
                "the prefix watch did not reach revision {revision}"
            )));
        }
        drop(self.hogs);
        let probes = self.prober.finish();
        self.writers.finish();
        let deletions = self.watcher.deletions();
        let (creations, watch_errors) = self.watcher.finish();
        for e in watch_errors {
            self.violations.push(Violation::Evidence(e));
        }

        let (intervals, history_violations) = read_histories(&self.nodes);
        self.violations.extend(history_violations);
        Ended {
            violations: self.violations,
            records: self.records,
            compactions: self.compactions.load(Ordering::SeqCst),
            etcd_crashes: self.etcd_crashes,
            dir: self.dir,
            evidence: Evidence {
                intervals,
                probes,
                creations,
                deletions,
                store: self.store.stats(),
            },
        }
    }
    /// After a clean shutdown neither the keys nor the leases of `clean_leases` may remain,
    /// and the leases of killed sidecars must expire on their own.
    fn check_nothing_left(&mut self, clean_leases: &BTreeSet<String>) {
        let keys = etcdctl_out(
            &self.cluster,
            &["get", "--prefix", "--keys-only", &self.prefix],
        )
        .unwrap_or_default();
        let leases = etcdctl_out(&self.cluster, &["lease", "list"]).unwrap_or_default();
        for lease in clean_leases {
            if keys
                .lines()
                .any(|k| k.trim().ends_with(&format!("/{lease}")))
            {
                self.violations.push(Violation::Leftover {
                    detail: format!("key of lease {lease} after a clean shutdown"),
                });
            }
            if leases.lines().any(|l| l.trim() == lease) {
                self.violations.push(Violation::Leftover {
                    detail: format!("lease {lease} after a clean shutdown"),
                });
            }
        }
        let drained = Instant::now();
        loop {
            let keys = etcdctl_out(
                &self.cluster,
                &["get", "--prefix", "--keys-only", &self.prefix],
            );
            let leases = etcdctl_out(&self.cluster, &["lease", "list"]);
            let empty = keys.as_deref().is_some_and(|k| k.trim().is_empty())
                && leases
                    .as_deref()
                    .is_some_and(|l| l.lines().filter(|x| !x.trim().is_empty()).count() <= 1);
            if empty {
                break;
            }
            if drained.elapsed() > TTL + Duration::from_secs(12) {
                self.violations.push(Violation::Leftover {
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
    }
}

/// Every run's history as intervals, and what is wrong with them: unreadable histories, a
/// clock that did not run at the rate set up, a panic in a log.
fn read_histories(nodes: &[Node]) -> (Vec<Interval>, Vec<Violation>) {
    let mut violations = Vec::new();
    let mut intervals = Vec::new();
    for n in nodes {
        for (run, r) in n.runs.iter().enumerate() {
            match read_history(&r.history, &n.identity, run, r.rate) {
                Ok(h) => {
                    if let Some(m) = h.clock.measured_rate {
                        if h.clock.baseline_ns >= 2_000_000_000
                            && (m - r.rate).abs() > 0.03 * r.rate
                        {
                            violations.push(Violation::ClockRate {
                                identity: n.identity.clone(),
                                run,
                                expected: r.rate,
                                measured: m,
                            });
                        }
                    }
                    intervals.extend(h.intervals);
                }
                Err(e) => violations.push(Violation::Evidence(e)),
            }
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            if log.contains("panicked") {
                violations.push(Violation::Crash {
                    identity: n.identity.clone(),
                    detail: format!("run {run} panicked (see {})", r.log.display()),
                });
            }
        }
    }
    (intervals, violations)
}
