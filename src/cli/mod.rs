//! The `lockkeeper` command line: `run`, `exec` and `wait`.
//!
//! Every lock flag can also be set through a `LOCKKEEPER_*` environment variable, and all of
//! them are optional here so that a YAML file (`--config`) can supply what neither gives;
//! [`crate::config::load`] applies the defaults and validates the result. clap's own usage
//! errors (unknown flag, bad duration) exit with code 2, like invalid configuration.
//!
//! This module depends on [`crate::config`], never the reverse: the parsed [`LockArgs`] and
//! [`ExecArgs`] convert into the configuration's plain
//! [`Overrides`](crate::config::Overrides) and
//! [`ExecOverrides`](crate::config::ExecOverrides), and the clap value parsers for the
//! configuration's [`LogFormat`] and [`KubeMode`] live here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, KubeMode, LogFormat, Secret};

mod convert;
use convert::{parse_http_url, parse_poll_interval};

const LONG_ABOUT: &str = "\
Hold a distributed lock on etcd and tell the world whether you hold it.

`lockkeeper run` is a Kubernetes sidecar: it queues for one lock (fair, FIFO), keeps its lease
renewed, and answers 200 on /readyz only while this pod holds the lock, stepping down before
etcd could expire the lease. `lockkeeper exec` runs a command only while holding the lock.
`lockkeeper wait` blocks until a sidecar holds it.

The lock is key-compatible with `etcdctl lock`. Settings come from flags, LOCKKEEPER_*
environment variables and an optional YAML file (--config), in that order of precedence.";

const AFTER_HELP: &str = "\
Examples:
  lockkeeper run --etcd-endpoints http://etcd:2379 --lock reports
  lockkeeper exec --etcd-endpoints etcd:2379 --lock nightly-backup -- pg_dump -f /backup/db.sql
  lockkeeper wait --timeout 5m && ./start-primary.sh

Every flag of run and exec has an environment variable, shown in `lockkeeper run --help`.";

const RUN_AFTER_HELP: &str = "\
Example:
  lockkeeper run --etcd-endpoints http://etcd-0:2379,http://etcd-1:2379 --lock reports \\
      --ttl 10s --listen 0.0.0.0:8475

GET /readyz answers 200 only while this process holds the lock; /status and /metrics
describe the lock, the holder and the fencing token.";

const EXEC_AFTER_HELP: &str = "\
Example:
  lockkeeper exec --etcd-endpoints etcd:2379 --lock nightly-backup -- pg_dump -f /backup/db.sql

The child starts only once the lock is held and finds the fencing token in its environment.
If the lock is lost, it receives SIGTERM, then SIGKILL after --kill-after.
exec serves no HTTP unless --listen is given.";

const WAIT_AFTER_HELP: &str = "\
Example (an init container or a start script):
  lockkeeper wait --url http://127.0.0.1:8475 --timeout 10m";

const ETCD: &str = "etcd connection";
const LOCK: &str = "Lock";
const SERVE: &str = "HTTP and logging";
const KUBE: &str = "Kubernetes";

/// The `lockkeeper` command line.
#[derive(Debug, Parser)]
#[command(
    name = "lockkeeper",
    bin_name = "lockkeeper",
    version,
    propagate_version = true,
    about = "A distributed lock on etcd: a Kubernetes sidecar that is ready only while holding",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold one lock, keep it renewed, and serve readiness over HTTP (the sidecar).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(LockArgs),
    /// Run a command only while holding the lock; stop it if the lock is lost.
    #[command(after_help = EXEC_AFTER_HELP)]
    Exec(ExecArgs),
    /// Block until a sidecar on this pod holds its lock (exit 0), or until --timeout.
    #[command(after_help = WAIT_AFTER_HELP)]
    Wait(WaitArgs),
}

/// Lock, etcd, HTTP, logging, shutdown and Kubernetes settings shared by `run` and `exec`.
/// `None` means "not given on the command line or in the environment".
#[derive(Clone, Debug, Default, Args)]
pub struct LockArgs {
    /// YAML configuration file; flags and environment variables override its values.
    #[arg(long, env = "LOCKKEEPER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// etcd client URLs, comma separated: http://host:2379, https://host:2379 or host:2379.
    #[arg(long, env = "LOCKKEEPER_ETCD_ENDPOINTS", value_name = "URLS", value_delimiter = ',', help_heading = ETCD)]
    pub etcd_endpoints: Option<Vec<String>>,

