//! 2. Hand-off latency: the holder lets go → the next waiter holds.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::EventType;
use lockkeeper::{DistributedLock, Etcd};
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout_at, Instant};

use super::{
    deadline, is_held, is_waiting, lib_opts, lock_prefix, py_args, py_pair, reap, secs,
    sidecar_reports, wait_event, wait_queued, R,
};
use crate::http::{self, EventStream};
use crate::procs::{self, arrival, Env};
use crate::results::{Plan, Results, Row};

pub async fn handoff(env: &Arc<Env>, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let fresh_note = format!(
        ", the successor released only {} ms after it queued",
        plan.settle_fresh.as_millis()
    );
    let mut rows = vec![handoff_floor(etcd, plan).await?];
    for (row, count, settle) in [
        (
            Row::new(
                "lib",
                "lockkeeper library",
                "in process, two `DistributedLock` handles taking turns (each keeps its lease): \
                 `release()` called → the other's waiting `acquire()` returns",
            ),
            plan.handoff_lib,
            plan.settle,
        ),
        (
            Row::new(
                "lib_q30",
                "lockkeeper library, fresh successor",
                &format!("the same{fresh_note}"),
            ),
            plan.handoff_fresh,
            plan.settle_fresh,
        ),
    ] {
        rows.push(handoff_library(env, etcd, plan, row, count, settle).await?);
    }
    let (events, readyz) = handoff_sidecar(env, plan).await?;
    rows.push(events);
    rows.push(readyz);
    let exec = |env: &Env, lock: &str, id: &str| procs::spawn_exec(env, lock, id, 10);
    let etcdctl = |env: &Env, lock: &str, id: &str| procs::spawn_etcdctl(env, lock, id, 10, true);
    for (row, count, settle, spawn) in [
        (
            Row::new(
                "exec",
                "lockkeeper exec",
                "`lockkeeper exec -- CMD`: first command exits → second command starts",
            ),
            plan.handoff_proc,
            plan.settle,
            &exec as &dyn Fn(&Env, &str, &str) -> R<Child>,
        ),
        (
            Row::new(
                "exec_q30",
                "lockkeeper exec, fresh successor",
                &format!("the same{fresh_note}"),
            ),
            plan.handoff_fresh,
            plan.settle_fresh,
            &exec,
        ),
        (
            Row::new(
                "etcdctl",
                "etcdctl lock",
                "`etcdctl lock NAME CMD`: first command exits → second command starts",
            ),
            plan.handoff_proc,
            plan.settle,
            &etcdctl,
        ),
        (
            Row::new(
                "etcdctl_q30",
                "etcdctl lock, fresh successor",
                &format!("the same{fresh_note}"),
            ),
            plan.handoff_fresh,
            plan.settle_fresh,
            &etcdctl,
        ),
    ] {
        rows.push(handoff_commands(env, etcd, plan, row, count, settle, spawn).await?);
    }
    rows.push(handoff_etcdctl_signal(env, etcd, plan).await?);
    rows.push(handoff_python(env, plan).await?);
    res.handoff = rows;
    Ok(())
}

/// One delete and the watch event it causes, on a watch that is already established.
async fn handoff_floor(etcd: &Etcd, plan: &Plan) -> R<Row> {
    let mut row = Row::new(
        "floor",
        "floor: delete → watch event",
        "one bare delete, timed until an already open watch delivers it",
    );
    let mut c = etcd.client().clone();
    let mut c2 = etcd.client().clone();
    let key = "/bench/floor/handoff";
    let mut stream = c.watch(key, None).await?;
    for _ in 0..plan.runs {
        row.series.start_run();
        for _ in 0..plan.handoff_lib {
            c.put(key, "v", None).await?;
            timeout_at(deadline(10), wait_event(&mut stream, EventType::Put)).await??;
            let t0 = Instant::now();
            let (del, ev) = tokio::join!(
                c2.delete(key, None),
                timeout_at(deadline(10), wait_event(&mut stream, EventType::Delete))
            );
            del?;
            row.series.push(ev?? - t0);
        }
    }
    drop(stream);
    Ok(row)
}

/// Two contenders in one process, each a `DistributedLock` handle that keeps its lease (the
/// library's default path): the holder calls `release()`, the waiter's `acquire()` returns; then
/// they swap roles.
async fn handoff_library(
    env: &Env,
    etcd: &Etcd,
    plan: &Plan,
    mut row: Row,
    count: usize,
    settle: Duration,
) -> R<Row> {
    let name = env.unique("ho-lib");
    let prefix = lock_prefix(&name);
    let handles = [
        DistributedLock::new(etcd.clone(), &name, lib_opts("a", 10))?,
        DistributedLock::new(etcd.clone(), &name, lib_opts("b", 10))?,
    ];
    let mut holder = 0;
    handles[holder].acquire().await?;
    for _ in 0..plan.runs {
        row.series.start_run();
        for _ in 0..count {
            let waiter = handles[1 - holder].clone();
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let r = waiter.acquire().await;
                let _ = tx.send((r, Instant::now()));
            });
            wait_queued(etcd, &prefix, 2, deadline(10)).await?;
            sleep(settle).await;
            let t0 = Instant::now();
            handles[holder].release().await?;
            let (r, t1) = timeout_at(deadline(10), rx).await??;
            r?;
            holder = 1 - holder;
            row.series.push(t1 - t0);
        }
    }
    for h in &handles {
        h.close().await?;
    }
    Ok(row)
}

