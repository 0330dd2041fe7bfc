//! The lock library against real etcd: the original suite plus FIFO, no-herd, fencing,
//! cleanup-on-timeout, member failures and interop with `etcdctl lock`.

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use lockkeeper::{
    acquire_lock, release_lock, DistributedLock, Error, Etcd, EtcdOptions, LockOptions, LockState,
    Observer, ReleaseOutcome,
};
use support::{unique_name, EtcdCluster};

async fn connect(endpoints: Vec<String>) -> Etcd {
    EtcdOptions::new(endpoints)
        .connect_etcd()
        .await
        .expect("connect to etcd")
}

/// Keys under the lock's prefix, in create order.
async fn keys_of(etcd: &Etcd, name: &str) -> Vec<(String, i64)> {
    let mut c = etcd.client().clone();
    let resp = c
        .get(
            format!("/locks/{name}/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let mut keys: Vec<_> = resp
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.create_revision()))
        .collect();
    keys.sort_by_key(|k| k.1);
    keys
}

async fn lease_count(etcd: &Etcd) -> usize {
    etcd.client().clone().leases().await.unwrap().leases().len()
}

fn opts(ttl_s: u64) -> LockOptions {
    LockOptions::new()
        .with_identity("test")
        .with_ttl(Duration::from_secs(ttl_s))
}

