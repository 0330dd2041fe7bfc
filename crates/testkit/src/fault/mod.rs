//! Fault injection for the safety suite (tests/safety.rs): a TCP fault proxy, the evidence
//! (sidecar readiness histories, an external prober, a watch on the lock prefix, a fenced
//! store), the checker of the safety rule, and the scenario runner that ties them together.
//!
//! A scenario ([`scenario`]) builds a world of etcd members, sidecar nodes behind [`proxy`]s
//! and recorders (the private `world` and `node` modules), injects each [`kind`] of fault (as
//! the private `inject` module does it), and ends in an [`outcome`] that the [`report`] renders.

pub mod checker;
pub mod history;
mod inject;
pub mod kind;
mod node;
pub mod outcome;
pub mod prober;
pub mod proxy;
pub mod report;
pub mod scenario;
pub mod store;
pub mod watch;
mod world;

use std::future::Future;
use std::thread::JoinHandle;

pub use world::HOGS;

/// Runs `task` to completion on a thread of its own with a single-threaded Tokio runtime (the
/// fault proxies and the prefix watch are async; the test kit is not).
fn spawn_async(name: &str, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime")
                .block_on(task)
        })
        .unwrap_or_else(|e| panic!("spawn thread {name}: {e}"))
}
