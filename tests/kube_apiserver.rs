//! The sidecar's Kubernetes reporting against a real API server (kube-apiserver v1.20.2, see
//! crates/testkit/src/kube.rs): the real `lockkeeper run` binary as a process, with
//! `POD_NAME`/`POD_NAMESPACE` and a kubeconfig holding only its ServiceAccount's token, against a
//! real etcd for the lock. What the sidecar may do is exactly what the chart grants: each test
//! creates the namespace, the ServiceAccount and the **chart's own rendered Role and
//! RoleBinding** for its gating mode, and runs the sidecar with the chart's rendered config file.
//!
//! `tests/kube_mock.rs` pins the exact requests; here the real server judges them: RBAC, the
//! validation of Events and conditions, strategic merge of `status.conditions`, and
//! `resourceVersion` preconditions. The pods' condition and label are read back from the server,
//! every version of them, through a `kubectl get --watch`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::fault::proxy::FaultProxy;
use testkit::kube::{condition_of, helm_bin, KubeApiServer, PodVersion, ServiceAccount};
use testkit::{unique_name, EtcdCluster, Launch, Sidecar};

const CONDITION: &str = "lockkeeper.io/lock-held";
const LABEL: &str = "lockkeeper.io/holder";
/// The lease TTL of every sidecar here: short, so that a test holds for several TTLs.
const TTL: &str = "2s";
const TTL_DUR: Duration = Duration::from_secs(2);
/// Generous bound for anything that should happen within a few TTLs.
const WAIT: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ReadinessGate,
    Label,
}

impl Mode {
    fn value(self) -> &'static str {
        match self {
            Mode::ReadinessGate => "readinessGate",
            Mode::Label => "label",
        }
    }

    /// Whether a pod version shows "held" in this mode.
    fn shows_held(self, v: &Value) -> bool {
        match self {
            Mode::ReadinessGate => {
                condition_of(v, CONDITION).is_some_and(|c| c["status"] == "True")
            }
            Mode::Label => v["metadata"]["labels"][LABEL] == "true",
        }
    }
}

// === the chart ===

/// `helm template` of the application chart into `namespace` for `mode`, with `sets`; every
/// rendered object.
fn render_chart(namespace: &str, mode: Mode, sets: &[&str]) -> Vec<Value> {
    render("charts/lockkeeper", "gating.mode", namespace, mode, sets)
}

