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
//! Three levels, each built on the one below:
//!
//! - [`DistributedLock`]: a reentrant handle with an RAII [`LockGuard`] and a [`LockState`]
//!   that a background monitor keeps current;
//! - [`acquire_lock`] / [`release_lock`]: one acquisition from start to finish;
//! - the [`queue`] primitives, [`Session`] and [`follow_hold`], for callers that run their own
//!   loop (the lockkeeper sidecar does).
//!
//! The crate depends only on etcd-client, tokio and tracing. Audit events are `tracing` events
//! under the target [`audit::TARGET`]; route them with any subscriber.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

use std::fmt;

mod acquire;
pub mod audit;
mod backoff;
pub mod clock;
mod connect;
mod defaults;
mod error;
mod etcd;
mod hold;
mod mutex;
pub mod queue;
mod session;

pub use acquire::{acquire_lock, release_lock, LockHandle, LockOptions, Progress};
pub use backoff::Backoff;
pub use connect::EtcdOptions;
pub use defaults::{
    default_identity, default_keepalive_interval, default_safety_margin, identity_from_env,
    process_env, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL,
};
pub use error::{Error, Result};
pub use etcd::{Etcd, Observer};
pub use hold::follow_hold;
pub use mutex::{DistributedLock, LockGuard, LockState, LossReason};
pub use queue::keys::{
    lock_prefix, name_problem, prefix_problem, release_record_key, Contender, Owner, DEFAULT_PREFIX,
};
pub use queue::reads::{wait_for_deletion, Predecessor};
pub use queue::release::ReleaseOutcome;
pub use queue::turn::WaitEvent;
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
