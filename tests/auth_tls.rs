//! lockkeeper against a secured etcd: TLS with client-certificate authentication (certificates
//! generated here, see tests/support/tls.rs) and etcd's user/role auth. Right credentials work
//! for the library and the sidecar binary; wrong ones give a clear error in bounded time, never
//! a panic or a crash, and never put the secret in a log.

mod support;

use std::fs;
use std::future::Future;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockkeeper::{acquire_lock, release_lock, DistributedLock, EtcdOptions, LockOptions};
use support::{unique_name, EtcdCluster, EtcdSetup, Sidecar, TestPki};

/// Bound on every library call that is expected to fail: it must fail, not hang.
const FAIL_WITHIN: Duration = Duration::from_secs(15);
const ROOT: &str = "root:rootpw";
const LOCKER_PASSWORD: &str = "lockerpw";
/// Distinctive, so a search of the logs cannot match anything by accident.
const WRONG_PASSWORD: &str = "Wr0ng-s3cret-7f3a9c";

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

fn run(mut cmd: Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `etcdctl ARGS` on the cluster, as root once auth is enabled.
fn ctl(cluster: &EtcdCluster, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = cluster.etcdctl();
    if let Some(user) = user {
        cmd.arg(format!("--user={user}"));
    }
    cmd.args(args);
    run(cmd)
}

/// Users `root`, `locker` (readwrite on `/locks/`) and `stranger` (readwrite on `/other/`
/// only), then `auth enable`.
fn enable_auth(cluster: &EtcdCluster) {
    for args in [
        &["user", "add", ROOT][..],
        &["role", "add", "locker"],
        &[
            "role",
            "grant-permission",
            "locker",
            "--prefix=true",
            "readwrite",
            "/locks/",
        ],
        &["user", "add", "locker:lockerpw"],
        &["user", "grant-role", "locker", "locker"],
        &["role", "add", "other"],
        &[
            "role",
            "grant-permission",
            "other",
            "--prefix=true",
            "readwrite",
            "/other/",
        ],
        &["user", "add", "stranger:strangerpw"],
        &["user", "grant-role", "stranger", "other"],
        &["auth", "enable"],
    ] {
        ctl(cluster, None, args);
    }
}

/// Keys under `prefix`, read as root (or with the harness's TLS identity).
fn keys_under(cluster: &EtcdCluster, user: Option<&str>, prefix: &str) -> Vec<String> {
    let out = ctl(cluster, user, &["get", "--prefix", "--keys-only", prefix]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
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

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
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
