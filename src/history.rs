//! Optional readiness history, for fault-injection tests (`--history-file`, off by default).
//!
//! When enabled, the agent appends one JSON line per readiness event to a file, each stamped on
//! two clocks at once:
//!
//! - `raw_ns`: the machine's raw monotonic clock (`CLOCK_MONOTONIC_RAW`), read through the vDSO
//!   (rustix), not through libc, so `faketime` (an `LD_PRELOAD` of libc's `clock_gettime`) does
//!   not alter it. Every process on the machine shares it, so histories of several sidecars can
//!   be compared.
//! - `mono_ns`: the process's own monotonic clock ([`Instant`], the one the safety deadline is
//!   computed on, and the one `faketime` slows down), as nanoseconds since the recorder started.
//!
//! Events, written conservatively:
//!
//! | event      | when                                                                         |
//! |------------|------------------------------------------------------------------------------|
//! | `start`    | when the recorder is installed (a clock pair, `pid`)                          |
//! | `ready`    | *before* readiness can turn true (`token`, `deadline_ns` on the process clock) |
//! | `deadline` | *before* a renewal extends readiness to a later `deadline_ns`                 |
//! | `unready`  | *after* the state has left `held` (`token`, the new `state`)                  |
//!
//! Readiness also ends silently when the process clock reaches the deadline (it is evaluated at
//! read time), so a reader must end an interval at the earlier of the `unready` stamp and the
//! last `deadline_ns` mapped onto the raw clock with the process's clock rate, which it can
//! measure from the clock pairs. Write errors are logged once and otherwise ignored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

static RECORDER: OnceLock<Recorder> = OnceLock::new();

struct Recorder {
    file: Mutex<File>,
    anchor: Instant,
    last_deadline: Mutex<Option<Instant>>,
    failed: AtomicBool,
}

/// Starts recording to `path` (appending). Only the first call in a process takes effect.
pub fn install(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let recorder = Recorder {
        file: Mutex::new(file),
        anchor: lockkeeper::clock::now(),
        last_deadline: Mutex::new(None),
        failed: AtomicBool::new(false),
    };
    if RECORDER.set(recorder).is_ok() {
        if let Some(r) = RECORDER.get() {
            r.write("start", None, None, None);
        }
    }
    Ok(())
}

/// Call right before readiness can turn true for `token`, with the deadline it will have.
pub fn ready(token: i64, deadline: Option<Instant>) {
    if let Some(r) = RECORDER.get() {
        *lock(&r.last_deadline) = deadline;
        r.write("ready", Some(token), deadline, None);
    }
}

/// Call right before the published deadline of a holding moves to `deadline`; repeated calls
/// with an unchanged deadline write nothing.
pub fn deadline(token: i64, deadline: Instant) {
    if let Some(r) = RECORDER.get() {
        {
            let mut last = lock(&r.last_deadline);
            if *last == Some(deadline) {
                return;
            }
            *last = Some(deadline);
        }
        r.write("deadline", Some(token), Some(deadline), None);
    }
}

/// Call right after the state has left `held` (readiness can no longer be true).
pub fn unready(token: Option<i64>, state: &str) {
    if let Some(r) = RECORDER.get() {
        *lock(&r.last_deadline) = None;
        r.write("unready", token, None, Some(state));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    fn write(
        &self,
        event: &str,
        token: Option<i64>,
        deadline: Option<Instant>,
        state: Option<&str>,
    ) {
        let (raw_ns, mono) = clock_pair();
        let ns = |at: Instant| at.saturating_duration_since(self.anchor).as_nanos() as u64;
        let mut line = serde_json::json!({
            "event": event,
            "raw_ns": raw_ns,
            "mono_ns": ns(mono),
        });
        if let Some(t) = token {
            line["token"] = t.into();
        }
        if let Some(d) = deadline {
            line["deadline_ns"] = ns(d).into();
        }
        if let Some(s) = state {
            line["state"] = s.into();
        }
        if event == "start" {
            line["pid"] = std::process::id().into();
        }
        let mut text = line.to_string();
        text.push('\n');
        // One write(2) per line, so a SIGKILL never leaves half a record behind.
        if let Err(e) = lock(&self.file).write_all(text.as_bytes()) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot write the readiness history");
            }
        }
    }
}

/// The raw clock and the process clock read as close together as the scheduler allows: the
/// process clock is read before and after the raw one, and the pair is retried when a
/// preemption widened that window beyond 100 µs.
fn clock_pair() -> (u64, Instant) {
    let mut best: Option<(Duration, u64, Instant)> = None;
    for _ in 0..5 {
        let before = lockkeeper::clock::now();
        let raw = raw_now_ns();
        let after = lockkeeper::clock::now();
        let width = after.saturating_duration_since(before);
        let mid = before + width / 2;
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, raw, mid));
        }
        if width < Duration::from_micros(100) {
            break;
        }
    }
    let (_, raw, mid) = best.expect("at least one reading");
    (raw, mid)
}

/// Nanoseconds on `CLOCK_MONOTONIC_RAW`, read without libc (so `LD_PRELOAD` time fakers do not
/// see the call).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn raw_now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicRaw);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Nanoseconds on the monotonic clock (no raw clock on this platform).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn raw_now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}
