//! The checks: one validator per setting, each returning a [`ConfigError`] that names the field
//! as the YAML file spells it (`lock.ttl`, `etcd.endpoints`). Nothing here panics on user input.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::values::ConfigError;

const MIN_TTL: Duration = Duration::from_secs(2);
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(100);
const MAX_IDENTITY_LEN: usize = 253;

pub(super) fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

pub(super) fn positive(
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

pub(super) fn check_lock_name(name: &str) -> Result<(), ConfigError> {
    match lockkeeper::name_problem(name) {
        Some(problem) => Err(ConfigError::new("lock.name", problem)),
        None => Ok(()),
    }
}

pub(super) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    match lockkeeper::prefix_problem(prefix) {
        Some(problem) => Err(ConfigError::new("lock.prefix", problem)),
        None => Ok(()),
    }
}

pub(super) fn check_identity(identity: &str) -> Result<(), ConfigError> {
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

pub(super) fn check_ttl(ttl: Duration) -> Result<(), ConfigError> {
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

pub(super) fn check_safety_margin(ttl: Duration, margin: Duration) -> Result<(), ConfigError> {
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

pub(super) fn check_renew_interval(
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

pub(super) fn check_endpoints(endpoints: &[String], tls: bool) -> Result<(), ConfigError> {
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

pub(super) fn check_tls_files(
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

/// `IP:PORT`, or `off` for no HTTP server.
pub(super) fn parse_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
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

pub(super) fn check_log_level(level: &str) -> Result<(), ConfigError> {
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

pub(super) fn check_audit_file(path: &Path) -> Result<(), ConfigError> {
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
pub(super) fn check_qualified_name(field: &str, value: &str) -> Result<(), ConfigError> {
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
}
