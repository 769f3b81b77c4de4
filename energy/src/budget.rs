//! A joule budget: a token bucket of energy, and with a refill rate, a power cap.

use std::time::Instant;

use crate::{Joules, Watts};

/// An energy budget with a total, an amount used and an amount remaining.
///
/// Work is admitted in two steps so that concurrent work cannot overdraw it: [`reserve`] holds
/// the estimated cost, and [`settle`] releases the hold and charges the measured cost.
/// With a refill rate the budget is a token bucket: it regains `rate × elapsed` joules, up to its
/// total, which caps the average power of the work it admits. A cost found only after the fact
/// (a measured run that cost more than was left, a correction to the machine's counter) that the
/// budget cannot pay becomes a debt, which refills, credits and top-ups pay before anything is
/// available again: so late charges cannot lift the average above the cap.
///
/// The budget never reads a clock; callers pass `now` to [`refill`], so its behaviour is exact
/// under test.
///
/// [`reserve`]: EnergyBudget::reserve
/// [`settle`]: EnergyBudget::settle
/// [`refill`]: EnergyBudget::refill
#[derive(Debug, Clone)]
pub struct EnergyBudget {
    total: Joules,
    remaining: Joules,
    reserved: Joules,
    consumed: Joules,
    /// Charged but not paid: the first claim on whatever the budget regains.
    debt: Joules,
    refill: Option<(Watts, Instant)>,
}

/// Energy held for work that has been admitted but not yet charged.
#[derive(Debug)]
#[must_use = "a reservation holds energy until it is settled or released"]
pub struct Reservation {
    amount: Joules,
}

impl Reservation {
    /// The energy held.
    pub fn amount(&self) -> Joules {
        self.amount
    }
}

/// The budget cannot cover a cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("needs {needed}, but only {available} of the budget is available")]
pub struct Shortfall {
    /// The estimated cost.
    pub needed: Joules,
    /// Remaining energy not already held by other reservations.
    pub available: Joules,
}

impl EnergyBudget {
    /// A full budget of `total` joules with no refill.
    pub fn new(total: Joules) -> Self {
        EnergyBudget {
            total,
            remaining: total,
            reserved: Joules::ZERO,
            consumed: Joules::ZERO,
            debt: Joules::ZERO,
            refill: None,
        }
    }

    /// A full budget that regains `rate` watts' worth of energy, counted from `now`.
    pub fn with_refill(total: Joules, rate: Watts, now: Instant) -> Self {
        EnergyBudget { refill: Some((rate, now)), ..EnergyBudget::new(total) }
    }

    /// The budget's capacity.
    pub fn total(&self) -> Joules {
        self.total
    }

    /// Energy left, including what reservations hold.
    pub fn remaining(&self) -> Joules {
        self.remaining
    }

    /// `total − remaining`.
    pub fn used(&self) -> Joules {
        self.total.saturating_sub(self.remaining)
    }

    /// Everything ever charged, refills notwithstanding.
    pub fn consumed(&self) -> Joules {
        self.consumed
    }

    /// What was charged and could not be paid yet.
    pub fn debt(&self) -> Joules {
        self.debt
    }

    /// Gains `amount`: the debt first, then what remains, up to the total.
    fn gain(&mut self, amount: Joules) {
        let paid = amount.min(self.debt);
        self.debt = self.debt.saturating_sub(paid);
        self.remaining = (self.remaining + amount.saturating_sub(paid)).min(self.total);
    }

    /// Spends `amount`: what remains, and the rest as debt. Returns the part that became debt.
    fn spend(&mut self, amount: Joules) -> Joules {
        let overdraft = amount.saturating_sub(self.remaining);
        self.remaining = self.remaining.saturating_sub(amount);
        self.debt += overdraft;
        self.consumed += amount;
        overdraft
    }

    /// Energy that a new reservation may take.
    pub fn available(&self) -> Joules {
        self.remaining.saturating_sub(self.reserved)
    }

