//! Real etcd clusters for integration tests: free ports for every listener, a temporary data
//! dir per member, health waits that watch for early exit, and fault injection by signals.
//!
//! Everything here is blocking (std::process, std::net) and short, so it is fine to call from
//! `#[tokio::test]` functions.
//!
//! Clusters start plain (`http://`) by default; `EtcdCluster::start_with` with an [`EtcdTls`]
//! serves clients over `https://` only (optionally requiring client certificates), and the
//! harness then checks health and leadership through `etcdctl` with its own client identity.
//!
//! Here: starting a whole cluster and dropping it. The members' processes are in `member`,
//! health, leadership and crash checks in `health`, TLS and the command-line tools in `setup`.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::send_signal;
use member::{reserve_ports, Member};

mod health;
mod member;
mod setup;

pub(crate) use setup::etcdctl_command;
pub use setup::{etcd_bin, etcdctl_bin, EtcdSetup, EtcdTls};

/// How long a member (or a whole cluster) may take to become healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-cluster start attempts when a port turns out to be taken by someone else.
const START_ATTEMPTS: usize = 5;
/// How long a SIGTERM'd member may take to exit before it is SIGKILL'd.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on every HTTP probe, so a paused member cannot hang the harness.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// etcd's own defaults: a dead leader is replaced within 1–2 s, and a loaded CI machine
/// (several clusters on two cores) does not see spurious elections.
const HEARTBEAT_MS: u32 = 100;
const ELECTION_TIMEOUT_MS: u32 = 1000;
const LOG_TAIL_LINES: usize = 40;

/// A real etcd cluster of 1..n members on 127.0.0.1. Dropping it SIGKILLs every member,
/// waits for each to exit and removes their data dirs.
pub struct EtcdCluster {
    bin: PathBuf,
    token: String,
    setup: EtcdSetup,
    members: Vec<Member>,
}

/// Why a start or health wait failed; `port_clash` means a retry with new ports may succeed.
struct StartFailure {
    message: String,
    port_clash: bool,
}

impl EtcdCluster {
    /// A one-member cluster, healthy on return.
    pub fn single() -> EtcdCluster {
        Self::start(1)
    }

    /// A three-member cluster (static bootstrap), every member healthy on return.
    pub fn three() -> EtcdCluster {
        Self::start(3)
    }

    /// An `n`-member cluster, every member healthy on return. Retries with fresh ports when a
    /// port was taken between picking and binding; any other failure panics with the log tails.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, EtcdSetup::default())
    }

    /// A one-member cluster serving clients over TLS, healthy on return; endpoints are
    /// `https://127.0.0.1:PORT`.
    pub fn single_tls(tls: &EtcdTls) -> EtcdCluster {
        Self::start_with(
            1,
            EtcdSetup {
                tls: Some(tls.clone()),
                ..EtcdSetup::default()
            },
        )
    }

    /// Like `start`, with the given setup (e.g. TLS).
    pub fn start_with(n: usize, setup: EtcdSetup) -> EtcdCluster {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        setup.check_files();
        let bin = etcd_bin();
        for attempt in 1..=START_ATTEMPTS {
            let cluster = Self::launch(bin.clone(), n, setup.clone());
            let all: Vec<usize> = (0..n).collect();
            match cluster.wait_members(&all, STARTUP_TIMEOUT) {
                Ok(()) => return cluster,
                Err(failure) if failure.port_clash && attempt < START_ATTEMPTS => {
                    eprintln!(
                        "etcd harness: port clash on attempt {attempt}, retrying with new ports"
                    );
                }
                Err(failure) => panic!("etcd cluster of {n} failed to start:\n{}", failure.message),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Client URLs (`http://127.0.0.1:PORT`, or `https://` with TLS) of all members, in
    /// member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url(self.setup.tls.is_some())
    }

    /// The TLS settings the cluster was started with, if any.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.setup.tls.as_ref()
    }

    /// Number of members, whatever their state.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The member's process id, or `None` while it is stopped or killed.
    pub fn member_pid(&self, i: usize) -> Option<u32> {
        self.members[i].lock_child().as_ref().map(Child::id)
    }

    /// The member's data directory (removed when the cluster is dropped).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir()
    }

    fn launch(bin: PathBuf, n: usize, setup: EtcdSetup) -> EtcdCluster {
        let ports = reserve_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: tempfile::Builder::new()
                    .prefix("lockkeeper-etcd-")
                    .tempdir()
                    .expect("create etcd member dir"),
                child: Mutex::new(None),
                paused: false,
            })
            .collect();
        // A unique token keeps members of different clusters from ever joining each other.
        let token = crate::unique_name("lockkeeper-test");
        let cluster = EtcdCluster {
            bin,
            token,
            setup,
            members,
        };
        for i in 0..n {
            let child = cluster.spawn(i, "new");
            *cluster.members[i].lock_child() = Some(child);
        }
        cluster
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let taken = member.lock_child().take();
            if let Some(mut child) = taken {
                if member.paused {
                    let _ = send_signal(child.id(), Signal::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The TempDirs are dropped (removed) after this, with the members.
    }
}