/// `helm template` of the chart at `path` (from the repository's top), the gating mode set at
/// `mode_key`.
fn render(path: &str, mode_key: &str, namespace: &str, mode: Mode, sets: &[&str]) -> Vec<Value> {
    let chart = testkit::repo_root().join(path);
    build_chart_dependencies(&chart);
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", "lk", chart.to_str().unwrap()])
        .args(["--namespace", namespace])
        .args(["--set", &format!("{mode_key}={}", mode.value())]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd
        .output()
        .expect("run helm (scripts/install-helm.sh installs it)");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// `helm dependency build` once per chart and test run, when the chart has dependencies.
fn build_chart_dependencies(chart: &Path) {
    static BUILT: OnceLock<std::sync::Mutex<Vec<std::path::PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if built.iter().any(|c| c == chart) {
        return;
    }
    built.push(chart.to_owned());
    let manifest = std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml");
    if !manifest.contains("dependencies:") {
        return;
    }
    let out = Command::new(helm_bin())
        .args(["dependency", "build", chart.to_str().unwrap()])
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm dependency build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn objects_of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one_of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = objects_of_kind(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} in the chart: {found:?}"
    );
    found[0]
}

// === one test's world ===

/// An API server with a fresh namespace holding the chart's ServiceAccount, Role and
/// RoleBinding for one mode, an etcd for the lock, and the chart's sidecar config.
struct World {
    api: KubeApiServer,
    etcd: EtcdCluster,
    mode: Mode,
    ns: String,
    sa: ServiceAccount,
    config: tempfile::NamedTempFile,
    lock: String,
}

impl World {
    fn new(mode: Mode) -> World {
        Self::with_role(mode, |role| role)
    }

    /// Like `new`, with the chart's Role changed by `edit` before it is created.
    fn with_role(mode: Mode, edit: impl FnOnce(Value) -> Value) -> World {
        let ns = unique_name("lk-e2e").to_lowercase();
        let objects = render_chart(&ns, mode, &[]);
        let sa_obj = one_of_kind(&objects, "ServiceAccount");
        let sa = ServiceAccount::new(&ns, sa_obj["metadata"]["name"].as_str().unwrap());
        let api = KubeApiServer::start(std::slice::from_ref(&sa));
        api.kubectl_ok(&["create", "namespace", &ns]);
        let role = edit(one_of_kind(&objects, "Role").clone());
        let binding = one_of_kind(&objects, "RoleBinding");
        let list = json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [sa_obj, role, binding],
        });
        api.apply(&list.to_string());

        let config_map = one_of_kind(&objects, "ConfigMap");
        let config = tempfile::NamedTempFile::new().expect("config file");
        std::fs::write(
            config.path(),
            config_map["data"]["config.yaml"]
                .as_str()
                .expect("config.yaml"),
        )
        .expect("write config");
        World {
            api,
            etcd: EtcdCluster::single(),
            mode,
            ns,
            sa,
            config,
            lock: unique_name("kube-e2e"),
        }
    }

    /// Creates pod `name` with the mode's readiness gate (the app container never runs: there is
    /// no kubelet, so the pod stays Pending).
    fn create_pod(&self, name: &str) {
        let mut spec = json!({
            "serviceAccountName": self.sa.name,
            "containers": [{ "name": "app", "image": "registry.invalid/app:1" }],
        });
        if self.mode == Mode::ReadinessGate {
            spec["readinessGates"] = json!([{ "conditionType": CONDITION }]);
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": self.ns, "labels": { "app": "e2e" } },
            "spec": spec,
        });
        self.api.apply(&pod.to_string());
    }

    /// `lockkeeper run` for pod `pod` with the chart's config, its own token, towards `server`
    /// (the API server, or a proxy in front of it), with etcd at `endpoints`.
    fn sidecar_via(&self, pod: &str, server: &str, endpoints: &[String]) -> Sidecar {
        let kubeconfig = self.api.kubeconfig_for(&self.sa, server);
        Launch::new(endpoints, &self.lock, pod, TTL)
            .args(["--config", self.config.path().to_str().unwrap()])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.ns)
            .start()
    }

    fn sidecar(&self, pod: &str) -> Sidecar {
        self.sidecar_via(pod, &self.api.url, &self.etcd.endpoints())
    }

    fn pod(&self, name: &str) -> Value {
        self.api.get_json(&self.ns, &format!("pod/{name}"))
    }

    /// Polls pod `name` until `done` holds for it; panics after `limit`.
    fn wait_pod(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let pod = self.pod(name);
            if done(&pod) {
                return pod;
            }
            assert!(
                started.elapsed() < limit,
                "pod {name}: {what} not seen within {limit:?}; last seen:\n{pod:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_held(&self, name: &str) -> Value {
        let mode = self.mode;
        self.wait_pod(name, WAIT, "held", |p| mode.shows_held(p))
    }

    fn wait_not_held(&self, name: &str, why: &str) -> Value {
        let mode = self.mode;
        self.wait_pod(name, WAIT, why, |p| {
            !mode.shows_held(p)
                && match mode {
                    Mode::ReadinessGate => {
                        condition_of(p, CONDITION).is_some_and(|c| c["reason"] == why)
                    }
                    Mode::Label => p["metadata"]["labels"].get(LABEL).is_none(),
                }
        })
    }

    /// The `events.k8s.io/v1` Events of the namespace, oldest first.
    fn events(&self) -> Vec<Value> {
        let list = self.api.get_json(&self.ns, "events.v1.events.k8s.io");
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|e| e["eventTime"].as_str().unwrap_or("").to_owned());
        items
    }

    /// Waits until Events with these reasons (in this order) regard pod `name`.
    fn wait_events(&self, name: &str, reasons: &[&str]) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events: Vec<Value> = self
                .events()
                .into_iter()
                .filter(|e| e["regarding"]["name"] == name)
                .collect();
            let seen: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
            if seen == reasons {
                return events;
            }
            assert!(
                started.elapsed() < WAIT,
                "Events for {name}: want {reasons:?}, have {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn token_of(s: &Sidecar) -> i64 {
    s.status()["fencing_token"]
        .as_i64()
        .unwrap_or_else(|| panic!("no fencing token in {}", s.status()))
}

fn condition(pod: &Value) -> Value {
    condition_of(pod, CONDITION)
        .cloned()
        .unwrap_or_else(|| panic!("no {CONDITION} condition on\n{pod:#}"))
}

