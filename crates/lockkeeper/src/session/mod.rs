//! A session lease, its keepalive loop, and the local deadline of the safety rule.
//!
//! etcd expires a lease at (leader processed the last keepalive) + TTL, which is never earlier
//! than (we *sent* that keepalive) + TTL. So the holder may trust the lease until
//! `send_instant + granted_ttl - safety_margin`, measured on the monotonic clock, and not a
//! moment longer unless a newer keepalive is acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::etcd::Etcd;
use crate::{
    default_keepalive_interval, default_safety_margin, Error, LeaseId, Result, DEFAULT_TTL,
};

mod keeper;
mod revoke;

use keeper::Keeper;
pub use revoke::{safe_revoke, RevokeOutcome};

/// How a session lease is granted and kept alive.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    ttl: Duration,
    keepalive_interval: Option<Duration>,
    safety_margin: Option<Duration>,
    renew: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl SessionOptions {
    /// A renewed lease with this TTL (rounded up to whole seconds, at least 1 s).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keepalive_interval: None,
            safety_margin: None,
            renew: true,
        }
    }

    /// Send a keepalive this often (default [`default_keepalive_interval`], TTL/3).
    pub fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = Some(interval);
        self
    }

    /// Stop trusting the lease this long before the server could expire it (default
    /// [`default_safety_margin`], TTL/5).
    pub fn with_safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }

    /// Whether to keep the lease alive in the background (default true).
    pub fn with_renewal(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// The TTL asked for, in whole seconds as etcd takes it.
    pub fn ttl_secs(&self) -> i64 {
        let ms = self.ttl.as_millis().max(1);
        ms.div_ceil(1000) as i64
    }

    /// The requested TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the lease is kept alive in the background.
    pub fn renews(&self) -> bool {
        self.renew
    }

    /// The keepalive period for a lease granted with `granted`.
    pub fn keepalive_interval_for(&self, granted: Duration) -> Duration {
        self.keepalive_interval
            .unwrap_or_else(|| default_keepalive_interval(granted))
    }

    /// The safety margin for a lease granted with `granted`.
    pub fn safety_margin_for(&self, granted: Duration) -> Duration {
        self.safety_margin
            .unwrap_or_else(|| default_safety_margin(granted))
    }
}

/// Why a lease can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseLoss {
    /// etcd answered a keepalive with TTL ≤ 0: the lease is gone.
    Expired,
    /// No keepalive was acknowledged before the local deadline.
    DeadlineMissed,
    /// We revoked it (release or shutdown).
    Revoked,
}

impl LeaseLoss {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseLoss::Expired => "lease_expired",
            LeaseLoss::DeadlineMissed => "deadline_missed",
            LeaseLoss::Revoked => "revoked",
        }
    }
}

/// What the session knows about its lease right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Trusted until `deadline` (monotonic), unless renewed before.
    Alive {
        /// Local deadline: send instant of the last acknowledged keepalive + TTL − margin.
        deadline: Instant,
        /// TTL the server granted or last renewed to.
        ttl: Duration,
    },
    /// No longer trusted, for this reason. Final.
    Lost(LeaseLoss),
}

impl LeaseState {
    /// True while the lease is alive and its local deadline has not passed.
    pub fn is_trusted(&self) -> bool {
        self.deadline().is_some_and(|d| crate::clock::now() < d)
    }

    /// The local deadline, if still alive.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            LeaseState::Alive { deadline, .. } => Some(*deadline),
            LeaseState::Lost(_) => None,
        }
    }
}

