//! How a cluster is set up beyond the defaults (TLS for clients, more flags such as the auth
//! token settings), and the command-line tools the harness runs against it: the etcd and
//! etcdctl binaries, and `etcdctl` with the harness's own client identity.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{EtcdCluster, PROBE_TIMEOUT};
use crate::process::remove_env_with_prefix;

/// How to start a cluster; `EtcdSetup::default()` is what `start` uses (plain HTTP).
#[derive(Clone, Debug, Default)]
pub struct EtcdSetup {
    /// Serve clients over TLS (peers stay on plain HTTP).
    pub tls: Option<EtcdTls>,
    /// More flags for every member, after the harness's own: e.g. the auth token settings
    /// `--auth-token=simple` and `--auth-token-ttl=3`. Files they name must outlive the
    /// cluster (members read them again on restart).
    pub extra_args: Vec<String>,
}

/// Server-side TLS files of every member, plus the client identity the harness itself uses
/// (health waits, leader lookups, `etcdctl()`). The files are read again when a member
/// restarts, so they must outlive the cluster (e.g. keep the `TestPki` alive).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// CA bundle: etcd's `--trusted-ca-file` for client certs, and what the harness trusts.
    pub ca_file: PathBuf,
    /// Server certificate (SAN IP 127.0.0.1) and key: `--cert-file`, `--key-file`.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `--client-cert-auth`: refuse clients without a certificate signed by `ca_file`.
    pub client_cert_auth: bool,
    /// Client certificate and key the harness presents (signed by `ca_file`).
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
}

impl EtcdSetup {
    /// Panics unless every TLS file it names exists.
    pub(super) fn check_files(&self) {
        if let Some(tls) = &self.tls {
            for file in [
                &tls.ca_file,
                &tls.cert_file,
                &tls.key_file,
                &tls.client_cert_file,
                &tls.client_key_file,
            ] {
                assert!(file.is_file(), "TLS file {} is missing", file.display());
            }
        }
    }
}

impl EtcdCluster {
    /// `etcdctl` (API v3) with `--endpoints` set to every member; add the subcommand and run it.
    /// With TLS it also trusts the cluster's CA and presents the harness's client certificate.
    /// Once etcd auth is enabled, add `--user=NAME:PASSWORD`.
    pub fn etcdctl(&self) -> Command {
        etcdctl_command(&self.endpoints(), self.setup.tls.as_ref())
    }

    /// `etcdctl` (API v3) talking to member `i` only. (A second `--endpoints` flag would add
    /// to the first, not replace it.)
    pub fn etcdctl_member(&self, i: usize) -> Command {
        etcdctl_command(&[self.endpoint(i)], self.setup.tls.as_ref())
    }
}

/// The etcd server: `$LOCKKEEPER_ETCD_BIN`, else `etcd` on PATH, else /usr/bin/etcd. Panics
/// with install instructions when missing (tests never skip).
pub fn etcd_bin() -> PathBuf {
    find_binary("LOCKKEEPER_ETCD_BIN", "etcd", "etcd-server")
}

/// etcdctl: `$LOCKKEEPER_ETCDCTL_BIN`, else `etcdctl` on PATH, else /usr/bin/etcdctl.
pub fn etcdctl_bin() -> PathBuf {
    find_binary("LOCKKEEPER_ETCDCTL_BIN", "etcdctl", "etcd-client")
}

pub(crate) fn etcdctl_command(endpoints: &[String], tls: Option<&EtcdTls>) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    // ETCDCTL_* variables (e.g. ETCDCTL_ENDPOINTS) from the environment would conflict.
    remove_env_with_prefix(&mut cmd, "ETCDCTL_");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")));
    if let Some(tls) = tls {
        cmd.arg(format!("--cacert={}", tls.ca_file.display()))
            .arg(format!("--cert={}", tls.client_cert_file.display()))
            .arg(format!("--key={}", tls.client_key_file.display()));
    }
    cmd
}

/// Bounds for one etcdctl probe, so a slow or stuck member cannot hang a health wait.
pub(super) fn etcdctl_probe_timeouts() -> [String; 2] {
    let ms = PROBE_TIMEOUT.as_millis();
    [
        format!("--dial-timeout={ms}ms"),
        format!("--command-timeout={ms}ms"),
    ]
}

fn find_binary(env_var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "{env_var}={} is not an executable file",
            path.display()
        );
        return path;
    }
    let on_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let fallback = Path::new("/usr/bin").join(name);
    on_path
        .chain([fallback])
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found: set {env_var}, put it on PATH, or install it \
                 (`apt-get install {package}`, or run `scripts/install-deps.sh`)"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
