//! The sidecar's admin HTTP server (HTTP/1.1): readiness, liveness, status, a Server-Sent Events
//! stream of status changes, and Prometheus metrics. Every endpoint is read-only: no request can
//! change the lock state.
//!
//! | path       | answer                                                                 |
//! |------------|------------------------------------------------------------------------|
//! | `/readyz`  | 200 `held` while [`Status::is_ready`], else 503 and the state name     |
//! | `/livez`   | 200 `ok` while the `live` flag is set, else 503                        |
//! | `/status`  | the status JSON ([`Status::to_json`])                                  |
//! | `/events`  | `text/event-stream`: the status now, on every change, and at the deadline |
//! | `/metrics` | Prometheus text format ([`Metrics::render`])                           |
//!
//! `HEAD` is answered like `GET` without a body (so `curl -I` works); other methods get 405 with
//! `Allow: GET, HEAD`; unknown paths 404. A request body over the limit (1 KiB) gets 413, headers
//! over 8 KiB (or more than 100 of them) get 431 from hyper, and a connection that does not send
//! a complete request head within the header read timeout (also while idle between keep-alive
//! requests) is closed, so slow or idle clients cannot pin the connection slots.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::status::{AgentState, Status};

/// What the admin server reads; shared with the agent, never written by a request.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The agent's published status.
    pub status: watch::Receiver<Status>,
    /// Metrics rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Liveness: `/livez` answers 200 while true.
    pub live: Arc<AtomicBool>,
}

/// Resource limits and timeouts of the admin server; `Default` suits production.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    header_read_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    max_body_bytes: usize,
    sse_keepalive: Duration,
    shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_header_bytes: 8 * 1024,
            max_body_bytes: 1024,
            sse_keepalive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

impl HttpLimits {
    /// Closes a connection that has not sent a complete request head within `timeout`.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Closes new connections at once while `max` are open (clamped to 1..=65536).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.clamp(1, 1 << 16);
        self
    }

    /// Answers 431 to a request head (start line and headers) larger than `bytes`.
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Answers 413 to a request body larger than `bytes`.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sends an SSE comment on `/events` after this long without an event.
    pub fn with_sse_keepalive(mut self, every: Duration) -> Self {
        self.sse_keepalive = every;
        self
    }

    /// On shutdown, waits this long for in-flight requests before closing connections.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// A bound, not yet serving, admin server: bind to port 0 and read the real port back.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AdminState,
    limits: HttpLimits,
}

/// Binds `addr` with the default [`HttpLimits`].
pub async fn bind(addr: SocketAddr, state: AdminState) -> std::io::Result<Bound> {
    bind_with(addr, state, HttpLimits::default()).await
}

/// Binds `addr` with explicit limits.
pub async fn bind_with(
    addr: SocketAddr,
    state: AdminState,
    limits: HttpLimits,
) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok(Bound {
        listener,
        local_addr,
        state,
        limits,
    })
}

/// Per-server context handed to every request.
struct Ctx {
    state: AdminState,
    limits: HttpLimits,
    /// Becomes true when the server shuts down; ends SSE streams.
    stop: watch::Receiver<bool>,
}

type ResBody = BoxBody<Bytes, Infallible>;

// === impl Bound ===

impl Bound {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, ends SSE streams, and gives
    /// in-flight requests up to the shutdown grace to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Bound {
            listener,
            local_addr,
            state,
            limits,
        } = self;
        let (stop_tx, stop) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size((2 * limits.max_header_bytes).max(16 * 1024))
            .max_headers(100);
        let ctx = Arc::new(Ctx {
            state,
            limits: limits.clone(),
            stop,
        });
        tracing::info!(addr = %local_addr, "admin server listening");

        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "admin server cannot accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "admin connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(builder.clone(), stream, ctx.clone(), slot));
        }

        drop(listener);
        let _ = stop_tx.send(true);
        let all = limits.max_connections as u32; // at most 65536
        let drained = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::debug!("admin connections still open after the shutdown grace");
        }
        tracing::info!(addr = %local_addr, "admin server stopped");
    }
}

async fn serve_connection(
    builder: http1::Builder,
    stream: TcpStream,
    ctx: Arc<Ctx>,
    _slot: OwnedSemaphorePermit,
) {
    let mut stop = ctx.stop.clone();
    let grace = ctx.limits.shutdown_grace;
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(grace, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "admin connection closed with an error");
    }
}

// === requests ===

