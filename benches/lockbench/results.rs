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
    /// Idle fleet: the numbers of in-process `DistributedLock` contenders on one lock.
    pub fleet_ns: Vec<usize>,
    /// `lockkeeper run` processes in the sidecar fleet.
    pub fleet_sidecars: usize,
    /// The measurement window in which nobody acquires or releases.
    pub fleet_window: Duration,
    /// Hand-offs timed with the queue full, per fleet (and with one waiter).
    pub fleet_handoffs: usize,
    /// Lease TTL of every fleet contender, seconds (the renew interval is the library's
    /// default for it).
    pub fleet_ttl: u64,
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
            fleet_ns: vec![10, 100, 1000],
            fleet_sidecars: 20,
            fleet_window: Duration::from_secs(60),
            fleet_handoffs: 20,
            fleet_ttl: 10,
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
            fleet_ns: vec![3, 10],
            fleet_sidecars: 2,
            fleet_window: Duration::from_secs(3),
            fleet_handoffs: 3,
            fleet_ttl: 3,
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

/// One idle fleet: contenders queued on one lock (one holds, the rest wait), etcd's traffic over
/// a window in which nobody acquires or releases, then hand-offs timed with the queue full.
#[derive(Clone, Debug)]
pub struct FleetRun {
    /// `lib` (in-process handles), `lib_pair` (one holder, one waiter: the hand-off baseline),
    /// `sidecar` (`lockkeeper run` processes) or `empty` (no contender: the cluster alone).
    pub id: &'static str,
    pub label: String,
    /// Contenders on the lock, the holder included.
    pub contenders: usize,
    /// The library's default renew interval for the lease TTL used: one keepalive per
    /// contender, and the holder's ownership check, each this often.
    pub interval_s: f64,
    /// Seconds from the first contender starting until all were queued.
    pub setup_s: f64,
    /// Length of the measurement window (0: none was measured).
    pub window_s: f64,
    /// etcd's counters over the window, all contenders together.
    pub traffic: Option<Traffic>,
    /// Contenders that were not where they started the window at its end (the holder no longer
    /// holding, a waiter no longer queued).
    pub moved: usize,
    /// CPU of the contenders' own process(es) over the window, % of one core.
    pub client_cpu_pct: Option<f64>,
    /// Holder releases → the next waiter holds, with the queue full.
    pub handoff: Series,
    /// Keys left under the lock and leases left in etcd after everything was closed.
    pub leftover_keys: i64,
    pub leftover_leases: i64,
}

impl FleetRun {
    /// A run of `contenders` with nothing measured yet.
    pub fn empty(id: &'static str, label: &str, contenders: usize, interval: Duration) -> FleetRun {
        FleetRun {
            id,
            label: label.to_owned(),
            contenders,
            interval_s: interval.as_secs_f64(),
            setup_s: 0.0,
            window_s: 0.0,
            traffic: None,
            moved: 0,
            client_cpu_pct: None,
            handoff: Series::new(),
            leftover_keys: 0,
            leftover_leases: 0,
        }
    }

    /// etcd's counters per contender per second over the window.
    pub fn per_contender_s(&self) -> Option<Traffic> {
        let t = self.traffic.as_ref()?;
        (self.window_s > 0.0 && self.contenders > 0)
            .then(|| t.per(self.contenders as f64 * self.window_s))
    }

    /// Requests per contender per second: keepalives + unary + watch creates/cancels.
    pub fn total_rate(&self) -> Option<f64> {
        self.per_contender_s()
            .map(|t| t.keepalives + t.unary + t.watch_requests)
    }

    /// The most requests per contender per second the design allows over this window: one
    /// keepalive per renew interval for each contender and one ownership check per interval
    /// for the holder (shared over all contenders), each periodic stream counted with one
    /// extra event for the edges of the window (a period P shows at most W/P + 1 times in W).
    pub fn bound(&self) -> Option<f64> {
        if self.window_s <= 0.0 || self.interval_s <= 0.0 || self.contenders == 0 {
            return None;
        }
        let per_stream = (self.window_s / self.interval_s + 1.0) / self.window_s;
        Some(per_stream * (1.0 + 1.0 / self.contenders as f64))
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
    pub fleet: Vec<FleetRun>,
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
