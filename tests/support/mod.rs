//! Shared helpers for integration tests: a real etcd cluster per test, and small utilities.
//!
//! Include with `mod support;` from a file in `tests/`. Not every test binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

mod etcd;
pub mod fault;
mod http;
mod sidecar;
mod tls;

use std::process;
use std::sync::atomic::{AtomicUsize, Ordering};

// Re-exports are the support API; a test binary that ignores some would otherwise warn.
#[allow(unused_imports)]
pub use etcd::{etcd_bin, etcdctl_bin, EtcdCluster, EtcdSetup, EtcdTls};
#[allow(unused_imports)]
pub use http::{http_get, http_request, HttpResponse};
#[allow(unused_imports)]
pub use sidecar::{free_port, lockkeeper_bin, Sidecar};
#[allow(unused_imports)]
pub use tls::{CertFiles, TestPki};

/// A lock name no other test in this run uses: `{prefix}-{pid}-{counter}`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", process::id())
}
