//! A watch on the lock prefix: the key creations (with their revisions, the fencing tokens) and
//! deletions etcd reports, whatever happens to the members.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::history::raw_now;

/// A key created under the lock prefix, as a watch saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub key: String,
    pub create_revision: i64,
    pub value: String,
}

/// A key deleted under the lock prefix, as a watch saw it: `seen` (raw ns, when the event
/// arrived) is no earlier than the deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub key: String,
    pub revision: i64,
    pub seen: u64,
}

/// Watches the lock prefix from revision 1 on a background thread, surviving member deaths by
/// re-watching from the last revision seen (so compact only up to [`Watcher::safe_revision`]).
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    creations: Arc<Mutex<Vec<Creation>>>,
    deletions: Arc<Mutex<Vec<Deletion>>>,
    last_revision: Arc<AtomicI64>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    pub fn start(endpoints: Vec<String>, prefix: String) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let creations = Arc::new(Mutex::new(Vec::new()));
        let deletions = Arc::new(Mutex::new(Vec::new()));
        let last_revision = Arc::new(AtomicI64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (st, cr, de, lr, er) = (
            stop.clone(),
            creations.clone(),
            deletions.clone(),
            last_revision.clone(),
            errors.clone(),
        );
        let thread = super::spawn_async(
            "prefix-watch",
            watch_loop(endpoints, prefix, st, cr, de, lr, er),
        );
        Watcher {
            stop,
            thread: Some(thread),
            creations,
            deletions,
            last_revision,
            errors,
        }
    }

    /// The highest revision the watch has delivered; compacting up to it loses nothing.
    pub fn safe_revision(&self) -> i64 {
        self.last_revision.load(Ordering::SeqCst)
    }

    /// The progress counter itself, for threads that compact.
    pub fn progress(&self) -> Arc<AtomicI64> {
        self.last_revision.clone()
    }

    /// Waits until the watch has delivered `revision` (or `limit` passes); true if it has.
    pub fn caught_up(&self, revision: i64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.safe_revision() < revision {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The deletions seen so far (the first arrival of each).
    pub fn deletions(&self) -> Vec<Deletion> {
        self.deletions.lock().unwrap().clone()
    }

    /// Stops watching; returns the creations seen and any unrecoverable errors (a compacted
    /// start revision would be one: events were lost).
    pub fn finish(mut self) -> (Vec<Creation>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            std::mem::take(&mut *self.creations.lock().unwrap()),
            std::mem::take(&mut *self.errors.lock().unwrap()),
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn watch_loop(
    endpoints: Vec<String>,
    prefix: String,
    stop: Arc<AtomicBool>,
    creations: Arc<Mutex<Vec<Creation>>>,
    deletions: Arc<Mutex<Vec<Deletion>>>,
    last_revision: Arc<AtomicI64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
    let mut next = 1i64;
    while !stop.load(Ordering::SeqCst) {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
        let connected = tokio::time::timeout(
            Duration::from_secs(3),
            Client::connect(&endpoints, Some(opts)),
        )
        .await;
        let Ok(Ok(mut client)) = connected else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(3),
            client.watch(prefix.clone(), Some(options)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // A member death can leave the stream silent rather than broken: re-watch every few
        // seconds without news (from the last revision seen, so nothing is lost).
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let msg = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
            let resp = match msg {
                Ok(Ok(Some(r))) => r,
                _ => break,
            };
            if resp.compact_revision() > 0 {
                errors.lock().unwrap().push(format!(
                    "watch from revision {next} was compacted (compact revision {})",
                    resp.compact_revision()
                ));
                next = resp.compact_revision();
                break;
            }
            if resp.canceled() {
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                if ev.event_type() == EventType::Put && kv.create_revision() == kv.mod_revision() {
                    creations.lock().unwrap().push(Creation {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        create_revision: kv.create_revision(),
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                    });
                }
                if ev.event_type() == EventType::Delete {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let mut d = deletions.lock().unwrap();
                    let revision = kv.mod_revision();
                    if !d.iter().any(|x| x.key == key && x.revision == revision) {
                        d.push(Deletion {
                            key,
                            revision,
                            seen: raw_now(),
                        });
                    }
                }
                next = next.max(kv.mod_revision() + 1);
            }
            if let Some(seen) = resp
                .events()
                .iter()
                .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                .max()
            {
                last_revision.fetch_max(seen, Ordering::SeqCst);
            }
        }
    }
}
