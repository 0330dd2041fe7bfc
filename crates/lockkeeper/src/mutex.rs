//! `DistributedLock`: a reentrant handle on one named lock, with optional auto-renewal, loss
//! detection, `is_locked`, fencing tokens and an RAII guard.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acquire::{acquire_observed, LockHandle, LockOptions, Progress};
use crate::etcd::Etcd;
use crate::session::{LeaseLoss, LeaseState, Session};
use crate::{audit, queue, Contender, Error, FencingToken, LeaseId, ReleaseOutcome, Result};

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
        /// Local deadline of the safety rule (on the boot-time clock, which counts through a suspend).
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
        matches!(self, LockState::Held { deadline, .. } if crate::clock::now() < *deadline)
    }
}

struct Holding {
    handle: LockHandle,
    count: u32,
    monitor: JoinHandle<()>,
}

/// What the handle has in etcd: the current hold, and the session it keeps between holds.
#[derive(Default)]
struct Slot {
    holding: Option<Holding>,
    /// The lease this handle granted and keeps alive from one acquisition to the next (as
    /// etcd's own `concurrency.Session` does), so an uncontended acquire + release costs two
    /// transactions and no lease grant or revoke. Revoked by `close()` and when the last
    /// handle is dropped; replaced when it stops being trusted.
    session: Option<Session>,
}

struct Shared {
    etcd: Etcd,
    name: String,
    opts: LockOptions,
    slot: Mutex<Slot>,
    state: watch::Sender<LockState>,
}

