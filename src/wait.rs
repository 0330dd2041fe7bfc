//! `lockkeeper wait`: blocks a main container's entrypoint until the sidecar in the same pod
//! holds the lock (its `/readyz` answers 200).
//!
//! It follows the sidecar's `/events` stream, so it reacts within milliseconds of the lock being
//! taken; if the stream cannot be opened (an older sidecar, a proxy) it polls `/readyz`. A sidecar
//! that is not up yet (connection refused) or restarts is retried until the timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bounds connecting and receiving response headers from the sidecar.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An event stream silent for this long (three missed keepalives) is reopened.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// A single SSE event larger than this is a protocol error (ours are a few hundred bytes).
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Why waiting failed; see [`WaitError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The sidecar did not report the lock held in time.
    #[error("the sidecar at {url} did not report the lock held within {}", humantime::format_duration(*.after))]
    Timeout {
        /// The sidecar URL.
        url: String,
        /// How long we waited.
        after: Duration,
    },
    /// The URL is not a plain `http://host[:port]` URL.
    #[error("invalid sidecar URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl WaitError {
    /// The process exit code: 1 on timeout, 2 for an invalid URL (a configuration error).
    pub fn exit_code(&self) -> i32 {
        match self {
            WaitError::Timeout { .. } => 1,
            WaitError::InvalidUrl { .. } => 2,
        }
    }
}

/// Waits until the sidecar at `url` (`http://host:port`) reports the lock held, or `timeout`
/// passes (`None`: forever). `poll` is the retry interval when the sidecar is unreachable and the
/// polling interval when its event stream is unavailable.
pub async fn wait_until_held(
    url: &str,
    timeout: Option<Duration>,
    poll: Duration,
) -> Result<(), WaitError> {
    let target = Target::parse(url)?;
    let poll = poll.max(Duration::from_millis(10));
    let waiting = wait(&target, poll);
    match timeout {
        None => waiting.await,
        Some(after) => {
            tokio::time::timeout(after, waiting)
                .await
                .map_err(|_| WaitError::Timeout {
                    url: url.to_owned(),
                    after,
                })?
        }
    }
    tracing::info!(url, "the sidecar holds the lock");
    Ok(())
}

async fn wait(target: &Target, poll: Duration) {
    let mut stream_available = true;
    loop {
        if stream_available {
            match follow_events(target).await {
                Ok(Stream::Held) => return,
                Ok(Stream::Unavailable(code)) => {
                    tracing::debug!(%code, "no event stream; polling /readyz");
                    stream_available = false;
                    continue;
                }
                Ok(Stream::Ended) => tracing::debug!("event stream ended; reopening"),
                Err(error) => tracing::debug!(%error, "sidecar not reachable yet"),
            }
        } else {
            match target.get("/readyz").await {
                Ok((res, _conn)) if res.status() == StatusCode::OK => return,
                Ok((res, _conn)) => tracing::debug!(code = %res.status(), "not ready yet"),
                Err(error) => tracing::debug!(%error, "sidecar not reachable yet"),
            }
        }
        tokio::time::sleep(poll).await;
    }
}

enum Stream {
    Held,
    Ended,
    Unavailable(StatusCode),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Follows `/events` until an event says `"held": true` or the stream ends.
async fn follow_events(target: &Target) -> Result<Stream, BoxError> {
    let (res, _conn) = target.get("/events").await?;
    let is_stream = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if res.status() != StatusCode::OK || !is_stream {
        return Ok(Stream::Unavailable(res.status()));
    }
    let mut body = res.into_body();
    let mut events = EventParser::default();
    loop {
        let frame = match tokio::time::timeout(STREAM_IDLE, body.frame()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) | Err(_) => return Ok(Stream::Ended),
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for event in events.push(data)? {
            let status: serde_json::Value = match serde_json::from_str(&event) {
                Ok(v) => v,
                Err(error) => {
                    tracing::debug!(%error, "ignoring an event that is not status JSON");
                    continue;
                }
            };
            tracing::debug!(state = %status["state"], "sidecar status");
            if status["held"] == serde_json::Value::Bool(true) {
                return Ok(Stream::Held);
            }
        }
    }
}

/// Splits a `text/event-stream` body into the `data` of each event.
#[derive(Default)]
struct EventParser {
    line: Vec<u8>,
    data: String,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, BoxError> {
        let mut events = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                    return Err("event too large".into());
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // Comments (": keepalive") and other fields carry nothing we need.
        }
        Ok(events)
    }
}

// === impl Target ===

/// Where the sidecar listens: a plain-HTTP host and port.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    authority: HeaderValue,
}