    /// The fraction of the total that is used, in `[0, 1]` (1 for an empty budget of zero).
    pub fn used_fraction(&self) -> f64 {
        if self.total == Joules::ZERO {
            1.0
        } else {
            (self.used().get() / self.total.get()).clamp(0.0, 1.0)
        }
    }

    /// The refill rate, if the budget has one.
    pub fn refill_rate(&self) -> Option<Watts> {
        self.refill.map(|(rate, _)| rate)
    }

    /// Adds the energy regained since the last refill, up to the total.
    pub fn refill(&mut self, now: Instant) {
        if let Some((rate, last)) = self.refill {
            let gained = rate * now.saturating_duration_since(last);
            self.gain(gained);
            self.refill = Some((rate, now.max(last)));
        }
    }

    /// Holds `estimate` for admitted work, or says by how much the budget falls short.
    pub fn reserve(&mut self, estimate: Joules) -> Result<Reservation, Shortfall> {
        let available = self.available();
        if estimate > available {
            return Err(Shortfall { needed: estimate, available });
        }
        self.reserved += estimate;
        Ok(Reservation { amount: estimate })
    }

    /// Releases a hold and charges the measured cost, which may differ from the estimate.
    ///
    /// A cost above what remains empties the budget and leaves the rest as debt; the returned
    /// amount is that part (zero in the usual case), so that callers can report the overdraft.
    pub fn settle(&mut self, hold: Reservation, actual: Joules) -> Joules {
        self.reserved = self.reserved.saturating_sub(hold.amount);
        self.spend(actual)
    }

    /// Corrects what was charged by `delta` joules, up (a positive delta, charged as a settled
    /// cost is, and returning the part that became debt) or down (a credit, paying the debt and
    /// then returned to the budget up to its total). Physical accounting corrects each actor's
    /// charges to its share of the machine's counter this way.
    pub fn correct(&mut self, delta: f64) -> Joules {
        let amount = Joules::new(delta.abs()).unwrap_or(Joules::ZERO);
        if delta >= 0.0 {
            self.spend(amount)
        } else {
            self.gain(amount);
            self.consumed = self.consumed.saturating_sub(amount);
            Joules::ZERO
        }
    }

    /// Releases a hold without charging anything.
    pub fn release(&mut self, hold: Reservation) {
        self.reserved = self.reserved.saturating_sub(hold.amount);
    }

