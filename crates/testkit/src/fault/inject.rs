//! Fault injection: how each kind of fault is done to the world (signals to sidecars and etcd
//! members, proxy settings, `etcdctl`), healed, and recorded.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::checker::Violation;
use super::history::raw_now;
use super::kind::Fault;
use super::outcome::FaultRecord;
use super::proxy::{Dir, FaultProxy};
use super::scenario::{LIVENESS_SLACK, QUORUM_SLACK, TTL};
use super::world::{etcdctl_out, World};
use crate::etcd::etcdctl_command;

impl World {
    /// Waits for a holder, injects `fault`, heals it, and records how the lock fared.
    pub(super) fn run_fault(&mut self, fault: Fault) {
        self.check_processes();
        let before = TTL + LIVENESS_SLACK + QUORUM_SLACK;
        let Some(h) = self.wait_holder(before) else {
            self.no_holder(format!("(before {})", fault.name()), before);
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
            Fault::StaleLeader if m >= 3 => {
                let leader = self.leader();
                for p in &self.proxies {
                    p[leader].blackhole();
                }
                // Long enough for the sidecars' requests to the leader to time out (2 s) and
                // move to the followers.
                std::thread::sleep(Duration::from_millis(2500));
                self.cluster.pause_member(leader);
                std::thread::sleep(TTL + Duration::from_millis(1500));
                self.cluster.resume_member(leader);
                // The resumed member acts on its stale view before it hears of its successor;
                // the sidecars still reach only the others meanwhile.
                std::thread::sleep(Duration::from_millis(1000));
                for p in &self.proxies {
                    p[leader].heal();
                }
                // A member may crash on what it is asked meanwhile (etcd 3.5.1 can); the lock's
                // rule must hold all the same.
                self.revive_crashed_members();
                self.leader();
            }
            Fault::SyntheticRevoke => {
                let key = self.nodes[h]
                    .status()
                    .and_then(|s| s["key"].as_str().map(str::to_owned));
                self.proxies[h]
                    .iter()
                    .for_each(|p| p.delay(Duration::from_millis(300), Duration::ZERO));
                std::thread::sleep(Duration::from_millis(1000));
                match key {
                    Some(key) => {
                        if etcdctl_out(&self.cluster, &["del", &key]).is_none() {
                            self.violations
                                .push(Violation::Evidence(format!("etcdctl del {key} failed")));
                        }
                    }
                    None => self.violations.push(Violation::Evidence(
                        "the holder's /status named no key".into(),
                    )),
                }
                std::thread::sleep(Duration::from_secs(2));
                self.proxies[h].iter().for_each(FaultProxy::heal);
            }
            other => panic!("{} needs a 3-member cluster", other.name()),
        }
        if m >= 3 {
            self.revive_crashed_members();
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
            holder: Some(self.nodes[h].identity.clone()),
            early_revocation: None,
            prober_gap_ms: None,
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
        let tls = self.cluster.tls().cloned();
        let compactions = self.compactions.clone();
        let watch_rev = self.watch_rev.clone();
        let st = stop.clone();
        let compactor = std::thread::spawn(move || {
            let mut last = 0;
            while !st.load(Ordering::SeqCst) {
                let rev = watch_rev.load(Ordering::SeqCst);
                if rev > last {
                    let ok = etcdctl_command(&endpoints, tls.as_ref())
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
