//! The real `lockkeeper` binary against real etcd: readiness follows ownership, hand-over on
//! SIGTERM and SIGKILL, survival of member deaths, stepping down when cut off, the HTTP surface,
//! invalid configuration, `exec` and `wait`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockkeeper::{acquire_lock, release_lock, EtcdOptions, LockOptions};
use testkit::fault::proxy::FaultProxy;
use testkit::{http_request, lockkeeper_bin, unique_name, EtcdCluster, Sidecar};

/// Per sidecar: the (first seen, last seen) instants of each stretch of readiness.
type Stretches = Vec<Vec<(Instant, Instant)>>;

/// One invalid-configuration case: arguments, environment, the field the message must name.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Polls every sidecar's `/readyz` in sweeps (~10 ms apart) on a background thread and records,
/// on one clock, when each one was ready. Fails if two are ever ready in the same sweep.
struct ReadyMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// For each sidecar: (first seen ready, last seen ready) per ready stretch.
    stretches: Arc<Mutex<Stretches>>,
    overlap: Arc<Mutex<Option<String>>>,
}

impl ReadyMonitor {
    fn start(addrs: Vec<String>) -> ReadyMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let stretches: Arc<Mutex<Stretches>> = Arc::new(Mutex::new(vec![Vec::new(); addrs.len()]));
        let overlap = Arc::new(Mutex::new(None));
        let (st, sr, ov) = (stop.clone(), stretches.clone(), overlap.clone());
        let thread = std::thread::spawn(move || {
            let mut was_ready = vec![false; addrs.len()];
            while !st.load(Ordering::SeqCst) {
                let mut ready_now = Vec::new();
                for (i, addr) in addrs.iter().enumerate() {
                    let ready = testkit::http_get(addr, "/readyz", Duration::from_millis(300))
                        .map(|r| r.status == 200)
                        .unwrap_or(false);
                    let now = Instant::now();
                    let mut s = sr.lock().unwrap();
                    if ready {
                        ready_now.push(i);
                        if was_ready[i] {
                            s[i].last_mut().unwrap().1 = now;
                        } else {
                            s[i].push((now, now));
                        }
                    }
                    was_ready[i] = ready;
                }
                if ready_now.len() > 1 {
                    *ov.lock().unwrap() =
                        Some(format!("sidecars {ready_now:?} ready in the same sweep"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        ReadyMonitor {
            stop,
            thread: Some(thread),
            stretches,
            overlap,
        }
    }

    fn finish(mut self) -> Stretches {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        if let Some(o) = self.overlap.lock().unwrap().clone() {
            panic!("two holders at once: {o}");
        }
        self.stretches.lock().unwrap().clone()
    }
}

fn holder(sidecars: &[&Sidecar]) -> Option<usize> {
    sidecars.iter().position(|s| s.ready() == Some(true))
}

fn wait_for_holder(sidecars: &[&Sidecar], limit: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        if let Some(i) = holder(sidecars) {
            return (i, started.elapsed());
        }
        assert!(started.elapsed() < limit, "no holder within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn etcd_keys(cluster: &EtcdCluster, prefix: &str) -> String {
    let out = cluster
        .etcdctl()
        .args(["get", "--prefix", "--keys-only", prefix])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn lease_ids(cluster: &EtcdCluster) -> String {
    let out = cluster.etcdctl().args(["lease", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sigterm_hands_over_within_a_second_and_cleans_up() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("term");
    let a = Sidecar::start(&cluster.endpoints(), &lock, "a", "5s", &[]);
    let b = Sidecar::start(&cluster.endpoints(), &lock, "b", "5s", &[]);
    let monitor = ReadyMonitor::start(vec![a.addr(), b.addr()]);
    let (first, _) = wait_for_holder(&[&a, &b], Duration::from_secs(10));
    let (mut old, new) = if first == 0 { (a, b) } else { (b, a) };
    let old_status = old.status();
    let old_key = old_status["key"].as_str().unwrap().to_owned();
    let old_lease = old_status["lease_id"].as_str().unwrap().to_owned();
    assert!(old_status["fencing_token"].as_i64().unwrap() > 0);

    let stopped = Instant::now();
    old.signal("TERM");
    new.wait_ready(Duration::from_secs(1));
    let handover = stopped.elapsed();
    let exit = old
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(exit.success(), "exit 0 after SIGTERM, got {exit:?}");
    assert!(
        !etcd_keys(&cluster, &format!("/locks/{lock}/")).contains(&old_key),
        "old key deleted"
    );
    assert!(
        !lease_ids(&cluster).contains(&old_lease),
        "old lease revoked"
    );
    assert!(
        new.status()["fencing_token"].as_i64().unwrap()
            > old_status["fencing_token"].as_i64().unwrap()
    );
    monitor.finish();
    eprintln!("SIGTERM hand-over took {handover:?}");
}

#[test]
fn sigkill_fails_over_within_ttl_and_only_one_is_ever_ready() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("kill");
    let sidecars: Vec<Sidecar> = ["a", "b", "c"]
        .iter()
        .map(|id| Sidecar::start(&cluster.endpoints(), &lock, id, "3s", &[]))
        .collect();
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let monitor = ReadyMonitor::start(sidecars.iter().map(Sidecar::addr).collect());
    let (first, _) = wait_for_holder(&refs, Duration::from_secs(10));
    let first_token = sidecars[first].status()["fencing_token"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let the monitor sweep the first holder
    sidecars[first].signal("KILL");
    let killed = Instant::now();
    let others: Vec<&Sidecar> = refs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, s)| *s)
        .collect();
    let (second, _) = wait_for_holder(&others, Duration::from_secs(5));
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_secs(5),
        "fail-over took {failover:?} (TTL 3 s + 2 s)"
    );
    let second_token = others[second].status()["fencing_token"].as_i64().unwrap();
    assert!(second_token > first_token, "fencing token increases");
    std::thread::sleep(Duration::from_millis(300)); // let the monitor sweep the second holder
                                                    // Then a clean hand-over to the third.
    others[second].signal("TERM");
    let third: Vec<&Sidecar> = others
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != second)
        .map(|(_, s)| *s)
        .collect();
    third[0].wait_ready(Duration::from_secs(2));
    assert!(third[0].status()["fencing_token"].as_i64().unwrap() > second_token);
    std::thread::sleep(Duration::from_millis(300)); // let the monitor sweep the last holder
    let stretches = monitor.finish();
    assert!(
        stretches.iter().filter(|s| !s.is_empty()).count() == 3,
        "each sidecar held once: {stretches:?}"
    );
    eprintln!("SIGKILL fail-over took {failover:?}");
}

#[test]
fn holder_stays_ready_through_member_deaths() {
    let mut cluster = EtcdCluster::three();
    let lock = unique_name("members");
    let s = Sidecar::start(&cluster.endpoints(), &lock, "solo", "10s", &[]);
    s.wait_ready(Duration::from_secs(10));
    let token = s.status()["fencing_token"].as_i64().unwrap();
    let watch_for = |s: &Sidecar, d: Duration| {
        let started = Instant::now();
        while started.elapsed() < d {
            assert_eq!(
                s.ready(),
                Some(true),
                "readiness dropped; log:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let leader = cluster.leader_index().expect("a leader");
    let follower = (leader + 1) % 3;
    cluster.kill_member(follower);
    watch_for(&s, Duration::from_secs(6));
    cluster.restart_member(follower);
    let leader = cluster.wait_leader(&[], Duration::from_secs(10));
    cluster.kill_member(leader);
    watch_for(&s, Duration::from_secs(12));
    assert_eq!(
        s.status()["fencing_token"].as_i64().unwrap(),
        token,
        "same holding throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_cut_off_from_etcd_steps_down_before_anyone_else_takes_over() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("cutoff");
    let proxy = FaultProxy::start(&cluster.endpoint(0));
    let a = Sidecar::start(std::slice::from_ref(&proxy.endpoint), &lock, "a", "3s", &[]);
    a.wait_ready(Duration::from_secs(10));
    let b = Sidecar::start(&cluster.endpoints(), &lock, "b", "3s", &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.ready(), Some(false));
    let monitor = ReadyMonitor::start(vec![a.addr(), b.addr()]);
    let cut = Instant::now();
    proxy.blackhole();
    b.wait_ready(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300)); // let the monitor sweep the new holder
    let stretches = monitor.finish();
    let a_last = stretches[0].last().map(|s| s.1).expect("a was ready");
    let b_first = stretches[1].first().map(|s| s.0).expect("b became ready");
    assert!(a_last < b_first, "a still ready after b took over");
    eprintln!(
        "cut at 0: a unready by {:?}, b ready at {:?} (gap {:?})",
        a_last - cut,
        b_first - cut,
        b_first - a_last
    );
    let st = a.status();
    assert_eq!(st["held"], false);
    assert_eq!(a.get("/livez").0, 200, "liveness is not tied to etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_surface_status_events_metrics_and_bad_requests() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("http");
    let s = Sidecar::start(&cluster.endpoints(), &lock, "web-0", "5s", &[]);
    s.wait_ready(Duration::from_secs(10));

    let st = s.status();
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
        assert!(st.get(field).is_some(), "/status lacks {field}: {st}");
    }
    assert_eq!(st["lock"], lock.as_str());
    assert_eq!(st["state"], "held");
    assert_eq!(st["held"], true);
    assert_eq!(st["holder"], "web-0");
    let remaining = st["lease_remaining_ms"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 5000, "{remaining}");
    assert!(humantime::parse_rfc3339(st["since"].as_str().unwrap()).is_ok());

    // A waiter reports its queue position and the holder.
    let w = Sidecar::start(&cluster.endpoints(), &lock, "web-1", "5s", &[]);
    let started = Instant::now();
    while w.status()["queue_position"] != 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "{}", w.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.status()["state"], "waiting");
    assert_eq!(w.status()["holder"], "web-0");

    // /events: the current status at once, then the hand-over as a new event.
    let mut events = std::net::TcpStream::connect(w.addr()).unwrap();
    use std::io::{BufRead, BufReader, Write};
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(events, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(events);
    let mut datas = Vec::new();
    let mut line = String::new();
    let mut released = false;
    while datas.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(json) = line
            .trim_end()
            .strip_prefix("data: ")
            .or_else(|| line.trim_end().strip_prefix("data:"))
        {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            datas.push(v.clone());
            if !released {
                assert_eq!(v["state"], "waiting");
                s.signal("TERM");
                released = true;
            }
        }
    }
    assert_eq!(datas.last().unwrap()["state"], "held", "{datas:?}");

    // /metrics passes promtool and carries the required families.
    let (code, metrics) = w.get("/metrics");
    assert_eq!(code, 200);
    for family in [
        "lockkeeper_lock_held 1",
        "lockkeeper_acquisitions_total 1",
        "lockkeeper_lock_losses_total",
        "lockkeeper_acquire_wait_seconds_bucket",
        "lockkeeper_lease_keepalives_total",
        "lockkeeper_lease_keepalive_failures_total",
        "lockkeeper_lease_remaining_seconds",
        "lockkeeper_fencing_token",
        "lockkeeper_etcd_request_duration_seconds_bucket",
        "lockkeeper_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad requests get 4xx and change nothing.
    let t = Duration::from_secs(2);
    assert_eq!(
        http_request(&w.addr(), "GET", "/nope", "", t)
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http_request(&w.addr(), "POST", "/readyz", "", t)
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        http_request(&w.addr(), "DELETE", "/status", "", t)
            .unwrap()
            .status,
        405
    );
    let big = "x".repeat(64 * 1024);
    let code = http_request(&w.addr(), "POST", "/status", &big, t)
        .map(|r| r.status)
        .unwrap_or(413);
    assert!((400..500).contains(&code), "{code}");
    assert_eq!(w.ready(), Some(true), "still holding after bad requests");
}

fn run_binary(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(lockkeeper_bin())
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("POD_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn invalid_configuration_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "lock:\n  name: x\n  tll: 5s\netcd:\n  endpoints: [\"127.0.0.1:2379\"]\n",
    )
    .unwrap();
    let unknown = unknown.to_str().unwrap();
    let ep = ["--etcd-endpoints", "http://127.0.0.1:1"];
    let cases: Vec<Case<'_>> = vec![
        (vec!["run", ep[0], ep[1]], vec![], "lock.name"),
        (vec!["run", "--lock", "x"], vec![], "etcd.endpoints"),
        (
            vec!["run", ep[0], ep[1], "--lock", "team/job"],
            vec![],
            "lock.name",
        ),
        (
            vec![
                "exec",
                ep[0],
                ep[1],
                "--lock",
                "x",
                "--kill-after",
                "5s",
                "--",
                "true",
            ],
            vec![],
            "exec.kill_after",
        ),
        (
            vec!["run", ep[0], ep[1], "--lock", "x", "--ttl", "1s"],
            vec![],
            "lock.ttl",
        ),
        (
            vec![
                "run",
                ep[0],
                ep[1],
                "--lock",
                "x",
                "--ttl",
                "10s",
                "--safety-margin",
                "5s",
            ],
            vec![],
            "lock.safety_margin",
        ),
        (
            vec!["run", ep[0], ep[1], "--lock", "x", "--renew-interval", "9s"],
            vec![],
            "lock.renew_interval",
        ),
        (
            vec!["run", ep[0], ep[1], "--lock", "x", "--listen", "nowhere"],
            vec![],
            "listen",
        ),
        (vec!["run", "--config", unknown], vec![], "tll"),
        (
            vec!["run", "--config", "/nonexistent/lockkeeper.yaml"],
            vec![],
            "config",
        ),
        (
            vec!["run", ep[0], ep[1]],
            vec![("LOCKKEEPER_LOCK", "x"), ("LOCKKEEPER_TTL", "1s")],
            "lock.ttl",
        ),
    ];
    for (args, envs, field) in cases {
        let (code, stderr) = run_binary(&args, &envs);
        assert_eq!(code, 2, "{args:?}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains(field),
            "{args:?}: message should name {field}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
    }
    // clap's own usage errors (bad duration, unknown flag) are also exit 2.
    assert_eq!(run_binary(&["run", "--ttl", "soon"], &[]).0, 2);
    assert_eq!(run_binary(&["run", "--bogus"], &[]).0, 2);
}

#[test]
fn help_and_version_are_useful() {
    let out = Command::new(lockkeeper_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(lockkeeper_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--etcd-endpoints",
        "--lock",
        "--ttl",
        "--listen",
        "LOCKKEEPER_LOCK",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

fn library_holds(
    cluster: &EtcdCluster,
    lock: &str,
) -> (
    tokio::runtime::Runtime,
    lockkeeper::Etcd,
    lockkeeper::LockHandle,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (etcd, held) = rt.block_on(async {
        let etcd = EtcdOptions::new(cluster.endpoints())
            .connect_etcd()
            .await
            .unwrap();
        let held = acquire_lock(&etcd, lock, &LockOptions::new().with_identity("library"))
            .await
            .unwrap();
        (etcd, held)
    });
    (rt, etcd, held)
}

#[test]
fn exec_runs_the_child_only_while_holding_and_passes_its_exit_code() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("exec");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("token");
    let (rt, etcd, held) = library_holds(&cluster, &lock);
    let script = format!(
        "echo \"$LOCKKEEPER_FENCING_TOKEN $LOCKKEEPER_LOCK_KEY $LOCKKEEPER_LEASE_ID\" > {}; exit 7",
        out.display()
    );
    let mut child = spawn_exec(&cluster, &lock, &["--identity", "exec-1"], &script);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !out.exists(),
        "the child ran while someone else held the lock"
    );
    let library_token = held.token().0;
    rt.block_on(release_lock(&etcd, held)).unwrap();
    let status = wait_child(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(7), "exit code passed through");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut parts = text.split_whitespace();
    let token: i64 = parts.next().unwrap().parse().unwrap();
    assert!(token > library_token, "child saw a newer fencing token");
    assert!(parts
        .next()
        .unwrap()
        .starts_with(&format!("/locks/{lock}/")));
    assert!(!parts.next().unwrap().is_empty(), "lease id");
    assert!(
        etcd_keys(&cluster, &format!("/locks/{lock}/")).is_empty(),
        "released after the child exited"
    );
}

#[test]
fn exec_stops_the_child_when_the_lock_is_lost() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("execloss");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("term");
    // The child would linger after SIGTERM: only SIGKILL ends it.
    let script = format!(
        "trap 'echo stopped > {}' TERM; while true; do sleep 0.05; done",
        marker.display()
    );
    let mut child = spawn_exec(&cluster, &lock, &[], &script);
    wait_for(Duration::from_secs(10), "the lock is held", || {
        !etcd_keys(&cluster, &format!("/locks/{lock}/")).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    // An operator deletes the holder's key: the lock is lost, and the child must go at once,
    // long before the local deadline (TTL 3 s) would have ended it.
    let out = cluster
        .etcdctl()
        .args(["del", "--prefix", &format!("/locks/{lock}/")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let deleted = Instant::now();
    let status = wait_child(&mut child, Duration::from_secs(10));
    assert!(
        deleted.elapsed() < Duration::from_secs(1),
        "the child outlived the lock by {:?}",
        deleted.elapsed()
    );
    assert_eq!(status.code(), Some(128 + 9), "the child was SIGKILLed");
}

#[test]
fn a_killed_exec_takes_its_child_with_it() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("execkill");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo $$ > {}; while true; do sleep 0.05; done",
        pid_file.display()
    );
    let mut exec = spawn_exec(&cluster, &lock, &[], &script);
    wait_for(Duration::from_secs(10), "the child started", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL (or the OOM killer) leaves lockkeeper no chance to stop the child itself; its
    // lease then runs out and someone else may acquire, so the child must not live on.
    exec.kill().unwrap();
    exec.wait().unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let started = Instant::now();
    while alive() && started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive();
    if survived {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(!survived, "the child outlived a SIGKILLed lockkeeper exec");
}

/// Starts `lockkeeper exec` on `lock` with extra flags, running `sh -c script` as the child.
fn spawn_exec(
    cluster: &EtcdCluster,
    lock: &str,
    extra: &[&str],
    script: &str,
) -> std::process::Child {
    Command::new(lockkeeper_bin())
        .args([
            "exec",
            "--etcd-endpoints",
            &cluster.endpoints().join(","),
            "--lock",
            lock,
        ])
        .args(["--ttl", "3s"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `cond` holds, failing with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wait_returns_when_the_sidecar_acquires() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("wait");
    let (rt, etcd, held) = library_holds(&cluster, &lock);
    let s = Sidecar::start(&cluster.endpoints(), &lock, "waiter", "5s", &[]);
    let url = format!("http://{}", s.addr());
    // Times out (non-zero) while someone else holds.
    let (code, _) = run_binary(&["wait", "--url", &url, "--timeout", "500ms"], &[]);
    assert_ne!(code, 0);
    let mut waiting = Command::new(lockkeeper_bin())
        .args(["wait", "--url", &url, "--timeout", "30s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "wait returned before the lock was held"
    );
    let released = Instant::now();
    rt.block_on(release_lock(&etcd, held)).unwrap();
    let status = wait_child(&mut waiting, Duration::from_secs(10));
    assert!(status.success());
    eprintln!("wait returned {:?} after the release", released.elapsed());
}

#[test]
fn second_signal_exits_at_once_during_a_drain() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("drain");
    let mut s = Sidecar::start(
        &cluster.endpoints(),
        &lock,
        "d",
        "5s",
        &["--drain-delay", "20s"],
    );
    s.wait_ready(Duration::from_secs(10));
    s.signal("TERM");
    // Readiness goes off at once, before the drain delay.
    let started = Instant::now();
    while s.ready() == Some(true) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still ready after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.status()["state"], "stopping");
    assert!(
        s.wait_exit(Duration::from_millis(500)).is_none(),
        "drains first"
    );
    s.signal("INT");
    let exit = s
        .wait_exit(Duration::from_secs(2))
        .expect("second signal exits at once");
    assert_eq!(exit.code(), Some(130));
}

#[test]
fn exec_forwards_signals_to_the_child() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("execsig");
    let dir = tempfile::tempdir().unwrap();
    let started_marker = dir.path().join("started");
    let usr1_marker = dir.path().join("usr1");
    let script = format!(
        "trap 'echo got > {}' USR1; trap 'exit 5' TERM; touch {}; while true; do sleep 0.05; done",
        usr1_marker.display(),
        started_marker.display()
    );
    let mut child = spawn_exec(&cluster, &lock, &[], &script);
    wait_for(Duration::from_secs(10), "the child started", || {
        started_marker.exists()
    });
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    kill("-USR1");
    wait_for(Duration::from_secs(5), "SIGUSR1 forwarded", || {
        usr1_marker.exists()
    });
    kill("-TERM");
    let status = wait_child(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(5),
        "SIGTERM forwarded; the child's code passed through"
    );
    assert!(
        etcd_keys(&cluster, &format!("/locks/{lock}/")).is_empty(),
        "released"
    );
}

/// Reads `/events` of `addr` on a thread until `stop`, collecting every data event.
fn follow_events(
    addr: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut events = std::net::TcpStream::connect(&addr).unwrap();
        events
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(events, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reader = BufReader::new(events);
        let mut datas = Vec::new();
        let mut line = String::new();
        while !stop.load(Ordering::SeqCst) {
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(json) = line.trim_end().strip_prefix("data: ") {
                        datas.push(serde_json::from_str(json).unwrap());
                    }
                    line.clear();
                }
                // A read timeout keeps the partial line; go on reading.
                Err(_) => continue,
            }
        }
        datas
    })
}

#[test]
fn an_undisturbed_hold_of_five_ttls_keeps_every_gating_path_true() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("longhold");
    let s = Sidecar::start(&cluster.endpoints(), &lock, "long-0", "3s", &[]);
    s.wait_ready(Duration::from_secs(10));

    // exec beside it, on its own lock: a child that would exit 99 on SIGTERM.
    let exec_lock = unique_name("longexec");
    let mut exec = spawn_exec(
        &cluster,
        &exec_lock,
        &[],
        "trap 'exit 99' TERM; sleep 16; exit 7",
    );
    let exec_started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let events = follow_events(s.addr(), stop.clone());
    // Five TTLs of 3 s and a bit.
    let until = Instant::now() + Duration::from_secs(16);
    let mut next_scrape = Instant::now();
    let mut scrapes = 0;
    while Instant::now() < until {
        assert_eq!(
            s.ready(),
            Some(true),
            "/readyz left 200 during an undisturbed hold:\n{}",
            s.log()
        );
        if Instant::now() >= next_scrape {
            let (code, body) = s.get("/metrics");
            assert_eq!(code, 200);
            assert!(
                body.lines().any(|l| l == "lockkeeper_lock_held 1"),
                "lockkeeper_lock_held is not 1:\n{body}"
            );
            scrapes += 1;
            next_scrape += Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let datas = events.join().unwrap();
    assert!(scrapes >= 30, "{scrapes} scrapes");
    assert!(!datas.is_empty(), "no event at all");
    assert_eq!(datas[0]["held"], true, "{datas:?}");
    assert!(
        datas.iter().all(|d| d["held"] == true),
        "/events said held:false while /readyz was 200: {datas:?}"
    );

    let status = wait_child(&mut exec, Duration::from_secs(20));
    assert_eq!(status.code(), Some(7), "exec touched a healthy child");
    assert!(
        exec_started.elapsed() >= Duration::from_secs(16),
        "the child ran its whole time"
    );
}

#[test]
fn a_vanished_holder_costs_the_lock_delay_shown_in_status_and_metrics_a_sigterm_does_not() {
    let cluster = EtcdCluster::single();
    let lock = unique_name("lock-delay");
    let flags = ["--lock-delay", "3s"];
    let a = Sidecar::start(&cluster.endpoints(), &lock, "a", "10s", &flags);
    a.wait_ready(Duration::from_secs(10));
    let b = Sidecar::start(&cluster.endpoints(), &lock, "b", "10s", &flags);
    wait_for(Duration::from_secs(10), "b queued", || {
        b.status()["state"] == "waiting"
    });

    // The holder's key vanishes as in an early lease revocation.
    let key = a.status()["key"].as_str().unwrap().to_owned();
    let out = cluster.etcdctl().args(["del", &key]).output().unwrap();
    assert!(out.status.success());
    let vanished = Instant::now();
    let mut seen_delay = None;
    while b.ready() != Some(true) {
        let st = b.status();
        if st["state"] == "lock_delay" {
            let left = st["lock_delay_remaining_ms"].as_u64().unwrap();
            assert!(left <= 3000, "{st}");
            seen_delay.get_or_insert(left);
            assert_eq!(b.get("/readyz").0, 503, "not ready during the lock-delay");
        }
        assert!(vanished.elapsed() < Duration::from_secs(10), "b never held");
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = vanished.elapsed();
    assert!(waited >= Duration::from_secs(3), "b held after {waited:?}");
    assert!(seen_delay.is_some(), "/status never showed the lock-delay");
    assert_eq!(
        a.ready(),
        Some(false),
        "a stepped down when its key vanished"
    );
    let (_, metrics) = b.get("/metrics");
    assert!(
        metrics.contains("lockkeeper_lock_delays_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockkeeper_state{state=\"lock_delay\"} 0"),
        "{metrics}"
    );
    assert!(b.log().contains("\"event\":\"lock_delay\""), "audited");

    // A clean hand-over (SIGTERM writes the release record) skips the delay.
    wait_for(Duration::from_secs(10), "a queued again", || {
        a.status()["state"] == "waiting"
    });
    let mut b = b;
    let stopped = Instant::now();
    b.sigterm_and_wait(Duration::from_secs(5));
    a.wait_ready(Duration::from_secs(2));
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "a clean hand-over took {:?}",
        stopped.elapsed()
    );
    let (_, metrics) = a.get("/metrics");
    assert!(
        metrics.contains("lockkeeper_lock_delays_total 0"),
        "{metrics}"
    );
}
