//! The library against a secured etcd: TLS with client-certificate authentication (certificates
//! generated here, see crates/testkit/src/tls.rs) and etcd's user/role auth. Right credentials
//! work; wrong ones give a clear error in bounded time, never a panic, and never put the secret
//! in an error. Auth tokens (simple and JWT) that expire while a lock is held or waited for are
//! renewed: nothing locks up. (The sidecar binary's side of this: tests/auth_tls.rs.)

use std::future::Future;
use std::time::{Duration, Instant};

use lockkeeper::{
    acquire_lock, release_lock, DistributedLock, EtcdOptions, LockOptions, ReleaseOutcome,
};
use testkit::auth::{
    assert_token_expired, cluster_with_short_lived_tokens, ctl, enable_auth, keys_under,
    outlive_the_tokens, stale_client, TokenKind, LOCKER_PASSWORD, ROOT, WRONG_PASSWORD,
};
use testkit::{unique_name, EtcdCluster, EtcdSetup, TestPki};

/// Bound on every library call that is expected to fail: it must fail, not hang.
const FAIL_WITHIN: Duration = Duration::from_secs(15);

// === helpers ===

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(FAIL_WITHIN, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {FAIL_WITHIN:?}"))
}

fn lock_opts() -> LockOptions {
    LockOptions::new()
        .with_identity("auth-tls-test")
        .with_ttl(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10))
}

/// Acquire, check the token, release, and check nothing is left behind.
async fn acquire_and_release(opts: &EtcdOptions, name: &str) {
    let etcd = bounded("connect", opts.connect_etcd())
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    let handle = bounded("acquire", acquire_lock(&etcd, name, &lock_opts()))
        .await
        .unwrap_or_else(|e| panic!("acquire failed: {e}"));
    assert!(handle.token().0 > 0, "fencing token {}", handle.token());
    assert!(handle.key().starts_with(&format!("/locks/{name}/")));
    bounded("release", release_lock(&etcd, handle))
        .await
        .unwrap_or_else(|e| panic!("release failed: {e}"));
}

/// Connect and acquire with settings that must be refused; returns the error's Display.
async fn refused(opts: EtcdOptions, name: &str) -> String {
    let started = Instant::now();
    let result = bounded("a refused connection", async {
        let etcd = opts
            .connect_etcd()
            .await?
            .with_request_timeout(Duration::from_secs(3));
        acquire_lock(&etcd, name, &lock_opts()).await
    })
    .await;
    let err = match result {
        Ok(handle) => panic!("acquired {} with bad credentials", handle.key()),
        Err(e) => e,
    };
    let text = err.to_string();
    eprintln!(
        "refused after {:?}: {text} (kind {})",
        started.elapsed(),
        err.metric_label()
    );
    text
}

