//! Kubernetes reporting for the sidecar: mirrors the agent's [`Status`] onto its own pod as a
//! readiness-gate condition, an optional label and Events.
//!
//! The reporter only *observes* the agent's watch channel: local readiness (`/readyz`) has already
//! flipped before anything here runs, and nothing here can delay the agent or make it fail. Every
//! API call is best effort: retried with exponential backoff and jitter, logged and counted
//! in `lockkeeper_kube_api_errors_total{op}` when it fails. A newer status always supersedes an
//! older one that is still being retried, so the pod converges to the latest state. Condition and
//! label patches are retried until they succeed or are superseded (at most 5 attempts once the
//! agent is stopping); an Event gets 5 attempts; client errors that retrying cannot fix (400, 403,
//! 404, 405, 415, 422) are not retried.
//!
//! **Holding is judged here, against the local deadline.** The pod shows "held" only while
//! [`Status::is_ready`] is true: a `Held` status whose deadline passes without a newer status
//! turns the pod to "not held" at that deadline (a timer, not a new status, triggers it). A status
//! that only extends the deadline (same token) sends nothing.
//!
//! **A stale "held" never lands after a newer "not held".** A request abandoned on the client's
//! timeout may still reach the API server later. So every "held" write (condition `True`, label
//! set) carries the pod's `metadata.resourceVersion` as last seen in an answer (a precondition:
//! the server applies it only to that exact version of the pod, else answers 409, after which the
//! reporter reads the pod and decides again), while "not held" writes are unconditional and change
//! the pod (new reason, message and `lastTransitionTime`). A late "held" thus finds a newer
//! version and is refused. And after any write whose outcome was unknown (timed out, connection
//! failed, 5xx), the newest state is written once more one request timeout after it was applied,
//! so the pod also ends in the newest state when a late request of either kind did land.
//!
//! API calls made (what the chart's Role grants, per gating mode):
//! - condition: strategic merge patch of `pods/{name}/status` (`pods/status: patch`); strategic
//!   merge merges `status.conditions` by `type`, so the kubelet's own conditions are kept;
//!   `lastTransitionTime` is set when the condition's status changes (or may have: unknown state);
//! - label: JSON merge patch of `metadata.labels` on `pods/{name}` (`pods: patch`): set to
//!   `"true"` while holding, removed otherwise;
//! - `GET pods/{name}` (`pods: get`) when the pod's `resourceVersion` is unknown or outdated (a
//!   409), and for the pod's UID for Events when no patch answer gave it;
//! - Events: `events.k8s.io/v1` Events regarding the pod (`events.k8s.io/events: create`), with
//!   `reportingController: lockkeeper` and `eventTime`.
//!
//! The module is split by job: `desired` decides what the holding state implies (condition,
//! label, Events), `api` makes the calls (patches, Events, resourceVersion fencing), and `retry`
//! holds the backoff and the reporter's loop.

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::status::Status;

mod api;
mod desired;
mod retry;

pub use retry::RetryPolicy;

use desired::{Desired, EventSpec};

/// The pod condition type set by default (`kubernetes.condition_type`).
pub const DEFAULT_CONDITION_TYPE: &str = "lockkeeper.io/lock-held";
/// Our name towards the API server: field manager and the Events' `reportingController`.
pub const COMPONENT: &str = "lockkeeper";
/// Default bound on one API request.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up the Kubernetes client (reporting failures are logged, never returned).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable in-cluster or kubeconfig configuration, or the client could not be built.
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// What to publish about the lock on our own pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// Our pod's name (downward API `POD_NAME`).
    pub pod_name: String,
    /// Our pod's namespace (downward API `POD_NAMESPACE`).
    pub namespace: String,
    /// Pod condition type to patch (`None` or empty: no condition).
    pub condition_type: Option<String>,
    /// Pod label set to `"true"`/`"false"` (`None` or empty: no label).
    pub label: Option<String>,
    /// Whether to create Events on acquire, loss and release.
    pub events: bool,
}

impl KubeSettings {
    /// Settings with the defaults: condition [`DEFAULT_CONDITION_TYPE`], no label, Events on.
    pub fn new(pod_name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            pod_name: pod_name.into(),
            namespace: namespace.into(),
            condition_type: Some(DEFAULT_CONDITION_TYPE.to_owned()),
            label: None,
            events: true,
        }
    }

    /// Sets the condition type; `None` or an empty string disables the condition.
    pub fn with_condition_type(mut self, condition_type: Option<String>) -> Self {
        self.condition_type = condition_type;
        self
    }

    /// Sets the holder label; `None` or an empty string disables the label.
    pub fn with_label(mut self, label: Option<String>) -> Self {
        self.label = label;
        self
    }

    /// Turns Events on or off.
    pub fn with_events(mut self, events: bool) -> Self {
        self.events = events;
        self
    }

    fn condition(&self) -> Option<&str> {
        self.condition_type.as_deref().filter(|c| !c.is_empty())
    }

    fn label_key(&self) -> Option<&str> {
        self.label.as_deref().filter(|l| !l.is_empty())
    }
}

