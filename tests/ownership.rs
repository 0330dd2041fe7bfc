//! A hold is exactly as long as the holder is told, on every path that reports it:
//!
//! - a healthy hold is never cut short: `exec`'s child, `/events`, `/readyz`, `/metrics` and the
//!   library's state all say "held" for as long as keepalives succeed;
//! - a hold that ends stops everything that depends on it before anyone else can take over:
//!   `exec`'s child is dead before the next holder's child starts, `/events` reports the end,
//!   and a holder whose periodic ownership check hangs still steps down at once;
//! - a cancelled or dropped contender leaves nothing in etcd, so it never blocks the queue;
//! - lock names that would nest inside another lock's key range are refused.
//!
//! Real etcd and the real binary throughout; faults come from the TCP fault proxy placed between
//! a process and its etcd member(s). Timestamps compared with each other come from one clock:
//! the test process's monotonic clock, or `date +%s%N` lines written by children (compared with
//! each other and with the test's wall clock).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions, GetOptions};
use lockkeeper::{
    acquire_lock, release_lock, DistributedLock, Error, Etcd, EtcdOptions, LockOptions, LockState,
    ReleaseOutcome,
};
use testkit::exec::{
    kill_pid, now_ns, process_alive, read_stamps, run_bounded, tail_lines, wait_first_stamp,
    wait_gone, wait_pid_file, Exec, Outcome,
};
use testkit::fault::proxy::FaultProxy;
use testkit::{http_get, unique_name, EtcdCluster, HttpResponse, Sidecar};

// === shared helpers ===

/// Milliseconds from `from` to `to` (negative if `to` is earlier), for messages.
fn ms_between(from: Instant, to: Instant) -> i128 {
    if to >= from {
        (to - from).as_millis() as i128
    } else {
        -((from - to).as_millis() as i128)
    }
}

/// Nanosecond wall-clock stamps as milliseconds relative to `origin`, for messages.
fn rel_ms(stamp: i128, origin: i128) -> f64 {
    (stamp - origin) as f64 / 1e6
}

/// `renew_interval` and `safety_margin` as `lockkeeper` derives them from the TTL by default.
fn default_renew(ttl: Duration) -> Duration {
    ttl / 3
}

fn default_margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// The largest `--kill-after` the rule accepts, a few ms below the bound: it must be less than
/// TTL − margin − 2 × renew interval, so that one lost keepalive does not touch the child.
fn largest_kill_after(ttl: Duration, margin: Duration, renew: Duration) -> Duration {
    let room = ttl - margin - renew * 2;
    room - Duration::from_millis(3)
}

/// A duration as a `--flag` value in whole milliseconds.
fn flag_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Timestamped answers of a [`Sampler`].
type Samples<T> = Arc<Mutex<Vec<(Instant, Option<T>)>>>;

/// A `lockkeeper` command line and its extra environment.
type Invocation<'a> = (Vec<String>, Vec<(&'a str, &'a str)>);

/// Polls one HTTP path on a background thread, recording (request start, parsed answer) on
/// the test's monotonic clock; `None` when it did not answer.
struct Sampler<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    samples: Samples<T>,
}

impl<T: Clone + Send + 'static> Sampler<T> {
    fn start(
        addr: String,
        path: &'static str,
        every: Duration,
        parse: fn(&HttpResponse) -> Option<T>,
    ) -> Sampler<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let answer = http_get(&addr, path, Duration::from_secs(1))
                    .ok()
                    .and_then(|r| parse(&r));
                sa.lock().unwrap().push((sent, answer));
                let next = sent + every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
            samples,
        }
    }

    fn finish(mut self) -> Vec<(Instant, Option<T>)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.samples.lock().unwrap().clone()
    }
}

impl<T> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `/events` stream read for its whole life on a background thread: every `data:` event
/// with the instant it arrived (the test's monotonic clock).
struct EventStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    ended: Arc<Mutex<Option<String>>>,
}

