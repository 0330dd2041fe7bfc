//! 5. Footprint: memory and CPU of idle holders and waiters, and binary sizes.

use lockkeeper::Etcd;
use tokio::time::{sleep, Instant};

use super::{
    deadline, etcdctl_pair, is_held, is_waiting, py_args, py_pair, reap, secs, sidecar_reports,
    EtcdctlPair, R,
};
use crate::procs::{self, Env};
use crate::results::{Footprint, Plan, Results};

pub async fn footprint(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    // lockkeeper run: one holder, one waiter; no HTTP client connected while measuring.
    let name = env.unique("fp-sc");
    let mut a = procs::spawn_sidecar(env, &name, "fp-holder", 10)?;
    sidecar_reports(&a, "held", is_held).await?;
    let mut b = procs::spawn_sidecar(env, &name, "fp-waiter", 10)?;
    sidecar_reports(&b, "waiting", is_waiting).await?;
    // etcdctl lock: holder (running an idle command) and waiter.
    let ename = env.unique("fp-ectl");
    let EtcdctlPair {
        holder: mut ea,
        held: ea_arr,
        waiter: mut eb,
        waiter_arrival: _rxb,
    } = etcdctl_pair(env, etcd, &ename, 10).await?;
    // python-etcd3: holder (refreshing every TTL/3) and waiter.
    let pname = env.unique("fp-py");
    let args = py_args("hold", &pname, 10);
    let (pa, _, mut pb) = py_pair(env, &pname, ["a", "b"], 0, &args).await?;

    let procs: Vec<(String, &'static str, u32)> = vec![
        ("lockkeeper run".into(), "holding", a.pid),
        ("lockkeeper run".into(), "waiting", b.pid),
        (
            "etcdctl lock".into(),
            "holding",
            ea.id().ok_or("etcdctl gone")?,
        ),
        (
            "etcdctl lock".into(),
            "waiting",
            eb.id().ok_or("etcdctl gone")?,
        ),
        ("python-etcd3".into(), "holding", pa.pid),
        ("python-etcd3".into(), "waiting", pb.pid),
    ];
    sleep(if plan.smoke { secs(1) } else { secs(3) }).await;
    let tck = procs::clock_ticks_per_sec();
    let before: Vec<Option<u64>> = procs.iter().map(|p| procs::cpu_ticks(p.2)).collect();
    let t0 = Instant::now();
    sleep(plan.footprint).await;
    let elapsed = t0.elapsed().as_secs_f64();
    for (p, b0) in procs.iter().zip(before) {
        let (Some(b0), Some(b1), Some((rss, hwm))) =
            (b0, procs::cpu_ticks(p.2), procs::rss_kib(p.2))
        else {
            res.errors
                .push(format!("footprint: {} ({}) exited early", p.0, p.1));
            continue;
        };
        res.footprint.push(Footprint {
            label: p.0.clone(),
            role: p.1,
            rss_kib: rss,
            hwm_kib: hwm,
            cpu_pct: (b1 - b0) as f64 / tck / elapsed * 100.0,
            secs: elapsed,
        });
    }
    // Binary sizes.
    for (label, path) in [
        ("lockkeeper (release, stripped)", env.lockkeeper.clone()),
        ("etcdctl (Debian package)", env.etcdctl.clone()),
    ] {
        if let Ok(m) = std::fs::metadata(&path) {
            res.binaries.push((label.to_owned(), m.len()));
        }
    }
    procs::stop(&mut a.child, secs(10)).await;
    procs::stop(&mut b.child, secs(10)).await;
    ea_arr.finish().await;
    reap(&mut ea, secs(10)).await;
    procs::stop(&mut eb, secs(10)).await;
    pa.finish(deadline(10)).await;
    pb.child.kill().await.ok();
    Ok(())
}
