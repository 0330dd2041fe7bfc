//! The numbered sections 1–7: how each measurement was made, and its table.

use std::fmt::Write as _;

use super::{fleet_rate, lo_hi, med, ms, per_handover, range, row_series, PerHandover};
use crate::results::{Plan, Results, Row};
use crate::stats::Series;

fn latency_table(out: &mut String, rows: &[Row], floor: Option<&Series>, floor_name: &str) {
    let _ = writeln!(
        out,
        "| Implementation | What is timed | n (runs) | median | p99 | min – max | run medians | median ÷ {floor_name} |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let s = &r.series;
        let ratio = match (s.median(), floor.and_then(Series::median)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2} ×", a / b),
            _ => "–".into(),
        };
        let (lo, hi) = s
            .run_median_range()
            .map_or((None, None), |(a, b)| (Some(a), Some(b)));
        let fails = if s.failures > 0 {
            format!(", {} failed", s.failures)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}{fails}) | {} | {} | {} | {} | {} |",
            r.label,
            r.how,
            s.n(),
            s.nonempty_runs(),
            ms(s.median()),
            ms(s.p99()),
            range(s.min(), s.max()),
            range(lo, hi),
            ratio
        );
    }
}

/// Sections 1 to 7, one per measurement.
pub(super) fn sections(o: &mut String, plan: &Plan, res: &Results) {
    // 1
    let _ = writeln!(o, "## 1. Uncontended acquire + release\n");
    let _ = writeln!(
        o,
        "One client acquires and releases a free lock, {} times per run, {} runs (after 5 warm-up \
         cycles). lockkeeper and the floor share one etcd-client connection balanced over the three \
         members; python-etcd3 connects to one member (rotated per run).\n",
        plan.uncontended, plan.runs
    );
    let floor = row_series(&res.uncontended, "floor_put_delete");
    latency_table(o, &res.uncontended, floor, "floor (put + delete)");
    let _ = writeln!(o);

    // 2
    let _ = writeln!(o, "## 2. Hand-off latency\n");
    let _ = writeln!(
        o,
        "The holder lets go → the next waiter holds. The waiter is queued (its key is in etcd, \
         the sidecar reports `waiting`, python-etcd3 has started `acquire()`) and left {} ms to \
         settle before the holder lets go. Library and floor: {} hand-offs × {} runs; processes: \
         {} × {} runs; \"fresh successor\" rows: {} × {} runs. The command rows (`etcdctl lock \
         NAME CMD`, `lockkeeper exec -- CMD`) include starting the successor's command (a small \
         helper binary that connects to the benchmark over a Unix socket); the others start no \
         process. The two lockkeeper processes and the two python-etcd3 processes are separate \
         OS processes; the library's holder and waiter share one process and one client.\n",
        plan.settle.as_millis(),
        plan.handoff_lib,
        plan.runs,
        plan.handoff_proc,
        plan.runs,
        plan.handoff_fresh,
        plan.runs
    );
    let _ = writeln!(
        o,
        "Why the settle time matters: etcd 3.4 delivers events to a watch that started at a past \
         revision only once its background sync has caught the watcher up, and that loop runs \
         every 100 ms. etcd's own Mutex (`etcdctl lock`) always starts its watch at the revision \
         of its last read, i.e. in the past; lockkeeper starts at the revision after its read, \
         which etcd treats as caught up at once as long as nothing was written in between (so \
         does python-etcd3, which watches from \"now\"). A successor that is released within ~100 ms of queueing therefore waits for \
         the next sync pass with `etcdctl lock`, not with lockkeeper: compare the \"fresh \
         successor\" rows with the others.\n"
    );
    let hf = row_series(&res.handoff, "floor");
    latency_table(o, &res.handoff, hf, "floor");
    let _ = writeln!(o);

    // 3
    let _ = writeln!(o, "## 3. Crash fail-over (TTL {} s)\n", plan.failover_ttl);
    let _ = writeln!(
        o,
        "SIGKILL the holder → the successor holds. Every implementation uses a {} s lease TTL and \
         renews it every TTL/3 from the moment it acquired (python-etcd3 does not renew by itself: \
         its holder calls `refresh()` every TTL/3). The kill comes at the same point of that cycle \
         for every implementation: 2/3 TTL plus a pseudo-random share of TTL/3 after the holder \
         acquired (the same seeds for all), i.e. just after a keepalive, so the lease has between \
         2/3 TTL and TTL left. etcd also checks for expired leases only every 500 ms, so the \
         expected fail-over lies between 2/3 TTL and TTL + 0.5 s whatever the client does, plus \
         lockkeeper's lock-delay (default TTL/5) after such an unclean hand-over, which the \
         `--lock-delay 0s` row leaves out. {} rounds × {} concurrent pairs per implementation.\n",
        plan.failover_ttl, plan.failover_rounds, plan.failover_pairs
    );
    latency_table(
        o,
        &res.failover,
        row_series(&res.failover, "etcdctl"),
        "etcdctl lock",
    );
    let _ = writeln!(o);

    // 4
    let _ = writeln!(o, "## 4. Contention scaling\n");
    let _ = writeln!(
        o,
        "N contenders start at once on one lock; each acquires and releases once, holding it for \
         no time; TTL 10 s. Each implementation runs twice: with one client (connection) per \
         contender, as N pods would have, and with one client shared by N tasks / threads in one \
         process. python-etcd3's contenders call `acquire(timeout={w})` again until they hold, \
         for at most {cap} s. Its waiters all watch the one lock key and all retry on every event \
         (a thundering herd), and a waiter starts its watch only after its failed transaction, \
         from the current revision, so a release in between is missed (a *lost wake-up*): that \
         waiter sleeps until its watch times out ({w} s here; with the default \
         `acquire(timeout=10)` it gives up after 10 s instead). The last column counts watches \
         that timed out. With a client per contender python-etcd3 needs minutes for N = 500, so \
         that case runs once and is cut off after {cap} s; its figures cover the hand-overs that \
         happened. With a shared client python-etcd3 registers watches one at a time on its \
         single watch stream, so few waiters are actually watching at any moment: that bounds \
         its traffic but also its rate. Hand-overs/s = hand-overs ÷ (time from start to the last \
         release). etcd traffic is the difference of etcd's own `/metrics` counters over the run \
         (connections are opened before the first reading), summed over the three members, \
         divided by the hand-overs: unary requests \
         (`grpc_server_handled_total{{grpc_type=\"unary\"}}`), watch requests (create/cancel \
         messages on Watch streams), lease keepalives (messages on LeaseKeepAlive streams), \
         watch events sent (`etcd_debugging_mvcc_events_total`) and client \
         gRPC bytes. Medians over {} runs (min – max in brackets).\n",
        plan.contention_runs,
        w = plan.python_watch_timeout,
        cap = plan.python_cap,
    );
    let _ = writeln!(
        o,
        "| Implementation | N | hand-overs/s | unary requests / hand-over | watch requests / hand-over | keepalives / hand-over | watch events / hand-over | KiB / hand-over | failed / lost wake-ups |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for c in &res.contention {
        let p = per_handover(c);
        let col = |f: fn(&PerHandover) -> f64, prec: usize| -> String {
            let vals: Vec<f64> = p.iter().map(f).collect();
            match med(&vals) {
                None => "–".into(),
                Some(m) => {
                    let (lo, hi) = lo_hi(vals.iter().copied());
                    if vals.len() > 1 {
                        format!("{m:.prec$} ({lo:.prec$} – {hi:.prec$})")
                    } else {
                        format!("{m:.prec$}")
                    }
                }
            }
        };
        let failed: usize = c.runs.iter().map(|r| r.failed).sum();
        let lost: usize = c.runs.iter().map(|r| r.lost_wakeups).sum();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {lost} |",
            c.label,
            c.n,
            col(|x| x.rate, 0),
            col(|x| x.unary, 2),
            col(|x| x.watch_requests, 2),
            col(|x| x.keepalives, 2),
            col(|x| x.watch_events, 2),
            col(|x| x.kib, 1),
            failed
        );
    }
    let _ = writeln!(o);
    // Per-method breakdown at the largest N.
    let _ = writeln!(
        o,
        "Unary requests per hand-over by method (first run of each):\n"
    );
    let _ = writeln!(o, "| Implementation | N | by method |");
    let _ = writeln!(o, "|---|---|---|");
    for c in &res.contention {
        if let Some(r) = c.runs.iter().find(|r| r.ok > 0) {
            let t = r.traffic.per(r.ok as f64);
            let by: Vec<String> = t
                .unary_by_method
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(o, "| {} | {} | {} |", c.label, c.n, by.join(", "));
        }
    }
    let _ = writeln!(o);

    // 5
    let _ = writeln!(o, "## 5. Footprint\n");
    let _ = writeln!(
        o,
        "One holder and one waiter of each implementation, idle (nobody polls the sidecar's HTTP \
         endpoints while measuring), for {:.0} s after a short warm-up. CPU = user + system time \
         from `/proc/PID/stat` over the window ÷ wall time; RSS = `VmRSS` at the end (peak \
         `VmHWM`). For `etcdctl lock` only the etcdctl process is counted (not the command it \
         runs). TTL 10 s: keepalive every 3.3 s.\n",
        plan.footprint.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "| Implementation | role | RSS | peak RSS | CPU (% of one core) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for f in &res.footprint {
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.3} % |",
            f.label,
            f.role,
            f.rss_kib as f64 / 1024.0,
            f.hwm_kib as f64 / 1024.0,
            f.cpu_pct
        );
    }
    let _ = writeln!(o);
    if !res.binaries.is_empty() {
        let _ = writeln!(o, "| Binary | size |\n|---|---|");
        for (b, size) in &res.binaries {
            let _ = writeln!(o, "| {b} | {:.1} MiB |", *size as f64 / 1024.0 / 1024.0);
        }
        let _ = writeln!(o);
    }

    // 6
    let _ = writeln!(o, "## 6. Many locks in one process\n");
    let _ = writeln!(
        o,
        "{} distinct locks acquired and released concurrently by one process over one client \
         (one task per lock), {} runs. An operation is one acquire + release (floor: one put + \
         delete). Requests per operation from etcd's `/metrics`.\n",
        plan.many, plan.many_runs
    );
    let _ = writeln!(
        o,
        "| Implementation | What | operations/s (median; min – max) | ÷ floor | unary requests / op | failed |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let floor_ops = res
        .many
        .iter()
        .find(|m| m.id == "floor")
        .and_then(|m| med(&m.ops_per_s));
    for m in &res.many {
        let mm = med(&m.ops_per_s);
        let (lo, hi) = lo_hi(m.ops_per_s.iter().copied());
        let ratio = match (mm, floor_ops) {
            (Some(a), Some(b)) => format!("{:.2} ×", a / b),
            _ => "–".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} ({lo:.0} – {hi:.0}) | {ratio} | {} | {} |",
            m.label,
            m.how,
            mm.map_or("–".into(), |x| format!("{x:.0}")),
            med(&m.requests_per_op).map_or("–".into(), |x| format!("{x:.2}")),
            m.failed
        );
    }
    let _ = writeln!(o);

    fleet(o, plan, res);
}

