//! A session lease, its keepalive loop, and the local deadline of the safety rule.
//!
//! etcd expires a lease at (leader processed the last keepalive) + TTL, which is never earlier
//! than (we *sent* that keepalive) + TTL. So the holder may trust the lease until
//! `send_instant + granted_ttl - safety_margin`, measured on the monotonic clock, and not a
//! moment longer unless a newer keepalive is acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use crate::etcd::Etcd;
use crate::{Error, LeaseId, Result};

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
        Self::new(Duration::from_secs(10))
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

    /// Send a keepalive this often (default TTL/3).
    pub fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = Some(interval);
        self
    }

    /// Stop trusting the lease this long before the server could expire it (default TTL/5).
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
        self.keepalive_interval.unwrap_or(granted / 3)
    }

    /// The safety margin for a lease granted with `granted`.
    pub fn safety_margin_for(&self, granted: Duration) -> Duration {
        self.safety_margin.unwrap_or(granted / 5)
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
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    /// The local deadline, if still alive.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            LeaseState::Alive { deadline, .. } => Some(*deadline),
            LeaseState::Lost(_) => None,
        }
    }
}

/// Keepalive counters, shared with whoever wants to export them.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Keepalives acknowledged with TTL > 0.
    pub keepalives: AtomicU64,
    /// Keepalive rounds that failed or timed out.
    pub keepalive_failures: AtomicU64,
}

