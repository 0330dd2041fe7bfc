//! Waiting for our turn: watch the predecessor, and after its deletion read who is ahead and
//! whether it released cleanly, waiting out the lock-delay when it did not.

use std::time::Duration;

use tokio::time::Instant;

use super::history::vanished_since_release;
use super::reads::{after_deletion, predecessor, queue_read, wait_for_deletion, Record};
use crate::audit;
use crate::etcd::Etcd;
use crate::{Contender, Error, Predecessor, Result};

/// Waits until `me` is first in line, watching only the predecessor each time, with no
/// lock-delay. Fails with [`Error::KeyLost`] if our own key disappears, [`Error::Timeout`] at
/// `deadline`.
pub async fn wait_turn(etcd: &Etcd, me: &Contender, deadline: Option<Instant>) -> Result<()> {
    wait_turn_observed(etcd, me, deadline, Duration::ZERO, |_| async {}).await
}

/// What a waiter is doing, reported to the observer of [`wait_turn_observed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    /// Queued behind a predecessor, watching it.
    Queued,
    /// First in line after a predecessor that vanished without a release record: waiting out
    /// the lock-delay until `until` before holding.
    LockDelay {
        /// The predecessor's key.
        predecessor: String,
        /// When the delay ends.
        until: Instant,
    },
}

/// [`wait_turn`], with a lock-delay, calling `on_wait` each time it starts waiting for a
/// predecessor (to report the queue position, say) or starts a lock-delay.
///
/// When the predecessor's deletion makes us first in line, the same linearizable read that
/// confirms our key tells whether it released cleanly (the release record names its
/// create_revision). If it did not
/// (it crashed, was cut off, its lease expired or was revoked early), we wait `lock_delay`
/// before holding, so that a holder whose lease etcd revoked early has stopped acting first;
/// then our key is confirmed with a linearizable read. `Duration::ZERO` turns the delay off.
pub async fn wait_turn_observed<F, Fut>(
    etcd: &Etcd,
    me: &Contender,
    deadline: Option<Instant>,
    lock_delay: Duration,
    mut on_wait: F,
) -> Result<()>
where
    F: FnMut(WaitEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let timed_out = || Error::Timeout(started.elapsed(), me.name.clone());
    if me.follows_clean_release {
        return Ok(());
    }
    let (mut next, record) = hand_off_read(etcd, me).await?;
    // First in line at once: the lock looked free, but its last holder may have vanished
    // without releasing (an early revocation) just before we came, and may still act.
    let mut unclean = None;
    if next.is_none() && !lock_delay.is_zero() {
        unclean = vanished_since_release(etcd, me, record.map_or(0, |r| r.mod_revision)).await;
    }
    loop {
        if let Some(vanished) = unclean.take() {
            let until = Instant::now() + lock_delay;
            audit::lock_delay(me, &vanished, lock_delay);
            on_wait(WaitEvent::LockDelay {
                predecessor: vanished,
                until,
            })
            .await;
            match deadline {
                Some(d) if d < until => {
                    tokio::time::sleep_until(d).await;
                    return Err(timed_out());
                }
                _ => tokio::time::sleep_until(until).await,
            }
            // Our own key (or lease) may have gone while we waited.
            next = predecessor(etcd, me).await?;
        }
        let Some(pred) = next else { return Ok(()) };
        tracing::debug!(key = %me.key, predecessor = %pred.key, "waiting for predecessor");
        on_wait(WaitEvent::Queued).await;
        match wait_for_deletion(etcd, &pred.key, pred.read_at + 1, deadline).await {
            Ok(_) => {}
            Err(Error::Timeout(..)) => return Err(timed_out()),
            Err(e) => return Err(e),
        }
        let (ahead, clean) = read_after_deletion(etcd, me, &pred).await?;
        next = ahead;
        if next.is_none() && !lock_delay.is_zero() && !clean {
            unclean = Some(pred.key);
        }
    }
}

/// After our predecessor's deletion: who is ahead of us now, and whether it released cleanly
/// (see [`after_deletion`]). Where our role may not read the release record, the queue alone is
/// read and the hand-over counts as unclean (so a lock-delay applies).
///
/// Not a serializable read at the deletion's revision R, tempting as that is (an MVCC snapshot
/// never changes, and no key ahead of us can appear after R): R can lie far in the past when
/// the event arrives — a slow link, a watch replaying history after a reconnect — and our own
/// key may have been deleted since (an expired or early-revoked lease). At R it still exists,
/// so the waiter would hold a key that is gone.
async fn read_after_deletion(
    etcd: &Etcd,
    me: &Contender,
    pred: &Predecessor,
) -> Result<(Option<Predecessor>, bool)> {
    match after_deletion(etcd, me, pred).await {
        Err(e) if crate::etcd::is_permission_denied(&e) => {
            warn_record_unreadable(me);
            Ok((queue_read(etcd, me, false, "hand_off_read").await?.0, false))
        }
        other => other,
    }
}

fn warn_record_unreadable(me: &Contender) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            key = %me.record_key(),
            "cannot read the release record (permission denied): every hand-over \
             waits out the lock-delay"
        )
    });
}

/// Before waiting: who is ahead of us, and the release record's mod_revision, in one
/// linearizable transaction that also checks our own key. Where our role may not read the
/// record, it reads as absent (so a lock-delay applies).
async fn hand_off_read(
    etcd: &Etcd,
    me: &Contender,
) -> Result<(Option<Predecessor>, Option<Record>)> {
    match queue_read(etcd, me, true, "hand_off_read").await {
        Err(e) if crate::etcd::is_permission_denied(&e) => {
            warn_record_unreadable(me);
            queue_read(etcd, me, false, "hand_off_read").await
        }
        other => other,
    }
}
