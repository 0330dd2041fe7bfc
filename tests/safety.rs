//! The fault-injection safety suite: real etcd members and real `lockkeeper run`
//! sidecars as processes, faults on the processes, the network and etcd, clock skew, and a
//! checker of DESIGN.md's safety rule on the recorded readiness histories, cross-checked by an
//! external prober, a watch on the lock prefix and a fenced store.
//!
//! CI runs the short version here (every fault kind at least once, scenarios in parallel). The
//! soak (`scripts/soak.sh --duration 10m`) runs `randomized_soak` for longer and writes
//! docs/safety.md; without `LOCKKEEPER_SOAK_SECS` it runs one short randomized scenario.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use testkit::fault::checker::{self, Violation};
use testkit::fault::history::{parse_history, EndBy, Interval};
use testkit::fault::kind::Fault;
use testkit::fault::outcome::Outcome;
use testkit::fault::prober::Probe;
use testkit::fault::proxy::{Dir, FaultProxy};
use testkit::fault::report::{self, Control, Meta};
use testkit::fault::scenario::{self, Skew, Spec};
use testkit::fault::store::{FencedStore, StoreStats};
use testkit::fault::watch::Creation;

// === the checker on synthetic histories: it must be able to fail ===

const MS: u64 = 1_000_000;

fn iv(identity: &str, token: i64, start_ms: u64, end_ms: u64) -> Interval {
    Interval {
        identity: identity.into(),
        run: 0,
        token,
        start: start_ms * MS,
        end: end_ms * MS,
        end_by: EndBy::Unready,
        lost_early_ns: None,
        last_deadline: end_ms * MS,
    }
}

fn created(intervals: &[Interval]) -> Vec<Creation> {
    intervals
        .iter()
        .map(|i| Creation {
            key: format!("/locks/x/{}", i.token),
            create_revision: i.token,
            value: i.identity.clone(),
        })
        .collect()
}

#[test]
fn checker_accepts_disjoint_holdings_with_increasing_tokens() {
    let h = vec![
        iv("a", 2, 0, 100),
        iv("b", 5, 101, 300),
        iv("a", 9, 900, 1000),
    ];
    let v = checker::check_all(&h, &BTreeMap::new(), &created(&h), &StoreStats::default());
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn checker_reports_overlapping_holdings() {
    let h = vec![
        iv("a", 2, 0, 100),
        iv("b", 5, 99, 300),
        iv("c", 7, 400, 500),
    ];
    let v = checker::overlaps(&h);
    assert_eq!(v.len(), 1, "{v:?}");
    match &v[0] {
        Violation::Overlap { a, b, overlap_ns } => {
            assert_eq!((a.identity.as_str(), b.identity.as_str()), ("a", "b"));
            assert_eq!(*overlap_ns, MS);
        }
        other => panic!("{other:?}"),
    }
    // Containment and identical intervals are overlaps too; touching ends are not.
    assert_eq!(
        checker::overlaps(&[iv("a", 1, 0, 1000), iv("b", 2, 10, 20)]).len(),
        1
    );
    assert_eq!(
        checker::overlaps(&[iv("a", 1, 5, 10), iv("b", 2, 5, 10)]).len(),
        1
    );
    assert!(checker::overlaps(&[iv("a", 1, 0, 10), iv("b", 2, 10, 20)]).is_empty());
    let all = checker::check_all(&h, &BTreeMap::new(), &created(&h), &StoreStats::default());
    assert!(all.iter().any(|v| v.kind() == "overlap"), "{all:?}");
}

#[test]
fn checker_reports_token_regressions_and_unknown_tokens() {
    let h = vec![
        iv("a", 5, 0, 100),
        iv("b", 3, 200, 300),
        iv("c", 5, 400, 500),
    ];
    let v = checker::token_order(&h);
    assert_eq!(v.len(), 2, "a regression and a reuse: {v:?}");
    assert!(v.iter().all(|v| v.kind() == "token-order"));
    // A token that is not the create revision of a key written by that identity.
    let mut c = created(&h[..1]);
    c.push(Creation {
        key: "/locks/x/other".into(),
        create_revision: 3,
        value: "somebody-else".into(),
    });
    let v = checker::tokens_match_watch(&h, &c);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.kind() == "token-not-created"));
}

