//! Secured etcd for the auth and TLS tests of both packages: users and roles, `etcdctl` as
//! one of them, and clusters whose auth tokens expire quickly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::{EtcdCluster, EtcdSetup};

/// The etcd root user, `user:password`, as `etcdctl --user` takes it.
pub const ROOT: &str = "root:rootpw";
/// The password of [`enable_auth`]'s `locker` user.
pub const LOCKER_PASSWORD: &str = "lockerpw";
/// Distinctive, so a search of the logs cannot match anything by accident.
pub const WRONG_PASSWORD: &str = "Wr0ng-s3cret-7f3a9c";

/// Runs `cmd` (no stdin) and asserts it succeeded.
pub fn run(mut cmd: Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
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
pub fn ctl(cluster: &EtcdCluster, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = cluster.etcdctl();
    if let Some(user) = user {
        cmd.arg(format!("--user={user}"));
    }
    cmd.args(args);
    run(cmd)
}

/// Users `root`, `locker` (readwrite on `/locks/`) and `stranger` (readwrite on `/other/`
/// only), then `auth enable`.
pub fn enable_auth(cluster: &EtcdCluster) {
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
pub fn keys_under(cluster: &EtcdCluster, user: Option<&str>, prefix: &str) -> Vec<String> {
    let out = ctl(cluster, user, &["get", "--prefix", "--keys-only", prefix]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A path as the `&str` a command-line flag takes.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The lifetime of every auth token in these tests.
pub const TOKEN_TTL: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
pub enum TokenKind {
    /// `--auth-token=simple` with `--auth-token-ttl`.
    Simple,
    /// RS256 JWTs with a `ttl`.
    Jwt,
}

/// A one-member cluster with `enable_auth`'s users, whose tokens of `kind` live `TOKEN_TTL`.
/// The directory holds the JWT signing keys: keep it as long as the cluster.
pub fn cluster_with_short_lived_tokens(kind: TokenKind) -> (EtcdCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ttl = TOKEN_TTL.as_secs();
    let extra_args = match kind {
        TokenKind::Simple => vec![
            "--auth-token=simple".to_owned(),
            format!("--auth-token-ttl={ttl}"),
        ],
        TokenKind::Jwt => {
            let (private, public) = rsa_key_pair(dir.path());
            vec![format!(
                "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl={ttl}s",
                public.display(),
                private.display()
            )]
        }
    };
    let cluster = EtcdCluster::start_with(
        1,
        EtcdSetup {
            extra_args,
            ..EtcdSetup::default()
        },
    );
    enable_auth(&cluster);
    (cluster, dir)
}

/// An RSA key pair for etcd's RS256 JWTs, made by `openssl` (installed by
/// scripts/install-deps.sh): (private key, public key), PEM.
pub fn rsa_key_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let private = dir.join("jwt.key");
    let public = dir.join("jwt.pub");
    let mut genrsa = Command::new("openssl");
    genrsa.args(["genrsa", "-out", path_str(&private), "2048"]);
    run(genrsa);
    let mut pubout = Command::new("openssl");
    pubout.args([
        "rsa",
        "-in",
        path_str(&private),
        "-pubout",
        "-out",
        path_str(&public),
    ]);
    run(pubout);
    (private, public)
}

/// Long enough for any token handed out before it to be dead: simple tokens are swept once a
/// second after their TTL.
pub async fn outlive_the_tokens() {
    tokio::time::sleep(TOKEN_TTL * 2 + Duration::from_secs(1)).await;
}

/// The control: a plain etcd-client connection (no token refresh) made before
/// `outlive_the_tokens` is refused afterwards, so the tests below really ran on dead tokens.
pub async fn assert_token_expired(stale: &mut Client) {
    let err = stale
        .get("/locks/", None)
        .await
        .expect_err("a request with a token past its TTL must be refused");
    assert!(
        err.to_string().contains("invalid auth token"),
        "not a token expiry: {err}"
    );
}

/// A plain etcd-client connection as `locker`, without token refresh: the control for
/// [`assert_token_expired`].
pub async fn stale_client(cluster: &EtcdCluster) -> Client {
    let opts = ConnectOptions::new().with_user("locker", LOCKER_PASSWORD);
    Client::connect(cluster.endpoints(), Some(opts))
        .await
        .expect("connect the control client")
}