/// Two `lockkeeper run` processes: SIGTERM to the holder → the successor's `/events` says held
/// (and then its `/readyz` answers 200).
async fn handoff_sidecar(env: &Env, plan: &Plan) -> R<(Row, Row)> {
    let mut events = Row::new(
        "sidecar",
        "lockkeeper run (sidecar)",
        "SIGTERM to the holder → successor's `/events` reports held",
    );
    let mut readyz = Row::new(
        "sidecar_readyz",
        "lockkeeper run, until `/readyz` = 200",
        "the same, plus one GET `/readyz` answering 200 on the successor",
    );
    let name = env.unique("ho-sc");
    let mut a = procs::spawn_sidecar(env, &name, &env.unique("sc"), 10)?;
    sidecar_reports(&a, "held", is_held).await?;
    for _ in 0..plan.runs {
        events.series.start_run();
        readyz.series.start_run();
        for _ in 0..plan.handoff_proc {
            let b = procs::spawn_sidecar(env, &name, &env.unique("sc"), 10)?;
            let mut b_ev = EventStream::open(&b.authority(), deadline(10)).await?;
            b_ev.wait_for(deadline(10), "waiting", is_waiting).await?;
            sleep(plan.settle).await;
            let t0 = Instant::now();
            procs::signal(a.pid, Signal::SIGTERM);
            let (_, t1) = b_ev.wait_for(deadline(10), "held", is_held).await?;
            let (code, _) = http::get(&b.authority(), "/readyz").await?;
            let t2 = Instant::now();
            events.series.push(t1 - t0);
            if code == 200 {
                readyz.series.push(t2 - t0);
            } else {
                readyz.series.failures += 1;
            }
            reap(&mut a.child, secs(10)).await;
            a = b;
        }
    }
    procs::stop(&mut a.child, secs(10)).await;
    Ok((events, readyz))
}

/// Lock holders that run a command (`etcdctl lock NAME CMD`, `lockkeeper exec -- CMD`): the
/// holder's command exits → the successor's command starts.
async fn handoff_commands(
    env: &Env,
    etcd: &Etcd,
    plan: &Plan,
    mut row: Row,
    count: usize,
    settle: Duration,
    spawn: &dyn Fn(&Env, &str, &str) -> R<Child>,
) -> R<Row> {
    let name = env.unique(&format!("ho-{}", row.id));
    let prefix = lock_prefix(&name);
    let id = env.unique("cmd");
    let rx = env.hub.expect(&id);
    let mut a = spawn(env, &name, &id)?;
    let mut a_arr = arrival(rx, deadline(10), &row.label).await?;
    for _ in 0..plan.runs {
        row.series.start_run();
        for _ in 0..count {
            let id = env.unique("cmd");
            let rx = env.hub.expect(&id);
            let b = spawn(env, &name, &id)?;
            wait_queued(etcd, &prefix, 2, deadline(10)).await?;
            sleep(settle).await;
            let t0 = Instant::now();
            a_arr.finish().await;
            let b_arr = arrival(rx, deadline(10), &row.label).await?;
            row.series.push(b_arr.at - t0);
            reap(&mut a, secs(10)).await;
            a = b;
            a_arr = b_arr;
        }
    }
    a_arr.finish().await;
    reap(&mut a, secs(10)).await;
    Ok(row)
}

/// `etcdctl lock NAME` without a command prints its key once it holds the lock and unlocks on
/// SIGINT: the same shape as the sidecar (signal the holder → successor reports held).
async fn handoff_etcdctl_signal(env: &Env, etcd: &Etcd, plan: &Plan) -> R<Row> {
    let mut row = Row::new(
        "etcdctl_signal",
        "etcdctl lock (no command)",
        "SIGINT to the holder → successor prints its key",
    );
    let name = env.unique("ho-ectl-sig");
    let prefix = lock_prefix(&name);
    let mut a = procs::spawn_etcdctl(env, &name, "sig", 10, false)?;
    let mut a_out = a.stdout.take().ok_or("no stdout")?;
    procs::first_line(&mut a_out, deadline(10)).await?;
    for _ in 0..plan.runs {
        row.series.start_run();
        for _ in 0..plan.handoff_proc {
            let mut b = procs::spawn_etcdctl(env, &name, "sig", 10, false)?;
            let mut b_out = b.stdout.take().ok_or("no stdout")?;
            wait_queued(etcd, &prefix, 2, deadline(10)).await?;
            sleep(plan.settle).await;
            let t0 = Instant::now();
            procs::signal(a.id().ok_or("etcdctl gone")?, Signal::SIGINT);
            let t1 = procs::first_line(&mut b_out, deadline(10)).await?;
            row.series.push(t1 - t0);
            reap(&mut a, secs(10)).await;
            a = b;
            a_out = b_out;
        }
    }
    drop(a_out);
    procs::stop(&mut a, secs(10)).await;
    Ok(row)
}

/// Two python-etcd3 processes passing the lock back and forth.
async fn handoff_python(env: &Env, plan: &Plan) -> R<Row> {
    let mut row = Row::new(
        "py",
        "python-etcd3",
        "two processes: holder's `release()` called → the other's `acquire()` returns",
    );
    for run in 0..plan.runs {
        row.series.start_run();
        let name = env.unique("ho-py");
        let args = py_args("handoff", &name, 10);
        let (p0, _, p1) = py_pair(env, &name, ["0", "1"], run, &args).await?;
        let mut ps = [p0, p1];
        let mut holder = 0;
        for _ in 0..plan.handoff_proc {
            let w = 1 - holder;
            sleep(plan.settle).await;
            let t0 = Instant::now();
            ps[holder].send("release").await?;
            let (_, t1) = ps[w].expect("held", deadline(30)).await?;
            row.series.push(t1 - t0);
            ps[holder].expect("released", deadline(30)).await?;
            ps[holder].send("try").await?;
            ps[holder].expect("trying", deadline(30)).await?;
            holder = w;
        }
        for p in ps {
            p.finish(deadline(10)).await;
        }
    }
    Ok(row)
}
