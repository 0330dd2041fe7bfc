//! One acquisition from start to finish: `acquire_lock` and `release_lock`, the functions of the
//! original design, built on the [`queue`](crate::queue) primitives.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::etcd::Etcd;
use crate::session::{LeaseState, RevokeOutcome, Session, SessionOptions};
use crate::{
    audit, default_identity, queue, Contender, Error, FencingToken, LeaseId, ReleaseOutcome,
    Result, WaitEvent, DEFAULT_PREFIX,
};

/// How to acquire a lock: key prefix, identity, lease TTL and renewal, timeout.
#[derive(Clone, Debug)]
pub struct LockOptions {
    prefix: String,
    identity: String,
    session: SessionOptions,
    timeout: Option<Duration>,
    lease: Option<LeaseId>,
    lock_delay: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LockOptions {
    /// Defaults: prefix [`DEFAULT_PREFIX`], identity from [`default_identity`], TTL
    /// [`DEFAULT_TTL`](crate::DEFAULT_TTL), renewed, wait without timeout.
    pub fn new() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            identity: default_identity(),
            session: SessionOptions::default(),
            timeout: None,
            lease: None,
            lock_delay: None,
        }
    }

    /// Key prefix (default `/locks/`); the contender key is `{prefix}{name}/{lease hex}`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The value written under our key, shown to others as the holder.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// Session lease TTL (default [`DEFAULT_TTL`](crate::DEFAULT_TTL)).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.session = SessionOptions::new(ttl).with_renewal(self.session.renews());
        self
    }

    /// Full session settings (TTL, keepalive interval, safety margin, renewal).
    pub fn with_session(mut self, session: SessionOptions) -> Self {
        self.session = session;
        self
    }

    /// Keep the lease alive while holding (default true). Without it the lock ends one TTL
    /// after the last keepalive sent while waiting.
    pub fn with_auto_renew(mut self, renew: bool) -> Self {
        self.session = self.session.with_renewal(renew);
        self
    }

    /// Give up waiting after this long; nothing is left behind in etcd.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Attach the key to an existing lease instead of granting one. The lock follows that
    /// lease like its own (keeps it alive while renewal is on, and trusts it only until the
    /// local deadline of its own last acknowledged keepalive), but never revokes it.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How long to wait before holding when the predecessor vanished without a release record
    /// (it crashed, was cut off, or etcd revoked its lease, possibly early). Default: the
    /// session's safety margin; `Duration::ZERO` turns it off. A clean release hands over at once.
    pub fn with_lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = Some(delay);
        self
    }

    /// The lock-delay for a lease granted with `granted` (see [`LockOptions::with_lock_delay`]).
    pub fn lock_delay_for(&self, granted: Duration) -> Duration {
        self.lock_delay
            .unwrap_or_else(|| self.session.safety_margin_for(granted))
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The identity written under our key.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The session settings.
    pub fn session(&self) -> &SessionOptions {
        &self.session
    }

    /// The acquire timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The existing lease given with [`LockOptions::with_lease`], if any.
    pub fn lease(&self) -> Option<LeaseId> {
        self.lease
    }
}

/// Progress of one acquisition, for observers (the sidecar's `/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Talking to etcd: granting the lease, enqueueing.
    Enqueueing,
    /// Queued behind `position` contenders; `holder` is the current holder's identity.
    Queued {
        /// Our key.
        key: String,
        /// Our lease.
        lease: LeaseId,
        /// Contenders ahead of us.
        position: u64,
        /// The holder's identity, when known.
        holder: Option<String>,
    },
    /// First in line, waiting out the lock-delay after a predecessor that vanished without
    /// releasing.
    LockDelay {
        /// Our key.
        key: String,
        /// Our lease.
        lease: LeaseId,
        /// The predecessor's key.
        predecessor: String,
        /// When the delay ends.
        until: Instant,
    },
}

/// A lock held by [`acquire_lock`]: the key, lease and fencing token, and the session if this
/// acquisition granted the lease.
#[derive(Debug)]
pub struct LockHandle {
    contender: Contender,
    session: Option<Session>,
    acquired_at: Instant,
    waited: Duration,
}

impl LockHandle {
    /// The fencing token: our key's create_revision. Strictly increases from holder to holder.
    pub fn token(&self) -> FencingToken {
        self.contender.token()
    }

    /// Our key in etcd.
    pub fn key(&self) -> &str {
        &self.contender.key
    }

