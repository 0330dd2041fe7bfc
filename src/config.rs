//! The sidecar's configuration: the YAML file schema ([`FileConfig`]), the resolved and
//! validated [`Config`], and [`load`], which merges defaults < YAML file < environment < flags.
//!
//! Every invalid setting is reported before anything starts, as one [`ConfigError`] naming the
//! field (`invalid configuration: lock.ttl: must be at least 2s (got 1s)`); the process then
//! exits with [`ConfigError::EXIT_CODE`]. Nothing here panics on user input.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::cli::{ExecArgs, LockArgs};
use crate::{EtcdOptions, LockOptions, SessionOptions};

/// Address the HTTP server listens on in `run` mode unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8475";
/// Pod condition type set while holding, unless configured otherwise.
pub const DEFAULT_CONDITION_TYPE: &str = "lockkeeper.io/lock-held";

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, event fields flattened (the default).
    #[default]
    Json,
    /// Human-readable text.
    #[serde(alias = "plain")]
    #[value(alias = "plain")]
    Text,
}

/// Whether to talk to the Kubernetes API (pod condition, label, events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    /// Use it when running in a pod (service account token present and a pod name known).
    #[default]
    Auto,
    /// Always use it; failing to reach the API is logged and retried, never fatal.
    #[value(alias = "true")]
    On,
    /// Never use it.
    #[value(alias = "false")]
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

/// Optional durations in the YAML file, written as human strings (`10s`).
mod human {
    use super::*;

    struct DurationVisitor;

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, like \"10s\" or \"500ms\"")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map(Some).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, like \"{v}s\""
            )))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, like \"{v}s\""
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, like \"{v}s\""
            )))
        }
    }

    pub(super) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(DurationVisitor)
    }
}

// === the YAML file ===

/// The YAML configuration file. Every section and key is optional; unknown keys are errors.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// How to reach etcd.
    pub etcd: EtcdSection,
    /// Which lock to hold, and how.
    pub lock: LockSection,
    /// HTTP listen address (`IP:PORT`, or `off`).
    pub listen: Option<String>,
    /// Logging.
    pub log: LogSection,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSection,
    /// Kubernetes integration.
    pub kubernetes: KubernetesSection,
    /// `lockkeeper exec` settings.
    pub exec: ExecSection,
}

/// `etcd:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSection {
    /// Client URLs.
    pub endpoints: Option<Vec<String>>,
    /// etcd user name.
    pub username: Option<String>,
    /// etcd password (prefer `password_file` or the environment).
    pub password: Option<Secret>,
    /// File holding the etcd password.
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle that verifies the servers.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM client key.
    pub key_file: Option<PathBuf>,
    /// Connection timeout per member.
    #[serde(deserialize_with = "human::option")]
    pub connect_timeout: Option<Duration>,
    /// Timeout of each etcd request.
    #[serde(deserialize_with = "human::option")]
    pub request_timeout: Option<Duration>,
}

/// `lock:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockSection {
    /// Lock name.
    pub name: Option<String>,
    /// Key prefix.
    pub prefix: Option<String>,
    /// Value written under our key.
    pub identity: Option<String>,
    /// Session lease TTL.
    #[serde(deserialize_with = "human::option")]
    pub ttl: Option<Duration>,
    /// Keepalive period.
    #[serde(deserialize_with = "human::option")]
    pub renew_interval: Option<Duration>,
    /// How long before possible lease expiry readiness is dropped.
    #[serde(deserialize_with = "human::option")]
    pub safety_margin: Option<Duration>,
}

/// `log:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `json` or `text`.
    pub format: Option<LogFormat>,
    /// An `EnvFilter` directive string.
    pub level: Option<String>,
    /// JSON-lines file receiving audit events.
    pub audit_file: Option<PathBuf>,
}

/// `shutdown:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Time between readiness off and releasing the lock.
    #[serde(deserialize_with = "human::option")]
    pub drain_delay: Option<Duration>,
    /// Bound on the whole shutdown.
    #[serde(deserialize_with = "human::option")]
    pub timeout: Option<Duration>,
}