    /// etcd user name (etcd role-based auth); needs a password too.
    #[arg(long, env = "LOCKKEEPER_ETCD_USERNAME", value_name = "USER", help_heading = ETCD)]
    pub etcd_username: Option<String>,

    /// etcd password. Prefer the environment variable or --etcd-password-file: flags are
    /// visible in the process list. Never logged.
    #[arg(long, env = "LOCKKEEPER_ETCD_PASSWORD", hide_env_values = true, value_name = "PASSWORD", help_heading = ETCD)]
    pub etcd_password: Option<Secret>,

    /// File holding the etcd password (a trailing newline is ignored).
    #[arg(long, env = "LOCKKEEPER_ETCD_PASSWORD_FILE", value_name = "FILE", help_heading = ETCD)]
    pub etcd_password_file: Option<PathBuf>,

    /// PEM CA bundle that verifies the etcd servers (enables TLS).
    #[arg(long, env = "LOCKKEEPER_ETCD_CA_FILE", value_name = "FILE", help_heading = ETCD)]
    pub etcd_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (needs --etcd-key-file).
    #[arg(long, env = "LOCKKEEPER_ETCD_CERT_FILE", value_name = "FILE", help_heading = ETCD)]
    pub etcd_cert_file: Option<PathBuf>,

    /// PEM client key for mutual TLS (needs --etcd-cert-file).
    #[arg(long, env = "LOCKKEEPER_ETCD_KEY_FILE", value_name = "FILE", help_heading = ETCD)]
    pub etcd_key_file: Option<PathBuf>,

    /// Connection timeout per etcd member [default: 3s].
    #[arg(long, env = "LOCKKEEPER_ETCD_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, help_heading = ETCD)]
    pub etcd_connect_timeout: Option<Duration>,

    /// Timeout of each etcd request [default: 5s].
    #[arg(long, env = "LOCKKEEPER_ETCD_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, help_heading = ETCD)]
    pub etcd_request_timeout: Option<Duration>,

    /// Lock name; contenders of the same name exclude each other (required).
    #[arg(long, env = "LOCKKEEPER_LOCK", value_name = "NAME", help_heading = LOCK)]
    pub lock: Option<String>,

    /// Key prefix; keys are {prefix}{name}/{lease} [default: /locks/].
    #[arg(long, env = "LOCKKEEPER_PREFIX", value_name = "PREFIX", help_heading = LOCK)]
    pub prefix: Option<String>,

    /// Who we are, written under our key [default: $POD_NAME, else the hostname].
    #[arg(long, env = "LOCKKEEPER_IDENTITY", value_name = "ID", help_heading = LOCK)]
    pub identity: Option<String>,

    /// Session lease TTL, whole seconds, at least 2s: how long a crashed holder blocks others
    /// [default: 10s].
    #[arg(long, env = "LOCKKEEPER_TTL", value_name = "DURATION", value_parser = parse_duration, help_heading = LOCK)]
    pub ttl: Option<Duration>,

    /// How often the lease is renewed [default: ttl/3].
    #[arg(long, env = "LOCKKEEPER_RENEW_INTERVAL", value_name = "DURATION", value_parser = parse_duration, help_heading = LOCK)]
    pub renew_interval: Option<Duration>,

    /// Stop reporting "held" this long before etcd could expire the lease; covers clock rate
    /// differences [default: ttl/5].
    #[arg(long, env = "LOCKKEEPER_SAFETY_MARGIN", value_name = "DURATION", value_parser = parse_duration, help_heading = LOCK)]
    pub safety_margin: Option<Duration>,

    /// Before holding after a predecessor that vanished without releasing (crashed, cut off,
    /// lease revoked early by etcd), wait this long; `0s` turns it off. A clean release hands
    /// over at once [default: the safety margin].
    #[arg(long, env = "LOCKKEEPER_LOCK_DELAY", value_name = "DURATION", value_parser = parse_duration, help_heading = LOCK)]
    pub lock_delay: Option<Duration>,

    /// HTTP address for /readyz, /status and /metrics, or `off` [default: 0.0.0.0:8475
    /// for run; exec serves no HTTP unless this is given].
    #[arg(long, env = "LOCKKEEPER_LISTEN", value_name = "IP:PORT", help_heading = SERVE)]
    pub listen: Option<String>,

