//! lockbench: lockkeeper side by side with etcd's own lock (`etcdctl lock`), python-etcd3's
//! `Lock` and the floor (bare etcd requests through etcd-client), on one local 3-member etcd
//! cluster, in one run. Writes docs/benchmarks.md and an SVG chart.
//!
//! Run it through `scripts/bench.sh` (full) or `scripts/bench.sh --smoke` (CI): the script
//! installs the peers, builds the release binaries, starts the cluster and passes everything in:
//!
//! ```text
//! lockbench --endpoints URL,URL,URL --lockkeeper PATH --etcdctl PATH --python PATH
//!           --pylock scripts/bench_peers/pylock.py --out docs/benchmarks.md
//!           --chart docs/img/benchmarks.svg [--smoke] [--only PHASE,...] [--command TEXT]
//!           [--ns N,...] [--fleet-ns N,...] [--fleet-window SECS]
//! ```
//!
//! `--ns` replaces the contention phase's sizes; `--fleet-ns` and `--fleet-window` the fleet
//! phase's (in-process contenders on one lock, and the quiet window in seconds).
//!
//! `lockbench helper SOCKET ID` is the command `etcdctl lock` / `lockkeeper exec` run while
//! holding the lock. Under `cargo test` (no arguments) it does nothing.

mod chart;
mod etcdmetrics;
mod http;
mod phases;
mod procs;
mod report;
mod results;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lockkeeper::EtcdOptions;

use crate::results::{Plan, Results};

const PHASES: [&str; 8] = [
    "uncontended",
    "handoff",
    "many",
    "contention",
    "fleet",
    "failover",
    "footprint",
    "contention-python",
];

