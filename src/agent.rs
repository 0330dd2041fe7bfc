//! The sidecar's agent: hold one lock, keep it renewed, publish the truth about it.
//!
//! `Connecting → Waiting → Held → Lost → Waiting …`, and `Stopping` on shutdown. Readiness is
//! `Status::is_ready()`: Held *and* before the local deadline of the safety rule, evaluated at
//! read time, so the local answer flips before any network call is made about it.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lockkeeper::{
    audit, follow_hold, queue, Backoff, Contender, Error, Etcd, EtcdOptions, LockOptions,
    LossReason, Owner, Session, SessionOptions, WaitEvent,
};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

use crate::metrics::Metrics;
use crate::status::{AgentState, Status};

/// Everything the agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Lock name.
    pub lock: String,
    /// Prefix, identity and session settings.
    pub lock_options: LockOptions,
    /// How to reach etcd.
    pub etcd: EtcdOptions,
    /// Bound on each etcd request.
    pub request_timeout: Duration,
    /// Time between readiness off and releasing the key on shutdown.
    pub drain_delay: Duration,
    /// Bound on the whole shutdown (drain + release + revoke).
    pub shutdown_timeout: Duration,
    /// Longest pause between retries after an error or a loss.
    pub max_backoff: Duration,
}

/// The agent. Create with [`Agent::new`], subscribe to its status, then [`Agent::run`].
pub struct Agent {
    cfg: AgentConfig,
    metrics: Arc<Metrics>,
    status: watch::Sender<Status>,
    backoff: Backoff,
}

enum Waited {
    Held,
    Retry,
}

impl Agent {
    /// A new agent in `Connecting`.
    pub fn new(cfg: AgentConfig, metrics: Arc<Metrics>) -> Self {
        let endpoints = cfg.etcd.endpoints().join(",");
        let (status, _) = watch::channel(Status::new(
            &cfg.lock,
            cfg.lock_options.identity(),
            &endpoints,
        ));
        let backoff = Backoff::new(Duration::from_millis(200), cfg.max_backoff);
        Self {
            cfg,
            metrics,
            status,
            backoff,
        }
    }

