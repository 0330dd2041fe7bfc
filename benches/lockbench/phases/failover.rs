//! 3. Crash fail-over: SIGKILL the holder → the successor holds.

use std::sync::Arc;
use std::time::Duration;

use lockkeeper::Etcd;
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::{
    deadline, etcdctl_pair, is_held, is_waiting, py_args, py_pair, reap, secs, sidecar_reports,
    EtcdctlPair, R,
};
use crate::http::EventStream;
use crate::procs::{self, arrival, Env};
use crate::results::{Plan, Results, Row};

pub async fn failover(env: &Arc<Env>, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let ttl = plan.failover_ttl;
    let mut rows = [
        Row::new(
            "sidecar",
            "lockkeeper run (sidecar)",
            "SIGKILL the holder → successor's `/events` reports held (default lock-delay: the safety margin, TTL/5)",
        ),
        Row::new(
            "sidecar-nodelay",
            "lockkeeper run, `--lock-delay 0s`",
            "the same without the lock-delay after an unclean hand-over",
        ),
        Row::new(
            "etcdctl",
            "etcdctl lock",
            "SIGKILL the holder's etcdctl → successor's command starts",
        ),
        Row::new(
            "py",
            "python-etcd3",
            "SIGKILL the holder (which refreshes its lease every TTL/3) → successor's `acquire()` returns",
        ),
    ];
    for round in 0..plan.failover_rounds {
        for r in rows.iter_mut() {
            r.series.start_run();
        }
        let mut set = JoinSet::new();
        for pair in 0..plan.failover_pairs {
            for (k, _) in rows.iter().enumerate() {
                let env = env.clone();
                let etcd = etcd.clone();
                // Kill at the same point of the holder's keepalive cycle for every
                // implementation: 2/3 TTL + a pseudo-random part of TTL/3 after it acquired
                // (every holder renews every TTL/3 from its acquisition).
                let mut rng = rand::rngs::StdRng::seed_from_u64((round * 100 + pair) as u64);
                let delay =
                    Duration::from_millis(ttl * 2000 / 3 + rng.random_range(0..ttl * 1000 / 3));
                let member = round * plan.failover_pairs + pair;
                set.spawn(async move {
                    let r = match k {
                        0 => failover_sidecar(&env, ttl, delay, &[]).await,
                        1 => failover_sidecar(&env, ttl, delay, &["--lock-delay", "0s"]).await,
                        2 => failover_etcdctl(&env, &etcd, ttl, delay).await,
                        _ => failover_python(&env, ttl, delay, member).await,
                    };
                    (k, r)
                });
            }
        }
        while let Some(j) = set.join_next().await {
            let (k, r) = j?;
            match r {
                Ok(d) => rows[k].series.push(d),
                Err(e) => {
                    rows[k].series.failures += 1;
                    res.notes
                        .push(format!("fail-over, {}: attempt failed: {e}", rows[k].label));
                }
            }
        }
    }
    res.failover = rows.into_iter().collect();
    Ok(())
}

async fn failover_sidecar(env: &Env, ttl: u64, delay: Duration, extra: &[&str]) -> R<Duration> {
    let name = env.unique("fo-sc");
    let mut a = procs::spawn_sidecar_with(env, &name, &env.unique("sc"), ttl, extra)?;
    let held_at = sidecar_reports(&a, "held", is_held).await?;
    let mut b = procs::spawn_sidecar_with(env, &name, &env.unique("sc"), ttl, extra)?;
    let mut b_ev = EventStream::open(&b.authority(), deadline(10)).await?;
    b_ev.wait_for(deadline(10), "waiting", is_waiting).await?;
    sleep_until(held_at + delay).await;
    let t0 = Instant::now();
    procs::signal(a.pid, Signal::SIGKILL);
    let (_, t1) = b_ev.wait_for(deadline(ttl * 4), "held", is_held).await?;
    reap(&mut a.child, secs(5)).await;
    procs::stop(&mut b.child, secs(10)).await;
    Ok(t1 - t0)
}

async fn failover_etcdctl(env: &Env, etcd: &Etcd, ttl: u64, delay: Duration) -> R<Duration> {
    let name = env.unique("fo-ectl");
    let EtcdctlPair {
        holder: mut a,
        held: a_arr,
        waiter: mut b,
        waiter_arrival: rxb,
    } = etcdctl_pair(env, etcd, &name, ttl).await?;
    sleep_until(a_arr.at + delay).await;
    let t0 = Instant::now();
    procs::signal(a.id().ok_or("etcdctl gone")?, Signal::SIGKILL);
    let b_arr = arrival(rxb, deadline(ttl * 4), "etcdctl successor").await?;
    let d = b_arr.at - t0;
    drop(a_arr); // the orphaned helper sees EOF and exits
    reap(&mut a, secs(5)).await;
    b_arr.finish().await;
    reap(&mut b, secs(10)).await;
    Ok(d)
}

async fn failover_python(env: &Env, ttl: u64, delay: Duration, member: usize) -> R<Duration> {
    let name = env.unique("fo-py");
    let args = py_args("hold", &name, ttl);
    let (a, held_at, mut b) = py_pair(env, &name, ["a", "b"], member, &args).await?;
    sleep(Duration::from_millis(100)).await; // let its first attempt fail and its watch start
    sleep_until(held_at + delay).await;
    let t0 = Instant::now();
    procs::signal(a.pid, Signal::SIGKILL);
    let (_, t1) = b.expect("held", deadline(ttl * 4)).await?;
    a.finish(deadline(5)).await;
    b.finish(deadline(10)).await;
    Ok(t1 - t0)
}
