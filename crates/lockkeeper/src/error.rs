//! The crate's error type: one variant per kind of failure, each with a stable metric label.

use std::time::Duration;

/// Everything that can go wrong while talking to etcd about a lock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock was not acquired before the timeout; nothing was left behind in etcd.
    #[error("timed out after {0:?} waiting for lock {1:?}")]
    Timeout(Duration, String),

    /// The session lease expired (or was revoked) before or while the lock was held.
    #[error("lease {lease:x} expired or was revoked")]
    LeaseExpired {
        /// The lease that is gone.
        lease: i64,
    },

    /// Our contender key vanished while we were queued (lease expiry or an operator deleted it).
    #[error("our contender key {0:?} disappeared while waiting")]
    KeyLost(String),

    /// A key with our contender key's name exists but is attached to another lease, so it is
    /// not ours to adopt (someone wrote it by hand, or reused our lease id's name).
    #[error("contender key {0:?} exists on another lease")]
    KeyTaken(String),

    /// The lock was held but is not any more (lease expired, deadline missed, key deleted);
    /// release it to clean up before acquiring again.
    #[error("the lock was lost ({0}); release it before acquiring again")]
    Lost(&'static str),

    /// The lock name, prefix or an option is not usable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Reading a TLS file or building the connection failed.
    #[error("cannot configure the etcd connection: {0}")]
    Config(String),

    /// An etcd request failed; `op` names the operation.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// The operation that failed (`grant`, `txn`, `watch`, ...).
        op: &'static str,
        /// What etcd-client reported.
        #[source]
        source: etcd_client::Error,
    },

    /// An etcd request did not answer in time.
    #[error("etcd {op} did not answer within {after:?}")]
    EtcdTimeout {
        /// The operation that timed out.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for the kind of failure, for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Timeout(..) => "timeout",
            Error::LeaseExpired { .. } => "lease_expired",
            Error::KeyLost(_) => "key_lost",
            Error::KeyTaken(_) => "key_taken",
            Error::Lost(_) => "lost",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Config(_) => "config",
            Error::Etcd { .. } => "etcd",
            Error::EtcdTimeout { .. } => "etcd_timeout",
        }
    }

    pub(crate) fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
        move |source| Error::Etcd { op, source }
    }
}