pub struct Config {
    pub endpoints: Vec<String>,
    pub lockkeeper: PathBuf,
    pub etcdctl: PathBuf,
    pub python: PathBuf,
    pub pylock: PathBuf,
    pub out: PathBuf,
    pub chart: PathBuf,
    pub smoke: bool,
    pub only: Option<Vec<String>>,
    pub command: String,
    pub cluster_note: String,
    /// Override the contention sizes (for trying things out).
    pub ns: Option<Vec<usize>>,
    /// Override the idle fleet's sizes.
    pub fleet_ns: Option<Vec<usize>>,
    /// Override the idle fleet's measurement window, seconds.
    pub fleet_window: Option<u64>,
}

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut c = Config {
        endpoints: vec![],
        lockkeeper: PathBuf::from("target/release/lockkeeper"),
        etcdctl: PathBuf::from("etcdctl"),
        python: PathBuf::from("python3"),
        pylock: PathBuf::from("scripts/bench_peers/pylock.py"),
        out: PathBuf::from("docs/benchmarks.md"),
        chart: PathBuf::from("docs/img/benchmarks.svg"),
        smoke: false,
        only: None,
        command: "scripts/bench.sh".into(),
        cluster_note: String::new(),
        ns: None,
        fleet_ns: None,
        fleet_window: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => c.endpoints = value()?.split(',').map(str::to_owned).collect(),
            "--lockkeeper" => c.lockkeeper = value()?.into(),
            "--etcdctl" => c.etcdctl = value()?.into(),
            "--python" => c.python = value()?.into(),
            "--pylock" => c.pylock = value()?.into(),
            "--out" => c.out = value()?.into(),
            "--chart" => c.chart = value()?.into(),
            "--command" => c.command = value()?,
            "--cluster-note" => c.cluster_note = value()?,
            "--only" => {
                let v: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                if let Some(bad) = v.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    return Err(format!(
                        "--only: unknown phase {bad:?} (phases: {PHASES:?})"
                    ));
                }
                c.only = Some(v);
            }
            "--ns" => {
                let v: Result<Vec<usize>, _> = value()?.split(',').map(str::parse).collect();
                c.ns = Some(v.map_err(|e| format!("--ns: {e}"))?);
            }
            "--fleet-ns" => {
                let v: Result<Vec<usize>, _> = value()?.split(',').map(str::parse).collect();
                let v = v.map_err(|e| format!("--fleet-ns: {e}"))?;
                if v.iter().any(|&n| n < 2) {
                    return Err("--fleet-ns: every size must be at least 2".into());
                }
                c.fleet_ns = Some(v);
            }
            "--fleet-window" => {
                let v = value()?;
                c.fleet_window = Some(v.parse().map_err(|e| format!("--fleet-window: {e}"))?);
            }
            "--smoke" => c.smoke = true,
            "--bench" => {} // added by `cargo bench`
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if c.endpoints.is_empty() {
        return Err("--endpoints is required".into());
    }
    Ok(c)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        procs::helper_main(&args[1..]);
    }
    if !args.iter().any(|a| a == "--endpoints") {
        // `cargo test --all-targets` runs bench targets without arguments: nothing to do.
        eprintln!("lockbench: run it with scripts/bench.sh (or scripts/bench.sh --smoke)");
        return;
    }
    let cfg = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockbench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // On SIGINT / SIGTERM, drop the run: every child process it started is killed on drop.
    let code = rt.block_on(async {
        tokio::select! {
            code = run(cfg) => code,
            sig = interrupted() => {
                eprintln!("lockbench: {sig}: stopping everything it started");
                130
            }
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    std::process::exit(code);
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(cfg: Config) -> i32 {
    let started = Instant::now();
    let mut plan = if cfg.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if let Some(ns) = &cfg.ns {
        plan.contention_ns = ns.clone();
    }
    if let Some(ns) = &cfg.fleet_ns {
        plan.fleet_ns = ns.clone();
    }
    if let Some(w) = cfg.fleet_window {
        plan.fleet_window = std::time::Duration::from_secs(w);
    }
    let work = match tempfile::Builder::new().prefix("lockbench.").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("lockbench: temp dir: {e}");
            return 1;
        }
    };
    let hub = match procs::HelperHub::bind(&work.path().join("helper.sock")) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lockbench: helper socket: {e}");
            return 1;
        }
    };
    let env = Arc::new(procs::Env::new(
        cfg.endpoints.clone(),
        cfg.lockkeeper.clone(),
        cfg.etcdctl.clone(),
        cfg.python.clone(),
        cfg.pylock.clone(),
        work.path().to_owned(),
        hub,
    ));
    let etcd = match EtcdOptions::new(cfg.endpoints.clone()).connect_etcd().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("lockbench: cannot connect to etcd: {e}");
            return 1;
        }
    };
    let machine = report::machine_info(&cfg).await;
    let mut res = Results::default();
    if let Ok((_, leader)) = etcdmetrics::scrape(&cfg.endpoints).await {
        res.leader = leader;
    }
    let wanted = |p: &str| cfg.only.as_ref().is_none_or(|o| o.iter().any(|x| x == p));

    for phase in PHASES {
        if !wanted(phase) {
            continue;
        }
        eprintln!(
            "lockbench: [{:>5.1}s] {phase}",
            started.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let r = match phase {
            "uncontended" => phases::uncontended(&env, &etcd, &plan, &mut res).await,
            "handoff" => phases::handoff(&env, &etcd, &plan, &mut res).await,
            "many" => phases::many_locks(&env, &etcd, &plan, &mut res).await,
            "contention" => phases::contention_lockkeeper(&env, &etcd, &plan, &mut res).await,
            "fleet" => phases::fleet(&env, &etcd, &plan, &mut res).await,
            "failover" => phases::failover(&env, &etcd, &plan, &mut res).await,
            "footprint" => phases::footprint(&env, &etcd, &plan, &mut res).await,
            "contention-python" => phases::contention_python(&env, &plan, &mut res).await,
            _ => unreachable!(),
        };
        if let Err(e) = r {
            eprintln!("lockbench: {phase} failed: {e}");
            res.errors.push(format!("{phase}: {e}"));
        }
        res.phase_secs
            .push((phase.to_owned(), t.elapsed().as_secs_f64()));
    }
    res.total_secs = started.elapsed().as_secs_f64();
    eprintln!("lockbench: measurements done in {:.1}s", res.total_secs);

    let mut code = 0;
    if cfg.smoke {
        for problem in report::smoke_problems(&res, cfg.only.is_some()) {
            eprintln!("lockbench: smoke: {problem}");
            code = 1;
        }
    }
    if !res.errors.is_empty() {
        code = 1;
    }
    if let Err(e) = chart::write(&res, &cfg.chart) {
        eprintln!("lockbench: chart: {e}");
        code = 1;
    }
    let md = report::markdown(&cfg, &plan, &machine, &res);
    if let Some(dir) = cfg.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&cfg.out, md) {
        eprintln!("lockbench: writing {}: {e}", cfg.out.display());
        code = 1;
    } else {
        eprintln!(
            "lockbench: wrote {} and {}",
            cfg.out.display(),
            cfg.chart.display()
        );
    }
    print!("{}", report::summary(&res));
    code
}
