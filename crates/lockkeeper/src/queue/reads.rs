//! Reading and joining the queue: enqueue, who is ahead, and waiting for a key's deletion.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::time::{timeout_at, Instant};

use super::keys::record_key_of;
use crate::etcd::Etcd;
use crate::{lock_prefix, Backoff, Contender, Error, LeaseId, Owner, Result};

/// Puts our key in the queue (or finds it there) and reads the current owner, in one transaction.
/// Returns our contender record and the owner at that revision.
///
/// The same transaction reads the release record, so a contender whose key is the first write
/// after a clean release, with nobody ahead, knows at once that no holder vanished before it
/// ([`Contender::follows_clean_release`]); a role that may not read the record enqueues
/// without it.
pub async fn enqueue(
    etcd: &Etcd,
    prefix: &str,
    name: &str,
    lease: LeaseId,
    identity: &str,
) -> Result<(Contender, Option<Owner>)> {
    match enqueue_reading(etcd, prefix, name, lease, identity, true).await {
        Err(e) if crate::etcd::is_permission_denied(&e) => {
            enqueue_reading(etcd, prefix, name, lease, identity, false).await
        }
        other => other,
    }
}

async fn enqueue_reading(
    etcd: &Etcd,
    prefix: &str,
    name: &str,
    lease: LeaseId,
    identity: &str,
    with_record: bool,
) -> Result<(Contender, Option<Owner>)> {
    let lock_prefix = lock_prefix(prefix, name)?;
    let key = format!("{lock_prefix}{lease}");
    let owner_get = TxnOp::get(
        lock_prefix.clone(),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    );
    let mut created = vec![
        TxnOp::put(
            key.clone(),
            identity.to_owned(),
            Some(PutOptions::new().with_lease(lease.0)),
        ),
        owner_get.clone(),
    ];
    let mut found = vec![TxnOp::get(key.clone(), None), owner_get];
    if with_record {
        let record_get = TxnOp::get(record_key_of(&lock_prefix), None);
        created.push(record_get.clone());
        found.push(record_get);
    }
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then(created)
        .or_else(found);
    let resp = etcd
        .call("enqueue", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    let ops = resp.op_responses();
    let revision = if resp.succeeded() {
        resp.header().map(|h| h.revision()).unwrap_or_default()
    } else {
        let existing = match ops.first() {
            Some(TxnOpResponse::Get(g)) => {
                g.kvs().first().map(|kv| (kv.create_revision(), kv.lease()))
            }
            _ => None,
        };
        match existing {
            // Our own key from an earlier enqueue on this lease: adopt it.
            Some((rev, on)) if on == lease.0 => rev,
            // A key of that name on another lease (or none) is not ours to use.
            Some(_) => return Err(Error::KeyTaken(key)),
            None => 0,
        }
    };
    if revision == 0 {
        // Our key vanished between the compare and the read: the lease just expired.
        return Err(Error::KeyLost(key));
    }
    let owner = match ops.get(1) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(Owner::from_kv),
        _ => None,
    };
    let released_at = match ops.get(2) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.mod_revision()),
        _ => None,
    };
    let first = owner.as_ref().map(|o| o.revision) == Some(revision);
    Ok((
        Contender {
            name: name.to_owned(),
            lock_prefix,
            key,
            lease,
            revision,
            identity: identity.to_owned(),
            follows_clean_release: first && released_at.is_some_and(|r| revision == r + 1),
        },
        owner,
    ))
}

/// The contender directly ahead of us, and the revision at which it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predecessor {
    /// Its key.
    pub key: String,
    /// Its create_revision.
    pub revision: i64,
    /// The store revision of the read; watch from the next one.
    pub read_at: i64,
}

/// Reads our predecessor, checking in the same transaction that our own key still exists
/// with our create_revision. `Ok(None)` means nobody is ahead of us: we hold the lock.
pub async fn predecessor(etcd: &Etcd, me: &Contender) -> Result<Option<Predecessor>> {
    Ok(queue_read(etcd, me, false, "predecessor").await?.0)
}

