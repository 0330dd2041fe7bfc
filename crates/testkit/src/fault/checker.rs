//! The safety checker: the rule of DESIGN.md ("the intervals during which each contender
//! answers 200 never overlap, and fencing tokens increase") checked on recorded histories, plus
//! the cross-checks that keep the recorder honest.
//!
//! Pure functions over [`Interval`]s, [`Probe`]s, [`Creation`]s and [`StoreStats`], so the
//! checker itself is unit-tested on synthetic histories (tests/safety.rs): a checker that cannot
//! fail proves nothing.

use std::collections::BTreeMap;
use std::fmt;

use super::history::{ms, Interval};
use super::prober::Probe;
use super::store::StoreStats;
use super::watch::Creation;

/// One broken property.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// Two readiness intervals of different holdings intersect.
    Overlap {
        a: Interval,
        b: Interval,
        overlap_ns: u64,
    },
    /// A holding that started later has a token not above an earlier one's.
    TokenOrder { earlier: Interval, later: Interval },
    /// No key with this create revision and the holder's identity was seen by the watch.
    TokenNotCreated { interval: Interval },
    /// The prober got a 200 from a sidecar outside every interval its history records: the
    /// recorder is not conservative.
    ProbeUnrecorded { identity: String, probe: Probe },
    /// Stretches the prober saw two sidecars ready intersect.
    ProberOverlap {
        a: (String, u64, u64),
        b: (String, u64, u64),
    },
    /// The store accepted writes under one token from several writers.
    StoreTokenShared { token: i64, writers: Vec<String> },
    /// No holder within the bound after a fault healed.
    Liveness {
        fault: String,
        waited_ms: u64,
        bound_ms: u64,
    },
    /// A sidecar exited without being told to, exited non-zero after SIGTERM, or panicked.
    Crash { identity: String, detail: String },
    /// A key or lease was left behind after a clean shutdown.
    Leftover { detail: String },
    /// The process clock of a run did not run at the rate the test set up.
    ClockRate {
        identity: String,
        run: usize,
        expected: f64,
        measured: f64,
    },
    /// Anything else that makes the run unusable as evidence (unparsable history, lost watch
    /// events).
    Evidence(String),
}

impl Violation {
    /// Short name, for counting by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Overlap { .. } => "overlap",
            Violation::TokenOrder { .. } => "token-order",
            Violation::TokenNotCreated { .. } => "token-not-created",
            Violation::ProbeUnrecorded { .. } => "probe-unrecorded",
            Violation::ProberOverlap { .. } => "prober-overlap",
            Violation::StoreTokenShared { .. } => "store-token-shared",
            Violation::Liveness { .. } => "liveness",
            Violation::Crash { .. } => "crash",
            Violation::Leftover { .. } => "leftover",
            Violation::ClockRate { .. } => "clock-rate",
            Violation::Evidence(_) => "evidence",
        }
    }
}

fn show(i: &Interval) -> String {
    format!(
        "{}#{} token {} [{:.1} ms, {:.1} ms] (end by {:?})",
        i.identity,
        i.run,
        i.token,
        ms(i.start),
        ms(i.end),
        i.end_by
    )
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Overlap { a, b, overlap_ns } => write!(
                f,
                "overlap of {:.1} ms: {} and {}",
                ms(*overlap_ns),
                show(a),
                show(b)
            ),
            Violation::TokenOrder { earlier, later } => write!(
                f,
                "token not increasing: {} then {}",
                show(earlier),
                show(later)
            ),
            Violation::TokenNotCreated { interval } => write!(
                f,
                "no key created with revision {} by {}: {}",
                interval.token,
                interval.identity,
                show(interval)
            ),
            Violation::ProbeUnrecorded { identity, probe } => write!(
                f,
                "prober got 200 from {identity} in [{:.1} ms, {:.1} ms], outside its recorded intervals",
                ms(probe.send),
                ms(probe.recv)
            ),
            Violation::ProberOverlap { a, b } => write!(
                f,
                "prober saw {} ready over [{:.1}, {:.1}] ms and {} over [{:.1}, {:.1}] ms",
                a.0,
                ms(a.1),
                ms(a.2),
                b.0,
                ms(b.1),
                ms(b.2)
            ),
            Violation::StoreTokenShared { token, writers } => {
                write!(f, "store accepted token {token} from {writers:?}")
            }
            Violation::Liveness {
                fault,
                waited_ms,
                bound_ms,
            } => write!(
                f,
                "no holder {waited_ms} ms after {fault} healed (bound {bound_ms} ms)"
            ),
            Violation::Crash { identity, detail } => write!(f, "{identity} crashed: {detail}"),
            Violation::Leftover { detail } => write!(f, "left behind: {detail}"),
            Violation::ClockRate {
                identity,
                run,
                expected,
                measured,
            } => write!(
                f,
                "{identity}#{run} clock ran at {measured:.3}, expected {expected:.3}"
            ),
            Violation::Evidence(s) => write!(f, "evidence: {s}"),
        }
    }
}

