//! Prometheus metrics of the sidecar, in a registry of their own (no global default registry).
//!
//! Counters and histograms are driven by events (the agent's `acquired`/`lost`, the etcd
//! [`Observer`] calls). Gauges that describe the current state are derived from the agent's
//! [`Status`] at scrape time in [`Metrics::render`], so a scrape always reflects the truth then,
//! even if the agent is stalled: `lockkeeper_lock_held` drops to 0 as soon as the local deadline
//! passes.

use std::fmt;
use std::time::Duration;

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::status::{AgentState, Status};
use lockkeeper::{LossReason, Observer};

/// Every state, so `lockkeeper_state` always exposes all six series.
const STATES: [AgentState; 6] = [
    AgentState::Connecting,
    AgentState::Waiting,
    AgentState::LockDelay,
    AgentState::Held,
    AgentState::Lost,
    AgentState::Stopping,
];

/// etcd operations every contender issues first (`etcd::Etcd::call` op names), pre-created so
/// the `{op}` families are exported (at 0) before the first request completes.
const SEEDED_OPS: [&str; 2] = ["lease_grant", "enqueue"];

/// From 1 ms (lock free, one round trip) to 10 min (queued behind long holders).
const ACQUIRE_WAIT_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// From 0.5 ms (local member) to 10 s (beyond any sane request timeout).
const ETCD_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The sidecar's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    lock_held: IntGauge,
    acquisitions: IntCounter,
    lock_delays: IntCounter,
    losses: IntCounterVec,
    acquire_wait: Histogram,
    keepalives: IntCounter,
    keepalive_failures: IntCounter,
    lease_remaining: Gauge,
    fencing_token: IntGauge,
    etcd_duration: HistogramVec,
    etcd_errors: IntCounterVec,
    state: IntGaugeVec,
    queue_position: IntGauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every metric family. The lock name is exported once, as
    /// `lockkeeper_lock_info{lock}` = 1, rather than as a label on every series.
    pub fn new(lock: &str, version: &str) -> Metrics {
        let registry = Registry::new();
        let reg = Registrar(&registry);

        let build_info = reg.int_gauge_vec(
            "lockkeeper_build_info",
            "Build information; always 1.",
            &["version"],
        );
        build_info.with_label_values(&[version]).set(1);
        let lock_info = reg.int_gauge_vec(
            "lockkeeper_lock_info",
            "The lock this sidecar contends for; always 1.",
            &["lock"],
        );
        lock_info.with_label_values(&[lock]).set(1);

        let losses = reg.int_counter_vec(
            "lockkeeper_lock_losses_total",
            "Times the lock was lost while held, by reason.",
            &["reason"],
        );
        // Pre-created at 0 so `increase()` works from the first loss.
        for reason in LossReason::ALL {
            losses.with_label_values(&[reason.as_str()]);
        }
        let state = reg.int_gauge_vec(
            "lockkeeper_state",
            "Current agent state: 1 for the current state, 0 for the others.",
            &["state"],
        );
        for s in STATES {
            state.with_label_values(&[s.as_str()]).set(0);
        }

        let metrics = Metrics {
            lock_held: reg.int_gauge(
                "lockkeeper_lock_held",
                "1 while this sidecar holds the lock and is before its local deadline, else 0.",
            ),
            acquisitions: reg.int_counter(
                "lockkeeper_acquisitions_total",
                "Times the lock was acquired.",
            ),
            lock_delays: reg.int_counter(
                "lockkeeper_lock_delays_total",
                "Times a lock-delay was waited out because the predecessor vanished without releasing.",
            ),
            losses,
            acquire_wait: reg.histogram(
                "lockkeeper_acquire_wait_seconds",
                "Time from starting to contend to holding the lock.",
                &ACQUIRE_WAIT_BUCKETS,
            ),
            keepalives: reg.int_counter(
                "lockkeeper_lease_keepalives_total",
                "Lease keepalive rounds attempted (successful or not).",
            ),
            keepalive_failures: reg.int_counter(
                "lockkeeper_lease_keepalive_failures_total",
                "Lease keepalive rounds that failed or timed out.",
            ),
            lease_remaining: reg.gauge(
                "lockkeeper_lease_remaining_seconds",
                "Time left before the local safety deadline while held; 0 when not held.",
            ),
            fencing_token: reg.int_gauge(
                "lockkeeper_fencing_token",
                "Fencing token of the last holding (kept after the lock is lost); 0 before the first.",
            ),
            etcd_duration: reg.histogram_vec(
                "lockkeeper_etcd_request_duration_seconds",
                "Duration of etcd requests, by operation.",
                &["op"],
                &ETCD_DURATION_BUCKETS,
            ),
            etcd_errors: reg.int_counter_vec(
                "lockkeeper_etcd_errors_total",
                "etcd requests that failed or timed out, by operation.",
                &["op"],
            ),
            state,
            queue_position: reg.int_gauge(
                "lockkeeper_queue_position",
                "Contenders ahead of us while waiting; 0 otherwise.",
            ),
            registry,
        };
        if let Err(e) = metrics
            .registry
            .register(Box::new(ProcessCollector::for_self()))
        {
            tracing::warn!(error = %e, "cannot register the process metrics collector");
        }
        for op in SEEDED_OPS {
            metrics.etcd_duration.with_label_values(&[op]);
            metrics.etcd_errors.with_label_values(&[op]);
        }
        metrics
    }

    /// The registry, for other modules to register their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one acquisition after waiting `waited`.
    pub fn acquired(&self, waited: Duration) {
        self.acquisitions.inc();
        self.acquire_wait.observe(waited.as_secs_f64());
    }

    /// Records one lock-delay started.
    pub fn lock_delay(&self) {
        self.lock_delays.inc();
    }

    /// Records one loss of the lock, labelled with a stable `reason`.
    pub fn lost(&self, reason: &str) {
        self.losses.with_label_values(&[reason]).inc();
        self.lock_held.set(0);
    }

    /// Refreshes the gauges derived from `status`, then encodes every family in the text format.
    pub fn render(&self, status: &Status) -> String {
        self.refresh(status);
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The content type of [`Metrics::render`]'s output.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }

    fn refresh(&self, status: &Status) {
        self.lock_held.set(i64::from(status.is_ready()));
        self.lease_remaining
            .set(status.remaining().map_or(0.0, |d| d.as_secs_f64()));
        // Kept after a loss: the last token is what a protected resource may still see.
        if let Some(token) = status.fencing_token {
            self.fencing_token.set(token);
        }
        for s in STATES {
            self.state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == status.state));
        }
        let position = match status.state {
            AgentState::Waiting => status.queue_position.unwrap_or(0),
            _ => 0,
        };
        self.queue_position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
    }
}