/// True when `kubernetes.enabled: auto` should turn the integration on: running in a cluster
/// (`KUBERNETES_SERVICE_HOST`) with `POD_NAME` and `POD_NAMESPACE` from the downward API.
pub fn auto_detect() -> bool {
    auto_detect_with(|name| std::env::var(name).ok())
}

/// [`auto_detect`] over any variable lookup (for tests and for config layering).
pub fn auto_detect_with(lookup: impl Fn(&str) -> Option<String>) -> bool {
    ["KUBERNETES_SERVICE_HOST", "POD_NAME", "POD_NAMESPACE"]
        .iter()
        .all(|name| lookup(name).is_some_and(|v| !v.trim().is_empty()))
}

/// A client from the in-cluster service account (or a kubeconfig when run outside a cluster).
pub async fn client_from_env() -> Result<kube::Client, Error> {
    kube::Client::try_default().await.map_err(Error::Client)
}

/// The bound on one API request for a lock with this `ttl`: the default 10 s, but never more
/// than the TTL (a pod update that takes longer than a lease is better abandoned and rewritten).
pub fn request_timeout_for(ttl: Duration) -> Duration {
    DEFAULT_REQUEST_TIMEOUT.min(ttl)
}

/// Publishes the agent's lock state on its pod. Build with [`KubeReporter::new`], run with
/// [`KubeReporter::spawn`].
pub struct KubeReporter {
    client: kube::Client,
    settings: KubeSettings,
    errors: IntCounterVec,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl KubeReporter {
    /// A reporter for our pod; registers `lockkeeper_kube_api_errors_total{op}` in `registry`.
    pub fn new(client: kube::Client, settings: KubeSettings, registry: &Registry) -> Self {
        let errors = IntCounterVec::new(
            Opts::new(
                "lockkeeper_kube_api_errors_total",
                "Failed Kubernetes API calls made by the sidecar, by operation.",
            ),
            &["op"],
        )
        .expect("static metric definition is valid");
        if let Err(e) = registry.register(Box::new(errors.clone())) {
            tracing::warn!(error = %e, "cannot register lockkeeper_kube_api_errors_total");
        }
        Self {
            client,
            settings,
            errors,
            retry: RetryPolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Replaces the retry backoff (default: 200 ms doubling up to 10 s, with jitter).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds each API request (default 10 s); a request that takes longer counts as failed,
    /// and once the state it was part of is applied, that state is written once more this long
    /// after (see the module documentation).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Runs the reporter until it has published the final `Stopping` state, or the channel closed.
    pub fn spawn(self, status: watch::Receiver<Status>) -> JoinHandle<()> {
        tokio::spawn(self.run(status))
    }
}

/// A running reporter's state: what the pod should show, what it is known to show, and the
/// Events still to send. Its methods live with their job: deciding (`desired`), calling the API
/// (`api`), retrying and looping (`retry`).
struct Worker {
    r: KubeReporter,
    pods: Api<Pod>,
    events_api: Api<Event>,
    pod_uid: Option<String>,
    /// The pod's `metadata.resourceVersion` as last seen in an answer (None: unknown).
    resource_version: Option<String>,
    lock: String,
    /// Whether the last observed status was ready (held before its deadline), and its token.
    held: (bool, Option<i64>),
    /// The deadline of the status currently held: at that instant holding is judged again.
    deadline: Option<Instant>,
    desired: Desired,
    /// What the condition and label are known to show (None: unknown, e.g. at startup).
    applied: Option<Desired>,
    /// Whether the condition is known to show `True` (Some(true)) or `False`; None: unknown.
    condition_shown: Option<bool>,
    /// A pod write since the last (re)assertion may or may not have been applied.
    uncertain: bool,
    /// When to write the applied state once more (after an uncertain write).
    reassert_at: Option<Instant>,
    pending: VecDeque<EventSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_condition_or_label_disables_it() {
        let s = KubeSettings::new("p", "ns")
            .with_condition_type(Some(String::new()))
            .with_label(Some(String::new()));
        assert_eq!(s.condition(), None);
        assert_eq!(s.label_key(), None);
        let s = KubeSettings::new("p", "ns").with_label(Some("lockkeeper.io/holder".into()));
        assert_eq!(s.condition(), Some(DEFAULT_CONDITION_TYPE));
        assert_eq!(s.label_key(), Some("lockkeeper.io/holder"));
    }
}
