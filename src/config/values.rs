//! The resolved configuration and its value types: [`Config`] (every setting concrete, defaults
//! applied), [`KubeConfig`], the small types settings are made of ([`Secret`], [`LogFormat`],
//! [`KubeMode`]), and [`ConfigError`], the one error every layer reports.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use lockkeeper::{EtcdOptions, LockOptions, SessionOptions};

/// Address the HTTP server listens on in `run` mode unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8475";
/// Pod condition type set while holding, unless configured otherwise (the reporter's own).
pub use crate::kubernetes::DEFAULT_CONDITION_TYPE;

// === errors ===

/// An invalid setting: which field, and what is wrong with it. Displays as one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The setting at fault, as named in the YAML file (`lock.ttl`, `etcd.endpoints`, `config`).
    pub field: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    /// The process exit code for invalid configuration (the same as clap's usage errors).
    pub const EXIT_CODE: i32 = 2;

    /// An error for `field`; line breaks in the field and the message are folded so the error
    /// stays on one line, and an empty field (an empty YAML key) is shown as `""`.
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> Self {
        let message = message.to_string().replace(['\r', '\n'], " ");
        let field = field.into().replace(['\r', '\n'], " ");
        Self {
            field: if field.is_empty() {
                "\"\"".into()
            } else {
                field
            },
            message,
        }
    }
}

// === small value types ===

/// A secret string (the etcd password). Its `Debug` output is redacted and it has no `Display`,
/// so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it (the etcd client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, event fields flattened (the default).
    #[default]
    Json,
    /// Human-readable text.
    #[serde(alias = "plain")]
    Text,
}

/// Whether to talk to the Kubernetes API (pod condition, label, events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KubeMode {
    /// Use it when running in a pod (service account token present and a pod name known).
    #[default]
    Auto,
    /// Always use it; failing to reach the API is logged and retried, never fatal.
    On,
    /// Never use it.
    Off,
}

impl<'de> Deserialize<'de> for KubeMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl Visitor<'_> for ModeVisitor {
            type Value = KubeMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, on, off, true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KubeMode, E> {
                Ok(if v { KubeMode::On } else { KubeMode::Off })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KubeMode, E> {
                match v {
                    "auto" => Ok(KubeMode::Auto),
                    "on" | "true" => Ok(KubeMode::On),
                    "off" | "false" => Ok(KubeMode::Off),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(ModeVisitor)
    }
}

/// Parses a human duration (`10s`, `500ms`, `1m30s`), with a message that says what is expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); expected e.g. 10s, 500ms or 1m30s"))
}

// === the resolved configuration ===

/// Kubernetes integration settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeConfig {
    /// Whether to use the Kubernetes API.
    pub mode: KubeMode,
    /// Pod condition type set while holding (`None`: no condition).
    pub condition_type: Option<String>,
    /// Pod label key set while holding (`None`: no label).
    pub label: Option<String>,
    /// Whether to publish Kubernetes Events.
    pub events: bool,
    /// Our pod's name (YAML, else env `POD_NAME`).
    pub pod_name: Option<String>,
    /// Our pod's namespace (YAML, else env `POD_NAMESPACE`).
    pub namespace: Option<String>,
}

/// The resolved, validated configuration: every value concrete, defaults applied. Its `Debug`
/// output redacts the etcd password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The YAML file the settings were read from, if any.
    pub config_file: Option<PathBuf>,
    /// etcd client URLs (`http(s)://host:port` or `host:port`).
    pub etcd_endpoints: Vec<String>,
    /// etcd user name (always set together with the password).
    pub etcd_username: Option<String>,
    /// etcd password, from the flag, environment, YAML or the password file.
    pub etcd_password: Option<Secret>,
    /// PEM CA bundle (enables TLS).
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate (always set together with the key).
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM client key.
    pub etcd_key_file: Option<PathBuf>,
    /// Connection timeout per member (default 3s).
    pub etcd_connect_timeout: Duration,
    /// Timeout of each etcd request (default 5s).
    pub etcd_request_timeout: Duration,
    /// Lock name.
    pub lock_name: String,
    /// Key prefix (default `/locks/`).
    pub prefix: String,
    /// Value written under our key (default: `POD_NAME`, else the hostname).
    pub identity: String,
    /// Session lease TTL, whole seconds, at least 2s (default 10s).
    pub ttl: Duration,
    /// Keepalive period (default ttl/3).
    pub renew_interval: Duration,
    /// Readiness ends this long before the lease could expire (default ttl/5).
    pub safety_margin: Duration,
    /// Wait this long before holding when the predecessor vanished without a release record
    /// (default the safety margin; zero turns it off).
    pub lock_delay: Duration,
    /// HTTP listen address; `None` means no HTTP server.
    pub listen: Option<SocketAddr>,
    /// Log line format on stderr.
    pub log_format: LogFormat,
    /// `EnvFilter` directives (default `info`).
    pub log_level: String,
    /// JSON-lines file receiving audit events.
    pub audit_file: Option<PathBuf>,
    /// Testing aid: JSON-lines readiness history (`--history-file`, flag and environment only).
    pub history_file: Option<PathBuf>,
    /// Time between readiness off and releasing the lock on shutdown (default 0s).
    pub drain_delay: Duration,
    /// Bound on the whole shutdown (default 10s).
    pub shutdown_timeout: Duration,
    /// Kubernetes integration.
    pub kube: KubeConfig,
    /// `exec`: SIGTERM goes to the child this long before the local deadline, SIGKILL at it
    /// (default half the room a lost keepalive leaves, TTL/15 by default; zero for `run`).
    pub kill_after: Duration,
}

impl Config {
    /// Connection settings for the etcd client.
    pub fn etcd_options(&self) -> EtcdOptions {
        let mut opts = EtcdOptions::new(self.etcd_endpoints.iter().cloned())
            .with_connect_timeout(self.etcd_connect_timeout);
        if let (Some(user), Some(password)) = (&self.etcd_username, &self.etcd_password) {
            opts = opts.with_user(user.clone(), password.expose());
        }
        if let Some(ca) = &self.etcd_ca_file {
            opts = opts.with_ca_file(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.etcd_cert_file, &self.etcd_key_file) {
            opts = opts.with_client_cert(cert.clone(), key.clone());
        }
        opts
    }

    /// Prefix, identity and session settings for acquiring the lock (no acquire timeout).
    pub fn lock_options(&self) -> LockOptions {
        LockOptions::new()
            .with_prefix(self.prefix.clone())
            .with_identity(self.identity.clone())
            .with_session(self.session_options())
            .with_lock_delay(self.lock_delay)
    }

    /// Session lease settings: TTL, keepalive interval and safety margin.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions::new(self.ttl)
            .with_keepalive_interval(self.renew_interval)
            .with_safety_margin(self.safety_margin)
    }

    /// Bound on each etcd request.
    pub fn request_timeout(&self) -> Duration {
        self.etcd_request_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
