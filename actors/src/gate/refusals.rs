//! How many refusals of one principal an actor writes to the audit log. Refusals are not charged,
//! so a flood of them costs its sender nothing; unbounded, it would cost the log without limit.
//! Past [`Limits::max_refusals_per_second`](super::Limits) refusals of one principal in a second,
//! the rest of that second's are counted instead of written, and one entry, written when the
//! principal's next second begins (or when the actor stops), says how many were left out.

use std::time::Duration;

use rustc_hash::FxHashMap;
use security::audit::compact_str::CompactString;

use super::clock::{Ticks, WallClock};

const WINDOW: Duration = Duration::from_secs(1);

/// Principals followed at once; past it, windows that have ended are dropped first.
const MAX_FOLLOWED: usize = 4096;

/// One principal's current second.
struct Window {
    started: Ticks,
    written: u32,
    left_out: Left,
}

/// Refusals left out of the log, and the energy measured for them (so that the entry that says so
/// keeps the log's energy whole).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Left {
    pub(super) count: u64,
    pub(super) measured_j: f64,
}

/// What to do with a refusal.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Write it; first say what of this principal's last window was not written.
    Write { left_out: Left },
    /// Count it, and do not write it.
    LeaveOut,
}

pub(super) struct RefusalLimiter {
    per_window: u32,
    windows: FxHashMap<CompactString, Window>,
}

impl RefusalLimiter {
    pub(super) fn new(per_window: u32) -> Self {
        RefusalLimiter { per_window, windows: FxHashMap::default() }
    }

    /// A refusal of `principal` at `now`, for which `measured_j` was measured.
    pub(super) fn note(&mut self, principal: &str, now: Ticks, measured_j: f64, clock: &WallClock) -> Verdict {
        if !self.windows.contains_key(principal) && self.windows.len() >= MAX_FOLLOWED {
            // Ended windows that left nothing out can go; one that did keeps its count.
            self.windows.retain(|_, w| w.left_out.count > 0 || clock.between(w.started, now) < WINDOW);
        }
        if !self.windows.contains_key(principal) {
            if self.windows.len() >= MAX_FOLLOWED {
                return Verdict::Write { left_out: Left::default() };
            }
            self.windows.insert(CompactString::from(principal), Window { started: now, written: 0, left_out: Left::default() });
        }
        let window = self.windows.get_mut(principal).expect("present or just inserted");
        let mut left_out = Left::default();
        if clock.between(window.started, now) >= WINDOW {
            left_out = std::mem::take(&mut window.left_out);
            *window = Window { started: now, written: 0, left_out: Left::default() };
        }
        if window.written < self.per_window {
            window.written += 1;
            Verdict::Write { left_out }
        } else {
            window.left_out.count += 1;
            window.left_out.measured_j += measured_j;
            Verdict::LeaveOut
        }
    }

    /// The principals whose refusals were left out and not yet said so, and what: for when the
    /// actor stops.
    pub(super) fn unreported(&mut self) -> Vec<(CompactString, Left)> {
        self.windows.drain().filter(|(_, w)| w.left_out.count > 0).map(|(p, w)| (p, w.left_out)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GateClock;

    #[test]
    fn past_the_limit_refusals_are_counted_and_the_count_is_written_next_window() {
        let (gate_clock, time) = GateClock::manual();
        let clock = WallClock::new(gate_clock);
        let mut limiter = RefusalLimiter::new(3);
        let nothing = Verdict::Write { left_out: Left::default() };
        let verdicts: Vec<Verdict> = (0..5).map(|_| limiter.note("user:eve", clock.ticks(), 0.5, &clock)).collect();
        assert_eq!(verdicts[..3], [nothing, Verdict::Write { left_out: Left::default() }, Verdict::Write { left_out: Left::default() }]);
        assert_eq!(verdicts[3..], [Verdict::LeaveOut, Verdict::LeaveOut]);
        assert_eq!(limiter.note("user:bob", clock.ticks(), 0.5, &clock), Verdict::Write { left_out: Left::default() }, "per principal");
        time.advance(Duration::from_millis(999));
        assert_eq!(limiter.note("user:eve", clock.ticks(), 0.5, &clock), Verdict::LeaveOut);
        time.advance(Duration::from_millis(1));
        assert_eq!(limiter.note("user:eve", clock.ticks(), 0.5, &clock), Verdict::Write { left_out: Left { count: 3, measured_j: 1.5 } });
        for _ in 0..3 {
            limiter.note("user:eve", clock.ticks(), 0.5, &clock);
        }
        assert_eq!(limiter.unreported(), [(CompactString::from("user:eve"), Left { count: 1, measured_j: 0.5 })]);
    }

    #[test]
    fn it_follows_a_bounded_number_of_principals() {
        let (gate_clock, time) = GateClock::manual();
        let clock = WallClock::new(gate_clock);
        let mut limiter = RefusalLimiter::new(1);
        for i in 0..MAX_FOLLOWED + 10 {
            limiter.note(&format!("user:u{i}"), clock.ticks(), 0.0, &clock);
        }
        assert_eq!(limiter.windows.len(), MAX_FOLLOWED);
        time.advance(WINDOW);
        limiter.note("user:late", clock.ticks(), 0.0, &clock);
        assert_eq!(limiter.windows.len(), 1, "ended windows made room");
    }
}
