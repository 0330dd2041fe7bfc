//! The protected resource: a fenced store, and the model application beside each sidecar that
//! writes to it with the fencing token the sidecar shows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http_get;

/// Counters of the fenced store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub accepted: u64,
    pub rejected: u64,
    /// Which writers had writes accepted under each token.
    pub writers: BTreeMap<i64, BTreeSet<String>>,
    /// Highest token seen.
    pub max_token: i64,
}

/// A resource that accepts a write only if its fencing token is at least the highest it has
/// seen (Jepsen's lock-set idea): a stale holder's writes bounce.
#[derive(Clone, Default)]
pub struct FencedStore {
    inner: Arc<Mutex<StoreStats>>,
}

impl FencedStore {
    /// Tries a write by `writer` under `token`; true if accepted.
    pub fn write(&self, writer: &str, token: i64) -> bool {
        let mut s = self.inner.lock().unwrap();
        if token < s.max_token {
            s.rejected += 1;
            return false;
        }
        s.max_token = token;
        s.accepted += 1;
        s.writers
            .entry(token)
            .or_default()
            .insert(writer.to_owned());
        true
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.lock().unwrap().clone()
    }
}

/// The model application beside each sidecar: every ~20 ms it reads `/status` and, while it
/// says `held`, writes to the store with the fencing token it shows.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(targets: Vec<(String, String)>, store: FencedStore) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = targets
            .into_iter()
            .map(|(id, addr)| {
                let (st, store) = (stop.clone(), store.clone());
                std::thread::Builder::new()
                    .name(format!("writer-{id}"))
                    .spawn(move || {
                        while !st.load(Ordering::SeqCst) {
                            if let Ok(r) = http_get(&addr, "/status", Duration::from_millis(250)) {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                                    if let (Some(true), Some(t)) =
                                        (v["held"].as_bool(), v["fencing_token"].as_i64())
                                    {
                                        store.write(&id, t);
                                    }
                                }
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                    .expect("spawn writer")
            })
            .collect();
        Writers { stop, threads }
    }

    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
