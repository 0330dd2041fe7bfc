//! Desired state: what the agent's status implies for the pod (condition `True`/`False` with
//! its reason and message, label set or removed) and which Events it calls for.

use crate::status::{AgentState, Status};

use super::Worker;

/// Most Events kept waiting to be sent; older ones are dropped first.
const MAX_PENDING_EVENTS: usize = 32;
/// Why the pod is shown as not holding when the local deadline passed without a renewal.
const DEADLINE_PASSED: &str = "the local deadline passed without a renewed lease";

/// Why the pod does not hold the lock (condition reason and Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// Never held since we started (startup reconcile).
    Initial,
    /// Lost, with the agent's reason (or the local deadline passing).
    Lost(String),
    /// Released in an orderly way (stopping).
    Released,
}

/// What the pod should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Desired {
    Held { token: Option<i64> },
    NotHeld { why: Why, token: Option<i64> },
}

impl Desired {
    pub(super) fn is_held(&self) -> bool {
        matches!(self, Desired::Held { .. })
    }
}

/// One Event to create.
#[derive(Clone, Debug)]
pub(super) struct EventSpec {
    pub(super) reason: &'static str,
    pub(super) action: &'static str,
    pub(super) warning: bool,
    pub(super) note: String,
}

impl Worker {
    /// Folds one observed status into the desired pod state and the Events to send. Holding
    /// means ready *now*: `Held` and before its deadline.
    pub(super) fn observe(&mut self, status: &Status, closed: bool) {
        self.lock.clone_from(&status.lock);
        let now_held = !closed && status.is_ready();
        let token = status.fencing_token;
        let (was_held, old_token) = self.held;
        if was_held && (!now_held || token != old_token) {
            let why = match status.state {
                AgentState::Stopping => Why::Released,
                _ if closed => Why::Released,
                AgentState::Held if token == old_token => Why::Lost(DEADLINE_PASSED.into()),
                _ => Why::Lost(status.last_loss.clone().unwrap_or_else(|| "unknown".into())),
            };
            self.push_event(self.not_held_event(&why, old_token));
            self.desired = Desired::NotHeld {
                why,
                token: old_token,
            };
        }
        if now_held && (!was_held || token != old_token) {
            self.push_event(EventSpec {
                reason: "LockAcquired",
                action: "Acquire",
                warning: false,
                note: self.held_message(token),
            });
        }
        if now_held {
            self.desired = Desired::Held { token };
        }
        self.held = (now_held, token);
        self.deadline = if now_held { status.deadline } else { None };
    }

    fn push_event(&mut self, event: EventSpec) {
        if !self.r.settings.events {
            return;
        }
        if self.pending.len() >= MAX_PENDING_EVENTS {
            let dropped = self.pending.pop_front();
            tracing::warn!(
                ?dropped,
                "too many pending Kubernetes Events; dropping the oldest"
            );
        }
        self.pending.push_back(event);
    }

    fn held_message(&self, token: Option<i64>) -> String {
        format!(
            "holding lock {:?} with fencing token {}",
            self.lock,
            fmt_token(token)
        )
    }

    fn not_held_event(&self, why: &Why, token: Option<i64>) -> EventSpec {
        let (reason, action, warning) = match why {
            Why::Lost(_) => ("LockLost", "Lose", true),
            Why::Released | Why::Initial => ("LockReleased", "Release", false),
        };
        EventSpec {
            reason,
            action,
            warning,
            note: self.not_held_message(why, token),
        }
    }

    fn not_held_message(&self, why: &Why, token: Option<i64>) -> String {
        let token = fmt_token(token);
        match why {
            Why::Initial => format!("not holding lock {:?}", self.lock),
            Why::Lost(reason) => {
                format!(
                    "lost lock {:?} (fencing token {token}): {reason}",
                    self.lock
                )
            }
            Why::Released => format!("released lock {:?} (fencing token {token})", self.lock),
        }
    }

    pub(super) fn reason_and_message(&self, desired: &Desired) -> (&'static str, String) {
        match desired {
            Desired::Held { token } => ("LockAcquired", self.held_message(*token)),
            Desired::NotHeld { why, token } => {
                let reason = match why {
                    Why::Initial => "LockNotHeld",
                    Why::Lost(_) => "LockLost",
                    Why::Released => "LockReleased",
                };
                (reason, self.not_held_message(why, *token))
            }
        }
    }
}

fn fmt_token(token: Option<i64>) -> String {
    token.map_or_else(|| "none".into(), |t| t.to_string())
}