    /// Log line format on stderr [default: json].
    #[arg(long, env = "LOCKKEEPER_LOG_FORMAT", value_name = "FORMAT", help_heading = SERVE)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `warn,lockkeeper=debug` [default: $RUST_LOG, else info].
    #[arg(long, env = "LOCKKEEPER_LOG_LEVEL", value_name = "FILTER", help_heading = SERVE)]
    pub log_level: Option<String>,

    /// Also append audit events (attempt, acquired, released, lost) to this file as JSON lines.
    #[arg(long, env = "LOCKKEEPER_AUDIT_LOG", value_name = "FILE", help_heading = SERVE)]
    pub audit_log: Option<PathBuf>,

    /// Testing aid: append readiness events, stamped on the raw monotonic clock, to this file
    /// as JSON lines (see docs/safety.md).
    #[arg(long, env = "LOCKKEEPER_HISTORY_FILE", value_name = "FILE", hide = true, help_heading = SERVE)]
    pub history_file: Option<PathBuf>,

    /// On shutdown, wait this long between dropping readiness and releasing the lock, so
    /// traffic drains first [default: 0s].
    #[arg(long, env = "LOCKKEEPER_DRAIN_DELAY", value_name = "DURATION", value_parser = parse_duration, help_heading = SERVE)]
    pub drain_delay: Option<Duration>,

    /// Bound on the whole shutdown (drain, release, revoke) [default: 10s].
    #[arg(long, env = "LOCKKEEPER_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, help_heading = SERVE)]
    pub shutdown_timeout: Option<Duration>,

    /// Use the Kubernetes API for a pod condition, label and events [default: auto].
    #[arg(long, env = "LOCKKEEPER_KUBE", value_name = "MODE", help_heading = KUBE)]
    pub kube: Option<KubeMode>,

    /// Pod condition type set while holding, for readinessGates; empty disables it
    /// [default: lockkeeper.io/lock-held].
    #[arg(long, env = "LOCKKEEPER_KUBE_CONDITION_TYPE", value_name = "TYPE", help_heading = KUBE)]
    pub kube_condition_type: Option<String>,

    /// Pod label key set while holding, e.g. lockkeeper.io/holder, for a Service selector
    /// [default: none].
    #[arg(long, env = "LOCKKEEPER_KUBE_LABEL", value_name = "KEY", help_heading = KUBE)]
    pub kube_label: Option<String>,

    /// Publish Kubernetes Events on acquire and loss (--kube-events=false to disable)
    /// [default: true].
    #[arg(long, env = "LOCKKEEPER_KUBE_EVENTS", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), help_heading = KUBE)]
    pub kube_events: Option<bool>,
}

/// `lockkeeper exec`: the lock settings, how to stop the child, and the child's command line.
#[derive(Clone, Debug, Args)]
pub struct ExecArgs {
    /// Lock, etcd and logging settings.
    #[command(flatten)]
    pub lock: LockArgs,

    /// After SIGTERM to the child, wait this long before SIGKILL [default: 10s].
    #[arg(long, env = "LOCKKEEPER_KILL_AFTER", value_name = "DURATION", value_parser = parse_duration)]
    pub kill_after: Option<Duration>,

    /// The command to run while holding the lock, and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, num_args = 1.., value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `lockkeeper wait`: where the sidecar is and how long to wait.
#[derive(Clone, Debug, Args)]
pub struct WaitArgs {
    /// Base URL of the sidecar's HTTP server; its /readyz is polled.
    #[arg(long, env = "LOCKKEEPER_WAIT_URL", value_name = "URL", default_value = "http://127.0.0.1:8475", value_parser = parse_http_url)]
    pub url: String,