/// Seconds since the epoch of an RFC 3339 timestamp from the server.
fn timestamp(v: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("no timestamp: {v}")))
        .unwrap_or_else(|e| panic!("bad timestamp {v}: {e}"))
}

/// The versions of pod `name` in the watch history after resourceVersion `after`.
fn versions_of(history: &[PodVersion], name: &str, after: u64) -> Vec<PodVersion> {
    history
        .iter()
        .filter(|v| v.name == name && v.resource_version > after)
        .cloned()
        .collect()
}

fn resource_version(pod: &Value) -> u64 {
    pod["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("resourceVersion")
}

// === acquire, hold for several TTLs, SIGTERM ===

fn follows_the_lock_through_a_long_hold_and_sigterm(mode: Mode) {
    let w = World::new(mode);
    w.create_pod("web-0");
    let watch = w.api.watch_pods(&w.ns);
    let mut s = w.sidecar("web-0");
    s.wait_ready(WAIT);
    let held = w.wait_held("web-0");
    let token = token_of(&s);
    let held_rv = resource_version(&held);

    let acquired_at = match mode {
        Mode::ReadinessGate => {
            let c = condition(&held);
            assert_eq!(c["reason"], "LockAcquired", "{c}");
            let message = c["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("fencing token {token}")),
                "the condition names the token: {message}"
            );
            Some(timestamp(&c["lastTransitionTime"]))
        }
        Mode::Label => {
            assert!(
                condition_of(&held, CONDITION).is_none(),
                "label mode sets no condition: {held:#}"
            );
            None
        }
    };

    // An undisturbed hold of several TTLs: the pod keeps showing "held", with nothing rewritten
    // (no flapping, no new lastTransitionTime), while /readyz stays 200.
    let hold_until = Instant::now() + TTL_DUR * 5;
    while Instant::now() < hold_until {
        assert_eq!(s.ready(), Some(true), "{}", s.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let later = w.pod("web-0");
    assert!(
        mode.shows_held(&later),
        "still held after 5 TTLs:\n{later:#}"
    );
    assert_eq!(token_of(&s), token, "the same hold");
    if let Some(at) = acquired_at {
        assert_eq!(timestamp(&condition(&later)["lastTransitionTime"]), at);
    }
    let during: Vec<_> = versions_of(&watch.history(), "web-0", held_rv);
    assert!(
        during.iter().all(|v| mode.shows_held(&v.object)),
        "the pod stopped showing held during an undisturbed hold: {:#?}",
        during
            .iter()
            .map(|v| &v.object["status"])
            .collect::<Vec<_>>()
    );

    // SIGTERM: released, with its own reason, and a transition time after the acquisition.
    let status = s.sigterm_and_wait(WAIT);
    assert!(status.success(), "exit {status}:\n{}", s.log());
    let released = w.wait_not_held("web-0", "LockReleased");
    if let Some(at) = acquired_at {
        let c = condition(&released);
        assert_eq!(c["status"], "False");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains("released lock")
                && message.contains(&format!("fencing token {token}")),
            "{message}"
        );
        assert!(timestamp(&c["lastTransitionTime"]) >= at, "{c}");
    } else {
        assert!(
            released["metadata"]["labels"].get(LABEL).is_none(),
            "{released:#}"
        );
    }

    // The Events, accepted by the server, regarding this pod (its UID) and naming the token.
    let uid = released["metadata"]["uid"].as_str().unwrap().to_owned();
    let events = w.wait_events("web-0", &["LockAcquired", "LockReleased"]);
    for e in &events {
        assert_eq!(e["reportingController"], "lockkeeper", "{e:#}");
        assert_eq!(e["type"], "Normal", "{e:#}");
        assert_eq!(e["regarding"]["uid"], uid.as_str(), "{e:#}");
        assert!(e["eventTime"].is_string(), "{e:#}");
        let note = e["note"].as_str().unwrap();
        assert!(note.contains(&format!("fencing token {token}")), "{note}");
    }
}

#[test]
fn readiness_gate_condition_follows_a_long_hold_and_sigterm() {
    follows_the_lock_through_a_long_hold_and_sigterm(Mode::ReadinessGate);
}

#[test]
fn label_follows_a_long_hold_and_sigterm() {
    follows_the_lock_through_a_long_hold_and_sigterm(Mode::Label);
}

// === loss ===

fn loss_turns_the_pod_not_held_and_a_new_hold_turns_it_back(mode: Mode) {
    let w = World::new(mode);
    w.create_pod("web-0");
    let proxy = FaultProxy::start(&w.etcd.endpoint(0));
    let s = w.sidecar_via("web-0", &w.api.url, std::slice::from_ref(&proxy.endpoint));
    s.wait_ready(WAIT);
    w.wait_held("web-0");
    let token = token_of(&s);

    // etcd blackholed: the sidecar steps down at its local deadline; the API server still
    // answers, so the pod turns "not held" with the loss's reason.
    proxy.blackhole();
    let lost = w.wait_not_held("web-0", "LockLost");
    assert_ne!(s.ready(), Some(true));
    if mode == Mode::ReadinessGate {
        let c = condition(&lost);
        let message = c["message"].as_str().unwrap();
        assert!(
            message.starts_with("lost lock") && message.contains(&format!("fencing token {token}")),
            "{message}"
        );
    }
    let events = w.wait_events("web-0", &["LockAcquired", "LockLost"]);
    assert_eq!(events[1]["type"], "Warning", "{:#}", events[1]);
    assert!(
        events[1]["note"]
            .as_str()
            .unwrap()
            .contains(&format!("fencing token {token}")),
        "{:#}",
        events[1]
    );

    // etcd back: held again, with a new token, shown on the pod.
    proxy.heal();
    s.wait_ready(WAIT);
    let again = w.wait_held("web-0");
    let new_token = token_of(&s);
    assert!(new_token > token, "{new_token} after {token}");
    if mode == Mode::ReadinessGate {
        let message = condition(&again)["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("fencing token {new_token}")),
            "{message}"
        );
    }
    w.wait_events("web-0", &["LockAcquired", "LockLost", "LockAcquired"]);
}

#[test]
fn readiness_gate_condition_turns_false_on_loss() {
    loss_turns_the_pod_not_held_and_a_new_hold_turns_it_back(Mode::ReadinessGate);
}

#[test]
fn label_is_removed_on_loss() {
    loss_turns_the_pod_not_held_and_a_new_hold_turns_it_back(Mode::Label);
}

// === two pods ===

/// The pods showing "held" after each version of the history, in resourceVersion order: one
/// order for every object of the server, so this is what any reader could have seen.
fn held_over_time(mode: Mode, history: &[PodVersion]) -> Vec<(u64, Vec<String>)> {
    let mut now: BTreeMap<String, bool> = BTreeMap::new();
    history
        .iter()
        .map(|v| {
            now.insert(v.name.clone(), mode.shows_held(&v.object));
            let held = now
                .iter()
                .filter(|(_, h)| **h)
                .map(|(n, _)| n.clone())
                .collect();
            (v.resource_version, held)
        })
        .collect()
}

fn assert_at_most_one_held(mode: Mode, history: &[PodVersion]) {
    for (rv, held) in held_over_time(mode, history) {
        assert!(
            held.len() <= 1,
            "at resourceVersion {rv} pods {held:?} all show held"
        );
    }
}

fn two_pods_never_both_held(mode: Mode) {
    let w = World::new(mode);
    w.create_pod("web-0");
    w.create_pod("web-1");
    let watch = w.api.watch_pods(&w.ns);
    let proxies = [
        FaultProxy::start(&w.etcd.endpoint(0)),
        FaultProxy::start(&w.etcd.endpoint(0)),
    ];
    let pods = ["web-0", "web-1"];
    let start = |i: usize| {
        w.sidecar_via(
            pods[i],
            &w.api.url,
            std::slice::from_ref(&proxies[i].endpoint),
        )
    };
    let mut sidecars = [Some(start(0)), Some(start(1))];

    let holder_of = |sidecars: &[Option<Sidecar>; 2]| -> usize {
        let started = Instant::now();
        loop {
            for (i, s) in sidecars.iter().enumerate() {
                if s.as_ref().is_some_and(|s| s.ready() == Some(true)) {
                    return i;
                }
            }
            assert!(started.elapsed() < WAIT, "nobody holds");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Four hand-overs: two by SIGTERM (the holder's sidecar restarted at once, as the kubelet
    // would), two by cutting the holder off from etcd (healed once the other holds).
    for round in 0..4 {
        let h = holder_of(&sidecars);
        w.wait_held(pods[h]);
        std::thread::sleep(TTL_DUR * 2); // an undisturbed hold, longer than a TTL
        let other = 1 - h;
        if round % 2 == 0 {
            let mut s = sidecars[h].take().unwrap();
            assert!(s.sigterm_and_wait(WAIT).success(), "{}", s.log());
            w.wait_held(pods[other]);
            // Before the restart: the new sidecar's start-up reconcile rewrites the reason.
            w.wait_not_held(pods[h], "LockReleased");
            sidecars[h] = Some(start(h));
        } else {
            proxies[h].blackhole();
            w.wait_held(pods[other]);
            w.wait_not_held(pods[h], "LockLost");
            proxies[h].heal();
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let history = watch.history();
    assert!(
        history.len() >= 8,
        "the watch saw too little: {}",
        history.len()
    );
    assert_at_most_one_held(mode, &history);
    // At the end exactly one pod shows held: the one whose sidecar holds.
    let h = holder_of(&sidecars);
    let last = held_over_time(mode, &history).pop().unwrap().1;
    assert_eq!(last, vec![pods[h].to_owned()]);
}

#[test]
fn two_pods_never_both_show_the_condition_true() {
    two_pods_never_both_held(Mode::ReadinessGate);
}

#[test]
fn two_pods_never_both_carry_the_label() {
    two_pods_never_both_held(Mode::Label);
}

// === start-up reconcile ===

#[test]
fn a_restarted_sidecar_clears_the_stale_true_its_killed_predecessor_left() {
    let w = World::new(Mode::ReadinessGate);
    w.create_pod("web-0");
    let watch = w.api.watch_pods(&w.ns);
    let mut s = w.sidecar("web-0");
    s.wait_ready(WAIT);
    w.wait_held("web-0");
    let token = token_of(&s);

    // SIGKILL: nothing tells the API server; the condition stays True though nobody holds.
    s.signal("KILL");
    s.wait_exit(WAIT);
    std::thread::sleep(TTL_DUR * 2);
    let stale = w.pod("web-0");
    assert_eq!(condition(&stale)["status"], "True", "{stale:#}");
    let stale_rv = resource_version(&stale);

    // A new sidecar for the same pod (the kubelet restarting the container) first says False,
    // then holds anew with a new token.
    let s2 = w.sidecar("web-0");
    s2.wait_ready(WAIT);
    w.wait_held("web-0");
    let new_token = token_of(&s2);
    assert!(new_token > token);
    let after: Vec<PodVersion> = versions_of(&watch.history(), "web-0", stale_rv);
    let statuses: Vec<(String, String)> = after
        .iter()
        .filter_map(|v| condition_of(&v.object, CONDITION))
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses.first(),
        Some(&("False".to_owned(), "LockNotHeld".to_owned())),
        "the restart's first write is the reconcile: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&("True".to_owned(), "LockAcquired".to_owned())),
        "{statuses:?}"
    );
}

// === RBAC ===

/// The chart's Role without `verb` on `resource`.
fn without(resource: &'static str, verb: &'static str) -> impl FnOnce(Value) -> Value {
    move |mut role: Value| {
        for rule in role["rules"].as_array_mut().unwrap() {
            if rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == resource)
            {
                rule["verbs"].as_array_mut().unwrap().retain(|v| v != verb);
            }
        }
        // A rule needs a verb: drop the ones left empty.
        role["rules"]
            .as_array_mut()
            .unwrap()
            .retain(|rule| !rule["verbs"].as_array().unwrap().is_empty());
        role
    }
}

fn metric(s: &Sidecar, name: &str, labels: &str) -> f64 {
    let (code, body) = s.get("/metrics");
    assert_eq!(code, 200);
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{{labels}}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn forbidden_is_counted_and_never_fatal(
    mode: Mode,
    resource: &'static str,
    verb: &'static str,
    op: &str,
) {
    let w = World::with_role(mode, without(resource, verb));
    w.create_pod("web-0");
    let mut s = w.sidecar("web-0");
    s.wait_ready(WAIT);
    let started = Instant::now();
    while metric(
        &s,
        "lockkeeper_kube_api_errors_total",
        &format!("op=\"{op}\""),
    ) < 1.0
    {
        assert!(
            started.elapsed() < WAIT,
            "no {op} error counted:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("403"), "the 403 is logged:\n{}", s.log());
    // Local readiness is unaffected, across several TTLs; the process keeps running.
    let until = Instant::now() + TTL_DUR * 3;
    while Instant::now() < until {
        assert!(s.is_running(), "{}", s.log());
        assert_eq!(s.ready(), Some(true), "{}", s.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let pod = w.pod("web-0");
    assert!(
        !mode.shows_held(&pod),
        "a forbidden write did not land:\n{pod:#}"
    );
    assert!(s.sigterm_and_wait(WAIT).success(), "{}", s.log());
}

#[test]
fn a_role_without_pods_status_patch_is_403_counted_and_not_fatal() {
    forbidden_is_counted_and_never_fatal(
        Mode::ReadinessGate,
        "pods/status",
        "patch",
        "patch_condition",
    );
}

#[test]
fn a_role_without_pods_patch_is_403_counted_and_not_fatal() {
    forbidden_is_counted_and_never_fatal(Mode::Label, "pods", "patch", "patch_label");
}

#[test]
fn the_charts_role_grants_nothing_beyond_what_the_sidecar_uses() {
    // Exactly the rules src/kubernetes documents, per mode; the tests above show they suffice.
    for (mode, rules) in [
        (
            Mode::ReadinessGate,
            json!([
                { "apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"] },
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] },
                { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"] },
            ]),
        ),
        (
            Mode::Label,
            json!([
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"] },
                { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"] },
            ]),
        ),
    ] {
        let objects = render_chart("e2e", mode, &[]);
        assert_eq!(one_of_kind(&objects, "Role")["rules"], rules, "{mode:?}");
        assert!(objects_of_kind(&objects, "ClusterRole").is_empty());
        assert!(objects_of_kind(&objects, "ClusterRoleBinding").is_empty());
    }
}

// === a slow API server ===

#[test]
fn a_slow_api_server_never_leaves_true_after_false() {
    let w = World::new(Mode::ReadinessGate);
    w.create_pod("web-0");
    let watch = w.api.watch_pods(&w.ns);
    let kube_proxy = FaultProxy::start(&w.api.addr);
    let kube_url = format!(
        "https://{}",
        kube_proxy.endpoint.trim_start_matches("http://")
    );
    let etcd_proxy = FaultProxy::start(&w.etcd.endpoint(0));
    let s = w.sidecar_via(
        "web-0",
        &kube_url,
        std::slice::from_ref(&etcd_proxy.endpoint),
    );
    s.wait_ready(WAIT);
    w.wait_held("web-0");

    // From now on every byte to and from the API server takes 0.8–2.8 s each way: a round trip
    // longer than the sidecar's request timeout (the TTL, 2 s) for most requests, so writes are
    // abandoned while they may still land, in an order the sidecar cannot know. Three rounds of losing and
    // regaining the lock under it.
    kube_proxy.delay(Duration::from_millis(800), Duration::from_secs(2));
    for _ in 0..3 {
        etcd_proxy.blackhole();
        let started = Instant::now();
        while s.ready() == Some(true) {
            assert!(started.elapsed() < WAIT, "never lost the lock");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
        etcd_proxy.heal();
        s.wait_ready(WAIT);
        std::thread::sleep(Duration::from_secs(2));
    }
    // Lost for good: the pod must end False and stay False, whatever lands late.
    etcd_proxy.blackhole();
    let started = Instant::now();
    while s.ready() == Some(true) {
        assert!(started.elapsed() < WAIT, "never lost the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.wait_not_held("web-0", "LockLost");
    // Everything in flight lands or dies within a few delays; then nothing may show True.
    std::thread::sleep(Duration::from_secs(15));
    let history = watch.history();
    let final_pod = w.pod("web-0");
    assert_eq!(condition(&final_pod)["status"], "False", "{final_pod:#}");
    let last_true = history
        .iter()
        .filter(|v| v.condition(CONDITION).as_deref() == Some("True"))
        .map(|v| v.resource_version)
        .max()
        .unwrap_or(0);
    let first_final_false = history
        .iter()
        .filter(|v| v.resource_version > last_true)
        .find(|v| v.condition(CONDITION).as_deref() == Some("False"))
        .map(|v| v.resource_version)
        .expect("a False after the last True");
    assert!(first_final_false > last_true);
    // The rounds did what they are for: writes abandoned on the client's timeout while they
    // were still on their way.
    let abandoned = s.log().matches("(abandoned)").count();
    assert!(
        abandoned >= 3,
        "only {abandoned} requests abandoned:\n{}",
        s.log()
    );
    assert!(last_true > 0, "the pod never showed True: {history:#?}");
}

// === the chart against the server ===

/// The kinds (`apiVersion/kind`) the server serves.
fn served_kinds(api: &KubeApiServer) -> Vec<String> {
    let groups = api.kubectl_ok(&["api-versions"]);
    let mut kinds = Vec::new();
    for group_version in groups.lines() {
        let path = if group_version == "v1" {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{group_version}")
        };
        let list: Value = serde_json::from_str(&api.kubectl_ok(&["get", "--raw", &path])).unwrap();
        for r in list["resources"].as_array().unwrap() {
            kinds.push(format!("{group_version}/{}", r["kind"].as_str().unwrap()));
        }
    }
    kinds
}

#[test]
fn every_rendered_chart_object_passes_server_side_dry_run() {
    let ns = "lk-dry-run";
    let api = KubeApiServer::start(&[]);
    api.kubectl_ok(&["create", "namespace", ns]);
    let served = served_kinds(&api);
    // Plain sidecars: v1.20 predates native sidecars (an init container's `restartPolicy`,
    // Kubernetes 1.29), which the chart documents; that case is checked to be refused below.
    let cases: [(Mode, &[&str]); 4] = [
        (Mode::ReadinessGate, &["sidecar.native=false"]),
        (Mode::Label, &["sidecar.native=false"]),
        (
            Mode::ReadinessGate,
            &["sidecar.native=false", "kubernetes.events=false"],
        ),
        (
            Mode::Label,
            &[
                "sidecar.native=false",
                "metrics.serviceMonitor.enabled=true",
                "metrics.podMonitor.enabled=true",
                "prometheusRule.enabled=true",
                "service.ports[0].name=http",
                "service.ports[0].port=80",
                "service.ports[0].targetPort=8080",
            ],
        ),
    ];
    let mut skipped = std::collections::BTreeSet::new();
    for (mode, sets) in cases {
        let objects = render_chart(ns, mode, sets);
        let (known, unknown): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
            served.contains(&format!(
                "{}/{}",
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap()
            ))
        });
        for o in unknown {
            skipped.insert(format!(
                "{}/{}",
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap()
            ));
        }
        assert!(
            known.len() >= 5,
            "{mode:?} {sets:?}: only {} objects",
            known.len()
        );
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": known });
        let out = api.kubectl_stdin(
            &["-n", ns, "apply", "--dry-run=server", "-f", "-"],
            &list.to_string(),
        );
        assert!(
            out.status.success(),
            "{mode:?} {sets:?}: the server refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{mode:?} {sets:?}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // What v1.20 does not know: the Prometheus Operator's kinds (no CRDs here) and policy/v1
    // (PodDisruptionBudget is policy/v1beta1 there). Named, so nothing else is skipped unseen.
    let expected: std::collections::BTreeSet<String> = [
        "monitoring.coreos.com/v1/PodMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "policy/v1/PodDisruptionBudget",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(skipped, expected);

    // The example application chart, which adds the sidecar through the library chart.
    for mode in [Mode::ReadinessGate, Mode::Label] {
        let objects = render(
            "examples/my-app",
            "lockkeeper.gating.mode",
            ns,
            mode,
            &["lockkeeper.sidecar.native=false"],
        );
        for kind in [
            "Deployment",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "ConfigMap",
        ] {
            one_of_kind(&objects, kind);
        }
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
        let out = api.kubectl_stdin(
            &["-n", ns, "apply", "--dry-run=server", "-f", "-"],
            &list.to_string(),
        );
        assert!(
            out.status.success(),
            "examples/my-app {mode:?}: the server refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The native sidecar needs Kubernetes >= 1.29: an older server's schema has no
    // `restartPolicy` on a container, and validation says so (without it, the server would drop
    // the field and the sidecar would become an init container that never finishes).
    let native = render_chart(ns, Mode::ReadinessGate, &[]);
    let deployment = one_of_kind(&native, "Deployment");
    let out = api.kubectl_stdin(
        &["-n", ns, "apply", "--dry-run=server", "-f", "-"],
        &deployment.to_string(),
    );
    assert!(!out.status.success(), "v1.20 accepted a native sidecar");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("restartPolicy"), "{stderr}");
}