/// `kubernetes:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    /// `auto`, `on`, `off` (or `true`/`false`).
    pub enabled: Option<KubeMode>,
    /// Pod condition type set while holding; empty disables it.
    pub condition_type: Option<String>,
    /// Pod label key set while holding; unset or empty means no label.
    pub label: Option<String>,
    /// Whether to publish Kubernetes Events.
    pub events: Option<bool>,
    /// Our pod's name (default: env `POD_NAME`).
    pub pod_name: Option<String>,
    /// Our pod's namespace (default: env `POD_NAMESPACE`).
    pub namespace: Option<String>,
}

/// `exec:` in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecSection {
    /// Time between SIGTERM and SIGKILL for the child.
    #[serde(deserialize_with = "human::option")]
    pub kill_after: Option<Duration>,
}

impl FileConfig {
    /// Parses YAML text; `origin` (the file path) is only used in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| yaml_error(&e, origin))
    }

    /// Reads and parses a YAML file; an unreadable file is an error for the field `config`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text, path)
    }
}

/// Turns serde_yaml's message (`lock: unknown field `tll`, expected ... at line 3 column 3`)
/// into an error naming the field (`lock.tll`), the file and the position.
fn yaml_error(e: &serde_yaml::Error, origin: &Path) -> ConfigError {
    let mut text = e.to_string();
    let mut position = String::new();
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if text.ends_with(&suffix) {
            text.truncate(text.len() - suffix.len());
        }
        position = format!(", line {} column {}", loc.line(), loc.column());
    }
    // A path prefix like `lock.ttl: ` or `etcd.endpoints[0]: ` names where the error is.
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && p.chars().all(is_yaml_path_char) => (Some(p), m),
        _ => (None, text.as_str()),
    };
    let unknown = ["unknown field `", "duplicate field `"]
        .iter()
        .find_map(|lead| message.strip_prefix(lead))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match (path, unknown) {
        (Some(p), Some(name)) => format!("{p}.{name}"),
        (None, Some(name)) => name.to_owned(),
        (Some(p), None) => p.to_owned(),
        (None, None) => "config".to_owned(),
    };
    ConfigError::new(
        field,
        format!("{message} (in {}{position})", origin.display()),
    )
}

fn is_yaml_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')
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
    /// `exec`: time between SIGTERM and SIGKILL for the child (default 10s).
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

/// Reads the process environment, for [`load`]: `HOSTNAME` falls back to the kernel's hostname.
pub fn system_env(name: &str) -> Option<String> {
    if name == "HOSTNAME" {
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                return Some(h.to_owned());
            }
        }
    }
    std::env::var(name).ok()
}

/// Resolves and validates the configuration of `lockkeeper run`: defaults < YAML file (`--config`)
/// < environment < flags. clap has already merged `LOCKKEEPER_*` variables and flags into
/// `args`; `env` is asked only for `POD_NAME`, `POD_NAMESPACE`, `HOSTNAME` and `RUST_LOG`
/// (pass [`system_env`] in production, a closure in tests).
pub fn load(args: &LockArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    resolve(args, None, Some(DEFAULT_LISTEN), env)
}

/// Like [`load`] for `lockkeeper exec`: adds `--kill-after`, and serves no HTTP unless
/// `--listen` (or its variable or YAML key) is given.
pub fn load_exec(
    args: &ExecArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    resolve(&args.lock, args.kill_after, None, env)
}

// === resolution and validation ===

const DEFAULT_TTL: Duration = Duration::from_secs(10);
const MIN_TTL: Duration = Duration::from_secs(2);
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);
const MAX_IDENTITY_LEN: usize = 253;