    /// Give up after this long (exit non-zero) [default: wait forever].
    #[arg(long, env = "LOCKKEEPER_WAIT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Time between two polls.
    #[arg(long, env = "LOCKKEEPER_WAIT_POLL_INTERVAL", value_name = "DURATION", default_value = "500ms", value_parser = parse_poll_interval)]
    pub poll_interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lockkeeper").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The help text states the defaults in words; they are the library's, so they must say
    /// what the library does.
    #[test]
    fn help_states_the_library_defaults() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run").render_help();
        let help = run
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let d = |d: Duration| humantime::format_duration(d).to_string();
        for (flag, default) in [
            (
                "etcd connect timeout",
                d(lockkeeper::DEFAULT_CONNECT_TIMEOUT),
            ),
            (
                "etcd request timeout",
                d(lockkeeper::DEFAULT_REQUEST_TIMEOUT),
            ),
            ("ttl", d(lockkeeper::DEFAULT_TTL)),
            ("prefix", lockkeeper::DEFAULT_PREFIX.to_owned()),
        ] {
            let stated = format!("[default: {default}]");
            assert!(
                help.contains(&stated),
                "{flag}: {stated} missing in\n{help}"
            );
        }
        let ttl = Duration::from_secs(30);
        assert_eq!(lockkeeper::default_keepalive_interval(ttl), ttl / 3);
        assert!(help.contains("[default: ttl/3]"), "{help}");
        assert_eq!(lockkeeper::default_safety_margin(ttl), ttl / 5);
        assert!(help.contains("[default: ttl/5]"), "{help}");
    }

    #[test]
    fn run_parses_every_kind_of_flag() {
        let cli = parse(&[
            "run",
            "--etcd-endpoints",
            "http://a:2379, b:2379",
            "--lock",
            "reports",
            "--ttl",
            "15s",
            "--renew-interval",
            "1500ms",
            "--log-format",
            "text",
            "--kube",
            "off",
            "--kube-events=false",
            "--kube-condition-type",
            "",
            "--etcd-password",
            "s3cret",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            a.etcd_endpoints,
            Some(vec!["http://a:2379".to_owned(), " b:2379".to_owned()])
        );
        assert_eq!(a.lock.as_deref(), Some("reports"));
        assert_eq!(a.ttl, Some(Duration::from_secs(15)));
        assert_eq!(a.renew_interval, Some(Duration::from_millis(1500)));
        assert_eq!(a.log_format, Some(LogFormat::Text));
        assert_eq!(a.kube, Some(KubeMode::Off));
        assert_eq!(a.kube_events, Some(false));
        assert_eq!(a.kube_condition_type.as_deref(), Some(""));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert_eq!(a.config, None);
    }

    #[test]
    fn bare_kube_events_means_true() {
        let cli = parse(&["run", "--kube-events"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.kube_events, Some(true));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["run", "--ttl", "ten"][..],
            &["run", "--log-format", "xml"],
            &["run", "--kube", "maybe"],
            &["run", "--no-such-flag"],
            &["wait", "--url", "https://x"],
            &["wait", "--poll-interval", "1ms"],
            &["exec", "--lock", "x"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let cli = parse(&[
            "exec",
            "--lock",
            "x",
            "--kill-after",
            "3s",
            "--",
            "sh",
            "-c",
            "echo --ttl",
        ])
        .unwrap();
        let Command::Exec(a) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(a.lock.lock.as_deref(), Some("x"));
        assert_eq!(a.kill_after, Some(Duration::from_secs(3)));
        assert_eq!(a.command, ["sh", "-c", "echo --ttl"]);
        assert_eq!(a.lock.ttl, None);
    }

    #[test]
    fn wait_defaults() {
        let cli = parse(&["wait"]).unwrap();
        let Command::Wait(a) = cli.command else {
            panic!("not wait")
        };
        assert_eq!(a.url, "http://127.0.0.1:8475");
        assert_eq!(a.timeout, None);
        assert_eq!(a.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn every_lock_flag_has_its_environment_variable() {
        let cmd = Cli::command();
        for sub in ["run", "exec"] {
            let sub = cmd.find_subcommand(sub).unwrap();
            for arg in sub.get_arguments().filter(|a| a.get_long().is_some()) {
                let long = arg.get_long().unwrap();
                if long == "help" || long == "version" {
                    continue;
                }
                let expected = format!("LOCKKEEPER_{}", long.replace('-', "_").to_uppercase());
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(expected.as_str()),
                    "--{long}"
                );
            }
        }
    }

    #[test]
    fn help_and_version_are_useful() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        let run = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        for needle in [
            "--etcd-endpoints",
            "LOCKKEEPER_TTL",
            "[default: 10s]",
            "Example:",
        ] {
            assert!(run.contains(needle), "{needle} missing from:\n{run}");
        }
        let e = parse(&["--version"]).unwrap_err();
        assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")));
    }
}
