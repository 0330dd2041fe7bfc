//! `DistributedLock`: a reentrant handle on one named lock, with optional auto-renewal, loss
//! detection, `is_locked`, fencing tokens and an RAII guard.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acquire::{acquire_observed, LockHandle, LockOptions, Progress};
use crate::etcd::Etcd;
use crate::lock::{self, Contender, ReleaseOutcome};
use crate::session::{LeaseLoss, LeaseState, Session};
use crate::{audit, Error, FencingToken, LeaseId, Result};

/// Why a held lock stopped being held without a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// etcd said our lease is gone (keepalive TTL ≤ 0).
    LeaseExpired,
    /// No keepalive was acknowledged before the local deadline (or renewal was off).
    DeadlineMissed,
    /// A watch saw our key deleted by someone else.
    KeyDeleted,
    /// A linearizable read found our key gone or recreated with another revision.
    KeyChanged,
}

impl LossReason {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::LeaseExpired => "lease_expired",
            LossReason::DeadlineMissed => "deadline_missed",
            LossReason::KeyDeleted => "key_deleted",
            LossReason::KeyChanged => "key_changed",
        }
    }

    /// Every reason, for exporters that pre-create one series per reason.
    pub const ALL: [LossReason; 4] = [
        LossReason::LeaseExpired,
        LossReason::DeadlineMissed,
        LossReason::KeyDeleted,
        LossReason::KeyChanged,
    ];
}

impl From<LeaseLoss> for LossReason {
    /// etcd saying the lease is gone is an expiry; anything else is a missed local deadline.
    fn from(loss: LeaseLoss) -> Self {
        match loss {
            LeaseLoss::Expired => LossReason::LeaseExpired,
            LeaseLoss::DeadlineMissed | LeaseLoss::Revoked => LossReason::DeadlineMissed,
        }
    }
}

/// What a [`DistributedLock`] is doing, published on a watch channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Not held and not trying.
    Idle,
    /// Trying: enqueueing, or queued behind others.
    Acquiring(Progress),
    /// Held with this token until `deadline` unless renewed.
    Held {
        /// Fencing token.
        token: FencingToken,
        /// Our key.
        key: String,
        /// Our lease.
        lease: LeaseId,
        /// Local deadline of the safety rule (monotonic).
        deadline: Instant,
    },
    /// Was held, is not any more; release to clean up.
    Lost {
        /// The token we held.
        token: FencingToken,
        /// Why.
        reason: LossReason,
    },
}

impl LockState {
    /// True only while held and before the local deadline: the one test for "may I act now?".
    pub fn is_held(&self) -> bool {
        matches!(self, LockState::Held { deadline, .. } if Instant::now() < *deadline)
    }
}

struct Holding {
    handle: LockHandle,
    count: u32,
    monitor: JoinHandle<()>,
}

struct Shared {
    etcd: Etcd,
    name: String,
    opts: LockOptions,
    holding: Mutex<Option<Holding>>,
    state: watch::Sender<LockState>,
}

