//! The Kubernetes reporter against a mock API server (kube-rs's `tower_test` pattern): each
//! `Scenario` lists the exact requests the reporter must make, in order, with method, path,
//! query, patch Content-Type and JSON body, and the statuses the agent publishes in between.
//! A request that never comes fails the test after a timeout; so does an unexpected one.
//!
//! The mock numbers the pod's `resourceVersion`: every successful pod answer carries the next
//! number, and a "held" write must carry the last one it was given (its precondition).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use lockkeeper_agent::kubernetes::{KubeReporter, KubeSettings, RetryPolicy};
use lockkeeper_agent::status::{AgentState, Status};
use serde_json::{json, Value};
use tokio::sync::watch;

const NS: &str = "payments";
const POD: &str = "worker-7d9f-abcde";
const UID: &str = "0b3c2a9e-1111-2222-3333-444455556666";
const LOCK: &str = "reports";
const CONDITION: &str = "lockkeeper.io/lock-held";
const LABEL: &str = "lockkeeper.io/holder";
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

// === what the agent publishes ===

fn status(state: AgentState, token: Option<i64>, loss: Option<&str>) -> Status {
    let mut s = Status::new(LOCK, POD, "http://etcd-0:2379");
    s.state = state;
    s.fencing_token = token;
    s.last_loss = loss.map(str::to_owned);
    s
}

/// Held, with a deadline far enough ahead for any scenario.
fn held(token: i64) -> Status {
    held_for(token, Duration::from_secs(3600))
}

/// Held, with the local deadline `ttl` from now.
fn held_for(token: i64, ttl: Duration) -> Status {
    let mut s = status(AgentState::Held, Some(token), None);
    s.deadline = Some(tokio::time::Instant::now() + ttl);
    s
}

// === the requests we expect ===

/// One request the reporter must make next.
#[derive(Clone, Debug)]
enum Call {
    /// Strategic merge patch of `pods/{name}/status` setting our condition.
    Condition {
        status: &'static str,
        reason: &'static str,
        message: String,
    },
    /// JSON merge patch of `pods/{name}` setting the holder label (`None`: removing it).
    Label { value: Option<&'static str> },
    /// `POST` of an `events.k8s.io/v1` Event regarding the pod.
    Event {
        reason: &'static str,
        kind: &'static str,
        action: &'static str,
        note: String,
        uid: bool,
    },
    /// `GET pods/{name}` (to learn the UID for Events).
    GetPod,
}

/// How the mock API server answers.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok,
    InternalError,
    /// 409: the pod's resourceVersion moved on (the precondition failed).
    Conflict,
    /// Never answered (the client times out; the request may still be applied later).
    Hang,
}

#[derive(Debug)]
enum Step {
    Expect(Call, Reply),
    Publish(Status),
    /// Publishes `held_for(token, ttl)`, with the deadline computed at that moment.
    PublishHeldFor(i64, Duration),
    /// No request may come for this long.
    Quiet(Duration),
    /// The agent drops its sender (crashed or finished without `Stopping`).
    CloseChannel,
}

/// The test cases: each lists the exact API traffic for one behaviour.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    StartupReconcile,
    Acquire,
    Loss,
    Shutdown,
    LabelMode,
    EventsDisabled,
    EventsOnly,
    ErrorThenRetry,
    Supersession,
    ChannelClosed,
    TimedOutHeldIsFenced,
    Conflict,
    DeadlineOnlyChanges,
    DeadlinePasses,
}

fn not_held_initial() -> Call {
    Call::Condition {
        status: "False",
        reason: "LockNotHeld",
        message: format!("not holding lock {LOCK:?}"),
    }
}

/// The condition and the Event for holding with `token`.
fn held_calls(token: i64) -> [Call; 2] {
    let message = format!("holding lock {LOCK:?} with fencing token {token}");
    [
        Call::Condition {
            status: "True",
            reason: "LockAcquired",
            message: message.clone(),
        },
        Call::Event {
            reason: "LockAcquired",
            kind: "Normal",
            action: "Acquire",
            note: message,
            uid: true,
        },
    ]
}

