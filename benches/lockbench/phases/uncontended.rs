//! 1. Uncontended acquire + release: the floor, lockkeeper's three ways and python-etcd3.

use etcd_client::PutOptions;
use lockkeeper::{acquire_lock, release_lock, DistributedLock, Etcd, Session, SessionOptions};
use tokio::time::Instant;

use super::{deadline, lib_opts, secs, txn_pair, R};
use crate::procs::{Env, Py};
use crate::results::{Plan, Results, Row};

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
        "the handle's kept lease: enqueue txn + release txn, plus the holder's loss monitor (a watch on its key)",
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
        // `warm` untimed cycles on the first run, then `plan.uncontended` timed ones into `row`.
        macro_rules! timed {
            ($row:ident, $cycle:block) => {
                for i in 0..warm + plan.uncontended {
                    let t = Instant::now();
                    $cycle
                    if i >= warm {
                        $row.series.push(t.elapsed());
                    }
                }
            };
        }
        timed!(floor2, {
            c.put(key.as_str(), "v", None).await?;
            c.delete(key.as_str(), None).await?;
        });
        timed!(floor4, {
            let l = c.lease_grant(10, None).await?;
            c.put(
                key.as_str(),
                "v",
                Some(PutOptions::new().with_lease(l.id())),
            )
            .await?;
            c.delete(key.as_str(), None).await?;
            c.lease_revoke(l.id()).await?;
        });
        let txn_prefix = format!("/bench/txn/{name}/");
        let txn_key = format!("{txn_prefix}{}", session.lease());
        timed!(floor_txn, {
            txn_pair(&mut c, &txn_prefix, &txn_key, session.lease().0).await?;
        });
        timed!(fresh, {
            let h = acquire_lock(etcd, &name, &opts).await?;
            release_lock(etcd, h).await?;
        });
        timed!(reuse, {
            let h = acquire_lock(etcd, &name, &reuse_opts).await?;
            release_lock(etcd, h).await?;
        });
        timed!(dlock, {
            let g = dl.lock().await?;
            g.release().await?;
        });
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