#[derive(Clone, Copy)]
enum Route {
    Readyz,
    Livez,
    Status,
    Events,
    Metrics,
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    let route = match parts.uri.path() {
        "/readyz" => Route::Readyz,
        "/livez" => Route::Livez,
        "/status" => Route::Status,
        "/events" => Route::Events,
        "/metrics" => Route::Metrics,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    if let Err(res) = drain_small_body(body, &ctx.limits).await {
        return res;
    }
    let state = &ctx.state;
    match route {
        Route::Readyz => {
            let status = state.status.borrow();
            if status.is_ready() {
                text(StatusCode::OK, "held\n")
            } else {
                // Held past the deadline: the agent has not caught up yet, but we are not ready.
                let name = match status.state {
                    AgentState::Held => "expired",
                    other => other.as_str(),
                };
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{name}\n"))
            }
        }
        Route::Livez if state.live.load(Ordering::Acquire) => text(StatusCode::OK, "ok\n"),
        Route::Livez => text(StatusCode::SERVICE_UNAVAILABLE, "not live\n"),
        Route::Status => {
            let mut json = state.status.borrow().to_json().to_string();
            json.push('\n');
            respond(StatusCode::OK, "application/json", json)
        }
        Route::Metrics => {
            let status = state.status.borrow().clone();
            let body = state.metrics.render(&status);
            respond(StatusCode::OK, state.metrics.content_type(), body)
        }
        Route::Events if parts.method == Method::HEAD => {
            respond(StatusCode::OK, "text/event-stream", "")
        }
        Route::Events => events(ctx),
    }
}

/// Reads (and discards) a request body up to the limit so the connection stays reusable;
/// anything larger is refused without reading it.
async fn drain_small_body(body: Incoming, limits: &HttpLimits) -> Result<(), Response<ResBody>> {
    if body.is_end_stream() {
        return Ok(());
    }
    let too_large = || {
        let mut res = text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    };
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large());
    }
    let read = Limited::new(body, limits.max_body_bytes).collect();
    match tokio::time::timeout(limits.header_read_timeout, read).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "bad request body\n")),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n")),
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    respond(code, "text/plain; charset=utf-8", body)
}

fn respond(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResBody> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = code;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

// === /events ===

fn events(ctx: &Ctx) -> Response<ResBody> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(pump_events(
        ctx.state.status.clone(),
        tx,
        ctx.stop.clone(),
        ctx.limits.sse_keepalive,
    ));
    let mut res = Response::new(EventBody { rx }.boxed());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Feeds one SSE stream: the status now, then on every change of what `/status` answers (a
/// transition, a new holder or position, readiness ending at the deadline), with keepalive
/// comments in between. A deadline extension alone changes nothing visible but re-arms the
/// expiry timer. Ends when the client goes away, the agent drops its sender, or the server
/// shuts down.
async fn pump_events(
    mut status: watch::Receiver<Status>,
    tx: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
    keepalive: Duration,
) {
    let mut current = status.borrow_and_update().clone();
    let mut expiry = expiry_of(&current);
    let mut shown = visible(&current);
    let mut frame = event(&current);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            sent = tx.send(frame) => if sent.is_err() { return },
        }
        frame = loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                () = tx.closed() => return,
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    current = status.borrow_and_update().clone();
                    expiry = expiry_of(&current);
                    let now = visible(&current);
                    if now != shown {
                        shown = now;
                        break event(&current);
                    }
                }
                () = sleep_until(expiry) => {
                    expiry = None;
                    shown = visible(&current);
                    break event(&current);
                }
                () = tokio::time::sleep(keepalive) => break Bytes::from_static(b": keepalive\n\n"),
            }
        };
    }
}

/// What `/status` shows of `status`, less the countdown that changes every millisecond.
fn visible(status: &Status) -> serde_json::Value {
    let mut json = status.to_json();
    if let Some(o) = json.as_object_mut() {
        o.remove("lease_remaining_ms");
    }
    json
}

/// Completes once the server shuts down (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The instant at which `status` stops being ready on its own, if it is ready now.
fn expiry_of(status: &Status) -> Option<Instant> {
    status.deadline.filter(|_| status.is_ready())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => lockkeeper::clock::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One SSE event; `held` inside is computed now, so an event sent at the deadline says false.
fn event(status: &Status) -> Bytes {
    Bytes::from(format!("data: {}\n\n", status.to_json()))
}

/// A response body fed by a channel: each message is one data frame; it ends when the sender
/// is dropped, and dropping it (client gone) makes the sender's `closed()` complete.
struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
