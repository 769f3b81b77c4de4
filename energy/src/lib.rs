//! Energy accounting for ergon: what a joule is, where a figure comes from, and how much is left.
//!
//! - [`Joules`] and [`Watts`] are finite, non-negative quantities; no bare `f64` crosses an API.
//! - [`OpCounts`] are the operation counts that ergon's LLVM pass gathers per thread;
//!   [`measure_ops`] reads them, and says so plainly when the build is not instrumented.
//! - [`CostModel`] turns counts into joules (`Σ ops × weight × unit energy`).
//! - [`Meter`] measures one run of a handler; every [`Sample`] says which [`Source`] produced it.
//! - [`EnergyBudget`] is a token bucket of joules; [`EnergyMonitor`] raises alerts on it.
//! - [`Accounting`] says what a charged joule means: the tutorial's constants, or physical energy.
//! - [`counters`] read what the machine says it used: RAPL through powercap, or the process's CPU
//!   time as the last resort; [`counters::probe()`] finds out which of them work here.
//! - [`calibration`] fits joules per operation of each class to the machine's counter.
//! - [`attribution`] samples the chosen counter in the background and shares each window's
//!   energy among the actors that ran in it, so that charges reconcile with the meter.
//!
//! Apart from [`counters`], which read sysfs, this crate does no I/O beyond reading clocks, and it
//! depends on nothing else of ergon.
//!
//! ```
//! use energy::{EnergyBudget, Joules};
//!
//! let mut budget = EnergyBudget::new(Joules::new(100.0)?);
//! let hold = budget.reserve(Joules::new(10.0)?).expect("fits");
//! budget.settle(hold, Joules::new(12.5)?);
//! assert_eq!(budget.remaining(), Joules::new(87.5)?);
//! # Ok::<(), energy::QuantityError>(())
//! ```
// Unsafe code is confined to `ops`, which calls the C run time of the LLVM pass.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod accounting;
pub mod attribution;
mod budget;
pub mod calibration;
pub mod counters;
mod meter;
mod model;
mod monitor;
#[allow(unsafe_code)]
mod ops;
mod quantity;

pub use accounting::{Accounting, NotAnAccounting};
pub use budget::{EnergyBudget, Reservation, Shortfall};
pub use meter::{FixedMeter, Mark, Meter, OpCountMeter, Reading, Sample, Source, TimeMeter};
pub use model::{CostModel, OpWeights};
pub use monitor::{AlertLevel, EnergyAlert, EnergyMonitor, Thresholds, HYSTERESIS};
pub use ops::{instrumentation, instrumented_modules, measure_ops, Instrumentation, NotInstrumented, OpCounts};
pub use quantity::{Joules, QuantityError, Watts};