// === TLS with client certificates ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_cert_acquires_and_releases() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let endpoint = cluster.endpoint(0);
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");

    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&pki.client.cert, &pki.client.key);
    let name = unique_name("tls");
    acquire_and_release(&opts, &name).await;

    // The same through the reentrant DistributedLock API.
    let etcd = opts.connect_etcd().await.expect("connect");
    let lock = DistributedLock::new(etcd, name.as_str(), lock_opts()).expect("lock");
    let guard = bounded("lock", lock.lock()).await.expect("lock()");
    assert!(guard.token().0 > 0);
    assert!(bounded("is_locked", guard.is_locked()).await.unwrap());
    bounded("release", guard.release()).await.expect("release");
    assert!(keys_under(&cluster, None, &format!("/locks/{name}/")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoint_without_scheme_uses_https() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let bare = cluster
        .endpoint(0)
        .trim_start_matches("https://")
        .to_owned();
    let opts = EtcdOptions::new([bare])
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&pki.client.cert, &pki.client.key);
    acquire_and_release(&opts, &unique_name("tls-bare")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rogue_client_cert_is_refused() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let name = unique_name("tls-rogue");
    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&pki.rogue_client.cert, &pki.rogue_client.key);
    refused(opts, &name).await;
    assert!(keys_under(&cluster, None, "/locks/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_cert_is_refused() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let name = unique_name("tls-nocert");
    let opts = EtcdOptions::new(cluster.endpoints()).with_ca_file(&pki.ca_cert);
    refused(opts, &name).await;
    assert!(keys_under(&cluster, None, "/locks/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_not_signed_by_trusted_ca_is_refused() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    // A valid client certificate, but we trust only the rogue CA, which did not sign etcd's.
    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.rogue_ca_cert)
        .with_client_cert(&pki.client.cert, &pki.client.key);
    refused(opts, &unique_name("tls-untrusted")).await;
    assert!(keys_under(&cluster, None, "/locks/").is_empty());
}

/// A certificate failure repeats on every retry, so it should be reported at once with its
/// cause, not retried into "did not answer within 3s" (`Etcd::call` must not retry it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_untrusted_server_error_names_the_certificate_at_once() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.rogue_ca_cert)
        .with_client_cert(&pki.client.cert, &pki.client.key);
    let started = Instant::now();
    let text = refused(opts, &unique_name("tls-untrusted-clear")).await;
    assert!(text.contains("certificate"), "unclear error: {text}");
    assert!(started.elapsed() < Duration::from_secs(2), "slow: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_missing_key_file_is_a_config_error() {
    let pki = TestPki::generate();
    let opts = EtcdOptions::new(["https://127.0.0.1:1"])
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&pki.client.cert, pki.dir().join("no-such-key.pem"));
    let err = bounded("connect", opts.connect_etcd())
        .await
        .expect_err("a missing key file must fail");
    assert_eq!(err.metric_label(), "config", "{err}");
    assert!(err.to_string().contains("no-such-key.pem"), "{err}");
}

/// Bonus: three TLS members, failover of the lock across a killed leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_three_member_cluster_survives_leader_loss() {
    let pki = TestPki::generate();
    let mut cluster = EtcdCluster::start_with(
        3,
        EtcdSetup {
            tls: Some(pki.etcd_tls()),
            ..EtcdSetup::default()
        },
    );
    assert!(cluster
        .endpoints()
        .iter()
        .all(|e| e.starts_with("https://")));
    let leader = cluster.wait_leader(&[], Duration::from_secs(10));
    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&pki.client.cert, &pki.client.key);
    let name = unique_name("tls3");
    acquire_and_release(&opts, &name).await;

    cluster.kill_member(leader);
    let new_leader = cluster.wait_leader(&[leader], Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    acquire_and_release(&opts, &name).await;

    cluster.restart_member(leader);
    cluster.wait_healthy(Duration::from_secs(10));
}

// === etcd user/role auth ===

#[test]
fn etcd_options_debug_does_not_show_the_password() {
    let opts = EtcdOptions::new(["http://127.0.0.1:2379"]).with_user("locker", WRONG_PASSWORD);
    let debug = format!("{opts:?}");
    assert!(debug.contains("locker"), "{debug}");
    assert!(!debug.contains(WRONG_PASSWORD), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_auth_locker_can_lock_and_bad_credentials_are_refused() {
    let cluster = EtcdCluster::single();
    enable_auth(&cluster);
    let name = unique_name("auth");

    let locker = EtcdOptions::new(cluster.endpoints()).with_user("locker", LOCKER_PASSWORD);
    acquire_and_release(&locker, &name).await;

    // Wrong password: a clear authentication error that does not echo the password.
    let wrong = EtcdOptions::new(cluster.endpoints()).with_user("locker", WRONG_PASSWORD);
    let text = refused(wrong, &name).await;
    let lower = text.to_lowercase();
    assert!(
        lower.contains("authentication") || lower.contains("invalid user id or password"),
        "unclear error: {text}"
    );
    assert!(
        !text.contains(WRONG_PASSWORD),
        "error shows the password: {text}"
    );

    // Unknown user: the same.
    let unknown = EtcdOptions::new(cluster.endpoints()).with_user("nobody", WRONG_PASSWORD);
    let text = refused(unknown, &name).await;
    assert!(
        text.to_lowercase().contains("authentication"),
        "unclear error: {text}"
    );

    // No credentials at all against an auth-enabled cluster: refused, not a hang.
    let anonymous = EtcdOptions::new(cluster.endpoints());
    let text = refused(anonymous, &name).await;
    assert!(
        text.to_lowercase().contains("permission denied")
            || text.to_lowercase().contains("user name is empty"),
        "unclear error: {text}"
    );

    // The one release left its record; no contender key remains.
    assert_eq!(
        keys_under(&cluster, Some(ROOT), "/locks/"),
        [format!("/locks/{name}.released")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_covering_only_the_queue_range_releases_without_a_record() {
    let cluster = EtcdCluster::single();
    enable_auth(&cluster);
    let name = unique_name("auth-queue-only");
    let queue = format!("/locks/{name}/");
    for args in [
        &["role", "add", "queue-only"][..],
        &[
            "role",
            "grant-permission",
            "queue-only",
            "--prefix=true",
            "readwrite",
            &queue,
        ],
        &["user", "add", "queuer:queuerpw"],
        &["user", "grant-role", "queuer", "queue-only"],
    ] {
        ctl(&cluster, Some(ROOT), args);
    }
    let opts = EtcdOptions::new(cluster.endpoints()).with_user("queuer", "queuerpw");
    let etcd = bounded("connect", opts.connect_etcd()).await.unwrap();
    let delay = Duration::from_millis(1500);
    let lock = lock_opts().with_lock_delay(delay);
    let first = bounded("acquire", acquire_lock(&etcd, &name, &lock))
        .await
        .unwrap();
    let (e, n, l) = (etcd.clone(), name.clone(), lock.clone());
    let second = tokio::spawn(async move {
        let h = acquire_lock(&e, &n, &l).await;
        (h, Instant::now())
    });
    let started = Instant::now();
    while keys_under(&cluster, Some(ROOT), &queue).len() < 2 {
        assert!(started.elapsed() < FAIL_WITHIN, "the second never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The record cannot be written: release still deletes our key (and only ours) ...
    let released = Instant::now();
    let outcome = bounded("release", release_lock(&etcd, first))
        .await
        .unwrap();
    assert_eq!(outcome, ReleaseOutcome::Released);
    // ... and the waiter, unable to read a record, waits the lock-delay.
    let (second, at) = bounded("the waiter", second).await.unwrap();
    let second = second.expect("the waiter acquires");
    assert!(at - released >= delay, "held after {:?}", at - released);
    bounded("release", release_lock(&etcd, second))
        .await
        .unwrap();
    assert!(keys_under(&cluster, Some(ROOT), "/locks/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_permission_on_the_prefix_gets_permission_denied() {
    let cluster = EtcdCluster::single();
    enable_auth(&cluster);
    let name = unique_name("auth-perm");

    let stranger = EtcdOptions::new(cluster.endpoints()).with_user("stranger", "strangerpw");
    let text = refused(stranger.clone(), &name).await;
    assert!(
        text.to_lowercase().contains("permission denied"),
        "not a permission error: {text}"
    );
    assert!(keys_under(&cluster, Some(ROOT), "/locks/").is_empty());

    // Under a prefix it may write, the same user can lock.
    let etcd = stranger.connect_etcd().await.expect("connect");
    let handle = bounded(
        "acquire",
        acquire_lock(&etcd, &name, &lock_opts().with_prefix("/other/")),
    )
    .await
    .expect("acquire under /other/");
    assert!(handle.token().0 > 0);
    release_lock(&etcd, handle).await.expect("release");
}

/// Bonus: with client-cert-auth and etcd auth both on, etcd takes the user from the
/// certificate's common name; no password needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_cert_common_name_is_the_etcd_user() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    // The harness's own certificate has CN=root, so it stays root after `auth enable`.
    enable_auth(&cluster);
    let locker = pki.issue_client("locker", "locker");
    let stranger = pki.issue_client("stranger", "stranger");
    let name = unique_name("tls-cn");

    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&locker.cert, &locker.key);
    acquire_and_release(&opts, &name).await;

    let opts = EtcdOptions::new(cluster.endpoints())
        .with_ca_file(&pki.ca_cert)
        .with_client_cert(&stranger.cert, &stranger.key);
    let text = refused(opts, &name).await;
    assert!(text.to_lowercase().contains("permission denied"), "{text}");
}

// === the sidecar binary ===
// === auth tokens that expire ===
//
// etcd hands out an auth token per authentication; a simple token dies after
// `--auth-token-ttl` seconds without a request that uses it (lease keepalives and open watches
// do not count), a JWT after its `ttl` whatever happens. A holder that only renews its lease, or
// a standby that only watches, outlives its token; its next request (the release, the read after
// the watch fires) must authenticate again, not fail with "invalid auth token" forever.

/// Library: a lock taken before the token expired is released after it (its key is deleted),
/// a connection whose token expired while idle still acquires, and a watch opened with an
/// expired token (which etcd cancels at once, with no error the client could react to) still
/// sees the deletion it waits for.
async fn library_survives_token_expiry(kind: TokenKind) {
    let (cluster, _keys) = cluster_with_short_lived_tokens(kind);
    let name = unique_name("token-lib");
    let watched = format!("/locks/{name}-watched");
    let locker = EtcdOptions::new(cluster.endpoints()).with_user("locker", LOCKER_PASSWORD);
    let mut control = stale_client(&cluster).await;
    let put = control.put(watched.as_str(), "x", None).await.expect("put");
    let put_revision = put.header().expect("response header").revision();
    let holding = locker.connect_etcd().await.expect("connect");
    let idle = locker.connect_etcd().await.expect("connect");
    let watching = locker.connect_etcd().await.expect("connect");
    let lock = DistributedLock::new(holding, name.as_str(), lock_opts()).expect("lock");
    let guard = bounded("lock", lock.lock()).await.expect("lock()");

    outlive_the_tokens().await;
    assert_token_expired(&mut control).await;

    // The first request on `watching` since its token expired is the watch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiter = tokio::spawn({
        let watched = watched.clone();
        async move {
            lockkeeper::wait_for_deletion(&watching, &watched, put_revision + 1, Some(deadline))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl(&cluster, Some(ROOT), &["del", &watched]);
    let deleted_at = waiter
        .await
        .expect("wait_for_deletion task")
        .expect("the deletion is seen through a watch opened with an expired token");
    assert!(deleted_at > put_revision);

    assert!(bounded("is_locked", guard.is_locked())
        .await
        .expect("is_locked"));
    bounded("release", guard.release())
        .await
        .expect("release after the token expired");
    assert!(keys_under(&cluster, Some(ROOT), &format!("/locks/{name}/")).is_empty());

    let handle = bounded("acquire", acquire_lock(&idle, &name, &lock_opts()))
        .await
        .expect("acquire on a connection whose token expired");
    bounded("release", release_lock(&idle, handle))
        .await
        .expect("release");
    assert!(keys_under(&cluster, Some(ROOT), &format!("/locks/{name}/")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_releases_and_acquires_after_simple_auth_token_expired() {
    library_survives_token_expiry(TokenKind::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_releases_and_acquires_after_jwt_auth_token_expired() {
    library_survives_token_expiry(TokenKind::Jwt).await;
}