fn acquired(token: i64) -> Vec<Step> {
    let [up, event] = held_calls(token);
    vec![
        Step::Publish(held(token)),
        Step::Expect(up, Reply::Ok),
        Step::Expect(event, Reply::Ok),
    ]
}

fn released(token: i64) -> [Call; 2] {
    let message = format!("released lock {LOCK:?} (fencing token {token})");
    [
        Call::Condition {
            status: "False",
            reason: "LockReleased",
            message: message.clone(),
        },
        Call::Event {
            reason: "LockReleased",
            kind: "Normal",
            action: "Release",
            note: message,
            uid: true,
        },
    ]
}

fn lost(token: i64, reason: &str) -> [Call; 2] {
    let message = format!("lost lock {LOCK:?} (fencing token {token}): {reason}");
    [
        Call::Condition {
            status: "False",
            reason: "LockLost",
            message: message.clone(),
        },
        Call::Event {
            reason: "LockLost",
            kind: "Warning",
            action: "Lose",
            note: message,
            uid: true,
        },
    ]
}

impl Scenario {
    fn settings(self) -> KubeSettings {
        let base = KubeSettings::new(POD, NS);
        match self {
            Scenario::LabelMode => base
                .with_condition_type(None)
                .with_label(Some(LABEL.into()))
                .with_events(false),
            Scenario::EventsDisabled => base.with_events(false),
            Scenario::EventsOnly => base.with_condition_type(Some(String::new())),
            _ => base,
        }
    }

