//! What the harness asks of a running cluster: is a member healthy, who leads, did a member
//! crash, and the log tails that explain a failure.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use super::member::Member;
use super::setup::etcdctl_probe_timeouts;
use super::{EtcdCluster, StartFailure, POLL_INTERVAL, PROBE_TIMEOUT};
use crate::exec::tail_lines;
use crate::http::{http_get, http_request};

impl EtcdCluster {
    /// Index of the current leader, as claimed by a running, unpaused member (the highest raft
    /// term wins if a stale leader has not yet heard of its successor). `None` during elections.
    pub fn leader_index(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in self.live_members() {
            let Some(body) = self.member_status(i) else {
                continue;
            };
            let fields = (
                json_u64(&body, "member_id"),
                json_u64(&body, "leader"),
                json_u64(&body, "raftTerm"),
            );
            if let (Some(id), Some(leader), Some(term)) = fields {
                if id == leader && best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// If member `i` exited without being told to: its exit status and the message of the last
    /// `panic` or `fatal` line of its log.
    pub fn member_crash(&self, i: usize) -> Option<String> {
        let status = self.members[i].exit_status()?;
        let log = fs::read_to_string(self.members[i].log_path()).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains("\"level\":\"panic\"") || l.contains("\"level\":\"fatal\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                format!(
                    "{}: {}",
                    v["msg"].as_str().unwrap_or("?"),
                    v["error"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        Some(format!("{status}; {last}"))
    }

    /// Polls `leader_index` until some member other than those in `except` leads; panics after
    /// `timeout`.
    pub fn wait_leader(&self, except: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader_index() {
                Some(i) if !except.contains(&i) => return i,
                _ if Instant::now() >= deadline => {
                    panic!(
                        "no etcd leader outside {except:?} after {timeout:?}:\n{}",
                        self.all_log_tails()
                    )
                }
                _ => thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Waits until every running, unpaused member answers `/health` with `"health":"true"`;
    /// panics (with log tails) if one exits or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) {
        let live: Vec<usize> = self.live_members().collect();
        if let Err(failure) = self.wait_members(&live, timeout) {
            panic!("etcd cluster not healthy:\n{}", failure.message);
        }
    }

    /// Running members that are not paused: the ones that can answer.
    pub(super) fn live_members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len())
            .filter(|&i| !self.members[i].paused && self.members[i].lock_child().is_some())
    }

    pub(super) fn wait_members(
        &self,
        which: &[usize],
        timeout: Duration,
    ) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let mut pending = which.to_vec();
        loop {
            for &i in &pending {
                if let Some(status) = self.members[i].exit_status() {
                    let tail = self.members[i].log_tail();
                    return Err(StartFailure {
                        port_clash: tail.contains("address already in use"),
                        message: format!("member {i} exited early ({status}):\n{tail}"),
                    });
                }
            }
            pending.retain(|&i| !self.member_healthy(i));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = pending
                    .iter()
                    .map(|&i| self.members[i].log_tail())
                    .collect();
                return Err(StartFailure {
                    port_clash: false,
                    message: format!(
                        "members {pending:?} not healthy after {timeout:?}:\n{}",
                        tails.join("\n")
                    ),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether member `i` answers a health check: `/health` over plain HTTP, or (with TLS,
    /// where that needs a client certificate) `etcdctl endpoint health` once the port accepts
    /// connections.
    fn member_healthy(&self, i: usize) -> bool {
        let member = &self.members[i];
        if self.setup.tls.is_none() {
            return match http_get(&member.client_addr(), "/health", PROBE_TIMEOUT) {
                Ok(resp) => resp.status == 200 && resp.body.contains(r#""health":"true""#),
                Err(_) => false,
            };
        }
        if !member.port_open() {
            return false;
        }
        let mut cmd = self.etcdctl_member(i);
        cmd.args(etcdctl_probe_timeouts())
            .args(["endpoint", "health"])
            .stdin(Stdio::null());
        cmd.output().is_ok_and(|out| out.status.success())
    }

    /// The status JSON of member `i` (`member_id`, `leader`, `raftTerm`...), or `None` if it
    /// does not answer within the probe timeout.
    fn member_status(&self, i: usize) -> Option<String> {
        let member = &self.members[i];
        if self.setup.tls.is_none() {
            let resp = http_request(
                &member.client_addr(),
                "POST",
                "/v3/maintenance/status",
                "{}",
                PROBE_TIMEOUT,
            )
            .ok()?;
            return (resp.status == 200).then_some(resp.body);
        }
        if !member.port_open() {
            return None;
        }
        let mut cmd = self.etcdctl_member(i);
        cmd.args(etcdctl_probe_timeouts())
            .args(["endpoint", "status", "--write-out=json"])
            .stdin(Stdio::null());
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(super) fn all_log_tails(&self) -> String {
        let tails: Vec<String> = self.members.iter().map(Member::log_tail).collect();
        tails.join("\n")
    }
}

/// The unsigned integer after `"key":` in a JSON text (the gRPC gateway quotes 64-bit values).
fn json_u64(json: &str, key: &str) -> Option<u64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[start..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), lines) + "\n",
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}
