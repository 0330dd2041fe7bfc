//! Kubernetes reporting for the sidecar: mirrors the agent's [`Status`] onto its own pod as a
//! readiness-gate condition, an optional label and Events.
//!
//! The reporter only *observes* the agent's watch channel: local readiness (`/readyz`) has already
//! flipped before anything here runs, and nothing here can delay the agent or make it fail. Every
//! API call is best effort: retried with exponential backoff and jitter, logged and counted
//! in `lockkeeper_kube_api_errors_total{op}` when it fails. A newer status always supersedes an
//! older one that is still being retried, so the pod converges to the latest state and never gets
//! a stale one applied after a newer one. Condition and label patches are retried until they
//! succeed or are superseded (at most 5 attempts once the agent is stopping); an Event gets 5
//! attempts; client errors that retrying cannot fix (400, 403, 404, 405, 415, 422) are not retried.
//!
//! API calls made (what the chart's Role grants, per gating mode):
//! - condition: strategic merge patch of `pods/{name}/status` (`pods/status: patch`); strategic
//!   merge merges `status.conditions` by `type`, so the kubelet's own conditions are kept;
//! - label: JSON merge patch of `metadata.labels` on `pods/{name}` (`pods: patch`);
//! - Events: `events.k8s.io/v1` Events regarding the pod (`events.k8s.io/events: create`), with
//!   `reportingController: lockkeeper`; the pod's UID comes from a patch answer, else from one
//!   `GET pods/{name}` (`pods: get`).

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use prometheus::{IntCounterVec, Opts, Registry};
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::status::{AgentState, Status};

/// The pod condition type set by default (`kubernetes.condition_type`).
pub const DEFAULT_CONDITION_TYPE: &str = "lockkeeper.io/lock-held";
/// Our name towards the API server: field manager and the Events' `reportingController`.
pub const COMPONENT: &str = "lockkeeper";
/// Most Events kept waiting to be sent; older ones are dropped first.
const MAX_PENDING_EVENTS: usize = 32;
/// Attempts for one Event, and for the final state once the agent is stopping.
const BOUNDED_ATTEMPTS: u32 = 5;

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

    /// Default settings for the pod named by `POD_NAME` in `POD_NAMESPACE` (downward API), if set.
    pub fn from_env() -> Option<Self> {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Some(Self::new(var("POD_NAME")?, var("POD_NAMESPACE")?))
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

/// Exponential backoff with jitter between API attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1): uniform in `[cap/2, cap]`, where `cap`
    /// doubles from `initial` up to `max` (the jitter spreads retries of many pods apart).
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }
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

// === impl KubeReporter ===

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
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Replaces the retry backoff (default: 200 ms doubling up to 10 s, with jitter).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds each API request (default 10 s); a request that takes longer counts as failed.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Runs the reporter until it has published the final `Stopping` state, or the channel closed.
    pub fn spawn(self, status: watch::Receiver<Status>) -> JoinHandle<()> {
        tokio::spawn(self.run(status))
    }

    async fn run(self, mut rx: watch::Receiver<Status>) {
        let mut w = Worker::new(self);
        let mut closed = false;
        loop {
            let status = rx.borrow_and_update().clone();
            w.observe(&status, closed);
            let finishing = closed || status.state == AgentState::Stopping;
            let done =
                w.converge(&mut rx, finishing).await && w.flush_events(&mut rx, finishing).await;
            if !done {
                continue; // superseded: a newer status is waiting to be read
            }
            if finishing {
                tracing::debug!("kubernetes reporter done");
                return;
            }
            if rx.changed().await.is_err() {
                closed = true;
            }
        }
    }
}

/// Why the pod does not hold the lock (condition reason and Event).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Why {
    /// Never held since we started (startup reconcile).
    Initial,
    /// Lost, with the agent's reason.
    Lost(String),
    /// Released in an orderly way (stopping).
    Released,
}

/// What the pod should show.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Desired {
    Held { token: Option<i64> },
    NotHeld { why: Why, token: Option<i64> },
}

/// One Event to create.
#[derive(Clone, Debug)]
struct EventSpec {
    reason: &'static str,
    action: &'static str,
    warning: bool,
    note: String,
}

/// Result of a retried call.
enum Outcome<T> {
    Done(T),
    /// A newer status arrived while waiting to retry: drop this call, re-read the status.
    Superseded,
    /// Not retryable or out of attempts (already logged and counted).
    GaveUp,
}

