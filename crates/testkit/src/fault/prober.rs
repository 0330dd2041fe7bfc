//! An external prober: every sidecar's `/readyz` polled from outside, stamped on the raw clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::history::raw_now;
use crate::http_get;

/// One poll of one sidecar's `/readyz`: the answer was computed somewhere in `[send, recv]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub send: u64,
    pub recv: u64,
    /// `Some(true)` for 200, `Some(false)` for another status, `None` for no answer.
    pub ready: Option<bool>,
}

/// Polls every sidecar's `/readyz` in sweeps ~10 ms apart on a background thread.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    samples: Arc<Mutex<BTreeMap<String, Vec<Probe>>>>,
}

impl Prober {
    /// Starts polling `(identity, "127.0.0.1:PORT")` pairs.
    pub fn start(targets: Vec<(String, String)>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<BTreeMap<String, Vec<Probe>>>> = Arc::new(Mutex::new(
            targets
                .iter()
                .map(|(id, _)| (id.clone(), Vec::new()))
                .collect(),
        ));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    let sweep = raw_now();
                    for (id, addr) in &targets {
                        let send = raw_now();
                        let ready = http_get(addr, "/readyz", Duration::from_millis(250))
                            .ok()
                            .map(|r| r.status == 200);
                        let recv = raw_now();
                        let mut s = sa.lock().unwrap();
                        s.get_mut(id).unwrap().push(Probe { send, recv, ready });
                    }
                    let spent = Duration::from_nanos(raw_now() - sweep);
                    std::thread::sleep(Duration::from_millis(10).saturating_sub(spent));
                }
            })
            .expect("spawn prober");
        Prober {
            stop,
            thread: Some(thread),
            samples,
        }
    }

    /// Stops polling and returns every sample per identity.
    pub fn finish(mut self) -> BTreeMap<String, Vec<Probe>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
