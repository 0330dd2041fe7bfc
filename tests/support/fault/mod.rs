//! Fault injection for the safety suite (tests/safety.rs): a TCP fault proxy, the evidence
//! (sidecar readiness histories, an external prober, a watch on the lock prefix, a fenced
//! store), the checker of the safety rule, and the scenario runner that ties them together.

pub mod checker;
pub mod history;
pub mod proxy;
pub mod report;
pub mod world;
