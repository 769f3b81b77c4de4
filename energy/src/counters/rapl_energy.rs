//! RAPL through the rapl-energy crate, behind the `rapl-energy` cargo feature.
//!
//! rapl-energy is GPL-3.0, so the default build leaves it out and stays under ergon's own licence
//! (MIT or Apache-2.0); a binary built with the feature is covered by the GPL. It reads the same
//! powercap files as [`powercap`](super::powercap), but panics on a missing or unreadable file and
//! keeps joules in `f32`. So this wrapper turns its panics into [`CounterError`]s, reads the
//! packages' energy since the last reading and starts again from there (so that wraps are counted
//! however long it runs), and adds up in `f64`. The few microseconds between a reading and its
//! restart are not counted.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use rapl_energy::Rapl;

use super::{CounterError, EnergyCounter};
use crate::{Joules, Source};

/// Every RAPL package (and MMIO package) as rapl-energy finds them, summed.
pub struct RaplEnergyCounter {
    rapl: Rapl,
    total: f64,
}

fn failed(what: &str, panic: Box<dyn std::any::Any + Send>) -> CounterError {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("it panicked");
    CounterError::Failed {
        name: "rapl-energy".into(),
        why: format!("{what}: {message} (energy_uj is readable by root only since CVE-2020-8694)"),
    }
}

impl RaplEnergyCounter {
    /// Finds the packages; `Missing` where rapl-energy finds none.
    pub fn open() -> Result<Self, CounterError> {
        match catch_unwind(|| Rapl::new(false)) {
            Ok(Some(rapl)) => Ok(RaplEnergyCounter { rapl, total: 0.0 }),
            Ok(None) => Err(CounterError::Missing {
                path: PathBuf::from("/sys/class/powercap/intel-rapl:0"),
                why: "rapl-energy finds no RAPL package".into(),
            }),
            Err(panic) => Err(failed("opening the packages", panic)),
        }
    }
}

impl EnergyCounter for RaplEnergyCounter {
    fn name(&self) -> &str {
        "rapl-energy"
    }

    fn source(&self) -> Source {
        Source::Rapl
    }

    fn read(&mut self) -> Result<Joules, CounterError> {
        let rapl = &mut self.rapl;
        // A panic leaves nothing half-updated that a later reading trusts: `reset` runs only
        // after a complete reading.
        let since_last = catch_unwind(AssertUnwindSafe(move || {
            // rapl-energy lists the MMIO interface's packages after the MSR ones, under the same
            // names: count each package once.
            let mut seen = std::collections::HashSet::new();
            let packages: f64 = rapl
                .iter_packages()
                .filter(|p| seen.insert(p.name.clone()))
                .filter_map(|p| p.elapsed().first().map(|(_, joules)| f64::from(*joules)))
                .sum();
            rapl.reset();
            packages
        }))
        .map_err(|panic| failed("reading the packages", panic))?;
        self.total += since_last;
        Joules::new(self.total).map_err(|e| CounterError::Failed { name: "rapl-energy".into(), why: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_rapl_is_an_error_not_a_panic() {
        // Wherever this runs, opening and reading end in a value or a named error.
        match RaplEnergyCounter::open() {
            Ok(mut counter) => {
                let _ = counter.read();
            }
            Err(e) => assert!(matches!(e, CounterError::Missing { .. } | CounterError::Failed { .. }), "{e}"),
        }
    }
}
