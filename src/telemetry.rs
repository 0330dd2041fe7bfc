//! Logging for the sidecar: one `tracing` subscriber writing to stderr (JSON lines or text),
//! plus, optionally, the audit events as JSON lines in their own file.
//!
//! The filter comes only from the `level` argument; `RUST_LOG` is not read here. The
//! configuration falls back to `RUST_LOG` when no log level is set anywhere (see
//! [`crate::config::load`]), so there is exactly one place that decides. The audit file gets
//! every audit event whatever the log level, so `--log-level warn` never loses audit records.
//! Secrets never reach a log line: [`crate::config::Secret`] redacts itself in `Debug`.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{Config, ConfigError, LogFormat};

/// A boxed layer over the plain registry, so differently typed layers fit in one `Vec`.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Installs the global subscriber: `level` (an `EnvFilter` directive string such as
/// `info,lockkeeper=debug`) filters what goes to stderr in `format`; `audit_file`, when given,
/// receives the `lockkeeper::audit` events as JSON lines. Fails on a bad filter (`log.level`),
/// an audit file that cannot be opened (`log.audit_file`), or a subscriber already installed.
pub fn init(format: LogFormat, level: &str, audit_file: Option<&Path>) -> Result<(), ConfigError> {
    let ansi = std::io::stderr().is_terminal();
    let layers = layers(format, level, audit_file, std::io::stderr, ansi)?;
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| ConfigError::new("log", format!("cannot install the logger: {e}")))
}

/// [`init`] with the log settings of a resolved configuration.
pub fn init_from_config(config: &Config) -> Result<(), ConfigError> {
    init(
        config.log_format,
        &config.log_level,
        config.audit_file.as_deref(),
    )
}

/// The layers [`init`] installs, writing log lines to `writer`; separate so tests can capture.
fn layers<W>(
    format: LogFormat,
    level: &str,
    audit_file: Option<&Path>,
    writer: W,
    ansi: bool,
) -> Result<Vec<BoxedLayer>, ConfigError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|e| {
        ConfigError::new("log.level", format!("{level:?} is not a valid filter: {e}"))
    })?;
    let stderr: BoxedLayer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![stderr];
    if let Some(path) = audit_file {
        let audit = audit_file_layer::<Registry>(path).map_err(|e| {
            ConfigError::new(
                "log.audit_file",
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        layers.push(audit.boxed());
    }
    Ok(layers)
}

/// A layer that appends every audit event (target [`lockkeeper::audit::TARGET`]), and nothing
/// else, to `path` as JSON lines.
pub fn audit_file_layer<S>(path: &Path) -> std::io::Result<impl Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(Mutex::new(file))
        .with_filter(Targets::new().with_target(lockkeeper::audit::TARGET, tracing::Level::DEBUG)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(
        format: LogFormat,
        level: &str,
        audit: Option<&Path>,
        emit: impl FnOnce(),
    ) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let layers = layers(format, level, audit, move || sink.clone(), false).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layers), emit);
        out.text()
    }

    #[test]
    fn json_is_one_flat_object_per_line() {
        let out = capture(LogFormat::Json, "info", None, || {
            tracing::info!(lock = "reports", fencing_token = 42, "lock acquired");
            tracing::debug!("filtered out");
            tracing::warn!("second line");
        });
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["message"], "lock acquired");
        assert_eq!(first["lock"], "reports");
        assert_eq!(first["fencing_token"], 42);
        assert_eq!(first["level"], "INFO");
    }

    #[test]
    fn text_format_and_directives() {
        let out = capture(LogFormat::Text, "warn,lockkeeper=debug", None, || {
            tracing::debug!(target: "lockkeeper_agent::agent", "kept");
            tracing::info!(target: "hyper", "dropped");
        });
        assert!(out.contains("kept"), "{out}");
        assert!(!out.contains("dropped"), "{out}");
        assert!(!out.trim_start().starts_with('{'), "{out}");
    }

    #[test]
    fn audit_events_reach_the_file_whatever_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let out = capture(LogFormat::Json, "warn", Some(&path), || {
            tracing::info!(target: lockkeeper::audit::TARGET, event = "acquired", lock = "x", "lock acquired");
            tracing::warn!("not an audit event");
        });
        assert!(!out.contains("acquired"), "{out}");
        let file = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = file.lines().collect();
        assert_eq!(lines.len(), 1, "{file}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["event"], "acquired");
        assert_eq!(event["lock"], "x");
    }

    #[test]
    fn errors_name_the_field() {
        let sink = || std::io::sink();
        let e = layers(LogFormat::Json, "lockkeeper=loud", None, sink, false)
            .err()
            .unwrap();
        assert_eq!(e.field, "log.level");
        let missing = Path::new("/nonexistent-dir/audit.jsonl");
        let e = layers(LogFormat::Json, "info", Some(missing), sink, false)
            .err()
            .unwrap();
        assert_eq!(e.field, "log.audit_file");
    }
}
