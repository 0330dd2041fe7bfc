//! Tests of the etcd test harness itself (crates/testkit): if these fail, every other
//! integration test's failure is suspect.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use testkit::{http_get, unique_name, EtcdCluster};

fn run(mut cmd: std::process::Command) -> Output {
    let out = cmd.output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn put(cluster: &EtcdCluster, key: &str, value: &str) {
    let mut cmd = cluster.etcdctl();
    cmd.args(["put", key, value]);
    run(cmd);
}

fn get(cluster: &EtcdCluster, key: &str) -> String {
    let mut cmd = cluster.etcdctl();
    cmd.args(["get", "--print-value-only", key]);
    String::from_utf8(run(cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// Async on purpose: this is how the real integration tests call the harness.
#[tokio::test]
async fn single_member_is_healthy_and_serves_requests() {
    let cluster = EtcdCluster::single();
    assert_eq!(cluster.member_count(), 1);
    assert_eq!(cluster.endpoints(), vec![cluster.endpoint(0)]);

    let addr = cluster
        .endpoint(0)
        .trim_start_matches("http://")
        .to_string();
    let health = http_get(&addr, "/health", Duration::from_secs(1)).unwrap();
    assert_eq!(health.status, 200);
    assert!(
        health.body.contains(r#""health":"true""#),
        "{}",
        health.body
    );

    assert_eq!(cluster.leader_index(), Some(0));
    let key = unique_name("harness");
    put(&cluster, &key, "v1");
    assert_eq!(get(&cluster, &key), "v1");
}

#[test]
fn killed_leader_is_replaced_and_restarted_member_rejoins() {
    let mut cluster = EtcdCluster::three();
    assert_eq!(cluster.member_count(), 3);
    let mut ports: Vec<&str> = Vec::new();
    let endpoints = cluster.endpoints();
    for e in &endpoints {
        ports.push(e.rsplit(':').next().unwrap());
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "client ports must differ: {endpoints:?}");

    let leader = cluster.wait_leader(&[], Duration::from_secs(10));
    put(&cluster, "/harness/k", "before");

    cluster.kill_member(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_leader(&[leader], Duration::from_secs(10));
    eprintln!(
        "new leader elected {:?} after killing the old one",
        killed_at.elapsed()
    );
    assert_ne!(new_leader, leader);
    cluster.wait_healthy(Duration::from_secs(10));
    put(&cluster, "/harness/k", "during");

    cluster.restart_member(leader);
    cluster.wait_healthy(Duration::from_secs(10));
    assert!(cluster.member_pid(leader).is_some());
    assert_eq!(get(&cluster, "/harness/k"), "during");
}

#[test]
fn paused_leader_is_replaced_and_resumed_member_catches_up() {
    let mut cluster = EtcdCluster::three();
    let leader = cluster.wait_leader(&[], Duration::from_secs(10));

    cluster.pause_member(leader);
    let new_leader = cluster.wait_leader(&[leader], Duration::from_secs(10));
    put(&cluster, "/harness/p", "while-paused");

    cluster.resume_member(leader);
    cluster.wait_healthy(Duration::from_secs(10));
    assert!(cluster.leader_index().is_some());
    // Ask the resumed member alone: it must have caught up.
    let mut cmd = cluster.etcdctl_member(leader);
    cmd.args(["get", "--print-value-only", "/harness/p"]);
    let value = String::from_utf8(run(cmd).stdout).unwrap();
    assert_eq!(
        value.trim(),
        "while-paused",
        "old leader {leader}, new {new_leader}"
    );
}

#[test]
fn stopped_member_exits_and_comes_back() {
    let mut cluster = EtcdCluster::single();
    let pid = cluster.member_pid(0).unwrap();
    cluster.stop_member(0);
    assert!(!process_exists(pid), "SIGTERM'd etcd {pid} still exists");
    assert_eq!(cluster.member_pid(0), None);
    assert_eq!(cluster.leader_index(), None);

    cluster.restart_member(0);
    assert_eq!(cluster.leader_index(), Some(0));
}

#[test]
fn drop_kills_every_member_and_removes_data() {
    let mut cluster = EtcdCluster::three();
    cluster.pause_member(1);
    let pids: Vec<u32> = (0..3).map(|i| cluster.member_pid(i).unwrap()).collect();
    let dirs: Vec<_> = (0..3).map(|i| cluster.data_dir(i)).collect();
    assert!(dirs.iter().all(|d| d.is_dir()));

    drop(cluster);

    for pid in pids {
        assert!(
            !process_exists(pid),
            "etcd {pid} survived the cluster's drop"
        );
    }
    for dir in dirs {
        assert!(
            !dir.exists(),
            "{} survived the cluster's drop",
            dir.display()
        );
    }
}

#[test]
fn unique_names_differ() {
    let a = unique_name("lock");
    let b = unique_name("lock");
    assert_ne!(a, b);
    assert!(a.starts_with("lock-"));
}
