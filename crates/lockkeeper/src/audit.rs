//! Structured audit events under the `lockkeeper::audit` tracing target: who tried, who got the
//! lock with which lease and fencing token after how long, who released it, who lost it and why.
//! Route that target anywhere with a `tracing` subscriber (a filter on [`TARGET`] keeps them
//! apart from the rest of the log).
//!
//! The library emits every event itself. The functions here are for callers that run their own
//! acquisition loop on the [`queue`](crate::queue) primitives, so that its audit trail reads
//! like the library's.

use std::time::Duration;

use crate::LeaseId;
use crate::{Contender, ReleaseOutcome};

/// The tracing target of every audit event.
pub const TARGET: &str = "lockkeeper::audit";

/// Records an attempt to acquire lock `name` as `identity` on `lease`, with the caller's
/// `timeout` if any.
pub fn attempt(name: &str, identity: &str, lease: LeaseId, timeout: Option<Duration>) {
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

/// Records that `me` holds its lock after waiting `waited` in the queue.
pub fn acquired(me: &Contender, waited: Duration) {
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

pub(crate) fn lock_delay(me: &Contender, predecessor: &str, delay: Duration) {
    tracing::info!(
        target: TARGET,
        event = "lock_delay",
        lock = %me.name,
        key = %me.key,
        identity = %me.identity,
        lease = %me.lease,
        predecessor,
        delay_ms = delay.as_millis() as u64,
        "predecessor vanished without releasing: waiting out the lock-delay"
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
