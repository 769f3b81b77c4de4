//! Timestamps for audit entries without a system call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use security::audit::Timestamp;

/// Wall-clock time from the CPU's time-stamp counter, anchored to the system clock.
///
/// Reading the system clock costs a `clock_gettime` per entry; the counter costs one instruction.
/// The anchor is renewed every second, so the stamps follow the system clock (and its NTP
/// corrections) to within the counter's drift over a second.
pub(super) struct WallClock {
    clock: quanta::Clock,
    anchor_ticks: u64,
    anchor_nanos: i64,
}

const REANCHOR_AFTER: Duration = Duration::from_secs(1);

impl WallClock {
    pub(super) fn new() -> Self {
        let clock = quanta::Clock::new();
        let (anchor_ticks, anchor_nanos) = anchor(&clock);
        WallClock { clock, anchor_ticks, anchor_nanos }
    }

    pub(super) fn now(&mut self) -> Timestamp {
        let ticks = self.clock.raw();
        let since = self.clock.delta(self.anchor_ticks, ticks);
        if since >= REANCHOR_AFTER {
            (self.anchor_ticks, self.anchor_nanos) = anchor(&self.clock);
            return Timestamp::from_unix_nanos(self.anchor_nanos);
        }
        Timestamp::from_unix_nanos(self.anchor_nanos.saturating_add(since.as_nanos() as i64))
    }
}

fn anchor(clock: &quanta::Clock) -> (u64, i64) {
    let ticks = clock.raw();
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (ticks, i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_system_clock_and_advance() {
        // The counter and the system clock are read a few nanoseconds apart and tick at slightly
        // different rates, so agreement is to within a tolerance, not exact.
        let tolerance = Duration::from_millis(1).as_nanos() as i64;
        let nanos = |t: Timestamp| t.to_datetime().timestamp_nanos_opt().unwrap();
        let mut clock = WallClock::new();
        let before = nanos(Timestamp::now());
        let stamp = nanos(clock.now());
        std::thread::sleep(Duration::from_millis(5));
        let later = nanos(clock.now());
        let after = nanos(Timestamp::now());
        assert!(stamp >= before - tolerance && later <= after + tolerance, "{before} {stamp} {later} {after}");
        assert!(later - stamp >= Duration::from_millis(5).as_nanos() as i64, "{stamp} {later}");
    }
}
