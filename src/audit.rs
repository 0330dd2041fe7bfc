//! Structured audit events under the `lockkeeper::audit` tracing target: who tried, who got the
//! lock with which lease and fencing token after how long, who released it, who lost it and why.
//! Route that target anywhere with a `tracing` subscriber, or to a JSON-lines file with
//! [`json_file_layer`].

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

use crate::lock::{Contender, ReleaseOutcome};
use crate::LeaseId;

/// The tracing target of every audit event.
pub const TARGET: &str = "lockkeeper::audit";

pub(crate) fn attempt(name: &str, identity: &str, lease: LeaseId, timeout: Option<Duration>) {
    tracing::info!(
        target: TARGET,
        event = "attempt",
        lock = name,
        identity,
        lease = %lease,
        timeout_ms = timeout.map(|t| t.as_millis() as u64),
        "lock attempt"
    );
}

pub(crate) fn acquired(me: &Contender, waited: Duration) {
    tracing::info!(
        target: TARGET,
        event = "acquired",
        lock = %me.name,
        key = %me.key,
        identity = %me.identity,
        lease = %me.lease,
        fencing_token = me.revision,
        wait_ms = waited.as_millis() as u64,
        "lock acquired"
    );
}

pub(crate) fn timed_out(name: &str, identity: &str, waited: Duration) {
    tracing::info!(
        target: TARGET,
        event = "timeout",
        lock = name,
        identity,
        wait_ms = waited.as_millis() as u64,
        "lock not acquired before the timeout"
    );
}

pub(crate) fn released(me: &Contender, outcome: ReleaseOutcome) {
    tracing::info!(
        target: TARGET,
        event = "released",
        lock = %me.name,
        key = %me.key,
        identity = %me.identity,
        lease = %me.lease,
        fencing_token = me.revision,
        owned = outcome == ReleaseOutcome::Released,
        "lock released"
    );
}

/// Records that a holder stopped holding for `reason` (a stable label).
pub fn lost(me: &Contender, reason: &str) {
    tracing::warn!(
        target: TARGET,
        event = "lost",
        lock = %me.name,
        key = %me.key,
        identity = %me.identity,
        lease = %me.lease,
        fencing_token = me.revision,
        reason,
        "lock lost"
    );
}

/// A layer that appends every audit event, and nothing else, to `path` as JSON lines.
pub fn json_file_layer<S>(path: &Path) -> std::io::Result<impl Layer<S> + Send + Sync + 'static>
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
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::DEBUG)))
}
