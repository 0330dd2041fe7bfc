//! Phase 7, the idle fleet: what N contenders queued on one lock cost etcd while nobody acquires or
//! releases (from etcd's own `/metrics`), and the hand-off latency with the queue full.
//!
//! In process, every contender is its own `DistributedLock` handle with its own lease (as a
//! fleet of pods would have), all over the bench's one shared etcd client (`Etcd` is cheap to
//! clone and shares the channel). Then the same window over `lockkeeper run` processes, each
//! with its own connection.

use std::collections::HashMap;
use std::time::Duration;

use lockkeeper::{DistributedLock, Etcd, LockOptions, LockState, Progress};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout_at, Instant};

use super::{
    count_keys, deadline, is_held, is_waiting, lock_prefix, secs, sidecar_reports, wait_queued, R,
};
use crate::etcdmetrics::{self, Traffic};
use crate::procs::{self, Env, Sidecar};
use crate::results::{FleetRun, Plan, Results};

/// How long queueing or cleaning up a fleet may take before the phase gives up.
const SETUP_SECS: u64 = 300;

pub async fn fleet(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let interval = lockkeeper::default_keepalive_interval(secs(plan.fleet_ttl));
    // What the cluster costs with nobody on it, for the etcd CPU the fleets add.
    let (t, s, _) = quiet_window(env, plan.fleet_window.min(secs(15)), &[]).await?;
    res.fleet.push(FleetRun {
        traffic: Some(t),
        window_s: s,
        ..FleetRun::empty("empty", "nobody (the cluster alone)", 0, interval)
    });
    // The baseline: one holder, one waiter, hand-offs only.
    let mut sizes = vec![(2, false)];
    sizes.extend(plan.fleet_ns.iter().map(|&n| (n, true)));
    for (n, window) in sizes {
        match library_fleet(env, etcd, plan, n, window, interval).await {
            Ok(run) => {
                eprintln!("lockbench:   {}", line(&run));
                res.fleet.push(run);
            }
            // One size failing (say, out of file descriptors at the largest) leaves the others.
            Err(e) => res.errors.push(format!("fleet, library, N={n}: {e}")),
        }
    }
    match sidecar_fleet(env, etcd, plan, interval).await {
        Ok(run) => {
            eprintln!("lockbench:   {}", line(&run));
            res.fleet.push(run);
        }
        Err(e) => res.errors.push(format!("fleet, sidecars: {e}")),
    }
    for run in &res.fleet {
        if run.moved > 0 {
            res.notes.push(format!(
                "fleet, {} N={}: {} contenders were not where they started the window at its end",
                run.label, run.contenders, run.moved
            ));
        }
        if run.leftover_keys > 0 || run.leftover_leases > 0 {
            res.errors.push(format!(
                "fleet, {} N={}: {} keys and {} leases left behind after closing",
                run.label, run.contenders, run.leftover_keys, run.leftover_leases
            ));
        }
    }
    Ok(())
}

/// One progress line for the terminal.
fn line(run: &FleetRun) -> String {
    let rate = match (run.per_contender_s(), run.bound()) {
        (Some(t), Some(b)) => format!(
            ", per contender {:.3} keepalives/s + {:.3} unary/s + {:.3} watch/s (bound {b:.3})",
            t.keepalives, t.unary, t.watch_requests
        ),
        _ => String::new(),
    };
    let ho = match run.handoff.median() {
        Some(m) => format!(", hand-off median {m:.2} ms"),
        None => String::new(),
    };
    format!(
        "{} N={}: queued in {:.1}s{rate}{ho}",
        run.label, run.contenders, run.setup_s
    )
}

/// The options of every fleet contender: the fleet's TTL, the library's default renew interval,
/// no timeout (the bench ends every wait itself).
fn fleet_opts(identity: &str, ttl: u64) -> LockOptions {
    LockOptions::new()
        .with_identity(identity)
        .with_ttl(secs(ttl))
}

fn is_queued(s: &LockState) -> bool {
    matches!(s, LockState::Acquiring(Progress::Queued { .. }))
}

/// What one contender's `acquire()` came to, and when.
type Done = (usize, lockkeeper::Result<()>, Instant);

/// N handles on one lock: who holds, and the acquisitions under way.
struct Contenders {
    handles: Vec<DistributedLock>,
    waiting: HashMap<usize, JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
}

