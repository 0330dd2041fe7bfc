//! 6. Many locks in one process: distinct locks acquired and released concurrently.

use lockkeeper::{acquire_lock, release_lock, Etcd, Session, SessionOptions};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{lib_opts, secs, txn_pair, R};
use crate::etcdmetrics::{self, Traffic};
use crate::http::BoxError;
use crate::procs::Env;
use crate::results::{Many, Plan, Results};

pub async fn many_locks(env: &Env, etcd: &Etcd, plan: &Plan, res: &mut Results) -> R<()> {
    let n = plan.many;
    let mut floor = Many::new(
        "floor",
        "floor: put + delete",
        format!("{n} tasks, each a bare put then delete of its own key"),
    );
    let mut txns = Many::new(
        "floor_txn",
        "floor: lockkeeper's two transactions, by hand",
        format!("{n} tasks, enqueue txn + release txn through the bare client, one shared lease"),
    );
    let mut fresh = Many::new(
        "lib_fresh",
        "lockkeeper, lease per lock",
        format!("{n} tasks, `acquire_lock` + `release_lock` on {n} distinct locks"),
    );
    let mut shared = Many::new(
        "lib_shared",
        "lockkeeper, one shared lease",
        format!("the same with `with_lease` (one `Session` for all {n} locks)"),
    );
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
