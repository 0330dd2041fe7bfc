//! The kinds of fault a scenario can inject, what each needs (fault proxies, three etcd
//! members), and what each promises (a quorum loss, a fault aimed at the holder alone).

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL the holder (restarted afterwards).
    KillHolder,
    /// SIGKILL a waiting sidecar (restarted afterwards).
    KillWaiter,
    /// SIGSTOP the holder for TTL + 1.5 s, then SIGCONT.
    StopHolder,
    /// SIGTERM the holder: it must exit 0 and hand over at once (restarted afterwards).
    TermHolder,
    /// 300 ms each way between the holder and etcd, for 4 s.
    Delay,
    /// 50 ms + uniform(0..400 ms) each way between the holder and etcd, for 4 s.
    Jitter,
    /// Nothing between the holder and etcd for TTL + 2 s (connections stay open).
    Blackhole,
    /// Every connection of the holder to etcd reset, and new ones too, for 3 s.
    Reset,
    /// etcd → holder bytes lost for TTL + 2 s (keepalives still arrive).
    LossDown,
    /// holder → etcd bytes lost for TTL + 2 s.
    LossUp,
    /// SIGKILL an etcd follower for 3 s, then restart it.
    KillFollower,
    /// SIGSTOP an etcd follower for 3 s.
    PauseFollower,
    /// SIGKILL the etcd leader for 3 s, then restart it.
    KillLeader,
    /// SIGSTOP the etcd leader for 4 s.
    PauseLeader,
    /// SIGKILL two of three etcd members for 4 s, then restart them.
    KillQuorum,
    /// SIGSTOP two of three etcd members for 4 s.
    PauseQuorum,
    /// 8 s of churn (SIGTERM holder / SIGKILL waiter, restarts) with `etcdctl compact` every
    /// 250 ms.
    CompactChurn,
    /// Cut the clock-skewed sidecar off from etcd (blackhole) for 2 × TTL + 1 s while it holds.
    SkewCutoff,
    /// A stale etcd leader: every sidecar's proxy to the leader blackholed (they reach etcd
    /// through the followers only), the leader SIGSTOPped for TTL + 1.5 s, resumed, then the
    /// proxies healed.
    StaleLeader,
    /// An early revocation made by hand: the holder's link to etcd delayed 300 ms each way, then
    /// its key deleted with `etcdctl del` (no release record), healed 2 s later.
    SyntheticRevoke,
}

impl Fault {
    pub const ALL: [Fault; 20] = [
        Fault::KillHolder,
        Fault::KillWaiter,
        Fault::StopHolder,
        Fault::TermHolder,
        Fault::Delay,
        Fault::Jitter,
        Fault::Blackhole,
        Fault::Reset,
        Fault::LossDown,
        Fault::LossUp,
        Fault::KillFollower,
        Fault::PauseFollower,
        Fault::KillLeader,
        Fault::PauseLeader,
        Fault::KillQuorum,
        Fault::PauseQuorum,
        Fault::CompactChurn,
        Fault::SkewCutoff,
        Fault::StaleLeader,
        Fault::SyntheticRevoke,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillHolder => "sidecar SIGKILL (holder)",
            Fault::KillWaiter => "sidecar SIGKILL (waiter)",
            Fault::StopHolder => "sidecar SIGSTOP > TTL (holder)",
            Fault::TermHolder => "sidecar SIGTERM (holder)",
            Fault::Delay => "proxy delay 300 ms",
            Fault::Jitter => "proxy jitter 50-450 ms",
            Fault::Blackhole => "proxy blackhole",
            Fault::Reset => "proxy connection resets",
            Fault::LossDown => "proxy one-way loss etcd→sidecar",
            Fault::LossUp => "proxy one-way loss sidecar→etcd",
            Fault::KillFollower => "etcd SIGKILL follower",
            Fault::PauseFollower => "etcd SIGSTOP follower",
            Fault::KillLeader => "etcd SIGKILL leader",
            Fault::PauseLeader => "etcd SIGSTOP leader",
            Fault::KillQuorum => "etcd SIGKILL quorum (2 of 3)",
            Fault::PauseQuorum => "etcd SIGSTOP quorum (2 of 3)",
            Fault::CompactChurn => "etcdctl compact during churn",
            Fault::SkewCutoff => "clock-skewed holder cut off",
            Fault::StaleLeader => "etcd stale leader (SIGSTOP, via followers)",
            Fault::SyntheticRevoke => "holder's key deleted, link delayed",
        }
    }

    /// Needs the sidecars behind fault proxies.
    pub fn needs_proxies(self) -> bool {
        matches!(
            self,
            Fault::Delay
                | Fault::Jitter
                | Fault::Blackhole
                | Fault::Reset
                | Fault::LossDown
                | Fault::LossUp
                | Fault::SkewCutoff
                | Fault::StaleLeader
                | Fault::SyntheticRevoke
        )
    }

    /// Needs a three-member cluster.
    pub fn needs_members(self) -> bool {
        matches!(
            self,
            Fault::KillFollower
                | Fault::PauseFollower
                | Fault::KillLeader
                | Fault::PauseLeader
                | Fault::KillQuorum
                | Fault::PauseQuorum
                | Fault::StaleLeader
        )
    }

    /// Takes a quorum of etcd members away (the liveness bound allows for the election).
    pub fn quorum(self) -> bool {
        matches!(self, Fault::KillQuorum | Fault::PauseQuorum)
    }

    /// Aimed at the holder alone: someone else must take over within the liveness bound.
    pub fn holder_only(self) -> bool {
        matches!(
            self,
            Fault::KillHolder
                | Fault::StopHolder
                | Fault::TermHolder
                | Fault::Blackhole
                | Fault::Reset
                | Fault::LossDown
                | Fault::LossUp
                | Fault::SkewCutoff
                | Fault::SyntheticRevoke
        )
    }
}