    /// Subscribe to status changes: every transition and every deadline extension notifies.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` resolves, then steps down and releases: readiness off → drain
    /// delay → delete our key (ownership-checked) → revoke the lease, all within the shutdown
    /// timeout. etcd being unreachable is retried forever, never an error.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let etcd = tokio::select! {
            _ = &mut shutdown => return self.stop(None, None).await,
            etcd = self.connect() => etcd,
        };
        let mut session: Option<Session> = None;
        loop {
            // A lease is reused across acquisitions while it is alive.
            if session.as_ref().is_none_or(|s| !s.is_trusted()) {
                if let Some(old) = session.take() {
                    tokio::spawn(revoke_quietly(old));
                }
                self.transition(AgentState::Connecting, |_| {});
                let grant = self.grant(&etcd);
                session = tokio::select! {
                    _ = &mut shutdown => return self.stop(None, None).await,
                    s = grant => Some(s),
                };
            }
            let s = session.as_ref().expect("granted above");
            let wait_started = Instant::now();
            let queued = tokio::select! {
                _ = &mut shutdown => return self.stop(None, session).await,
                r = self.queue(&etcd, s) => r,
            };
            let me = match queued {
                Ok(me) => me,
                Err(_) => {
                    if self.pause(&mut shutdown).await.is_break() {
                        return self.stop(None, session).await;
                    }
                    continue;
                }
            };
            let waited = tokio::select! {
                _ = &mut shutdown => return self.stop(None, session).await,
                w = self.wait_turn(&etcd, &me, s) => w,
            };
            if let Waited::Retry = waited {
                if self.pause(&mut shutdown).await.is_break() {
                    return self.stop(None, session).await;
                }
                continue;
            }
            self.held(&me, s, wait_started.elapsed());
            let loss = tokio::select! {
                _ = &mut shutdown => return self.stop(Some(&me), session).await,
                loss = self.hold(&etcd, &me, s) => loss,
            };
            self.lost(loss);
            // Stepped down already; tidy up so the next contender need not wait for expiry.
            if let Err(e) = queue::release(&etcd, &me).await {
                tracing::warn!(key = %me.key, error = %e, "could not delete our key after losing the lock");
            }
            if loss != LossReason::KeyDeleted && loss != LossReason::KeyChanged {
                if let Some(old) = session.take() {
                    tokio::spawn(revoke_quietly(old));
                }
            }
            if self.pause(&mut shutdown).await.is_break() {
                return self.stop(None, session).await;
            }
        }
    }

    async fn connect(&mut self) -> Etcd {
        loop {
            match self.cfg.etcd.connect().await {
                Ok(client) => {
                    return Etcd::new(client)
                        .with_request_timeout(self.cfg.request_timeout)
                        .with_observer(self.metrics.clone())
                }
                Err(e) => {
                    let wait = self.backoff.next_pause();
                    tracing::warn!(endpoints = ?self.cfg.etcd.endpoints(), error = %e, retry_in_ms = wait.as_millis() as u64, "cannot connect to etcd");
                    sleep(wait).await;
                }
            }
        }
    }

    async fn grant(&mut self, etcd: &Etcd) -> Session {
        let opts: &SessionOptions = self.cfg.lock_options.session();
        loop {
            match Session::grant(etcd, opts).await {
                Ok(s) => {
                    self.backoff.reset();
                    return s;
                }
                Err(e) => {
                    let wait = self.backoff.next_pause();
                    tracing::warn!(op = "lease_grant", error = %e, retry_in_ms = wait.as_millis() as u64, "cannot grant a lease; retrying");
                    sleep(wait).await;
                }
            }
        }
    }

    async fn queue(&mut self, etcd: &Etcd, s: &Session) -> Result<Contender, Error> {
        let o = &self.cfg.lock_options;
        audit::attempt(&self.cfg.lock, o.identity(), s.lease(), None);
        let (me, owner) =
            match queue::enqueue(etcd, o.prefix(), &self.cfg.lock, s.lease(), o.identity()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(op = "enqueue", error = %e, "cannot enqueue; retrying");
                    return Err(e);
                }
            };
        let position = if owner.as_ref().map(|o| o.revision) == Some(me.revision) {
            Some(0)
        } else {
            None
        };
        self.waiting(&me, position, owner);
        Ok(me)
    }

    /// Waits for our turn, watching only the predecessor; refreshes the queue position after
    /// each hop. Gives up (to re-queue) when our lease is no longer trusted or etcd fails.
    async fn wait_turn(&self, etcd: &Etcd, me: &Contender, s: &Session) -> Waited {
        let report = |event: WaitEvent| async move {
            match event {
                WaitEvent::Queued => {
                    if let Ok((position, owner)) = queue::queue_position(etcd, me).await {
                        self.waiting(me, Some(position), owner);
                    }
                }
                WaitEvent::LockDelay { until, .. } => {
                    self.metrics.lock_delay();
                    self.transition(AgentState::LockDelay, |st| {
                        st.lock_delay_until = Some(until);
                        st.queue_position = Some(0);
                    });
                }
            }
        };
        let delay = self.cfg.lock_options.lock_delay_for(s.granted_ttl());
        match queue::wait_turn_while_trusted(etcd, me, Some(s), None, delay, report).await {
            Ok(()) => Waited::Held,
            Err(Error::LeaseExpired { .. }) => Waited::Retry,
            Err(e) => {
                tracing::warn!(key = %me.key, error = %e, "cannot read the queue; retrying");
                Waited::Retry
            }
        }
    }

    /// Holds until the lock is lost; returns why. The library's one hold loop follows the
    /// lease, our key and the periodic check; every deadline extension it reports is stamped
    /// and published at once (whoever follows the status — `/events`, `exec`, the Kubernetes
    /// reporter — re-arms its view of the deadline from it). `Status::is_ready` evaluates the
    /// deadline at read time as well.
    async fn hold(&self, etcd: &Etcd, me: &Contender, s: &Session) -> LossReason {
        let check_every = self
            .cfg
            .lock_options
            .session()
            .keepalive_interval_for(s.granted_ttl());
        follow_hold(etcd, me, s.subscribe(), check_every, |deadline| {
            crate::history::deadline(me.revision, deadline); // before readiness extends
            self.status.send_if_modified(|st| {
                let extended = st.state == AgentState::Held && st.deadline != Some(deadline);
                if extended {
                    st.deadline = Some(deadline);
                }
                extended
            });
        })
        .await
    }

    async fn pause(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> std::ops::ControlFlow<()> {
        let wait = self.backoff.next_pause();
        tokio::select! {
            _ = shutdown.as_mut() => std::ops::ControlFlow::Break(()),
            _ = sleep(wait) => std::ops::ControlFlow::Continue(()),
        }
    }

    /// Readiness off first, then drain, then release and revoke, bounded by the shutdown timeout.
    async fn stop(self, held: Option<&Contender>, session: Option<Session>) {
        let started = Instant::now();
        self.transition(AgentState::Stopping, |_| {});
        let cleanup = async {
            if held.is_some() && !self.cfg.drain_delay.is_zero() {
                sleep(self.cfg.drain_delay).await;
            }
            let Some(session) = session else { return };
            if let Some(me) = held {
                if let Err(e) = queue::release(session.etcd(), me).await {
                    tracing::warn!(key = %me.key, error = %e, "release on shutdown failed");
                }
            }
            match session.revoke().await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lease revoke on shutdown failed; it expires with its TTL")
                }
            }
        };
        if timeout(self.cfg.shutdown_timeout, cleanup).await.is_err() {
            tracing::warn!(
                after_ms = started.elapsed().as_millis() as u64,
                "shutdown timeout reached before the release finished"
            );
        }
        tracing::info!(lock = %self.cfg.lock, "stopped");
    }

    // === status transitions ===

    fn transition(&self, state: AgentState, f: impl FnOnce(&mut Status)) {
        let mut left_held = None;
        self.status.send_modify(|st| {
            if st.state == AgentState::Held && state != AgentState::Held {
                left_held = Some(st.fencing_token);
            }
            if st.state != state {
                st.since = SystemTime::now();
            }
            st.state = state;
            if state != AgentState::LockDelay {
                st.lock_delay_until = None;
            }
            if state != AgentState::Held {
                st.deadline = None;
                st.fencing_token = None;
            }
            f(st);
        });
        if let Some(token) = left_held {
            crate::history::unready(token, state.as_str()); // after readiness is off
        }
        tracing::debug!(state = state.as_str(), "agent state");
    }

    fn waiting(&self, me: &Contender, position: Option<u64>, owner: Option<Owner>) {
        self.transition(AgentState::Waiting, |st| {
            st.key = Some(me.key.clone());
            st.lease_id = Some(me.lease.to_string());
            if position.is_some() {
                st.queue_position = position;
            }
            if let Some(o) = owner {
                st.holder = Some(o.identity);
            }
        });
    }

    fn held(&mut self, me: &Contender, s: &Session, waited: Duration) {
        let deadline = s.state().deadline();
        self.backoff.reset();
        // Testing aid (--history-file): stamped before readiness can turn true.
        crate::history::ready(me.revision, deadline);
        // Set the deadline together with the state: readiness is never true without one.
        self.transition(AgentState::Held, |st| {
            st.deadline = deadline;
            st.fencing_token = Some(me.revision);
            st.key = Some(me.key.clone());
            st.lease_id = Some(me.lease.to_string());
            st.holder = Some(me.identity.clone());
            st.queue_position = Some(0);
        });
        self.metrics.acquired(waited);
        audit::acquired(me, waited);
    }

    fn lost(&self, loss: LossReason) {
        // Local first: readiness is off the moment this returns.
        self.transition(AgentState::Lost, |st| {
            st.last_loss = Some(loss.as_str().to_owned());
            st.holder = None;
        });
        self.metrics.lost(loss.as_str()); // (the hold loop audited it)
    }
}

async fn revoke_quietly(s: Session) {
    if let Err(e) = s.revoke().await {
        tracing::debug!(error = %e, "revoking an old lease failed; it expires with its TTL");
    }
}
