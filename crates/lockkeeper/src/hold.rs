//! The one hold loop. After an acquisition, one future follows everything that can end the
//! holding — keepalive answers (each moves the local deadline), the deadline itself, a watch on
//! our key and a periodic linearizable check of it — and reports every deadline extension to its
//! caller as it happens. The `DistributedLock` monitor and the sidecar agent both run it; they
//! differ only in where they publish what it reports.

use std::pin::pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::etcd::Etcd;
use crate::session::LeaseState;
use crate::{audit, queue, Backoff, Contender, LossReason};

/// Follows a held lock until it is lost and returns why (audited here, once): the hold loop of
/// [`DistributedLock`](crate::DistributedLock), for callers that hold through the
/// [`queue`](crate::queue) primitives. `lease` is the holder's
/// [`Session::subscribe`](crate::Session::subscribe); `check_every` is the period of the
/// linearizable check of our key (the library uses the keepalive interval). `on_deadline` is
/// called with the first deadline and again on every extension, before anything waits on it,
/// so whoever publishes it never shows an older one. The periodic check runs beside the other
/// signals with each read bounded by `check_every`: a hung read never delays noticing a TTL ≤ 0
/// answer, a deletion of our key or the deadline.
pub async fn follow_hold(
    etcd: &Etcd,
    me: &Contender,
    mut lease: watch::Receiver<LeaseState>,
    check_every: Duration,
    mut on_deadline: impl FnMut(Instant),
) -> LossReason {
    let reason = async {
        let mut key_gone = pin!(key_deleted(etcd, me));
        let mut check = pin!(periodic_check(etcd, me, check_every));
        let mut published = None;
        loop {
            let deadline = match *lease.borrow_and_update() {
                LeaseState::Alive { deadline, .. } => deadline,
                LeaseState::Lost(loss) => return loss.into(),
            };
            if published != Some(deadline) {
                on_deadline(deadline);
                published = Some(deadline);
            }
            tokio::select! {
                biased;
                _ = crate::clock::sleep_until(deadline) => return LossReason::DeadlineMissed,
                changed = lease.changed() => if changed.is_err() {
                    return LossReason::DeadlineMissed;
                },
                () = &mut key_gone => return LossReason::KeyDeleted,
                loss = &mut check => return loss,
            }
        }
    }
    .await;
    audit::lost(me, reason.as_str());
    reason
}

/// Resolves when a watch sees our key deleted (watch failures are retried from the revision
/// after our creation, so no deletion is missed).
async fn key_deleted(etcd: &Etcd, me: &Contender) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
    loop {
        match crate::wait_for_deletion(etcd, &me.key, me.revision + 1, None).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(key = %me.key, error = %e, "watch on our key failed; retrying");
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
    }
}

/// Every `every`, reads our key linearizably; resolves when it is gone or was recreated.
async fn periodic_check(etcd: &Etcd, me: &Contender, every: Duration) -> LossReason {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match timeout(every, queue::read_key(etcd, &me.key)).await {
            Ok(Ok((Some(rev), _))) if rev == me.revision => {}
            Ok(Ok(_)) => return LossReason::KeyChanged,
            Ok(Err(e)) => {
                tracing::warn!(key = %me.key, error = %e, "periodic ownership check failed")
            }
            Err(_) => tracing::warn!(
                key = %me.key,
                after_ms = every.as_millis() as u64,
                "periodic ownership check did not answer in time"
            ),
        }
    }
}
