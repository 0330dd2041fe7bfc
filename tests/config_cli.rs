//! The sidecar's configuration through the public API: defaults, precedence (defaults < YAML <
//! environment < flags), and one test per validation rule, each naming its field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use lockkeeper_agent::cli::{Cli, Command, ExecArgs, LockArgs};
use lockkeeper_agent::config::{self, Config, ConfigError, FileConfig, KubeMode, LogFormat};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// The smallest valid arguments: a lock name and one endpoint.
fn args() -> LockArgs {
    LockArgs {
        lock: Some("reports".into()),
        etcd_endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
        ..LockArgs::default()
    }
}

/// An environment holding only `POD_NAME=pod-0`.
fn pod_env(name: &str) -> Option<String> {
    (name == "POD_NAME").then(|| "pod-0".to_owned())
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(args: &LockArgs) -> Result<Config, ConfigError> {
    config::load(args, &pod_env)
}

/// Loads `args` and returns the field of the error it must produce.
fn field_of(args: &LockArgs) -> String {
    let e = load(args).expect_err("configuration should be invalid");
    let line = e.to_string();
    assert!(line.starts_with("invalid configuration: "), "{line}");
    assert!(!line.contains('\n'), "{line:?}");
    e.field
}

fn yaml(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("lockkeeper.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn touch(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

// === defaults ===

#[test]
fn defaults() {
    let c = load(&args()).unwrap();
    assert_eq!(c.lock_name, "reports");
    assert_eq!(c.etcd_endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.prefix, "/locks/");
    assert_eq!(c.identity, "pod-0");
    assert_eq!(c.ttl, secs(10));
    assert_eq!(c.renew_interval, secs(10) / 3);
    assert_eq!(c.safety_margin, secs(2));
    assert_eq!(
        c.lock_delay,
        secs(2),
        "lock-delay defaults to the safety margin"
    );
    assert_eq!(
        c.listen,
        Some("0.0.0.0:8475".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.audit_file, None);
    assert_eq!(c.drain_delay, Duration::ZERO);
    assert_eq!(c.shutdown_timeout, secs(10));
    assert_eq!(c.etcd_connect_timeout, secs(3));
    assert_eq!(c.request_timeout(), secs(5));
    assert_eq!(c.kube.mode, KubeMode::Auto);
    assert_eq!(
        c.kube.condition_type.as_deref(),
        Some("lockkeeper.io/lock-held")
    );
    assert_eq!(c.kube.label, None);
    assert!(c.kube.events);
    assert_eq!(c.kube.pod_name.as_deref(), Some("pod-0"));
    assert_eq!(c.kube.namespace, None);
    assert_eq!(c.kill_after, Duration::ZERO, "run has no child");
}

#[test]
fn renewal_and_margin_derive_from_the_ttl() {
    let c = load(&LockArgs {
        ttl: Some(secs(30)),
        ..args()
    })
    .unwrap();
    assert_eq!((c.renew_interval, c.safety_margin), (secs(10), secs(6)));
    let session = c.lock_options().session().clone();
    assert_eq!(session.ttl(), secs(30));
    assert_eq!(session.keepalive_interval_for(secs(30)), secs(10));
    assert_eq!(session.safety_margin_for(secs(30)), secs(6));
}

#[test]
fn lock_delay_follows_the_margin_unless_set_and_zero_turns_it_off() {
    let c = load(&LockArgs {
        safety_margin: Some(ms(1500)),
        ..args()
    })
    .unwrap();
    assert_eq!(c.lock_delay, ms(1500));
    assert_eq!(c.lock_options().lock_delay_for(secs(10)), ms(1500));
    let dir = tempfile::tempdir().unwrap();
    let file = yaml(&dir, "lock: {name: y, lock_delay: 5s}\n");
    let from_yaml = LockArgs {
        config: Some(file.clone()),
        ..args()
    };
    assert_eq!(load(&from_yaml).unwrap().lock_delay, secs(5));
    let off = LockArgs {
        config: Some(file),
        lock_delay: Some(Duration::ZERO),
        ..args()
    };
    let c = load(&off).unwrap();
    assert_eq!(c.lock_delay, Duration::ZERO, "the flag beats YAML");
    assert_eq!(c.lock_options().lock_delay_for(secs(10)), Duration::ZERO);
    let bad = yaml(&dir, "lock: {name: y, lock_delay: soon}\n");
    let e = load(&LockArgs {
        config: Some(bad),
        ..args()
    })
    .unwrap_err();
    assert!(e.to_string().contains("lock_delay"), "{e}");
}

#[test]
fn builders_carry_the_settings() {
    let c = load(&LockArgs {
        prefix: Some("/app/".into()),
        identity: Some("me".into()),
        ..args()
    })
    .unwrap();
    let o = c.lock_options();
    assert_eq!((o.prefix(), o.identity()), ("/app/", "me"));
    assert_eq!(o.timeout(), None);
    assert_eq!(c.etcd_options().endpoints(), ["http://127.0.0.1:2379"]);
}

#[test]
fn identity_falls_back_to_the_hostname() {
    let env = |n: &str| (n == "HOSTNAME").then(|| "node-7".to_owned());
    assert_eq!(config::load(&args(), &env).unwrap().identity, "node-7");
    let e = config::load(&args(), &no_env).unwrap_err();
    assert_eq!(e.field, "lock.identity");
}

/// `lockkeeper exec` arguments around `lock`, running `true`.
fn exec(lock: LockArgs, kill_after: Option<Duration>) -> ExecArgs {
    ExecArgs {
        lock,
        kill_after,
        command: vec!["true".into()],
    }
}

#[test]
fn exec_serves_no_http_unless_asked() {
    let c = config::load_exec(&exec(args(), None), &pod_env).unwrap();
    // Half of TTL − margin − 2 × interval = 10 s − 2 s − 6.67 s.
    assert_eq!(c.listen, None);
    assert!(
        c.kill_after > Duration::from_millis(600) && c.kill_after < Duration::from_millis(700),
        "{:?}",
        c.kill_after
    );
    let with_listen = LockArgs {
        listen: Some("127.0.0.1:9000".into()),
        ..args()
    };
    let c = config::load_exec(&exec(with_listen, Some(secs(1))), &pod_env).unwrap();
    assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(c.kill_after, secs(1));
}

#[test]
fn exec_refuses_a_kill_after_that_a_lost_keepalive_would_reach() {
    // TTL 10 s: room = 10 s − 2 s − 2 × 3.33 s = 1.33 s.
    let e =
        config::load_exec(&exec(args(), Some(Duration::from_millis(1400))), &pod_env).unwrap_err();
    assert_eq!(e.field, "exec.kill_after", "{e}");
    assert!(e.to_string().contains("lost keepalive"), "{e}");
    // An interval that leaves no room at all names the interval.
    let slow = LockArgs {
        renew_interval: Some(secs(4)),
        ..args()
    };
    let e = config::load_exec(&exec(slow.clone(), None), &pod_env).unwrap_err();
    assert_eq!(e.field, "lock.renew_interval", "{e}");
    // `run` has no child, so the same interval is fine there.
    assert!(config::load(&slow, &pod_env).is_ok());
}

// === precedence ===

#[test]
fn flags_and_environment_override_yaml_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = yaml(
        &dir,
        "lock: {name: from-yaml, ttl: 20s, renew_interval: 1s}\n\
         etcd: {endpoints: ['yaml:2379']}\n\
         listen: 127.0.0.1:9000\n\
         log: {level: debug}\n\
         kubernetes: {pod_name: yaml-pod, events: false}\n\
         exec: {kill_after: 4s}\n",
    );
    // What clap produced from flags or LOCKKEEPER_* variables: ttl only.
    let a = LockArgs {
        config: Some(file.clone()),
        ttl: Some(secs(30)),
        ..LockArgs::default()
    };
    let c = config::load(&a, &|n| Some(format!("env-{n}"))).unwrap();
    assert_eq!(c.lock_name, "from-yaml");
    assert_eq!(c.ttl, secs(30), "flag beats YAML");
    assert_eq!(c.renew_interval, secs(1), "YAML beats the default");
    assert_eq!(
        c.safety_margin,
        secs(6),
        "default derived from the effective ttl"
    );
    assert_eq!(c.etcd_endpoints, ["yaml:2379"]);
    assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(c.log_level, "debug", "YAML beats RUST_LOG");
    assert_eq!(c.identity, "env-POD_NAME");
    assert_eq!(
        c.kube.pod_name.as_deref(),
        Some("yaml-pod"),
        "YAML beats POD_NAME"
    );
    assert_eq!(c.kube.namespace.as_deref(), Some("env-POD_NAMESPACE"));
    assert!(!c.kube.events);
    assert_eq!(c.config_file, Some(file.clone()));
    let exec = ExecArgs {
        lock: a,
        kill_after: None,
        command: vec!["true".into()],
    };
    let c = config::load_exec(&exec, &pod_env).unwrap();
    assert_eq!(c.kill_after, secs(4));
    assert_eq!(
        c.listen,
        Some("127.0.0.1:9000".parse().unwrap()),
        "YAML listen counts"
    );
}

#[test]
fn rust_log_is_the_last_resort_for_the_log_level() {
    let env = |n: &str| match n {
        "RUST_LOG" => Some("warn".to_owned()),
        "POD_NAME" => Some("p".to_owned()),
        _ => None,
    };
    assert_eq!(config::load(&args(), &env).unwrap().log_level, "warn");
    let a = LockArgs {
        log_level: Some("error".into()),
        ..args()
    };
    assert_eq!(config::load(&a, &env).unwrap().log_level, "error");
}

static PROCESS_ENV: Mutex<()> = Mutex::new(());

#[test]
fn clap_reads_lockkeeper_variables_below_flags() {
    let _guard = PROCESS_ENV.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = yaml(
        &dir,
        "lock: {name: from-yaml, ttl: 5s, renew_interval: 1s}\n",
    );
    let vars = [
        ("LOCKKEEPER_CONFIG", file.to_str().unwrap()),
        ("LOCKKEEPER_LOCK", "from-env"),
        ("LOCKKEEPER_TTL", "20s"),
        ("LOCKKEEPER_ETCD_ENDPOINTS", "a:2379,b:2379"),
        ("LOCKKEEPER_KUBE_EVENTS", "false"),
        ("LOCKKEEPER_ETCD_USERNAME", "u"),
        ("LOCKKEEPER_ETCD_PASSWORD", "env-secret"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let parsed = Cli::try_parse_from(["lockkeeper", "run", "--ttl", "30s"]);
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    let Command::Run(a) = parsed.unwrap().command else {
        panic!("not run")
    };
    let c = config::load(&a, &pod_env).unwrap();
    assert_eq!(c.lock_name, "from-env", "environment beats YAML");
    assert_eq!(c.ttl, secs(30), "flag beats environment");
    assert_eq!(c.renew_interval, secs(1), "YAML fills the rest");
    assert_eq!(c.etcd_endpoints, ["a:2379", "b:2379"]);
    assert!(!c.kube.events);
    assert_eq!(
        c.etcd_password.as_ref().map(|p| p.expose()),
        Some("env-secret")
    );
    assert!(
        !format!("{a:?}{c:?}").contains("env-secret"),
        "Debug leaks the password"
    );
}

// === the documented example ===

#[test]
fn the_documented_yaml_example_parses_and_loads() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let example = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in docs/configuration.md");
    let f = FileConfig::parse(example, Path::new("docs/configuration.md")).unwrap();
    assert_eq!(f.lock.name.as_deref(), Some("reports-primary"));
    assert_eq!(f.etcd.endpoints.as_ref().map(Vec::len), Some(3));
    assert_eq!(f.kubernetes.enabled, Some(KubeMode::Auto));
    assert_eq!(f.exec.kill_after, Some(secs(10)));

    // Point the example's files at real ones, then resolve it completely.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("tls")).unwrap();
    for name in ["tls/ca.crt", "tls/client.crt", "tls/client.key"] {
        touch(root, name, "pem");
    }
    touch(root, "etcd-password", "hunter2\n");
    let text = example
        .replace("/etc/lockkeeper/", &format!("{}/", root.display()))
        .replace("/var/log/lockkeeper/", &format!("{}/", root.display()));
    let c = load(&LockArgs {
        config: Some(yaml(&dir, &text)),
        ..LockArgs::default()
    })
    .unwrap();
    assert_eq!(c.identity, "reports-0");
    assert_eq!(
        c.etcd_password.as_ref().map(|p| p.expose()),
        Some("hunter2")
    );
    assert_eq!((c.renew_interval, c.safety_margin), (secs(3), secs(2)));
    assert_eq!(c.lock_delay, secs(2));
    assert_eq!(c.kube.label.as_deref(), Some("lockkeeper.io/holder"));
    assert_eq!(c.kube.namespace.as_deref(), Some("reports"));
    assert_eq!(c.log_level, "info,lockkeeper=debug");
    assert!(!format!("{c:?}").contains("hunter2"));
}

// === validation: one test per rule, each naming its field ===

#[test]
fn lock_name_is_required_and_well_formed() {
    assert_eq!(
        field_of(&LockArgs {
            lock: None,
            ..args()
        }),
        "lock.name"
    );
    for bad in ["", "a/", "a\nb", "team/job", "/job"] {
        let a = LockArgs {
            lock: Some(bad.into()),
            ..args()
        };
        assert_eq!(field_of(&a), "lock.name", "{bad:?}");
    }
    // A nested name would share its parent's key range: the message points to the prefix.
    let e = config::load(
        &LockArgs {
            lock: Some("team/job".into()),
            ..args()
        },
        &pod_env,
    )
    .unwrap_err();
    assert!(e.to_string().contains("prefix"), "{e}");
}

#[test]
fn prefix_must_end_with_a_slash() {
    let a = LockArgs {
        prefix: Some("/locks".into()),
        ..args()
    };
    assert_eq!(field_of(&a), "lock.prefix");
    let a = LockArgs {
        prefix: Some(String::new()),
        ..args()
    };
    assert_eq!(load(&a).unwrap().prefix, "");
}

#[test]
fn identity_is_non_empty_and_bounded() {
    for bad in [String::new(), "x".repeat(254)] {
        let a = LockArgs {
            identity: Some(bad),
            ..args()
        };
        assert_eq!(field_of(&a), "lock.identity");
    }
    let a = LockArgs {
        identity: Some("x".repeat(253)),
        ..args()
    };
    assert!(load(&a).is_ok());
}

#[test]
fn endpoints_are_required_and_parsed() {
    let with = |e: &[&str]| LockArgs {
        etcd_endpoints: Some(e.iter().map(|s| s.to_string()).collect()),
        ..args()
    };
    assert_eq!(
        field_of(&LockArgs {
            etcd_endpoints: None,
            ..args()
        }),
        "etcd.endpoints"
    );
    assert_eq!(field_of(&with(&[])), "etcd.endpoints");
    for bad in ["etcd", "ftp://etcd:2379", "etcd:notaport", ""] {
        assert_eq!(
            field_of(&with(&["a:2379", bad])),
            "etcd.endpoints",
            "{bad:?}"
        );
    }
    let c = load(&with(&["https://a:2379", " b:2379 "])).unwrap();
    assert_eq!(c.etcd_endpoints, ["https://a:2379", "b:2379"]);
}

#[test]
fn ttl_is_at_least_two_whole_seconds() {
    let e = load(&LockArgs {
        ttl: Some(secs(1)),
        ..args()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: lock.ttl: must be at least 2s (got 1s)"
    );
    let a = LockArgs {
        ttl: Some(ms(2500)),
        ..args()
    };
    assert_eq!(field_of(&a), "lock.ttl");
    assert!(load(&LockArgs {
        ttl: Some(secs(2)),
        ..args()
    })
    .is_ok());
}

#[test]
fn safety_margin_below_half_the_ttl_and_zero_allowed() {
    let with = |m| LockArgs {
        safety_margin: Some(m),
        ..args()
    };
    assert_eq!(field_of(&with(secs(5))), "lock.safety_margin");
    assert_eq!(
        load(&with(Duration::ZERO)).unwrap().safety_margin,
        Duration::ZERO
    );
    assert!(load(&with(ms(4999))).is_ok());
}

#[test]
fn renew_interval_fits_in_the_slack() {
    let with = |r, m| LockArgs {
        renew_interval: Some(r),
        safety_margin: m,
        ..args()
    };
    assert_eq!(field_of(&with(secs(8), None)), "lock.renew_interval");
    assert_eq!(
        field_of(&with(secs(7), Some(secs(3)))),
        "lock.renew_interval"
    );
    assert_eq!(field_of(&with(ms(99), None)), "lock.renew_interval");
    assert!(load(&with(ms(7999), None)).is_ok());
    assert!(load(&with(ms(100), None)).is_ok());
}

#[test]
fn listen_is_a_socket_address_or_off() {
    for bad in ["8475", "localhost:8475", "0.0.0.0", ""] {
        let a = LockArgs {
            listen: Some(bad.into()),
            ..args()
        };
        assert_eq!(field_of(&a), "listen", "{bad:?}");
    }
    let off = LockArgs {
        listen: Some("off".into()),
        ..args()
    };
    assert_eq!(load(&off).unwrap().listen, None);
}

#[test]
fn log_level_is_an_env_filter() {
    for bad in ["lockkeeper=loud", "", "[{"] {
        let a = LockArgs {
            log_level: Some(bad.into()),
            ..args()
        };
        assert_eq!(field_of(&a), "log.level", "{bad:?}");
    }
}

#[test]
fn audit_file_directory_must_exist() {
    let a = LockArgs {
        audit_log: Some("/nonexistent-dir/audit.jsonl".into()),
        ..args()
    };
    assert_eq!(field_of(&a), "log.audit_file");
}

#[test]
fn credentials_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = touch(dir.path(), "pw", "from-file\r\n");
    let both = LockArgs {
        etcd_username: Some("u".into()),
        etcd_password: Some(String::from("p").into()),
        etcd_password_file: Some(pw_file.clone()),
        ..args()
    };
    assert_eq!(field_of(&both), "etcd.password");
    let user_only = LockArgs {
        etcd_username: Some("u".into()),
        ..args()
    };
    assert_eq!(field_of(&user_only), "etcd.password");
    let password_only = LockArgs {
        etcd_password: Some(String::from("p").into()),
        ..args()
    };
    assert_eq!(field_of(&password_only), "etcd.username");
    let missing_file = LockArgs {
        etcd_username: Some("u".into()),
        etcd_password_file: Some(dir.path().join("absent")),
        ..args()
    };
    assert_eq!(field_of(&missing_file), "etcd.password_file");
    let from_file = LockArgs {
        etcd_username: Some("u".into()),
        etcd_password_file: Some(pw_file),
        ..args()
    };
    let c = load(&from_file).unwrap();
    assert_eq!(
        c.etcd_password.as_ref().map(|p| p.expose()),
        Some("from-file")
    );
    assert!(!format!("{c:?}").contains("from-file"));
}

#[test]
fn tls_files_come_in_pairs_and_exist() {
    let dir = tempfile::tempdir().unwrap();
    let cert = touch(dir.path(), "c.crt", "pem");
    let key = touch(dir.path(), "c.key", "pem");
    let tls = |ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| LockArgs {
        etcd_ca_file: ca,
        etcd_cert_file: cert,
        etcd_key_file: key,
        etcd_endpoints: Some(vec!["etcd:2379".into()]),
        ..args()
    };
    assert_eq!(
        field_of(&tls(None, Some(cert.clone()), None)),
        "etcd.cert_file"
    );
    assert_eq!(
        field_of(&tls(None, None, Some(key.clone()))),
        "etcd.cert_file"
    );
    let absent = dir.path().join("absent.crt");
    assert_eq!(
        field_of(&tls(Some(absent.clone()), None, None)),
        "etcd.ca_file"
    );
    assert_eq!(
        field_of(&tls(None, Some(cert.clone()), Some(absent))),
        "etcd.key_file"
    );
    assert_eq!(
        field_of(&tls(Some(dir.path().to_owned()), None, None)),
        "etcd.ca_file"
    );
    assert!(load(&tls(Some(cert.clone()), Some(cert.clone()), Some(key))).is_ok());
    let plain_http = LockArgs {
        etcd_endpoints: Some(vec!["http://etcd:2379".into()]),
        ..tls(Some(cert), None, None)
    };
    assert_eq!(field_of(&plain_http), "etcd.endpoints");
}

#[test]
fn timeouts_are_positive() {
    let zero = Some(Duration::ZERO);
    let a = LockArgs {
        etcd_connect_timeout: zero,
        ..args()
    };
    assert_eq!(field_of(&a), "etcd.connect_timeout");
    let a = LockArgs {
        etcd_request_timeout: zero,
        ..args()
    };
    assert_eq!(field_of(&a), "etcd.request_timeout");
    let a = LockArgs {
        shutdown_timeout: zero,
        ..args()
    };
    assert_eq!(field_of(&a), "shutdown.timeout");
}

#[test]
fn kubernetes_settings() {
    let a = LockArgs {
        kube: Some(KubeMode::On),
        ..args()
    };
    assert_eq!(field_of(&a), "kubernetes.namespace");
    let e = config::load(&a, &no_env_but_hostname).unwrap_err();
    assert_eq!(e.field, "kubernetes.pod_name");
    let a = LockArgs {
        kube_condition_type: Some("Not Valid".into()),
        ..args()
    };
    assert_eq!(field_of(&a), "kubernetes.condition_type");
    let a = LockArgs {
        kube_label: Some("a/b/c".into()),
        ..args()
    };
    assert_eq!(field_of(&a), "kubernetes.label");
    let a = LockArgs {
        kube_condition_type: Some(String::new()),
        kube_label: Some(String::new()),
        ..args()
    };
    let c = load(&a).unwrap();
    assert_eq!((c.kube.condition_type, c.kube.label), (None, None));
}

fn no_env_but_hostname(name: &str) -> Option<String> {
    (name == "HOSTNAME").then(|| "h".to_owned())
}

#[test]
fn config_file_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = LockArgs {
        config: Some(dir.path().join("absent.yaml")),
        ..args()
    };
    assert_eq!(field_of(&a), "config");

    let file = yaml(&dir, "lock:\n  name: x\n  tll: 10s\n");
    let e = load(&LockArgs {
        config: Some(file.clone()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(e.field, "lock.tll");
    assert!(e.message.contains(file.to_str().unwrap()), "{e}");
    assert!(e.message.contains("line 3 column 3"), "{e}");

    let file = yaml(&dir, "kubernetes: {enabled: sometimes}\n");
    let a = LockArgs {
        config: Some(file),
        ..args()
    };
    assert_eq!(field_of(&a), "kubernetes.enabled");

    let file = yaml(&dir, "lock: {ttl: 1s}\n");
    let a = LockArgs {
        config: Some(file),
        ..args()
    };
    assert_eq!(field_of(&a), "lock.ttl", "YAML values are validated too");
}

#[test]
fn exit_code_is_two() {
    assert_eq!(ConfigError::EXIT_CODE, 2);
}