#[test]
fn checker_cross_checks_the_prober() {
    let h = vec![iv("a", 2, 100, 200), iv("b", 4, 300, 400)];
    let probe = |send_ms: u64, ready: bool| Probe {
        send: send_ms * MS,
        recv: send_ms * MS + MS / 2,
        ready: Some(ready),
    };
    // a answered 200 at 250 ms, after its recorded end: the recorder was not conservative.
    let mut probes = BTreeMap::new();
    probes.insert(
        "a".to_string(),
        vec![probe(150, true), probe(160, true), probe(250, true)],
    );
    probes.insert("b".to_string(), vec![probe(350, true), probe(360, true)]);
    let v = checker::probes_within_history(&h, &probes);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind(), "probe-unrecorded");
    // The prober alone sees a and b ready over intersecting stretches.
    probes.insert(
        "a".to_string(),
        vec![probe(300, true), probe(310, true), probe(320, true)],
    );
    probes.insert(
        "b".to_string(),
        vec![probe(305, true), probe(315, true), probe(400, false)],
    );
    let v = checker::prober_overlaps(&probes);
    assert_eq!(v.len(), 1, "{v:?}");
    // One answer is not a stretch; a 503 in between ends one.
    probes.insert("a".to_string(), vec![probe(300, true), probe(310, false)]);
    assert!(checker::prober_overlaps(&probes).is_empty());
}

#[test]
fn fenced_store_rejects_stale_tokens_and_the_checker_flags_shared_ones() {
    let store = FencedStore::default();
    assert!(store.write("a", 5));
    assert!(store.write("a", 5));
    assert!(store.write("b", 9));
    assert!(!store.write("a", 5), "stale token bounces");
    let s = store.stats();
    assert_eq!((s.accepted, s.rejected, s.max_token), (3, 1, 9));
    assert!(checker::store_fencing(&s).is_empty());
    assert!(store.write("c", 9));
    let v = checker::store_fencing(&store.stats());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind(), "store-token-shared");
}

/// History lines as the sidecar writes them (src/history.rs).
fn line(
    event: &str,
    raw_ms: u64,
    mono_ms: u64,
    token: Option<i64>,
    deadline_ms: Option<u64>,
) -> String {
    let mut v = serde_json::json!({"event": event, "raw_ns": raw_ms * MS, "mono_ns": mono_ms * MS});
    if let Some(t) = token {
        v["token"] = t.into();
    }
    if let Some(d) = deadline_ms {
        v["deadline_ns"] = (d * MS).into();
    }
    v.to_string()
}

