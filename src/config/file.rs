//! The YAML configuration file: its schema ([`FileConfig`] and one struct per section, every key
//! optional, unknown keys refused) and how serde_yaml's errors become a [`ConfigError`] naming
//! the field, the file and the position.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::values::{parse_duration, ConfigError, KubeMode, LogFormat, Secret};

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
    /// Wait before holding after a predecessor vanished without releasing.
    #[serde(deserialize_with = "human::option")]
    pub lock_delay: Option<Duration>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