impl Observer for Metrics {
    fn etcd_request(&self, op: &'static str, elapsed: Duration, ok: bool) {
        self.etcd_duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        // Touched on success too, so the error series exists at 0 for every op seen.
        let errors = self.etcd_errors.with_label_values(&[op]);
        if !ok {
            errors.inc();
        }
    }

    fn keepalive(&self, ok: bool) {
        self.keepalives.inc();
        if !ok {
            self.keepalive_failures.inc();
        }
    }
}

// === impl Registrar ===

/// Creates metrics and registers them. Names and help texts are constants of this module, so a
/// failure here is a programming error caught by the unit tests, hence the panics.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0
            .register(Box::new(m.clone()))
            .expect("metric names are unique constants");
        m
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use tokio::time::Instant;

    use super::*;

    fn held(deadline_in: Duration) -> Status {
        let mut s = Status::new("reports", "pod-a", "http://127.0.0.1:2379");
        s.state = AgentState::Held;
        s.fencing_token = Some(42);
        s.lease_id = Some("694d7a1b2c3d4e5f".into());
        s.deadline = Some(Instant::now() + deadline_in);
        s
    }

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn render_contains_every_family() {
        let m = Metrics::new("reports", "1.2.3");
        let text = m.render(&Status::new("reports", "pod-a", "http://127.0.0.1:2379"));
        for family in [
            "lockkeeper_lock_held",
            "lockkeeper_acquisitions_total",
            "lockkeeper_lock_delays_total",
            "lockkeeper_lock_losses_total",
            "lockkeeper_acquire_wait_seconds",
            "lockkeeper_lease_keepalives_total",
            "lockkeeper_lease_keepalive_failures_total",
            "lockkeeper_lease_remaining_seconds",
            "lockkeeper_fencing_token",
            "lockkeeper_etcd_request_duration_seconds",
            "lockkeeper_etcd_errors_total",
            "lockkeeper_state",
            "lockkeeper_build_info",
            "lockkeeper_queue_position",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        assert_eq!(
            value_of(&text, "lockkeeper_build_info{version=\"1.2.3\"}"),
            Some(1.0)
        );
        assert_eq!(
            value_of(&text, "lockkeeper_state{state=\"connecting\"}"),
            Some(1.0)
        );
        for s in ["waiting", "held", "lost", "stopping"] {
            let series = format!("lockkeeper_state{{state=\"{s}\"}}");
            assert_eq!(value_of(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn gauges_follow_the_status_at_scrape_time() {
        let m = Metrics::new("reports", "1.2.3");
        let text = m.render(&held(Duration::from_secs(8)));
        assert_eq!(value_of(&text, "lockkeeper_lock_held"), Some(1.0));
        assert_eq!(value_of(&text, "lockkeeper_fencing_token"), Some(42.0));
        assert_eq!(
            value_of(&text, "lockkeeper_state{state=\"held\"}"),
            Some(1.0)
        );
        let remaining = value_of(&text, "lockkeeper_lease_remaining_seconds").unwrap();
        assert!(remaining > 7.0 && remaining <= 8.0, "{remaining}");

        // Past the deadline without any status change: not held any more.
        let mut stale = held(Duration::ZERO);
        stale.deadline = Some(Instant::now() - Duration::from_millis(1));
        let text = m.render(&stale);
        assert_eq!(value_of(&text, "lockkeeper_lock_held"), Some(0.0));
        assert_eq!(
            value_of(&text, "lockkeeper_lease_remaining_seconds"),
            Some(0.0)
        );

        let mut waiting = Status::new("reports", "pod-a", "http://127.0.0.1:2379");
        waiting.state = AgentState::Waiting;
        waiting.queue_position = Some(3);
        let text = m.render(&waiting);
        assert_eq!(value_of(&text, "lockkeeper_queue_position"), Some(3.0));
        assert_eq!(
            value_of(&text, "lockkeeper_state{state=\"held\"}"),
            Some(0.0)
        );
        assert_eq!(
            value_of(&text, "lockkeeper_fencing_token"),
            Some(42.0),
            "last token kept"
        );
    }

    #[test]
    fn counters_show_events() {
        let m = Metrics::new("reports", "1.2.3");
        m.acquired(Duration::from_millis(250));
        m.lost("deadline_missed");
        m.etcd_request("txn", Duration::from_millis(3), true);
        m.etcd_request("txn", Duration::from_millis(7), false);
        m.keepalive(true);
        m.keepalive(false);
        let text = m.render(&Status::new("reports", "pod-a", "http://127.0.0.1:2379"));
        assert_eq!(value_of(&text, "lockkeeper_acquisitions_total"), Some(1.0));
        assert_eq!(
            value_of(&text, "lockkeeper_acquire_wait_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &text,
                "lockkeeper_lock_losses_total{reason=\"deadline_missed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &text,
                "lockkeeper_lock_losses_total{reason=\"key_deleted\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value_of(
                &text,
                "lockkeeper_etcd_request_duration_seconds_count{op=\"txn\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value_of(&text, "lockkeeper_etcd_errors_total{op=\"txn\"}"),
            Some(1.0)
        );
        assert_eq!(
            value_of(&text, "lockkeeper_lease_keepalives_total"),
            Some(2.0)
        );
        assert_eq!(
            value_of(&text, "lockkeeper_lease_keepalive_failures_total"),
            Some(1.0)
        );
    }

    #[test]
    fn promtool_accepts_the_output() {
        let m = Metrics::new("reports", "1.2.3");
        m.acquired(Duration::from_millis(5));
        m.lost("lease_expired");
        m.etcd_request("grant", Duration::from_millis(2), false);
        let text = m.render(&held(Duration::from_secs(5)));

        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run promtool ({e}); install Debian's `prometheus` package \
                 (apt-get install prometheus), which ships /usr/bin/promtool"
            ),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }
}
