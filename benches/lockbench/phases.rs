//! The six measurements of issue 5, each over the same cluster, lockkeeper next to its peers.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchStream,
};
use lockkeeper::{
    acquire_lock, release_lock, DistributedLock, Etcd, LockOptions, Session, SessionOptions,
};
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::etcdmetrics::{self, Traffic};
use crate::http::{self, BoxError, EventStream};
use crate::procs::{self, arrival, Env, Py};
use crate::results::{ContRun, Contention, Footprint, Many, Plan, Results, Row};

pub type R<T> = Result<T, BoxError>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn deadline(s: u64) -> Instant {
    Instant::now() + secs(s)
}

fn lib_opts(identity: &str, ttl: u64) -> LockOptions {
    LockOptions::new()
        .with_identity(identity)
        .with_ttl(secs(ttl))
        .with_timeout(secs(120))
}

fn lock_prefix(name: &str) -> String {
    format!("/locks/{name}/")
}

/// Number of keys under `prefix` (a count-only read).
async fn count_keys(etcd: &Etcd, prefix: &str) -> R<i64> {
    let mut c = etcd.client().clone();
    let r = c
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(r.count())
}

/// Waits until `n` contenders are queued under `prefix`.
async fn wait_queued(etcd: &Etcd, prefix: &str, n: i64, until: Instant) -> R<()> {
    loop {
        if count_keys(etcd, prefix).await? >= n {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("timed out waiting for {n} contenders under {prefix}").into());
        }
        sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_event(stream: &mut WatchStream, ty: EventType) -> R<Instant> {
    loop {
        let resp = stream.message().await?.ok_or("watch stream ended")?;
        if resp.events().iter().any(|e| e.event_type() == ty) {
            return Ok(Instant::now());
        }
    }
}

fn is_held(v: &serde_json::Value) -> bool {
    v["held"] == serde_json::Value::Bool(true)
}

fn is_waiting(v: &serde_json::Value) -> bool {
    v["state"] == "waiting"
}

async fn reap(child: &mut Child, grace: Duration) {
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// The two transactions an acquire + release with a reused lease sends, by hand (lockkeeper's
/// enqueue: put-if-absent + read the owner; release: delete if still ours), through the bare
/// client: what those requests cost etcd, without lockkeeper around them.
async fn txn_pair(c: &mut Client, prefix: &str, key: &str, lease: i64) -> R<()> {
    let owner = TxnOp::get(
        prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    );
    let enqueue = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, "bench", Some(PutOptions::new().with_lease(lease))),
            owner.clone(),
        ])
        .or_else([TxnOp::get(key, None), owner]);
    let r = c.txn(enqueue).await?;
    let rev = r.header().map(|h| h.revision()).unwrap_or_default();
    let release = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key, None)]);
    c.txn(release).await?;
    Ok(())
}

// === 1. Uncontended acquire + release ===

