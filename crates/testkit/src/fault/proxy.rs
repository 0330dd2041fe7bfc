//! A loopback TCP fault proxy: put one between a sidecar and each etcd member, then change what
//! it does to the bytes at any time.
//!
//! Each direction (`Up`: client → etcd, `Down`: etcd → client) has its own [`Flow`]:
//!
//! - `Pass`: forward at once;
//! - `Delay { base, jitter }`: forward each chunk `base + uniform(0..jitter)` later, in order;
//! - `Stall`: forward nothing and read nothing (TCP flow control holds the bytes, as in a network
//!   partition; they flow again when the direction passes again);
//! - `Drop`: read and discard (bytes are lost; the HTTP/2 stream on top is corrupted).
//!
//! Faults built from these: **blackhole** (both directions stall; new connections are accepted
//! but not connected upstream until it heals), **one-way loss** (one direction drops, the other
//! passes), **delay** fixed or jittered; and **reset**: every open connection is closed with a
//! TCP RST at once, and while the reset mode is on, new connections are reset right after accept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What one direction of the proxy does with the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Forward at once.
    Pass,
    /// Forward `base + uniform(0..jitter)` later, keeping the order.
    Delay { base: Duration, jitter: Duration },
    /// Neither read nor forward until the direction changes.
    Stall,
    /// Read and discard.
    Drop,
}

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client → etcd (requests, keepalives).
    Up,
    /// etcd → client (responses, watch events).
    Down,
}

/// The proxy's whole configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub up: Flow,
    pub down: Flow,
    /// Reset every connection (now, and each new one while this is set).
    pub reset: bool,
}

impl Faults {
    pub const PASS: Faults = Faults {
        up: Flow::Pass,
        down: Flow::Pass,
        reset: false,
    };

    fn flow(&self, dir: Dir) -> Flow {
        match dir {
            Dir::Up => self.up,
            Dir::Down => self.down,
        }
    }

    /// Whether nothing at all gets through (new connections wait).
    fn blackholed(&self) -> bool {
        self.up == Flow::Stall && self.down == Flow::Stall
    }
}

/// A fault proxy from a local port to `target`, on its own thread and runtime. Stops on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT` to give to the client.
    pub endpoint: String,
    faults: watch::Sender<Faults>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts forwarding to `target` (`host:port` or `http://host:port`).
    pub fn start(target: &str) -> FaultProxy {
        let target = target.trim_start_matches("http://").to_owned();
        let (faults, rx) = watch::channel(Faults::PASS);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let st = stop.clone();
        super::spawn_async("fault-proxy", accept_loop(listener, target, rx, st));
        FaultProxy {
            endpoint,
            faults,
            stop,
        }
    }

    /// The current configuration.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Replaces the whole configuration.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// Back to forwarding everything at once.
    pub fn heal(&self) {
        self.set(Faults::PASS);
    }

    /// Delays both directions by `base + uniform(0..jitter)`.
    pub fn delay(&self, base: Duration, jitter: Duration) {
        let flow = Flow::Delay { base, jitter };
        self.set(Faults {
            up: flow,
            down: flow,
            reset: false,
        });
    }

    /// Nothing gets through either way; connections stay open.
    pub fn blackhole(&self) {
        self.set(Faults {
            up: Flow::Stall,
            down: Flow::Stall,
            reset: false,
        });
    }

    /// Bytes in `dir` are lost; the other direction passes.
    pub fn one_way_loss(&self, dir: Dir) {
        let (up, down) = match dir {
            Dir::Up => (Flow::Drop, Flow::Pass),
            Dir::Down => (Flow::Pass, Flow::Drop),
        };
        self.set(Faults {
            up,
            down,
            reset: false,
        });
    }

    /// Resets every open connection now, and every new one until healed.
    pub fn reset(&self) {
        self.set(Faults {
            reset: true,
            ..Faults::PASS
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake everyone so they notice the stop flag.
        self.faults.send_modify(|_| {});
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    target: String,
    faults: watch::Receiver<Faults>,
    stop: Arc<AtomicBool>,
) {
    let listener = TcpListener::from_std(listener).unwrap();
    while !stop.load(Ordering::SeqCst) {
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        let Ok(Ok((inbound, _))) = accepted else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        tokio::spawn(connection(
            inbound,
            target.clone(),
            faults.clone(),
            stop.clone(),
        ));
    }
}

/// Closes `s` with a TCP RST instead of a FIN.
fn rst(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn connection(
    inbound: TcpStream,
    target: String,
    mut faults: watch::Receiver<Faults>,
    stop: Arc<AtomicBool>,
) {
    // While blackholed, a new connection is accepted but not connected upstream.
    loop {
        let f = *faults.borrow_and_update();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if f.reset {
            return rst(inbound);
        }
        if !f.blackholed() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), faults.changed()).await;
    }
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return rst(inbound);
    };
    let _ = outbound.set_nodelay(true);
    let (mut inbound, mut outbound) = (inbound, outbound);
    let killed = {
        let (ri, wi) = inbound.split();
        let (ro, wo) = outbound.split();
        let up = pump(ri, wo, Dir::Up, faults.clone(), stop.clone());
        let down = pump(ro, wi, Dir::Down, faults.clone(), stop.clone());
        let mut watch_reset = faults.clone();
        let reset = async move {
            let _ = watch_reset.wait_for(|f| f.reset).await;
        };
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = reset => true,
        }
    };
    if killed {
        rst(inbound);
        rst(outbound);
    }
}

/// Moves bytes one way according to the direction's flow, until EOF, an error or the stop flag.
/// A reader and a writer joined by a queue, so delayed chunks keep their order and a delay does
/// not slow down reading.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    dir: Dir,
    faults: watch::Receiver<Faults>,
    stop: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let mut faults = faults.clone();
        let stop = stop.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut last_release = Instant::now();
            loop {
                // Stall: do not even read, so the sender's TCP window fills up.
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if faults.borrow_and_update().flow(dir) != Flow::Stall {
                        break;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), faults.changed()).await;
                }
                let n = match tokio::time::timeout(Duration::from_millis(100), from.read(&mut buf))
                    .await
                {
                    Err(_) => continue,
                    Ok(Ok(0)) | Ok(Err(_)) => return, // EOF: the writer shuts down after the queue
                    Ok(Ok(n)) => n,
                };
                let release = match faults.borrow().flow(dir) {
                    Flow::Drop => continue,
                    Flow::Pass | Flow::Stall => Instant::now(),
                    Flow::Delay { base, jitter } => {
                        let extra = if jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            rand::rng().random_range(Duration::ZERO..jitter)
                        };
                        Instant::now() + base + extra
                    }
                };
                last_release = last_release.max(release);
                if tx.send((last_release, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    };
    let writer = {
        let mut faults = faults.clone();
        async move {
            while let Some((at, bytes)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                // A chunk read before a stall waits for the stall to end, like the bytes behind it.
                while faults.borrow_and_update().flow(dir) == Flow::Stall {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), faults.changed()).await;
                }
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        }
    };
    tokio::join!(reader, writer);
}