    /// The lease our key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.contender.lease
    }

    /// The queue record (name, key, lease, revision, identity).
    pub fn contender(&self) -> &Contender {
        &self.contender
    }

    /// The session following our lease (granted by this acquisition, or attached to the lease
    /// given with [`LockOptions::with_lease`]).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// When the lock was acquired (monotonic).
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    /// How long the acquisition waited in the queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The local deadline of the safety rule; None once the lease is no longer trusted.
    pub fn deadline(&self) -> Option<Instant> {
        self.session.as_ref().and_then(|s| s.state().deadline())
    }

    /// True while our lease is trusted locally (no network call). Use
    /// [`crate::DistributedLock::is_locked`] to confirm with etcd.
    pub fn is_trusted(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.is_trusted())
    }

    pub(crate) fn into_parts(self) -> (Contender, Option<Session>) {
        (self.contender, self.session)
    }

    /// Takes the session out of the handle, for a caller that keeps it beyond this hold (and
    /// so also revokes it itself); [`release_lock`] then deletes the key and revokes nothing.
    pub(crate) fn take_session(&mut self) -> Option<Session> {
        self.session.take()
    }
}

/// Acquires `name`: grants (or reuses) a lease, enqueues, waits in FIFO order watching only the
/// predecessor. On timeout or error nothing is left behind: our key is deleted and a lease we
/// granted is revoked.
pub async fn acquire_lock(etcd: &Etcd, name: &str, opts: &LockOptions) -> Result<LockHandle> {
    Box::pin(acquire_observed(etcd, name, opts, None, None)).await
}

/// [`acquire_lock`], reporting progress on `progress`, and on `kept`'s lease when given and
/// trusted: a session the caller keeps between acquisitions. The handle then carries no
/// session, and cleaning up after a failure deletes our key but leaves that lease alone.
pub(crate) async fn acquire_observed(
    etcd: &Etcd,
    name: &str,
    opts: &LockOptions,
    progress: Option<&watch::Sender<Progress>>,
    kept: Option<&Session>,
) -> Result<LockHandle> {
    crate::lock_prefix(&opts.prefix, name)?;
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| started + t);
    if let Some(p) = progress {
        p.send_replace(Progress::Enqueueing);
    }
    let kept = kept.filter(|s| s.is_trusted());
    let session = match kept {
        Some(_) => None,
        None => {
            // Keep the lease alive while we wait; whether to keep renewing once held is decided
            // below.
            let waiting = opts.session.clone().with_renewal(true);
            let session = async {
                match opts.lease {
                    Some(lease) => Session::attach(etcd, lease, &waiting).await,
                    None => Session::grant(etcd, &waiting).await,
                }
            };
            Some(queue::bounded(deadline, name, started, session).await?)
        }
    };
    let lease = kept
        .or(session.as_ref())
        .map(Session::lease)
        .expect("a lease either kept or given or granted");
    audit::attempt(name, &opts.identity, lease, opts.timeout);
    // Until the lock is ours, anything that ends this future early (a caller's timeout, a
    // dropped task) must not leave our key in the queue, where it would become the owner and
    // block everyone until the lease expires: the guard cleans up in the background.
    let key = crate::lock_prefix(&opts.prefix, name).map(|p| format!("{p}{lease}"))?;
    let mut pending = Pending {
        etcd: etcd.clone(),
        key: Some(key),
        lease,
        session,
    };

    let queued = queue::bounded(deadline, name, started, async {
        let session = pending.session.as_ref().or(kept);
        let (me, owner) = queue::enqueue(etcd, &opts.prefix, name, lease, &opts.identity).await?;
        let granted = session.map_or(opts.session.ttl(), Session::granted_ttl);
        let delay = opts.lock_delay_for(granted);
        // First in line at once needs no wait, unless the lock-delay has to look at how the
        // last holder left (which the enqueue may already have answered).
        let first = owner.as_ref().map(|o| o.revision) == Some(me.revision);
        if !(me.follows_clean_release || first && delay.is_zero()) {
            let me = &me;
            let report = |event: WaitEvent| async move {
                let Some(p) = progress else { return };
                match event {
                    WaitEvent::Queued => {
                        if let Ok((position, owner)) = queue::queue_position(etcd, me).await {
                            p.send_replace(Progress::Queued {
                                key: me.key.clone(),
                                lease,
                                position,
                                holder: owner.map(|o| o.identity),
                            });
                        }
                    }
                    WaitEvent::LockDelay { predecessor, until } => {
                        p.send_replace(Progress::LockDelay {
                            key: me.key.clone(),
                            lease,
                            predecessor,
                            until,
                        });
                    }
                }
            };
            wait_turn_while_trusted(etcd, me, session, deadline, delay, report).await?;
        }
        Ok(me)
    })
    .await;

    let (key, session) = pending.disarm();
    match queued {
        Ok(me) => {
            let waited = started.elapsed();
            if let Some(s) = session.as_ref().or(kept) {
                if !s.is_trusted() {
                    cleanup(etcd, key, lease, session).await;
                    return Err(Error::LeaseExpired { lease: lease.0 });
                }
            }
            if let Some(s) = &session {
                if !opts.session.renews() {
                    s.stop_renewing();
                }
            }
            audit::acquired(&me, waited);
            Ok(LockHandle {
                contender: me,
                session,
                acquired_at: Instant::now(),
                waited,
            })
        }
        Err(e) => {
            if matches!(e, Error::Timeout(..)) {
                audit::timed_out(name, &opts.identity, started.elapsed());
            }
            cleanup(etcd, key, lease, session).await;
            Err(e)
        }
    }
}