impl EventStream {
    fn start(addr: &str) -> EventStream {
        let mut stream = TcpStream::connect(addr).expect("connect for /events");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let (st, ev, en) = (stop.clone(), events.clone(), ended.clone());
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while !st.load(Ordering::SeqCst) {
                match reader.read_line(&mut line) {
                    Ok(0) => {
                        *en.lock().unwrap() = Some("the server closed the stream".into());
                        return;
                    }
                    Ok(_) if line.ends_with('\n') => {
                        let at = Instant::now();
                        let text = line.trim_end();
                        if let Some(json) = text.strip_prefix("data:") {
                            match serde_json::from_str(json.trim()) {
                                Ok(v) => ev.lock().unwrap().push((at, v)),
                                Err(e) => {
                                    *en.lock().unwrap() = Some(format!("bad event {text:?}: {e}"));
                                    return;
                                }
                            }
                        }
                        line.clear();
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => {
                        *en.lock().unwrap() = Some(format!("read error: {e}"));
                        return;
                    }
                }
            }
        });
        EventStream {
            stop,
            thread: Some(thread),
            events,
            ended,
        }
    }

    fn snapshot(&self) -> Vec<(Instant, serde_json::Value)> {
        self.events.lock().unwrap().clone()
    }

    fn finish(mut self) -> (Vec<(Instant, serde_json::Value)>, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let ended = self.ended.lock().unwrap().clone();
        (self.snapshot(), ended)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Events as short lines relative to `origin`, for failure messages.
fn describe_events(events: &[(Instant, serde_json::Value)], origin: Instant) -> String {
    events
        .iter()
        .map(|(at, v)| {
            format!(
                "  {:>+7} ms  state={} held={} token={} remaining_ms={}",
                ms_between(origin, *at),
                v["state"],
                v["held"],
                v["fencing_token"],
                v["lease_remaining_ms"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn connect(endpoints: Vec<String>) -> Etcd {
    EtcdOptions::new(endpoints)
        .connect_etcd()
        .await
        .expect("connect to etcd")
}

/// Every key under `prefix`, with its lease.
async fn keys_under(etcd: &Etcd, prefix: &str) -> Vec<(String, i64)> {
    let resp = etcd
        .client()
        .clone()
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    resp.kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap_or("?").to_owned(), kv.lease()))
        .collect()
}

/// The ids of every lease etcd knows.
async fn lease_ids(etcd: &Etcd) -> BTreeSet<i64> {
    etcd.client()
        .clone()
        .leases()
        .await
        .expect("lease list")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect()
}

fn opts(ttl_s: u64, identity: &str) -> LockOptions {
    LockOptions::new()
        .with_identity(identity)
        .with_ttl(Duration::from_secs(ttl_s))
}

// === exec: a healthy child is left alone ===

/// An undisturbed hold of more than five TTLs: the child, which would record a SIGTERM and exit
/// 99, runs its full time and its own exit code comes back.
#[test]
fn exec_leaves_a_healthy_child_alone_for_five_ttls_and_passes_its_exit_code() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("healthy");
    let dir = tempfile::tempdir().unwrap();
    let (start, end, term) = (
        dir.path().join("start"),
        dir.path().join("end"),
        dir.path().join("term"),
    );
    // 80 × 0.2 s: at least 16 s, more than five TTLs of 3 s.
    let script = format!(
        "trap 'date +%s%N > {term}; exit 99' TERM; date +%s%N > {start}; \
         i=0; while [ $i -lt 80 ]; do sleep 0.2; i=$((i+1)); done; \
         date +%s%N > {end}; exit 7",
        term = term.display(),
        start = start.display(),
        end = end.display()
    );
    let mut exec = Exec::start(
        &cluster.endpoints(),
        &lock,
        "3s",
        &[],
        &script,
        &dir.path().join("exec.log"),
    );
    let status = exec.wait(Duration::from_secs(90));
    let took = exec.started.elapsed();
    let began = read_stamps(&start).first().copied();
    let got_term = read_stamps(&term).first().copied();
    let ended = read_stamps(&end).first().copied();
    let status = status.unwrap_or_else(|| panic!("exec still running after 90 s"));
    if let (Some(b), Some(t)) = (began, got_term) {
        panic!(
            "the child got SIGTERM {:.0} ms after it started although nothing disturbed the \
             hold (exec exit {:?}); exec log:\n{}",
            rel_ms(t, b),
            status.code(),
            exec.log_tail(15)
        );
    }
    assert_eq!(
        status.code(),
        Some(7),
        "the child's own exit code is passed through; exec log:\n{}",
        exec.log_tail(15)
    );
    let (b, e) = (began.expect("start stamp"), ended.expect("end stamp"));
    assert!(
        e - b >= 16_000_000_000,
        "the child ran its full 16 s, ran {:.0} ms",
        rel_ms(e, b)
    );
    eprintln!(
        "healthy exec: child ran {:.1} s, exec took {took:?}",
        rel_ms(e, b) / 1000.0
    );
}

// === exec: the child never outlives the lock ===

/// exec A reaches etcd through a fault proxy, exec B directly, both on one lock with TTL 4 s.
/// A's child ignores SIGTERM (it only records it) and appends a `date +%s%N` line every ~20 ms;
/// B's child writes its start stamp. Blackholing A's proxy must get A's child killed before B's
/// child starts. The cut comes `healthy_for` after A's child started (zero: at once, while the
/// deadline is still the one of the grant).
fn cut_off_child_is_dead_before_the_next_holder_starts(extra: &[&str], healthy_for: Duration) {
    let cluster = EtcdCluster::single();
    let lock = unique_name("cutoff");
    let proxy = FaultProxy::start(&cluster.endpoint(0));
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (a_log, a_pid, a_term, b_start) = (p("a.log"), p("a.pid"), p("a.term"), p("b.start"));
    let a_script = format!(
        "echo $$ > {pid}; trap 'date +%s%N >> {term}' TERM; \
         while :; do date +%s%N >> {log}; sleep 0.02; done",
        pid = a_pid.display(),
        term = a_term.display(),
        log = a_log.display()
    );
    let b_script = format!("date +%s%N > {}; sleep 1", b_start.display());
    let a = Exec::start(
        std::slice::from_ref(&proxy.endpoint),
        &lock,
        "4s",
        extra,
        &a_script,
        &p("a.exec.log"),
    );
    let a_first = wait_first_stamp(&a_log, Duration::from_secs(20));
    assert!(
        a_first.is_some(),
        "A's child never started; A's log:\n{}",
        a.log_tail(20)
    );
    let a_child = wait_pid_file(&a_pid, Duration::from_secs(5)).expect("A's child wrote its pid");
    let _cleanup = KillOnDrop(a_child);
    if !healthy_for.is_zero() {
        // A healthy hold first: renewals move the deadline, and the child is left alone.
        std::thread::sleep(healthy_for);
        let terms = read_stamps(&a_term);
        assert!(
            process_alive(a_child) && terms.is_empty(),
            "precondition: during {healthy_for:?} of healthy holding A's child must be left \
             alone; it got SIGTERM at {:?} ms after it started (alive: {})\nA's log:\n{}",
            terms
                .iter()
                .map(|t| rel_ms(*t, a_first.unwrap_or_default()).round())
                .collect::<Vec<_>>(),
            process_alive(a_child),
            a.log_tail(12)
        );
    }
    let cut = now_ns();
    proxy.blackhole();
    let mut b = Exec::start(
        &cluster.endpoints(),
        &lock,
        "4s",
        extra,
        &b_script,
        &p("b.exec.log"),
    );
    let b_first = wait_first_stamp(&b_start, Duration::from_secs(40));
    let a_alive_when_b_started = process_alive(a_child);
    let b_first = b_first.unwrap_or_else(|| {
        panic!(
            "B's child never started after A was cut off; B's log:\n{}",
            b.log_tail(20)
        )
    });
    let a_gone = wait_gone(a_child, Duration::from_secs(20));
    let stamps = read_stamps(&a_log);
    let a_last = *stamps.last().expect("A's child wrote stamps");
    let a_terms = read_stamps(&a_term);
    let story =
        format!(
        "relative to the cut: A's child got SIGTERM at {:?} ms, wrote its last stamp at {:.0} ms, \
         B's child started at {:.0} ms; A's child alive when B's started: \
         {a_alive_when_b_started}; gone within 20 s after: {a_gone}\nA's log:\n{}",
        a_terms.iter().map(|t| rel_ms(*t, cut).round()).collect::<Vec<_>>(),
        rel_ms(a_last, cut),
        rel_ms(b_first, cut),
        a.log_tail(12)
    );
    eprintln!("exec cut off ({extra:?}): {story}");
    assert!(
        a_last < b_first,
        "A's child was still running {:.0} ms after B's child started: {story}",
        rel_ms(a_last, b_first)
    );
    assert!(!a_alive_when_b_started, "A's child still existed: {story}");
    assert!(a_gone, "A's child never went away: {story}");
    let _ = b.wait(Duration::from_secs(10));
}

/// SIGKILLs a grandchild pid on drop if a failed test left it running.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_pid(self.0);
    }
}

#[test]
fn cut_off_exec_child_is_dead_before_the_next_holder_starts_with_default_kill_after() {
    cut_off_child_is_dead_before_the_next_holder_starts(&[], Duration::ZERO);
}

#[test]
fn cut_off_exec_child_is_dead_before_the_next_holder_starts_with_the_largest_kill_after() {
    let ttl = Duration::from_secs(4);
    let k = largest_kill_after(ttl, default_margin(ttl), default_renew(ttl));
    cut_off_child_is_dead_before_the_next_holder_starts(
        &["--kill-after", &flag_ms(k)],
        Duration::ZERO,
    );
}

/// Flags for a short margin and renew interval, where the rule leaves a wide kill_after.
fn wide_kill_after_flags() -> Vec<String> {
    let (ttl, margin, renew) = (
        Duration::from_secs(4),
        Duration::from_millis(400),
        Duration::from_secs(1),
    );
    let k = largest_kill_after(ttl, margin, renew);
    [
        "--safety-margin",
        &flag_ms(margin),
        "--renew-interval",
        &flag_ms(renew),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--kill-after".to_owned(), flag_ms(k)])
    .collect()
}

/// With a wide kill_after, SIGKILL must still land by the local deadline, not kill_after after
/// some SIGTERM.
#[test]
fn cut_off_exec_child_is_dead_before_the_next_holder_starts_with_a_wide_kill_after() {
    let flags = wide_kill_after_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cut_off_child_is_dead_before_the_next_holder_starts(&flags, Duration::ZERO);
}

/// The same after two TTLs of healthy holding: the renewed deadline governs both signals.
#[test]
fn cut_off_exec_child_is_dead_before_the_next_holder_starts_after_a_renewed_hold() {
    let flags = wide_kill_after_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cut_off_child_is_dead_before_the_next_holder_starts(&flags, Duration::from_secs(8));
}

/// `kill_after` must be less than TTL − margin − 2 × renew interval; anything else exits 2 with
/// one line naming `exec.kill_after`, whether it comes from the flag, the environment or YAML.
/// Values inside the rule, and the defaults at any TTL, are accepted (exec then keeps trying to
/// reach the unreachable etcd).
#[test]
fn exec_refuses_a_kill_after_that_does_not_fit_before_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("exec.yaml");
    std::fs::write(
        &yaml,
        "lock:\n  name: x\n  ttl: 4s\netcd:\n  endpoints: [\"http://127.0.0.1:1\"]\n\
         exec:\n  kill_after: 1s\n",
    )
    .unwrap();
    let yaml = yaml.to_str().unwrap().to_owned();
    let ttl = Duration::from_secs(4);
    let fits = largest_kill_after(ttl, default_margin(ttl), default_renew(ttl));
    let just_over = ttl - default_margin(ttl) - default_renew(ttl) * 2 + Duration::from_millis(1);
    let base = |ttl: &str| -> Vec<String> {
        [
            "exec",
            "--etcd-endpoints",
            "http://127.0.0.1:1",
            "--lock",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--ttl".to_owned(), ttl.to_owned()])
        .collect()
    };
    let with = |mut args: Vec<String>, more: &[&str]| {
        args.extend(more.iter().map(|s| s.to_string()));
        args.extend(["--".to_owned(), "true".to_owned()]);
        args
    };
    let refused: Vec<Invocation<'_>> = vec![
        (
            with(base("4s"), &["--kill-after", &flag_ms(just_over)]),
            vec![],
        ),
        (with(base("4s"), &["--kill-after", "10s"]), vec![]),
        (
            with(
                base("10s"),
                &["--renew-interval", "3s", "--kill-after", "4s"],
            ),
            vec![],
        ),
        (
            with(base("4s"), &[]),
            vec![("LOCKKEEPER_KILL_AFTER", "600ms")],
        ),
        (
            with(vec!["exec".into(), "--config".into(), yaml], &[]),
            vec![],
        ),
    ];
    let accepted: Vec<Vec<String>> = vec![
        with(base("4s"), &["--kill-after", &flag_ms(fits)]),
        with(base("4s"), &[]),
        with(base("2s"), &[]),
        with(base("10s"), &[]),
    ];
    let mut problems = Vec::new();
    for (args, envs) in &refused {
        match run_bounded(args, envs, Duration::from_secs(3)) {
            Outcome::Exited {
                code: Some(2),
                stderr,
            } if stderr.contains("exec.kill_after")
                && stderr.trim().lines().count() == 1
                && !stderr.contains("panicked") => {}
            other => problems.push(format!(
                "{args:?} {envs:?}: should be refused, got {other:?}"
            )),
        }
    }
    for args in &accepted {
        match run_bounded(args, &[], Duration::from_secs(2)) {
            Outcome::StillRunning { .. } => {}
            other => problems.push(format!("{args:?}: should be accepted, got {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// === /events, /readyz and /metrics agree, and tell the truth ===

/// One holder with TTL 3 s, watched through every gating path at once for more than five TTLs:
/// `/readyz` every 50 ms, one `/events` stream throughout, `/metrics` every 500 ms. None may say
/// "not held" while the hold is healthy. Then the holder is cut off from etcd, and `/events`
/// must report `held:false` within a second of the local deadline, never while `/readyz` still
/// answers 200.
#[test]
fn events_readyz_and_metrics_agree_through_a_healthy_hold_and_report_its_end() {
    let ttl = Duration::from_secs(3);
    let cluster = EtcdCluster::single();
    let proxy = FaultProxy::start(&cluster.endpoint(0));
    let lock = unique_name("events");
    let s = Sidecar::start(
        std::slice::from_ref(&proxy.endpoint),
        &lock,
        "ev",
        "3s",
        &[],
    );
    let events = EventStream::start(&s.addr());
    let readyz = Sampler::start(s.addr(), "/readyz", Duration::from_millis(50), |r| {
        Some(r.status)
    });
    let metrics = Sampler::start(s.addr(), "/metrics", Duration::from_millis(500), |r| {
        metric_value(&r.body, "lockkeeper_lock_held")
    });
    s.wait_ready(Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(16)); // > 5 TTLs, undisturbed

    let cut = Instant::now();
    proxy.blackhole();
    // The last acknowledged keepalive was sent before the cut, so the local deadline is at most
    // TTL − margin after it.
    let deadline_bound = cut + ttl - default_margin(ttl);
    let report_by = deadline_bound + Duration::from_secs(1);
    let false_after_cut = |evs: &[(Instant, serde_json::Value)]| {
        evs.iter()
            .find(|(at, v)| *at > cut && v["held"] == false)
            .map(|(at, _)| *at)
    };
    while false_after_cut(&events.snapshot()).is_none()
        && Instant::now() < report_by + Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // a few more /readyz samples after it
    let (evs, ended) = events.finish();
    let ready = readyz.finish();
    let held = metrics.finish();

    let first_ready = ready
        .iter()
        .find(|(_, c)| *c == Some(200))
        .map(|(at, _)| *at)
        .expect("/readyz answered 200 at some point");
    let mut problems = Vec::new();
    let healthy = |at: &Instant| *at >= first_ready && *at < cut;
    let bad_ready: Vec<String> = ready
        .iter()
        .filter(|(at, c)| healthy(at) && *c != Some(200))
        .map(|(at, c)| format!("{c:?} at +{} ms", ms_between(first_ready, *at)))
        .collect();
    if !bad_ready.is_empty() {
        problems.push(format!(
            "/readyz was not 200 during the healthy hold: {bad_ready:?}"
        ));
    }
    let bad_metric: Vec<String> = held
        .iter()
        .filter(|(at, v)| healthy(at) && *v != Some(1.0))
        .map(|(at, v)| format!("{v:?} at +{} ms", ms_between(first_ready, *at)))
        .collect();
    if !bad_metric.is_empty() {
        problems.push(format!(
            "lockkeeper_lock_held was not 1 during the healthy hold: {bad_metric:?}"
        ));
    }
    let first_true = evs.iter().find(|(_, v)| v["held"] == true).map(|e| e.0);
    match first_true {
        None => problems.push("/events never said held:true".into()),
        Some(t) => {
            let lies: Vec<String> = evs
                .iter()
                .filter(|(at, v)| *at > t && *at < cut && v["held"] == false)
                .map(|(at, v)| {
                    format!(
                        "held:false (state {}) at +{} ms",
                        v["state"],
                        ms_between(first_ready, *at)
                    )
                })
                .collect();
            if !lies.is_empty() {
                problems.push(format!(
                    "/events said held:false during the healthy hold while /readyz said 200: \
                     {lies:?}"
                ));
            }
        }
    }
    match false_after_cut(&evs) {
        None => problems.push(format!(
            "/events never said held:false after the cut (local deadline at most {} ms after it)",
            ms_between(cut, deadline_bound)
        )),
        Some(at) => {
            if at > report_by {
                problems.push(format!(
                    "/events said held:false {} ms after the cut; the local deadline is at most {} \
                     ms after it, and the event is due within a second of it",
                    ms_between(cut, at),
                    ms_between(cut, deadline_bound)
                ));
            }
            let still_ready: Vec<i128> = ready
                .iter()
                .filter(|(sent, c)| *sent > at && *c == Some(200))
                .map(|(sent, _)| ms_between(at, *sent))
                .collect();
            if !still_ready.is_empty() {
                problems.push(format!(
                    "/readyz still answered 200 to requests sent after the held:false event (at \
                     +{still_ready:?} ms after it)"
                ));
            }
        }
    }
    if let Some(e) = ended {
        problems.push(format!("the /events stream ended early: {e}"));
    }
    eprintln!(
        "events ({} readyz samples, {} metrics samples); relative to the cut:\n{}",
        ready.len(),
        held.len(),
        describe_events(&evs, cut)
    );
    assert!(
        ready.len() > 200 && held.len() > 20,
        "too few samples: the machine is too slow for this test"
    );
    assert!(
        problems.is_empty(),
        "{}\nevents relative to the cut:\n{}",
        problems.join("\n"),
        describe_events(&evs, cut)
    );
}

// === the library: a healthy guard never reports loss ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_guard_held_for_five_ttls_never_reports_loss() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("libhold");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(2, "lib")).unwrap();
    let guard = lock.lock().await.unwrap();
    let token = guard.token();
    let started = Instant::now();
    let mut rx = lock.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = Arc::new(AtomicUsize::new(0));
    let recorder = {
        let (stop, renewals) = (stop.clone(), renewals.clone());
        tokio::spawn(async move {
            let mut losses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let changed = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
                match changed {
                    Err(_) => continue,
                    Ok(Err(_)) => {
                        losses.push("the state channel closed".to_owned());
                        break;
                    }
                    Ok(Ok(())) => {}
                }
                let s = rx.borrow_and_update().clone();
                match &s {
                    LockState::Held { .. } => {
                        renewals.fetch_add(1, Ordering::SeqCst);
                    }
                    other => losses.push(format!("{other:?} at {:?}", started.elapsed())),
                }
            }
            losses
        })
    };
    let mut untrusted = Vec::new();
    while started.elapsed() < Duration::from_secs(11) {
        if !lock.state().is_held() {
            untrusted.push(format!("{:?} at {:?}", lock.state(), started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let losses = recorder.await.unwrap();
    assert!(
        losses.is_empty(),
        "the state left Held during a healthy hold: {losses:?}"
    );
    assert!(
        untrusted.is_empty(),
        "the state was not trusted: {untrusted:?}"
    );
    assert!(
        guard.is_locked().await.unwrap(),
        "still held after 5.5 TTLs"
    );
    assert_eq!(guard.token(), token, "the guard's token is stable");
    assert_eq!(
        lock.fencing_token(),
        Some(token),
        "the lock's token is stable"
    );
    let keys = keys_under(&etcd, &format!("/locks/{name}/")).await;
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    assert!(
        renewals.load(Ordering::SeqCst) >= 5,
        "renewals moved the deadline ({} updates)",
        renewals.load(Ordering::SeqCst)
    );
    let other = acquire_lock(
        &etcd,
        &name,
        &opts(2, "other").with_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(matches!(other, Err(Error::Timeout(..))), "got {other:?}");
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

// === nested lock names are refused ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_refuses_lock_names_with_a_slash_and_points_to_the_prefix() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let mut problems = Vec::new();
    match DistributedLock::new(etcd.clone(), "team/job", opts(5, "lib")) {
        Err(Error::InvalidArgument(m)) if m.contains("prefix") => {}
        Err(e) => problems.push(format!("DistributedLock::new: wrong error {e:?}")),
        Ok(_) => problems.push("DistributedLock::new accepted \"team/job\"".into()),
    }
    let r = acquire_lock(
        &etcd,
        "team/job",
        &opts(5, "lib").with_timeout(Duration::from_secs(3)),
    )
    .await;
    match r {
        Err(Error::InvalidArgument(m)) if m.contains("prefix") => {}
        Err(e) => problems.push(format!("acquire_lock: wrong error {e:?}")),
        Ok(h) => {
            problems.push(format!(
                "acquire_lock acquired \"team/job\" with key {}",
                h.key()
            ));
            release_lock(&etcd, h).await.unwrap();
        }
    }
    let left = keys_under(&etcd, "/locks/team").await;
    if !left.is_empty() {
        problems.push(format!("keys were written: {left:?}"));
    }
    // Hierarchy through the prefix is fine.
    let prefixed = DistributedLock::new(
        etcd.clone(),
        "job",
        opts(5, "lib").with_prefix("/locks/team-a/"),
    );
    if let Err(e) = &prefixed {
        problems.push(format!("a prefix with more levels is refused: {e:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn cli_and_yaml_refuse_lock_names_with_a_slash() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("nested.yaml");
    std::fs::write(
        &yaml,
        "lock:\n  name: team/job\netcd:\n  endpoints: [\"http://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let yaml = yaml.to_str().unwrap();
    let ep = ["--etcd-endpoints", "http://127.0.0.1:1"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", ep[0], ep[1], "--lock", "team/job", "--listen", "off"],
        vec!["exec", ep[0], ep[1], "--lock", "team/job", "--", "true"],
        vec!["run", "--config", yaml, "--listen", "off"],
        vec!["exec", "--config", yaml, "--", "true"],
    ];
    let mut problems = Vec::new();
    for args in &cases {
        match run_bounded(args, &[], Duration::from_secs(3)) {
            Outcome::Exited {
                code: Some(2),
                stderr,
            } if stderr.contains("lock.name")
                && stderr.trim().lines().count() == 1
                && !stderr.contains("panicked") => {}
            other => problems.push(format!("{args:?}: should be refused, got {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// === cancelled and dropped contenders leave nothing behind ===

#[derive(Clone, Copy, Debug)]
enum Via {
    Acquire,
    Guard,
}

/// A contender cancelled (by `tokio::time::timeout`) while queued behind a holder leaves nothing
/// in etcd within a second, and when the holder releases, the next live contender gets the lock
/// at once, not a TTL (10 s) later. The cancelled handle can acquire again afterwards.
async fn cancelled_contender_leaves_nothing_behind(via: Via) {
    let cluster = EtcdCluster::single();
    let name = unique_name("cancel");
    let prefix = format!("/locks/{name}/");
    let holder_etcd = connect(cluster.endpoints()).await;
    let holder = acquire_lock(&holder_etcd, &name, &opts(10, "holder"))
        .await
        .unwrap();
    let holder_lease = holder.lease().0;

    let lock =
        DistributedLock::new(connect(cluster.endpoints()).await, &name, opts(10, "c")).unwrap();
    let queued = Arc::new(AtomicBool::new(false));
    let spy = {
        let (etcd, prefix, queued) = (holder_etcd.clone(), prefix.clone(), queued.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                if keys_under(&etcd, &prefix).await.len() == 2 {
                    queued.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let limit = Duration::from_millis(1500);
    match via {
        Via::Acquire => {
            let r = tokio::time::timeout(limit, lock.acquire()).await;
            assert!(r.is_err(), "acquired while another held: {r:?}");
        }
        Via::Guard => {
            let r = tokio::time::timeout(limit, lock.lock()).await;
            assert!(r.is_err(), "acquired while another held: {r:?}");
        }
    }
    let cancelled = Instant::now();
    spy.await.unwrap();
    assert!(
        queued.load(Ordering::SeqCst),
        "the contender was queued before it was cancelled"
    );

    let mut problems = Vec::new();
    // Nothing of it stays: its key and its lease are gone within about one request time.
    let mut clean_after = None;
    while cancelled.elapsed() < Duration::from_secs(1) {
        let keys = keys_under(&holder_etcd, &prefix).await;
        let leases = lease_ids(&holder_etcd).await;
        if keys.iter().all(|(_, l)| *l == holder_lease) && leases.len() == 1 {
            clean_after = Some(cancelled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if clean_after.is_none() {
        problems.push(format!(
            "1 s after the cancellation etcd still holds keys {:?} and leases {:?} (the \
             holder's lease is {holder_lease})",
            keys_under(&holder_etcd, &prefix).await,
            lease_ids(&holder_etcd).await
        ));
    }

    // The next live contender is not blocked by it.
    let before = keys_under(&holder_etcd, &prefix).await.len();
    let next_etcd = connect(cluster.endpoints()).await;
    let next = {
        let (etcd, name) = (next_etcd.clone(), name.clone());
        tokio::spawn(async move {
            let r = acquire_lock(
                &etcd,
                &name,
                &opts(10, "next").with_timeout(Duration::from_secs(20)),
            )
            .await;
            (r, Instant::now())
        })
    };
    let queued_at = Instant::now();
    while keys_under(&holder_etcd, &prefix).await.len() <= before {
        assert!(
            queued_at.elapsed() < Duration::from_secs(5),
            "the next contender never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = Instant::now();
    release_lock(&holder_etcd, holder).await.unwrap();
    let (got, at) = next.await.unwrap();
    let waited = at - released;
    let next_held = got.expect("the next contender acquired");
    if waited > Duration::from_secs(2) {
        problems.push(format!(
            "the next contender got the lock {waited:?} after the holder released (TTL 10 s): \
             the cancelled contender's key was in the way"
        ));
    }
    release_lock(&next_etcd, next_held).await.unwrap();

    // The cancelled handle is usable again.
    match tokio::time::timeout(Duration::from_secs(5), lock.acquire()).await {
        Ok(Ok(_)) => {
            lock.release().await.unwrap();
        }
        other => problems.push(format!(
            "the cancelled handle could not acquire again: {other:?}"
        )),
    }
    eprintln!(
        "cancelled {via:?}: clean after {clean_after:?}, next waited {waited:?} after release"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquire_leaves_nothing_behind_and_does_not_block_the_next_contender() {
    cancelled_contender_leaves_nothing_behind(Via::Acquire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_lock_call_leaves_nothing_behind_and_does_not_block_the_next_contender() {
    cancelled_contender_leaves_nothing_behind(Via::Guard).await;
}

/// Waits up to one second for the lock's key range and the lease list to be empty; returns how
/// long it took, or what was left.
async fn empty_within_a_second(etcd: &Etcd, prefix: &str) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let keys = keys_under(etcd, prefix).await;
        let leases = lease_ids(etcd).await;
        if keys.is_empty() && leases.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(1) {
            return Err(format!("keys {keys:?}, leases {leases:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A dropped guard gives up its hold: the key goes within a second. The lease stays with the
/// handle for its next acquisition, and goes within a second of dropping the handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guard_deletes_its_key_and_the_dropped_handle_its_lease_within_a_second() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("dropguard");
    let prefix = format!("/locks/{name}/");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(10, "g")).unwrap();
    let guard = lock.lock().await.unwrap();
    assert_eq!(keys_under(&etcd, &prefix).await.len(), 1);
    drop(guard);
    let started = Instant::now();
    while !keys_under(&etcd, &prefix).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "1 s after dropping the guard its key is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!lock.is_locked().await.unwrap());
    assert_eq!(
        lease_ids(&etcd).await.len(),
        1,
        "the handle keeps its lease"
    );
    drop(lock);
    let r = empty_within_a_second(&etcd, &prefix).await;
    assert!(
        r.is_ok(),
        "1 s after dropping the handle etcd still has {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_last_lock_handle_leaves_nothing_behind_within_a_second() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("droplock");
    let prefix = format!("/locks/{name}/");

    // Dropping a clone while a guard still holds must not release anything...
    let lock = DistributedLock::new(etcd.clone(), &name, opts(10, "l")).unwrap();
    let guard = lock.lock().await.unwrap();
    drop(lock);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        guard.is_locked().await.unwrap(),
        "a guard keeps the lock held after the handle it came from is dropped"
    );
    // ...dropping the guard, the last one, does.
    drop(guard);
    let r = empty_within_a_second(&etcd, &prefix).await;
    assert!(r.is_ok(), "1 s after dropping the last guard: {r:?}");

    // Held through `acquire` (no guard), then the last handle dropped.
    let lock = DistributedLock::new(etcd.clone(), &name, opts(10, "l")).unwrap();
    let extra = lock.clone();
    lock.acquire().await.unwrap();
    drop(extra);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        keys_under(&etcd, &prefix).await.len(),
        1,
        "still held while one handle lives"
    );
    drop(lock);
    let r = empty_within_a_second(&etcd, &prefix).await;
    assert!(
        r.is_ok(),
        "1 s after dropping the last DistributedLock that held the lock, etcd still has {r:?}"
    );
}

// === a hung periodic ownership check does not delay stepping down ===

const HUNG_TTL: Duration = Duration::from_secs(10);
const HUNG_RENEW: Duration = Duration::from_secs(1);
const HUNG_MARGIN: Duration = Duration::from_secs(2);
/// Rounds in which the check demonstrably hung, and the cap on tries to get there.
const HUNG_ROUNDS: usize = 3;
const HUNG_MAX_TRIES: usize = 24;

/// gRPC counters of one etcd member, read directly from its `/metrics` (never through a proxy).
#[derive(Clone, Copy, Debug, Default)]
struct GrpcCounts {
    /// Open LeaseKeepAlive streams.
    keepalive_open: i64,
    /// Open Watch streams.
    watch_open: i64,
    /// Range requests received.
    ranges: i64,
}

fn grpc_counts(cluster: &EtcdCluster, i: usize) -> GrpcCounts {
    let addr = cluster.endpoint(i).trim_start_matches("http://").to_owned();
    let body = http_get(&addr, "/metrics", Duration::from_secs(2))
        .expect("member /metrics")
        .body;
    let sum = |family: &str, service: &str, method: &str| -> i64 {
        let (s, m) = (
            format!("grpc_service=\"{service}\""),
            format!("grpc_method=\"{method}\""),
        );
        body.lines()
            .filter(|l| l.starts_with(family) && l.contains(&s) && l.contains(&m))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as i64
    };
    let (started, handled) = ("grpc_server_started_total{", "grpc_server_handled_total{");
    let open =
        |service: &str, method: &str| sum(started, service, method) - sum(handled, service, method);
    GrpcCounts {
        keepalive_open: open("etcdserverpb.Lease", "LeaseKeepAlive"),
        watch_open: open("etcdserverpb.Watch", "Watch"),
        ranges: sum(started, "etcdserverpb.KV", "Range"),
    }
}

/// Where the holder's streams are: `x` carries neither its keepalive stream nor its watch.
struct Placement {
    x: usize,
    live: Vec<usize>,
}

fn placement(cluster: &EtcdCluster) -> Option<Placement> {
    let counts: Vec<GrpcCounts> = (0..3).map(|i| grpc_counts(cluster, i)).collect();
    let ka: Vec<usize> = (0..3).filter(|&i| counts[i].keepalive_open > 0).collect();
    let w: Vec<usize> = (0..3).filter(|&i| counts[i].watch_open > 0).collect();
    if ka.len() != 1 || w.len() != 1 {
        return None;
    }
    let x = (0..3).find(|i| !ka.contains(i) && !w.contains(i))?;
    Some(Placement {
        x,
        live: (0..3).filter(|&i| i != x).collect(),
    })
}

fn live_ranges(cluster: &EtcdCluster, p: &Placement) -> i64 {
    p.live.iter().map(|&i| grpc_counts(cluster, i).ranges).sum()
}

enum Try {
    /// The check sent at about this instant hangs on the blackholed member.
    Hung(Instant),
    /// No check landed on X in time, or the following ones went elsewhere.
    Missed,
    /// No periodic read reached any member for several renew intervals.
    NoChecks,
}

/// Waits for a periodic check to land on member `x` (its Range count moves), blackholes `x`'s
/// proxy at once (so its connection's last read is now, and HTTP/2 keepalive closes it only
/// ~4 s later), then watches the next two checks: one that reaches no live member is hung on X.
fn try_to_hang_the_check(cluster: &EtcdCluster, proxies: &[FaultProxy], p: &Placement) -> Try {
    let base_x = grpc_counts(cluster, p.x).ranges;
    let base_all = base_x + live_ranges(cluster, p);
    let started = Instant::now();
    let landed = loop {
        std::thread::sleep(Duration::from_millis(25));
        if grpc_counts(cluster, p.x).ranges > base_x {
            break Instant::now();
        }
        if started.elapsed() > HUNG_RENEW * 7 {
            let all = grpc_counts(cluster, p.x).ranges + live_ranges(cluster, p);
            return if all == base_all {
                Try::NoChecks
            } else {
                Try::Missed
            };
        }
    };
    proxies[p.x].blackhole();
    let mut seen = live_ranges(cluster, p);
    for k in 1..=2u32 {
        let check_at = landed + HUNG_RENEW * k + Duration::from_millis(350);
        if let Some(wait) = check_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = live_ranges(cluster, p);
        if now == seen {
            return Try::Hung(landed + HUNG_RENEW * k);
        }
        seen = now;
    }
    proxies[p.x].heal();
    Try::Missed
}

/// Polls `/readyz` every 5 ms until it is not 200; the time since `from`.
fn time_to_unready(s: &Sidecar, from: Instant, limit: Duration) -> Option<Duration> {
    while from.elapsed() < limit {
        if s.ready() != Some(true) {
            return Some(from.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// A fresh hold whose streams are placed so that one member carries neither the keepalive
/// stream nor the watch; forces a new hold (deleting the key) when they are not.
fn fresh_hold(
    s: &Sidecar,
    cluster: &EtcdCluster,
    rt: &tokio::runtime::Runtime,
    c: &Client,
    prefix: &str,
) -> Placement {
    for _ in 0..10 {
        s.wait_ready(Duration::from_secs(30));
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(200));
            if let Some(p) = placement(cluster) {
                return p;
            }
        }
        rt.block_on(
            c.clone()
                .delete(prefix, Some(DeleteOptions::new().with_prefix())),
        )
        .unwrap();
        let _ = time_to_unready(s, Instant::now(), Duration::from_secs(15));
    }
    panic!("the holder's streams never settled on two members or fewer");
}

/// A holder (TTL 10 s, renew 1 s, request timeout 10 s) behind three proxies, one per member.
/// Its periodic ownership check is made to hang on a member that carries neither its keepalive
/// stream nor its watch; then its key is deleted (or its lease revoked) and `/readyz` must turn
/// 503 well within a second. Finally, with the check hanging again, the other members are cut
/// off too: the holder must step down by its local deadline.
#[test]
fn holder_steps_down_at_once_while_its_periodic_check_hangs() {
    let cluster = EtcdCluster::three();
    let proxies: Vec<FaultProxy> = (0..3)
        .map(|i| FaultProxy::start(&cluster.endpoint(i)))
        .collect();
    let endpoints: Vec<String> = proxies.iter().map(|p| p.endpoint.clone()).collect();
    let lock = unique_name("hung");
    let prefix = format!("/locks/{lock}/");
    let s = Sidecar::start(
        &endpoints,
        &lock,
        "h",
        &format!("{}s", HUNG_TTL.as_secs()),
        &[
            "--renew-interval",
            &flag_ms(HUNG_RENEW),
            "--safety-margin",
            &flag_ms(HUNG_MARGIN),
            "--etcd-request-timeout",
            "10s",
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(Client::connect(cluster.endpoints(), None))
        .unwrap();

    let mut rounds: Vec<String> = Vec::new();
    let mut slow: Vec<String> = Vec::new();
    let mut tries = 0;
    while rounds.len() < HUNG_ROUNDS && tries < HUNG_MAX_TRIES {
        for p in &proxies {
            p.heal();
        }
        let p = fresh_hold(&s, &cluster, &rt, &client, &prefix);
        let lease = s.status()["lease_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let hung_at = loop {
            tries += 1;
            match try_to_hang_the_check(&cluster, &proxies, &p) {
                Try::Hung(at) => break Some(at),
                Try::NoChecks => panic!(
                    "no periodic ownership read reached any member for {:?}: this test \
                     assumes a linearizable get every renew interval",
                    HUNG_RENEW * 7
                ),
                Try::Missed if tries >= HUNG_MAX_TRIES => break None,
                Try::Missed => {}
            }
        };
        let Some(hung_at) = hung_at else { break };
        let was_ready = s.ready();
        let revoke = rounds.len() % 2 == 1;
        let sent = Instant::now();
        if revoke {
            let id = i64::from_str_radix(&lease, 16).expect("hex lease id");
            rt.block_on(client.clone().lease_revoke(id)).unwrap();
        } else {
            rt.block_on(
                client
                    .clone()
                    .delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix())),
            )
            .unwrap();
        }
        let took = time_to_unready(&s, sent, Duration::from_secs(15));
        let what = if revoke {
            "lease revoked"
        } else {
            "key deleted"
        };
        let line = format!(
            "round {}: check hung on member {} since {} ms before the change; ready before: \
             {was_ready:?}; {what}; /readyz 503 after {took:?}",
            rounds.len() + 1,
            p.x,
            ms_between(hung_at, sent)
        );
        eprintln!("{line}");
        if took.is_none_or(|t| t > Duration::from_millis(1000)) {
            slow.push(line.clone());
        }
        rounds.push(line);
        proxies[p.x].heal();
        if took.is_none() {
            break;
        }
    }
    assert!(
        !rounds.is_empty(),
        "could not make the periodic check hang in {tries} tries (a check that reaches a live \
         member within 350 ms of its tick counts as not hung)"
    );
    eprintln!("{} rounds with a hung check in {tries} tries", rounds.len());

    // With the check hanging, keepalives stop too: stepped down by the local deadline.
    for p in &proxies {
        p.heal();
    }
    let mut deadline_story = None;
    for _ in 0..HUNG_MAX_TRIES {
        let p = fresh_hold(&s, &cluster, &rt, &client, &prefix);
        if let Try::Hung(_) = try_to_hang_the_check(&cluster, &proxies, &p) {
            let cut = Instant::now();
            for &i in &p.live {
                proxies[i].blackhole();
            }
            let bound = HUNG_TTL - HUNG_MARGIN + Duration::from_millis(500);
            let took = time_to_unready(&s, cut, bound + Duration::from_secs(5));
            let mut flapped = false;
            if took.is_some() {
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    flapped |= s.ready() == Some(true);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            deadline_story = Some((took, bound, flapped));
            break;
        }
        for p in &proxies {
            p.heal();
        }
    }
    for p in &proxies {
        p.heal();
    }
    let (took, bound, flapped) =
        deadline_story.expect("the check hung again for the keepalive part");
    eprintln!("all members cut off with the check hanging: /readyz 503 after {took:?} (bound {bound:?}), ready again meanwhile: {flapped}");
    assert!(
        slow.is_empty(),
        "{} of {} rounds with a hung check stepped down late (limit 1 s):\n{}\nall rounds:\n{}\nlog:\n{}",
        slow.len(),
        rounds.len(),
        slow.join("\n"),
        rounds.join("\n"),
        tail_lines(&s.log(), 30)
    );
    assert!(
        took.is_some_and(|t| t <= bound),
        "cut off from every member with the check hanging, /readyz turned 503 after {took:?}; \
         the local deadline is at most {:?} after the cut",
        HUNG_TTL - HUNG_MARGIN
    );
    assert!(!flapped, "ready again while cut off from every member");
}