/// The release record as read: when it was last written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Record {
    pub(super) mod_revision: i64,
}

/// The read of the newest key ahead of ours (our predecessor), if any.
fn newest_ahead(me: &Contender) -> TxnOp {
    TxnOp::get(
        me.lock_prefix.clone(),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_max_create_revision(me.revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1),
        ),
    )
}

/// Reads who is ahead of us and (optionally) the release record, linearizably, if our key is
/// still ours; fails with [`Error::KeyLost`] if it is not.
pub(super) async fn queue_read(
    etcd: &Etcd,
    me: &Contender,
    with_record: bool,
    op: &'static str,
) -> Result<(Option<Predecessor>, Option<Record>)> {
    let mut ops = vec![newest_ahead(me)];
    if with_record {
        ops.push(TxnOp::get(me.record_key(), None));
    }
    let txn = Txn::new()
        .when([Compare::create_revision(
            me.key.clone(),
            CompareOp::Equal,
            me.revision,
        )])
        .and_then(ops);
    let resp = etcd
        .call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        return Err(Error::KeyLost(me.key.clone()));
    }
    let read_at = resp.header().map(|h| h.revision()).unwrap_or_default();
    let mut gets = resp.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(mut g) => g.take_kvs(),
        _ => Vec::new(),
    });
    let ahead = gets.next().unwrap_or_default();
    let record = gets.next().unwrap_or_default().first().map(|kv| Record {
        mod_revision: kv.mod_revision(),
    });
    let ahead = ahead.first().map(|kv| Predecessor {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        revision: kv.create_revision(),
        read_at,
    });
    Ok((ahead, record))
}

/// After the deletion of `pred`, the newest key that was ahead of ours: who is ahead of us now
/// and whether `pred` released cleanly, in one linearizable transaction that also checks our
/// own key; fails with [`Error::KeyLost`] if our key is gone.
///
/// The common case costs etcd two point reads: a release record naming `pred`'s create_revision
/// means `pred` released while it held the lock, so it was first in line; and as the newest key
/// ahead of ours (every key created later is behind ours) it leaves nobody ahead of us. Only
/// otherwise (a crashed, cut-off or timed-out predecessor, or one that released without a
/// record) does etcd range over the queue: the create-revision filter and the sort make it read
/// every key under the prefix, which costs milliseconds with a thousand waiters.
pub(super) async fn after_deletion(
    etcd: &Etcd,
    me: &Contender,
    pred: &Predecessor,
) -> Result<(Option<Predecessor>, bool)> {
    let ours = Compare::create_revision(me.key.clone(), CompareOp::Equal, me.revision);
    let released = Compare::value(me.record_key(), CompareOp::Equal, pred.revision.to_string());
    let txn = Txn::new().when([ours, released]).or_else([
        TxnOp::get(me.key.clone(), Some(GetOptions::new().with_keys_only())),
        newest_ahead(me),
        TxnOp::get(me.record_key(), None),
    ]);
    let resp = etcd
        .call("hand_off_read", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if resp.succeeded() {
        return Ok((None, true));
    }
    let read_at = resp.header().map(|h| h.revision()).unwrap_or_default();
    let mut gets = resp.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(mut g) => g.take_kvs(),
        _ => Vec::new(),
    });
    let mine = gets.next().unwrap_or_default();
    if !mine.iter().any(|kv| kv.create_revision() == me.revision) {
        return Err(Error::KeyLost(me.key.clone()));
    }
    let ahead = gets
        .next()
        .unwrap_or_default()
        .first()
        .map(|kv| Predecessor {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            read_at,
        });
    let clean = gets.next().unwrap_or_default().first().is_some_and(|kv| {
        std::str::from_utf8(kv.value())
            .ok()
            .and_then(|v| v.trim().parse().ok())
            == Some(pred.revision)
    });
    Ok((ahead, clean))
}

