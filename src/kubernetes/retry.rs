//! Retrying: the backoff between attempts ([`RetryPolicy`]), one call retried until it succeeds,
//! fails for good or is superseded by a newer status, and the reporter's loop that drives it all.

use std::future::Future;
use std::time::Duration;

use lockkeeper::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::status::{AgentState, Status};

use super::api::Target;
use super::{KubeReporter, Worker};

/// The backoff between API attempts: [`lockkeeper::Backoff`] from `initial` doubling up to `max`,
/// with jitter that spreads retries of many pods apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first pause.
    pub initial: Duration,
    /// Upper bound of any pause.
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
    fn backoff(&self) -> Backoff {
        Backoff::new(self.initial, self.max)
    }
}

impl KubeReporter {
    pub(super) async fn run(self, mut rx: watch::Receiver<Status>) {
        let mut w = Worker::new(self);
        let mut closed = false;
        loop {
            let status = rx.borrow_and_update().clone();
            w.observe(&status, closed);
            let finishing = closed || status.state == AgentState::Stopping;
            let done =
                w.converge(&mut rx, finishing).await && w.flush_events(&mut rx, finishing).await;
            if !done {
                continue; // superseded: a newer status (or the deadline) is waiting
            }
            if finishing {
                tracing::debug!("kubernetes reporter done");
                return;
            }
            if w.idle(&mut rx).await == Wake::Closed {
                closed = true;
            }
        }
    }
}

/// Result of a retried call.
pub(super) enum Outcome<T> {
    Done(T),
    /// A newer status arrived (or the deadline passed) while waiting to retry: drop this call.
    Superseded,
    /// The server refused a precondition (409): the pod changed since we last saw it.
    Conflict,
    /// Not retryable or out of attempts (already logged and counted).
    GaveUp,
}

/// What ended an idle wait.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Status,
    Closed,
    Deadline,
    Reassert,
}

impl Worker {
    /// Waits for a new status, the held status's deadline, or a due re-assertion.
    async fn idle(&mut self, rx: &mut watch::Receiver<Status>) -> Wake {
        let wake = tokio::select! {
            biased;
            changed = rx.changed() => match changed {
                Ok(()) => Wake::Status,
                Err(_) => Wake::Closed,
            },
            () = sleep_until(self.deadline) => Wake::Deadline,
            () = sleep_until(self.reassert_at) => Wake::Reassert,
        };
        if wake == Wake::Reassert {
            tracing::debug!("writing the pod's state once more after an uncertain request");
            self.reassert_at = None;
            self.applied = None;
            self.condition_shown = None; // a late "True" may have landed
        }
        wake
    }

    /// Calls `call` until it succeeds, fails for good, runs out of `limit` attempts, or a newer
    /// status arrives (or the held status's deadline passes) during a backoff wait; an
    /// in-flight request is never abandoned for that. With `writes`, a failure whose outcome is
    /// unknown marks the pod's state uncertain, and a 409 is returned as [`Outcome::Conflict`].
    pub(super) async fn retry<T, F, Fut>(
        &mut self,
        op: &'static str,
        rx: &mut watch::Receiver<Status>,
        limit: Option<u32>,
        writes: bool,
        mut call: F,
    ) -> Outcome<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut watching = true;
        let mut backoff = self.r.retry.backoff();
        for attempt in 1u32.. {
            let (error, retryable) =
                match tokio::time::timeout(self.r.request_timeout, call()).await {
                    Ok(Ok(value)) => return Outcome::Done(value),
                    Ok(Err(kube::Error::Api(status))) if writes && status.code == 409 => {
                        return Outcome::Conflict
                    }
                    Ok(Err(e)) => {
                        if writes && outcome_unknown(&e) {
                            self.mark_uncertain(op);
                        }
                        (e.to_string(), is_retryable(&e))
                    }
                    Err(_) => {
                        if writes {
                            self.mark_uncertain(op);
                        }
                        (
                            format!("timed out after {:?} (abandoned)", self.r.request_timeout),
                            true,
                        )
                    }
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
            if self.pause(rx, backoff.next_pause(), &mut watching).await {
                return Outcome::Superseded;
            }
        }
        Outcome::GaveUp
    }

    /// A write to the pod may or may not have been applied (or may still be).
    fn mark_uncertain(&mut self, op: &str) {
        self.uncertain = true;
        if op == Target::Condition.op() {
            self.condition_shown = None;
        }
    }

    /// Sleeps `pause`; true if a newer status arrived (or the held status's deadline passed)
    /// meanwhile.
    async fn pause(
        &self,
        rx: &mut watch::Receiver<Status>,
        pause: Duration,
        watching: &mut bool,
    ) -> bool {
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                changed = rx.changed(), if *watching => match changed {
                    Ok(()) => return true,
                    Err(_) => *watching = false, // closed: nothing newer can come
                },
                () = sleep_until(self.deadline) => return true,
                () = &mut sleep => return false,
            }
        }
    }
}

/// Sleeps until `at`; never returns for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => lockkeeper::clock::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Client-side problems (bad request, forbidden, not found, invalid) do not heal by retrying.
fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => !matches!(status.code, 400 | 403 | 404 | 405 | 415 | 422),
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

/// Whether a failed write may still have been applied: the server answered 5xx (e.g. a timeout
/// between the API server and etcd), or never answered (connection failed or broke).
fn outcome_unknown(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500,
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
            let mut backoff = policy.backoff();
            let first = backoff.next_pause();
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            backoff.next_pause();
            let third = backoff.next_pause();
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            for _ in 0..40 {
                backoff.next_pause();
            }
            let late = backoff.next_pause();
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
}
