//! The clock the safety deadline lives on: one that keeps counting while the machine is
//! suspended (`CLOCK_BOOTTIME`).
//!
//! tokio's [`Instant`] follows `CLOCK_MONOTONIC`, which stops during a suspend (a laptop lid, a
//! paused VM). etcd's clock does not stop, so a deadline on the monotonic clock would still look
//! in the future after resuming while the lease has long expired. Deadlines are therefore taken
//! from [`now`], the boot-time clock expressed as a tokio `Instant` (so the rest of the code
//! keeps one type), and waited for with [`sleep_until`], which sleeps in short slices and
//! re-reads the boot-time clock after each. Without a suspend the two clocks agree.
//!
//! The clock is read through libc's `clock_gettime` (the `boot-time` crate), so tools that fake
//! time for a process (`faketime`) fake it the same way as the monotonic clock.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Longest single sleep in [`sleep_until`]: how late a deadline can be noticed after a resume.
const SLICE: Duration = Duration::from_millis(250);

struct Origin {
    mono: Instant,
    boot: boot_time::Instant,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

/// Now, on the boot-time clock, as a tokio `Instant` (the monotonic clock where the system has
/// no boot-time clock).
pub fn now() -> Instant {
    let origin = ORIGIN.get_or_init(|| Origin {
        mono: Instant::now(),
        boot: boot_time::Instant::now(),
    });
    let boot = boot_time::Instant::now().saturating_duration_since(origin.boot);
    on_boot_clock(origin.mono, Duration::ZERO, boot)
}

/// `boot` mapped onto the `Instant` timeline that read `mono` when the boot clock read
/// `boot_origin`.
fn on_boot_clock(mono: Instant, boot_origin: Duration, boot: Duration) -> Instant {
    mono + boot.saturating_sub(boot_origin)
}

/// Sleeps until [`now`] reaches `deadline`: in slices of at most 250 ms, so a suspend during
/// the sleep makes it end at most one slice after the resume, not one suspend later.
pub async fn sleep_until(deadline: Instant) {
    loop {
        let now = now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep((deadline - now).min(SLICE)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spent_suspended_moves_the_boot_clock_not_the_monotonic_one() {
        let mono = Instant::now();
        let boot = Duration::from_secs(1000);
        // 3 s later by both clocks: no suspend, both agree.
        assert_eq!(
            on_boot_clock(mono, boot, boot + Duration::from_secs(3)),
            mono + Duration::from_secs(3)
        );
        // A deadline 5 s ahead, then a 60 s suspend of which the monotonic clock saw nothing:
        // the boot clock is past the deadline.
        let deadline = on_boot_clock(mono, boot, boot) + Duration::from_secs(5);
        let after_resume = on_boot_clock(mono, boot, boot + Duration::from_secs(60));
        assert!(after_resume > deadline);
        assert!(
            Instant::now() < deadline,
            "the monotonic clock alone still trusts it"
        );
    }

    #[test]
    fn now_never_runs_behind_the_monotonic_clock_by_more_than_jitter() {
        let before = Instant::now();
        let n = now();
        let after = Instant::now();
        assert!(
            n + Duration::from_millis(5) >= before,
            "{n:?} vs {before:?}"
        );
        assert!(n <= after + Duration::from_millis(5));
        let a = now();
        let b = now();
        assert!(b >= a, "monotonic");
    }

    #[tokio::test]
    async fn sleep_until_returns_at_the_deadline() {
        let start = now();
        sleep_until(start + Duration::from_millis(600)).await;
        let slept = now() - start;
        assert!(slept >= Duration::from_millis(600), "{slept:?}");
        assert!(slept < Duration::from_secs(5), "{slept:?}");
    }
}