#[test]
fn history_intervals_are_conservative() {
    // Clean hand-over: the interval ends at the unready stamp.
    let text = [
        line("start", 1000, 0, None, None),
        line("ready", 1010, 10, Some(7), Some(2410)),
        line("deadline", 2010, 1010, Some(7), Some(3410)),
        line("unready", 2500, 1500, Some(7), None),
    ]
    .join("\n");
    let h = parse_history(&text, "a", 0, 1.0).unwrap();
    assert_eq!(h.intervals.len(), 1);
    let i = &h.intervals[0];
    assert_eq!(
        (i.token, i.start, i.end, i.end_by),
        (7, 1010 * MS, 2500 * MS, EndBy::Unready)
    );

    // SIGKILLed while holding: no unready, the end is the last deadline mapped to the raw clock
    // (rate 1, less 1 %, plus 2 ms).
    let text = [
        line("start", 1000, 0, None, None),
        line("ready", 1010, 10, Some(7), Some(2410)),
        line("deadline", 2010, 1010, Some(7), Some(3410)),
    ]
    .join("\n");
    let h = parse_history(&text, "a", 0, 1.0).unwrap();
    let i = &h.intervals[0];
    assert_eq!(i.end_by, EndBy::Deadline);
    let expected = 2010.0 + 2400.0 / 0.99 + 2.0;
    assert!((i.end as f64 / MS as f64 - expected).abs() < 0.01, "{i:?}");

    // SIGSTOPped past the deadline: the unready stamp comes late, the deadline ends it.
    let text = [
        line("start", 1000, 0, None, None),
        line("ready", 1010, 10, Some(7), Some(2410)),
        line("unready", 9000, 8000, Some(7), None),
    ]
    .join("\n");
    let i = parse_history(&text, "a", 0, 1.0).unwrap().intervals[0].clone();
    assert_eq!(i.end_by, EndBy::Deadline);
    assert!(i.end < 3500 * MS, "{i:?}");

    // A clock at ×0.5 (faketime): 2.4 s of process time are 4.8 s of raw time. The measured
    // rate (over ≥ 1 s of pairs) wins when it is slower than the expected one.
    let text = [
        line("start", 0, 0, None, None),
        line("ready", 2000, 1000, Some(7), Some(3400)),
    ]
    .join("\n");
    let h = parse_history(&text, "a", 0, 1.0).unwrap();
    assert!((h.clock.measured_rate.unwrap() - 0.5).abs() < 1e-9);
    let i = &h.intervals[0];
    assert!(i.end >= (2000 + 4800) * MS, "{i:?}");
    // The key found gone 1 s before the deadline is an early loss; at the deadline it is not.
    let lost = |raw_ms: u64| {
        let mut v: serde_json::Value =
            serde_json::from_str(&line("unready", raw_ms, raw_ms - 1000, Some(7), None)).unwrap();
        v["state"] = "lost".into();
        v.to_string()
    };
    let early = [
        line("start", 1000, 0, None, None),
        line("ready", 1010, 10, Some(7), Some(2410)),
        lost(2410),
    ]
    .join("\n");
    let i = parse_history(&early, "a", 0, 1.0).unwrap().intervals[0].clone();
    assert_eq!(i.lost_early_ns, Some(1000 * MS), "{i:?}");
    let late = [
        line("start", 1000, 0, None, None),
        line("ready", 1010, 10, Some(7), Some(2410)),
        lost(3405),
    ]
    .join("\n");
    let i = parse_history(&late, "a", 0, 1.0).unwrap().intervals[0].clone();
    assert_eq!(i.lost_early_ns, None, "{i:?}");
    // A garbled line is an error, not a silent gap.
    assert!(parse_history("{\"event\":\"ready\"", "a", 0, 1.0).is_err());
}

// === the fault proxy itself ===

/// An echo server on a free port; returns its address.
fn echo_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.endpoint.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    s
}

/// Round trip of one message, or the error.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Duration> {
    let started = Instant::now();
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(started.elapsed())
}

#[test]
fn fault_proxy_passes_delays_blackholes_resets_and_loses_one_way() {
    let proxy = FaultProxy::start(&echo_server());
    let mut s = connect(&proxy);
    assert!(echo(&mut s, b"ping").unwrap() < Duration::from_millis(100));

    proxy.delay(Duration::from_millis(150), Duration::ZERO);
    let rtt = echo(&mut s, b"slow").unwrap();
    assert!(
        rtt >= Duration::from_millis(300),
        "two delayed legs: {rtt:?}"
    );
    proxy.delay(Duration::ZERO, Duration::from_millis(200));
    let mut s2 = connect(&proxy);
    for _ in 0..5 {
        echo(&mut s2, b"jittered, in order").unwrap();
    }

    proxy.blackhole();
    let e = echo(&mut s, b"gone").unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e:?}"
    );
    proxy.heal();
    // Stalled bytes flow again after the heal (a partition heals, nothing is lost).
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"gone");

    proxy.one_way_loss(Dir::Down);
    assert!(echo(&mut s, b"lost").is_err(), "answers are dropped");
    proxy.heal();
    let mut s = connect(&proxy);
    echo(&mut s, b"fresh").unwrap();

    proxy.reset();
    let e = echo(&mut s, b"reset").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e:?}");
    let mut fresh = connect(&proxy);
    assert!(
        echo(&mut fresh, b"refused").is_err(),
        "new connections reset too"
    );
    proxy.heal();
    let mut s = connect(&proxy);
    echo(&mut s, b"back").unwrap();
}