pub async fn uncontended(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let mut floor2 = Row::new(
        "floor_put_delete",
        "floor: put + delete",
        "two bare writes through etcd-client (the same client the library uses)",
    );
    let mut floor4 = Row::new(
        "floor_grant_put_delete_revoke",
        "floor: lease grant + put + delete + revoke",
        "the four bare requests a fresh-lease lock cycle needs",
    );
    let mut floor_txn = Row::new(
        "floor_txn",
        "floor: lockkeeper's two transactions, by hand",
        "enqueue txn + release txn sent through the bare client (lease reused)",
    );
    let mut fresh = Row::new(
        "lib_fresh",
        "lockkeeper `acquire_lock` + `release_lock`",
        "new lease each time (grant, enqueue txn, release txn, revoke)",
    );
    let mut reuse = Row::new(
        "lib_reuse",
        "lockkeeper, lease reused (`with_lease`)",
        "one long-lived `Session`: enqueue txn + release txn",
    );
    let mut dlock = Row::new(
        "lib_mutex",
        "lockkeeper `DistributedLock::lock` + `release`",
        "new lease each time, plus the holder's loss monitor (a watch on its key)",
    );
    let mut py = Row::new(
        "py",
        "python-etcd3 `Lock.acquire` + `release`",
        "new lease each time (grant, txn); release is one txn, the lease is left to expire",
    );

    let mut c = etcd.client().clone();
    let name = env.unique("unc");
    let key = format!("/bench/floor/{name}");
    let opts = lib_opts("bench", 10);
    let session = Session::grant(etcd, &SessionOptions::new(secs(30))).await?;
    let reuse_opts = opts.clone().with_lease(session.lease());
    let dl = DistributedLock::new(etcd.clone(), format!("{name}-dl"), opts.clone())?;

    for run in 0..plan.runs {
        for row in [
            &mut floor2,
            &mut floor4,
            &mut floor_txn,
            &mut fresh,
            &mut reuse,
            &mut dlock,
            &mut py,
        ] {
            row.series.start_run();
        }
        let warm = if run == 0 { 5 } else { 0 };
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            c.put(key.as_str(), "v", None).await?;
            c.delete(key.as_str(), None).await?;
            if i >= warm {
                floor2.series.push(t.elapsed());
            }
        }
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            let l = c.lease_grant(10, None).await?;
            c.put(
                key.as_str(),
                "v",
                Some(PutOptions::new().with_lease(l.id())),
            )
            .await?;
            c.delete(key.as_str(), None).await?;
            c.lease_revoke(l.id()).await?;
            if i >= warm {
                floor4.series.push(t.elapsed());
            }
        }
        let txn_prefix = format!("/bench/txn/{name}/");
        let txn_key = format!("{txn_prefix}{}", session.lease());
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            txn_pair(&mut c, &txn_prefix, &txn_key, session.lease().0).await?;
            if i >= warm {
                floor_txn.series.push(t.elapsed());
            }
        }
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            let h = acquire_lock(etcd, &name, &opts).await?;
            release_lock(etcd, h).await?;
            if i >= warm {
                fresh.series.push(t.elapsed());
            }
        }
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            let h = acquire_lock(etcd, &name, &reuse_opts).await?;
            release_lock(etcd, h).await?;
            if i >= warm {
                reuse.series.push(t.elapsed());
            }
        }
        for i in 0..warm + plan.uncontended {
            let t = Instant::now();
            let g = dl.lock().await?;
            g.release().await?;
            if i >= warm {
                dlock.series.push(t.elapsed());
            }
        }
        // python-etcd3 talks to one member: rotate it over the runs.
        let pyname = env.unique("unc-py");
        let mut p = Py::spawn(
            env,
            &pyname,
            run,
            &[
                "uncontended".into(),
                "--name".into(),
                pyname.clone(),
                "--count".into(),
                plan.uncontended.to_string(),
                "--ttl".into(),
                "10".into(),
            ],
        )?;
        let until = deadline(60 + plan.uncontended as u64);
        loop {
            let (word, line, _) = p.expect_any(&["sample", "failed", "done"], until).await?;
            match word {
                "sample" => {
                    let us: f64 = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .ok_or("bad sample line")?;
                    py.series.push_ms(us / 1e3);
                }
                "failed" => py.series.failures += 1,
                _ => break,
            }
        }
        p.finish(deadline(10)).await;
    }
    session.revoke().await?;
    res.uncontended = vec![floor2, floor4, floor_txn, fresh, reuse, dlock, py];
    Ok(())
}

// === 2. Hand-off latency ===

