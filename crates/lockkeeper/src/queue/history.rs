//! The lock-delay's question for a contender that finds the lock free: did the last holder
//! leave without releasing? Answered from the queue's history since the last clean release.

use etcd_client::{EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};

use crate::etcd::Etcd;
use crate::{Contender, Error, Result};

/// For a contender that found the lock free: did the last holder leave without releasing (an
/// early revocation, a crash) — and so may still act? Returns the key that vanished.
///
/// Only the last departure matters: whoever held after an earlier unclean one waited out the
/// lock-delay itself. If the last clean release (at revision `released_at`) came after our own
/// key was created, it was the last departure unless a key still queued ahead of us outlived
/// it. Otherwise, a key queued ahead of us when our key was created, or any deletion in the
/// queue between that release and our key, was a holder that left without a record. History
/// compacted away is judged by the queue at the compaction point; what cannot be read in time
/// counts as unclean.
pub(super) async fn vanished_since_release(
    etcd: &Etcd,
    me: &Contender,
    released_at: i64,
) -> Option<String> {
    let check = async {
        if released_at >= me.revision {
            return match queued_at(etcd, me, released_at).await {
                Err(e) if revision_compacted(&e) => {
                    Ok(Some(format!("{}(history compacted)", me.lock_prefix)))
                }
                other => other,
            };
        }
        // Not even when our key is the first write after the clean release: someone queued
        // ahead of us then may have vanished since (only `enqueue`, which sees the queue at our
        // key's creation, can tell that nobody was ahead: `Contender::follows_clean_release`).
        // Few revisions in between (the usual case): was anyone queued ahead of us at any of
        // them? One transaction of past reads. Otherwise replay the history with a watch,
        // which etcd serves from its next sync pass (up to 100 ms later).
        if released_at > 0 && me.revision - released_at < SNAPSHOT_SCAN_MAX {
            match queued_between(etcd, me, released_at).await {
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::debug!(key = %me.key, error = %e, "past reads failed; replaying the history")
                }
            }
        }
        let (ahead_of_us, replay) = tokio::join!(
            queued_at(etcd, me, me.revision),
            deletions_before_us(etcd, me, released_at + 1)
        );
        match ahead_of_us? {
            Some(key) => Ok(Some(key)),
            None => replay,
        }
    };
    match tokio::time::timeout(etcd.request_timeout(), check).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!(key = %me.key, error = %e, "cannot read the queue's history; assuming an unclean hand-over");
            Some(format!("{}(history unreadable)", me.lock_prefix))
        }
        Err(_) => Some(format!("{}(history not read in time)", me.lock_prefix)),
    }
}

/// Most past reads [`queued_between`] puts in one transaction (etcd's default limit is 128 ops).
const SNAPSHOT_SCAN_MAX: i64 = 100;

/// A key queued ahead of us at any revision from `from` to our own key's creation, by one
/// transaction of serializable reads at each of those revisions (past snapshots never change).
async fn queued_between(etcd: &Etcd, me: &Contender, from: i64) -> Result<Option<String>> {
    let ops: Vec<TxnOp> = (from..=me.revision)
        .map(|rev| {
            TxnOp::get(
                me.lock_prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_max_create_revision(me.revision - 1)
                        .with_revision(rev)
                        .with_serializable()
                        .with_keys_only()
                        .with_limit(1),
                ),
            )
        })
        .collect();
    let txn = Txn::new().and_then(ops);
    let resp = etcd
        .call("history_read", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()),
        _ => None,
    }))
}

/// The first key deleted from the queue between revision `from` and our own key's creation.
async fn deletions_before_us(etcd: &Etcd, me: &Contender, mut from: i64) -> Result<Option<String>> {
    loop {
        if from > me.revision {
            // Compacted past our own creation: what happened before it is unknowable.
            return Ok(Some(format!("{}(history compacted)", me.lock_prefix)));
        }
        match replay_deletions(etcd, me, from).await? {
            Replay::Clean => return Ok(None),
            Replay::Deleted(key) => return Ok(Some(key)),
            Replay::Compacted(at) => {
                // Whatever was queued at the compaction point is gone now (we are first).
                if let Some(key) = queued_at(etcd, me, at).await? {
                    return Ok(Some(key));
                }
                from = at + 1;
            }
        }
    }
}

/// A read at a revision that compaction removed.
fn revision_compacted(e: &Error) -> bool {
    matches!(
        e,
        Error::Etcd { source: etcd_client::Error::GRpcStatus(s), .. }
            if s.message().contains("compacted")
    )
}

enum Replay {
    Clean,
    Deleted(String),
    Compacted(i64),
}

/// Watches the queue from `from` until our own key's creation: the first deletion, if any.
async fn replay_deletions(etcd: &Etcd, me: &Contender, from: i64) -> Result<Replay> {
    let prefix = me.lock_prefix.clone();
    let mut stream = etcd
        .call("watch", |mut c| {
            let p = prefix.clone();
            async move {
                c.watch(
                    p,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(from.max(1)),
                    ),
                )
                .await
            }
        })
        .await?;
    loop {
        let msg = stream.message().await.map_err(Error::etcd("watch"))?;
        let Some(resp) = msg else {
            return Err(Error::Lost("the history watch ended"));
        };
        if resp.canceled() {
            return match resp.compact_revision() {
                c if c > 0 => Ok(Replay::Compacted(c)),
                _ => Err(Error::Lost("the history watch was cancelled")),
            };
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if kv.mod_revision() >= me.revision {
                return Ok(Replay::Clean);
            }
            if ev.event_type() == EventType::Delete {
                return Ok(Replay::Deleted(
                    String::from_utf8_lossy(kv.key()).into_owned(),
                ));
            }
        }
    }
}

/// A key queued ahead of us at revision `at` (a past, serializable read), if any.
async fn queued_at(etcd: &Etcd, me: &Contender, at: i64) -> Result<Option<String>> {
    let opts = GetOptions::new()
        .with_prefix()
        .with_max_create_revision(me.revision - 1)
        .with_revision(at)
        .with_serializable()
        .with_limit(1);
    let prefix = me.lock_prefix.clone();
    let resp = etcd
        .call("get", |mut c| {
            let (p, o) = (prefix.clone(), opts.clone());
            async move { c.get(p, Some(o)).await }
        })
        .await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()))
}