impl Target {
    fn parse(url: &str) -> Result<Target, WaitError> {
        let invalid = |reason| WaitError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("not a URL; expected http://host:port"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported; the sidecar serves plain HTTP",
                ))
            }
            _ => return Err(invalid("expected http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("expected no path: http://host:port"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Target {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| invalid("not a valid host"))?,
        })
    }

    /// GETs `path` on a fresh connection; the connection lives as long as the returned guard.
    async fn get(&self, path: &str) -> Result<(Response<Incoming>, Connection), BoxError> {
        let exchange = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            let conn = Connection(tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "connection to the sidecar failed");
                }
            }));
            let req = Request::get(path)
                .header(header::HOST, self.authority.clone())
                .body(Empty::<Bytes>::new())?;
            let res = sender.send_request(req).await?;
            Ok::<_, BoxError>((res, conn))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| "the sidecar did not answer in time")?
    }
}

/// Drives one client connection; dropping it closes the connection.
struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::*;
    use crate::http::{bind, AdminState};
    use crate::metrics::Metrics;
    use crate::status::{AgentState, Status};

    /// A real admin server on `addr`; the returned sender drives its status.
    async fn sidecar(addr: SocketAddr) -> (SocketAddr, watch::Sender<Status>) {
        let (tx, rx) = watch::channel(Status::new("reports", "pod-a", "http://127.0.0.1:2379"));
        let state = AdminState {
            status: rx,
            metrics: Arc::new(Metrics::new("reports", "test")),
            live: Arc::new(AtomicBool::new(true)),
        };
        let bound = bind(addr, state).await.unwrap();
        let addr = bound.local_addr();
        tokio::spawn(bound.serve(std::future::pending()));
        (addr, tx)
    }

    fn take_lock(tx: &watch::Sender<Status>) {
        tx.send_modify(|s| {
            s.state = AgentState::Held;
            s.fencing_token = Some(9);
            s.deadline = Some(Instant::now() + Duration::from_secs(30));
        });
    }

    #[tokio::test]
    async fn returns_as_soon_as_the_sidecar_holds_the_lock() {
        let (addr, tx) = sidecar("127.0.0.1:0".parse().unwrap()).await;
        tx.send_modify(|s| s.state = AgentState::Waiting);
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            take_lock(&tx);
            std::future::pending::<()>().await; // keep the sender alive
        });
        // A long poll interval: only the event stream can make this return quickly.
        let url = format!("http://{addr}");
        wait_until_held(&url, Some(Duration::from_secs(5)), Duration::from_secs(10))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_millis(1000), "{waited:?}");
    }

    #[tokio::test]
    async fn times_out_while_waiting() {
        let (addr, _tx) = sidecar("127.0.0.1:0".parse().unwrap()).await;
        let err = wait_until_held(
            &format!("http://{addr}/"),
            Some(Duration::from_millis(300)),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn retries_until_the_sidecar_is_up() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let waiter = tokio::spawn(async move {
            let url = format!("http://{addr}");
            wait_until_held(
                &url,
                Some(Duration::from_secs(5)),
                Duration::from_millis(50),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "connection refused must not end the wait"
        );
        let (_, tx) = sidecar(addr).await;
        take_lock(&tx);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn polls_readyz_without_an_event_stream() {
        // A minimal server with no /events: /readyz answers 503 twice, then 200.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let code = if head.starts_with(b"GET /readyz ") {
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    }
                } else {
                    "404 Not Found"
                };
                let res =
                    format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = conn.write_all(res.as_bytes()).await;
            }
        });
        let url = format!("http://{addr}");
        wait_until_held(
            &url,
            Some(Duration::from_secs(5)),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rejects_urls_other_than_plain_http() {
        for url in [
            "https://127.0.0.1:8475",
            "ftp://127.0.0.1:8475",
            "127.0.0.1:8475",
            "http://127.0.0.1:8475/readyz",
            "http://user@127.0.0.1:8475",
            "not a url",
            "",
        ] {
            let err = wait_until_held(url, Some(Duration::from_secs(1)), Duration::from_millis(10))
                .await
                .unwrap_err();
            assert!(matches!(err, WaitError::InvalidUrl { .. }), "{url}: {err}");
            assert_eq!(err.exit_code(), 2, "{url}");
        }
        let ok = Target::parse("http://[::1]:8475").unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("::1", 8475));
        assert_eq!(Target::parse("http://sidecar").unwrap().port, 80);
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = EventParser::default();
        assert!(p
            .push(b": keepalive\n\ndata: {\"held\":")
            .unwrap()
            .is_empty());
        let events = p.push(b"true}\r\n\r\ndata: a\ndata: b\n\n").unwrap();
        assert_eq!(events, ["{\"held\":true}", "a\nb"]);
    }
}
