//! What the sidecar agent publishes about itself: one `Status` value on a watch channel, read by
//! the HTTP server (`/readyz`, `/status`, `/events`), the metrics and the Kubernetes reporter.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

/// The agent's state machine (see DESIGN.md, "States of the sidecar").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Connecting to etcd or granting a lease.
    Connecting,
    /// Queued for the lock.
    Waiting,
    /// First in line after a predecessor that vanished without releasing: waiting out the
    /// lock-delay before holding.
    #[serde(rename = "lock_delay")]
    LockDelay,
    /// Holding the lock (ready only before the deadline).
    Held,
    /// Just lost the lock; will re-queue after a backoff.
    Lost,
    /// Shutting down: readiness off, releasing.
    Stopping,
}

impl AgentState {
    /// Lowercase name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Connecting => "connecting",
            AgentState::Waiting => "waiting",
            AgentState::LockDelay => "lock_delay",
            AgentState::Held => "held",
            AgentState::Lost => "lost",
            AgentState::Stopping => "stopping",
        }
    }
}

/// A snapshot of the agent. `held` in JSON is computed at read time from the local deadline,
/// so a stalled agent can never report a stale "held".
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Lock name.
    pub lock: String,
    /// Our identity (value of our key).
    pub identity: String,
    /// Current state.
    pub state: AgentState,
    /// Fencing token while held.
    pub fencing_token: Option<i64>,
    /// Our contender key while queued or held.
    pub key: Option<String>,
    /// Our lease (hex) while we have one.
    pub lease_id: Option<String>,
    /// Local safety deadline while held (monotonic).
    pub deadline: Option<Instant>,
    /// Identity of the current holder, when known.
    pub holder: Option<String>,
    /// Contenders ahead of us while waiting.
    pub queue_position: Option<u64>,
    /// When the lock-delay ends, in `LockDelay` (monotonic).
    pub lock_delay_until: Option<Instant>,
    /// When the current state began (wall clock, for display).
    pub since: SystemTime,
    /// The etcd endpoints we talk to (comma separated).
    pub etcd_endpoint: String,
    /// Why the lock was last lost, if it was.
    pub last_loss: Option<String>,
}

impl Status {
    /// A fresh status in `Connecting`.
    pub fn new(lock: &str, identity: &str, etcd_endpoint: &str) -> Self {
        Self {
            lock: lock.to_owned(),
            identity: identity.to_owned(),
            state: AgentState::Connecting,
            fencing_token: None,
            key: None,
            lease_id: None,
            deadline: None,
            holder: None,
            queue_position: None,
            lock_delay_until: None,
            since: SystemTime::now(),
            etcd_endpoint: etcd_endpoint.to_owned(),
            last_loss: None,
        }
    }

    /// True only in `Held` and before the local deadline: the readiness answer.
    pub fn is_ready(&self) -> bool {
        self.state == AgentState::Held
            && self.deadline.is_some_and(|d| lockkeeper::clock::now() < d)
    }

    /// Time left before the local deadline, while held.
    pub fn remaining(&self) -> Option<Duration> {
        match self.state {
            AgentState::Held => self
                .deadline
                .map(|d| d.saturating_duration_since(lockkeeper::clock::now())),
            _ => None,
        }
    }

    /// Time left of the lock-delay, in `LockDelay`.
    pub fn lock_delay_remaining(&self) -> Option<Duration> {
        match self.state {
            AgentState::LockDelay => self
                .lock_delay_until
                .map(|d| d.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// The JSON document served at `/status` and pushed on `/events`.
    pub fn to_json(&self) -> serde_json::Value {
        let held = self.is_ready();
        serde_json::json!({
            "lock": self.lock,
            "identity": self.identity,
            "state": self.state,
            "held": held,
            "fencing_token": self.fencing_token,
            "key": self.key,
            "lease_id": self.lease_id,
            "lease_remaining_ms": self.remaining().map(|d| d.as_millis() as u64),
            "holder": self.holder,
            "queue_position": if self.state == AgentState::Waiting { self.queue_position } else { None },
            "lock_delay_remaining_ms": self.lock_delay_remaining().map(|d| d.as_millis() as u64),
            "since": humantime::format_rfc3339_millis(self.since).to_string(),
            "etcd_endpoint": self.etcd_endpoint,
            "last_loss": self.last_loss,
        })
    }
}
