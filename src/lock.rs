//! The queue algorithm, key for key the same as etcd's own lock (`concurrency.Mutex`):
//! contender key `{prefix}{name}/{lease hex}`, lowest create_revision holds, each waiter
//! watches only its predecessor.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::{timeout_at, Instant};

use crate::audit;
use crate::etcd::Etcd;
use crate::{Error, FencingToken, LeaseId, Result};

/// Default key prefix, the same one `etcdctl lock` users usually pick.
pub const DEFAULT_PREFIX: &str = "/locks/";

/// The key range all contenders of one lock share: `{prefix}{name}/`.
pub fn lock_prefix(prefix: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("lock name is empty".into()));
    }
    if name.ends_with('/') {
        return Err(Error::InvalidArgument(format!(
            "lock name {name:?} must not end with '/'"
        )));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "lock name {name:?} contains control characters"
        )));
    }
    Ok(format!("{prefix}{name}/"))
}

/// One contender's place in a lock's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contender {
    /// Lock name.
    pub name: String,
    /// The lock's key range (`{prefix}{name}/`).
    pub lock_prefix: String,
    /// Our key: `{prefix}{name}/{lease hex}`.
    pub key: String,
    /// The session lease the key is attached to.
    pub lease: LeaseId,
    /// The key's create_revision: our place in the queue, and the fencing token once we hold.
    pub revision: i64,
    /// The value written under the key.
    pub identity: String,
}

impl Contender {
    /// The fencing token this contender holds the lock with (its key's create_revision).
    pub fn token(&self) -> FencingToken {
        FencingToken(self.revision)
    }
}

/// The current holder as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Holder's key.
    pub key: String,
    /// Holder's create_revision (its fencing token).
    pub revision: i64,
    /// Holder's identity (the key's value; empty for `etcdctl lock` holders).
    pub identity: String,
}

impl Owner {
    fn from_kv(kv: &KeyValue) -> Owner {
        Owner {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            identity: String::from_utf8_lossy(kv.value()).into_owned(),
        }
    }
}

/// Puts our key in the queue (or finds it there) and reads the current owner, in one transaction.
/// Returns our contender record and the owner at that revision.
pub async fn enqueue(
    etcd: &Etcd,
    prefix: &str,
    name: &str,
    lease: LeaseId,
    identity: &str,
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
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key.clone(),
                identity.to_owned(),
                Some(PutOptions::new().with_lease(lease.0)),
            ),
            owner_get.clone(),
        ])
        .or_else([TxnOp::get(key.clone(), None), owner_get]);
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
        match ops.first() {
            Some(TxnOpResponse::Get(g)) => g
                .kvs()
                .first()
                .map(|kv| kv.create_revision())
                .unwrap_or_default(),
            _ => 0,
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
    Ok((
        Contender {
            name: name.to_owned(),
            lock_prefix,
            key,
            lease,
            revision,
            identity: identity.to_owned(),
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
    let txn = Txn::new()
        .when([Compare::create_revision(
            me.key.clone(),
            CompareOp::Equal,
            me.revision,
        )])
        .and_then([TxnOp::get(
            me.lock_prefix.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(me.revision - 1)
                    .with_sort(SortTarget::Create, SortOrder::Descend)
                    .with_limit(1),
            ),
        )]);
    let resp = etcd
        .call("predecessor", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        return Err(Error::KeyLost(me.key.clone()));
    }
    let read_at = resp.header().map(|h| h.revision()).unwrap_or_default();
    Ok(match resp.op_responses().first() {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| Predecessor {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            read_at,
        }),
        _ => None,
    })
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
    let mut retry = Duration::from_millis(100);
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
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
        }
        retry = Duration::from_millis(100);
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

/// Waits until `me` is first in line, watching only the predecessor each time.
/// Fails with [`Error::KeyLost`] if our own key disappears, [`Error::Timeout`] at `deadline`.
pub async fn wait_turn(etcd: &Etcd, me: &Contender, deadline: Option<Instant>) -> Result<()> {
    wait_turn_observed(etcd, me, deadline, || async {}).await
}

/// [`wait_turn`], calling `on_wait` each time it starts waiting for a predecessor (to report
/// the queue position, say). Never called once we hold the lock.
pub async fn wait_turn_observed<F, Fut>(
    etcd: &Etcd,
    me: &Contender,
    deadline: Option<Instant>,
    mut on_wait: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    loop {
        let Some(pred) = predecessor(etcd, me).await? else {
            return Ok(());
        };
        tracing::debug!(key = %me.key, predecessor = %pred.key, "waiting for predecessor");
        on_wait().await;
        match wait_for_deletion(etcd, &pred.key, pred.read_at + 1, deadline).await {
            Ok(_) => {}
            Err(Error::Timeout(..)) => {
                return Err(Error::Timeout(started.elapsed(), me.name.clone()))
            }
            Err(e) => return Err(e),
        }
    }
}

/// What [`release`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Our key was deleted: the lock is free for the next contender.
    Released,
    /// Our key was already gone or belongs to someone else now; nothing was deleted.
    NotOwner,
}

/// Deletes our key only if its create_revision is still ours. Never deletes anyone else's key.
pub async fn release(etcd: &Etcd, me: &Contender) -> Result<ReleaseOutcome> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            me.key.clone(),
            CompareOp::Equal,
            me.revision,
        )])
        .and_then([TxnOp::delete(me.key.clone(), None)]);
    let resp = etcd
        .call("release", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    let outcome = if resp.succeeded() {
        ReleaseOutcome::Released
    } else {
        ReleaseOutcome::NotOwner
    };
    audit::released(me, outcome);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_etcds_own_lock_layout() {
        assert_eq!(lock_prefix("/locks/", "db").unwrap(), "/locks/db/");
        // etcdctl lock /locks/db writes /locks/db/<lease hex>.
        assert_eq!(
            format!(
                "{}{}",
                lock_prefix("/locks/", "db").unwrap(),
                LeaseId(0x694d_7a3b_1c2e_0f10)
            ),
            "/locks/db/694d7a3b1c2e0f10"
        );
    }

    #[test]
    fn bad_lock_names_are_rejected() {
        for bad in ["", "db/", "a\nb"] {
            assert!(
                matches!(lock_prefix("/locks/", bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
