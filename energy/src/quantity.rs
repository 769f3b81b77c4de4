//! Physical quantities that cannot hold NaN, infinities or negative values.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Mul};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A number that cannot be a joule or watt figure.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// The value was NaN.
    #[error("{unit} must be a number, got NaN")]
    NotANumber {
        /// The unit that was being constructed.
        unit: &'static str,
    },
    /// The value was +∞ or −∞.
    #[error("{unit} must be finite, got {value}")]
    Infinite {
        /// The unit that was being constructed.
        unit: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The value was below zero.
    #[error("{unit} cannot be negative, got {value}")]
    Negative {
        /// The unit that was being constructed.
        unit: &'static str,
        /// The offending value.
        value: f64,
    },
}

fn checked(value: f64, unit: &'static str) -> Result<f64, QuantityError> {
    if value.is_nan() {
        Err(QuantityError::NotANumber { unit })
    } else if value.is_infinite() {
        Err(QuantityError::Infinite { unit, value })
    } else if value < 0.0 {
        Err(QuantityError::Negative { unit, value })
    } else {
        // -0.0 passes the checks above; store it as +0.0 so that equality and display agree.
        Ok(value + 0.0)
    }
}

/// An amount of energy: finite and non-negative.
///
/// Arithmetic saturates: adding never overflows to infinity, and [`Joules::saturating_sub`]
/// stops at zero.
#[derive(Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Joules(f64);

impl Joules {
    /// No energy.
    pub const ZERO: Joules = Joules(0.0);
    /// The largest amount: where arithmetic saturates.
    pub const MAX: Joules = Joules(f64::MAX);

    /// A joule figure, or an error naming why `value` is not one.
    pub fn new(value: f64) -> Result<Self, QuantityError> {
        checked(value, "joules").map(Joules)
    }

    /// The amount in joules.
    pub fn get(self) -> f64 {
        self.0
    }

    /// `self − other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Joules) -> Joules {
        Joules((self.0 - other.0).max(0.0))
    }

    /// `self` scaled by a non-negative factor (a weight, a fraction); a negative or NaN factor
    /// gives zero. A product too large for an `f64` (an infinite factor included) saturates at
    /// [`Joules::MAX`]: an extreme weight makes a cost huge, never free.
    pub fn scale(self, factor: f64) -> Joules {
        if factor.is_nan() || factor < 0.0 || self.0 == 0.0 {
            return Joules::ZERO;
        }
        Joules::new(self.0 * factor).unwrap_or(Joules::MAX)
    }

    /// The smaller of two amounts.
    pub fn min(self, other: Joules) -> Joules {
        if other < self {
            other
        } else {
            self
        }
    }
}

impl TryFrom<f64> for Joules {
    type Error = QuantityError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Joules::new(value)
    }
}

impl From<Joules> for f64 {
    fn from(j: Joules) -> f64 {
        j.0
    }
}

impl Eq for Joules {}

impl PartialOrd for Joules {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Joules {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Add for Joules {
    type Output = Joules;
    fn add(self, other: Joules) -> Joules {
        Joules((self.0 + other.0).min(f64::MAX))
    }
}

impl AddAssign for Joules {
    fn add_assign(&mut self, other: Joules) {
        *self = *self + other;
    }
}

impl std::iter::Sum for Joules {
    fn sum<I: Iterator<Item = Joules>>(iter: I) -> Joules {
        iter.fold(Joules::ZERO, Add::add)
    }
}

impl fmt::Debug for Joules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} J", self.0)
    }
}

/// Picks the SI prefix that keeps between one and three digits before the point, because handler
/// costs span from picojoules (an op-count estimate) to hundreds of joules (a base cost).
impl fmt::Display for Joules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = self.0;
        let (value, unit) = if j == 0.0 || j >= 1.0 {
            (j, "J")
        } else if j >= 1e-3 {
            (j * 1e3, "mJ")
        } else if j >= 1e-6 {
            (j * 1e6, "µJ")
        } else if j >= 1e-9 {
            (j * 1e9, "nJ")
        } else {
            (j * 1e12, "pJ")
        };
        match f.precision() {
            Some(p) => write!(f, "{value:.p$} {unit}"),
            None => write!(f, "{value:.3} {unit}"),
        }
    }
}