// === configuration parsing over a garbage corpus (the fuzz targets' seeds + mutations) ===

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/fuzz/corpus/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .flatten()
        .map(|e| e.path())
        // The checked-in seeds; a local fuzzing run adds its finds beside them.
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(seeds.len() >= 5, "{path} holds the seeds");
    seeds
}

/// Deterministic mutations in the style of a fuzzer: bit flips, truncations, splices,
/// duplicated or removed bytes, inserted dictionary tokens and random bytes.
fn mutations(seeds: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
    const TOKENS: &[&str] = &[
        ":",
        "\n",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "&a",
        "*a",
        "!!",
        "ttl: ",
        "0s",
        "999999999999s",
        "-1s",
        "1ns",
        "name:",
        "\u{0}",
        "\u{7}",
        "é",
        "💥",
        "'",
        "\"",
        "\\",
        "%",
        "~",
        "null",
        ",",
        "=",
        "--ttl",
        "--lock",
        "--safety-margin",
        "http://",
        "[::1]:",
        "65536",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut d = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=d.len());
            match rng.random_range(0..7) {
                0 if !d.is_empty() => {
                    let i = rng.random_range(0..d.len());
                    d[i] ^= 1 << rng.random_range(0..8);
                }
                1 => d.truncate(at),
                2 => {
                    let other = &seeds[rng.random_range(0..seeds.len())];
                    let from = rng.random_range(0..=other.len());
                    d.splice(at..at, other[from..].iter().copied());
                }
                3 if at < d.len() => {
                    let b = d[at];
                    d.insert(at, b);
                }
                4 if at < d.len() => {
                    d.remove(at);
                }
                5 => {
                    let t = TOKENS[rng.random_range(0..TOKENS.len())];
                    d.splice(at..at, t.bytes());
                }
                _ => {
                    let n = rng.random_range(1..16);
                    d.splice(at..at, (0..n).map(|_| rng.random::<u8>()));
                }
            }
        }
        out.push(d);
    }
    out
}

