//! What the safety checker reads: the sidecars' own readiness histories (`--history-file`), an
//! external prober's view of every `/readyz`, the key creations a watch on the lock prefix sees,
//! and a fenced store written by a model application beside each sidecar.
//!
//! Everything is stamped on `CLOCK_MONOTONIC_RAW` in nanoseconds, the clock the sidecars stamp
//! their histories with (unaffected by `faketime`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::http_get;

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

// === the sidecars' own histories ===

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

    struct Open {
        token: i64,
        start: u64,
        /// Raw instant the last published deadline maps to.
        deadline_raw: u64,
    }
    let mut open: Option<Open> = None;
    let mut intervals = Vec::new();
    let close = |o: Open, end: u64, end_by: EndBy, out: &mut Vec<Interval>| {
        out.push(Interval {
            identity: identity.to_owned(),
            run,
            token: o.token,
            start: o.start,
            end: end.max(o.start),
            end_by,
        });
    };
    for (v, p) in records.iter().zip(&pairs) {
        let token = v["token"].as_i64();
        match v["event"].as_str() {
            Some("start") => {}
            Some("ready") => {
                if let Some(o) = open.take() {
                    let end = o.deadline_raw;
                    close(o, end, EndBy::Deadline, &mut intervals);
                }
                let token = token.ok_or_else(|| format!("{identity}: ready without token"))?;
                let deadline_raw = match v["deadline_ns"].as_u64() {
                    Some(d) => to_raw(*p, d),
                    None => p.raw, // no deadline: readiness never turned true
                };
                open = Some(Open {
                    token,
                    start: p.raw,
                    deadline_raw,
                });
            }
            Some("deadline") => {
                if let (Some(o), Some(d)) = (open.as_mut(), v["deadline_ns"].as_u64()) {
                    if token == Some(o.token) {
                        o.deadline_raw = o.deadline_raw.max(to_raw(*p, d));
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
                    close(o, end, by, &mut intervals);
                }
            }
            other => return Err(format!("{identity} run {run}: unknown event {other:?}")),
        }
    }
    if let Some(o) = open.take() {
        let end = o.deadline_raw;
        close(o, end, EndBy::Deadline, &mut intervals);
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

// === the external prober ===

/// One poll of one sidecar's `/readyz`: the answer was computed somewhere in `[send, recv]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub send: u64,
    pub recv: u64,
    /// `Some(true)` for 200, `Some(false)` for another status, `None` for no answer.
    pub ready: Option<bool>,
}

/// Polls every sidecar's `/readyz` in sweeps ~10 ms apart on a background thread.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    samples: Arc<Mutex<BTreeMap<String, Vec<Probe>>>>,
}

impl Prober {
    /// Starts polling `(identity, "127.0.0.1:PORT")` pairs.
    pub fn start(targets: Vec<(String, String)>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<BTreeMap<String, Vec<Probe>>>> = Arc::new(Mutex::new(
            targets
                .iter()
                .map(|(id, _)| (id.clone(), Vec::new()))
                .collect(),
        ));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    let sweep = raw_now();
                    for (id, addr) in &targets {
                        let send = raw_now();
                        let ready = http_get(addr, "/readyz", Duration::from_millis(250))
                            .ok()
                            .map(|r| r.status == 200);
                        let recv = raw_now();
                        let mut s = sa.lock().unwrap();
                        s.get_mut(id).unwrap().push(Probe { send, recv, ready });
                    }
                    let spent = Duration::from_nanos(raw_now() - sweep);
                    std::thread::sleep(Duration::from_millis(10).saturating_sub(spent));
                }
            })
            .expect("spawn prober");
        Prober {
            stop,
            thread: Some(thread),
            samples,
        }
    }

    /// Stops polling and returns every sample per identity.
    pub fn finish(mut self) -> BTreeMap<String, Vec<Probe>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// === the watch on the lock prefix ===

/// A key created under the lock prefix, as a watch saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub key: String,
    pub create_revision: i64,
    pub value: String,
}