    fn steps(self) -> Vec<Step> {
        use Step::*;
        let stopping = status(AgentState::Stopping, None, None);
        let waiting = status(AgentState::Waiting, None, None);
        let mut steps = vec![];
        match self {
            Scenario::StartupReconcile => {
                steps.push(Expect(not_held_initial(), Reply::Ok));
                // Waiting and Stopping without ever holding: the pod already shows False.
                steps.push(Publish(waiting));
                steps.push(Publish(stopping));
            }
            Scenario::Acquire => {
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.extend(acquired(41));
                steps.push(Publish(status(AgentState::Stopping, Some(41), None)));
                steps.extend(released(41).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::Loss => {
                let reason = "keepalive: lease expired (TTL <= 0)";
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.extend(acquired(7));
                steps.push(Publish(status(AgentState::Lost, Some(7), Some(reason))));
                steps.extend(lost(7, reason).map(|c| Expect(c, Reply::Ok)));
                steps.push(Publish(status(AgentState::Waiting, None, Some(reason))));
                steps.push(Publish(stopping));
            }
            Scenario::Shutdown => {
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.extend(acquired(12));
                // The agent stops while holding: readiness already off locally, then release.
                steps.push(Publish(status(AgentState::Stopping, Some(12), None)));
                steps.extend(released(12).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::LabelMode => {
                steps.push(Expect(Call::Label { value: None }, Reply::Ok));
                steps.push(Publish(held(3)));
                steps.push(Expect(
                    Call::Label {
                        value: Some("true"),
                    },
                    Reply::Ok,
                ));
                steps.push(Publish(status(
                    AgentState::Lost,
                    Some(3),
                    Some("key deleted"),
                )));
                steps.push(Expect(Call::Label { value: None }, Reply::Ok));
                steps.push(Publish(stopping));
            }
            Scenario::EventsDisabled => {
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(Publish(held(5)));
                steps.push(Expect(held_calls(5)[0].clone(), Reply::Ok));
                steps.push(Publish(status(AgentState::Stopping, Some(5), None)));
                steps.push(Expect(released(5)[0].clone(), Reply::Ok));
            }
            Scenario::EventsOnly => {
                steps.push(Publish(held(9)));
                steps.push(Expect(Call::GetPod, Reply::Ok));
                steps.push(Expect(held_calls(9)[1].clone(), Reply::Ok));
                steps.push(Publish(status(AgentState::Stopping, Some(9), None)));
                steps.push(Expect(released(9)[1].clone(), Reply::Ok));
            }
            Scenario::ErrorThenRetry => {
                // The first attempt fails with a 500; the retry (same request) succeeds.
                steps.push(Expect(not_held_initial(), Reply::InternalError));
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(Publish(held(21)));
                let [up, event] = held_calls(21);
                steps.push(Expect(up.clone(), Reply::InternalError));
                steps.push(Expect(up, Reply::Ok));
                steps.push(Expect(event.clone(), Reply::InternalError));
                steps.push(Expect(event, Reply::Ok));
                steps.push(Publish(stopping));
                steps.extend(released(21).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::Supersession => {
                let reason = "deadline passed without an acknowledged keepalive";
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(Publish(held(30)));
                let [up, up_event] = held_calls(30);
                steps.push(Expect(up, Reply::InternalError));
                // Lost arrives while the "True" patch waits to be retried: the stale "True" must
                // never be sent again; the next call is "False".
                steps.push(Publish(status(AgentState::Lost, Some(30), Some(reason))));
                let [down, lost_event] = lost(30, reason);
                steps.push(Expect(down, Reply::Ok));
                steps.push(Expect(up_event, Reply::Ok));
                steps.push(Expect(lost_event, Reply::Ok));
                steps.push(Publish(stopping));
            }
            Scenario::ChannelClosed => {
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.extend(acquired(2));
                steps.push(CloseChannel);
                steps.extend(released(2).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::TimedOutHeldIsFenced => {
                // The "True" patch is never answered: the client abandons it on its timeout, but
                // the server may still apply it later. It carried the resourceVersion of the pod
                // as last answered (so a late arrival after the "False" is refused), and once
                // the "False" is applied, it is written once more a request timeout later.
                let reason = "watch: our key was deleted";
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(Publish(held(30)));
                let [up, up_event] = held_calls(30);
                steps.push(Expect(up, Reply::Hang));
                steps.push(Publish(status(AgentState::Lost, Some(30), Some(reason))));
                let [down, lost_event] = lost(30, reason);
                steps.push(Expect(down.clone(), Reply::Ok));
                steps.push(Expect(up_event, Reply::Ok));
                steps.push(Expect(lost_event, Reply::Ok));
                steps.push(Expect(down, Reply::Ok)); // the re-assertion
                steps.push(Quiet(Duration::from_millis(600)));
                steps.push(Publish(stopping));
            }
            Scenario::Conflict => {
                // The pod changed since the last answer: the fenced "True" gets a 409, the
                // reporter reads the pod and sends it again with the new resourceVersion.
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(Publish(held(4)));
                let [up, event] = held_calls(4);
                steps.push(Expect(up.clone(), Reply::Conflict));
                steps.push(Expect(Call::GetPod, Reply::Ok));
                steps.push(Expect(up, Reply::Ok));
                steps.push(Expect(event, Reply::Ok));
                steps.push(Publish(status(AgentState::Stopping, Some(4), None)));
                steps.extend(released(4).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::DeadlineOnlyChanges => {
                // Renewals only move the deadline: the agent publishes each one, the pod
                // already shows it, nothing is sent.
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.extend(acquired(17));
                for _ in 0..5 {
                    steps.push(PublishHeldFor(17, Duration::from_secs(3600)));
                    steps.push(Quiet(Duration::from_millis(100)));
                }
                steps.push(Publish(status(AgentState::Stopping, Some(17), None)));
                steps.extend(released(17).map(|c| Expect(c, Reply::Ok)));
            }
            Scenario::DeadlinePasses => {
                // Held with a deadline 300 ms ahead, and no status after it: at the deadline
                // the reporter itself turns the pod to "not holding" (once: the agent's own
                // Lost that follows changes nothing more).
                steps.push(Expect(not_held_initial(), Reply::Ok));
                steps.push(PublishHeldFor(8, Duration::from_millis(300)));
                steps.extend(held_calls(8).map(|c| Expect(c, Reply::Ok)));
                let why = "the local deadline passed without a renewed lease";
                steps.extend(lost(8, why).map(|c| Expect(c, Reply::Ok)));
                steps.push(Publish(status(
                    AgentState::Lost,
                    Some(8),
                    Some("deadline passed without an acknowledged keepalive"),
                )));
                steps.push(Quiet(Duration::from_millis(300)));
                steps.push(Publish(stopping));
            }
        }
        steps
    }

    /// The retry backoff: short, except where a status must arrive during the backoff.
    fn retry(self) -> RetryPolicy {
        let ms = match self {
            Scenario::Supersession | Scenario::TimedOutHeldIsFenced => 2_000,
            _ => 10,
        };
        RetryPolicy {
            initial: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        }
    }

    /// The client's bound on one request: short where a request is left unanswered.
    fn request_timeout(self) -> Duration {
        match self {
            Scenario::TimedOutHeldIsFenced => Duration::from_millis(300),
            _ => Duration::from_secs(10),
        }
    }
}

// === the mock API server ===

/// Runs a scenario to the end and returns the error counter per op.
async fn run(scenario: Scenario) -> prometheus::Registry {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let registry = prometheus::Registry::new();
    let (tx, rx) = watch::channel(status(AgentState::Connecting, None, None));
    let reporter = KubeReporter::new(client, scenario.settings(), &registry)
        .with_retry(scenario.retry())
        .with_request_timeout(scenario.request_timeout());
    let task = reporter.spawn(rx);

    let mut tx = Some(tx);
    // The pod's resourceVersion as last answered, and requests left unanswered.
    let mut rv: u64 = 100;
    let mut hung = vec![];
    for (i, step) in scenario.steps().into_iter().enumerate() {
        match step {
            Step::Publish(s) => {
                tx.as_ref()
                    .expect("channel open")
                    .send(s)
                    .expect("reporter is listening");
            }
            Step::PublishHeldFor(token, ttl) => {
                tx.as_ref()
                    .expect("channel open")
                    .send(held_for(token, ttl))
                    .expect("reporter is listening");
            }
            Step::Quiet(period) => {
                if let Ok(Some((request, _))) =
                    tokio::time::timeout(period, handle.next_request()).await
                {
                    panic!(
                        "{scenario:?} step {i}: unexpected request {} {}",
                        request.method(),
                        request.uri()
                    );
                }
            }
            Step::CloseChannel => drop(tx.take()),
            Step::Expect(call, reply) => {
                let (request, send) = tokio::time::timeout(STEP_TIMEOUT, handle.next_request())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{scenario:?} step {i}: timed out waiting for {call:?}")
                    })
                    .unwrap_or_else(|| {
                        panic!("{scenario:?} step {i}: client gone before {call:?}")
                    });
                let body = verify(scenario, i, &call, request, rv).await;
                match reply {
                    Reply::Hang => hung.push(send),
                    _ => {
                        if matches!(reply, Reply::Ok) && !matches!(call, Call::Event { .. }) {
                            rv += 1;
                        }
                        send.send_response(respond(&call, reply, body, rv));
                    }
                }
            }
        }
    }
    tokio::time::timeout(STEP_TIMEOUT, task)
        .await
        .unwrap_or_else(|_| panic!("{scenario:?}: reporter did not finish after the final state"))
        .expect("reporter task panicked");
    // Nothing more may have been sent.
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        panic!(
            "{scenario:?}: unexpected request {} {}",
            request.method(),
            request.uri()
        );
    }
    registry
}

/// Asserts the request is exactly `call`; returns its JSON body.
async fn verify(
    scenario: Scenario,
    step: usize,
    call: &Call,
    request: Request<Body>,
    rv: u64,
) -> Value {
    let ctx = format!("{scenario:?} step {step} ({call:?})");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let path = parts.uri.path().to_owned();
    let query = query_pairs(parts.uri.query());
    let field_manager = vec![("fieldManager".to_owned(), "lockkeeper".to_owned())];
    let pod_path = format!("/api/v1/namespaces/{NS}/pods/{POD}");
    match call {
        Call::Condition {
            status,
            reason,
            message,
        } => {
            assert_eq!(parts.method, Method::PATCH, "{ctx}");
            assert_eq!(path, format!("{pod_path}/status"), "{ctx}");
            assert_eq!(query, field_manager, "{ctx}");
            assert_eq!(
                content_type.as_deref(),
                Some("application/strategic-merge-patch+json"),
                "{ctx}"
            );
            let mut body = body.clone();
            let condition = &mut body["status"]["conditions"][0];
            let time = condition
                .as_object_mut()
                .unwrap()
                .remove("lastTransitionTime");
            assert_rfc3339(time, &ctx);
            let mut want = json!({ "status": { "conditions": [{
                "type": CONDITION, "status": status, "reason": reason, "message": message,
            }]}});
            if *status == "True" {
                want["metadata"] = json!({ "resourceVersion": rv.to_string() });
            }
            assert_eq!(body, want, "{ctx}");
        }
        Call::Label { value } => {
            assert_eq!(parts.method, Method::PATCH, "{ctx}");
            assert_eq!(path, pod_path, "{ctx}");
            assert_eq!(query, field_manager, "{ctx}");
            assert_eq!(
                content_type.as_deref(),
                Some("application/merge-patch+json"),
                "{ctx}"
            );
            let mut want = json!({ "metadata": { "labels": { LABEL: value } } });
            if value.is_some() {
                want["metadata"]["resourceVersion"] = json!(rv.to_string());
            }
            assert_eq!(body, want, "{ctx}");
        }
        Call::GetPod => {
            assert_eq!(parts.method, Method::GET, "{ctx}");
            assert_eq!(path, pod_path, "{ctx}");
            assert_eq!(query, vec![], "{ctx}");
        }
        Call::Event {
            reason,
            kind,
            action,
            note,
            uid,
        } => {
            assert_eq!(parts.method, Method::POST, "{ctx}");
            assert_eq!(
                path,
                format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
                "{ctx}"
            );
            assert_eq!(query, field_manager, "{ctx}");
            assert_eq!(content_type.as_deref(), Some("application/json"), "{ctx}");
            let mut rest = body.clone();
            let meta = rest["metadata"].as_object_mut().unwrap();
            let name = meta
                .remove("name")
                .and_then(|n| n.as_str().map(str::to_owned))
                .unwrap_or_default();
            assert!(
                name.starts_with(&format!("{POD}.")) && name.len() > POD.len() + 1,
                "{ctx}: event name {name:?}"
            );
            let time = rest.as_object_mut().unwrap().remove("eventTime");
            assert_rfc3339(time, &ctx);
            let mut regarding =
                json!({ "apiVersion": "v1", "kind": "Pod", "name": POD, "namespace": NS });
            if *uid {
                regarding["uid"] = json!(UID);
            }
            assert_eq!(
                rest,
                json!({
                    "apiVersion": "events.k8s.io/v1",
                    "kind": "Event",
                    "metadata": { "namespace": NS },
                    "type": kind,
                    "reason": reason,
                    "action": action,
                    "note": note,
                    "reportingController": "lockkeeper",
                    "reportingInstance": POD,
                    "regarding": regarding,
                }),
                "{ctx}"
            );
        }
    }
    body
}

/// The query's `key=value` pairs in order (kube writes `?&fieldManager=…`; empty pairs skipped).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn assert_rfc3339(time: Option<Value>, ctx: &str) {
    let time = time.unwrap_or_else(|| panic!("{ctx}: timestamp missing"));
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: timestamp {time} not a string"));
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("{ctx}: timestamp {text:?} is not RFC 3339: {e}"));
    assert!(text.ends_with('Z'), "{ctx}: timestamp {text:?} not in UTC");
}

fn respond(call: &Call, reply: Reply, request_body: Value, rv: u64) -> Response<Body> {
    let (code, body) = match reply {
        Reply::Conflict => (
            StatusCode::CONFLICT,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the object has been modified", "reason": "Conflict", "code": 409,
            }),
        ),
        Reply::Hang => unreachable!("never answered"),
        Reply::InternalError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "etcdserver: leader changed", "reason": "InternalError", "code": 500,
            }),
        ),
        Reply::Ok => match call {
            Call::Event { .. } => (StatusCode::CREATED, request_body),
            _ => (
                StatusCode::OK,
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {
                        "name": POD, "namespace": NS, "uid": UID,
                        "resourceVersion": rv.to_string(),
                    },
                }),
            ),
        },
    };
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// `lockkeeper_kube_api_errors_total{op}`, or 0 when that op never failed.
fn errors(registry: &prometheus::Registry, op: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "lockkeeper_kube_api_errors_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "op" && l.value() == op)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn assert_no_errors(registry: &prometheus::Registry) {
    for op in ["patch_condition", "patch_label", "create_event", "get_pod"] {
        assert_eq!(errors(registry, op), 0, "errors for {op}");
    }
}

