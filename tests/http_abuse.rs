//! Abusive HTTP against a real sidecar holding a real lock: garbage bytes, oversized heads and
//! bodies, writes to read-only endpoints, an HTTP/2 preface, pipelining, and slowloris clients
//! below and above the connection cap. The sidecar must keep serving (readiness probes keep
//! answering 200 while the abuse stays under the cap), its memory must stay bounded, and the lock
//! state must not change (same state, fencing token, key and lease; same key in etcd).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::{http_get, unique_name, EtcdCluster, Sidecar};

/// Resident memory of a process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `request` and reads until the server closes or 10 s pass; returns what came back.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = connect(addr);
    // A server may answer and close before reading everything: a failed write is fine.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Probes `/readyz` every 20 ms on its own thread, like a kubelet; counts answers by outcome and
/// tracks the sidecar's peak RSS.
struct Kubelet {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    peak_rss: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(addr: String, pid: u32) -> Kubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let (st, o, b, p) = (stop.clone(), ok.clone(), bad.clone(), peak_rss.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match http_get(&addr, "/readyz", Duration::from_secs(1)) {
                    Ok(r) if r.status == 200 => o.fetch_add(1, Ordering::SeqCst),
                    _ => b.fetch_add(1, Ordering::SeqCst),
                };
                p.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Kubelet {
            stop,
            ok,
            bad,
            peak_rss,
            thread: Some(thread),
        }
    }

    /// (200 answers, anything else) since the last call.
    fn take(&self) -> (u64, u64) {
        (
            self.ok.swap(0, Ordering::SeqCst),
            self.bad.swap(0, Ordering::SeqCst),
        )
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.peak_rss.load(Ordering::SeqCst)
    }
}

/// Asserts the kubelet saw only 200s during a phase (and some at all).
fn served_throughout(kubelet: &Kubelet, phase: &str) {
    // A fast phase may end between two probes: count a few right after it too.
    std::thread::sleep(Duration::from_millis(200));
    let (ok, bad) = kubelet.take();
    assert!(
        bad == 0 && ok > 0,
        "{phase}: readiness probes got {ok} × 200 and {bad} failures"
    );
}

#[test]
fn garbage_oversized_and_slow_http_leaves_the_sidecar_serving_and_the_lock_alone() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("abuse");
    let sidecar = Sidecar::start(&cluster.endpoints(), &lock, "abused", "5s", &[]);
    sidecar.wait_ready(Duration::from_secs(15));
    let addr = sidecar.addr();
    let before = sidecar.status();
    let rss_before = rss_kib(sidecar.pid());
    let kubelet = Kubelet::start(addr.clone(), sidecar.pid());
    let mut rng = StdRng::seed_from_u64(0xab05e);

    // 1. Garbage: random bytes, binary and text, on many connections.
    for n in 0..200 {
        let len = rng.random_range(1..8192);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if n % 3 == 0 {
            junk.extend_from_slice(b"\r\n\r\n");
        }
        let answer = exchange(&addr, &junk);
        let code = status_line(&answer);
        assert!(
            answer.is_empty() || matches!(code, 400 | 404 | 405 | 413 | 414 | 431 | 505),
            "garbage got {answer:?}"
        );
    }
    served_throughout(&kubelet, "garbage");

    // 2. Oversized heads: a 64 KiB header, 200 headers, a 100 KiB request line.
    let big_header = format!(
        "GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(status_line(&exchange(&addr, big_header.as_bytes())), 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /readyz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status_line(&exchange(&addr, many.as_bytes())), 431);
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "u".repeat(100 * 1024)
    );
    let code = status_line(&exchange(&addr, long_uri.as_bytes()));
    assert!(matches!(code, 0 | 400 | 414 | 431), "long URI got {code}");

    // 3. Oversized bodies, announced and chunked.
    let mut announced =
        b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n".to_vec();
    announced.extend(std::iter::repeat_n(b'b', 256 * 1024));
    assert_eq!(status_line(&exchange(&addr, &announced)), 413);
    let mut chunked =
        b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..64 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend(std::iter::repeat_n(b'c', 0x1000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_line(&exchange(&addr, &chunked)), 413);
    served_throughout(&kubelet, "oversized requests");

    // 4. Writes to read-only endpoints, an HTTP/2 preface, pipelining.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/readyz", "/status", "/events", "/livez", "/metrics"] {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{{\"held\":0}}"
            );
            assert_eq!(
                status_line(&exchange(&addr, req.as_bytes())),
                405,
                "{method} {path}"
            );
        }
    }
    let h2 = exchange(
        &addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    );
    assert!(
        h2.is_empty() || status_line(&h2) >= 400,
        "h2 preface got {h2:?}"
    );
    let mut pipelined = Vec::new();
    for _ in 0..500 {
        pipelined.extend_from_slice(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    pipelined.extend_from_slice(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answers = exchange(&addr, &pipelined);
    assert_eq!(
        answers.matches("HTTP/1.1 200 OK").count(),
        501,
        "pipelined answers"
    );
    served_throughout(&kubelet, "read-only writes, h2, pipelining");

    // 5. Slowloris below the connection cap (256): 200 clients trickling a header byte every
    //    500 ms. Probes keep being served, and the server drops the slow clients after its
    //    header read timeout (5 s).
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = connect(&addr);
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let mut closed_at = vec![None; slow.len()];
    while started.elapsed() < Duration::from_secs(9) && closed_at.iter().any(Option::is_none) {
        for (i, s) in slow.iter_mut().enumerate() {
            if closed_at[i].is_none() && s.write_all(b"x").is_err() {
                closed_at[i] = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let dropped = closed_at.iter().filter(|c| c.is_some()).count();
    assert!(
        dropped == slow.len(),
        "slow clients dropped by the header timeout: {dropped} of {}",
        slow.len()
    );
    drop(slow);
    served_throughout(&kubelet, "slowloris below the cap");

    // 6. Slowloris above the cap: 400 idle connections. While every slot is taken, new
    //    connections (probes included) are closed at once: bounded memory over availability,
    //    and readiness fails closed (never a wrong 200). Within the header read timeout after
    //    the attack the sidecar serves again.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&addr).ok()?;
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\n");
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (_, _) = kubelet.take();
    drop(flood);
    let recovered = Instant::now();
    while !http_get(&addr, "/readyz", Duration::from_secs(1)).is_ok_and(|r| r.status == 200) {
        assert!(
            recovered.elapsed() < Duration::from_secs(8),
            "not serving {:?} after a connection flood",
            recovered.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let _ = kubelet.take();
    std::thread::sleep(Duration::from_secs(1));
    served_throughout(&kubelet, "after the flood");

    // The lock never noticed.
    let peak = kubelet.stop();
    let after = sidecar.status();
    for field in [
        "state",
        "held",
        "fencing_token",
        "key",
        "lease_id",
        "holder",
    ] {
        assert_eq!(
            before[field], after[field],
            "{field} changed: {before} → {after}"
        );
    }
    let key = before["key"].as_str().unwrap();
    let out = cluster
        .etcdctl()
        .args(["get", key, "-w", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["kvs"][0]["create_revision"].as_i64(),
        before["fencing_token"].as_i64(),
        "the key in etcd is the same"
    );
    let rss_after = rss_kib(sidecar.pid());
    eprintln!("RSS: {rss_before} KiB before, peak {peak} KiB, {rss_after} KiB after");
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB vs {rss_before} KiB before"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS {rss_after} KiB after vs {rss_before} KiB before"
    );
    let (code, _) = sidecar.get("/livez");
    assert_eq!(code, 200);
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
}
