//! The soak report (docs/safety.md): scenarios, faults by kind, violations, fail-over times per
//! fault, and the negative controls.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::kind::Fault;
use super::outcome::Outcome;

/// A negative control: something that must make the checker fail.
#[derive(Clone, Debug)]
pub struct Control {
    pub name: String,
    pub caught: bool,
    pub detail: String,
}

/// How the soak was run.
#[derive(Clone, Debug)]
pub struct Meta {
    pub command: String,
    pub requested: Duration,
    pub wall: Duration,
    pub seed: u64,
    pub parallel: usize,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn dist(values: &mut [u64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    values.sort_unstable();
    format!(
        "{} / {} / {} / {}",
        values[0],
        pct(values, 0.5),
        pct(values, 0.9),
        values[values.len() - 1]
    )
}

/// Renders the report. `outcomes` are the positive scenarios (every violation counts);
/// `controls` the negative ones.
pub fn render(outcomes: &[Outcome], controls: &[Control], meta: &Meta) -> String {
    let mut s = String::new();
    let faults: usize = outcomes.iter().map(|o| o.faults.len()).sum();
    let holdings: usize = outcomes.iter().map(|o| o.intervals.len()).sum();
    let violations: usize = outcomes.iter().map(|o| o.violations.len()).sum();
    let probes: usize = outcomes.iter().map(|o| o.probes_total).sum();
    let probes_200: usize = outcomes.iter().map(|o| o.probes_200).sum();
    let accepted: u64 = outcomes.iter().map(|o| o.store.accepted).sum();
    let rejected: u64 = outcomes.iter().map(|o| o.store.rejected).sum();
    let compactions: u64 = outcomes.iter().map(|o| o.compactions).sum();
    let caught = controls.iter().filter(|c| c.caught).count();
    let busy = outcomes.iter().filter(|o| o.spec.busy).count();
    let rounds_of = |fault: Fault| {
        let rounds: Vec<_> = outcomes
            .iter()
            .flat_map(|o| &o.faults)
            .filter(|f| f.fault == fault)
            .collect();
        let early = rounds
            .iter()
            .filter(|f| f.early_revocation.is_some())
            .count();
        (early, rounds.len())
    };
    let (stale_early, stale_rounds) = rounds_of(Fault::StaleLeader);
    let (synthetic_early, synthetic_rounds) = rounds_of(Fault::SyntheticRevoke);

    let _ = writeln!(s, "# lockkeeper safety report\n");
    let _ = writeln!(
        s,
        "Written by `{}` (fault-injection soak, `tests/safety.rs`; see [How it is checked](#how-it-is-checked)).\n",
        meta.command
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| duration | {:.0} s requested, {:.0} s wall, {} scenarios in parallel, seed {} |",
        meta.requested.as_secs_f64(),
        meta.wall.as_secs_f64(),
        meta.parallel,
        meta.seed
    );
    let _ = writeln!(s, "| scenarios run | {} |", outcomes.len());
    let _ = writeln!(s, "| faults injected | {faults} |");
    let _ = writeln!(s, "| holdings recorded | {holdings} |");
    let _ = writeln!(s, "| prober polls | {probes} ({probes_200} answered 200) |");
    let _ = writeln!(s, "| `etcdctl compact` runs | {compactions} |");
    let crashes: Vec<&String> = outcomes.iter().flat_map(|o| &o.etcd_crashes).collect();
    let _ = writeln!(
        s,
        "| etcd members that crashed on their own (restarted) | {}{} |",
        crashes.len(),
        crashes
            .first()
            .map(|c| format!(" (first: {})", c.replace('|', "\\|")))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "| busy machine | {busy} scenarios ran {} CPU hogs throughout |",
        super::HOGS
    );
    let _ = writeln!(
        s,
        "| early revocations (holder's key gone before its deadline) | {stale_early} of {stale_rounds} stale-leader rounds; {synthetic_early} of {synthetic_rounds} synthetic (lock-delay on) |"
    );
    let _ = writeln!(
        s,
        "| fenced store | {accepted} writes accepted, {rejected} rejected (stale token) |"
    );
    let _ = writeln!(s, "| **violations** | **{violations}** (must be 0) |");
    let _ = writeln!(
        s,
        "| **negative controls caught** | **{caught} of {}** (must be all) |\n",
        controls.len()
    );

    // Faults by kind.
    let _ = writeln!(s, "## Faults by kind\n");
    let _ = writeln!(
        s,
        "Times in ms as min / median / p90 / max, TTL {} s, safety margin 600 ms. **Fail-over**: \
         from the fault to the first readiness of the next holder (a higher fencing token), from \
         the recorded histories. **No-holder gap**: from the end of the old holder's readiness \
         interval to the start of the next one (the hand-over's safety distance; it can only be \
         positive where the checker found no overlap). **Holder again after heal**: from the \
         heal until the prober saw a `/readyz` 200 (0 when a holder was there). **Early \
         revocations**: the old holder's key vanished before its deadline (by its history or \
         the watch). The suite fails \
         a run when a fault aimed at the holder alone has no new holder within TTL + 6 s, or \
         when no holder is back within TTL + 6 s of a heal (+ 6 s after a quorum loss).\n",
        super::scenario::TTL.as_secs()
    );
    let _ = writeln!(
        s,
        "| fault | injected | holding kept | fail-overs | early revocations | fail-over | no-holder gap | holder again after heal |\n|---|---:|---:|---:|---:|---|---|---|"
    );
    #[derive(Default)]
    struct Acc {
        n: usize,
        kept: usize,
        early: usize,
        failover: Vec<u64>,
        gap: Vec<u64>,
        again: Vec<u64>,
    }
    let mut by_kind: BTreeMap<Fault, Acc> = BTreeMap::new();
    for o in outcomes {
        for f in &o.faults {
            let e = by_kind.entry(f.fault).or_default();
            e.n += 1;
            if f.kept {
                e.kept += 1;
            }
            if f.early_revocation.is_some() {
                e.early += 1;
            }
            if let Some(d) = f.failover {
                e.failover.push(d.as_millis() as u64);
            }
            if let Some(d) = f.gap {
                e.gap.push(d.as_millis() as u64);
            }
            if let Some(d) = f.time_to_holder {
                e.again.push(d.as_millis() as u64);
            }
        }
    }
    for fault in Fault::ALL {
        let Some(mut a) = by_kind.remove(&fault) else {
            let _ = writeln!(s, "| {} | 0 | | | | | | |", fault.name());
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fault.name(),
            a.n,
            a.kept,
            a.failover.len(),
            a.early,
            dist(&mut a.failover),
            dist(&mut a.gap),
            dist(&mut a.again)
        );
    }

    // Violations.
    let _ = writeln!(s, "\n## Violations\n");
    if violations == 0 {
        let _ = writeln!(
            s,
            "None: no two sidecars' readiness intervals overlapped, fencing tokens strictly \
             increased and matched the create revisions seen by the watch, every 200 the \
             prober saw was inside a recorded interval, the store never accepted one token from \
             two writers, a holder came back within the bound after every fault, no sidecar \
             crashed, and nothing was left in etcd after the clean shutdowns.\n"
        );
    } else {
        for o in outcomes.iter().filter(|o| !o.violations.is_empty()) {
            let _ = writeln!(s, "```\n{}```", o.summary());
        }
    }

    // Negative controls.
    let _ = writeln!(s, "## Negative controls\n");
    let _ = writeln!(
        s,
        "Each must make the checker fail; a checker that cannot fail proves nothing.\n"
    );
    let _ = writeln!(
        s,
        "| control | caught | what the checker reported |\n|---|---|---|"
    );
    for c in controls {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.name,
            if c.caught { "yes" } else { "**NO**" },
            c.detail.replace('|', "\\|")
        );
    }

    // Scenarios.
    let _ = writeln!(s, "\n## Scenarios\n");
    let _ = writeln!(
        s,
        "| scenario | seed | etcd members | sidecars | proxied | busy | faults | holdings | violations | s |\n|---|---:|---:|---:|---|---|---:|---:|---:|---:|"
    );
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            o.spec.name,
            o.spec.seed,
            o.spec.members,
            o.spec.nodes,
            if o.spec.proxied { "yes" } else { "no" },
            if o.spec.busy { "yes" } else { "no" },
            o.faults.len(),
            o.intervals.len(),
            o.violations.len(),
            o.duration.as_secs_f64()
        );
    }
    let _ = writeln!(s, "\n{METHOD}");
    s
}

