//! 4. Contention scaling: N contenders start at once on one lock.

use lockkeeper::{acquire_lock, release_lock, Etcd};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{deadline, lib_opts, R};
use crate::etcdmetrics;
use crate::procs::{Env, Py};
use crate::results::{ContRun, Contention, Plan, Results};

/// How the N contenders reach etcd.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// One client (connection, watch streams) per contender, as N pods would have.
    PerContender,
    /// One client shared by all N contenders (N tasks / threads in one process).
    Shared,
}

/// One result, no runs yet, for each N of the plan.
fn per_n(plan: &Plan, id: &'static str, label: &str) -> Vec<Contention> {
    plan.contention_ns
        .iter()
        .map(|&n| Contention {
            id,
            label: label.into(),
            n,
            runs: Vec::new(),
        })
        .collect()
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
        let mut out = per_n(plan, id, label);
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
        let mut out = per_n(plan, id, label);
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