/// A handle on one named lock. Clones share the handle (and its reentrancy count).
#[derive(Clone)]
pub struct DistributedLock {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLock")
            .field("name", &self.shared.name)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl DistributedLock {
    /// A handle on lock `name`; nothing is sent to etcd until [`acquire`](Self::acquire).
    pub fn new(etcd: Etcd, name: impl Into<String>, opts: LockOptions) -> Result<Self> {
        let name = name.into();
        lock::lock_prefix(opts.prefix(), &name)?;
        let (state, _) = watch::channel(LockState::Idle);
        Ok(Self {
            shared: Arc::new(Shared {
                etcd,
                name,
                opts,
                holding: Mutex::new(None),
                state,
            }),
        })
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The options this handle acquires with.
    pub fn options(&self) -> &LockOptions {
        &self.shared.opts
    }

    /// Acquires the lock, or, if this handle already holds it, counts one more holder without
    /// any etcd call. Returns the fencing token.
    pub async fn acquire(&self) -> Result<FencingToken> {
        let mut holding = self.shared.holding.lock().await;
        if let Some(h) = holding.as_mut() {
            if let LockState::Lost { reason, .. } = *self.shared.state.borrow() {
                return Err(Error::Lost(reason.as_str()));
            }
            h.count += 1;
            return Ok(h.handle.token());
        }
        let (progress_tx, mut progress_rx) = watch::channel(Progress::Enqueueing);
        let state = self.shared.state.clone();
        state.send_replace(LockState::Acquiring(Progress::Enqueueing));
        let forward = tokio::spawn(async move {
            while progress_rx.changed().await.is_ok() {
                let p = progress_rx.borrow_and_update().clone();
                state.send_replace(LockState::Acquiring(p));
            }
        });
        let acquired = acquire_observed(
            &self.shared.etcd,
            &self.shared.name,
            &self.shared.opts,
            Some(&progress_tx),
        )
        .await;
        drop(progress_tx);
        let _ = forward.await;
        let handle = match acquired {
            Ok(h) => h,
            Err(e) => {
                self.shared.state.send_replace(LockState::Idle);
                return Err(e);
            }
        };
        let token = handle.token();
        let monitor = spawn_monitor(
            self.shared.etcd.clone(),
            handle.contender().clone(),
            handle.session().map(Session::subscribe),
            self.shared.state.clone(),
        );
        *holding = Some(Holding {
            handle,
            count: 1,
            monitor,
        });
        Ok(token)
    }

    /// Acquires and returns a guard that releases when dropped (or explicitly, with
    /// [`LockGuard::release`], to see the outcome).
    pub async fn lock(&self) -> Result<LockGuard> {
        let token = self.acquire().await?;
        Ok(LockGuard {
            lock: self.clone(),
            token,
            armed: true,
        })
    }

    /// Releases one hold. Only the last release deletes our key (if it is still ours) and
    /// revokes the lease; earlier ones only count down. Releasing when not holding returns
    /// [`ReleaseOutcome::NotOwner`].
    pub async fn release(&self) -> Result<ReleaseOutcome> {
        let mut holding = self.shared.holding.lock().await;
        let Some(h) = holding.as_mut() else {
            return Ok(ReleaseOutcome::NotOwner);
        };
        if h.count > 1 {
            h.count -= 1;
            return Ok(ReleaseOutcome::Released);
        }
        let h = holding.take().expect("checked above");
        // Local state first, then the network.
        let was_lost = matches!(*self.shared.state.borrow(), LockState::Lost { .. });
        self.shared.state.send_replace(LockState::Idle);
        h.monitor.abort();
        let outcome = crate::acquire::release_lock(&self.shared.etcd, h.handle).await?;
        Ok(if was_lost {
            ReleaseOutcome::NotOwner
        } else {
            outcome
        })
    }

    /// How many holds this handle has (0 = not held).
    pub async fn hold_count(&self) -> u32 {
        self.shared
            .holding
            .lock()
            .await
            .as_ref()
            .map_or(0, |h| h.count)
    }

    /// The current fencing token, while held.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        match &*self.shared.state.borrow() {
            LockState::Held { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// True if we hold the lock: locally trusted (before the deadline) and confirmed by a
    /// linearizable read that our key still exists with our create_revision.
    pub async fn is_locked(&self) -> Result<bool> {
        let state = self.shared.state.borrow().clone();
        let LockState::Held { key, token, .. } = &state else {
            return Ok(false);
        };
        if !state.is_held() {
            return Ok(false);
        }
        let (rev, _) = lock::read_key(&self.shared.etcd, key).await?;
        Ok(rev == Some(token.0) && self.shared.state.borrow().is_held())
    }

    /// The current state.
    pub fn state(&self) -> LockState {
        self.shared.state.borrow().clone()
    }

    /// Subscribe to state changes (acquiring, held with a new deadline, lost, idle).
    pub fn subscribe(&self) -> watch::Receiver<LockState> {
        self.shared.state.subscribe()
    }
}

/// Watches a held lock: lease state (renewals move the deadline; loss ends holding) and our own
/// key (deleted or replaced ends holding).
fn spawn_monitor(
    etcd: Etcd,
    me: Contender,
    lease: Option<watch::Receiver<LeaseState>>,
    state: watch::Sender<LockState>,
) -> JoinHandle<()> {
    let token = me.token();
    let held = |deadline| LockState::Held {
        token,
        key: me.key.clone(),
        lease: me.lease,
        deadline,
    };
    let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let initial = lease
        .as_ref()
        .and_then(|l| l.borrow().deadline())
        .unwrap_or(far);
    state.send_replace(held(initial));
    tokio::spawn(async move {
        let lease_watch = async {
            let Some(mut lease) = lease else {
                return std::future::pending().await;
            };
            loop {
                let s = *lease.borrow_and_update();
                match s {
                    LeaseState::Alive { deadline, .. } => {
                        state.send_if_modified(|cur| match cur {
                            LockState::Held { deadline: d, .. } if *d != deadline => {
                                *d = deadline;
                                true
                            }
                            _ => false,
                        });
                    }
                    LeaseState::Lost(loss) => return loss.into(),
                }
                if lease.changed().await.is_err() {
                    return LossReason::DeadlineMissed;
                }
            }
        };
        let key_watch = async {
            loop {
                match lock::wait_for_deletion(&etcd, &me.key, me.revision + 1, None).await {
                    Ok(_) => return LossReason::KeyDeleted,
                    Err(e) => {
                        tracing::warn!(key = %me.key, error = %e, "watch on our key failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
        };
        let reason = tokio::select! {
            r = lease_watch => r,
            r = key_watch => r,
        };
        state.send_replace(LockState::Lost { token, reason });
        audit::lost(&me, reason.as_str());
    })
}

/// Holds one count of a [`DistributedLock`]; dropping it releases that count in the background.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    lock: DistributedLock,
    token: FencingToken,
    armed: bool,
}

impl LockGuard {
    /// The fencing token this guard was acquired with.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &DistributedLock {
        &self.lock
    }

    /// See [`DistributedLock::is_locked`].
    pub async fn is_locked(&self) -> Result<bool> {
        self.lock.is_locked().await
    }

    /// Resolves when the lock is no longer held (lost or released elsewhere).
    pub async fn lost(&self) {
        let mut rx = self.lock.subscribe();
        let _ = rx.wait_for(|s| !matches!(s, LockState::Held { .. })).await;
    }

    /// Releases now and reports the outcome.
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        self.armed = false;
        self.lock.release().await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lock = self.lock.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = lock.release().await {
                        tracing::warn!(lock = %lock.name(), error = %e, "release on guard drop failed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                lock = %self.lock.name(),
                "lock guard dropped outside a tokio runtime; the lease expires with its TTL"
            ),
        }
    }
}