/// An acquisition under way: our key (on `lease`) and the session this acquisition started,
/// cleaned up in the background if the acquiring future is dropped before it finished.
struct Pending {
    etcd: Etcd,
    key: Option<String>,
    lease: LeaseId,
    session: Option<Session>,
}

impl Pending {
    /// The acquisition finished (either way): hand the key and session back, nothing to undo.
    fn disarm(&mut self) -> (Option<String>, Option<Session>) {
        (self.key.take(), self.session.take())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (key, session) = self.disarm();
        if key.is_none() && session.is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let etcd = self.etcd.clone();
                let lease = self.lease;
                rt.spawn(async move { cleanup(&etcd, key, lease, session).await });
            }
            Err(_) => tracing::warn!(
                "lock acquisition dropped outside a tokio runtime; its key expires with its lease"
            ),
        }
    }
}

/// Waits for our turn (see [`wait_turn_observed`](crate::queue::wait_turn_observed)), but gives
/// up with [`Error::LeaseExpired`] as soon as `session`'s lease can no longer be trusted, also
/// during a lock-delay. With no session (a lease nobody here follows) it is `wait_turn_observed`
/// itself.
pub async fn wait_turn_while_trusted<F, Fut>(
    etcd: &Etcd,
    me: &Contender,
    session: Option<&Session>,
    deadline: Option<Instant>,
    lock_delay: Duration,
    on_wait: F,
) -> Result<()>
where
    F: FnMut(WaitEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let turn = queue::wait_turn_observed(etcd, me, deadline, lock_delay, on_wait);
    let Some(session) = session else {
        return turn.await;
    };
    let mut lease = session.subscribe();
    tokio::select! {
        r = turn => r,
        _ = lease.wait_for(|s| matches!(s, LeaseState::Lost(_))) => {
            Err(Error::LeaseExpired { lease: me.lease.0 })
        }
    }
}

/// Best effort: delete our key (on `lease`) if it exists, revoke the session this acquisition
/// started (a kept or external lease is left alone).
async fn cleanup(etcd: &Etcd, key: Option<String>, lease: LeaseId, session: Option<Session>) {
    if let Some(key) = key {
        let k = key.clone();
        // Revoking the lease deletes the key too; deleting it explicitly also covers a kept or
        // external lease. Only a key attached to our lease is ours, so compare the lease.
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::lease(
                k.clone(),
                etcd_client::CompareOp::Equal,
                lease.0,
            )])
            .and_then([etcd_client::TxnOp::delete(k, None)]);
        if let Err(e) = etcd
            .call("cleanup", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
        {
            tracing::warn!(key, error = %e, "could not delete our key after a failed acquire");
        }
    }
    if let Some(s) = session {
        if let Err(e) = s.revoke().await {
            tracing::warn!(error = %e, "could not revoke our lease after a failed acquire; it expires with its TTL");
        }
    }
}

/// Releases a lock from [`acquire_lock`]: deletes our key only if it is still ours, then
/// revokes the lease if this acquisition granted it. Releasing a lock we no longer own returns
/// [`ReleaseOutcome::NotOwner`] and deletes nothing.
pub async fn release_lock(etcd: &Etcd, handle: LockHandle) -> Result<ReleaseOutcome> {
    let (me, session) = handle.into_parts();
    if let Some(s) = &session {
        s.mark_lost(crate::session::LeaseLoss::Revoked);
    }
    let outcome = queue::release(etcd, &me).await;
    if let Some(s) = session {
        match s.revoke().await {
            Ok(RevokeOutcome::Revoked | RevokeOutcome::AlreadyGone | RevokeOutcome::NotOurs) => {}
            Err(e) => {
                tracing::warn!(lease = %me.lease, error = %e, "lease revoke failed; it expires with its TTL")
            }
        }
    }
    outcome
}