/// A power: finite and non-negative. Power × time is energy.
#[derive(Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Watts(f64);

impl Watts {
    /// A watt figure, or an error naming why `value` is not one.
    pub fn new(value: f64) -> Result<Self, QuantityError> {
        checked(value, "watts").map(Watts)
    }

    /// The power in watts.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Watts {
    type Error = QuantityError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Watts::new(value)
    }
}

impl From<Watts> for f64 {
    fn from(w: Watts) -> f64 {
        w.0
    }
}

impl fmt::Debug for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} W", self.0)
    }
}

impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} W", self.0)
    }
}

impl Mul<Duration> for Watts {
    type Output = Joules;
    fn mul(self, time: Duration) -> Joules {
        // Multiplying by 1e-9 rather than dividing by 1e9 (as `as_secs_f64` does) keeps a division
        // off the gate's path; the two differ in the last bit at most.
        let seconds = time.as_secs() as f64 + f64::from(time.subsec_nanos()) * 1e-9;
        Joules((self.0 * seconds).min(f64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_saturates_instead_of_making_a_cost_free() {
        let huge = Joules::new(1e300).unwrap();
        assert_eq!(huge.scale(1e300), Joules::MAX);
        assert_eq!(Joules::new(1e-12).unwrap().scale(f64::INFINITY), Joules::MAX, "an infinite weight is not free");
        assert_eq!(Joules::ZERO.scale(f64::INFINITY), Joules::ZERO);
        assert_eq!(Joules::new(2.0).unwrap().scale(0.25), Joules::new(0.5).unwrap());
    }

    #[test]
    fn joules_reject_nan_infinity_and_negatives() {
        assert_eq!(Joules::new(f64::NAN), Err(QuantityError::NotANumber { unit: "joules" }));
        assert!(matches!(Joules::new(f64::INFINITY), Err(QuantityError::Infinite { .. })));
        assert!(matches!(Joules::new(f64::NEG_INFINITY), Err(QuantityError::Infinite { .. })));
        assert!(matches!(Joules::new(-0.5), Err(QuantityError::Negative { value, .. }) if value == -0.5));
        assert_eq!(Joules::new(-0.0).unwrap().get().to_bits(), 0.0f64.to_bits());
        assert_eq!(Joules::new(2.5).unwrap().get(), 2.5);
    }

    #[test]
    fn watts_reject_bad_numbers_too() {
        assert!(Watts::new(f64::NAN).is_err());
        assert!(Watts::new(-1.0).is_err());
        assert!(Watts::new(f64::INFINITY).is_err());
    }

    #[test]
    fn deserialising_a_bad_number_is_an_error_not_a_value() {
        assert!(serde_json::from_str::<Joules>("-3.0").is_err());
        assert!(serde_json::from_str::<Joules>("1e400").is_err());
        assert_eq!(serde_json::from_str::<Joules>("3.5").unwrap(), Joules::new(3.5).unwrap());
    }

    #[test]
    fn arithmetic_saturates_instead_of_leaving_the_domain() {
        let big = Joules::new(f64::MAX).unwrap();
        assert_eq!((big + big).get(), f64::MAX);
        let one = Joules::new(1.0).unwrap();
        assert_eq!(one.saturating_sub(big), Joules::ZERO);
        assert_eq!(one.scale(f64::NAN), Joules::ZERO);
        assert_eq!(one.scale(-2.0), Joules::ZERO);
    }

    #[test]
    fn power_times_time_is_energy() {
        let w = Watts::new(15.0).unwrap();
        assert_eq!((w * Duration::from_millis(200)).get(), 3.0);
    }

    #[test]
    fn display_picks_a_readable_prefix() {
        assert_eq!(Joules::new(12.5).unwrap().to_string(), "12.500 J");
        assert_eq!(Joules::new(0.0025).unwrap().to_string(), "2.500 mJ");
        assert_eq!(Joules::new(3.0e-11).unwrap().to_string(), "30.000 pJ");
        assert_eq!(format!("{:.1}", Joules::new(7.0e-6).unwrap()), "7.0 µJ");
    }
}
