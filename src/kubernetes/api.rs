//! The API calls: condition and label patches (a "held" write fenced by the pod's
//! `resourceVersion`, re-read after a 409), reading the pod, and creating Events.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::status::Status;

use super::desired::{Desired, EventSpec, Why};
use super::retry::Outcome;
use super::{KubeReporter, Worker, COMPONENT};

/// Attempts for one Event, and for the final state once the agent is stopping.
const BOUNDED_ATTEMPTS: u32 = 5;
/// 409 answers to one fenced write (the pod changed under us) before giving up on it.
const MAX_CONFLICTS: u32 = 5;

/// Which pod write: the condition on `pods/status`, or the label on the pod.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Condition,
    Label,
}

impl Target {
    pub(super) fn op(self) -> &'static str {
        match self {
            Target::Condition => "patch_condition",
            Target::Label => "patch_label",
        }
    }
}

impl Worker {
    pub(super) fn new(r: KubeReporter) -> Self {
        let pods = Api::namespaced(r.client.clone(), &r.settings.namespace);
        let events_api = Api::namespaced(r.client.clone(), &r.settings.namespace);
        Self {
            r,
            pods,
            events_api,
            pod_uid: None,
            resource_version: None,
            lock: String::new(),
            held: (false, None),
            deadline: None,
            desired: Desired::NotHeld {
                why: Why::Initial,
                token: None,
            },
            applied: None,
            condition_shown: None,
            uncertain: false,
            reassert_at: None,
            pending: VecDeque::new(),
        }
    }

    /// Brings condition and label to the desired state. False if a newer status (or the
    /// deadline) superseded it.
    pub(super) async fn converge(
        &mut self,
        rx: &mut watch::Receiver<Status>,
        finishing: bool,
    ) -> bool {
        if self.applied.as_ref() == Some(&self.desired) {
            return true;
        }
        let desired = self.desired.clone();
        let known = self.applied.take();
        let limit = finishing.then_some(BOUNDED_ATTEMPTS);
        // From the first attempt on, the pod's state is unknown (a failed or timed-out request
        // may still be applied), until this state has been applied completely.
        if self.r.settings.condition().is_some() {
            match self.write(Target::Condition, &desired, rx, limit).await {
                Outcome::Done(()) => self.condition_shown = Some(desired.is_held()),
                Outcome::Superseded => return false,
                Outcome::GaveUp | Outcome::Conflict => self.condition_shown = None,
            }
        }
        if self.r.settings.label_key().is_some() {
            if let Outcome::Superseded = self.write(Target::Label, &desired, rx, limit).await {
                return false;
            }
        }
        // Given up (non-retryable or out of attempts) still counts as done for this state:
        // retrying forever on a 403 would only spam; the next transition tries again.
        self.applied = Some(desired.clone());
        if std::mem::take(&mut self.uncertain) && !finishing {
            self.reassert_at = Some(Instant::now() + self.r.request_timeout);
        }
        tracing::debug!(
            held = desired.is_held(),
            ?known,
            "pod condition/label reconciled"
        );
        true
    }

    /// One pod write for `desired`, retried; "held" writes are fenced by the resourceVersion.
    async fn write(
        &mut self,
        target: Target,
        desired: &Desired,
        rx: &mut watch::Receiver<Status>,
        limit: Option<u32>,
    ) -> Outcome<()> {
        let fenced = desired.is_held();
        let mut conflicts = 0;
        loop {
            if fenced && self.resource_version.is_none() {
                match self.get_pod(rx, limit).await {
                    Outcome::Done(()) => {}
                    other => return other,
                }
            }
            let body = self.patch_body(target, desired);
            let pods = self.pods.clone();
            let name = self.r.settings.pod_name.clone();
            let params = patch_params();
            let outcome = match target {
                Target::Condition => {
                    let patch = Patch::Strategic(body);
                    let call = || pods.patch_status(&name, &params, &patch);
                    self.retry(target.op(), rx, limit, true, call).await
                }
                Target::Label => {
                    let patch = Patch::Merge(body);
                    let call = || pods.patch(&name, &params, &patch);
                    self.retry(target.op(), rx, limit, true, call).await
                }
            };
            match outcome {
                Outcome::Done(pod) => {
                    self.remember(&pod);
                    return Outcome::Done(());
                }
                Outcome::Conflict if fenced && conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(
                        op = target.op(),
                        "the pod changed since we last read it (409); reading it again"
                    );
                    self.resource_version = None;
                }
                Outcome::Conflict => {
                    self.r.errors.with_label_values(&[target.op()]).inc();
                    tracing::error!(op = target.op(), "the pod keeps changing (409); giving up");
                    return Outcome::GaveUp;
                }
                Outcome::Superseded => return Outcome::Superseded,
                Outcome::GaveUp => return Outcome::GaveUp,
            }
        }
    }

    /// The patch for `target`: "held" carries the resourceVersion precondition.
    fn patch_body(&self, target: Target, desired: &Desired) -> Value {
        let held = desired.is_held();
        let mut body = match target {
            Target::Condition => {
                let (reason, message) = self.reason_and_message(desired);
                let mut condition = json!({
                    "type": self.r.settings.condition().unwrap_or_default(),
                    "status": if held { "True" } else { "False" },
                    "reason": reason,
                    "message": message,
                });
                // The server never sets it; strategic merge keeps the old one when omitted.
                if self.condition_shown != Some(held) {
                    condition["lastTransitionTime"] = json!(Time(Timestamp::now()));
                }
                json!({ "status": { "conditions": [condition] } })
            }
            Target::Label => {
                let label = self.r.settings.label_key().unwrap_or_default();
                let value = if held { json!("true") } else { Value::Null };
                json!({ "metadata": { "labels": { label: value } } })
            }
        };
        if held {
            body["metadata"]["resourceVersion"] = json!(self.resource_version);
        }
        body
    }

    /// Reads the pod (its resourceVersion and UID).
    async fn get_pod(
        &mut self,
        rx: &mut watch::Receiver<Status>,
        limit: Option<u32>,
    ) -> Outcome<()> {
        let pods = self.pods.clone();
        let name = self.r.settings.pod_name.clone();
        let limit = limit.or(Some(BOUNDED_ATTEMPTS));
        match self
            .retry("get_pod", rx, limit, false, || pods.get(&name))
            .await
        {
            Outcome::Done(pod) => {
                self.remember(&pod);
                Outcome::Done(())
            }
            Outcome::Conflict => Outcome::GaveUp,
            Outcome::Superseded => Outcome::Superseded,
            Outcome::GaveUp => Outcome::GaveUp,
        }
    }

    /// Sends the pending Events in order. False if superseded by a newer status.
    pub(super) async fn flush_events(
        &mut self,
        rx: &mut watch::Receiver<Status>,
        finishing: bool,
    ) -> bool {
        while let Some(spec) = self.pending.front().cloned() {
            if self.pod_uid.is_none() {
                match self.get_pod(rx, None).await {
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
                .retry("create_event", rx, Some(BOUNDED_ATTEMPTS), false, call)
                .await
            {
                Outcome::Superseded if !finishing => return false,
                Outcome::Superseded => continue, // retry the same Event; nothing supersedes it
                Outcome::Done(_) | Outcome::GaveUp | Outcome::Conflict => {
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

    fn remember(&mut self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.pod_uid = Some(uid.clone());
        }
        if let Some(rv) = &pod.metadata.resource_version {
            self.resource_version = Some(rv.clone());
        }
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..PatchParams::default()
    }
}