/// Watches the lock prefix from revision 1 on a background thread, surviving member deaths by
/// re-watching from the last revision seen (so compact only up to [`Watcher::safe_revision`]).
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    creations: Arc<Mutex<Vec<Creation>>>,
    last_revision: Arc<AtomicI64>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    pub fn start(endpoints: Vec<String>, prefix: String) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let creations = Arc::new(Mutex::new(Vec::new()));
        let last_revision = Arc::new(AtomicI64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (st, cr, lr, er) = (
            stop.clone(),
            creations.clone(),
            last_revision.clone(),
            errors.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("prefix-watch".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(watch_loop(endpoints, prefix, st, cr, lr, er));
            })
            .expect("spawn watcher");
        Watcher {
            stop,
            thread: Some(thread),
            creations,
            last_revision,
            errors,
        }
    }

    /// The highest revision the watch has delivered; compacting up to it loses nothing.
    pub fn safe_revision(&self) -> i64 {
        self.last_revision.load(Ordering::SeqCst)
    }

    /// The progress counter itself, for threads that compact.
    pub fn progress(&self) -> Arc<AtomicI64> {
        self.last_revision.clone()
    }

    /// Waits until the watch has delivered `revision` (or `limit` passes); true if it has.
    pub fn caught_up(&self, revision: i64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.safe_revision() < revision {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops watching; returns the creations seen and any unrecoverable errors (a compacted
    /// start revision would be one: events were lost).
    pub fn finish(mut self) -> (Vec<Creation>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            std::mem::take(&mut *self.creations.lock().unwrap()),
            std::mem::take(&mut *self.errors.lock().unwrap()),
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn watch_loop(
    endpoints: Vec<String>,
    prefix: String,
    stop: Arc<AtomicBool>,
    creations: Arc<Mutex<Vec<Creation>>>,
    last_revision: Arc<AtomicI64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
    let mut next = 1i64;
    while !stop.load(Ordering::SeqCst) {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
        let connected = tokio::time::timeout(
            Duration::from_secs(3),
            Client::connect(&endpoints, Some(opts)),
        )
        .await;
        let Ok(Ok(mut client)) = connected else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(3),
            client.watch(prefix.clone(), Some(options)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // A member death can leave the stream silent rather than broken: re-watch every few
        // seconds without news (from the last revision seen, so nothing is lost).
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let msg = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
            let resp = match msg {
                Ok(Ok(Some(r))) => r,
                _ => break,
            };
            if resp.compact_revision() > 0 {
                errors.lock().unwrap().push(format!(
                    "watch from revision {next} was compacted (compact revision {})",
                    resp.compact_revision()
                ));
                next = resp.compact_revision();
                break;
            }
            if resp.canceled() {
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                if ev.event_type() == EventType::Put && kv.create_revision() == kv.mod_revision() {
                    creations.lock().unwrap().push(Creation {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        create_revision: kv.create_revision(),
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                    });
                }
                next = next.max(kv.mod_revision() + 1);
            }
            if let Some(seen) = resp
                .events()
                .iter()
                .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                .max()
            {
                last_revision.fetch_max(seen, Ordering::SeqCst);
            }
        }
    }
}

// === the protected resource ===

/// Counters of the fenced store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub accepted: u64,
    pub rejected: u64,
    /// Which writers had writes accepted under each token.
    pub writers: BTreeMap<i64, BTreeSet<String>>,
    /// Highest token seen.
    pub max_token: i64,
}

/// A resource that accepts a write only if its fencing token is at least the highest it has
/// seen (Jepsen's lock-set idea): a stale holder's writes bounce.
#[derive(Clone, Default)]
pub struct FencedStore {
    inner: Arc<Mutex<StoreStats>>,
}

impl FencedStore {
    /// Tries a write by `writer` under `token`; true if accepted.
    pub fn write(&self, writer: &str, token: i64) -> bool {
        let mut s = self.inner.lock().unwrap();
        if token < s.max_token {
            s.rejected += 1;
            return false;
        }
        s.max_token = token;
        s.accepted += 1;
        s.writers
            .entry(token)
            .or_default()
            .insert(writer.to_owned());
        true
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.lock().unwrap().clone()
    }
}

/// The model application beside each sidecar: every ~20 ms it reads `/status` and, while it
/// says `held`, writes to the store with the fencing token it shows.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(targets: Vec<(String, String)>, store: FencedStore) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = targets
            .into_iter()
            .map(|(id, addr)| {
                let (st, store) = (stop.clone(), store.clone());
                std::thread::Builder::new()
                    .name(format!("writer-{id}"))
                    .spawn(move || {
                        while !st.load(Ordering::SeqCst) {
                            if let Ok(r) = http_get(&addr, "/status", Duration::from_millis(250)) {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                                    if let (Some(true), Some(t)) =
                                        (v["held"].as_bool(), v["fencing_token"].as_i64())
                                    {
                                        store.write(&id, t);
                                    }
                                }
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                    .expect("spawn writer")
            })
            .collect();
        Writers { stop, threads }
    }

    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