const METHOD: &str = "## How it is checked

- **Processes.** Every scenario starts its own etcd cluster (1 or 3 members, loopback, temporary
  data dirs) and 2–4 real `lockkeeper run` sidecars contending for one lock (TTL 3 s, renew every
  1 s, safety margin 600 ms). With network faults, each sidecar reaches each member through its own
  TCP fault proxy (`crates/testkit/src/fault/proxy.rs`: pass, delay fixed or jittered, blackhole,
  connection resets, one-way loss).
- **Stale leader.** Every sidecar's proxy to the etcd leader is blackholed, so holder and waiters
  reach etcd through the followers only; the leader is SIGSTOPped for TTL + 1.5 s, resumed (it
  may act on its stale view before it hears of its successor, as etcd 3.4.23 / 3.5.1 can, revoking
  leases early), then the proxies heal. Per round the report counts whether the holder's key
  vanished before its deadline (an early revocation) and the prober's hand-over gap.
- **Busy machine.** A quarter of the scenarios run two busy-loop processes (nice 0) from start to
  end, competing with etcd, the sidecars and the prober for the CPU.
- **Histories.** Each sidecar runs with `--history-file`: it appends `ready` *before* readiness can
  turn true, `deadline` *before* a renewal extends it, and `unready` *after* the state has left
  `held`, each stamped with `CLOCK_MONOTONIC_RAW` read through the vDSO (so `faketime`, which
  intercepts libc's `clock_gettime`, does not alter it) and with the process's own monotonic
  clock. An interval ends at the earlier of the `unready` stamp and the last deadline mapped onto
  the raw clock at the process's measured clock rate (−1 %, +2 ms): readiness also ends silently
  at the deadline, and a SIGKILLed or SIGSTOPped process writes nothing more.
- **Prober.** An external prober polls every sidecar's `/readyz` every ~10 ms on the same raw
  clock. Every 200 it gets must lie inside a recorded interval (the recorder is conservative),
  and the stretches it saw two sidecars ready must not intersect (an independent overlap check).
- **Watch.** A watch on the lock prefix records every key creation; every holding's fencing token
  must be the create revision of a key written with that sidecar's identity, and tokens must
  strictly increase in the order the holdings began.
- **Fenced store.** Beside each sidecar a model application reads `/status` every ~20 ms and, while
  `held`, writes to a store that rejects tokens below the highest it has seen; no token may be
  accepted from two writers.
- **Liveness and hygiene.** After each fault a holder must exist again within TTL + 6 s (+ 6 s after
  a quorum loss); no sidecar may exit on its own or panic, SIGTERM must exit 0; after the final
  clean shutdown the stopped sidecars' keys and leases must be gone at once, and everything within
  TTL + 12 s.
- **Negative controls.** A sidecar with safety margin 0 whose clock runs at ×0.5 (`faketime`) is cut
  off while holding: its history keeps it ready ~3 s after etcd expired its lease and another
  sidecar took over, and the checker must report the overlap (the prober must see it too, and the
  fenced store must reject the stale holder's writes). With lock-delay 0, the holder's key is
  deleted with `etcdctl del` (an early revocation without the release record) while its link to
  etcd is delayed 300 ms each way: the successor holds at once, the holder learns ~300 ms late,
  and the checker and the prober must report the overlap; the same fault with the default
  lock-delay (the 600 ms margin) runs among the positive scenarios. Synthetic histories with overlaps and token
  regressions must fail the checker.

Reproduce: `scripts/soak.sh --duration 10m` (writes this file). The CI-sized suite is
`cargo test --test safety`.
";