fn resolve(
    args: &LockArgs,
    kill_after: Option<Duration>,
    default_listen: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let FileConfig {
        etcd,
        lock,
        listen,
        log,
        shutdown,
        kubernetes,
        exec,
    } = file;

    let lock_name = args.lock.clone().or(lock.name).ok_or_else(|| {
        ConfigError::new(
            "lock.name",
            "is required (--lock, LOCKKEEPER_LOCK or lock.name)",
        )
    })?;
    check_lock_name(&lock_name)?;
    let prefix = args
        .prefix
        .clone()
        .or(lock.prefix)
        .unwrap_or_else(|| crate::DEFAULT_PREFIX.to_owned());
    check_prefix(&prefix)?;
    let ttl = args.ttl.or(lock.ttl).unwrap_or(DEFAULT_TTL);
    check_ttl(ttl)?;
    let safety_margin = args.safety_margin.or(lock.safety_margin).unwrap_or(ttl / 5);
    check_safety_margin(ttl, safety_margin)?;
    let renew_interval = args
        .renew_interval
        .or(lock.renew_interval)
        .unwrap_or(ttl / 3);
    check_renew_interval(ttl, safety_margin, renew_interval)?;

    let etcd_endpoints: Vec<String> = args
        .etcd_endpoints
        .clone()
        .or(etcd.endpoints)
        .unwrap_or_default()
        .iter()
        .map(|e| e.trim().to_owned())
        .collect();
    let etcd_ca_file = args.etcd_ca_file.clone().or(etcd.ca_file);
    let etcd_cert_file = args.etcd_cert_file.clone().or(etcd.cert_file);
    let etcd_key_file = args.etcd_key_file.clone().or(etcd.key_file);
    let tls = etcd_ca_file.is_some() || etcd_cert_file.is_some();
    check_endpoints(&etcd_endpoints, tls)?;
    check_tls_files(&etcd_ca_file, &etcd_cert_file, &etcd_key_file)?;
    let etcd_password = resolve_password(
        args.etcd_password.clone().or(etcd.password),
        args.etcd_password_file.clone().or(etcd.password_file),
    )?;
    let etcd_username = args.etcd_username.clone().or(etcd.username);
    match (&etcd_username, &etcd_password) {
        (Some(_), None) => {
            return Err(ConfigError::new(
                "etcd.password",
                "is required when etcd.username is set",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "etcd.username",
                "is required when a password is set",
            ))
        }
        _ => {}
    }
    let etcd_connect_timeout = positive(
        "etcd.connect_timeout",
        args.etcd_connect_timeout.or(etcd.connect_timeout),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let etcd_request_timeout = positive(
        "etcd.request_timeout",
        args.etcd_request_timeout.or(etcd.request_timeout),
        DEFAULT_REQUEST_TIMEOUT,
    )?;

    let identity = args
        .identity
        .clone()
        .or(lock.identity)
        .or_else(|| env("POD_NAME"))
        .or_else(|| env("HOSTNAME"))
        .ok_or_else(|| {
            ConfigError::new(
                "lock.identity",
                "has no default (POD_NAME and the hostname are unset); set --identity",
            )
        })?;
    check_identity(&identity)?;

    let listen = match args
        .listen
        .as_deref()
        .or(listen.as_deref())
        .or(default_listen)
    {
        Some(text) => parse_listen(text)?,
        None => None,
    };

    let log_format = args.log_format.or(log.format).unwrap_or_default();
    let log_level = args
        .log_level
        .clone()
        .or(log.level)
        .or_else(|| env("RUST_LOG"))
        .unwrap_or_else(|| "info".to_owned());
    check_log_level(&log_level)?;
    let audit_file = args.audit_log.clone().or(log.audit_file);
    if let Some(path) = &audit_file {
        check_audit_file(path)?;
    }

    let drain_delay = args
        .drain_delay
        .or(shutdown.drain_delay)
        .unwrap_or_default();
    let shutdown_timeout = positive(
        "shutdown.timeout",
        args.shutdown_timeout.or(shutdown.timeout),
        DEFAULT_SHUTDOWN_TIMEOUT,
    )?;

    let kube = resolve_kube(args, kubernetes, &env)?;
    let kill_after = kill_after.or(exec.kill_after).unwrap_or(DEFAULT_KILL_AFTER);

    Ok(Config {
        config_file: args.config.clone(),
        etcd_endpoints,
        etcd_username,
        etcd_password,
        etcd_ca_file,
        etcd_cert_file,
        etcd_key_file,
        etcd_connect_timeout,
        etcd_request_timeout,
        lock_name,
        prefix,
        identity,
        ttl,
        renew_interval,
        safety_margin,
        listen,
        log_format,
        log_level,
        audit_file,
        history_file: args.history_file.clone(),
        drain_delay,
        shutdown_timeout,
        kube,
        kill_after,
    })
}

fn resolve_kube(
    args: &LockArgs,
    file: KubernetesSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KubeConfig, ConfigError> {
    let mode = args.kube.or(file.enabled).unwrap_or_default();
    let condition_type = args
        .kube_condition_type
        .clone()
        .or(file.condition_type)
        .unwrap_or_else(|| DEFAULT_CONDITION_TYPE.to_owned());
    let condition_type = Some(condition_type).filter(|c| !c.is_empty());
    if let Some(c) = &condition_type {
        check_qualified_name("kubernetes.condition_type", c)?;
    }
    let label = args
        .kube_label
        .clone()
        .or(file.label)
        .filter(|l| !l.is_empty());
    if let Some(l) = &label {
        check_qualified_name("kubernetes.label", l)?;
    }
    let pod_name = file.pod_name.or_else(|| env("POD_NAME"));
    let namespace = file.namespace.or_else(|| env("POD_NAMESPACE"));
    if mode == KubeMode::On {
        if pod_name.is_none() {
            return Err(ConfigError::new(
                "kubernetes.pod_name",
                "is required when kubernetes.enabled is on (set POD_NAME from the downward API)",
            ));
        }
        if namespace.is_none() {
            return Err(ConfigError::new(
                "kubernetes.namespace",
                "is required when kubernetes.enabled is on (set POD_NAMESPACE from the downward API)",
            ));
        }
    }
    Ok(KubeConfig {
        mode,
        condition_type,
        label,
        events: args.kube_events.or(file.events).unwrap_or(true),
        pod_name,
        namespace,
    })
}

fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

fn positive(
    field: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be greater than 0s"));
    }
    Ok(value)
}

fn check_lock_name(name: &str) -> Result<(), ConfigError> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.ends_with('/') {
        "must not end with '/'"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(ConfigError::new(
        "lock.name",
        format!("{problem} (got {name:?})"),
    ))
}

fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "lock.prefix",
            "must not contain control characters",
        ));
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err(ConfigError::new(
            "lock.prefix",
            format!("must end with '/' (keys are {{prefix}}{{name}}/{{lease}}), or be empty (got {prefix:?})"),
        ));
    }
    Ok(())
}

