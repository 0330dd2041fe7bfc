//! From parsed arguments to what the configuration consumes: the plain override structs, the
//! value enums' names on the command line, and the two `wait` value parsers.

use std::time::Duration;

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::config::{parse_duration, ExecOverrides, KubeMode, LogFormat, Overrides};

use super::{ExecArgs, LockArgs};

impl From<&LockArgs> for Overrides {
    fn from(args: &LockArgs) -> Self {
        let LockArgs {
            config,
            etcd_endpoints,
            etcd_username,
            etcd_password,
            etcd_password_file,
            etcd_ca_file,
            etcd_cert_file,
            etcd_key_file,
            etcd_connect_timeout,
            etcd_request_timeout,
            lock,
            prefix,
            identity,
            ttl,
            renew_interval,
            safety_margin,
            lock_delay,
            listen,
            log_format,
            log_level,
            audit_log,
            history_file,
            drain_delay,
            shutdown_timeout,
            kube,
            kube_condition_type,
            kube_label,
            kube_events,
        } = args.clone();
        Overrides {
            config,
            etcd_endpoints,
            etcd_username,
            etcd_password,
            etcd_password_file,
            etcd_ca_file,
            etcd_cert_file,
            etcd_key_file,
            etcd_connect_timeout,
            etcd_request_timeout,
            lock,
            prefix,
            identity,
            ttl,
            renew_interval,
            safety_margin,
            lock_delay,
            listen,
            log_format,
            log_level,
            audit_log,
            history_file,
            drain_delay,
            shutdown_timeout,
            kube,
            kube_condition_type,
            kube_label,
            kube_events,
        }
    }
}

impl From<&ExecArgs> for ExecOverrides {
    fn from(args: &ExecArgs) -> Self {
        ExecOverrides {
            lock: Overrides::from(&args.lock),
            kill_after: args.kill_after,
        }
    }
}

impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Json, LogFormat::Text]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            LogFormat::Json => PossibleValue::new("json")
                .help("One JSON object per line, event fields flattened (the default)"),
            LogFormat::Text => PossibleValue::new("text")
                .help("Human-readable text")
                .alias("plain"),
        })
    }
}

impl ValueEnum for KubeMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[KubeMode::Auto, KubeMode::On, KubeMode::Off]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            KubeMode::Auto => PossibleValue::new("auto").help(
                "Use it when running in a pod (service account token present and a pod name known)",
            ),
            KubeMode::On => PossibleValue::new("on")
                .help("Always use it; failing to reach the API is logged and retried, never fatal")
                .alias("true"),
            KubeMode::Off => PossibleValue::new("off")
                .help("Never use it")
                .alias("false"),
        })
    }
}

pub(super) fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?} is too short; use at least 10ms"));
    }
    Ok(d)
}

/// A plain `http://host[:port][/path]` URL (the sidecar serves no TLS).
pub(super) fn parse_http_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("{s:?} must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(format!(
            "{s:?} has no valid host, e.g. http://127.0.0.1:8475"
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}
