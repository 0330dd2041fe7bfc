//! The keepalive loop behind a [`Session`](super::Session): one keepalive at a time on one
//! stream, each acknowledged answer moving the local deadline, and the lease marked lost the
//! moment that deadline passes or etcd says the lease is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use super::{mark_lost, LeaseLoss, LeaseState};
use crate::etcd::Etcd;
use crate::{Backoff, LeaseId};

pub(super) struct Keeper {
    pub(super) etcd: Etcd,
    pub(super) lease: LeaseId,
    pub(super) interval: Duration,
    pub(super) margin: Duration,
    pub(super) renew: Arc<AtomicBool>,
    pub(super) state: Arc<watch::Sender<LeaseState>>,
}

type KeepAlive = (LeaseKeeper, LeaseKeepAliveStream);

enum Round {
    Renewed { deadline: Instant, ttl: Duration },
    Expired,
    Failed(String),
}

/// The shortest pause between two keepalive attempts.
const MIN_RETRY: Duration = Duration::from_millis(50);

/// The pause after a failed keepalive: the backoff's, but never more than a quarter of what is
/// left before the deadline. A member that died or an election in progress fails the first
/// attempts fast; the backoff alone would then grow past the deadline and give up a lease that
/// a new leader would have renewed a moment later. Capped this way, the last stretch before
/// the deadline still holds several attempts.
fn retry_pause(backoff: Duration, left: Duration) -> Duration {
    backoff.min(left / 4).max(MIN_RETRY)
}

impl Keeper {
    pub(super) async fn run(self, mut deadline: Instant) {
        let mut stream: Option<KeepAlive> = None;
        let mut next = Instant::now() + self.interval;
        let mut backoff = Backoff::new(Duration::from_millis(200), self.interval);
        loop {
            if !self.renew.load(Ordering::SeqCst) {
                crate::clock::sleep_until(deadline).await;
                self.lose(LeaseLoss::DeadlineMissed);
                return;
            }
            tokio::select! {
                biased;
                _ = crate::clock::sleep_until(deadline) => {
                    self.lose(LeaseLoss::DeadlineMissed);
                    return;
                }
                _ = sleep_until(next) => {}
            }
            if !self.renew.load(Ordering::SeqCst) {
                continue;
            }
            let round = tokio::select! {
                biased;
                _ = crate::clock::sleep_until(deadline) => {
                    self.lose(LeaseLoss::DeadlineMissed);
                    return;
                }
                r = self.round(&mut stream) => r,
            };
            match round {
                Round::Renewed { deadline: d, ttl } => {
                    self.etcd.observer().keepalive(true);
                    // Never move the deadline backwards: a slower answer to a later send is still later.
                    deadline = deadline.max(d);
                    backoff.reset();
                    let alive = LeaseState::Alive { deadline, ttl };
                    let still_alive = self.state.send_if_modified(|s| match s {
                        LeaseState::Lost(_) => false,
                        _ => {
                            *s = alive;
                            true
                        }
                    });
                    if !still_alive {
                        return; // someone marked the lease lost meanwhile
                    }
                    tracing::debug!(
                        target: crate::audit::TARGET,
                        event = "renewed",
                        lease = %self.lease,
                        ttl_s = ttl.as_secs(),
                        "lease renewed"
                    );
                    next = Instant::now() + self.interval;
                }
                Round::Expired => {
                    self.etcd.observer().keepalive(false);
                    self.lose(LeaseLoss::Expired);
                    return;
                }
                Round::Failed(why) => {
                    self.etcd.observer().keepalive(false);
                    let pause = retry_pause(
                        backoff.next_pause(),
                        deadline.saturating_duration_since(crate::clock::now()),
                    );
                    tracing::warn!(lease = %self.lease, error = %why, retry_in_ms = pause.as_millis() as u64, "lease keepalive failed");
                    stream = None;
                    next = Instant::now() + pause;
                }
            }
        }
    }

    /// One keepalive: one request on a stream that has no other request outstanding, so the
    /// answer belongs to this send instant.
    async fn round(&self, stream: &mut Option<KeepAlive>) -> Round {
        // Half an interval: a member that hangs (paused, partitioned) costs one short round, and
        // the retry can reach another member well before the deadline.
        let per_round = (self.interval / 2).max(Duration::from_millis(300));
        if stream.is_none() {
            let id = self.lease.0;
            let mut client = self.etcd.client().clone();
            match timeout(per_round, client.lease_keep_alive(id)).await {
                Ok(Ok(s)) => *stream = Some(s),
                // The stream opens with one keepalive; TTL ≤ 0 there means the lease is gone,
                // which no retry can change.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    return Round::Expired
                }
                Ok(Err(e)) => return Round::Failed(format!("open keepalive stream: {e}")),
                Err(_) => return Round::Failed("open keepalive stream: timed out".into()),
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            return Round::Failed("no keepalive stream".into());
        };
        let sent = crate::clock::now();
        let exchange = async {
            keeper.keep_alive().await?;
            responses.message().await
        };
        match timeout(per_round, exchange).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                let ttl = Duration::from_secs(resp.ttl() as u64);
                Round::Renewed {
                    deadline: sent + ttl.saturating_sub(self.margin),
                    ttl,
                }
            }
            Ok(Ok(Some(_))) => Round::Expired,
            Ok(Ok(None)) => Round::Failed("keepalive stream closed".into()),
            Ok(Err(e)) => Round::Failed(e.to_string()),
            Err(_) => Round::Failed(format!("no keepalive answer within {per_round:?}")),
        }
    }

    fn lose(&self, why: LeaseLoss) {
        if mark_lost(&self.state, why) {
            tracing::info!(lease = %self.lease, reason = why.as_str(), "lease no longer trusted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_near_the_deadline_come_faster_than_the_backoff() {
        let ms = Duration::from_millis;
        assert_eq!(retry_pause(ms(1200), ms(4000)), ms(1000));
        assert_eq!(retry_pause(ms(1200), ms(1220)), ms(305));
        assert_eq!(retry_pause(ms(150), ms(4000)), ms(150));
        assert_eq!(retry_pause(ms(1200), ms(100)), MIN_RETRY);
        assert_eq!(retry_pause(ms(1200), Duration::ZERO), MIN_RETRY);
    }
}
