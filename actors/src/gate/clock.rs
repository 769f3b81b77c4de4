//! The gate's one clock: it times each stretch of work, stamps audit entries and refills budgets,
//! without a system call. Tests give it a [`GateClock::manual`] clock that moves only when told.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use security::audit::Timestamp;

/// A reading of the CPU's time-stamp counter (or, where it is unusable, the monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Ticks(u64);

/// The time a gate runs on: the CPU's time-stamp counter (read by quanta), or a manual clock.
///
/// ```
/// use std::time::Duration;
/// use actors::gate::GateClock;
///
/// let (clock, time) = GateClock::manual();
/// time.advance(Duration::from_millis(60));
/// # let _ = clock;
/// ```
#[derive(Clone)]
pub struct GateClock {
    clock: quanta::Clock,
    /// Set for a manual clock: its wall-clock time is its start plus what it was advanced, never
    /// the system clock's.
    manual: bool,
}

/// Moves a [`GateClock::manual`] clock, and every gate built with it, forward.
#[derive(Clone)]
pub struct ManualTime(Arc<quanta::Mock>);

impl ManualTime {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.increment(by);
    }
}

impl GateClock {
    /// The time-stamp counter, anchored to the system clock.
    pub fn system() -> Self {
        GateClock { clock: quanta::Clock::new(), manual: false }
    }

    /// A clock that stands still until its [`ManualTime`] advances it.
    pub fn manual() -> (Self, ManualTime) {
        let (clock, mock) = quanta::Clock::mock();
        (GateClock { clock, manual: true }, ManualTime(mock))
    }
}

impl Default for GateClock {
    fn default() -> Self {
        GateClock::system()
    }
}

/// Monotonic time from a [`GateClock`], and wall-clock time anchored to the system clock.
///
/// Reading the system clock costs a `clock_gettime` per entry; the counter costs one instruction,
/// and the reading at the end of a run both times the run and stamps its audit entry. The anchor is
/// renewed every second, so the stamps follow the system clock (and its NTP corrections) to
/// within the counter's drift over a second.
pub(super) struct WallClock {
    clock: quanta::Clock,
    manual: bool,
    anchor_ticks: u64,
    anchor_nanos: i64,
    /// A monotonic instant at `anchor_ticks`, for the budget's refills.
    anchor_instant: Instant,
}

const REANCHOR_AFTER: Duration = Duration::from_secs(1);

impl WallClock {
    pub(super) fn new(clock: GateClock) -> Self {
        let GateClock { clock, manual } = clock;
        let (anchor_ticks, anchor_nanos) = anchor(&clock);
        WallClock { clock, manual, anchor_ticks, anchor_nanos, anchor_instant: Instant::now() }
    }

    /// A monotonic instant now, as the budget's refills count time.
    pub(super) fn instant(&self) -> Instant {
        self.anchor_instant + self.clock.delta(self.anchor_ticks, self.clock.raw())
    }

    /// The counter now.
    pub(super) fn ticks(&self) -> Ticks {
        Ticks(self.clock.raw())
    }

    /// The time from `start` to `end` (zero if `end` is earlier).
    pub(super) fn between(&self, start: Ticks, end: Ticks) -> Duration {
        self.clock.delta(start.0, end.0)
    }

    /// The wall-clock time at `at`, a recent reading of [`ticks`](Self::ticks).
    pub(super) fn stamp(&mut self, at: Ticks) -> Timestamp {
        if !self.manual && self.clock.delta(self.anchor_ticks, at.0) >= REANCHOR_AFTER {
            let (ticks, nanos) = anchor(&self.clock);
            self.anchor_instant += self.clock.delta(self.anchor_ticks, ticks);
            (self.anchor_ticks, self.anchor_nanos) = (ticks, nanos);
        }
        // `at` may precede a fresh anchor by a few nanoseconds; one of the two deltas is zero.
        let after = i64::try_from(self.clock.delta_as_nanos(self.anchor_ticks, at.0)).unwrap_or(i64::MAX);
        let before = i64::try_from(self.clock.delta_as_nanos(at.0, self.anchor_ticks)).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(self.anchor_nanos.saturating_add(after).saturating_sub(before))
    }

    /// The wall-clock time now.
    pub(super) fn now(&mut self) -> Timestamp {
        let at = self.ticks();
        self.stamp(at)
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

    fn nanos_of(t: Timestamp) -> i64 {
        t.to_datetime().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn stamps_follow_the_system_clock_and_advance() {
        // The counter and the system clock are read a few nanoseconds apart and tick at slightly
        // different rates, so agreement is to within a tolerance, not exact.
        let tolerance = Duration::from_millis(1).as_nanos() as i64;
        let mut clock = WallClock::new(GateClock::system());
        let before = nanos_of(Timestamp::now());
        let stamp = nanos_of(clock.now());
        std::thread::sleep(Duration::from_millis(5));
        let later = nanos_of(clock.now());
        let after = nanos_of(Timestamp::now());
        assert!(stamp >= before - tolerance && later <= after + tolerance, "{before} {stamp} {later} {after}");
        assert!(later - stamp >= Duration::from_millis(5).as_nanos() as i64, "{stamp} {later}");
    }

    #[test]
    fn a_stamp_is_the_time_of_its_reading_even_across_a_new_anchor() {
        let mut clock = WallClock::new(GateClock::system());
        let start = clock.ticks();
        std::thread::sleep(Duration::from_millis(20));
        let end = clock.ticks();
        assert!(clock.between(start, end) >= Duration::from_millis(20));
        assert_eq!(clock.between(end, start), Duration::ZERO);

        // Stamping `start` after the anchor has been renewed (forced here by backdating it) still
        // gives `start`'s time, 20 ms before `end`'s.
        clock.anchor_ticks = clock.anchor_ticks.saturating_sub(u64::MAX / 4);
        let end_stamp = nanos_of(clock.stamp(end));
        let start_stamp = nanos_of(clock.stamp(start));
        let gap = end_stamp - start_stamp;
        assert!((19_000_000..1_000_000_000).contains(&gap), "{gap} ns between the stamps");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (gate_clock, time) = GateClock::manual();
        let mut clock = WallClock::new(gate_clock);
        let (start, stamp, instant) = (clock.ticks(), nanos_of(clock.now()), clock.instant());
        assert_eq!(clock.between(start, clock.ticks()), Duration::ZERO);
        time.advance(Duration::from_secs(5));
        let end = clock.ticks();
        assert_eq!(clock.between(start, end), Duration::from_secs(5));
        assert_eq!(nanos_of(clock.stamp(end)) - stamp, 5_000_000_000, "no new anchor from the system clock");
        assert_eq!(clock.instant() - instant, Duration::from_secs(5));
    }
}
