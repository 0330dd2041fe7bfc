//! The library's defaults, written once: whoever needs one (the sidecar's configuration, say)
//! takes it from here.

use std::time::Duration;

/// The session lease TTL when none is given: 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// How long to wait for a TCP/TLS connection to an etcd member when nothing else is said: 3 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The bound on each unary etcd request when none is given: 5 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a lease granted with `ttl` is renewed by default: TTL/3, so that one lost
/// keepalive never costs the lock (see [`default_safety_margin`]).
pub fn default_keepalive_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// How long before etcd could expire a lease granted with `ttl` the holder stops trusting it,
/// by default: TTL/5. With the default renewal interval, one lost keepalive keeps the deadline
/// (TTL − margin > 2 intervals) and two lose it (TTL − margin < 3 intervals).
pub fn default_safety_margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// The identity written under our key when none is given: `POD_NAME` if set (and not empty),
/// else the hostname (the kernel's, else `$HOSTNAME`), else `"unknown"`.
pub fn default_identity() -> String {
    identity_from_env(process_env).unwrap_or_else(|| "unknown".to_owned())
}

/// The process environment as [`identity_from_env`] reads it: `HOSTNAME` is the kernel's
/// hostname where it can be read (a container's `$HOSTNAME` is not always set), else the
/// variable; every other name is the variable.
pub fn process_env(name: &str) -> Option<String> {
    if name == "HOSTNAME" {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        if let Some(h) = kernel
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
        {
            return Some(h);
        }
    }
    std::env::var(name).ok()
}

/// The choice [`default_identity`] makes, from `env` instead of the process: `POD_NAME` if set
/// and not empty, else `HOSTNAME`; `None` when neither is set. `env` is asked for those two
/// names only, so a caller with its own view of the environment (a configuration loader under
/// test, say) gets the same answer the library would.
pub fn identity_from_env(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    env("POD_NAME")
        .filter(|pod| !pod.is_empty())
        .or_else(|| env("HOSTNAME"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_a_pod_name_then_the_hostname() {
        let env = |pod: Option<&'static str>, host: Option<&'static str>| {
            move |name: &str| match name {
                "POD_NAME" => pod.map(str::to_owned),
                "HOSTNAME" => host.map(str::to_owned),
                _ => panic!("asked for {name}"),
            }
        };
        assert_eq!(
            identity_from_env(env(Some("web-0"), Some("node"))).as_deref(),
            Some("web-0")
        );
        assert_eq!(
            identity_from_env(env(Some(""), Some("node"))).as_deref(),
            Some("node")
        );
        assert_eq!(
            identity_from_env(env(None, Some("node"))).as_deref(),
            Some("node")
        );
        assert_eq!(identity_from_env(env(None, None)), None);
    }
}
