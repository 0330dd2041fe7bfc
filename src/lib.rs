//! lockkeeper: a distributed lock on etcd, key for key compatible with etcd's own lock
//! (`etcdctl lock`, Go `concurrency.Mutex`): fair FIFO queueing, fencing tokens, reentrancy,
//! automatic lease renewal with a local safety deadline, and structured audit logging.
//!
//! ```no_run
//! # async fn demo() -> lockkeeper::Result<()> {
//! use std::time::Duration;
//! use lockkeeper::{DistributedLock, EtcdOptions, LockOptions};
//!
//! let etcd = EtcdOptions::new(["http://127.0.0.1:2379"]).connect().await?;
//! let lock = DistributedLock::new(
//!     lockkeeper::Etcd::new(etcd),
//!     "reports",
//!     LockOptions::new().with_ttl(Duration::from_secs(10)).with_timeout(Duration::from_secs(30)),
//! )?;
//! let guard = lock.lock().await?;
//! println!("holding with fencing token {}", guard.token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! The lock core depends only on etcd-client, tokio and tracing; the sidecar modules use it
//! like any other caller.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

use std::fmt;

pub mod acquire;
pub mod audit;
pub mod connect;
mod error;
pub mod etcd;
pub mod lock;
pub mod mutex;
pub mod session;

// The sidecar: it uses the lock core like any other caller.
pub mod agent;
pub mod cli;
pub mod config;
pub mod exec;
pub mod history;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod sidecar;
pub mod status;
pub mod telemetry;
pub mod wait;

pub use acquire::{
    acquire_lock, default_identity, release_lock, LockHandle, LockOptions, Progress,
};
pub use connect::EtcdOptions;
pub use error::{Error, Result};
pub use etcd::{Etcd, Observer};
pub use lock::{wait_for_deletion, Contender, Owner, ReleaseOutcome, DEFAULT_PREFIX};
pub use mutex::{DistributedLock, LockGuard, LockState, LossReason};
pub use session::{safe_revoke, LeaseLoss, LeaseState, RevokeOutcome, Session, SessionOptions};

/// An etcd lease id. Displays as lowercase hex, the form used in contender keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A fencing token: the create_revision of the holder's key. Strictly increases from one holder
/// to the next, so a protected resource can reject writes from a stale holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl EtcdOptions {
    /// Connects and wraps the client as an [`Etcd`] with default request timeout.
    pub async fn connect_etcd(&self) -> Result<Etcd> {
        Ok(Etcd::new(self.connect().await?))
    }
}
