//! The seven measurements, each over the same cluster, lockkeeper next to its peers: one file per
//! measurement, and here what they share (deadlines, lock options, waiting on the queue).

mod contention;
mod failover;
mod fleet;
mod footprint;
mod handoff;
mod many;
mod uncontended;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchStream,
};
use lockkeeper::{Etcd, LockOptions};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::{sleep, Instant};

use crate::http::{BoxError, EventStream};
use crate::procs::{self, arrival, Arrival, Env, Py, Sidecar};

pub use contention::{contention_lockkeeper, contention_python};
pub use failover::failover;
pub use fleet::fleet;
pub use footprint::footprint;
pub use handoff::handoff;
pub use many::many_locks;
pub use uncontended::uncontended;

pub type R<T> = Result<T, BoxError>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn deadline(s: u64) -> Instant {
    Instant::now() + secs(s)
}

fn lib_opts(identity: &str, ttl: u64) -> LockOptions {
    LockOptions::new()
        .with_identity(identity)
        .with_ttl(secs(ttl))
        .with_timeout(secs(120))
}

fn lock_prefix(name: &str) -> String {
    format!("/locks/{name}/")
}

/// Number of keys under `prefix` (a count-only read).
async fn count_keys(etcd: &Etcd, prefix: &str) -> R<i64> {
    let mut c = etcd.client().clone();
    let r = c
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(r.count())
}

/// Waits until `n` contenders are queued under `prefix`.
async fn wait_queued(etcd: &Etcd, prefix: &str, n: i64, until: Instant) -> R<()> {
    loop {
        if count_keys(etcd, prefix).await? >= n {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("timed out waiting for {n} contenders under {prefix}").into());
        }
        sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_event(stream: &mut WatchStream, ty: EventType) -> R<Instant> {
    loop {
        let resp = stream.message().await?.ok_or("watch stream ended")?;
        if resp.events().iter().any(|e| e.event_type() == ty) {
            return Ok(Instant::now());
        }
    }
}

fn is_held(v: &serde_json::Value) -> bool {
    v["held"] == serde_json::Value::Bool(true)
}

fn is_waiting(v: &serde_json::Value) -> bool {
    v["state"] == "waiting"
}

/// Opens `sidecar`'s `/events` and waits until it reports `what`; returns when it did.
async fn sidecar_reports(
    sidecar: &Sidecar,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> R<Instant> {
    let (_, at) = EventStream::open(&sidecar.authority(), deadline(10))
        .await?
        .wait_for(deadline(10), what, pred)
        .await?;
    Ok(at)
}

/// `pylock.py MODE --name NAME --ttl TTL`.
fn py_args(mode: &str, name: &str, ttl: u64) -> Vec<String> {
    vec![
        mode.into(),
        "--name".into(),
        name.into(),
        "--ttl".into(),
        ttl.to_string(),
    ]
}

/// Two python-etcd3 processes on one lock: `{name}-{tags[0]}` on `member` until it holds, then
/// `{name}-{tags[1]}` on the next member until it is trying. Returns them and when the first held.
async fn py_pair(
    env: &Env,
    name: &str,
    tags: [&str; 2],
    member: usize,
    args: &[String],
) -> R<(Py, Instant, Py)> {
    let mut a = Py::spawn(env, &format!("{name}-{}", tags[0]), member, args)?;
    let (_, held_at) = a.expect("held", deadline(30)).await?;
    let mut b = Py::spawn(env, &format!("{name}-{}", tags[1]), member + 1, args)?;
    b.expect("trying", deadline(30)).await?;
    Ok((a, held_at, b))
}

/// Two `etcdctl lock NAME CMD` on lock `name`: the holder, whose command is running, and the
/// waiter, queued behind it.
struct EtcdctlPair {
    holder: Child,
    held: Arrival,
    waiter: Child,
    /// The waiter's command, once it starts.
    waiter_arrival: oneshot::Receiver<Arrival>,
}

async fn etcdctl_pair(env: &Env, etcd: &Etcd, name: &str, ttl: u64) -> R<EtcdctlPair> {
    let (ida, idb) = (env.unique("cmd"), env.unique("cmd"));
    let rxa = env.hub.expect(&ida);
    let holder = procs::spawn_etcdctl(env, name, &ida, ttl, true)?;
    let held = arrival(rxa, deadline(10), "etcdctl holder").await?;
    let waiter_arrival = env.hub.expect(&idb);
    let waiter = procs::spawn_etcdctl(env, name, &idb, ttl, true)?;
    wait_queued(etcd, &lock_prefix(name), 2, deadline(10)).await?;
    Ok(EtcdctlPair {
        holder,
        held,
        waiter,
        waiter_arrival,
    })
}

async fn reap(child: &mut Child, grace: Duration) {
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// The two transactions an acquire + release with a reused lease sends, by hand (lockkeeper's
/// enqueue: put-if-absent + read the owner; release: delete if still ours), through the bare
/// client: what those requests cost etcd, without lockkeeper around them.
async fn txn_pair(c: &mut Client, prefix: &str, key: &str, lease: i64) -> R<()> {
    let owner = TxnOp::get(
        prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    );
    let enqueue = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, "bench", Some(PutOptions::new().with_lease(lease))),
            owner.clone(),
        ])
        .or_else([TxnOp::get(key, None), owner]);
    let r = c.txn(enqueue).await?;
    let rev = r.header().map(|h| h.revision()).unwrap_or_default();
    let release = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key, None)]);
    c.txn(release).await?;
    Ok(())
}
