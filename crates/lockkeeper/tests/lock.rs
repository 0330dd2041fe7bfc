//! The lock library against real etcd: the original suite plus FIFO, no-herd, fencing,
//! cleanup-on-timeout, member failures and interop with `etcdctl lock`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use lockkeeper::{
    acquire_lock, release_lock, DistributedLock, Error, Etcd, EtcdOptions, LockOptions, LockState,
    Observer, ReleaseOutcome,
};
use testkit::{unique_name, EtcdCluster};

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
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("lockkeeper=debug")
        .try_init();
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("renew");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(2)).unwrap();
    let token = lock.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        lock.is_locked().await.unwrap(),
        "still held after 2.5 TTLs: {:?}",
        lock.state()
    );
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
        if op == "predecessor" || op == "hand_off_read" {
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

/// The deadline a held state carries.
fn deadline_of(state: &LockState) -> Option<tokio::time::Instant> {
    match state {
        LockState::Held { deadline, .. } => Some(*deadline),
        _ => None,
    }
}

/// etcd unreachable from right after a renewal until shortly before the deadline (a dead
/// member, an election) costs nothing: the first keepalive attempts fail fast, and the retries
/// must still come often enough near the deadline to renew as soon as etcd answers, instead of
/// backing off past it. A retry that backs off freely survives one such outage about half the
/// time, so four in a row show the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_outages_that_end_before_the_deadline_are_ridden_out() {
    use testkit::fault::proxy::FaultProxy;
    let cluster = EtcdCluster::single();
    let proxy = FaultProxy::start(&cluster.endpoint(0));
    let etcd = connect(vec![proxy.endpoint.clone()]).await;
    let lock = DistributedLock::new(etcd, unique_name("outage"), opts(5)).unwrap();
    let token = lock.acquire().await.unwrap();
    let mut states = lock.subscribe();
    for outage in 1..=4 {
        let before = deadline_of(&states.borrow()).expect("held");
        tokio::time::timeout(
            Duration::from_secs(10),
            states.wait_for(|s| deadline_of(s).is_some_and(|d| d > before)),
        )
        .await
        .expect("a renewal")
        .unwrap();
        proxy.reset();
        let deadline = deadline_of(&states.borrow()).expect("held");
        tokio::time::sleep_until(deadline - Duration::from_millis(600)).await;
        proxy.heal();
        let renewed = tokio::time::timeout(
            Duration::from_secs(5),
            states.wait_for(|s| deadline_of(s).is_none_or(|d| d > deadline)),
        )
        .await
        .expect("a state change");
        let now = renewed.unwrap().clone();
        assert!(
            deadline_of(&now).is_some(),
            "outage {outage}: lost although etcd answered again 600 ms before the deadline: {now:?}"
        );
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_nothing_in_the_queue() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("cancel");
    let holder = DistributedLock::new(etcd.clone(), &name, opts(10)).unwrap();
    let guard = holder.lock().await.unwrap();
    let leases_before = lease_count(&etcd).await;

    // A caller gives up on its own: the acquire future is dropped while queued.
    let waiter = DistributedLock::new(etcd.clone(), &name, opts(10)).unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(500), waiter.lock()).await;
    assert!(
        gave_up.is_err(),
        "the lock is held, so the waiter must still be queued"
    );

    // Within about one request time its key and lease are gone...
    let e = etcd.clone();
    let n = name.clone();
    wait_until(Duration::from_secs(2), move || {
        let (e, n) = (e.clone(), n.clone());
        async move { keys_of(&e, &n).await.len() == 1 && lease_count(&e).await == leases_before }
    })
    .await;

    // ...so when the holder releases, the next live contender holds at once, not after the
    // abandoned key's 10 s TTL.
    let next = DistributedLock::new(etcd.clone(), &name, opts(10)).unwrap();
    let next_task = tokio::spawn(async move {
        let g = next.lock().await.unwrap();
        (Instant::now(), g)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let (acquired, g) = tokio::time::timeout(Duration::from_secs(5), next_task)
        .await
        .expect("the next contender acquires well before the abandoned key's TTL")
        .unwrap();
    assert!(acquired.duration_since(released) < Duration::from_secs(2));
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_lock_names_are_refused_and_point_to_the_prefix() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let err = DistributedLock::new(etcd.clone(), "team/job", opts(10)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("prefix"), "{err}");
    let err = acquire_lock(&etcd, "team/job", &opts(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // Hierarchy in the prefix works.
    let held = acquire_lock(&etcd, "job", &opts(10).with_prefix("/locks/team/"))
        .await
        .unwrap();
    assert_eq!(held.key(), format!("/locks/team/job/{}", held.lease()));
    release_lock(&etcd, held).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_on_an_external_lease_follows_its_keepalives_and_never_revokes_it() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("lockkeeper=debug")
        .try_init();
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("extlease");
    // Someone else's lease, which nobody but the lock keeps alive.
    let lease = etcd
        .client()
        .clone()
        .lease_grant(3, None)
        .await
        .unwrap()
        .id();
    let lock = DistributedLock::new(
        etcd.clone(),
        &name,
        opts(3).with_lease(lockkeeper::LeaseId(lease)),
    )
    .unwrap();
    let guard = lock.lock().await.unwrap();
    // The deadline is the lease's, not a far-away one: at most TTL − margin ahead.
    let LockState::Held { deadline, .. } = lock.state() else {
        panic!("not held: {:?}", lock.state());
    };
    assert!(deadline <= tokio::time::Instant::now() + Duration::from_secs(3));
    // Held for three TTLs: the lock renews the lease, so it stays held.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(lock.state().is_held(), "{:?}", lock.state());
    assert!(guard.is_locked().await.unwrap());
    guard.release().await.unwrap();
    // Released, but the lease is the caller's: still there.
    let ttl = etcd
        .client()
        .clone()
        .lease_time_to_live(lease, None)
        .await
        .unwrap()
        .ttl();
    assert!(ttl > 0, "the external lease was revoked");
}

// === lock-delay and the release record ===

/// Deletes a key directly, as etcd does when it revokes a lease early.
async fn delete_key(etcd: &Etcd, key: &str) {
    let resp = etcd.client().clone().delete(key, None).await.unwrap();
    assert_eq!(resp.deleted(), 1, "{key} was there to delete");
}

async fn value_of(etcd: &Etcd, key: &str) -> Option<(String, i64)> {
    let resp = etcd.client().clone().get(key, None).await.unwrap();
    resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.mod_revision(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_vanished_without_releasing_costs_the_lock_delay_a_clean_release_does_not() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("delay");
    let delay = Duration::from_millis(1500);
    let with_delay = |d: Duration| opts(10).with_lock_delay(d);

    // Unclean: the holder's key vanishes (an early revoke), the waiter waits out the delay.
    let first = acquire_lock(&etcd, &name, &with_delay(delay))
        .await
        .unwrap();
    let e = etcd.clone();
    let n = name.clone();
    let second = tokio::spawn(async move {
        let h = acquire_lock(&e, &n, &with_delay(delay)).await;
        (h, Instant::now())
    });
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 2
    })
    .await;
    let vanished = Instant::now();
    delete_key(&etcd, first.key()).await;
    let (second, at) = second.await.unwrap();
    let second = second.expect("the waiter acquires after the delay");
    let waited = at - vanished;
    assert!(
        waited >= delay,
        "held {waited:?} after its predecessor vanished, before the {delay:?} lock-delay"
    );
    assert!(waited < delay + Duration::from_secs(5), "{waited:?}");
    assert_eq!(
        release_lock(&etcd, first).await.unwrap(),
        ReleaseOutcome::NotOwner
    );

    // Clean: a release writes the record naming the released token, the next one holds at once.
    let e = etcd.clone();
    let n = name.clone();
    let long = Duration::from_secs(30);
    let third = tokio::spawn(async move {
        let h = acquire_lock(&e, &n, &with_delay(long)).await;
        (h, Instant::now())
    });
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 2
    })
    .await;
    let token = second.token();
    let released = Instant::now();
    assert_eq!(
        release_lock(&etcd, second).await.unwrap(),
        ReleaseOutcome::Released
    );
    let (third, at) = third.await.unwrap();
    let third = third.unwrap();
    assert!(
        at - released < Duration::from_secs(5),
        "a clean hand-over waited {:?} (lock-delay {long:?})",
        at - released
    );
    let record = format!("/locks/{name}.released");
    assert_eq!(
        value_of(&etcd, &record).await.map(|v| v.0),
        Some(token.0.to_string()),
        "the release record names the released token"
    );
    release_lock(&etcd, third).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_key_goes_during_the_lock_delay_never_holds() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("delay-lost");
    let o = opts(10).with_lock_delay(Duration::from_secs(3));
    let first = acquire_lock(&etcd, &name, &o).await.unwrap();
    let (e, n, o2) = (etcd.clone(), name.clone(), o.clone());
    let second = tokio::spawn(async move { acquire_lock(&e, &n, &o2).await });
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 2
    })
    .await;
    let waiter_key = keys_of(&etcd, &name).await[1].0.clone();
    delete_key(&etcd, first.key()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    delete_key(&etcd, &waiter_key).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the waiter gives up")
        .unwrap();
    assert!(
        matches!(outcome, Err(Error::KeyLost(_))),
        "a waiter that lost its key during the lock-delay must not hold: {outcome:?}"
    );
    drop(first);
}