fn check_identity(identity: &str) -> Result<(), ConfigError> {
    let len = identity.chars().count();
    let problem = if identity.trim().is_empty() {
        "must not be empty".to_owned()
    } else if len > MAX_IDENTITY_LEN {
        format!("must be at most {MAX_IDENTITY_LEN} characters (got {len})")
    } else if identity.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(ConfigError::new("lock.identity", problem))
}

fn check_ttl(ttl: Duration) -> Result<(), ConfigError> {
    if ttl < MIN_TTL {
        return Err(ConfigError::new(
            "lock.ttl",
            format!("must be at least {} (got {})", show(MIN_TTL), show(ttl)),
        ));
    }
    if ttl.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            "lock.ttl",
            format!(
                "must be whole seconds, as etcd grants leases in seconds (got {})",
                show(ttl)
            ),
        ));
    }
    Ok(())
}

fn check_safety_margin(ttl: Duration, margin: Duration) -> Result<(), ConfigError> {
    // Zero is allowed on purpose: fault-injection tests use it as a negative control.
    if margin >= ttl / 2 {
        return Err(ConfigError::new(
            "lock.safety_margin",
            format!(
                "must be less than half of lock.ttl {} (got {})",
                show(ttl),
                show(margin)
            ),
        ));
    }
    Ok(())
}

