//! What the phases measured, and the plan (iteration counts) they followed.

use std::time::Duration;

use crate::etcdmetrics::Traffic;
use crate::stats::Series;

/// Iteration counts; `Plan::full()` for docs/benchmarks.md, `Plan::smoke()` for CI.
#[derive(Clone, Debug)]
pub struct Plan {
    pub smoke: bool,
    /// Repeated runs of every latency measurement.
    pub runs: usize,
    /// Uncontended acquire + release samples per run and implementation.
    pub uncontended: usize,
    /// In-process hand-offs per run (library, floor).
    pub handoff_lib: usize,
    /// Process hand-offs per run (sidecar, exec, etcdctl, python-etcd3).
    pub handoff_proc: usize,
    /// Pause after the successor is queued, before the holder lets go (longer than etcd's
    /// 100 ms watcher sync loop, so every implementation's watch is in steady state).
    pub settle: Duration,
    /// The "fresh successor" rows: released this soon after the successor queued.
    pub settle_fresh: Duration,
    pub handoff_fresh: usize,
    pub failover_rounds: usize,
    /// Concurrent holder/successor pairs per implementation in each fail-over round.
    pub failover_pairs: usize,
    pub failover_ttl: u64,
    pub contention_ns: Vec<usize>,
    pub contention_runs: usize,
    /// python-etcd3 contention: each waiter calls `acquire(timeout=W)` again until it holds
    /// (W = this many seconds), for at most `python_cap` seconds.
    pub python_watch_timeout: u64,
    pub python_cap: u64,
    pub footprint: Duration,
    pub many: usize,
    pub many_runs: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            runs: 5,
            uncontended: 200,
            handoff_lib: 60,
            handoff_proc: 16,
            settle: Duration::from_millis(150),
            settle_fresh: Duration::from_millis(30),
            handoff_fresh: 10,
            failover_rounds: 5,
            failover_pairs: 3,
            failover_ttl: 5,
            contention_ns: vec![10, 100, 500],
            contention_runs: 3,
            python_watch_timeout: 2,
            python_cap: 60,
            footprint: Duration::from_secs(60),
            many: 1000,
            many_runs: 3,
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            runs: 1,
            uncontended: 5,
            handoff_lib: 3,
            handoff_proc: 2,
            settle: Duration::from_millis(150),
            settle_fresh: Duration::from_millis(30),
            handoff_fresh: 1,
            failover_rounds: 1,
            failover_pairs: 1,
            failover_ttl: 2,
            contention_ns: vec![3, 6],
            contention_runs: 1,
            python_watch_timeout: 2,
            python_cap: 20,
            footprint: Duration::from_secs(2),
            many: 20,
            many_runs: 1,
        }
    }
}

/// One latency measurement of one implementation.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub label: String,
    pub how: String,
    pub series: Series,
}

impl Row {
    pub fn new(id: &'static str, label: &str, how: &str) -> Row {
        Row {
            id,
            label: label.to_owned(),
            how: how.to_owned(),
            series: Series::new(),
        }
    }
}

/// One contention run: N contenders, each acquiring and releasing once.
#[derive(Clone, Debug)]
pub struct ContRun {
    /// Seconds from the start until the last contender was done.
    pub wall: f64,
    pub ok: usize,
    pub failed: usize,
    /// Waits that ended only because the watch timed out (python-etcd3's lost wake-ups).
    pub lost_wakeups: usize,
    pub traffic: Traffic,
}

impl ContRun {
    /// Hand-overs per second.
    pub fn rate(&self) -> Option<f64> {
        (self.ok > 0 && self.wall > 0.0).then(|| self.ok as f64 / self.wall)
    }
}

#[derive(Clone, Debug)]
pub struct Contention {
    pub id: &'static str,
    pub label: String,
    pub n: usize,
    pub runs: Vec<ContRun>,
}

#[derive(Clone, Debug)]
pub struct Footprint {
    pub label: String,
    pub role: &'static str,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_pct: f64,
    pub secs: f64,
}

/// Many distinct locks (or floor key pairs) at once: operations per second in each run.
#[derive(Clone, Debug)]
pub struct Many {
    pub id: &'static str,
    pub label: String,
    pub how: String,
    pub ops_per_s: Vec<f64>,
    pub failed: usize,
    pub requests_per_op: Vec<f64>,
}

impl Many {
    pub fn new(id: &'static str, label: &str, how: String) -> Many {
        Many {
            id,
            label: label.to_owned(),
            how,
            ops_per_s: vec![],
            failed: 0,
            requests_per_op: vec![],
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub uncontended: Vec<Row>,
    pub handoff: Vec<Row>,
    pub failover: Vec<Row>,
    pub contention: Vec<Contention>,
    pub footprint: Vec<Footprint>,
    pub binaries: Vec<(String, u64)>,
    pub many: Vec<Many>,
    /// Problems met on the way (failed attempts, phases that errored).
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    pub phase_secs: Vec<(String, f64)>,
    pub leader: Option<usize>,
    pub total_secs: f64,
}

impl Results {
    pub fn row<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
        rows.iter().find(|r| r.id == id)
    }
}
