//! The sidecars' own readiness histories (`--history-file`), parsed into the intervals during
//! which each could have answered `/readyz` with 200: the main evidence the safety checker reads
//! (beside the [prober](super::prober), the [watch](super::watch) and the
//! [store](super::store)).
//!
//! Everything is stamped on `CLOCK_MONOTONIC_RAW` in nanoseconds, the clock the sidecars stamp
//! their histories with (unaffected by `faketime`); [`raw_now`] reads it here.

use std::path::Path;

/// Nanoseconds on `CLOCK_MONOTONIC_RAW` (this test process is never under `faketime`).
pub fn raw_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_RAW)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds between two raw stamps, for messages.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// How an interval's end was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndBy {
    /// The `unready` stamp, taken after the state left `held`.
    Unready,
    /// The last published deadline, mapped onto the raw clock (the process died, or its clock
    /// reached the deadline before the state changed).
    Deadline,
}

/// One stretch during which a sidecar could have answered `/readyz` with 200, conservatively:
/// it certainly did not before `start` nor after `end`.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// The sidecar slot (its identity, also the value of its key).
    pub identity: String,
    /// Which process run of that slot (a restart is a new run).
    pub run: usize,
    pub token: i64,
    pub start: u64,
    pub end: u64,
    pub end_by: EndBy,
    /// The sidecar found its key gone (`unready` with state `lost`) this long before its last
    /// published deadline (mapped at the measured clock rate, no allowance; only when more than
    /// 20 ms): etcd deleted the key while the holder still counted on it (an early revocation).
    pub lost_early_ns: Option<u64>,
    /// The last published deadline on the raw clock, without the allowances (when it most
    /// likely fell).
    pub last_deadline: u64,
}

/// The clock of one process run, measured from its history's clock pairs.
#[derive(Clone, Copy, Debug)]
pub struct ClockFit {
    /// Process-clock nanoseconds per raw nanosecond, over the longest baseline in the file.
    pub measured_rate: Option<f64>,
    /// Raw nanoseconds the measurement spans.
    pub baseline_ns: u64,
}

/// A history file parsed into readiness intervals.
#[derive(Clone, Debug)]
pub struct RunHistory {
    pub intervals: Vec<Interval>,
    pub clock: ClockFit,
    pub records: usize,
}

#[derive(Clone, Copy, Debug)]
struct Pair {
    raw: u64,
    mono: u64,
}

/// Parses one process run's history. `expected_rate` is the process clock's rate the test set
/// up (1.0, or the `faketime` factor); when the file spans at least a second the measured rate
/// is used instead, and the slower of the two maps deadlines (a slower clock reaches its
/// deadline later in real time, so that is the conservative choice). A 1 % allowance and 2 ms
/// are added on top.
pub fn parse_history(
    text: &str,
    identity: &str,
    run: usize,
    expected_rate: f64,
) -> Result<RunHistory, String> {
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{identity} run {run} line {}: {e}: {line}", n + 1))?;
        records.push(v);
    }
    let pair = |v: &serde_json::Value| -> Option<Pair> {
        Some(Pair {
            raw: v["raw_ns"].as_u64()?,
            mono: v["mono_ns"].as_u64()?,
        })
    };
    let pairs: Vec<Pair> = records.iter().filter_map(pair).collect();
    if pairs.len() != records.len() {
        return Err(format!(
            "{identity} run {run}: a record lacks its clock pair"
        ));
    }
    let (first, last) = match (pairs.first(), pairs.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => {
            return Ok(RunHistory {
                intervals: Vec::new(),
                clock: ClockFit {
                    measured_rate: None,
                    baseline_ns: 0,
                },
                records: 0,
            })
        }
    };
    let baseline_ns = last.raw.saturating_sub(first.raw);
    let measured_rate = (baseline_ns >= 1_000_000_000)
        .then(|| (last.mono - first.mono) as f64 / baseline_ns as f64);
    let rate = measured_rate.map_or(expected_rate, |m| m.min(expected_rate)) * 0.99;
    // Raw instant at which the process clock reaches `deadline`, from the pair read with it.
    let to_raw = |at: Pair, deadline: u64| -> u64 {
        let ahead = deadline.saturating_sub(at.mono) as f64 / rate;
        at.raw + ahead as u64 + 2_000_000
    };
    // The same without the allowances: when the deadline most likely fell (for early losses).
    let plain_rate = measured_rate.map_or(expected_rate, |m| m.min(expected_rate));
    let to_plain = |at: Pair, deadline: u64| -> u64 {
        at.raw + (deadline.saturating_sub(at.mono) as f64 / plain_rate) as u64
    };

    struct Open {
        token: i64,
        start: u64,
        /// Raw instant the last published deadline maps to.
        deadline_raw: u64,
        /// The same, without the allowances.
        deadline_plain: u64,
    }
    let mut open: Option<Open> = None;
    let mut intervals = Vec::new();
    let close =
        |o: Open, end: u64, end_by: EndBy, lost_at: Option<u64>, out: &mut Vec<Interval>| {
            out.push(Interval {
                identity: identity.to_owned(),
                run,
                token: o.token,
                start: o.start,
                end: end.max(o.start),
                end_by,
                lost_early_ns: lost_at
                    .map(|at| o.deadline_plain.saturating_sub(at))
                    .filter(|&early| early > 20_000_000),
                last_deadline: o.deadline_plain,
            });
        };
    for (v, p) in records.iter().zip(&pairs) {
        let token = v["token"].as_i64();
        match v["event"].as_str() {
            Some("start") => {}
            Some("ready") => {
                if let Some(o) = open.take() {
                    let end = o.deadline_raw;
                    close(o, end, EndBy::Deadline, None, &mut intervals);
                }
                let token = token.ok_or_else(|| format!("{identity}: ready without token"))?;
                let (deadline_raw, deadline_plain) = match v["deadline_ns"].as_u64() {
                    Some(d) => (to_raw(*p, d), to_plain(*p, d)),
                    None => (p.raw, p.raw), // no deadline: readiness never turned true
                };
                open = Some(Open {
                    token,
                    start: p.raw,
                    deadline_raw,
                    deadline_plain,
                });
            }
            Some("deadline") => {
                if let (Some(o), Some(d)) = (open.as_mut(), v["deadline_ns"].as_u64()) {
                    if token == Some(o.token) {
                        o.deadline_raw = o.deadline_raw.max(to_raw(*p, d));
                        o.deadline_plain = o.deadline_plain.max(to_plain(*p, d));
                    }
                }
            }
            Some("unready") => {
                if let Some(o) = open.take() {
                    let (end, by) = if p.raw <= o.deadline_raw {
                        (p.raw, EndBy::Unready)
                    } else {
                        (o.deadline_raw, EndBy::Deadline)
                    };
                    let lost = (v["state"].as_str() == Some("lost")).then_some(p.raw);
                    close(o, end, by, lost, &mut intervals);
                }
            }
            other => return Err(format!("{identity} run {run}: unknown event {other:?}")),
        }
    }
    if let Some(o) = open.take() {
        let end = o.deadline_raw;
        close(o, end, EndBy::Deadline, None, &mut intervals);
    }
    Ok(RunHistory {
        intervals,
        clock: ClockFit {
            measured_rate,
            baseline_ns,
        },
        records: records.len(),
    })
}

/// Reads and parses a history file (a missing file is an empty history: the process never got
/// as far as installing the recorder).
pub fn read_history(
    path: &Path,
    identity: &str,
    run: usize,
    expected_rate: f64,
) -> Result<RunHistory, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_history(&text, identity, run, expected_rate),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            parse_history("", identity, run, expected_rate)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