fn check_renew_interval(
    ttl: Duration,
    margin: Duration,
    renew: Duration,
) -> Result<(), ConfigError> {
    if renew < MIN_RENEW_INTERVAL {
        return Err(ConfigError::new(
            "lock.renew_interval",
            format!(
                "must be at least {} (got {})",
                show(MIN_RENEW_INTERVAL),
                show(renew)
            ),
        ));
    }
    let slack = ttl - margin;
    if renew >= slack {
        return Err(ConfigError::new(
            "lock.renew_interval",
            format!(
                "must be less than lock.ttl - lock.safety_margin = {} so a keepalive lands before the local deadline (got {})",
                show(slack),
                show(renew)
            ),
        ));
    }
    Ok(())
}

fn check_endpoints(endpoints: &[String], tls: bool) -> Result<(), ConfigError> {
    if endpoints.is_empty() {
        return Err(ConfigError::new(
            "etcd.endpoints",
            "at least one is required (--etcd-endpoints, LOCKKEEPER_ETCD_ENDPOINTS or etcd.endpoints)",
        ));
    }
    for e in endpoints {
        if !is_valid_endpoint(e) {
            return Err(ConfigError::new(
                "etcd.endpoints",
                format!("{e:?} is not http://host:port, https://host:port or host:port"),
            ));
        }
        if tls && e.starts_with("http://") {
            return Err(ConfigError::new(
                "etcd.endpoints",
                format!("{e:?} is plain http but TLS files are set; use https:// or no scheme"),
            ));
        }
    }
    Ok(())
}

/// `http(s)://host:port` or `host:port`, with an optional trailing `/`; IPv6 hosts in brackets.
fn is_valid_endpoint(endpoint: &str) -> bool {
    let rest = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some(_) => return false,
        None => endpoint,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        match bracketed.split_once("]:") {
            Some((h, p)) if h.parse::<Ipv6Addr>().is_ok() => (h, p),
            _ => return false,
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p))
                if !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) =>
            {
                (h, p)
            }
            _ => return false,
        }
    };
    !host.is_empty() && matches!(port.parse::<u16>(), Ok(p) if p != 0)
}

