//! What the command line and the `LOCKKEEPER_*` environment variables gave: plain data, one
//! `Option` per setting (`None`: not given), which [`super::load`] layers over the YAML file and
//! the defaults. The command line (`crate::cli`) converts its parsed arguments into these.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{KubeMode, LogFormat, Secret};

/// Settings of `run` and `exec` given by flags or their environment variables, before the YAML
/// file and the defaults are applied. Field names follow the flags (`--etcd-endpoints` is
/// `etcd_endpoints`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // one field per flag, documented on the flag
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub etcd_endpoints: Option<Vec<String>>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<Secret>,
    pub etcd_password_file: Option<PathBuf>,
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    pub etcd_connect_timeout: Option<Duration>,
    pub etcd_request_timeout: Option<Duration>,
    pub lock: Option<String>,
    pub prefix: Option<String>,
    pub identity: Option<String>,
    pub ttl: Option<Duration>,
    pub renew_interval: Option<Duration>,
    pub safety_margin: Option<Duration>,
    pub lock_delay: Option<Duration>,
    pub listen: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub audit_log: Option<PathBuf>,
    pub history_file: Option<PathBuf>,
    pub drain_delay: Option<Duration>,
    pub shutdown_timeout: Option<Duration>,
    pub kube: Option<KubeMode>,
    pub kube_condition_type: Option<String>,
    pub kube_label: Option<String>,
    pub kube_events: Option<bool>,
}

/// Settings of `exec`: those of `run`, and how long the child gets between SIGTERM and SIGKILL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOverrides {
    /// The settings shared with `run`.
    pub lock: Overrides,
    /// `--kill-after`.
    pub kill_after: Option<Duration>,
}