#[test]
fn config_parsing_survives_a_garbage_corpus() {
    let yaml = corpus("config_yaml");
    for input in yaml.iter().chain(&mutations(&yaml, 3000, 6)) {
        harness::config_yaml(input);
    }
    let args = corpus("cli_args");
    for input in args.iter().chain(&mutations(&args, 3000, 7)) {
        harness::cli_args(input);
    }
    // Inputs that once failed the fuzz targets.
    let dir = format!("{}/fuzz/regressions", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(entry.path()).unwrap();
        match name.split_once('-').map(|(t, _)| t) {
            Some("config_yaml") => harness::config_yaml(&data),
            Some("cli_args") => harness::cli_args(&data),
            _ => panic!("{dir}/{name}: name regressions <target>-<what>"),
        }
    }
    // Pathological YAML: deep nesting and alias bombs end in an error naming a field, quickly.
    let started = Instant::now();
    let deep = format!("lock: {}{}", "[".repeat(20_000), "]".repeat(20_000));
    harness::config_yaml(deep.as_bytes());
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for n in 0..12 {
        let prev = if n == 0 {
            "a".to_string()
        } else {
            format!("a{}", n - 1)
        };
        bomb.push_str(&format!(
            "a{n}: &a{n} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    harness::config_yaml(bomb.as_bytes());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// === scenarios against real processes ===

fn assert_safe(outcomes: &[Outcome]) {
    let mut failures = String::new();
    for o in outcomes {
        if !o.violations.is_empty() {
            failures.push_str(&o.summary());
        }
        assert_eq!(
            o.faults.len(),
            o.spec.faults.len(),
            "every fault of {} was injected:\n{}",
            o.spec.name,
            o.summary()
        );
        let holders: std::collections::BTreeSet<&str> =
            o.intervals.iter().map(|i| i.identity.as_str()).collect();
        assert!(
            holders.len() >= 2 && o.probes_200 > 0,
            "{}: the lock moved between sidecars and the prober saw it held:\n{}",
            o.spec.name,
            o.summary()
        );
    }
    assert!(failures.is_empty(), "safety violations:\n{failures}");
}

fn processes_spec() -> Spec {
    Spec::new(
        "processes",
        1,
        3,
        &[
            Fault::KillHolder,
            Fault::StopHolder,
            Fault::TermHolder,
            Fault::KillWaiter,
        ],
    )
}

fn network_spec() -> Spec {
    Spec::new(
        "network",
        1,
        3,
        &[
            Fault::Delay,
            Fault::Jitter,
            Fault::Blackhole,
            Fault::Reset,
            Fault::LossDown,
            Fault::LossUp,
        ],
    )
}

fn members_spec() -> Spec {
    Spec::new(
        "etcd-members",
        3,
        3,
        &[
            Fault::KillFollower,
            Fault::PauseFollower,
            Fault::KillLeader,
            Fault::PauseLeader,
            Fault::KillQuorum,
            Fault::PauseQuorum,
        ],
    )
}

fn churn_spec() -> Spec {
    Spec::new("compaction-churn", 1, 4, &[Fault::CompactChurn])
}

fn skew_spec(rate: f64, margin: Duration, name: &str) -> Spec {
    let mut s = Spec::new(name, 1, 2, &[Fault::SkewCutoff, Fault::SkewCutoff]);
    s.skew = Some(Skew {
        node: 0,
        rate,
        margin,
    });
    s.negative = margin.is_zero();
    s
}

#[test]
fn sidecar_process_and_network_faults_keep_at_most_one_holder() {
    let outcomes = scenario::run_many(vec![processes_spec(), network_spec()], 2);
    assert_safe(&outcomes);
}

#[test]
fn etcd_member_faults_and_compaction_keep_at_most_one_holder() {
    let outcomes = scenario::run_many(vec![members_spec(), churn_spec()], 2);
    assert_safe(&outcomes);
    let churn = &outcomes[1];
    assert!(
        churn.compactions >= 5,
        "compaction ran during the churn: {}",
        churn.summary()
    );
}

/// The negative control: what the checker must report for a margin-0 holder at clock ×0.5.
fn control_caught(o: &Outcome) -> Result<String, String> {
    let kinds = o.kinds();
    let overlaps = kinds.get("overlap").copied().unwrap_or(0);
    let prober = kinds.get("prober-overlap").copied().unwrap_or(0);
    let worst = o
        .violations
        .iter()
        .filter_map(|v| match v {
            Violation::Overlap { overlap_ns, .. } => Some(*overlap_ns),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let unexpected: Vec<String> = o
        .violations
        .iter()
        .filter(|v| !matches!(v.kind(), "overlap" | "prober-overlap"))
        .map(|v| v.to_string())
        .collect();
    let detail = format!(
        "{overlaps} recorded overlaps (longest {:.0} ms), {prober} seen by the prober; fenced store rejected {} stale writes",
        worst as f64 / 1e6,
        o.store.rejected
    );
    if overlaps > 0 && prober > 0 && o.store.rejected > 0 && unexpected.is_empty() {
        Ok(detail)
    } else {
        Err(format!(
            "{detail}; unexpected: {unexpected:?}\n{}",
            o.summary()
        ))
    }
}

#[test]
fn clock_skew_within_the_margin_is_safe_and_beyond_it_is_caught() {
    let outcomes = scenario::run_many(
        vec![
            skew_spec(0.9, Duration::from_millis(600), "skew-0.9"),
            skew_spec(0.5, Duration::ZERO, "negative-skew-0.5-margin-0"),
        ],
        2,
    );
    assert_safe(&outcomes[..1]);
    match control_caught(&outcomes[1]) {
        Ok(detail) => eprintln!("negative control caught: {detail}"),
        Err(e) => panic!("the checker missed the negative control: {e}"),
    }
}

/// Stale-leader rounds (3 members, every sidecar behind proxies), ending with a hand-over so
/// that the lock moves at least once.
fn stale_leader_spec(name: &str, rounds: usize, busy: bool) -> Spec {
    let mut faults = vec![Fault::StaleLeader; rounds];
    faults.push(Fault::TermHolder);
    let mut s = Spec::new(name, 3, 3, &faults);
    s.busy = busy;
    s
}

#[test]
fn stale_etcd_leaders_keep_at_most_one_holder_also_on_a_busy_machine() {
    let outcomes = scenario::run_many(
        vec![
            stale_leader_spec("stale-leader", 3, false),
            stale_leader_spec("stale-leader-busy", 1, true),
        ],
        2,
    );
    assert_safe(&outcomes);
    for o in &outcomes {
        let rounds: Vec<_> = o
            .faults
            .iter()
            .filter(|f| f.fault == Fault::StaleLeader)
            .collect();
        let early = rounds
            .iter()
            .filter(|f| f.early_revocation.is_some())
            .count();
        eprintln!(
            "{}: {early} of {} stale-leader rounds revoked the holder's lease early",
            o.spec.name,
            rounds.len()
        );
    }
}

/// The holder's key deleted behind its back while its link to etcd is slow: what an early
/// revocation by etcd looks like to the lock.
fn revoke_spec(name: &str, lock_delay: Option<Duration>) -> Spec {
    let mut s = Spec::new(name, 1, 2, &[Fault::SyntheticRevoke]);
    s.lock_delay = lock_delay;
    s.negative = lock_delay.is_some_and(|d| d.is_zero());
    s
}

/// The synthetic early revocation really happened: the holder lost its key before its deadline.
fn revoked_early(o: &Outcome) -> bool {
    o.faults
        .iter()
        .any(|f| f.fault == Fault::SyntheticRevoke && f.early_revocation.is_some())
}

#[test]
fn early_revocation_overlaps_without_lock_delay_and_is_safe_with_it() {
    let outcomes = scenario::run_many(
        vec![
            revoke_spec("revoke-lock-delay-default", None),
            revoke_spec("negative-revoke-lock-delay-0", Some(Duration::ZERO)),
        ],
        2,
    );
    assert_safe(&outcomes[..1]);
    for o in &outcomes {
        assert!(
            revoked_early(o),
            "{}: the holder lost its key before its deadline:\n{}",
            o.spec.name,
            o.summary()
        );
    }
    match control_caught(&outcomes[1]) {
        Ok(detail) => eprintln!("negative control caught: {detail}"),
        Err(e) => panic!("the checker missed the early revocation without lock-delay: {e}"),
    }
}

// === the randomized soak (short in CI; long with scripts/soak.sh) ===

fn random_spec(rng: &mut StdRng, n: usize) -> Spec {
    use Fault::*;
    let process = [KillHolder, KillWaiter, StopHolder, TermHolder];
    let network = [
        Delay,
        Jitter,
        Blackhole,
        Reset,
        LossDown,
        LossUp,
        SyntheticRevoke,
    ];
    let members = [
        KillFollower,
        PauseFollower,
        KillLeader,
        PauseLeader,
        KillQuorum,
        PauseQuorum,
    ];
    let (template, members_n, nodes, pool): (&str, usize, usize, Vec<Fault>) =
        match rng.random_range(0..5) {
            0 => ("net", 1, 3, [&process[..], &network[..]].concat()),
            1 => (
                "members",
                3,
                3,
                [&process[..], &members[..], &[CompactChurn]].concat(),
            ),
            2 => (
                "mixed",
                3,
                rng.random_range(2..=4),
                [&process[..], &network[..], &members[..], &[CompactChurn]].concat(),
            ),
            3 => ("skew", 1, 2, [&process[..], &network[..]].concat()),
            _ => ("stale", 3, 3, vec![StaleLeader]),
        };
    let count = rng.random_range(4..=7);
    let mut faults: Vec<Fault> = (0..count)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect();
    if template == "mixed" {
        faults.push(StaleLeader);
    }
    let mut spec = Spec::new(&format!("soak-{n}-{template}"), members_n, nodes, &[]);
    if template == "skew" {
        let rate = 0.85 + rng.random_range(0..=10) as f64 / 100.0; // 0.85..=0.95: within 1 − 600/3000
        spec.skew = Some(Skew {
            node: 0,
            rate: rate.max(0.85),
            margin: Duration::from_millis(600),
        });
        faults.insert(0, SkewCutoff);
    }
    // End with a hand-over, so every scenario moves the lock at least once.
    faults.push(TermHolder);
    spec.proxied = template != "members";
    spec.faults = faults;
    spec.seed = rng.random();
    // A busy machine for a quarter of the scenarios, for their whole length.
    if rng.random_range(0..4) == 0 {
        spec.busy = true;
        spec.name.push_str("-busy");
    }
    spec
}

#[test]
fn randomized_soak() {
    let soak_secs: Option<u64> = std::env::var("LOCKKEEPER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("LOCKKEEPER_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 ^ world_clock_seed());
    let parallel: usize = std::env::var("LOCKKEEPER_SOAK_PARALLEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    eprintln!("randomized soak: seed {seed} (LOCKKEEPER_SOAK_SEED={seed} reproduces the schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut controls = Vec::new();
    let mut round = 0;
    match soak_secs {
        None => {
            // CI: one randomized scenario of the mixed kind.
            let mut spec = random_spec(&mut rng, 0);
            let last = spec.faults.len() - 1;
            spec.faults.drain(4..last);
            outcomes.extend(scenario::run_many(vec![spec], 1));
        }
        Some(secs) => {
            let budget = Duration::from_secs(secs);
            while started.elapsed() < budget {
                let mut batch: Vec<Spec> = (0..parallel)
                    .map(|k| random_spec(&mut rng, round * parallel + k))
                    .collect();
                // Every third round, one slot runs a negative control instead: clock skew and
                // the early revocation without lock-delay by turns.
                if round % 6 == 0 {
                    batch[0] = skew_spec(
                        0.5,
                        Duration::ZERO,
                        &format!("negative-{round}-skew-0.5-margin-0"),
                    );
                    batch[0].faults = vec![Fault::SkewCutoff];
                } else if round % 6 == 3 {
                    batch[0] = revoke_spec(
                        &format!("negative-{round}-revoke-lock-delay-0"),
                        Some(Duration::ZERO),
                    );
                }
                for o in scenario::run_many(batch, parallel) {
                    if o.spec.name.starts_with("negative") {
                        let (what, r) = if o.spec.skew.is_some() {
                            ("margin 0, holder clock ×0.5, cut off", control_caught(&o))
                        } else {
                            (
                                "lock-delay 0, holder's key deleted, its link delayed 300 ms",
                                control_caught(&o).and_then(|d| {
                                    if revoked_early(&o) {
                                        Ok(d)
                                    } else {
                                        Err(format!("the key was not lost early: {d}"))
                                    }
                                }),
                            )
                        };
                        controls.push(Control {
                            name: format!("{}: {what}", o.spec.name),
                            caught: r.is_ok(),
                            detail: r.unwrap_or_else(|e| e),
                        });
                    } else {
                        outcomes.push(o);
                    }
                }
                round += 1;
            }
        }
    }
    if let Ok(path) = std::env::var("LOCKKEEPER_SAFETY_REPORT") {
        // Synthetic controls: the checker must fail on known-bad histories.
        let overlap = vec![iv("a", 2, 0, 100), iv("b", 5, 99, 300)];
        let regress = vec![iv("a", 5, 0, 100), iv("b", 3, 200, 300)];
        for (name, h) in [
            ("synthetic: two holders overlap by 1 ms", overlap),
            ("synthetic: fencing token goes down", regress),
        ] {
            let v = checker::check_all(&h, &BTreeMap::new(), &created(&h), &StoreStats::default());
            controls.push(Control {
                name: name.into(),
                caught: !v.is_empty(),
                detail: v.first().map(|v| v.to_string()).unwrap_or_default(),
            });
        }
        let meta = Meta {
            command: format!(
                "scripts/soak.sh --duration {}s",
                soak_secs.unwrap_or_default()
            ),
            requested: Duration::from_secs(soak_secs.unwrap_or_default()),
            wall: started.elapsed(),
            seed,
            parallel,
        };
        std::fs::write(&path, report::render(&outcomes, &controls, &meta))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("wrote {path}");
    }
    assert_safe(&outcomes);
    let missed: Vec<&Control> = controls.iter().filter(|c| !c.caught).collect();
    assert!(missed.is_empty(), "negative controls missed: {missed:?}");
}

fn world_clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(6)
}
