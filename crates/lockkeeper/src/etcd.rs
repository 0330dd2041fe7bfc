//! A thin wrapper over `etcd_client::Client`: every request gets a deadline and is observed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::{Backoff, Error, Result, DEFAULT_REQUEST_TIMEOUT};

/// Receives a call for every etcd request and keepalive; the sidecar turns these into metrics.
/// The lock core knows nothing about how they are exported.
pub trait Observer: Send + Sync + 'static {
    /// One etcd request finished (successfully or not) after `elapsed`.
    fn etcd_request(&self, op: &'static str, elapsed: Duration, ok: bool) {
        let _ = (op, elapsed, ok);
    }
    /// One lease keepalive round finished; `ok` is false when it failed or timed out.
    fn keepalive(&self, ok: bool) {
        let _ = ok;
    }
}

struct NoObserver;
impl Observer for NoObserver {}

/// An etcd connection plus the per-request timeout and observer used by every lock operation.
/// Cloning is cheap and shares the underlying channel.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    request_timeout: Duration,
    observer: Arc<dyn Observer>,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Wraps a connected client with the default request timeout
    /// ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            observer: Arc::new(NoObserver),
        }
    }

    /// Fails any single unary request that takes longer than this.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Reports every request and keepalive to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The underlying etcd-client handle, for anything this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// Runs one request, bounded by the request timeout and observed. A request that found its
    /// member unreachable (or without a leader) is retried on the next pick of the balanced
    /// channel until the timeout: every operation this crate sends is idempotent or, for
    /// `lease_grant`, harmless to repeat (an orphan lease expires with its TTL).
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let attempts = async {
            let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
            loop {
                match f(self.client.clone()).await {
                    Err(e) if is_unavailable(&e) => {
                        tracing::debug!(op, error = %e, "etcd member unavailable; retrying");
                        tokio::time::sleep(backoff.next_pause()).await;
                    }
                    other => return other,
                }
            }
        };
        let outcome = tokio::time::timeout(self.request_timeout, attempts).await;
        let result = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Etcd { op, source }),
            Err(_) => Err(Error::EtcdTimeout {
                op,
                after: self.request_timeout,
            }),
        };
        self.observer
            .etcd_request(op, started.elapsed(), result.is_ok());
        if let Err(e) = &result {
            tracing::debug!(op, error = %e, "etcd request failed");
        }
        result
    }
}

/// True when etcd refused the request for lack of permission (an etcd role that does not
/// cover the key).
pub(crate) fn is_permission_denied(e: &Error) -> bool {
    matches!(
        e,
        Error::Etcd { source: etcd_client::Error::GRpcStatus(s), .. }
            if s.code() == tonic::Code::PermissionDenied
    )
}

/// True for errors where the request never reached a working member: connection refused or
/// reset, or a member that has no leader.
pub(crate) fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) if is_tls_rejection(s) => false,
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            tonic::Code::Unavailable => true,
            // A connection torn down under an in-flight request (the member died) surfaces as
            // Unknown or Cancelled.
            tonic::Code::Unknown | tonic::Code::Cancelled => {
                let m = s.message();
                m.contains("transport")
                    || m.contains("connection")
                    || m.contains("broken pipe")
                    || m.contains("closed")
            }
            _ => false,
        },
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// A TLS handshake that failed on a certificate (server not signed by our CA, our client
/// certificate refused) fails the same way on every retry: report it at once, with its cause.
fn is_tls_rejection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("fatal alert") {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn unreachable_members_are_retried_but_answers_are_not() {
        assert!(is_unavailable(&status(
            tonic::Code::Unavailable,
            "tcp connect error"
        )));
        assert!(is_unavailable(&status(
            tonic::Code::Unavailable,
            "etcdserver: no leader"
        )));
        assert!(is_unavailable(&status(
            tonic::Code::Unknown,
            "transport error"
        )));
        assert!(is_unavailable(&status(
            tonic::Code::Cancelled,
            "operation was canceled: connection closed"
        )));
        assert!(!is_unavailable(&status(
            tonic::Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password"
        )));
        assert!(!is_unavailable(&status(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied"
        )));
        assert!(!is_unavailable(&status(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        assert!(!is_unavailable(&status(
            tonic::Code::Unavailable,
            "invalid peer certificate: UnknownIssuer"
        )));
    }
}