struct Worker {
    r: KubeReporter,
    pods: Api<Pod>,
    events_api: Api<Event>,
    pod_uid: Option<String>,
    lock: String,
    /// Whether the last observed status was Held, and its token.
    held: (bool, Option<i64>),
    desired: Desired,
    /// What the condition and label are known to show (None: unknown, e.g. at startup).
    applied: Option<Desired>,
    pending: VecDeque<EventSpec>,
}

// === impl Worker ===

impl Worker {
    fn new(r: KubeReporter) -> Self {
        let pods = Api::namespaced(r.client.clone(), &r.settings.namespace);
        let events_api = Api::namespaced(r.client.clone(), &r.settings.namespace);
        Self {
            r,
            pods,
            events_api,
            pod_uid: None,
            lock: String::new(),
            held: (false, None),
            desired: Desired::NotHeld {
                why: Why::Initial,
                token: None,
            },
            applied: None,
            pending: VecDeque::new(),
        }
    }

    /// Folds one observed status into the desired pod state and the Events to send.
    fn observe(&mut self, status: &Status, closed: bool) {
        self.lock.clone_from(&status.lock);
        let now_held = status.state == AgentState::Held && !closed;
        let token = status.fencing_token;
        let (was_held, old_token) = self.held;
        if was_held && (!now_held || token != old_token) {
            let why = match status.state {
                AgentState::Stopping => Why::Released,
                _ if closed => Why::Released,
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

    /// Brings condition and label to the desired state. False if a newer status superseded it.
    async fn converge(&mut self, rx: &mut watch::Receiver<Status>, finishing: bool) -> bool {
        if self.applied.as_ref() == Some(&self.desired) {
            return true;
        }
        let desired = self.desired.clone();
        let want = matches!(desired, Desired::Held { .. });
        let (reason, message) = match &desired {
            Desired::Held { token } => ("LockAcquired", self.held_message(*token)),
            Desired::NotHeld { why, token } => {
                let reason = match why {
                    Why::Initial => "LockNotHeld",
                    Why::Lost(_) => "LockLost",
                    Why::Released => "LockReleased",
                };
                (reason, self.not_held_message(why, *token))
            }
        };
        let limit = finishing.then_some(BOUNDED_ATTEMPTS);
        // From the first attempt on, the pod's state is unknown (a failed or timed-out request
        // may still have been applied), until this state has been applied completely.
        self.applied = None;
        if let Some(condition) = self.r.settings.condition().map(str::to_owned) {
            let patch = json!({ "status": { "conditions": [{
                "type": condition,
                "status": if want { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            let pods = self.pods.clone();
            let name = self.r.settings.pod_name.clone();
            let params = patch_params();
            let patch = Patch::Strategic(patch);
            let call = || pods.patch_status(&name, &params, &patch);
            match self.retry("patch_condition", rx, limit, call).await {
                Outcome::Done(pod) => self.remember_uid(&pod),
                Outcome::Superseded => return false,
                Outcome::GaveUp => {}
            }
        }
        if let Some(label) = self.r.settings.label_key().map(str::to_owned) {
            let value = if want { "true" } else { "false" };
            let patch = json!({ "metadata": { "labels": { label: value } } });
            let pods = self.pods.clone();
            let name = self.r.settings.pod_name.clone();
            let params = patch_params();
            let patch = Patch::Merge(patch);
            let call = || pods.patch(&name, &params, &patch);
            match self.retry("patch_label", rx, limit, call).await {
                Outcome::Done(pod) => self.remember_uid(&pod),
                Outcome::Superseded => return false,
                Outcome::GaveUp => {}
            }
        }
        // Given up (non-retryable or out of attempts) still counts as done for this state:
        // retrying forever on a 403 would only spam; the next transition tries again.
        self.applied = Some(desired);
        tracing::debug!(held = want, reason, "pod condition/label reconciled");
        true
    }

    /// Sends the pending Events in order. False if superseded by a newer status.
    async fn flush_events(&mut self, rx: &mut watch::Receiver<Status>, finishing: bool) -> bool {
        while let Some(spec) = self.pending.front().cloned() {
            if self.pod_uid.is_none() {
                let pods = self.pods.clone();
                let name = self.r.settings.pod_name.clone();
                match self
                    .retry("get_pod", rx, Some(BOUNDED_ATTEMPTS), || pods.get(&name))
                    .await
                {
                    Outcome::Done(pod) => self.remember_uid(&pod),
                    Outcome::Superseded if !finishing => return false,
                    _ => {} // send without the UID: still listed by `kubectl get events`
                }
            }
            let event = self.build_event(&spec);
            let api = self.events_api.clone();
            let params = PostParams {
                field_manager: Some(COMPONENT.into()),
                ..PostParams::default()
            };
            let call = || api.create(&params, &event);
            match self
                .retry("create_event", rx, Some(BOUNDED_ATTEMPTS), call)
                .await
            {
                Outcome::Superseded if !finishing => return false,
                Outcome::Superseded => continue, // retry the same Event; nothing supersedes it
                Outcome::Done(_) | Outcome::GaveUp => {
                    self.pending.pop_front();
                }
            }
        }
        true
    }

    fn build_event(&self, spec: &EventSpec) -> Event {
        let s = &self.r.settings;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Event names must be unique DNS subdomains (≤ 253 characters).
        let prefix: String = s.pod_name.chars().take(200).collect();
        let prefix = prefix.trim_end_matches(['-', '.']);
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}", now.as_nanos())),
                namespace: Some(s.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(if spec.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(spec.reason.into()),
            action: Some(spec.action.into()),
            note: Some(spec.note.chars().take(1000).collect()),
            reporting_controller: Some(COMPONENT.into()),
            reporting_instance: Some(s.pod_name.chars().take(128).collect()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(s.pod_name.clone()),
                namespace: Some(s.namespace.clone()),
                uid: self.pod_uid.clone(),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }

    fn remember_uid(&mut self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.pod_uid = Some(uid.clone());
        }
    }

    /// Calls `call` until it succeeds, fails for good, runs out of `limit` attempts, or a newer
    /// status arrives during a backoff wait (an in-flight request is never abandoned for that).
    async fn retry<T, F, Fut>(
        &self,
        op: &'static str,
        rx: &mut watch::Receiver<Status>,
        limit: Option<u32>,
        mut call: F,
    ) -> Outcome<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut watching = true;
        for attempt in 1u32.. {
            let (error, retryable) =
                match tokio::time::timeout(self.r.request_timeout, call()).await {
                    Ok(Ok(value)) => return Outcome::Done(value),
                    Ok(Err(e)) => (e.to_string(), is_retryable(&e)),
                    Err(_) => (
                        format!("timed out after {:?}", self.r.request_timeout),
                        true,
                    ),
                };
            self.r.errors.with_label_values(&[op]).inc();
            if !retryable || limit.is_some_and(|l| attempt >= l) {
                tracing::error!(
                    op,
                    attempt,
                    error,
                    retryable,
                    "Kubernetes API call failed; giving up"
                );
                return Outcome::GaveUp;
            }
            tracing::warn!(op, attempt, error, "Kubernetes API call failed; will retry");
            if self.backoff(rx, attempt, &mut watching).await {
                return Outcome::Superseded;
            }
        }
        Outcome::GaveUp
    }

    /// Sleeps the backoff for `attempt`; true if a newer status arrived meanwhile.
    async fn backoff(
        &self,
        rx: &mut watch::Receiver<Status>,
        attempt: u32,
        watching: &mut bool,
    ) -> bool {
        let sleep = tokio::time::sleep(self.r.retry.delay(attempt));
        tokio::pin!(sleep);
        loop {
            if !*watching {
                sleep.await;
                return false;
            }
            tokio::select! {
                biased;
                changed = rx.changed() => match changed {
                    Ok(()) => return true,
                    Err(_) => *watching = false, // closed: nothing newer can come
                },
                () = &mut sleep => return false,
            }
        }
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..PatchParams::default()
    }
}

fn fmt_token(token: Option<i64>) -> String {
    token.map_or_else(|| "none".into(), |t| t.to_string())
}

/// Client-side problems (bad request, forbidden, not found, invalid) do not heal by retrying.
fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => !matches!(status.code, 400 | 403 | 404 | 405 | 415 | 422),
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = policy.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.delay(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }

    #[test]
    fn client_errors_are_not_retried() {
        let api = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        for code in [400, 403, 404, 422] {
            assert!(!is_retryable(&api(code)), "{code}");
        }
        for code in [401, 409, 429, 500, 503] {
            assert!(is_retryable(&api(code)), "{code}");
        }
    }

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