/// A granted lease, kept alive in the background when renewal is on.
/// Dropping it stops renewal (the lease then expires on the server after its TTL);
/// call [`Session::revoke`] to end it at once.
#[derive(Debug)]
pub struct Session {
    etcd: Etcd,
    lease: LeaseId,
    granted_ttl: Duration,
    owned: bool,
    state_tx: Arc<watch::Sender<LeaseState>>,
    state: watch::Receiver<LeaseState>,
    renew: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Session {
    /// Grants a new lease and, if asked, starts keeping it alive.
    pub async fn grant(etcd: &Etcd, opts: &SessionOptions) -> Result<Session> {
        let ttl_secs = opts.ttl_secs();
        let sent = crate::clock::now();
        let resp = etcd
            .call("lease_grant", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        let granted = Duration::from_secs(resp.ttl().max(0) as u64);
        if granted.is_zero() {
            return Err(Error::LeaseExpired { lease: resp.id() });
        }
        let lease = LeaseId(resp.id());
        tracing::debug!(lease = %lease, ttl_s = granted.as_secs(), "lease granted");
        Ok(Self::start(etcd, lease, granted, sent, true, opts))
    }

    /// Follows an existing lease granted by someone else: keeps it alive like its own when
    /// renewal is on, and trusts it only until the local deadline of its own last acknowledged
    /// keepalive. [`Session::revoke`] never revokes it.
    pub async fn attach(etcd: &Etcd, lease: LeaseId, opts: &SessionOptions) -> Result<Session> {
        let id = lease.0;
        let info = etcd
            .call("lease_timetolive", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        let granted = Duration::from_secs(info.granted_ttl().max(0) as u64);
        if info.ttl() <= 0 || granted.is_zero() {
            return Err(Error::LeaseExpired { lease: id });
        }
        // The remaining TTL says nothing about when the lease was last renewed as seen from
        // here, so trust starts with a keepalive of our own: opening the stream sends one and
        // reads its answer (an error for a lease that is gone).
        let sent = crate::clock::now();
        match etcd
            .call("lease_keepalive", |mut c| async move {
                c.lease_keep_alive(id).await.map(drop)
            })
            .await
        {
            Ok(()) => {}
            Err(Error::Etcd {
                source: etcd_client::Error::LeaseKeepAliveError(_),
                ..
            }) => return Err(Error::LeaseExpired { lease: id }),
            Err(e) => return Err(e),
        }
        Ok(Self::start(etcd, lease, granted, sent, false, opts))
    }

    fn start(
        etcd: &Etcd,
        lease: LeaseId,
        granted: Duration,
        sent: Instant,
        owned: bool,
        opts: &SessionOptions,
    ) -> Session {
        let margin = opts.safety_margin_for(granted);
        let deadline = sent + granted.saturating_sub(margin);
        let (state_tx, state) = watch::channel(LeaseState::Alive {
            deadline,
            ttl: granted,
        });
        let state_tx = Arc::new(state_tx);
        let renew = Arc::new(AtomicBool::new(opts.renew));
        let keeper = Keeper {
            etcd: etcd.clone(),
            lease,
            interval: opts.keepalive_interval_for(granted),
            margin,
            renew: renew.clone(),
            state: state_tx.clone(),
        };
        let task = tokio::spawn(keeper.run(deadline));
        Session {
            etcd: etcd.clone(),
            lease,
            granted_ttl: granted,
            owned,
            state_tx,
            state,
            renew,
            task,
        }
    }

    /// Whether this session granted its lease (and so revokes it in [`Session::revoke`]).
    pub fn owns_lease(&self) -> bool {
        self.owned
    }

    /// The lease id.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The etcd handle this session talks through.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The TTL etcd granted.
    pub fn granted_ttl(&self) -> Duration {
        self.granted_ttl
    }

    /// The current lease state.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// True while the lease is alive and before its local deadline.
    pub fn is_trusted(&self) -> bool {
        self.state().is_trusted()
    }

    /// Subscribe to lease state changes.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops sending keepalives: the lease stays trusted until its current deadline, then the
    /// state turns to [`LeaseLoss::DeadlineMissed`] and the server expires it.
    pub fn stop_renewing(&self) {
        self.renew.store(false, Ordering::SeqCst);
    }

    /// Flips the local state to lost without any network call.
    pub fn mark_lost(&self, why: LeaseLoss) {
        mark_lost(&self.state_tx, why);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets the state to `Lost(why)` unless it is lost already (the first reason wins, and lost is
/// final). Returns whether it changed.
fn mark_lost(state: &watch::Sender<LeaseState>, why: LeaseLoss) -> bool {
    state.send_if_modified(|s| {
        if matches!(s, LeaseState::Lost(_)) {
            false
        } else {
            *s = LeaseState::Lost(why);
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(
            SessionOptions::new(Duration::from_millis(1500)).ttl_secs(),
            2
        );
        assert_eq!(SessionOptions::new(Duration::from_secs(10)).ttl_secs(), 10);
        assert_eq!(SessionOptions::new(Duration::ZERO).ttl_secs(), 1);
    }

    #[test]
    fn defaults_follow_the_safety_rule() {
        let o = SessionOptions::default();
        let ttl = Duration::from_secs(10);
        assert_eq!(
            o.keepalive_interval_for(ttl),
            Duration::from_millis(3333) + Duration::from_nanos(333_333)
        );
        assert_eq!(o.safety_margin_for(ttl), Duration::from_secs(2));
        // One lost keepalive does not drop the deadline (TTL − margin > 2 intervals)...
        assert!(ttl - o.safety_margin_for(ttl) > o.keepalive_interval_for(ttl) * 2);
        // ...two do (TTL − margin < 3 intervals).
        assert!(ttl - o.safety_margin_for(ttl) < o.keepalive_interval_for(ttl) * 3);
    }

    #[test]
    fn lost_is_never_trusted_and_alive_only_before_its_deadline() {
        let now = Instant::now();
        let past = LeaseState::Alive {
            deadline: now - Duration::from_millis(1),
            ttl: Duration::from_secs(10),
        };
        let future = LeaseState::Alive {
            deadline: now + Duration::from_secs(5),
            ttl: Duration::from_secs(10),
        };
        assert!(!past.is_trusted());
        assert!(future.is_trusted());
        assert!(!LeaseState::Lost(LeaseLoss::Expired).is_trusted());
    }
}
