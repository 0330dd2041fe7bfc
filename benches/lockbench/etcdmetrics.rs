//! etcd's own view of the traffic: counters scraped from every member's `/metrics` before and
//! after a phase, summed over the members. A few gauges (watch streams, watchers, memory) come
//! along: those are levels, not counts, so a difference keeps the later reading.

use std::collections::BTreeMap;
use std::ops::Sub;

use crate::http;

/// Counters summed over all members.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Unary gRPC requests handled (Range, Txn, Put, DeleteRange, LeaseGrant, LeaseRevoke, ...).
    pub unary: f64,
    /// Unary requests by method.
    pub unary_by_method: BTreeMap<String, f64>,
    /// Messages received on Watch streams (watch create + cancel requests).
    pub watch_requests: f64,
    /// Messages received on LeaseKeepAlive streams (one per keepalive).
    pub keepalives: f64,
    /// Watch events sent to clients (`etcd_debugging_mvcc_events_total`).
    pub watch_events: f64,
    /// Client gRPC bytes sent + received.
    pub bytes: f64,
    /// CPU seconds the members used (`process_cpu_seconds_total`).
    pub cpu_seconds: f64,
    /// Gauge: open watch streams (`etcd_debugging_mvcc_watch_stream_total`).
    pub watch_streams: f64,
    /// Gauge: registered watchers (`etcd_debugging_mvcc_watcher_total`).
    pub watchers: f64,
    /// Gauge: resident memory of the members, bytes (`process_resident_memory_bytes`).
    pub resident_bytes: f64,
}

impl Sub for &Traffic {
    type Output = Traffic;
    fn sub(self, before: &Traffic) -> Traffic {
        let mut by = self.unary_by_method.clone();
        for (k, v) in by.iter_mut() {
            *v -= before.unary_by_method.get(k).copied().unwrap_or(0.0);
        }
        by.retain(|_, v| *v > 0.0);
        Traffic {
            unary: self.unary - before.unary,
            unary_by_method: by,
            watch_requests: self.watch_requests - before.watch_requests,
            keepalives: self.keepalives - before.keepalives,
            watch_events: self.watch_events - before.watch_events,
            bytes: self.bytes - before.bytes,
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            watch_streams: self.watch_streams,
            watchers: self.watchers,
            resident_bytes: self.resident_bytes,
        }
    }
}

impl Traffic {
    /// Every count (and gauge) divided by `n`.
    pub fn per(&self, n: f64) -> Traffic {
        Traffic {
            unary: self.unary / n,
            unary_by_method: self
                .unary_by_method
                .iter()
                .map(|(k, v)| (k.clone(), v / n))
                .collect(),
            watch_requests: self.watch_requests / n,
            keepalives: self.keepalives / n,
            watch_events: self.watch_events / n,
            bytes: self.bytes / n,
            cpu_seconds: self.cpu_seconds / n,
            watch_streams: self.watch_streams / n,
            watchers: self.watchers / n,
            resident_bytes: self.resident_bytes / n,
        }
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=\"");
    let start = labels.find(&pat)? + pat.len();
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Adds one member's exposition to `t`; returns whether that member is the leader.
fn parse_into(t: &mut Traffic, text: &str) -> bool {
    let mut leader = false;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l),
            None => (head, ""),
        };
        match name {
            "grpc_server_handled_total" if label(labels, "grpc_type") == Some("unary") => {
                t.unary += v;
                let m = label(labels, "grpc_method").unwrap_or("?").to_owned();
                *t.unary_by_method.entry(m).or_default() += v;
            }
            "grpc_server_msg_received_total" => match label(labels, "grpc_method") {
                Some("Watch") => t.watch_requests += v,
                Some("LeaseKeepAlive") => t.keepalives += v,
                _ => {}
            },
            "etcd_debugging_mvcc_events_total" => t.watch_events += v,
            "etcd_network_client_grpc_sent_bytes_total"
            | "etcd_network_client_grpc_received_bytes_total" => t.bytes += v,
            "process_cpu_seconds_total" => t.cpu_seconds += v,
            "etcd_debugging_mvcc_watch_stream_total" => t.watch_streams += v,
            "etcd_debugging_mvcc_watcher_total" => t.watchers += v,
            "process_resident_memory_bytes" => t.resident_bytes += v,
            "etcd_server_is_leader" => leader = v > 0.5,
            _ => {}
        }
    }
    leader
}

/// Scrapes every member; returns the summed counters and the index of the leader.
pub async fn scrape(endpoints: &[String]) -> Result<(Traffic, Option<usize>), http::BoxError> {
    let mut t = Traffic::default();
    let mut leader = None;
    for (i, ep) in endpoints.iter().enumerate() {
        let (code, body) = http::get(&http::authority(ep), "/metrics").await?;
        if code != 200 {
            return Err(format!("{ep}/metrics answered {code}").into());
        }
        if parse_into(&mut t, &body) {
            leader = Some(i);
        }
    }
    Ok((t, leader))
}