    /// Grants more energy: the total grows by `amount`, and the remaining amount by what is left
    /// of it once the debt is paid.
    pub fn top_up(&mut self, amount: Joules) {
        self.total += amount;
        self.gain(amount);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn j(v: f64) -> Joules {
        Joules::new(v).unwrap()
    }

    #[test]
    fn reservations_hold_energy_until_settled() {
        let mut b = EnergyBudget::new(j(100.0));
        let first = b.reserve(j(60.0)).unwrap();
        assert_eq!(b.available(), j(40.0));
        assert_eq!(b.reserve(j(50.0)).unwrap_err(), Shortfall { needed: j(50.0), available: j(40.0) });
        assert_eq!(b.settle(first, j(55.0)), Joules::ZERO);
        assert_eq!((b.remaining(), b.used(), b.available()), (j(45.0), j(55.0), j(45.0)));
    }

    #[test]
    fn released_holds_charge_nothing() {
        let mut b = EnergyBudget::new(j(10.0));
        let hold = b.reserve(j(10.0)).unwrap();
        b.release(hold);
        assert_eq!((b.remaining(), b.available(), b.consumed()), (j(10.0), j(10.0), Joules::ZERO));
    }

    #[test]
    fn an_overdraft_empties_the_budget_and_is_reported() {
        let mut b = EnergyBudget::new(j(10.0));
        let hold = b.reserve(j(8.0)).unwrap();
        assert_eq!(b.settle(hold, j(12.0)), j(2.0));
        assert_eq!(b.remaining(), Joules::ZERO);
        assert_eq!(b.consumed(), j(12.0));
        assert_eq!(b.used_fraction(), 1.0);
    }

    #[test]
    fn refill_adds_power_times_time_up_to_the_total() {
        let t0 = Instant::now();
        let mut b = EnergyBudget::with_refill(j(100.0), Watts::new(5.0).unwrap(), t0);
        let hold = b.reserve(j(50.0)).unwrap();
        b.settle(hold, j(50.0));
        b.refill(t0 + Duration::from_secs(4));
        assert_eq!(b.remaining(), j(70.0));
        // A clock that steps back gains nothing and does not move the refill mark backwards.
        b.refill(t0 + Duration::from_secs(1));
        assert_eq!(b.remaining(), j(70.0));
        b.refill(t0 + Duration::from_secs(3600));
        assert_eq!(b.remaining(), j(100.0));
        assert_eq!(b.consumed(), j(50.0));
    }

    #[test]
    fn late_charges_become_a_debt_that_the_refill_pays_first_so_the_cap_holds() {
        let t0 = Instant::now();
        let mut b = EnergyBudget::with_refill(j(1.0), Watts::new(1.0).unwrap(), t0);
        let hold = b.reserve(j(1.0)).unwrap();
        b.settle(hold, j(1.0));
        // A correction arrives: the work cost 3 J more than was charged.
        assert_eq!(b.correct(3.0), j(3.0));
        b.refill(t0 + Duration::from_secs(2));
        assert_eq!((b.remaining(), b.debt(), b.available()), (Joules::ZERO, j(1.0), Joules::ZERO), "2 J regained, all to the debt");
        b.refill(t0 + Duration::from_millis(3500));
        assert_eq!((b.remaining(), b.debt()), (j(0.5), Joules::ZERO));
        // Over 3.5 s at 1 W with a 1 J burst, 4.5 J may be spent; 4 J were, and 0.5 J is available.
        assert_eq!(b.consumed(), j(4.0));
    }

    #[test]
    fn a_budget_without_refill_does_not_grow_with_time() {
        let mut b = EnergyBudget::new(j(10.0));
        let hold = b.reserve(j(4.0)).unwrap();
        b.settle(hold, j(4.0));
        b.refill(Instant::now() + Duration::from_secs(60));
        assert_eq!(b.remaining(), j(6.0));
    }

    #[test]
    fn corrections_charge_up_and_credit_down_within_the_total() {
        let mut b = EnergyBudget::new(j(10.0));
        let hold = b.reserve(j(4.0)).unwrap();
        b.settle(hold, j(4.0));
        assert_eq!(b.correct(2.0), Joules::ZERO);
        assert_eq!((b.remaining(), b.consumed()), (j(4.0), j(6.0)));
        assert_eq!(b.correct(-1.5), Joules::ZERO);
        assert_eq!((b.remaining(), b.consumed()), (j(5.5), j(4.5)));
        assert_eq!(b.correct(7.0), j(1.5), "what could not be paid is the overdraft");
        assert_eq!((b.remaining(), b.debt()), (Joules::ZERO, j(1.5)), "and a debt");
        b.correct(-2.0);
        assert_eq!((b.remaining(), b.debt()), (j(0.5), Joules::ZERO), "a credit pays the debt first");
        b.correct(-100.0);
        assert_eq!(b.remaining(), j(10.0), "a credit never lifts the budget past its total");
        assert_eq!(b.consumed(), Joules::ZERO);
        assert_eq!(b.correct(f64::NAN), Joules::ZERO, "nonsense corrects nothing");
        assert_eq!(b.remaining(), j(10.0));
    }

    #[test]
    fn top_up_grows_total_and_remaining() {
        let mut b = EnergyBudget::new(j(10.0));
        let hold = b.reserve(j(10.0)).unwrap();
        b.settle(hold, j(10.0));
        b.top_up(j(25.0));
        assert_eq!((b.total(), b.remaining(), b.used()), (j(35.0), j(25.0), j(10.0)));
    }
}
