//! "Reading the results": what the numbers say about where the time goes.

use std::fmt::Write as _;

use super::{fleet_rate, lo_hi, med, ms, per_handover, requests_per_handover, row_series};
use crate::results::Results;
use crate::stats::Series;

/// What the numbers say about where the time goes, computed from this run.
fn reading(res: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let u = &res.uncontended;
    let m = |id: &str| row_series(u, id).and_then(Series::median);
    if let (Some(floor), Some(txn), Some(mutex), Some(reuse), Some(fresh), Some(floor4)) = (
        m("floor_put_delete"),
        m("floor_txn"),
        m("lib_mutex"),
        m("lib_reuse"),
        m("lib_fresh"),
        m("floor_grant_put_delete_revoke"),
    ) {
        let library = if mutex / txn <= 1.2 {
            "so the library adds little to them".to_owned()
        } else {
            format!(
                "so the library adds {:.1} of those transactions' time (its loss monitor opens a \
                 watch on the key; a contender whose key does not directly follow the last clean \
                 release re-reads the queue and its history)",
                mutex / txn - 1.0
            )
        };
        out.push(format!(
            "Uncontended: the default `DistributedLock` path, whose handle keeps its lease from \
             one acquisition to the next, costs {:.2} × lockkeeper's own two transactions sent \
             by hand through the bare client, {library}; the gap from those to put + delete \
             ({:.2} ×) is what etcd charges for conditional transactions. `acquire_lock` with \
             `with_lease` ({:.2} × the two transactions) attaches to the lease on every call (a \
             TimeToLive read and a first keepalive); the one-shot `acquire_lock` grants and \
             revokes a lease every time and costs {:.2} × the four bare requests grant, put, \
             delete, revoke.",
            mutex / txn,
            txn / floor,
            reuse / txn,
            fresh / floor4
        ));
    }
    let h = &res.handoff;
    if let (Some(f), Some(l)) = (
        row_series(h, "floor").and_then(Series::median),
        row_series(h, "lib").and_then(Series::median),
    ) {
        out.push(format!(
            "Hand-off: a lockkeeper hand-off is the holder's release transaction, the watch event, \
             and then the successor's linearizable re-read of the queue (the design re-checks its \
             predecessor and its own key before claiming the lock): three etcd operations in a \
             row where the floor has a delete and its event, hence {:.1} × the floor's median.",
            l / f
        ));
    }
    let cont = |id: &str| -> Vec<(usize, f64, f64)> {
        res.contention
            .iter()
            .filter(|c| c.id == id)
            .filter_map(|c| {
                let r = requests_per_handover(c)?;
                let p = per_handover(c);
                let e = med(&p.iter().map(|x| x.watch_events).collect::<Vec<_>>())?;
                Some((c.n, r, e))
            })
            .collect()
    };
    let (lib, py) = (cont("lib"), cont("py"));
    if let (Some(l0), Some(l1), Some(p0), Some(p1)) =
        (lib.first(), lib.last(), py.first(), py.last())
    {
        out.push(format!(
            "Contention (client per contender): lockkeeper sends {:.1} → {:.1} requests and \
             causes {:.1} → {:.1} watch events per hand-over from N = {} to N = {} (only the \
             successor wakes); python-etcd3 goes from {:.1} to {:.1} requests and from {:.1} to \
             {:.1} watch events per hand-over (every waiter wakes and retries).",
            l0.1, l1.1, l0.2, l1.2, l0.0, l1.0, p0.1, p1.1, p0.2, p1.2
        ));
    }
    let many = |id: &str| {
        res.many
            .iter()
            .find(|x| x.id == id)
            .and_then(|x| med(&x.ops_per_s))
    };
    if let (Some(floor), Some(txn), Some(shared), Some(fresh)) = (
        many("floor"),
        many("floor_txn"),
        many("lib_shared"),
        many("lib_fresh"),
    ) {
        out.push(format!(
            "Many locks: with one shared lease lockkeeper runs at {:.2} × the rate of its own two \
             transactions sent by hand, and etcd serves those transactions at {:.2} × the rate of \
             bare put + delete at this concurrency; a lease per lock runs at {:.2} × the \
             shared-lease rate. Each lock here is new, so no release record bounds its history: \
             the newcomer's question whether a holder vanished is answered by a watch replay, \
             which etcd serves at its next sync pass (up to 100 ms later).",
            shared / txn,
            txn / floor,
            fresh / shared
        ));
    }
    let fo: Vec<(String, f64)> = res
        .failover
        .iter()
        .filter_map(|r| Some((r.label.clone(), r.series.median()?)))
        .collect();
    if fo.len() >= 2 {
        let (lo, hi) = lo_hi(fo.iter().map(|x| x.1));
        out.push(format!(
            "Fail-over is bounded by the lease, not the client: the time left on the killed \
             holder's lease plus etcd's 500 ms expiry check, plus the lock-delay where it \
             applies. The medians ({}) are {:.0} ms apart{}.",
            fo.iter()
                .map(|(l, m)| format!("{l} {}", ms(Some(*m))))
                .collect::<Vec<_>>()
                .join(", "),
            hi - lo,
            if hi - lo < 500.0 {
                ", less than that 500 ms granularity"
            } else {
                ""
            }
        ));
    }
    if let Some(r) = fleet_reading(res) {
        out.push(r);
    }
    out
}