/// A granted lease, kept alive in the background when renewal is on.
/// Dropping it stops renewal (the lease then expires on the server after its TTL);
/// call [`Session::revoke`] to end it at once.
#[derive(Debug)]
pub struct Session {
    etcd: Etcd,
    lease: LeaseId,
    granted_ttl: Duration,
    state_tx: Arc<watch::Sender<LeaseState>>,
    state: watch::Receiver<LeaseState>,
    stats: Arc<SessionStats>,
    renew: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Session {
    /// Grants a new lease and, if asked, starts keeping it alive.
    pub async fn grant(etcd: &Etcd, opts: &SessionOptions) -> Result<Session> {
        let ttl_secs = opts.ttl_secs();
        let sent = Instant::now();
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
        let margin = opts.safety_margin_for(granted);
        let deadline = sent + granted.saturating_sub(margin);
        let (state_tx, state) = watch::channel(LeaseState::Alive {
            deadline,
            ttl: granted,
        });
        let state_tx = Arc::new(state_tx);
        let stats = Arc::new(SessionStats::default());
        let renew = Arc::new(AtomicBool::new(opts.renew));
        let keeper = Keeper {
            etcd: etcd.clone(),
            lease,
            interval: opts.keepalive_interval_for(granted),
            margin,
            renew: renew.clone(),
            state: state_tx.clone(),
            stats: stats.clone(),
        };
        let task = tokio::spawn(keeper.run(deadline));
        tracing::debug!(lease = %lease, ttl_s = granted.as_secs(), "lease granted");
        Ok(Session {
            etcd: etcd.clone(),
            lease,
            granted_ttl: granted,
            state_tx,
            state,
            stats,
            renew,
            task,
        })
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

    /// Keepalive counters.
    pub fn stats(&self) -> Arc<SessionStats> {
        self.stats.clone()
    }

    /// Stops sending keepalives: the lease stays trusted until its current deadline, then the
    /// state turns to [`LeaseLoss::DeadlineMissed`] and the server expires it.
    pub fn stop_renewing(&self) {
        self.renew.store(false, Ordering::SeqCst);
    }

    /// Marks the lease lost locally (first), stops renewal, then revokes it on the server.
    /// A lease that is already gone is not an error.
    pub async fn revoke(self) -> Result<RevokeOutcome> {
        self.mark_lost(LeaseLoss::Revoked);
        self.task.abort();
        safe_revoke(&self.etcd, self.lease).await
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

/// What [`safe_revoke`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The lease existed and is now revoked (its keys are deleted).
    Revoked,
    /// The lease had already expired or been revoked.
    AlreadyGone,
}

/// Revokes a lease; a lease that already expired or was revoked is not an error.
pub async fn safe_revoke(etcd: &Etcd, lease: LeaseId) -> Result<RevokeOutcome> {
    let id = lease.0;
    match etcd
        .call(
            "lease_revoke",
            |mut c| async move { c.lease_revoke(id).await },
        )
        .await
    {
        Ok(_) => Ok(RevokeOutcome::Revoked),
        Err(Error::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.message().contains("lease not found") => Ok(RevokeOutcome::AlreadyGone),
        Err(e) => Err(e),
    }
}

// === Keeper: the keepalive loop ===

struct Keeper {
    etcd: Etcd,
    lease: LeaseId,
    interval: Duration,
    margin: Duration,
    renew: Arc<AtomicBool>,
    state: Arc<watch::Sender<LeaseState>>,
    stats: Arc<SessionStats>,
}

type KeepAlive = (LeaseKeeper, LeaseKeepAliveStream);

enum Round {
    Renewed { deadline: Instant, ttl: Duration },
    Expired,
    Failed(String),
}

impl Keeper {
    async fn run(self, mut deadline: Instant) {
        let mut stream: Option<KeepAlive> = None;
        let mut next = Instant::now() + self.interval;
        let mut backoff = Duration::from_millis(200);
        loop {
            if !self.renew.load(Ordering::SeqCst) {
                sleep_until(deadline).await;
                self.lose(LeaseLoss::DeadlineMissed);
                return;
            }
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => {
                    self.lose(LeaseLoss::DeadlineMissed);
                    return;
                }
                _ = sleep_until(next) => {}
            }
            if !self.renew.load(Ordering::SeqCst) {
                continue;
            }
            let round = tokio::select! {
                biased;
                _ = sleep_until(deadline) => {
                    self.lose(LeaseLoss::DeadlineMissed);
                    return;
                }
                r = self.round(&mut stream) => r,
            };
            match round {
                Round::Renewed { deadline: d, ttl } => {
                    self.stats.keepalives.fetch_add(1, Ordering::Relaxed);
                    self.etcd.observer().keepalive(true);
                    // Never move the deadline backwards: a slower answer to a later send is still later.
                    deadline = deadline.max(d);
                    backoff = Duration::from_millis(200);
                    let alive = LeaseState::Alive { deadline, ttl };
                    let still_alive = self.state.send_if_modified(|s| match s {
                        LeaseState::Lost(_) => false,
                        _ => {
                            *s = alive;
                            true
                        }
                    });
                    if !still_alive {
                        return; // someone marked the lease lost meanwhile
                    }
                    tracing::debug!(
                        target: "lockkeeper::audit",
                        event = "renewed",
                        lease = %self.lease,
                        ttl_s = ttl.as_secs(),
                        "lease renewed"
                    );
                    next = Instant::now() + self.interval;
                }
                Round::Expired => {
                    self.etcd.observer().keepalive(false);
                    self.lose(LeaseLoss::Expired);
                    return;
                }
                Round::Failed(why) => {
                    self.stats
                        .keepalive_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.etcd.observer().keepalive(false);
                    tracing::warn!(lease = %self.lease, error = %why, retry_in_ms = backoff.as_millis() as u64, "lease keepalive failed");
                    stream = None;
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(self.interval);
                }
            }
        }
    }

    /// One keepalive: one request on a stream that has no other request outstanding, so the
    /// answer belongs to this send instant.
    async fn round(&self, stream: &mut Option<KeepAlive>) -> Round {
        // Half an interval: a member that hangs (paused, partitioned) costs one short round, and
        // the retry can reach another member well before the deadline.
        let per_round = (self.interval / 2).max(Duration::from_millis(300));
        if stream.is_none() {
            let id = self.lease.0;
            let mut client = self.etcd.client().clone();
            match timeout(per_round, client.lease_keep_alive(id)).await {
                Ok(Ok(s)) => *stream = Some(s),
                Ok(Err(e)) => return Round::Failed(format!("open keepalive stream: {e}")),
                Err(_) => return Round::Failed("open keepalive stream: timed out".into()),
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            return Round::Failed("no keepalive stream".into());
        };
        let sent = Instant::now();
        let exchange = async {
            keeper.keep_alive().await?;
            responses.message().await
        };
        match timeout(per_round, exchange).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                let ttl = Duration::from_secs(resp.ttl() as u64);
                Round::Renewed {
                    deadline: sent + ttl.saturating_sub(self.margin),
                    ttl,
                }
            }
            Ok(Ok(Some(_))) => Round::Expired,
            Ok(Ok(None)) => Round::Failed("keepalive stream closed".into()),
            Ok(Err(e)) => Round::Failed(e.to_string()),
            Err(_) => Round::Failed(format!("no keepalive answer within {per_round:?}")),
        }
    }

    fn lose(&self, why: LeaseLoss) {
        if mark_lost(&self.state, why) {
            tracing::info!(lease = %self.lease, reason = why.as_str(), "lease no longer trusted");
        }
    }
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