impl Shared {
    /// Whether this handle keeps its session between acquisitions: when it grants the lease
    /// itself and keeps it alive. A lease given with `with_lease` is followed per acquisition;
    /// without renewal each acquisition's lease runs out on its own.
    fn keeps_session(&self) -> bool {
        self.opts.lease().is_none() && self.opts.session().renews()
    }
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
        crate::lock_prefix(opts.prefix(), &name)?;
        let (state, _) = watch::channel(LockState::Idle);
        Ok(Self {
            shared: Arc::new(Shared {
                etcd,
                name,
                opts,
                slot: Mutex::new(Slot::default()),
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
        let mut slot = self.shared.slot.lock().await;
        let slot = &mut *slot;
        if let Some(h) = slot.holding.as_mut() {
            if let LockState::Lost { reason, .. } = *self.shared.state.borrow() {
                return Err(Error::Lost(reason.as_str()));
            }
            h.count += 1;
            return Ok(h.handle.token());
        }
        if slot.session.as_ref().is_some_and(|s| !s.is_trusted()) {
            // Lost (expired, or not renewed in time): never used again, and revoked in case
            // etcd still has it.
            if let Some(old) = slot.session.take() {
                revoke_in_background(old);
            }
        }
        let keeps = self.shared.keeps_session();
        let (progress_tx, mut progress_rx) = watch::channel(Progress::Enqueueing);
        let state = self.shared.state.clone();
        state.send_replace(LockState::Acquiring(Progress::Enqueueing));
        // A caller that drops this future leaves the handle idle, not "acquiring" forever.
        let mut idle_on_drop = IdleOnDrop(Some(&self.shared.state));
        let forward = tokio::spawn(async move {
            while progress_rx.changed().await.is_ok() {
                let p = progress_rx.borrow_and_update().clone();
                state.send_replace(LockState::Acquiring(p));
            }
        });
        // Boxed: the acquisition's future is large, and callers nest it in their own.
        let acquired = loop {
            let kept = slot.session.as_ref().filter(|_| keeps);
            let acquired = Box::pin(acquire_observed(
                &self.shared.etcd,
                &self.shared.name,
                &self.shared.opts,
                Some(&progress_tx),
                kept,
            ))
            .await;
            match (&acquired, kept) {
                // etcd refused our key because the kept lease is gone (revoked or expired
                // while idle, before the keeper noticed): give it up and start once more on a
                // new lease. The failed attempt cost one request.
                (Err(e), Some(_)) if is_lease_not_found(e) => {
                    if let Some(old) = slot.session.take() {
                        old.mark_lost(LeaseLoss::Expired);
                    }
                }
                _ => break acquired,
            }
        };
        // No await between a successful acquisition and storing it below: a caller that drops
        // this future (a timeout around it) must never leave a held key behind.
        drop(progress_tx);
        forward.abort();
        idle_on_drop.0 = None;
        let mut handle = match acquired {
            Ok(h) => h,
            Err(e) => {
                self.shared.state.send_replace(LockState::Idle);
                return Err(e);
            }
        };
        if keeps {
            if let Some(granted) = handle.take_session() {
                slot.session = Some(granted);
            }
        }
        let token = handle.token();
        let following = handle.session().or(slot.session.as_ref().filter(|_| keeps));
        let monitor = spawn_monitor(
            self.shared.etcd.clone(),
            handle.contender().clone(),
            following.map(|s| {
                let check_every = self
                    .shared
                    .opts
                    .session()
                    .keepalive_interval_for(s.granted_ttl());
                (s.subscribe(), check_every)
            }),
            self.shared.state.clone(),
        );
        slot.holding = Some(Holding {
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

    /// Releases one hold. Only the last release deletes our key (if it is still ours, with the
    /// release record); earlier ones only count down. The handle's session stays for the next
    /// acquisition (see [`DistributedLock::close`]). Releasing when not holding returns
    /// [`ReleaseOutcome::NotOwner`].
    pub async fn release(&self) -> Result<ReleaseOutcome> {
        let mut slot = self.shared.slot.lock().await;
        let holding = &mut slot.holding;
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

    /// Gives up every hold at once, whatever the count: deletes our key (if it is still ours,
    /// with the release record), then revokes the handle's lease, and waits for both. Await
    /// this before the end of `main`: dropping the last handle starts the same cleanup in the
    /// background, which a runtime that is shutting down may never run (the key and lease then
    /// live until the lease expires). The handle can acquire again afterwards (with a new
    /// lease). Closing a handle that holds nothing returns [`ReleaseOutcome::NotOwner`].
    pub async fn close(&self) -> Result<ReleaseOutcome> {
        let mut slot = self.shared.slot.lock().await;
        if let Some(h) = slot.holding.as_mut() {
            h.count = 1;
        }
        drop(slot);
        let outcome = self.release().await;
        let session = self.shared.slot.lock().await.session.take();
        if let Some(s) = session {
            revoke(s).await;
        }
        outcome
    }

    /// How many holds this handle has (0 = not held).
    pub async fn hold_count(&self) -> u32 {
        self.shared
            .slot
            .lock()
            .await
            .holding
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
        let (rev, _) = queue::read_key(&self.shared.etcd, key).await?;
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

/// Sets the state back to idle when an acquisition is abandoned midway.
struct IdleOnDrop<'a>(Option<&'a watch::Sender<LockState>>);

impl Drop for IdleOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.send_replace(LockState::Idle);
        }
    }
}

impl Drop for Shared {
    /// The last handle is gone: release a hold and revoke the kept session in the background
    /// (see [`DistributedLock::close`] for the awaited way).
    fn drop(&mut self) {
        let slot = std::mem::take(self.slot.get_mut());
        if slot.holding.is_none() && slot.session.is_none() {
            return;
        }
        let Slot { holding, session } = slot;
        if let Some(h) = &holding {
            h.monitor.abort();
        }
        self.state.send_replace(LockState::Idle);
        let etcd = self.etcd.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Some(h) = holding {
                        if let Err(e) = crate::acquire::release_lock(&etcd, h.handle).await {
                            tracing::warn!(error = %e, "release after the last lock handle was dropped failed");
                        }
                    }
                    if let Some(s) = session {
                        revoke(s).await;
                    }
                });
            }
            Err(_) => tracing::warn!(
                lock = %self.name,
                "last lock handle dropped outside a tokio runtime; its key and lease expire with the TTL"
            ),
        }
    }
}

/// Whether etcd refused a request because the lease it names does not exist.
fn is_lease_not_found(e: &Error) -> bool {
    matches!(e, Error::Etcd { source, .. } if source.to_string().contains("lease not found"))
}

/// Revokes a session this handle kept; a failure is logged (the lease then expires on its own).
async fn revoke(session: Session) {
    let lease = session.lease();
    if let Err(e) = session.revoke().await {
        tracing::warn!(%lease, error = %e, "lease revoke failed; it expires with its TTL");
    }
}

/// [`revoke`] on its own task, where there is a runtime to run it.
fn revoke_in_background(session: Session) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(revoke(session));
    }
}

/// Follows a held lock with the library's one hold loop and publishes it on `state`:
/// `Held` with every new deadline, `Lost` with the reason.
fn spawn_monitor(
    etcd: Etcd,
    me: Contender,
    lease: Option<(watch::Receiver<LeaseState>, std::time::Duration)>,
    state: watch::Sender<LockState>,
) -> JoinHandle<()> {
    let token = me.token();
    let held = |deadline| LockState::Held {
        token,
        key: me.key.clone(),
        lease: me.lease,
        deadline,
    };
    // Without a trusted lease there is nothing to trust: the deadline is now.
    let initial = lease
        .as_ref()
        .and_then(|(l, _)| l.borrow().deadline())
        .unwrap_or_else(crate::clock::now);
    state.send_replace(held(initial));
    tokio::spawn(async move {
        let reason = match lease {
            Some((lease, check_every)) => {
                crate::hold::follow_hold(&etcd, &me, lease, check_every, |deadline| {
                    state.send_if_modified(|cur| match cur {
                        LockState::Held { deadline: d, .. } if *d != deadline => {
                            *d = deadline;
                            true
                        }
                        _ => false,
                    });
                })
                .await
            }
            None => {
                audit::lost(&me, LossReason::DeadlineMissed.as_str());
                LossReason::DeadlineMissed
            }
        };
        state.send_replace(LockState::Lost { token, reason });
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
