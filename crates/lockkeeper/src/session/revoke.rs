//! Ending a lease: [`Session::revoke`] and [`safe_revoke`].

use super::{LeaseLoss, Session};
use crate::etcd::Etcd;
use crate::{Error, LeaseId, Result};

impl Session {
    /// Marks the lease lost locally (first), stops renewal, then revokes it on the server if
    /// this session granted it. A lease that is already gone is not an error.
    pub async fn revoke(self) -> Result<RevokeOutcome> {
        self.mark_lost(LeaseLoss::Revoked);
        self.task.abort();
        if !self.owned {
            return Ok(RevokeOutcome::NotOurs);
        }
        safe_revoke(&self.etcd, self.lease).await
    }
}

/// What [`safe_revoke`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The lease existed and is now revoked (its keys are deleted).
    Revoked,
    /// The lease had already expired or been revoked.
    AlreadyGone,
    /// The session follows someone else's lease, which it leaves alone.
    NotOurs,
}

/// Revokes a lease; a lease that already expired or was revoked is not an error.
pub async fn safe_revoke(etcd: &Etcd, lease: LeaseId) -> Result<RevokeOutcome> {
    let id = lease.0;
    match etcd
        .call(
            "lease_revoke",
            |mut c| async move { c.lease_revoke(id).await },
        )
        .await
    {
        Ok(_) => Ok(RevokeOutcome::Revoked),
        Err(Error::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.message().contains("lease not found") => Ok(RevokeOutcome::AlreadyGone),
        Err(e) => Err(e),
    }
}