// === the tests ===

#[tokio::test]
async fn startup_reconciles_condition_to_false() {
    assert_no_errors(&run(Scenario::StartupReconcile).await);
}

#[tokio::test]
async fn acquire_sets_condition_true_and_records_event() {
    assert_no_errors(&run(Scenario::Acquire).await);
}

#[tokio::test]
async fn loss_sets_condition_false_with_reason_and_warning_event() {
    assert_no_errors(&run(Scenario::Loss).await);
}

#[tokio::test]
async fn shutdown_releases_and_task_ends() {
    assert_no_errors(&run(Scenario::Shutdown).await);
}

#[tokio::test]
async fn label_mode_patches_only_the_label() {
    assert_no_errors(&run(Scenario::LabelMode).await);
}

#[tokio::test]
async fn events_disabled_sends_no_events() {
    assert_no_errors(&run(Scenario::EventsDisabled).await);
}

#[tokio::test]
async fn events_only_looks_up_the_pod_uid() {
    assert_no_errors(&run(Scenario::EventsOnly).await);
}

#[tokio::test]
async fn api_errors_are_retried_and_counted() {
    let registry = run(Scenario::ErrorThenRetry).await;
    assert_eq!(errors(&registry, "patch_condition"), 2);
    assert_eq!(errors(&registry, "create_event"), 1);
    assert_eq!(errors(&registry, "patch_label"), 0);
}

