//! Shared helpers for integration tests: a real etcd cluster per test, a real Kubernetes API
//! server for the end-to-end tests, and small utilities.
//!
//! A dev-dependency of the library (crates/lockkeeper) and of the agent (the root package):
//! their tests use it as `testkit::...`. Not every test binary uses every helper, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

pub mod auth;
mod etcd;
pub mod exec;
pub mod fault;
mod http;
pub mod kube;
mod process;
mod sidecar;
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};

// The support API.
pub use etcd::{etcd_bin, etcdctl_bin, EtcdCluster, EtcdSetup, EtcdTls};
pub use http::{http_get, http_request, HttpResponse};
pub use sidecar::{free_port, libfaketime, lockkeeper_bin, Launch, Sidecar};
pub use tls::{CertFiles, TestPki};

/// A lock name no other test in this run uses: `{prefix}-{pid}-{counter}`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The repository's top directory (where `scripts/` and `.tools/` are), whichever package's
/// test asks.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}
