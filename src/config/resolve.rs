//! Precedence: [`load`] and [`load_exec`] merge defaults < YAML file (`--config`) < environment <
//! flags into one [`Config`], calling the checks of [`super::checks`] on each value as soon as
//! it is known, so the first invalid setting is the one reported.

use std::path::PathBuf;
use std::time::Duration;

use super::checks::{
    check_audit_file, check_endpoints, check_identity, check_lock_name, check_log_level,
    check_prefix, check_qualified_name, check_renew_interval, check_safety_margin, check_tls_files,
    check_ttl, parse_listen, positive, show,
};
use super::file::{FileConfig, KubernetesSection};
use super::overrides::{ExecOverrides, Overrides};
use super::values::{
    Config, ConfigError, KubeConfig, KubeMode, Secret, DEFAULT_CONDITION_TYPE, DEFAULT_LISTEN,
};

/// Reads the process environment, for [`load`]: `HOSTNAME` falls back to the kernel's hostname
/// (the library's [`lockkeeper::process_env`], so the sidecar and the library name a holder alike).
pub fn system_env(name: &str) -> Option<String> {
    lockkeeper::process_env(name)
}

/// Resolves and validates the configuration of `lockkeeper run`: defaults < YAML file (`--config`)
/// < environment < flags. The command line has already merged `LOCKKEEPER_*` variables and
/// flags into `overrides` (anything convertible, such as the parsed `crate::cli::LockArgs`);
/// `env` is asked only for `POD_NAME`, `POD_NAMESPACE`, `HOSTNAME` and `RUST_LOG` (pass
/// [`system_env`] in production, a closure in tests).
pub fn load(
    overrides: impl Into<Overrides>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    resolve(&overrides.into(), Command::Run, Some(DEFAULT_LISTEN), env)
}

/// Like [`load`] for `lockkeeper exec`: adds `--kill-after`, and serves no HTTP unless
/// `--listen` (or its variable or YAML key) is given.
pub fn load_exec(
    overrides: impl Into<ExecOverrides>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let ExecOverrides { lock, kill_after } = overrides.into();
    resolve(&lock, Command::Exec(kill_after), None, env)
}

/// Which command is being configured; `exec` has its own settings.
#[derive(Clone, Copy)]
enum Command {
    Run,
    Exec(Option<Duration>),
}

// The TTL, renew interval, safety margin and the etcd timeouts default to the library's
// defaults, so the sidecar and the library cannot disagree.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn resolve(
    args: &Overrides,
    command: Command,
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
        .unwrap_or_else(|| lockkeeper::DEFAULT_PREFIX.to_owned());
    check_prefix(&prefix)?;
    let ttl = args.ttl.or(lock.ttl).unwrap_or(lockkeeper::DEFAULT_TTL);
    check_ttl(ttl)?;
    let safety_margin = args
        .safety_margin
        .or(lock.safety_margin)
        .unwrap_or_else(|| lockkeeper::default_safety_margin(ttl));
    check_safety_margin(ttl, safety_margin)?;
    let renew_interval = args
        .renew_interval
        .or(lock.renew_interval)
        .unwrap_or_else(|| lockkeeper::default_keepalive_interval(ttl));
    check_renew_interval(ttl, safety_margin, renew_interval)?;
    let lock_delay = args.lock_delay.or(lock.lock_delay).unwrap_or(safety_margin);

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
        lockkeeper::DEFAULT_CONNECT_TIMEOUT,
    )?;
    let etcd_request_timeout = positive(
        "etcd.request_timeout",
        args.etcd_request_timeout.or(etcd.request_timeout),
        lockkeeper::DEFAULT_REQUEST_TIMEOUT,
    )?;

    let identity = args
        .identity
        .clone()
        .or(lock.identity)
        .or_else(|| lockkeeper::identity_from_env(env))
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
    let kill_after = match command {
        Command::Run => Duration::ZERO,
        Command::Exec(flag) => {
            resolve_kill_after(flag.or(exec.kill_after), ttl, safety_margin, renew_interval)?
        }
    };

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
        lock_delay,
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
    args: &Overrides,
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

/// `exec` sends SIGTERM at `deadline − kill_after` and SIGKILL at the deadline. After an
/// acknowledged keepalive the deadline is `TTL − margin` away and the next two keepalives go
/// out within `2 × renew_interval`, so `kill_after` must stay below
/// `TTL − margin − 2 × renew_interval` for one lost keepalive to leave the child alone. The
/// default is half that room (TTL/15 with the default interval and margin).
fn resolve_kill_after(
    given: Option<Duration>,
    ttl: Duration,
    margin: Duration,
    renew: Duration,
) -> Result<Duration, ConfigError> {
    let room = ttl.saturating_sub(margin).saturating_sub(renew * 2);
    if room.is_zero() {
        return Err(ConfigError::new(
            "lock.renew_interval",
            format!(
                "leaves exec no room to survive a lost keepalive: lock.ttl - lock.safety_margin - 2 x lock.renew_interval must be above 0 (got {} - {} - 2 x {})",
                show(ttl),
                show(margin),
                show(renew)
            ),
        ));
    }
    match given {
        None => Ok(room / 2),
        Some(k) if k < room => Ok(k),
        Some(k) => Err(ConfigError::new(
            "exec.kill_after",
            format!(
                "must be less than lock.ttl - lock.safety_margin - 2 x lock.renew_interval = {} so that one lost keepalive does not stop the child and SIGKILL lands by the local deadline (got {})",
                show(room),
                show(k)
            ),
        )),
    }
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
            Ok(Some(Secret::from(password.to_owned())))
        }
        (None, None) => Ok(None),
    }
}