#[tokio::test]
async fn newer_status_supersedes_a_pending_retry() {
    let registry = run(Scenario::Supersession).await;
    assert_eq!(errors(&registry, "patch_condition"), 1);
}

#[tokio::test]
async fn closed_channel_releases_and_task_ends() {
    assert_no_errors(&run(Scenario::ChannelClosed).await);
}

#[tokio::test]
async fn timed_out_held_patch_is_fenced_and_the_newer_state_reasserted() {
    let registry = run(Scenario::TimedOutHeldIsFenced).await;
    assert_eq!(errors(&registry, "patch_condition"), 1);
}

#[tokio::test]
async fn conflict_rereads_the_pod_and_retries() {
    assert_no_errors(&run(Scenario::Conflict).await);
}

#[tokio::test]
async fn deadline_only_changes_send_nothing() {
    assert_no_errors(&run(Scenario::DeadlineOnlyChanges).await);
}

#[tokio::test]
async fn deadline_passing_without_a_status_turns_the_condition_false() {
    assert_no_errors(&run(Scenario::DeadlinePasses).await);
}

#[test]
fn auto_detect_needs_cluster_and_downward_api() {
    use lockkeeper_agent::kubernetes::auto_detect_with;
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let all = &[
        ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ("POD_NAME", "p"),
        ("POD_NAMESPACE", "ns"),
    ];
    assert!(auto_detect_with(env(all)));
    assert!(!auto_detect_with(env(&[
        ("POD_NAME", "p"),
        ("POD_NAMESPACE", "ns")
    ])));
    assert!(!auto_detect_with(env(&[
        ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ("POD_NAME", "p")
    ])));
    assert!(!auto_detect_with(env(&[
        ("KUBERNETES_SERVICE_HOST", "h"),
        ("POD_NAME", ""),
        ("POD_NAMESPACE", "ns")
    ])));
}