fn check_readable(field: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(ConfigError::new(
            field,
            format!("{} is a directory, not a file", path.display()),
        )),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display()))),
        Err(e) => Err(ConfigError::new(
            field,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn check_tls_files(
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    match (cert, key) {
        (Some(_), None) => {
            return Err(ConfigError::new(
                "etcd.cert_file",
                "a client certificate needs a key too (etcd.key_file is not set)",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "etcd.cert_file",
                "is required when etcd.key_file is set (a client key needs its certificate)",
            ))
        }
        _ => {}
    }
    for (field, path) in [
        ("etcd.ca_file", ca),
        ("etcd.cert_file", cert),
        ("etcd.key_file", key),
    ] {
        if let Some(path) = path {
            check_readable(field, path)?;
        }
    }
    Ok(())
}

fn resolve_password(
    password: Option<Secret>,
    password_file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (password, password_file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "etcd.password",
            "set either a password or a password file, not both",
        )),
        (Some(p), None) => Ok(Some(p)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    "etcd.password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let password = text.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(ConfigError::new(
                    "etcd.password_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(Secret(password.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// `IP:PORT`, or `off` for no HTTP server.
fn parse_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if text == "off" {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        ConfigError::new(
            "listen",
            format!("{text:?} is not an IP:PORT socket address (e.g. 0.0.0.0:8475), nor off"),
        )
    })
}

fn check_log_level(level: &str) -> Result<(), ConfigError> {
    if level.trim().is_empty() {
        return Err(ConfigError::new(
            "log.level",
            "must not be empty (e.g. info)",
        ));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| ConfigError::new("log.level", format!("{level:?} is not a valid filter: {e}")))
}

fn check_audit_file(path: &Path) -> Result<(), ConfigError> {
    if path.is_dir() {
        return Err(ConfigError::new(
            "log.audit_file",
            format!("{} is a directory, not a file", path.display()),
        ));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        if !dir.is_dir() {
            return Err(ConfigError::new(
                "log.audit_file",
                format!("directory {} does not exist", dir.display()),
            ));
        }
    }
    Ok(())
}

/// A Kubernetes qualified name (`[prefix/]name`), the form of label keys and condition types.
fn check_qualified_name(field: &str, value: &str) -> Result<(), ConfigError> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    let name_ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let prefix_ok = prefix.is_none_or(|p| {
        (1..=253).contains(&p.len())
            && p.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with('-')
                    && !part.ends_with('-')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{value:?} is not a Kubernetes qualified name like lockkeeper.io/lock-held"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_urls_and_host_port() {
        for ok in [
            "http://10.0.0.1:2379",
            "https://etcd-0.etcd:2379",
            "etcd:2379",
            "http://[::1]:2379/",
            "[fe80::1]:2379",
        ] {
            assert!(is_valid_endpoint(ok), "{ok}");
        }
        for bad in [
            "",
            "etcd",
            "etcd:",
            "etcd:0",
            "etcd:99999",
            "grpc://etcd:2379",
            "http://:2379",
            "http://etcd:2379/v3/kv",
            "[zz]:2379",
            "a b:2379",
        ] {
            assert!(!is_valid_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn yaml_errors_name_the_field_file_and_position() {
        let origin = Path::new("/etc/lk.yaml");
        let e = FileConfig::parse("lock:\n  name: x\n  tll: 3s\n", origin).unwrap_err();
        assert_eq!(e.field, "lock.tll");
        assert!(e.message.contains("unknown field `tll`"), "{e}");
        assert!(e.message.contains("/etc/lk.yaml, line 3 column 3"), "{e}");

        let e = FileConfig::parse("bogus: 1\n", origin).unwrap_err();
        assert_eq!(e.field, "bogus");
        assert!(e.message.contains("line 1 column 1"), "{e}");

        let e = FileConfig::parse("lock:\n  ttl: soon\n", origin).unwrap_err();
        assert_eq!(e.field, "lock.ttl");
        assert!(e.message.contains("invalid duration"), "{e}");

        let e = FileConfig::parse("lock:\n  ttl: 10\n", origin).unwrap_err();
        assert_eq!(e.field, "lock.ttl");
        assert!(e.message.contains("a unit is required"), "{e}");

        let e = FileConfig::parse("kubernetes:\n  enabled: maybe\n", origin).unwrap_err();
        assert_eq!(e.field, "kubernetes.enabled");

        let e = FileConfig::parse("listen: \"x\n", origin).unwrap_err();
        assert_eq!(e.field, "config");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn kube_mode_accepts_words_and_booleans() {
        let o = Path::new("f");
        for (text, mode) in [
            ("auto", KubeMode::Auto),
            ("on", KubeMode::On),
            ("off", KubeMode::Off),
            ("true", KubeMode::On),
            ("false", KubeMode::Off),
        ] {
            let f = FileConfig::parse(&format!("kubernetes: {{enabled: {text}}}"), o).unwrap();
            assert_eq!(f.kubernetes.enabled, Some(mode), "{text}");
        }
    }

    #[test]
    fn empty_and_null_sections_are_defaults() {
        let f = FileConfig::parse("# nothing\n", Path::new("f")).unwrap();
        assert!(f.lock.name.is_none());
        let f = FileConfig::parse("lock:\netcd:\n", Path::new("f")).unwrap();
        assert!(f.etcd.endpoints.is_none());
    }

    #[test]
    fn qualified_names() {
        for ok in [
            "lockkeeper.io/lock-held",
            "ready",
            "a.b-c/x_y.z",
            "LockHeld",
        ] {
            assert!(check_qualified_name("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "/x",
            "x/",
            "Upper.io/x",
            "a/b/c",
            "-x",
            "x y",
            &"n".repeat(64),
        ] {
            assert!(check_qualified_name("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
