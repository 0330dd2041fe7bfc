//! The sidecar binary against a secured etcd: TLS with client-certificate authentication
//! (certificates generated here, see crates/testkit/src/tls.rs) and etcd's user/role auth. Right
//! credentials work; wrong ones leave the sidecar unready but alive, and never put the secret in
//! a log. Auth tokens that expire while a lock is held or waited for are renewed: holders hand
//! over at once. (The library's side of this: crates/lockkeeper/tests/auth_tls.rs.)

use std::fs;
use std::time::{Duration, Instant};

use testkit::auth::{
    assert_token_expired, cluster_with_short_lived_tokens, ctl, enable_auth, keys_under, path_str,
    stale_client, TokenKind, LOCKER_PASSWORD, ROOT, TOKEN_TTL, WRONG_PASSWORD,
};
use testkit::{unique_name, EtcdCluster, Sidecar, TestPki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_over_tls_becomes_ready_and_exits_cleanly() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let name = unique_name("sidecar-tls");
    let mut sidecar = Sidecar::start_with_env(
        &cluster.endpoints(),
        &name,
        "x",
        "3s",
        &[
            "--etcd-ca-file",
            path_str(&pki.ca_cert),
            "--etcd-cert-file",
            path_str(&pki.client.cert),
            "--etcd-key-file",
            path_str(&pki.client.key),
        ],
        &[],
    );
    sidecar.wait_ready(Duration::from_secs(20));
    assert_eq!(
        keys_under(&cluster, None, &format!("/locks/{name}/")).len(),
        1
    );

    let status = sidecar.sigterm_and_wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit {status}:\n{}", sidecar.log());
    // A clean stop releases the lock.
    assert!(keys_under(&cluster, None, &format!("/locks/{name}/")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_with_rogue_client_cert_stays_unready_and_alive() {
    let pki = TestPki::generate();
    let cluster = EtcdCluster::single_tls(&pki.etcd_tls());
    let name = unique_name("sidecar-rogue");
    let mut sidecar = Sidecar::start_with_env(
        &cluster.endpoints(),
        &name,
        "x",
        "3s",
        &[
            "--etcd-ca-file",
            path_str(&pki.ca_cert),
            "--etcd-cert-file",
            path_str(&pki.rogue_client.cert),
            "--etcd-key-file",
            path_str(&pki.rogue_client.key),
        ],
        &[],
    );
    sidecar.assert_unready_but_live(Duration::from_secs(4));
    assert!(keys_under(&cluster, None, "/locks/").is_empty());
    let status = sidecar.sigterm_and_wait(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", sidecar.log());
    let log = sidecar.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_with_wrong_password_stays_unready_alive_and_quiet_about_it() {
    let cluster = EtcdCluster::single();
    enable_auth(&cluster);
    let name = unique_name("sidecar-auth");
    let mut sidecar = Sidecar::start_with_env(
        &cluster.endpoints(),
        &name,
        "x",
        "3s",
        &["--etcd-username", "locker"],
        &[("LOCKKEEPER_ETCD_PASSWORD", WRONG_PASSWORD)],
    );

    // ...then never ready, always live, never crashing, for a few seconds of retries.
    sidecar.assert_unready_but_live(Duration::from_secs(4));
    assert!(keys_under(&cluster, Some(ROOT), "/locks/").is_empty());

    let log = sidecar.log();
    assert!(
        !log.contains(WRONG_PASSWORD),
        "the password is in the log:\n{log}"
    );
    assert!(
        log.to_lowercase().contains("authentication"),
        "the log does not say why it cannot connect:\n{log}"
    );
    let status = sidecar.sigterm_and_wait(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", sidecar.log());
    assert!(!sidecar.log().contains(WRONG_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_with_password_file_holds_the_lock() {
    let cluster = EtcdCluster::single();
    enable_auth(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    fs::write(&password_file, format!("{LOCKER_PASSWORD}\n")).unwrap();
    let name = unique_name("sidecar-pwfile");
    let mut sidecar = Sidecar::start_with_env(
        &cluster.endpoints(),
        &name,
        "x",
        "3s",
        &[
            "--etcd-username",
            "locker",
            "--etcd-password-file",
            path_str(&password_file),
        ],
        &[],
    );
    sidecar.wait_ready(Duration::from_secs(20));
    assert_eq!(
        keys_under(&cluster, Some(ROOT), &format!("/locks/{name}/")).len(),
        1
    );
    let status = sidecar.sigterm_and_wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit {status}:\n{}", sidecar.log());
    assert!(!sidecar.log().contains(LOCKER_PASSWORD));
}

// === auth tokens that expire ===
//
// etcd hands out an auth token per authentication; a simple token dies after
// `--auth-token-ttl` seconds without a request that uses it (lease keepalives and open watches
// do not count), a JWT after its `ttl` whatever happens. A holder that only renews its lease, or
// a standby that only watches, outlives its token; its next request (the release, the read after
// the watch fires) must authenticate again, not fail with "invalid auth token" forever.

/// Sidecars: a holder and a standby idle for four token lifetimes, then the holder is
/// SIGTERMed: its release deletes its key and revokes its lease at once (long before the lock's
/// TTL would), and the standby is ready within a second.
async fn sidecars_hand_over_after_token_expiry(kind: TokenKind) {
    const LOCK_TTL: Duration = Duration::from_secs(20);
    let (cluster, _keys) = cluster_with_short_lived_tokens(kind);
    let name = unique_name("token-sidecar");
    let prefix = format!("/locks/{name}/");
    let start = |identity: &str| {
        Sidecar::start_with_env(
            &cluster.endpoints(),
            &name,
            identity,
            &format!("{}s", LOCK_TTL.as_secs()),
            &["--etcd-username", "locker"],
            &[("LOCKKEEPER_ETCD_PASSWORD", LOCKER_PASSWORD)],
        )
    };
    let mut control = stale_client(&cluster).await;
    let mut holder = start("holder");
    holder.wait_ready(Duration::from_secs(20));
    let standby = start("standby");
    let queued = Instant::now();
    while standby.status()["state"] != "waiting" {
        assert!(
            queued.elapsed() < Duration::from_secs(20),
            "standby never queued: {}\n{}",
            standby.status(),
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = holder.status();
    let key = held["key"].as_str().expect("holder's key").to_owned();
    let lease = held["lease_id"]
        .as_str()
        .expect("holder's lease")
        .to_owned();

    tokio::time::sleep(TOKEN_TTL * 4 + Duration::from_secs(1)).await;
    assert_token_expired(&mut control).await;
    assert_eq!(holder.ready(), Some(true), "{}", holder.log());
    assert_eq!(standby.ready(), Some(false), "{}", standby.log());

    let stopped = Instant::now();
    holder.signal("TERM");
    let handover = loop {
        if standby.ready() == Some(true) {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(1),
            "standby not ready within 1s of the holder's SIGTERM\n--- holder ---\n{}\n--- standby ---\n{}",
            holder.log(),
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exit = holder
        .wait_exit(Duration::from_secs(10))
        .expect("the holder exits after SIGTERM");
    assert!(exit.success(), "exit {exit:?}:\n{}", holder.log());
    let keys = keys_under(&cluster, Some(ROOT), &prefix);
    assert!(!keys.contains(&key), "old key {key} left: {keys:?}");
    let out = ctl(&cluster, Some(ROOT), &["lease", "list"]);
    let leases = String::from_utf8_lossy(&out.stdout);
    assert!(!leases.contains(&lease), "old lease {lease} left: {leases}");
    // Gone by release, not by expiry of the lease.
    assert!(
        stopped.elapsed() < LOCK_TTL / 2,
        "checked only {:?} after SIGTERM",
        stopped.elapsed()
    );
    assert!(
        standby.status()["fencing_token"].as_i64().unwrap()
            > held["fencing_token"].as_i64().unwrap()
    );
    eprintln!("{kind:?} tokens: hand-over after SIGTERM took {handover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_hand_over_after_simple_auth_tokens_expired() {
    sidecars_hand_over_after_token_expiry(TokenKind::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_hand_over_after_jwt_auth_tokens_expired() {
    sidecars_hand_over_after_token_expiry(TokenKind::Jwt).await;
}