/// Section 7: the idle fleet.
fn fleet(o: &mut String, plan: &Plan, res: &Results) {
    if res.fleet.is_empty() {
        return;
    }
    let ttl = plan.fleet_ttl;
    let interval = lockkeeper::default_keepalive_interval(std::time::Duration::from_secs(ttl));
    let _ = writeln!(o, "## 7. Idle fleet\n");
    let _ = writeln!(
        o,
        "N contenders on one lock: one holds, N − 1 wait, each with its own lease (TTL {ttl} s, \
         renewed every {:.2} s: the library's default, TTL/3). The in-process contenders are N \
         `DistributedLock` handles sharing one etcd client; the sidecars are `lockkeeper run` \
         processes with a connection each. Once all are queued (and one renew interval later, \
         so that every keepalive stream is open), nobody acquires or releases for {:.0} s, and \
         etcd's own `/metrics` counters, read from every member before and after, give what the \
         idle fleet costs: per contender per second, keepalives (messages on LeaseKeepAlive \
         streams), unary requests, watch requests (creates and cancels) and watch events sent. \
         What the design should cost: a waiter only keeps its lease alive and watches its \
         predecessor (no polling), the holder also checks its key with one linearizable read \
         per renew interval, so the bound is one keepalive per interval per contender plus \
         that one check shared over N, each periodic stream allowed one extra event for the \
         edges of the window. Then, with the queue full, {} hand-offs (holder's `release()` → \
         the next waiter's `acquire()` returns; the old holder queues again at the back, and \
         the next release waits {} ms after that), against the same with one waiter.\n",
        interval.as_secs_f64(),
        plan.fleet_window.as_secs_f64(),
        plan.fleet_handoffs,
        plan.settle.as_millis(),
    );
    let one = res
        .fleet
        .iter()
        .find(|r| r.id == "lib_pair")
        .and_then(|r| r.handoff.median());
    let _ = writeln!(
        o,
        "| Contenders | N | queued in | keepalives/s | unary/s | watch requests/s | watch events/s | requests/s | bound/s | requests ÷ bound | hand-off median | hand-off p99 | median ÷ one waiter |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let dash = || "–".to_owned();
    for r in res.fleet.iter().filter(|r| r.contenders > 0) {
        let t = r.per_contender_s();
        let col = |f: fn(&crate::etcdmetrics::Traffic) -> f64| {
            t.as_ref().map_or_else(dash, |t| fleet_rate(f(t)))
        };
        let total = r.total_rate();
        let bound = r.bound();
        let ratio = match (total, bound) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => dash(),
        };
        let vs_one = match (r.handoff.median(), one) {
            (Some(m), Some(b)) if r.id == "lib" => format!("{:.2} ×", m / b),
            _ => dash(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} | {ratio} | {} | {} | {vs_one} |",
            r.label,
            r.contenders,
            r.setup_s,
            col(|t| t.keepalives),
            col(|t| t.unary),
            col(|t| t.watch_requests),
            col(|t| t.watch_events),
            total.map_or_else(dash, fleet_rate),
            bound.map_or_else(dash, fleet_rate),
            ms(r.handoff.median()),
            ms(r.handoff.p99()),
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "What else the window shows: unary requests by method (per contender per second), etcd's \
         open watch streams and watchers at the end of the window (gauges, all members), the \
         members' CPU over the window (all three together) and their resident memory, and the \
         CPU of the contenders' own process (the bench process for the in-process handles, \
         the sum of the sidecar processes). The first row is a window of {:.0} s with nobody on \
         the cluster: what etcd costs by itself.\n",
        res.fleet
            .iter()
            .find(|r| r.id == "empty")
            .map_or(0.0, |r| r.window_s)
    );
    let _ = writeln!(
        o,
        "| Contenders | N | unary by method /s | watch streams | watchers | etcd CPU (% of one core) | etcd RSS | contenders' CPU (% of one core) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for r in &res.fleet {
        let Some(t) = &r.traffic else { continue };
        let by: Vec<String> = r
            .per_contender_s()
            .map(|p| {
                p.unary_by_method
                    .iter()
                    .map(|(k, v)| format!("{k} {}", fleet_rate(*v)))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} % | {:.0} MiB | {} |",
            r.label,
            r.contenders,
            if r.contenders == 0 {
                dash()
            } else if by.is_empty() {
                "none".into()
            } else {
                by.join(", ")
            },
            t.watch_streams,
            t.watchers,
            t.cpu_seconds / r.window_s * 100.0,
            t.resident_bytes / 1024.0 / 1024.0,
            r.client_cpu_pct.map_or_else(dash, |c| format!("{c:.2} %")),
        );
    }
    let _ = writeln!(o);
}
