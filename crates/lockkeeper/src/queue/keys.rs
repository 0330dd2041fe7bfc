//! Where a lock's queue lives in etcd, key for key the same as etcd's own lock
//! (`concurrency.Mutex`): contender key `{prefix}{name}/{lease hex}`, and who is in it.

use etcd_client::KeyValue;

use crate::{Error, FencingToken, LeaseId, Result};

/// Default key prefix, the same one `etcdctl lock` users usually pick.
pub const DEFAULT_PREFIX: &str = "/locks/";

/// What is wrong with a lock name, if anything. A name is one path segment: etcd's layout
/// cannot tell lock `a`'s queue from lock `a/b`'s (a prefix range covers both), so a `/` is
/// refused and hierarchy goes in the prefix.
pub fn name_problem(name: &str) -> Option<String> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.contains('/') {
        "must not contain '/': lock a's key range would cover lock a/b's; put the hierarchy in \
         the prefix instead (prefix /locks/team/ and name job)"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return None;
    };
    Some(format!("{problem} (got {name:?})"))
}

/// What is wrong with a key prefix, if anything: it must end with `/` (or be empty) so that
/// `{prefix}{name}/` never runs into another name.
pub fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Some(format!(
            "must end with '/' (keys are {{prefix}}{{name}}/{{lease}}), or be empty (got {prefix:?})"
        ));
    }
    None
}

/// The key range all contenders of one lock share: `{prefix}{name}/`. Fails with
/// [`Error::InvalidArgument`] for a name or prefix that [`name_problem`] or
/// [`prefix_problem`] refuses.
pub fn lock_prefix(prefix: &str, name: &str) -> Result<String> {
    if let Some(p) = name_problem(name) {
        return Err(Error::InvalidArgument(format!("lock name {p}")));
    }
    if let Some(p) = prefix_problem(prefix) {
        return Err(Error::InvalidArgument(format!("lock prefix {p}")));
    }
    Ok(format!("{prefix}{name}/"))
}

/// The lock's release record: `{prefix}{name}.released`, holding the create_revision of the
/// key last released cleanly. It lies outside every queue range (`{prefix}{name}/` and any other
/// name's), and is never `{prefix}{name}` itself, the key python-etcd3's `Lock` uses.
pub fn release_record_key(prefix: &str, name: &str) -> Result<String> {
    lock_prefix(prefix, name).map(|p| record_key_of(&p))
}

pub(crate) fn record_key_of(lock_prefix: &str) -> String {
    format!("{}.released", lock_prefix.trim_end_matches('/'))
}

/// One contender's place in a lock's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contender {
    /// Lock name.
    pub name: String,
    /// The lock's key range (`{prefix}{name}/`).
    pub lock_prefix: String,
    /// Our key: `{prefix}{name}/{lease hex}`.
    pub key: String,
    /// The session lease the key is attached to.
    pub lease: LeaseId,
    /// The key's create_revision: our place in the queue, and the fencing token once we hold.
    pub revision: i64,
    /// The value written under the key.
    pub identity: String,
    /// Whether [`enqueue`](crate::queue::enqueue) found us first in line with our key the very
    /// next write after the last clean release: nobody can have vanished in between, so we hold
    /// at once, lock-delay or not.
    pub follows_clean_release: bool,
}

impl Contender {
    /// The fencing token this contender holds the lock with (its key's create_revision).
    pub fn token(&self) -> FencingToken {
        FencingToken(self.revision)
    }

    /// The lock's release record key (see [`release_record_key`]).
    pub fn record_key(&self) -> String {
        record_key_of(&self.lock_prefix)
    }
}

/// The current holder as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Holder's key.
    pub key: String,
    /// Holder's create_revision (its fencing token).
    pub revision: i64,
    /// Holder's identity (the key's value; empty for `etcdctl lock` holders).
    pub identity: String,
}

impl Owner {
    pub(crate) fn from_kv(kv: &KeyValue) -> Owner {
        Owner {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            identity: String::from_utf8_lossy(kv.value()).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_etcds_own_lock_layout() {
        assert_eq!(lock_prefix("/locks/", "db").unwrap(), "/locks/db/");
        // etcdctl lock /locks/db writes /locks/db/<lease hex>.
        assert_eq!(
            format!(
                "{}{}",
                lock_prefix("/locks/", "db").unwrap(),
                LeaseId(0x694d_7a3b_1c2e_0f10)
            ),
            "/locks/db/694d7a3b1c2e0f10"
        );
    }

    #[test]
    fn bad_lock_names_are_rejected() {
        for bad in ["", "db/", "a\nb", "team/job", "/db"] {
            assert!(
                matches!(lock_prefix("/locks/", bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let err = lock_prefix("/locks/", "team/job").unwrap_err().to_string();
        assert!(err.contains("prefix"), "{err}");
        assert!(matches!(
            lock_prefix("/locks", "db"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