// === the original suite ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_acquire_and_release() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("basic");

    let held = acquire_lock(&etcd, &name, &opts(5)).await.unwrap();
    let keys = keys_of(&etcd, &name).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].0, format!("/locks/{name}/{:x}", held.lease().0));
    assert_eq!(
        keys[0].1,
        held.token().0,
        "fencing token is the key's create_revision"
    );

    assert_eq!(
        release_lock(&etcd, held).await.unwrap(),
        ReleaseOutcome::Released
    );
    assert!(keys_of(&etcd, &name).await.is_empty());
    assert_eq!(lease_count(&etcd).await, 0, "release revokes the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_lets_another_client_acquire() {
    let cluster = EtcdCluster::single();
    let a = connect(cluster.endpoints()).await;
    let b = connect(cluster.endpoints()).await;
    let name = unique_name("expiry");

    let first = acquire_lock(&a, &name, &opts(2).with_auto_renew(false))
        .await
        .unwrap();
    let started = Instant::now();
    let second = acquire_lock(&b, &name, &opts(5).with_timeout(Duration::from_secs(15)))
        .await
        .expect("acquired after the first lease expired");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "second must wait for the expiry, waited {:?}",
        started.elapsed()
    );
    assert!(second.token() > first.token());
    assert!(
        !first.is_trusted(),
        "an unrenewed lease is not trusted past its TTL"
    );
    assert_eq!(
        release_lock(&a, first).await.unwrap(),
        ReleaseOutcome::NotOwner
    );
    assert_eq!(
        keys_of(&b, &name).await.len(),
        1,
        "releasing a lost lock deletes nothing"
    );
    assert_eq!(
        release_lock(&b, second).await.unwrap(),
        ReleaseOutcome::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentrant_acquire_does_not_wait_or_touch_etcd() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let counter = Arc::new(CountingObserver::default());
    let counted = etcd.clone().with_observer(counter.clone());
    let lock = DistributedLock::new(counted, unique_name("reentrant"), opts(5)).unwrap();

    let t1 = lock.acquire().await.unwrap();
    let before = counter.requests.load(Ordering::SeqCst);
    let started = Instant::now();
    let t2 = lock.acquire().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(t1, t2);
    assert_eq!(
        counter.requests.load(Ordering::SeqCst),
        before,
        "no etcd call"
    );
    assert_eq!(lock.hold_count().await, 2);
    assert_eq!(keys_of(&etcd, lock.name()).await.len(), 1);
    lock.release().await.unwrap();
    lock.release().await.unwrap();
    assert!(keys_of(&etcd, lock.name()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_renewal_keeps_the_lock_beyond_its_ttl() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("renew");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(2)).unwrap();
    let token = lock.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(lock.is_locked().await.unwrap(), "still held after 2.5 TTLs");
    assert_eq!(lock.fencing_token(), Some(token));
    let other = acquire_lock(
        &etcd,
        &name,
        &opts(2).with_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(matches!(other, Err(Error::Timeout(..))), "got {other:?}");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_racer_times_out_and_leaves_nothing_behind() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("race");
    let first = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let leases_before = lease_count(&etcd).await;

    let racer = {
        let etcd = etcd.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r =
                acquire_lock(&etcd, &name, &opts(10).with_timeout(Duration::from_secs(1))).await;
            (r, started.elapsed())
        })
    };
    let (result, waited) = racer.await.unwrap();
    assert!(matches!(result, Err(Error::Timeout(..))), "got {result:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        keys_of(&etcd, &name).await.len(),
        1,
        "only the holder's key remains"
    );
    assert_eq!(
        lease_count(&etcd).await,
        leases_before,
        "the racer's lease was revoked"
    );
    release_lock(&etcd, first).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_locked_inside_and_after_the_guarded_section() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let lock = DistributedLock::new(etcd.clone(), unique_name("islocked"), opts(5)).unwrap();
    assert!(!lock.is_locked().await.unwrap());
    {
        let guard = lock.lock().await.unwrap();
        assert!(guard.is_locked().await.unwrap());
        assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    }
    assert!(!lock.is_locked().await.unwrap());
    {
        let _guard = lock.lock().await.unwrap();
        assert!(lock.is_locked().await.unwrap());
    } // dropped: released in the background
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, lock.name()).await.is_empty()
    })
    .await;
    assert!(!lock.is_locked().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusivity_with_functions_and_with_guards() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints();
    let name = unique_name("exclusive");
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (endpoints, name, inside, max_inside) = (
            endpoints.clone(),
            name.clone(),
            inside.clone(),
            max_inside.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let etcd = connect(endpoints).await;
            let enter = || {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
            };
            let o = opts(5).with_timeout(Duration::from_secs(30));
            if i % 2 == 0 {
                let held = acquire_lock(&etcd, &name, &o).await.unwrap();
                enter();
                tokio::time::sleep(Duration::from_millis(50)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                release_lock(&etcd, held).await.unwrap();
            } else {
                let lock = DistributedLock::new(etcd, &name, o).unwrap();
                let guard = lock.lock().await.unwrap();
                enter();
                tokio::time::sleep(Duration::from_millis(50)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(max_inside.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_renew_is_locked_turns_false_after_the_ttl() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let lock = DistributedLock::new(
        etcd.clone(),
        unique_name("norenew"),
        opts(2).with_auto_renew(false),
    )
    .unwrap();
    let guard = lock.lock().await.unwrap();
    assert!(guard.is_locked().await.unwrap());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!guard.is_locked().await.unwrap());
    assert!(
        matches!(lock.state(), LockState::Lost { .. }),
        "{:?}",
        lock.state()
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::NotOwner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_acquisitions_count_up_and_release_once() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let lock = DistributedLock::new(etcd.clone(), unique_name("nested"), opts(5)).unwrap();
    let outer = lock.lock().await.unwrap();
    let middle = lock.lock().await.unwrap();
    let inner = lock.lock().await.unwrap();
    assert_eq!(lock.hold_count().await, 3);
    inner.release().await.unwrap();
    middle.release().await.unwrap();
    assert_eq!(
        keys_of(&etcd, lock.name()).await.len(),
        1,
        "still held by the outer hold"
    );
    assert!(lock.is_locked().await.unwrap());
    outer.release().await.unwrap();
    assert!(keys_of(&etcd, lock.name()).await.is_empty());
    assert_eq!(lock.hold_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusivity_through_two_different_members() {
    let cluster = EtcdCluster::three();
    let a = connect(vec![cluster.endpoint(0)]).await;
    let b = connect(vec![cluster.endpoint(1)]).await;
    let name = unique_name("members");
    let first = acquire_lock(&a, &name, &opts(5)).await.unwrap();
    let blocked = acquire_lock(&b, &name, &opts(5).with_timeout(Duration::from_millis(700))).await;
    assert!(
        matches!(blocked, Err(Error::Timeout(..))),
        "got {blocked:?}"
    );
    let waiter = {
        let (b, name) = (b.clone(), name.clone());
        tokio::spawn(async move {
            acquire_lock(&b, &name, &opts(5).with_timeout(Duration::from_secs(10))).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let token_a = first.token();
    release_lock(&a, first).await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert!(second.token() > token_a);
    release_lock(&b, second).await.unwrap();
}

// === beyond the original suite ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_acquire_in_fifo_order_and_tokens_increase() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("fifo");
    let holder = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let order = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..5 {
        let (etcd2, name2, order) = (etcd.clone(), name.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let held = acquire_lock(&etcd2, &name2, &opts(10).with_identity(format!("w{i}")))
                .await
                .unwrap();
            order.lock().await.push((i, held.token()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            release_lock(&etcd2, held).await.unwrap();
        }));
        // Enqueue strictly one after another.
        wait_until(Duration::from_secs(5), || async {
            keys_of(&etcd, &name).await.len() == i + 2
        })
        .await;
    }
    let first_token = holder.token();
    release_lock(&etcd, holder).await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    let order = order.lock().await.clone();
    let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4], "FIFO order");
    let mut last = first_token;
    for (_, t) in order {
        assert!(t > last, "fencing tokens strictly increase");
        last = t;
    }
}

#[derive(Default)]
struct CountingObserver {
    requests: AtomicU64,
    predecessor_reads: AtomicU64,
}

impl Observer for CountingObserver {
    fn etcd_request(&self, op: &'static str, _elapsed: Duration, _ok: bool) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if op == "predecessor" {
            self.predecessor_reads.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_wakes_only_the_next_waiter() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("herd");
    let holder = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let mut observers = Vec::new();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let obs = Arc::new(CountingObserver::default());
        let counted = etcd.clone().with_observer(obs.clone());
        let name2 = name.clone();
        waiters.push(tokio::spawn(async move {
            let held = acquire_lock(&counted, &name2, &opts(10)).await.unwrap();
            // Hold until told to release by the test (via key deletion order).
            held
        }));
        observers.push(obs);
        wait_until(Duration::from_secs(5), || async {
            keys_of(&etcd, &name).await.len() == i + 2
        })
        .await;
    }
    // Let every waiter settle on its watch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = observers
        .iter()
        .map(|o| o.predecessor_reads.load(Ordering::SeqCst))
        .collect();
    release_lock(&etcd, holder).await.unwrap();
    let first = waiters.remove(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<u64> = observers
        .iter()
        .map(|o| o.predecessor_reads.load(Ordering::SeqCst))
        .collect();
    assert!(after[0] > before[0], "the next waiter re-read the queue");
    assert_eq!(
        &after[1..],
        &before[1..],
        "no other waiter woke up: {before:?} -> {after:?}"
    );
    for w in &waiters {
        assert!(!w.is_finished());
    }
    release_lock(&etcd, first).await.unwrap();
    for w in waiters {
        let held = w.await.unwrap();
        release_lock(&etcd, held).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_survives_the_death_of_a_follower() {
    let mut cluster = EtcdCluster::three();
    let etcd = connect(cluster.endpoints()).await;
    let lock = DistributedLock::new(etcd.clone(), unique_name("follower"), opts(3)).unwrap();
    let token = lock.acquire().await.unwrap();
    let mut states = lock.subscribe();
    let leader = cluster.leader_index().expect("a leader");
    let follower = (leader + 1) % 3;
    cluster.kill_member(follower);
    let lost = tokio::time::timeout(
        Duration::from_secs(8),
        states.wait_for(|s| !matches!(s, LockState::Held { .. })),
    )
    .await;
    assert!(
        lost.is_err(),
        "lock lost after a follower died: {:?}",
        lock.state()
    );
    assert!(lock.is_locked().await.unwrap());
    assert_eq!(lock.fencing_token(), Some(token));
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_survives_the_death_of_the_leader() {
    let mut cluster = EtcdCluster::three();
    let etcd = connect(cluster.endpoints()).await;
    let lock = DistributedLock::new(etcd.clone(), unique_name("leader"), opts(5)).unwrap();
    let token = lock.acquire().await.unwrap();
    let mut states = lock.subscribe();
    let leader = cluster.leader_index().expect("a leader");
    cluster.kill_member(leader);
    let lost = tokio::time::timeout(
        Duration::from_secs(12),
        states.wait_for(|s| !matches!(s, LockState::Held { .. })),
    )
    .await;
    assert!(
        lost.is_err(),
        "lock lost after the leader died: {:?}",
        lock.state()
    );
    assert!(lock.is_locked().await.unwrap());
    assert_eq!(lock.fencing_token(), Some(token));
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_etcdctl_lock() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("interop");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");

    // lockkeeper holds: etcdctl's command must not run until we release.
    let held = acquire_lock(&etcd, &name, &opts(5)).await.unwrap();
    let mut etcdctl = cluster
        .etcdctl()
        .args(["lock", &format!("/locks/{name}"), "touch"])
        .arg(&marker)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !marker.exists(),
        "etcdctl ran while lockkeeper held the lock"
    );
    release_lock(&etcd, held).await.unwrap();
    let status = tokio::task::spawn_blocking(move || etcdctl.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(marker.exists());

    // etcdctl holds: lockkeeper must wait until it is done.
    let mut etcdctl = cluster
        .etcdctl()
        .args(["lock", &format!("/locks/{name}"), "sleep", "2"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 1
    })
    .await;
    let blocked = acquire_lock(
        &etcd,
        &name,
        &opts(5).with_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(
        matches!(blocked, Err(Error::Timeout(..))),
        "got {blocked:?}"
    );
    let held = acquire_lock(&etcd, &name, &opts(5).with_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || etcdctl.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "etcdctl finished its command before we got the lock"
    );
    release_lock(&etcd, held).await.unwrap();
}

async fn wait_until<F, Fut>(limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(
            started.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