/// At most one overlap report per pair; sweeps by start.
pub fn overlaps(intervals: &[Interval]) -> Vec<Violation> {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by_key(|i| (i.start, i.end));
    let mut out = Vec::new();
    for (n, b) in sorted.iter().enumerate() {
        for a in &sorted[..n] {
            if a.end > b.start && !same_holding(a, b) {
                let overlap_ns = a.end.min(b.end) - b.start;
                out.push(Violation::Overlap {
                    a: (*a).clone(),
                    b: (*b).clone(),
                    overlap_ns,
                });
            }
        }
    }
    out
}

fn same_holding(a: &Interval, b: &Interval) -> bool {
    a.identity == b.identity && a.run == b.run && a.token == b.token
}

/// Tokens strictly increase in the order holdings started.
pub fn token_order(intervals: &[Interval]) -> Vec<Violation> {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by_key(|i| (i.start, i.end));
    let mut out = Vec::new();
    let mut best: Option<&Interval> = None;
    for i in sorted {
        if let Some(b) = best {
            if i.token <= b.token && !same_holding(i, b) {
                out.push(Violation::TokenOrder {
                    earlier: b.clone(),
                    later: i.clone(),
                });
            }
        }
        if best.is_none_or(|b| i.token > b.token) {
            best = Some(i);
        }
    }
    out
}

/// Every token is the create revision of a key the watch saw created with the holder's identity.
pub fn tokens_match_watch(intervals: &[Interval], creations: &[Creation]) -> Vec<Violation> {
    let by_rev: BTreeMap<i64, &Creation> =
        creations.iter().map(|c| (c.create_revision, c)).collect();
    intervals
        .iter()
        .filter(|i| by_rev.get(&i.token).is_none_or(|c| c.value != i.identity))
        .map(|i| Violation::TokenNotCreated {
            interval: i.clone(),
        })
        .collect()
}

/// Every 200 the prober got lies within a recorded interval of that sidecar.
pub fn probes_within_history(
    intervals: &[Interval],
    probes: &BTreeMap<String, Vec<Probe>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (identity, samples) in probes {
        let mine: Vec<&Interval> = intervals
            .iter()
            .filter(|i| &i.identity == identity)
            .collect();
        for p in samples.iter().filter(|p| p.ready == Some(true)) {
            let covered = mine.iter().any(|i| i.start <= p.recv && i.end >= p.send);
            if !covered {
                out.push(Violation::ProbeUnrecorded {
                    identity: identity.clone(),
                    probe: *p,
                });
            }
        }
    }
    out
}

/// The stretches each sidecar was certainly ready according to the prober alone: for a run of
/// consecutive 200 answers, from the first answer's receipt to the last one's request (readiness
/// does not flicker within a holding). Single answers give no stretch.
pub fn prober_stretches(probes: &BTreeMap<String, Vec<Probe>>) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for (identity, samples) in probes {
        let mut run: Option<(u64, u64)> = None;
        let mut flush = |run: &mut Option<(u64, u64)>| {
            if let Some((from, to)) = run.take() {
                if to > from {
                    out.push((identity.clone(), from, to));
                }
            }
        };
        for p in samples {
            if p.ready == Some(true) {
                match run.as_mut() {
                    Some(r) => r.1 = p.send,
                    None => run = Some((p.recv, p.recv)),
                }
            } else {
                flush(&mut run);
            }
        }
        flush(&mut run);
    }
    out
}

/// Two sidecars the prober saw ready over intersecting stretches.
pub fn prober_overlaps(probes: &BTreeMap<String, Vec<Probe>>) -> Vec<Violation> {
    let mut s = prober_stretches(probes);
    s.sort_by_key(|x| x.1);
    let mut out = Vec::new();
    for (n, b) in s.iter().enumerate() {
        for a in &s[..n] {
            if a.0 != b.0 && a.2 > b.1 {
                out.push(Violation::ProberOverlap {
                    a: a.clone(),
                    b: b.clone(),
                });
            }
        }
    }
    out
}

/// One writer per token in the fenced store.
pub fn store_fencing(stats: &StoreStats) -> Vec<Violation> {
    stats
        .writers
        .iter()
        .filter(|(_, w)| w.len() > 1)
        .map(|(t, w)| Violation::StoreTokenShared {
            token: *t,
            writers: w.iter().cloned().collect(),
        })
        .collect()
}

/// Everything the recorded evidence must satisfy.
pub fn check_all(
    intervals: &[Interval],
    probes: &BTreeMap<String, Vec<Probe>>,
    creations: &[Creation],
    store: &StoreStats,
) -> Vec<Violation> {
    let mut v = overlaps(intervals);
    v.extend(token_order(intervals));
    v.extend(tokens_match_watch(intervals, creations));
    v.extend(probes_within_history(intervals, probes));
    v.extend(prober_overlaps(probes));
    v.extend(store_fencing(store));
    v
}
