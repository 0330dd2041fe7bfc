//! A minimal HTTP/1.1 client (hyper, already a lockkeeper dependency): one-shot GETs for etcd's
//! and the sidecar's `/metrics`, `/readyz`, and a follower of the sidecar's `/events` stream.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `http://host:port[/...]` → `host:port`.
pub fn authority(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

async fn send(authority: &str, path: &str) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// GET `path` from `authority`; returns the status code and the body as text.
pub async fn get(authority: &str, path: &str) -> Result<(u16, String), BoxError> {
    let fut = async {
        let res = send(authority, path).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("GET http://{authority}{path}: timed out"))?
}

/// A follower of a sidecar's `/events` (server-sent events, one JSON status per event).
pub struct EventStream {
    body: Incoming,
    buf: BytesMut,
}

impl EventStream {
    /// Connects, retrying until `deadline` while the server is not listening yet.
    pub async fn open(authority: &str, deadline: Instant) -> Result<EventStream, BoxError> {
        loop {
            match send(authority, "/events").await {
                Ok(res) if res.status().is_success() => {
                    return Ok(EventStream {
                        body: res.into_body(),
                        buf: BytesMut::new(),
                    })
                }
                Ok(res) => return Err(format!("/events answered {}", res.status()).into()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The next event's JSON payload.
    pub async fn next(&mut self) -> Result<serde_json::Value, BoxError> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let event = self.buf.split_to(end + 2);
                let text = String::from_utf8_lossy(&event);
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue; // a comment / keepalive
                }
                return Ok(serde_json::from_str(&data)?);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err("event stream ended".into()),
            }
        }
    }

    /// Waits for an event satisfying `pred`; returns it and the instant it arrived.
    pub async fn wait_for(
        &mut self,
        deadline: Instant,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(serde_json::Value, Instant), BoxError> {
        loop {
            let ev = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| format!("timed out waiting for a sidecar event: {what}"))??;
            let at = Instant::now();
            if pred(&ev) {
                return Ok((ev, at));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
