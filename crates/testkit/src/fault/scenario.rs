//! A fault-injection scenario: what to run (members, sidecars, faults, clock skew, a busy
//! machine), and the runner: build the world, start the sidecars, inject the faults one after
//! another, shut down cleanly, and check the evidence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checker;
use super::kind::Fault;
use super::outcome::{self, Outcome};
use super::world::World;

/// Lease TTL of every sidecar in these scenarios (etcd grants whole seconds).
pub const TTL: Duration = Duration::from_secs(3);
/// A holder must exist again within TTL + this after a fault heals (generous: CI machines are
/// slow and several scenarios share two cores).
pub const LIVENESS_SLACK: Duration = Duration::from_secs(6);
/// Extra allowance after an etcd quorum comes back (election, lease promotion).
pub const QUORUM_SLACK: Duration = Duration::from_secs(6);

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    /// etcd members (1 or 3).
    pub members: usize,
    /// Sidecars.
    pub nodes: usize,
    /// Sidecars reach etcd through one fault proxy per member.
    pub proxied: bool,
    /// Safety margin of every sidecar.
    pub margin: Duration,
    /// One sidecar under `faketime` at this clock rate, with this safety margin. It starts
    /// first, so it holds first.
    pub skew: Option<Skew>,
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// A negative control: violations are expected, so its files are not kept for them.
    pub negative: bool,
    /// `--lock-delay` of every sidecar (`None`: the sidecar's default, the safety margin).
    pub lock_delay: Option<Duration>,
    /// A busy machine: CPU hogs (busy loops at nice 0, one per core of a 2-core machine) run
    /// from the start of the scenario to its end.
    pub busy: bool,
}

/// The one sidecar whose clock runs at another rate.
#[derive(Clone, Copy, Debug)]
pub struct Skew {
    pub node: usize,
    pub rate: f64,
    pub margin: Duration,
}

impl Spec {
    pub fn new(name: &str, members: usize, nodes: usize, faults: &[Fault]) -> Spec {
        Spec {
            name: name.to_owned(),
            members,
            nodes,
            proxied: faults.iter().any(|f| f.needs_proxies()),
            margin: Duration::from_millis(600),
            skew: None,
            faults: faults.to_vec(),
            seed: 1,
            negative: false,
            lock_delay: None,
            busy: false,
        }
    }
}

/// Runs one scenario to the end and checks it.
pub fn run(spec: Spec) -> Outcome {
    let started = Instant::now();
    let mut world = World::new(&spec);
    world.start_sidecars();
    for &fault in &spec.faults {
        world.run_fault(fault);
    }
    let mut end = world.shut_down();
    let ev = &end.evidence;
    end.violations.extend(checker::check_all(
        &ev.intervals,
        &ev.probes,
        &ev.creations,
        &ev.store,
    ));
    let mut records = std::mem::take(&mut end.records);
    end.violations
        .extend(outcome::measure(&mut records, &end.evidence));
    let probes = &end.evidence.probes;
    let probes_total = probes.values().map(Vec::len).sum();
    let probes_200 = probes
        .values()
        .flatten()
        .filter(|p| p.ready == Some(true))
        .count();
    let keep_anyway = std::env::var_os("LOCKKEEPER_SAFETY_KEEP").is_some();
    let kept_dir = if (end.violations.is_empty() || spec.negative) && !keep_anyway {
        None
    } else {
        Some(end.dir.keep())
    };
    Outcome {
        spec,
        faults: records,
        violations: end.violations,
        intervals: end.evidence.intervals,
        store: end.evidence.store,
        probes_200,
        probes_total,
        compactions: end.compactions,
        duration: started.elapsed(),
        kept_dir,
        etcd_crashes: end.etcd_crashes,
    }
}

/// Runs scenarios on up to `parallel` threads; outcomes in spec order.
pub fn run_many(specs: Vec<Spec>, parallel: usize) -> Vec<Outcome> {
    let queue = Arc::new(std::sync::Mutex::new(
        specs.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (q, r) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let next = q.lock().unwrap().pop();
                let Some((i, spec)) = next else { return };
                let outcome = std::panic::catch_unwind(|| run(spec.clone()));
                match outcome {
                    Ok(o) => {
                        eprint!("{}", o.summary());
                        r.lock().unwrap().push((i, o));
                    }
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        r.lock().unwrap().push((i, Outcome::panicked(spec, &msg)));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}
