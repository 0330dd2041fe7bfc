//! "Targets": every benchmark target, what was measured, met or missed (and by how much).

use std::fmt::Write as _;

use super::{fleet_rate, lo_hi, median_p99, ms, requests_per_handover, row_series};
use crate::results::{FleetRun, Plan, Results};
use crate::stats::Series;

/// One target line: what was asked, what was measured, met or missed (and by how much).
struct Verdict {
    section: &'static str,
    target: String,
    result: String,
    met: Option<bool>,
}

fn verdict_text(v: &Verdict) -> &'static str {
    match v.met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// `value` must be ≤ `limit`: "x (limit y): missed by z %".
fn le(value: Option<f64>, limit: Option<f64>) -> Option<bool> {
    Some(value? <= limit?)
}

fn over(value: f64, limit: f64) -> String {
    if value <= limit {
        String::new()
    } else {
        format!(" — {:.0} % over", (value / limit - 1.0) * 100.0)
    }
}

fn verdicts(res: &Results, plan: &Plan) -> Vec<Verdict> {
    let mut v = Vec::new();
    let u = &res.uncontended;
    let floor = row_series(u, "floor_put_delete").and_then(Series::median);
    let mutex = row_series(u, "lib_mutex");
    let reuse = row_series(u, "lib_reuse");
    let py = row_series(u, "py").and_then(Series::median);
    for (s, what) in [
        (
            mutex,
            "default `DistributedLock` (the handle keeps its lease)",
        ),
        (reuse, "`acquire_lock` on a lease given with `with_lease`"),
    ] {
        let m = s.and_then(Series::median);
        let limit = floor.map(|f| f * 1.2);
        v.push(Verdict {
            section: "1",
            target: format!("uncontended acquire + release ≤ 1.2 × floor (put + delete), {what}"),
            result: match (m, floor) {
                (Some(m), Some(f)) => format!(
                    "median {} vs floor {} = {:.2} ×{}",
                    ms(Some(m)),
                    ms(Some(f)),
                    m / f,
                    over(m, f * 1.2)
                ),
                _ => "–".into(),
            },
            met: le(m, limit),
        });
        v.push(Verdict {
            section: "1",
            target: format!("≥ 1.4 × faster than python-etcd3, {what}"),
            result: match (m, py) {
                (Some(m), Some(p)) => format!(
                    "python-etcd3 median {} ÷ {} = {:.2} ×",
                    ms(Some(p)),
                    ms(Some(m)),
                    p / m
                ),
                _ => "–".into(),
            },
            met: match (m, py) {
                (Some(m), Some(p)) => Some(p / m >= 1.4),
                _ => None,
            },
        });
    }

    let h = &res.handoff;
    let hfloor = row_series(h, "floor").and_then(Series::p99);
    // The peers as the targets define them: etcdctl lock's first command exits → second command
    // starts; python-etcd3's release() → the other process's acquire() returns.
    let both: Vec<(&str, Option<&Series>)> = vec![
        ("etcdctl lock", row_series(h, "etcdctl")),
        ("python-etcd3", row_series(h, "py")),
    ];
    let same_shape: Vec<(&str, Option<&Series>)> =
        vec![("etcdctl lock NAME CMD", row_series(h, "etcdctl"))];
    for (id, what, check_floor, peers) in [
        ("lib", "library", true, &both),
        ("sidecar", "sidecar (/events)", true, &both),
        (
            "exec",
            "lockkeeper exec (same shape as etcdctl lock CMD; python-etcd3 has no command form)",
            false,
            &same_shape,
        ),
    ] {
        let Some(s) = row_series(h, id) else { continue };
        let p99 = s.p99();
        if check_floor {
            v.push(Verdict {
                section: "2",
                target: format!(
                    "hand-off p99 ≤ 3 × the floor's p99 (delete → watch event), {what}"
                ),
                result: match (p99, hfloor) {
                    (Some(p), Some(f)) => format!(
                        "p99 {} vs floor p99 {} = {:.2} ×{}",
                        ms(Some(p)),
                        ms(Some(f)),
                        p / f,
                        over(p, 3.0 * f)
                    ),
                    _ => "–".into(),
                },
                met: le(p99, hfloor.map(|f| 3.0 * f)),
            });
        }
        let mut parts = Vec::new();
        let mut all = Some(true);
        for (pname, ps) in peers.iter() {
            match (median_p99(Some(s)), median_p99(*ps)) {
                (Some((m, p)), Some((pm, pp))) => {
                    parts.push(format!(
                        "{pname}: median {} vs {}, p99 {} vs {}",
                        ms(Some(m)),
                        ms(Some(pm)),
                        ms(Some(p)),
                        ms(Some(pp))
                    ));
                    if !(m < pm && p < pp) {
                        all = Some(false);
                    }
                }
                _ => all = None,
            }
        }
        let names: Vec<&str> = peers.iter().map(|p| p.0).collect();
        v.push(Verdict {
            section: "2",
            target: format!(
                "hand-off faster than {} (median and p99), {what}",
                names.join(" and ")
            ),
            result: parts.join("; "),
            met: all,
        });
    }

    let f = &res.failover;
    let ttl_ms = plan.failover_ttl as f64 * 1000.0;
    // The default lock-delay is the safety margin, TTL/5: an unclean hand-over costs it.
    let delay_ms = ttl_ms / 5.0;
    if let Some(s) = row_series(f, "sidecar") {
        v.push(Verdict {
            section: "3",
            target: format!(
                "crash fail-over p99 ≤ TTL + lock-delay + 0.5 s = {:.1} s (sidecar, default lock-delay)",
                (ttl_ms + delay_ms) / 1000.0 + 0.5
            ),
            result: match s.p99() {
                Some(p) => format!("p99 {}{}", ms(Some(p)), over(p, ttl_ms + delay_ms + 500.0)),
                None => "–".into(),
            },
            met: le(s.p99(), Some(ttl_ms + delay_ms + 500.0)),
        });
    }
    if let Some(s) = row_series(f, "sidecar-nodelay") {
        let both = (median_p99(Some(s)), median_p99(row_series(f, "etcdctl")));
        v.push(Verdict {
            section: "3",
            target: "crash fail-over without the lock-delay no slower than etcdctl lock (median and p99)".into(),
            result: match both {
                (Some((m, p)), Some((em, ep))) => format!(
                    "median {} vs {}, p99 {} vs {}",
                    ms(Some(m)),
                    ms(Some(em)),
                    ms(Some(p)),
                    ms(Some(ep))
                ),
                _ => "–".into(),
            },
            met: match both {
                (Some((m, p)), Some((em, ep))) => Some(m <= em && p <= ep),
                _ => None,
            },
        });
    }

    for (id, what) in [
        ("lib", "client per contender"),
        ("lib_shared", "one shared client"),
    ] {
        let reqs: Vec<(usize, f64)> = res
            .contention
            .iter()
            .filter(|c| c.id == id)
            .filter_map(|c| requests_per_handover(c).map(|m| (c.n, m)))
            .collect();
        if reqs.len() < 2 {
            continue;
        }
        let (lo, hi) = lo_hi(reqs.iter().map(|x| x.1));
        v.push(Verdict {
            section: "4",
            target: format!(
                "etcd requests per hand-over flat in N (unary + watch; max ÷ min ≤ 1.25), {what}"
            ),
            result: format!(
                "{} (max ÷ min = {:.2})",
                reqs.iter()
                    .map(|(n, m)| format!("N={n}: {m:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                hi / lo
            ),
            met: Some(hi / lo <= 1.25),
        });
    }

    for fp in res.footprint.iter().filter(|f| f.label == "lockkeeper run") {
        let mib = fp.rss_kib as f64 / 1024.0;
        v.push(Verdict {
            section: "5",
            target: format!("sidecar {}: RSS ≤ 8 MiB", fp.role),
            result: format!(
                "{mib:.2} MiB (peak {:.2} MiB){}",
                fp.hwm_kib as f64 / 1024.0,
                over(mib, 8.0)
            ),
            met: Some(mib <= 8.0),
        });
        v.push(Verdict {
            section: "5",
            target: format!("sidecar {}: CPU ≤ 0.2 % of one core", fp.role),
            result: format!(
                "{:.3} % over {:.0} s{}",
                fp.cpu_pct,
                fp.secs,
                over(fp.cpu_pct, 0.2)
            ),
            met: Some(fp.cpu_pct <= 0.2),
        });
    }
    fleet_verdicts(&mut v, res);
    v
}

/// Section 7: an idle fleet's etcd traffic flat in N and within the design's bound, and the
/// hand-off with the queue full no slower than with one waiter.
fn fleet_verdicts(v: &mut Vec<Verdict>, res: &Results) {
    let lib: Vec<&FleetRun> = res
        .fleet
        .iter()
        .filter(|r| r.id == "lib" && r.total_rate().is_some())
        .collect();
    if lib.len() >= 2 {
        let (lo, hi) = lo_hi(lib.iter().filter_map(|r| r.total_rate()));
        let ratio = hi / lo;
        v.push(Verdict {
            section: "7",
            target: "idle fleet: etcd requests per contender per second flat in N (keepalives + \
                     unary + watch; max ÷ min ≤ 1.25), library"
                .into(),
            result: format!(
                "{} (max ÷ min = {ratio:.2}){}",
                lib.iter()
                    .map(|r| format!(
                        "N={}: {}",
                        r.contenders,
                        fleet_rate(r.total_rate().unwrap_or(0.0))
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                over(ratio, 1.25)
            ),
            met: Some(ratio <= 1.25),
        });
    }
    let sidecars: Vec<&FleetRun> = res
        .fleet
        .iter()
        .filter(|r| r.id == "sidecar" && r.total_rate().is_some())
        .collect();
    for (runs, what) in [(&lib, "library"), (&sidecars, "sidecars")] {
        if runs.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        let mut worst: Option<(f64, f64)> = None;
        for r in runs.iter() {
            let (Some(t), Some(b)) = (r.total_rate(), r.bound()) else {
                continue;
            };
            parts.push(format!(
                "N={}: {} vs {}",
                r.contenders,
                fleet_rate(t),
                fleet_rate(b)
            ));
            if worst.is_none_or(|(wt, wb)| t / b > wt / wb) {
                worst = Some((t, b));
            }
        }
        let Some((wt, wb)) = worst else { continue };
        v.push(Verdict {
            section: "7",
            target: format!(
                "idle fleet: requests per contender per second ≤ the bound at every N (a \
                 keepalive per renew interval, the holder's check per interval), {what}"
            ),
            result: format!("{}{}", parts.join(", "), over(wt, wb)),
            met: Some(wt <= wb),
        });
    }
    let one = res
        .fleet
        .iter()
        .find(|r| r.id == "lib_pair")
        .and_then(|r| median_p99(Some(&r.handoff)));
    let largest = res
        .fleet
        .iter()
        .filter(|r| r.id == "lib" && !r.handoff.is_empty())
        .max_by_key(|r| r.contenders);
    if let (Some((om, op)), Some(big)) = (one, largest) {
        if let Some((m, p)) = median_p99(Some(&big.handoff)) {
            v.push(Verdict {
                section: "7",
                target: format!(
                    "hand-off with {} waiters queued: median ≤ 1.2 × hand-off with one waiter",
                    big.contenders - 1
                ),
                result: format!(
                    "median {} vs {} = {:.2} × (p99 {} vs {}){}",
                    ms(Some(m)),
                    ms(Some(om)),
                    m / om,
                    ms(Some(p)),
                    ms(Some(op)),
                    over(m, 1.2 * om)
                ),
                met: Some(m <= 1.2 * om),
            });
        }
    }
}

/// The targets table.
pub(super) fn section(o: &mut String, res: &Results, plan: &Plan) {
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| § | Target | Result | |");
    let _ = writeln!(o, "|---|---|---|---|");
    for v in verdicts(res, plan) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            v.section,
            v.target,
            v.result,
            verdict_text(&v)
        );
    }
    let _ = writeln!(o);
}
