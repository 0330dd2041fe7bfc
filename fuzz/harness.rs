//! What the fuzz targets (fuzz/fuzz_targets/*.rs) and the deterministic corpus test
//! (tests/safety.rs, `config_parsing_survives_a_garbage_corpus`) run on each input: parse the
//! configuration as `lockkeeper run` would and check the promises of DESIGN.md ("invalid
//! configuration: exit code 2 and one message naming the field and the problem; never a panic").
//!
//! Inputs that name device or kernel files are skipped: `--config /dev/zero` would make any
//! reader wait forever, which says nothing about the parser.

use std::path::Path;

use lockkeeper_agent::cli::{Cli, Command};
use lockkeeper_agent::config::{self, ConfigError, FileConfig};

fn touches_special_files(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "/run"]
        .iter()
        .any(|p| text.contains(p))
}

fn check_error(e: &ConfigError) {
    let line = e.to_string();
    assert!(!e.field.is_empty(), "an error must name a field: {line}");
    assert!(!line.contains(['\n', '\r']), "one line: {line:?}");
    assert!(line.starts_with("invalid configuration: "), "{line}");
}

/// A YAML configuration file: parsed, then resolved and validated like `run --config FILE`.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if touches_special_files(text) {
        return;
    }
    match FileConfig::parse(text, Path::new("fuzz.yaml")) {
        Err(e) => check_error(&e),
        Ok(_) => {
            // Resolve it completely, from a real file, as the sidecar would.
            let Ok(dir) = tempfile_dir() else { return };
            let path = dir.join("config.yaml");
            if std::fs::write(&path, text).is_err() {
                return;
            }
            let args = lockkeeper_agent::cli::LockArgs {
                config: Some(path),
                ..Default::default()
            };
            if let Err(e) = config::load(&args, &|_| None) {
                check_error(&e);
            }
        }
    }
}

/// Command-line arguments (NUL-separated) after `lockkeeper run`: clap, then the configuration.
pub fn cli_args(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if touches_special_files(text) || text.contains("--config") || text.contains("--help") {
        return;
    }
    let args = std::iter::once("lockkeeper")
        .chain(std::iter::once("run"))
        .chain(text.split('\0'));
    let cli = match <Cli as clap::Parser>::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                matches!(e.exit_code(), 0 | 2),
                "clap usage errors exit 2: {e}"
            );
            return;
        }
    };
    if let Command::Run(args) = cli.command {
        match config::load(&args, &|_| None) {
            Err(e) => check_error(&e),
            Ok(c) => {
                assert!(c.ttl >= std::time::Duration::from_secs(2));
                assert!(c.safety_margin < c.ttl / 2);
                assert!(c.renew_interval < c.ttl - c.safety_margin);
                assert!(!format!("{c:?}").contains("hunter2"), "password in Debug");
            }
        }
    }
}

/// One scratch directory per process, reused by every input.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let d = std::env::temp_dir().join(format!("lockkeeper-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(DIR.get_or_init(|| d).clone())
}
