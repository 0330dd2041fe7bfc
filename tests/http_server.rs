//! The admin HTTP server over real TCP: endpoints, SSE, limits and shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockkeeper_agent::http::{bind_with, AdminState, HttpLimits};
use lockkeeper_agent::metrics::Metrics;
use lockkeeper_agent::status::{AgentState, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

struct Server {
    addr: SocketAddr,
    status: watch::Sender<Status>,
    live: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Server {
        let (status, rx) = watch::channel(Status::new("reports", "pod-a", "http://127.0.0.1:2379"));
        let live = Arc::new(AtomicBool::new(true));
        let state = AdminState {
            status: rx,
            metrics: Arc::new(Metrics::new("reports", "0.0.0-test")),
            live: live.clone(),
        };
        let bound = bind_with("127.0.0.1:0".parse().unwrap(), state, limits)
            .await
            .expect("bind");
        let addr = bound.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            status,
            live,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

fn held(deadline_in: Duration) -> Status {
    let mut s = Status::new("reports", "pod-a", "http://127.0.0.1:2379");
    s.state = AgentState::Held;
    s.fencing_token = Some(7);
    s.key = Some("/locks/reports/694d7a1b2c3d4e5f".into());
    s.lease_id = Some("694d7a1b2c3d4e5f".into());
    s.holder = Some("pod-a".into());
    s.deadline = Some(Instant::now() + deadline_in);
    s
}

struct Reply {
    code: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends raw bytes and reads the whole answer (the request asks the server to close).
async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
        .await
        .expect("server answers and closes")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let code = head[9..12].parse().unwrap();
    Reply {
        code,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// Reads from `conn` into `seen` until `want` appears after `from`; returns where it ends.
async fn read_until(conn: &mut TcpStream, seen: &mut String, from: usize, want: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(i) = seen[from..].find(want) {
            return from + i + want.len();
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in time; got {seen:?}"))
            .unwrap();
        assert!(n > 0, "stream ended before {want:?}; got {seen:?}");
        seen.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
    }
}

#[tokio::test]
async fn readyz_follows_the_status_at_request_time() {
    let srv = Server::start(HttpLimits::default()).await;
    let r = get(srv.addr, "/readyz").await;
    assert_eq!((r.code, r.body.as_str()), (503, "connecting\n"));

    srv.status.send_replace(held(Duration::from_secs(30)));
    let r = get(srv.addr, "/readyz").await;
    assert_eq!((r.code, r.body.as_str()), (200, "held\n"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Still "Held" in the status, but the deadline has passed: a stalled agent is not ready.
    srv.status.send_replace(held(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let r = get(srv.addr, "/readyz").await;
    assert_eq!((r.code, r.body.as_str()), (503, "expired\n"));

    srv.status.send_modify(|s| {
        s.state = AgentState::Waiting;
        s.deadline = None;
    });
    let r = get(srv.addr, "/readyz").await;
    assert_eq!((r.code, r.body.as_str()), (503, "waiting\n"));
    srv.shutdown().await;
}

#[tokio::test]
async fn livez_follows_the_flag_and_head_has_no_body() {
    let srv = Server::start(HttpLimits::default()).await;
    let r = get(srv.addr, "/livez").await;
    assert_eq!((r.code, r.body.as_str()), (200, "ok\n"));
    srv.live.store(false, Ordering::Release);
    assert_eq!(get(srv.addr, "/livez").await.code, 503);

    let r = raw(
        srv.addr,
        b"HEAD /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.code, r.body.as_str()), (200, ""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    srv.shutdown().await;
}

#[tokio::test]
async fn status_is_json_with_every_field() {
    let srv = Server::start(HttpLimits::default()).await;
    srv.status.send_replace(held(Duration::from_secs(30)));
    let r = get(srv.addr, "/status").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    for field in [
        "lock",
        "identity",
        "state",
        "held",
        "fencing_token",
        "lease_id",
        "lease_remaining_ms",
        "holder",
        "queue_position",
        "since",
        "etcd_endpoint",
    ] {
        assert!(json.get(field).is_some(), "{field} missing in {json}");
    }
    assert_eq!(json["lock"], "reports");
    assert_eq!(json["state"], "held");
    assert_eq!(json["held"], true);
    assert_eq!(json["fencing_token"], 7);
    assert_eq!(json["lease_id"], "694d7a1b2c3d4e5f");
    assert!(json["lease_remaining_ms"].as_u64().unwrap() > 29_000);
    srv.shutdown().await;
}

#[tokio::test]
async fn events_stream_changes_deadlines_and_keepalives_then_ends_on_shutdown() {
    let limits = HttpLimits::default().with_sse_keepalive(Duration::from_millis(300));
    let srv = Server::start(limits).await;
    let mut conn = TcpStream::connect(srv.addr).await.unwrap();
    conn.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let at = read_until(&mut conn, &mut seen, 0, "\r\n\r\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    let at = read_until(&mut conn, &mut seen, at, r#"data: {"#).await;
    let at = read_until(&mut conn, &mut seen, at, r#""state":"connecting""#).await;

    srv.status.send_modify(|s| {
        s.state = AgentState::Waiting;
        s.queue_position = Some(2);
    });
    let at = read_until(&mut conn, &mut seen, at, r#""queue_position":2"#).await;

    // Held with a short deadline and no further change: the stream must still say when it ends.
    let started = Instant::now();
    srv.status.send_replace(held(Duration::from_millis(150)));
    let at = read_until(&mut conn, &mut seen, at, r#""held":true"#).await;
    let at = read_until(&mut conn, &mut seen, at, r#""held":false"#).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "deadline event late"
    );

    let at = read_until(&mut conn, &mut seen, at, ": keepalive\n\n").await;

    srv.shutdown().await;
    let mut rest = Vec::new();
    timeout(Duration::from_secs(2), conn.read_to_end(&mut rest))
        .await
        .expect("stream ends on shutdown")
        .unwrap();
    let _ = at;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let srv = Server::start(HttpLimits::default()).await;
    srv.status.send_replace(held(Duration::from_secs(30)));
    let r = get(srv.addr, "/metrics").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    assert!(r.body.contains("\nlockkeeper_lock_held 1\n"), "{}", r.body);
    assert!(r.body.contains("\nlockkeeper_fencing_token 7\n"));
    assert!(r.body.contains("lockkeeper_state{state=\"held\"} 1\n"));
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let srv = Server::start(HttpLimits::default()).await;
    assert_eq!(get(srv.addr, "/nope").await.code, 404);
    assert_eq!(get(srv.addr, "/readyz/extra").await.code, 404);
    let r = raw(
        srv.addr,
        b"POST /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.code, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = raw(
        srv.addr,
        b"DELETE /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.code, 405);
    srv.shutdown().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let srv = Server::start(HttpLimits::default()).await;
    let big = "a".repeat(10 * 1024);
    let req =
        format!("GET /readyz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(srv.addr, req.as_bytes()).await.code, 431);

    let req =
        b"GET /status HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(srv.addr, req).await.code, 413);

    let chunk = "b".repeat(1500);
    let req = format!(
        "GET /status HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_eq!(raw(srv.addr, req.as_bytes()).await.code, 413);

    // A small body is read and ignored.
    let req =
        b"GET /livez HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(raw(srv.addr, req).await.code, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let limits = HttpLimits::default().with_header_read_timeout(Duration::from_millis(300));
    let srv = Server::start(limits).await;
    let mut conn = TcpStream::connect(srv.addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(3), conn.read_to_end(&mut rest))
        .await
        .expect("the server closes a slow connection")
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // The server still answers others.
    assert_eq!(get(srv.addr, "/livez").await.code, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let limits = HttpLimits::default().with_max_connections(2);
    let srv = Server::start(limits).await;
    let idle1 = TcpStream::connect(srv.addr).await.unwrap();
    let idle2 = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(1), third.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);

    drop((idle1, idle2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(srv.addr, "/livez").await.code, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_events_client_that_leaves_frees_its_slot() {
    let limits = HttpLimits::default().with_max_connections(1);
    let srv = Server::start(limits).await;
    let mut conn = TcpStream::connect(srv.addr).await.unwrap();
    conn.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut conn, &mut seen, 0, "data: ").await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(srv.addr, "/livez").await.code, 200);
    srv.shutdown().await;
}
