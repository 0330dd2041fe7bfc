//! What the terminal sees: the plain-text summary, and the smoke run's check.

use std::fmt::Write as _;

use super::{med, ms, per_handover};
use crate::results::{Results, Row};

/// The three latency measurements' rows, with their names.
fn latency_rows(res: &Results) -> [(&'static str, &[Row]); 3] {
    [
        ("uncontended", &res.uncontended),
        ("hand-off", &res.handoff),
        ("fail-over", &res.failover),
    ]
}

/// A short plain-text summary for the terminal.
pub fn summary(res: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n== lockbench summary (median / p99) ==");
    for (title, rows) in latency_rows(res) {
        for r in rows.iter() {
            let _ = writeln!(
                o,
                "{title:12} {:50} {:>10} / {:>10}  (n={}, failed={})",
                r.label,
                ms(r.series.median()),
                ms(r.series.p99()),
                r.series.n(),
                r.series.failures
            );
        }
    }
    for c in &res.contention {
        for (i, p) in per_handover(c).iter().enumerate() {
            let _ = writeln!(
                o,
                "contention   {:20} N={:<4} run {i}: {:>7.0} hand-overs/s, {:.2} unary + {:.2} watch req, {:.2} keepalives, {:.2} events per hand-over",
                c.label, c.n, p.rate, p.unary, p.watch_requests, p.keepalives, p.watch_events
            );
        }
    }
    for f in &res.footprint {
        let _ = writeln!(
            o,
            "footprint    {:20} {:8} RSS {:.1} MiB, CPU {:.3} %",
            f.label,
            f.role,
            f.rss_kib as f64 / 1024.0,
            f.cpu_pct
        );
    }
    for m in &res.many {
        let _ = writeln!(
            o,
            "many locks   {:32} {:>8.0} ops/s (median), failed {}",
            m.label,
            med(&m.ops_per_s).unwrap_or(0.0),
            m.failed
        );
    }
    for r in res.fleet.iter().filter(|r| r.contenders > 0) {
        let traffic = match (r.per_contender_s(), r.total_rate(), r.bound()) {
            (Some(t), Some(total), Some(b)) => format!(
                "{:.3} keepalives + {:.3} unary + {:.3} watch = {total:.3} req/s per contender (bound {b:.3}), ",
                t.keepalives, t.unary, t.watch_requests
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "fleet        {:40} N={:<5} {traffic}hand-off {} / {}",
            r.label,
            r.contenders,
            ms(r.handoff.median()),
            ms(r.handoff.p99())
        );
    }
    for e in &res.errors {
        let _ = writeln!(o, "ERROR: {e}");
    }
    for n in &res.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// What a smoke run must have produced: every code path ran at least once and nothing failed.
pub fn smoke_problems(res: &Results, partial: bool) -> Vec<String> {
    let mut p: Vec<String> = res.errors.clone();
    for (title, rows) in latency_rows(res) {
        for r in rows.iter() {
            if r.series.is_empty() {
                p.push(format!("{title}: {}: no samples", r.label));
            }
            if r.series.failures > 0 {
                p.push(format!(
                    "{title}: {}: {} failed",
                    r.label, r.series.failures
                ));
            }
        }
    }
    for c in &res.contention {
        // python-etcd3 may lose a wake-up (its flaw, not ours): only require that it ran.
        let short = if c.id.starts_with("py") {
            c.runs.iter().any(|r| r.ok == 0)
        } else {
            c.runs.iter().any(|r| r.ok != c.n)
        };
        if short || c.runs.is_empty() {
            p.push(format!(
                "contention {} N={}: not every contender acquired",
                c.label, c.n
            ));
        }
    }
    for m in &res.many {
        if m.failed > 0 {
            p.push(format!("many locks {}: {} failed", m.label, m.failed));
        }
    }
    for r in &res.fleet {
        let what = format!("fleet {} N={}", r.label, r.contenders);
        // The empty cluster and the sidecar fleet measure a window only.
        if !matches!(r.id, "sidecar" | "empty") && r.handoff.is_empty() {
            p.push(format!("{what}: no hand-off timed"));
        }
        if r.id != "lib_pair" && r.traffic.is_none() {
            p.push(format!("{what}: no window measured"));
        }
        if r.moved > 0 {
            p.push(format!(
                "{what}: {} contenders moved during the window",
                r.moved
            ));
        }
    }
    if !partial {
        for (what, empty) in [
            ("uncontended", res.uncontended.is_empty()),
            ("hand-off", res.handoff.is_empty()),
            ("fail-over", res.failover.is_empty()),
            ("contention", res.contention.is_empty()),
            ("footprint", res.footprint.is_empty()),
            ("many locks", res.many.is_empty()),
            ("fleet", res.fleet.is_empty()),
        ] {
            if empty {
                p.push(format!("{what}: nothing measured"));
            }
        }
    }
    p
}