pub async fn handoff(env: &Arc<Env>, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let fresh_note = format!(
        ", the successor released only {} ms after it queued",
        plan.settle_fresh.as_millis()
    );
    let mut rows = vec![handoff_floor(etcd, plan).await?];
    rows.push(
        handoff_library(
            env,
            etcd,
            plan,
            Row::new(
                "lib",
                "lockkeeper library",
                "in process: `release_lock` called → the waiting `acquire_lock` returns",
            ),
            plan.handoff_lib,
            plan.settle,
        )
        .await?,
    );
    rows.push(
        handoff_library(
            env,
            etcd,
            plan,
            Row::new(
                "lib_q30",
                "lockkeeper library, fresh successor",
                &format!("the same{fresh_note}"),
            ),
            plan.handoff_fresh,
            plan.settle_fresh,
        )
        .await?,
    );
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

/// Two contenders in one process: the holder calls `release_lock`, the waiter's
/// `acquire_lock` returns.
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
    let mut holder = acquire_lock(etcd, &name, &lib_opts("a", 10)).await?;
    for _ in 0..plan.runs {
        row.series.start_run();
        for i in 0..count {
            let (tx, rx) = oneshot::channel();
            let (e, n, o) = (etcd.clone(), name.clone(), lib_opts(&format!("w{i}"), 10));
            tokio::spawn(async move {
                let r = acquire_lock(&e, &n, &o).await;
                let _ = tx.send((r, Instant::now()));
            });
            wait_queued(etcd, &prefix, 2, deadline(10)).await?;
            sleep(settle).await;
            let t0 = Instant::now();
            release_lock(etcd, holder).await?;
            let (r, t1) = timeout_at(deadline(10), rx).await??;
            holder = r?;
            row.series.push(t1 - t0);
        }
    }
    release_lock(etcd, holder).await?;
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
    EventStream::open(&a.authority(), deadline(10))
        .await?
        .wait_for(deadline(10), "held", is_held)
        .await?;
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
        let args = |n: &str| -> Vec<String> {
            vec![
                "handoff".into(),
                "--name".into(),
                n.into(),
                "--ttl".into(),
                "10".into(),
            ]
        };
        let mut p0 = Py::spawn(env, &format!("{name}-0"), run, &args(&name))?;
        p0.expect("held", deadline(30)).await?;
        let mut p1 = Py::spawn(env, &format!("{name}-1"), run + 1, &args(&name))?;
        p1.expect("trying", deadline(30)).await?;
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

// === 3. Crash fail-over ===

pub async fn failover(env: &Arc<Env>, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let ttl = plan.failover_ttl;
    let mut rows = [
        Row::new(
            "sidecar",
            "lockkeeper run (sidecar)",
            "SIGKILL the holder → successor's `/events` reports held",
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
                        0 => failover_sidecar(&env, ttl, delay).await,
                        1 => failover_etcdctl(&env, &etcd, ttl, delay).await,
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

async fn failover_sidecar(env: &Env, ttl: u64, delay: Duration) -> R<Duration> {
    let name = env.unique("fo-sc");
    let mut a = procs::spawn_sidecar(env, &name, &env.unique("sc"), ttl)?;
    let (_, held_at) = EventStream::open(&a.authority(), deadline(10))
        .await?
        .wait_for(deadline(10), "held", is_held)
        .await?;
    let mut b = procs::spawn_sidecar(env, &name, &env.unique("sc"), ttl)?;
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
    let (ida, idb) = (env.unique("cmd"), env.unique("cmd"));
    let rxa = env.hub.expect(&ida);
    let mut a = procs::spawn_etcdctl(env, &name, &ida, ttl, true)?;
    let a_arr = arrival(rxa, deadline(10), "etcdctl holder").await?;
    let held_at = a_arr.at;
    let rxb = env.hub.expect(&idb);
    let mut b = procs::spawn_etcdctl(env, &name, &idb, ttl, true)?;
    wait_queued(etcd, &lock_prefix(&name), 2, deadline(10)).await?;
    sleep_until(held_at + delay).await;
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
    let args: Vec<String> = vec![
        "hold".into(),
        "--name".into(),
        name.clone(),
        "--ttl".into(),
        ttl.to_string(),
    ];
    let mut a = Py::spawn(env, &format!("{name}-a"), member, &args)?;
    let (_, held_at) = a.expect("held", deadline(30)).await?;
    let mut b = Py::spawn(env, &format!("{name}-b"), member + 1, &args)?;
    b.expect("trying", deadline(30)).await?;
    sleep(Duration::from_millis(100)).await; // let its first attempt fail and its watch start
    sleep_until(held_at + delay).await;
    let t0 = Instant::now();
    procs::signal(a.pid, Signal::SIGKILL);
    let (_, t1) = b.expect("held", deadline(ttl * 4)).await?;
    a.finish(deadline(5)).await;
    b.finish(deadline(10)).await;
    Ok(t1 - t0)
}

// === 4. Contention scaling ===

/// How the N contenders reach etcd.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// One client (connection, watch streams) per contender, as N pods would have.
    PerContender,
    /// One client shared by all N contenders (N tasks / threads in one process).
    Shared,
}

pub async fn contention_lockkeeper(
    env: &Env,
    etcd: &Etcd,
    plan: &Plan,
    res: &mut Results,
) -> R<()> {
    for clients in [Clients::PerContender, Clients::Shared] {
        let (id, label) = match clients {
            Clients::PerContender => ("lib", "lockkeeper library, client per contender"),
            Clients::Shared => ("lib_shared", "lockkeeper library, one shared client"),
        };
        let mut out: Vec<Contention> = plan
            .contention_ns
            .iter()
            .map(|&n| Contention {
                id,
                label: label.into(),
                n,
                runs: Vec::new(),
            })
            .collect();
        for _ in 0..plan.contention_runs {
            for c in out.iter_mut() {
                let name = env.unique("cont");
                let mut conns = Vec::with_capacity(c.n);
                for _ in 0..c.n {
                    conns.push(match clients {
                        Clients::Shared => etcd.clone(),
                        Clients::PerContender => {
                            lockkeeper::EtcdOptions::new(env.endpoints.clone())
                                .connect_etcd()
                                .await?
                        }
                    });
                }
                let (before, _) = etcdmetrics::scrape(&env.endpoints).await?;
                let t0 = Instant::now();
                let mut set = JoinSet::new();
                for (i, etcd) in conns.into_iter().enumerate() {
                    let name = name.clone();
                    set.spawn(async move {
                        let opts = lib_opts(&format!("w{i}"), 10);
                        let h = acquire_lock(&etcd, &name, &opts).await?;
                        release_lock(&etcd, h).await?;
                        Ok::<_, lockkeeper::Error>(Instant::now())
                    });
                }
                let (mut ok, mut failed, mut last) = (0, 0, t0);
                while let Some(j) = set.join_next().await {
                    match j {
                        Ok(Ok(at)) => {
                            ok += 1;
                            last = last.max(at);
                        }
                        _ => failed += 1,
                    }
                }
                let wall = (last - t0).as_secs_f64();
                let (after, _) = etcdmetrics::scrape(&env.endpoints).await?;
                c.runs.push(ContRun {
                    wall,
                    ok,
                    failed,
                    lost_wakeups: 0,
                    traffic: &after - &before,
                });
                eprintln!(
                    "lockbench:   {label} N={}: {ok} ok, {failed} failed, {wall:.2}s",
                    c.n
                );
            }
        }
        res.contention.extend(out);
    }
    Ok(())
}

pub async fn contention_python(env: &Env, plan: &Plan, res: &mut Results) -> R<()> {
    for clients in [Clients::PerContender, Clients::Shared] {
        let (id, label) = match clients {
            Clients::PerContender => ("py", "python-etcd3, client per contender"),
            Clients::Shared => ("py_shared", "python-etcd3, one shared client"),
        };
        let mut out: Vec<Contention> = plan
            .contention_ns
            .iter()
            .map(|&n| Contention {
                id,
                label: label.into(),
                n,
                runs: Vec::new(),
            })
            .collect();
        for run in 0..plan.contention_runs {
            for c in out.iter_mut() {
                // With a client per contender python-etcd3's herd makes N = 500 take minutes:
                // run it once, cut off after python_cap seconds.
                if clients == Clients::PerContender && c.n >= 500 && run > 0 {
                    continue;
                }
                let name = env.unique("cont-py");
                let mut args: Vec<String> = vec![
                    "contend".into(),
                    "--name".into(),
                    name.clone(),
                    "--threads".into(),
                    c.n.to_string(),
                    "--ttl".into(),
                    "10".into(),
                    "--timeout".into(),
                    plan.python_watch_timeout.to_string(),
                    "--cap".into(),
                    plan.python_cap.to_string(),
                ];
                if clients == Clients::PerContender {
                    args.push("--own-client".into());
                }
                let mut p = Py::spawn(env, &name, run, &args)?;
                p.expect("ready", deadline(120)).await?;
                let (before, _) = etcdmetrics::scrape(&env.endpoints).await?;
                p.send("go").await?;
                let (line, _) = p
                    .expect(
                        "done",
                        deadline(plan.python_cap + plan.python_watch_timeout + 60),
                    )
                    .await?;
                let (after, _) = etcdmetrics::scrape(&env.endpoints).await?;
                p.finish(deadline(10)).await;
                let field = |k: &str| -> Option<f64> {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.parse().ok())
                };
                let ok = field("ok=").ok_or("bad done line")? as usize;
                let failed = field("failed=").ok_or("bad done line")? as usize;
                let lost = field("lost=").ok_or("bad done line")? as usize;
                let wall = field("wall=").ok_or("bad done line")?;
                c.runs.push(ContRun {
                    wall,
                    ok,
                    failed,
                    lost_wakeups: lost,
                    traffic: &after - &before,
                });
                eprintln!(
                    "lockbench:   {label} N={}: {ok} ok, {failed} failed, {lost} lost wake-ups, {wall:.2}s",
                    c.n
                );
                if failed > 0 {
                    res.notes.push(format!(
                        "contention, {label}, N={} (run {}): only {ok} of {} contenders got the lock within the {} s cap",
                        c.n, run + 1, c.n, plan.python_cap
                    ));
                }
            }
        }
        res.contention.extend(out);
    }
    Ok(())
}

// === 5. Footprint ===

pub async fn footprint(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    // lockkeeper run: one holder, one waiter; no HTTP client connected while measuring.
    let name = env.unique("fp-sc");
    let mut a = procs::spawn_sidecar(env, &name, "fp-holder", 10)?;
    EventStream::open(&a.authority(), deadline(10))
        .await?
        .wait_for(deadline(10), "held", is_held)
        .await?;
    let mut b = procs::spawn_sidecar(env, &name, "fp-waiter", 10)?;
    EventStream::open(&b.authority(), deadline(10))
        .await?
        .wait_for(deadline(10), "waiting", is_waiting)
        .await?;
    // etcdctl lock: holder (running an idle command) and waiter.
    let ename = env.unique("fp-ectl");
    let (ida, idb) = (env.unique("cmd"), env.unique("cmd"));
    let rxa = env.hub.expect(&ida);
    let mut ea = procs::spawn_etcdctl(env, &ename, &ida, 10, true)?;
    let ea_arr = arrival(rxa, deadline(10), "etcdctl holder").await?;
    let _rxb = env.hub.expect(&idb);
    let mut eb = procs::spawn_etcdctl(env, &ename, &idb, 10, true)?;
    wait_queued(etcd, &lock_prefix(&ename), 2, deadline(10)).await?;
    // python-etcd3: holder (refreshing every TTL/3) and waiter.
    let pname = env.unique("fp-py");
    let args: Vec<String> = vec![
        "hold".into(),
        "--name".into(),
        pname.clone(),
        "--ttl".into(),
        "10".into(),
    ];
    let mut pa = Py::spawn(env, &format!("{pname}-a"), 0, &args)?;
    pa.expect("held", deadline(30)).await?;
    let mut pb = Py::spawn(env, &format!("{pname}-b"), 1, &args)?;
    pb.expect("trying", deadline(30)).await?;

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

// === 6. Many locks in one process ===

pub async fn many_locks(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let n = plan.many;
    let mut floor = Many {
        id: "floor",
        label: "floor: put + delete".into(),
        how: format!("{n} tasks, each a bare put then delete of its own key"),
        ops_per_s: vec![],
        failed: 0,
        requests_per_op: vec![],
    };
    let mut txns = Many {
        id: "floor_txn",
        label: "floor: lockkeeper's two transactions, by hand".into(),
        how: format!(
            "{n} tasks, enqueue txn + release txn through the bare client, one shared lease"
        ),
        ops_per_s: vec![],
        failed: 0,
        requests_per_op: vec![],
    };
    let mut fresh = Many {
        id: "lib_fresh",
        label: "lockkeeper, lease per lock".into(),
        how: format!("{n} tasks, `acquire_lock` + `release_lock` on {n} distinct locks"),
        ops_per_s: vec![],
        failed: 0,
        requests_per_op: vec![],
    };
    let mut shared = Many {
        id: "lib_shared",
        label: "lockkeeper, one shared lease".into(),
        how: format!("the same with `with_lease` (one `Session` for all {n} locks)"),
        ops_per_s: vec![],
        failed: 0,
        requests_per_op: vec![],
    };
    for _ in 0..plan.many_runs {
        for which in 0..4 {
            let tag = env.unique("many");
            let session = if which >= 2 {
                Some(Session::grant(etcd, &SessionOptions::new(secs(30))).await?)
            } else {
                None
            };
            let lease = session.as_ref().map(Session::lease);
            let (before, _) = etcdmetrics::scrape(&env.endpoints).await?;
            let t0 = Instant::now();
            let mut set = JoinSet::new();
            for i in 0..n {
                let etcd = etcd.clone();
                let name = format!("{tag}-{i}");
                set.spawn(async move {
                    if which == 0 {
                        let mut c = etcd.client().clone();
                        let key = format!("/bench/many/{name}");
                        c.put(key.as_str(), "v", None).await?;
                        c.delete(key.as_str(), None).await?;
                    } else if which == 3 {
                        let mut c = etcd.client().clone();
                        let l = lease.expect("a lease").0;
                        let prefix = format!("/bench/many/{name}/");
                        let key = format!("{prefix}{l:x}");
                        txn_pair(&mut c, &prefix, &key, l).await?;
                    } else {
                        let mut o = lib_opts("many", 10);
                        if let Some(l) = lease {
                            o = o.with_lease(l);
                        }
                        let h = acquire_lock(&etcd, &name, &o).await?;
                        release_lock(&etcd, h).await?;
                    }
                    Ok::<_, BoxError>(())
                });
            }
            let mut failed = 0;
            while let Some(j) = set.join_next().await {
                if !matches!(j, Ok(Ok(()))) {
                    failed += 1;
                }
            }
            let wall = t0.elapsed().as_secs_f64();
            let (after, _) = etcdmetrics::scrape(&env.endpoints).await?;
            let t: Traffic = &after - &before;
            if let Some(s) = session {
                s.revoke().await?;
            }
            let m = match which {
                0 => &mut floor,
                1 => &mut fresh,
                2 => &mut shared,
                _ => &mut txns,
            };
            m.ops_per_s.push((n - failed) as f64 / wall);
            m.failed += failed;
            m.requests_per_op.push(t.unary / n as f64);
        }
    }
    res.many = vec![floor, txns, fresh, shared];
    Ok(())
}