/// The idle fleet: how the per-contender traffic moves from the smallest to the largest N, what
/// it is made of, and the hand-off with the queue full.
fn fleet_reading(res: &Results) -> Option<String> {
    let lib: Vec<_> = res
        .fleet
        .iter()
        .filter(|r| r.id == "lib" && r.total_rate().is_some())
        .collect();
    let (small, big) = (lib.first()?, lib.last()?);
    let tb = big.per_contender_s()?;
    let (rs, rb) = (small.total_rate()?, big.total_rate()?);
    let growth = rb / rs;
    let trend = if (0.8..=1.25).contains(&growth) {
        "flat".to_owned()
    } else if growth > 1.0 {
        format!("{growth:.2} × higher at the larger N")
    } else {
        format!("{:.2} × lower at the larger N", 1.0 / growth)
    };
    let keepalive_share = if rb > 0.0 { tb.keepalives / rb } else { 0.0 };
    let watch = if tb.watch_requests == 0.0 && tb.watch_events == 0.0 {
        "no watch request and no watch event in the window (every waiter keeps one watch on its \
         predecessor open and silent)"
            .to_owned()
    } else {
        format!(
            "{} watch requests and {} watch events per contender per second",
            fleet_rate(tb.watch_requests),
            fleet_rate(tb.watch_events)
        )
    };
    let mut text = format!(
        "Idle fleet: per contender, etcd answered {} requests/s at N = {} and {} at N = {} \
         ({trend}); at N = {} {:.0} % of them were keepalives and the rest {} unary requests/s \
         (the holder's one check per renew interval, shared over N, is {} per contender), with \
         {watch}. The bound at N = {} is {}/s, so the fleet used {:.0} % of it; etcd kept {:.0} \
         watch streams and {:.0} watchers open for the {} contenders.",
        fleet_rate(rs),
        small.contenders,
        fleet_rate(rb),
        big.contenders,
        big.contenders,
        keepalive_share * 100.0,
        fleet_rate(tb.unary),
        fleet_rate(1.0 / big.interval_s / big.contenders as f64),
        big.contenders,
        fleet_rate(big.bound()?),
        rb / big.bound()? * 100.0,
        big.traffic.as_ref()?.watch_streams,
        big.traffic.as_ref()?.watchers,
        big.contenders,
    );
    let cpu = |r: &crate::results::FleetRun| {
        r.traffic
            .as_ref()
            .filter(|_| r.window_s > 0.0)
            .map(|t| t.cpu_seconds / r.window_s * 100.0)
    };
    let empty = res.fleet.iter().find(|r| r.id == "empty").and_then(cpu);
    if let (Some(b), Some(e)) = (cpu(big), empty) {
        text.push_str(&format!(
            " The three members used {b:.1} % of one core with those {} contenders idle, against \
             {e:.1} % with nobody on the cluster.",
            big.contenders
        ));
    }
    let one = res
        .fleet
        .iter()
        .find(|r| r.id == "lib_pair")
        .and_then(|r| r.handoff.median());
    if let (Some(m), Some(o)) = (big.handoff.median(), one) {
        text.push_str(&format!(
            " With {} waiters queued a hand-off took {} (median) against {} with one waiter \
             ({:.2} ×).",
            big.contenders - 1,
            ms(Some(m)),
            ms(Some(o)),
            m / o
        ));
    }
    Some(text)
}

/// The section, when this run measured enough to say anything.
pub(super) fn section(o: &mut String, res: &Results) {
    let reading = reading(res);
    if !reading.is_empty() {
        let _ = writeln!(o, "## Reading the results\n");
        for r in reading {
            let _ = writeln!(o, "- {r}");
        }
        let _ = writeln!(o);
    }
}