/// A python-etcd3 `Lock` holder (scripts/bench_peers/pylock.py in the virtualenv that
/// scripts/install-deps.sh makes); it releases when its stdin closes.
struct PythonHolder {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl PythonHolder {
    fn hold(endpoint: &str, name: &str) -> PythonHolder {
        use std::io::BufRead;
        let root = testkit::repo_root();
        let python = root.join(".tools/bench-venv/bin/python");
        assert!(
            python.exists(),
            "python-etcd3 is missing: run scripts/install-deps.sh ({} not found)",
            python.display()
        );
        let port = endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
        let mut child = std::process::Command::new(python)
            .arg(root.join("scripts/bench_peers/pylock.py"))
            .args(["hold", "--name", name, "--ttl", "10", "--port", port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while line.trim() != "held" {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "python-etcd3 exited");
            assert!(!line.starts_with("error"), "python-etcd3: {line}");
        }
        PythonHolder { child, out }
    }

    /// Releases (closes stdin) and returns what it said: "released" if its release worked.
    fn release(mut self) -> String {
        use std::io::BufRead;
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        line.trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_leave_etcdctl_and_python_etcd3_holders_of_the_name_untouched() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("foreign");
    // python-etcd3's Lock(name) holds the single key /locks/{name} (a different scheme: the
    // two do not exclude each other, as the README says).
    let python = tokio::task::spawn_blocking({
        let (e, n) = (cluster.endpoint(0), name.clone());
        move || PythonHolder::hold(&e, &n)
    })
    .await
    .unwrap();
    let python_key = format!("/locks/{name}");
    let before = value_of(&etcd, &python_key).await;
    assert!(before.is_some(), "python-etcd3 holds {python_key}");

    for _ in 0..3 {
        let h = acquire_lock(&etcd, &name, &opts(5)).await.unwrap();
        release_lock(&etcd, h).await.unwrap();
    }
    assert_eq!(
        value_of(&etcd, &python_key).await,
        before,
        "lockkeeper wrote the python-etcd3 lock key"
    );

    // An etcdctl lock holder of the same name keeps its key, and blocks us.
    let mut etcdctl = cluster
        .etcdctl()
        .args(["lock", &format!("/locks/{name}"), "sleep", "3"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 1
    })
    .await;
    let holder = keys_of(&etcd, &name).await;
    let blocked = acquire_lock(
        &etcd,
        &name,
        &opts(5).with_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(matches!(blocked, Err(Error::Timeout(..))), "{blocked:?}");
    assert_eq!(
        keys_of(&etcd, &name).await,
        holder,
        "the etcdctl holder's key is untouched"
    );
    let status = tokio::task::spawn_blocking(move || etcdctl.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(value_of(&etcd, &python_key).await, before);
    let said = tokio::task::spawn_blocking(move || python.release())
        .await
        .unwrap();
    assert_eq!(
        said, "released",
        "the python-etcd3 holder released its own lock"
    );
    assert_eq!(value_of(&etcd, &python_key).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_gives_up_every_hold_and_an_abandoned_acquire_leaves_the_handle_idle() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("close");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(10)).unwrap();
    lock.acquire().await.unwrap();
    lock.acquire().await.unwrap();
    assert_eq!(lock.hold_count().await, 2);
    assert_eq!(lock.close().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(lock.hold_count().await, 0);
    assert!(
        keys_of(&etcd, &name).await.is_empty(),
        "close deleted our key"
    );
    assert_eq!(lease_count(&etcd).await, 0, "close revoked our lease");

    // Someone else holds; our acquire is abandoned by a timeout around it.
    let other = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let abandoned = tokio::time::timeout(Duration::from_millis(300), lock.acquire()).await;
    assert!(abandoned.is_err(), "still queued behind the holder");
    assert_eq!(lock.state(), LockState::Idle, "not acquiring any more");
    release_lock(&etcd, other).await.unwrap();
    assert_eq!(lock.close().await.unwrap(), ReleaseOutcome::NotOwner);
}

/// The lease the handle holds with, while held.
fn lease_of(state: &LockState) -> Option<lockkeeper::LeaseId> {
    match state {
        LockState::Held { lease, .. } => Some(*lease),
        _ => None,
    }
}

/// A handle keeps its lease alive between acquisitions, as etcd's own `concurrency.Session`
/// does: a release deletes the key and leaves the lease; the next acquisition, several TTLs
/// later, enqueues on the same lease without granting one; `close` revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_keeps_its_lease_between_acquisitions_and_revokes_it_on_close() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("kept");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(2)).unwrap();
    let first = lock.acquire().await.unwrap();
    let lease = lease_of(&lock.state()).expect("held");
    assert_eq!(lock.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(
        keys_of(&etcd, &name).await.is_empty(),
        "release deleted our key"
    );
    assert_eq!(
        lease_count(&etcd).await,
        1,
        "the lease stays with the handle"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // 2.5 TTLs, idle
    let second = lock.acquire().await.unwrap();
    assert_eq!(
        lease_of(&lock.state()),
        Some(lease),
        "the second acquisition reuses the kept lease"
    );
    assert!(
        second > first,
        "a new key, a new token: {first:?} then {second:?}"
    );
    assert_eq!(lease_count(&etcd).await, 1, "no lease granted");
    assert_eq!(lock.close().await.unwrap(), ReleaseOutcome::Released);
    assert!(keys_of(&etcd, &name).await.is_empty());
    assert_eq!(lease_count(&etcd).await, 0, "close revoked the kept lease");
}

/// A kept lease that etcd no longer has (revoked behind the handle's back while idle) is never
/// used again: the next acquisition grants a new one and holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_revoked_while_idle_is_replaced_on_the_next_acquisition() {
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("kept-revoked");
    let lock = DistributedLock::new(etcd.clone(), &name, opts(10)).unwrap();
    lock.acquire().await.unwrap();
    let lease = lease_of(&lock.state()).expect("held");
    lock.release().await.unwrap();
    etcd.client().clone().lease_revoke(lease.0).await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(10), lock.acquire())
        .await
        .expect("acquires within 10 s")
        .expect("acquires on a new lease");
    let now = lease_of(&lock.state()).expect("held");
    assert_ne!(now, lease, "a new lease");
    assert!(lock.is_locked().await.unwrap());
    assert_eq!(keys_of(&etcd, &name).await.len(), 1);
    assert_eq!(lock.fencing_token(), Some(token));
    lock.close().await.unwrap();
    assert_eq!(lease_count(&etcd).await, 0);
}

/// A waiter's view can lag: here its link to etcd is slow, so the predecessor's (clean) release
/// reaches it only after its own key was deleted too. Deciding on a snapshot at the release's
/// revision, where our key still existed, would make it hold a key that is gone; it must find
/// its key lost instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_learns_of_the_release_late_never_holds_a_key_deleted_meanwhile() {
    use testkit::fault::proxy::FaultProxy;
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("late-handoff");
    let proxy = FaultProxy::start(&cluster.endpoint(0));
    let slow = connect(vec![proxy.endpoint.clone()]).await;
    let first = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let (n, o) = (name.clone(), opts(10).with_lock_delay(Duration::ZERO));
    let waiter = tokio::spawn(async move { acquire_lock(&slow, &n, &o).await });
    wait_until(Duration::from_secs(5), || async {
        keys_of(&etcd, &name).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // its watch is in place
    let waiter_key = keys_of(&etcd, &name).await[1].0.clone();
    proxy.delay(Duration::from_millis(400), Duration::ZERO);
    release_lock(&etcd, first).await.unwrap();
    delete_key(&etcd, &waiter_key).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter gives up")
        .unwrap();
    proxy.heal();
    assert!(
        matches!(outcome, Err(Error::KeyLost(_))),
        "a waiter must not hold a key that is gone: {outcome:?}"
    );
}

/// Our key directly follows a clean release, but someone was queued ahead of us then and
/// vanished without releasing before our first look at the queue: it may have held (and may
/// still act), so we wait the lock-delay. That our key is the first write after the release
/// only proves a clean hand-over when nobody was ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_right_after_a_clean_release_still_waits_for_one_ahead_that_vanished() {
    use lockkeeper::queue::{enqueue, wait_turn_observed};
    use lockkeeper::{LeaseId, WaitEvent};
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("ahead-vanished");
    let mut c = etcd.client().clone();
    let holder = acquire_lock(&etcd, &name, &opts(10)).await.unwrap();
    let ahead = LeaseId(c.lease_grant(10, None).await.unwrap().id());
    let (ahead, _) = enqueue(&etcd, "/locks/", &name, ahead, "ahead")
        .await
        .unwrap();
    release_lock(&etcd, holder).await.unwrap();
    let late = LeaseId(c.lease_grant(10, None).await.unwrap().id());
    let (me, owner) = enqueue(&etcd, "/locks/", &name, late, "late")
        .await
        .unwrap();
    assert_eq!(owner.map(|o| o.key), Some(ahead.key.clone()));
    let record = c
        .get(
            lockkeeper::release_record_key("/locks/", &name).unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        record.kvs()[0].mod_revision() + 1,
        me.revision,
        "our key is the first write after the clean release"
    );
    // The one ahead vanishes without a release record (a crash, an early revocation).
    c.delete(ahead.key.clone(), None).await.unwrap();
    let delay = Duration::from_millis(1500);
    let events = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    wait_turn_observed(&etcd, &me, None, delay, |e| {
        events.lock().unwrap().push(e);
        async {}
    })
    .await
    .unwrap();
    let waited = started.elapsed();
    let events = events.into_inner().unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, WaitEvent::LockDelay { predecessor, .. } if *predecessor == ahead.key)
        ),
        "no lock-delay for the vanished key ahead of us: {events:?}"
    );
    assert!(
        waited >= delay - Duration::from_millis(100),
        "held after {waited:?}"
    );
}

/// Someone who comes after an early revocation finds the lock free, but the holder whose key
/// vanished may still act: it waits the lock-delay too. A lock that is new, or was released
/// cleanly, is taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_after_a_vanished_holder_waits_the_lock_delay_after_a_clean_release_it_does_not()
{
    let cluster = EtcdCluster::single();
    let etcd = connect(cluster.endpoints()).await;
    let name = unique_name("newcomer");
    let delay = Duration::from_millis(1500);
    let long = opts(10).with_lock_delay(Duration::from_secs(30));

    // A new lock: at once.
    let started = Instant::now();
    let first = acquire_lock(&etcd, &name, &long).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A clean release: at once.
    release_lock(&etcd, first).await.unwrap();
    let started = Instant::now();
    let second = acquire_lock(&etcd, &name, &long).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "after a clean release: {:?}",
        started.elapsed()
    );
    // The holder's key vanishes (an early revocation); a newcomer finds the lock free.
    delete_key(&etcd, second.key()).await;
    let started = Instant::now();
    let third = acquire_lock(&etcd, &name, &opts(10).with_lock_delay(delay))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= delay,
        "held {:?} after the holder vanished, before the {delay:?} lock-delay",
        started.elapsed()
    );
    release_lock(&etcd, third).await.unwrap();
    drop(second);

    // A clean release followed by other writes (a few, then more than one transaction of past
    // reads covers): still at once, however the history between is read.
    for writes in [3, 150] {
        for i in 0..writes {
            let mut c = etcd.client().clone();
            c.put(format!("/unrelated/{name}"), format!("{i}"), None)
                .await
                .unwrap();
        }
        let started = Instant::now();
        let next = acquire_lock(&etcd, &name, &long).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "after a clean release and {writes} other writes: {:?}",
            started.elapsed()
        );
        release_lock(&etcd, next).await.unwrap();
    }
    // A vanished holder followed by other writes: the lock-delay.
    let held = acquire_lock(&etcd, &name, &long).await.unwrap();
    delete_key(&etcd, held.key()).await;
    for i in 0..3 {
        let mut c = etcd.client().clone();
        c.put(format!("/unrelated/{name}"), format!("{i}"), None)
            .await
            .unwrap();
    }
    let started = Instant::now();
    let last = acquire_lock(&etcd, &name, &opts(10).with_lock_delay(delay))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= delay,
        "held {:?} after the holder vanished and other writes, before the {delay:?} lock-delay",
        started.elapsed()
    );
    release_lock(&etcd, last).await.unwrap();
    drop(held);
}