impl Contenders {
    fn new(etcd: &Etcd, name: &str, n: usize, ttl: u64) -> R<Contenders> {
        let handles = (0..n)
            .map(|i| DistributedLock::new(etcd.clone(), name, fleet_opts(&format!("f{i}"), ttl)))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Contenders {
            handles,
            waiting: HashMap::new(),
            tx,
            rx,
        })
    }

    /// Starts contender `i`'s `acquire()` on its own task.
    fn queue(&mut self, i: usize) {
        let h = self.handles[i].clone();
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let r = h.acquire().await.map(|_| ());
            let _ = tx.send((i, r, Instant::now()));
        });
        self.waiting.insert(i, task);
    }

    /// The next contender whose `acquire()` returned, and when.
    async fn next_holder(&mut self, until: Instant) -> R<(usize, Instant)> {
        let (i, r, at) = timeout_at(until, self.rx.recv())
            .await
            .map_err(|_| "timed out waiting for the next holder")?
            .ok_or("acquisition channel closed")?;
        self.waiting.remove(&i);
        r.map_err(|e| format!("contender {i}: {e}"))?;
        Ok((i, at))
    }

    /// Waits until every contender but `holder` reports itself queued.
    async fn all_queued(&self, holder: usize, until: Instant) -> R<()> {
        for (i, h) in self.handles.iter().enumerate() {
            if i == holder {
                continue;
            }
            let mut rx = h.subscribe();
            timeout_at(until, rx.wait_for(is_queued))
                .await
                .map_err(|_| format!("contender {i} was not queued in time"))?
                .map(|_| ())
                .map_err(|_| format!("contender {i}: state channel closed"))?;
        }
        Ok(())
    }

    /// Contenders that are not where a settled fleet has them: the holder holding, every
    /// other one queued.
    fn moved(&self, holder: usize) -> usize {
        self.handles
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                let s = h.state();
                if *i == holder {
                    !s.is_held()
                } else {
                    !is_queued(&s)
                }
            })
            .count()
    }

    /// Ends every acquisition under way (each cleans up its key, and a lease it granted, on
    /// its own), then closes every handle (release, revoke the kept lease), all concurrently.
    async fn close(mut self) -> usize {
        for (_, t) in self.waiting.drain() {
            t.abort();
            let _ = t.await;
        }
        let mut set = JoinSet::new();
        for h in self.handles {
            set.spawn(async move { h.close().await });
        }
        let mut failed = 0;
        while let Some(j) = set.join_next().await {
            if !matches!(j, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    }
}

/// Leases etcd knows of.
async fn lease_count(etcd: &Etcd) -> R<i64> {
    let mut c = etcd.client().clone();
    Ok(c.leases().await?.leases().len() as i64)
}

/// Waits (up to the setup limit) until the lock has no keys and etcd is back to `leases`
/// leases; returns what is left of each.
async fn leftovers(etcd: &Etcd, prefix: &str, leases: i64) -> R<(i64, i64)> {
    let until = deadline(SETUP_SECS.min(60));
    loop {
        let keys = count_keys(etcd, prefix).await?;
        let extra = (lease_count(etcd).await? - leases).max(0);
        if (keys == 0 && extra == 0) || Instant::now() >= until {
            return Ok((keys, extra));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The CPU ticks of `pids`, summed; `None` if one is gone.
fn ticks(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| procs::cpu_ticks(p)).sum()
}

/// The measurement window: etcd's counters (and the contenders' CPU) before and after `window`
/// of doing nothing. Returns the traffic, the seconds between the readings and the CPU %.
async fn quiet_window(env: &Env, window: Duration, pids: &[u32]) -> R<(Traffic, f64, Option<f64>)> {
    let cpu0 = if pids.is_empty() { None } else { ticks(pids) };
    let t0 = Instant::now();
    let (before, _) = etcdmetrics::scrape(&env.endpoints).await?;
    sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let (after, _) = etcdmetrics::scrape(&env.endpoints).await?;
    let cpu = match (cpu0, ticks(pids)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / procs::clock_ticks_per_sec() / secs * 100.0),
        _ => None,
    };
    Ok((&after - &before, secs, cpu))
}

/// `n` in-process contenders: queue them, measure the quiet window (if `window`), time the
/// hand-offs with the queue full, close everything.
async fn library_fleet(
    env: &Env,
    etcd: &Etcd,
    plan: &Plan,
    n: usize,
    window: bool,
    interval: Duration,
) -> R<FleetRun> {
    let name = env.unique("fleet");
    let prefix = lock_prefix(&name);
    let leases = lease_count(etcd).await?;
    let mut c = Contenders::new(etcd, &name, n, plan.fleet_ttl)?;
    let mut run = if window {
        FleetRun::empty("lib", "lockkeeper library, one shared client", n, interval)
    } else {
        FleetRun::empty("lib_pair", "lockkeeper library, one waiter", n, interval)
    };
    let measured = measure_library(env, etcd, plan, &mut c, &mut run, window, interval).await;
    let failed = c.close().await;
    let (keys, extra) = leftovers(etcd, &prefix, leases).await?;
    run.leftover_keys = keys;
    run.leftover_leases = extra;
    measured?;
    if failed > 0 {
        return Err(format!("{failed} handles failed to close").into());
    }
    Ok(run)
}

async fn measure_library(
    env: &Env,
    etcd: &Etcd,
    plan: &Plan,
    c: &mut Contenders,
    run: &mut FleetRun,
    window: bool,
    interval: Duration,
) -> R<()> {
    let n = c.handles.len();
    let prefix = lock_prefix(c.handles[0].name());
    let t0 = Instant::now();
    c.queue(0);
    let (mut holder, _) = c.next_holder(deadline(30)).await?;
    for i in 1..n {
        c.queue(i);
    }
    wait_queued(etcd, &prefix, n as i64, deadline(SETUP_SECS)).await?;
    c.all_queued(holder, deadline(SETUP_SECS)).await?;
    run.setup_s = t0.elapsed().as_secs_f64();
    if window {
        // Every lease's keeper opens its keepalive stream at its first renewal, one interval
        // after the grant: let that pass for the last one before counting.
        sleep(interval + secs(1)).await;
        let (t, s, cpu) = quiet_window(env, plan.fleet_window, &[std::process::id()]).await?;
        run.traffic = Some(t);
        run.window_s = s;
        run.client_cpu_pct = cpu;
        run.moved = c.moved(holder);
    }
    run.handoff.start_run();
    for _ in 0..plan.fleet_handoffs {
        // The queue is full (the holder and n − 1 waiters) and every watch settled.
        wait_queued(etcd, &prefix, n as i64, deadline(60)).await?;
        sleep(plan.settle).await;
        let t0 = Instant::now();
        c.handles[holder].release().await?;
        let (next, t1) = c.next_holder(deadline(30)).await?;
        run.handoff.push(t1 - t0);
        // The one that let go queues again, at the back.
        c.queue(holder);
        holder = next;
    }
    Ok(())
}

/// `plan.fleet_sidecars` `lockkeeper run` processes on one lock: the quiet window only.
async fn sidecar_fleet(env: &Env, etcd: &Etcd, plan: &Plan, interval: Duration) -> R<FleetRun> {
    let n = plan.fleet_sidecars;
    let name = env.unique("fleet-sc");
    let prefix = lock_prefix(&name);
    let leases = lease_count(etcd).await?;
    let mut sidecars: Vec<Sidecar> = Vec::with_capacity(n);
    let mut run = FleetRun::empty(
        "sidecar",
        "lockkeeper run (sidecar), a connection each",
        n,
        interval,
    );
    let measured = async {
        let t0 = Instant::now();
        let first = procs::spawn_sidecar(env, &name, &env.unique("fleet-sc"), plan.fleet_ttl)?;
        sidecar_reports(&first, "held", is_held).await?;
        sidecars.push(first);
        for _ in 1..n {
            let id = env.unique("fleet-sc");
            sidecars.push(procs::spawn_sidecar(env, &name, &id, plan.fleet_ttl)?);
        }
        wait_queued(etcd, &prefix, n as i64, deadline(SETUP_SECS)).await?;
        for s in &sidecars[1..] {
            sidecar_reports(s, "waiting", is_waiting).await?;
        }
        run.setup_s = t0.elapsed().as_secs_f64();
        sleep(interval + secs(1)).await;
        let pids: Vec<u32> = sidecars.iter().map(|s| s.pid).collect();
        let (t, s, cpu) = quiet_window(env, plan.fleet_window, &pids).await?;
        run.traffic = Some(t);
        run.window_s = s;
        run.client_cpu_pct = cpu;
        // A sidecar that exited, or a key that left the queue, during the window.
        let gone = pids
            .iter()
            .filter(|&&p| procs::cpu_ticks(p).is_none())
            .count();
        let keys = count_keys(etcd, &prefix).await?;
        run.moved = gone.max((n as i64 - keys).max(0) as usize);
        Ok::<_, crate::http::BoxError>(())
    }
    .await;
    // Waiters first, so that stopping the holder hands over to nobody.
    for s in sidecars.iter_mut().rev() {
        procs::stop(&mut s.child, secs(10)).await;
    }
    let (keys, extra) = leftovers(etcd, &prefix, leases).await?;
    run.leftover_keys = keys;
    run.leftover_leases = extra;
    measured?;
    Ok(run)
}