/// How many contenders are ahead of us (0 = we hold the lock) and who holds it.
/// (etcd's count-only reads ignore create-revision filters, so the keys are counted here.)
pub async fn queue_position(etcd: &Etcd, me: &Contender) -> Result<(u64, Option<Owner>)> {
    let txn = Txn::new().and_then([TxnOp::get(
        me.lock_prefix.clone(),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_max_create_revision(me.revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Ascend),
        ),
    )]);
    let resp = etcd
        .call("queue_position", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    let ahead = match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(mut g)) => g.take_kvs(),
        _ => Vec::new(),
    };
    let owner = ahead.first().map(Owner::from_kv);
    Ok((ahead.len() as u64, owner))
}

/// Waits until `key` is deleted, watching from `from_revision` so that a deletion at or after
/// that revision is never missed. Returns the revision of the deletion (or of the read that
/// found the key absent). Fails with [`Error::Timeout`] at `deadline`.
pub async fn wait_for_deletion(
    etcd: &Etcd,
    key: &str,
    from_revision: i64,
    deadline: Option<Instant>,
) -> Result<i64> {
    bounded(
        deadline,
        key,
        Instant::now(),
        wait_for_deletion_inner(etcd, key, from_revision),
    )
    .await
}

/// Runs `fut` until `deadline` (if any); past it, fails with [`Error::Timeout`] naming `what`
/// and the time since `started`.
pub(crate) async fn bounded<T>(
    deadline: Option<Instant>,
    what: &str,
    started: Instant,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => fut.await,
        Some(d) => match timeout_at(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(started.elapsed(), what.to_owned())),
        },
    }
}

async fn wait_for_deletion_inner(etcd: &Etcd, key: &str, mut from_revision: i64) -> Result<i64> {
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match watch_once(etcd, key, from_revision).await {
            Ok(WatchEnd::Deleted(rev)) => return Ok(rev),
            Ok(WatchEnd::Restart) | Err(_) => {
                // The watch broke (member died, compaction): look at the key directly, then
                // watch again from just after that read.
                match read_key(etcd, key).await {
                    Ok((None, rev)) => return Ok(rev),
                    Ok((Some(_), rev)) => from_revision = rev + 1,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "cannot re-read watched key; retrying");
                        tokio::time::sleep(retry.next_pause()).await;
                        continue;
                    }
                }
            }
        }
        retry.reset();
    }
}

enum WatchEnd {
    Deleted(i64),
    Restart,
}

async fn watch_once(etcd: &Etcd, key: &str, from_revision: i64) -> Result<WatchEnd> {
    let k = key.to_owned();
    let mut stream = etcd
        .call("watch", |mut c| {
            let k = k.clone();
            async move {
                c.watch(
                    k,
                    Some(WatchOptions::new().with_start_revision(from_revision)),
                )
                .await
            }
        })
        .await?;
    loop {
        let msg = stream.message().await.map_err(Error::etcd("watch"))?;
        let Some(resp) = msg else {
            return Ok(WatchEnd::Restart);
        };
        if resp.canceled() {
            tracing::debug!(
                key,
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
                "watch canceled"
            );
            return Ok(WatchEnd::Restart);
        }
        for ev in resp.events() {
            if ev.event_type() == EventType::Delete {
                let rev = ev.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
                return Ok(WatchEnd::Deleted(rev));
            }
        }
    }
}

/// Reads one key linearizably: its create_revision (if present) and the store revision.
pub async fn read_key(etcd: &Etcd, key: &str) -> Result<(Option<i64>, i64)> {
    let k = key.to_owned();
    let resp = etcd
        .call("get", |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        })
        .await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    Ok((resp.kvs().first().map(|kv| kv.create_revision()), rev))
}
