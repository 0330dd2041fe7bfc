//! The queue primitives, for callers that run their own acquisition loop (the lockkeeper
//! sidecar does): put a key in a lock's queue, wait for its turn, release it.
//!
//! [`acquire_lock`](crate::acquire_lock) and [`DistributedLock`](crate::DistributedLock) are
//! built from these. The keys are etcd's own lock layout: contender key
//! `{prefix}{name}/{lease hex}`, the lowest create_revision holds, and each waiter watches only
//! its predecessor. The types they use ([`Contender`](crate::Contender),
//! [`Owner`](crate::Owner), [`WaitEvent`](crate::WaitEvent), ...) live at the crate root.

mod history;
pub(crate) mod keys;
pub(crate) mod reads;
pub(crate) mod release;
pub(crate) mod turn;

pub use crate::acquire::wait_turn_while_trusted;
pub use reads::{enqueue, predecessor, queue_position, read_key};
pub use release::release;
pub use turn::{wait_turn, wait_turn_observed};

pub(crate) use reads::bounded;
