//! What a scenario produced: a record per fault (did the holding survive it, how long until the
//! next holder, was the key revoked early), the evidence's counters and every violation, with a
//! readable summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::checker::Violation;
use super::history::Interval;
use super::kind::Fault;
use super::scenario::{Spec, LIVENESS_SLACK, TTL};
use super::store::StoreStats;
use super::world::{Evidence, HOGS};

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
    /// Identity of the holder at injection.
    pub holder: Option<String>,
    /// The holding at injection found its key gone this long before its deadline (an early
    /// revocation by etcd, or the synthetic one).
    pub early_revocation: Option<Duration>,
    /// From the old holder's last `/readyz` 200 (its receipt) to the next holder's first 200
    /// (its request), as the prober saw them; negative would be an overlap.
    pub prober_gap_ms: Option<f64>,
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
    /// etcd members that crashed on their own during the scenario (restarted; not a violation
    /// of the lock's rule, which must hold regardless).
    pub etcd_crashes: Vec<String>,
}

impl Outcome {
    /// The outcome of a scenario that panicked: that is its one violation.
    pub fn panicked(spec: Spec, message: &str) -> Outcome {
        let name = spec.name.clone();
        Outcome {
            spec,
            faults: Vec::new(),
            violations: vec![Violation::Evidence(format!(
                "scenario {name} panicked: {message}"
            ))],
            intervals: Vec::new(),
            store: StoreStats::default(),
            probes_200: 0,
            probes_total: 0,
            compactions: 0,
            duration: Duration::ZERO,
            kept_dir: None,
            etcd_crashes: Vec::new(),
        }
    }

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
        if self.spec.busy || self.spec.lock_delay.is_some() {
            let _ = writeln!(
                s,
                "  busy {} (CPU hogs: {}), lock-delay {}",
                self.spec.busy,
                if self.spec.busy { HOGS } else { 0 },
                self.spec
                    .lock_delay
                    .map_or("default (the margin)".to_string(), |d| format!("{d:?}"))
            );
        }
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
            if matches!(f.fault, Fault::StaleLeader | Fault::SyntheticRevoke) {
                let _ = writeln!(
                    s,
                    "  {:<36} early revocation {} prober gap {}",
                    "",
                    f.early_revocation.map_or("no".to_string(), |d| format!(
                        "yes ({:.1} ms before the deadline)",
                        d.as_secs_f64() * 1e3
                    )),
                    f.prober_gap_ms
                        .map_or("- (no hand-over)".to_string(), |g| format!("{g:.1} ms"))
                );
            }
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
        for c in &self.etcd_crashes {
            let _ = writeln!(s, "  etcd member crashed (restarted): {c}");
        }
        if let Some(d) = &self.kept_dir {
            let _ = writeln!(s, "  logs and histories kept in {}", d.display());
        }
        s
    }
}

/// Fills in, per fault, what became of the holding it hit (from the evidence), and returns the
/// fail-overs that took too long.
pub(super) fn measure(records: &mut [FaultRecord], ev: &Evidence) -> Vec<Violation> {
    let mut violations = Vec::new();
    let next_injects: Vec<u64> = records
        .iter()
        .skip(1)
        .map(|r| r.inject)
        .chain(std::iter::once(u64::MAX))
        .collect();
    for (r, next_inject) in records.iter_mut().zip(next_injects) {
        if let Some(t) = r.token_before {
            // The next holding that began before the next fault, if any.
            let next_holding = ev
                .intervals
                .iter()
                .filter(|i| i.token > t && i.start >= r.inject && i.start < next_inject)
                .min_by_key(|i| i.start);
            let next = next_holding.map(|i| i.start);
            r.kept = next.is_none();
            r.failover = next.map(|s| Duration::from_nanos(s - r.inject));
            let old_end = ev
                .intervals
                .iter()
                .filter(|i| i.token == t)
                .map(|i| i.end)
                .max();
            if let (Some(f), Some(end)) = (r.failover, old_end) {
                let next = r.inject + f.as_nanos() as u64;
                r.gap = Some(Duration::from_nanos(next.saturating_sub(end)));
            }
            // The old holding's key vanished before its deadline during this fault: by its own
            // history (it saw its key gone early), or by the watch (the deletion arrived while
            // the holder was still ready, before its deadline; the holder may learn late).
            let key = ev
                .creations
                .iter()
                .find(|c| c.create_revision == t)
                .map(|c| c.key.clone());
            r.early_revocation = ev
                .intervals
                .iter()
                .filter(|i| i.token == t && i.end >= r.inject && i.end < next_inject)
                .flat_map(|i| {
                    let by_watch = ev
                        .deletions
                        .iter()
                        .filter(|d| Some(&d.key) == key.as_ref() && d.revision > t)
                        .filter(|d| d.seen >= i.start && d.seen < i.end)
                        .map(|d| i.last_deadline.saturating_sub(d.seen))
                        .filter(|&early| early > 20_000_000);
                    i.lost_early_ns.into_iter().chain(by_watch)
                })
                .max()
                .map(Duration::from_nanos);
            // The hand-over as the prober saw it.
            if let (Some(n), Some(old), Some(end)) = (next_holding, r.holder.as_ref(), old_end) {
                let ready = |id: &str| {
                    ev.probes
                        .get(id)
                        .into_iter()
                        .flatten()
                        .filter(|p| p.ready == Some(true))
                };
                let first_new = ready(&n.identity)
                    .filter(|p| p.send >= n.start)
                    .map(|p| p.send)
                    .min();
                let last_old = ready(old)
                    .filter(|p| p.send <= end && p.recv + 1_000_000_000 >= r.inject)
                    .map(|p| p.recv)
                    .max();
                if let (Some(a), Some(b)) = (last_old, first_new) {
                    r.prober_gap_ms = Some((b as f64 - a as f64) / 1e6);
                }
            }
            let bound = TTL + LIVENESS_SLACK;
            // Faults aimed at the holder alone: someone else must take over within the bound.
            if r.fault.holder_only() && !r.kept && r.failover.is_none_or(|f| f > bound) {
                violations.push(Violation::Liveness {
                    fault: format!("{} (fail-over {:?})", r.fault.name(), r.failover),
                    waited_ms: r.failover.map_or(u64::MAX, |f| f.as_millis() as u64),
                    bound_ms: bound.as_millis() as u64,
                });
            }
        }
    }
    violations
}
