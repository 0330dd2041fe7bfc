//! Leaving the queue: the ownership-checked delete that writes the release record.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::audit;
use crate::etcd::Etcd;
use crate::{Contender, Result};

/// What [`release`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Our key was deleted: the lock is free for the next contender.
    Released,
    /// Our key was already gone or belongs to someone else now; nothing was deleted.
    NotOwner,
}

/// Deletes our key only if its create_revision is still ours, and in the same transaction
/// writes the release record naming that create_revision, so the next contender knows the
/// hand-over was clean and skips the lock-delay. Never deletes anyone else's key. Where the
/// record may not be written (an etcd role covering only the queue range), falls back to the
/// plain ownership-checked delete and says so once in the log.
pub async fn release(etcd: &Etcd, me: &Contender) -> Result<ReleaseOutcome> {
    let delete = |with_record: bool| {
        let mut ops = vec![TxnOp::delete(me.key.clone(), None)];
        if with_record {
            ops.push(TxnOp::put(me.record_key(), me.revision.to_string(), None));
        }
        Txn::new()
            .when([Compare::create_revision(
                me.key.clone(),
                CompareOp::Equal,
                me.revision,
            )])
            .and_then(ops)
    };
    let run = |txn: Txn| {
        etcd.call("release", move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
    };
    let resp = match run(delete(true)).await {
        Err(e) if crate::etcd::is_permission_denied(&e) => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                tracing::warn!(
                    key = %me.record_key(),
                    "cannot write the release record (permission denied): releasing without it, \
                     so the next holder waits out its lock-delay"
                )
            });
            run(delete(false)).await?
        }
        other => other?,
    };
    let outcome = if resp.succeeded() {
        ReleaseOutcome::Released
    } else {
        ReleaseOutcome::NotOwner
    };
    audit::released(me, outcome);
    Ok(outcome)
}
