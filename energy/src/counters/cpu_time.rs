//! The last resort: the process's CPU time x watts per core.

use std::time::Duration;

use cpu_time::ProcessTime;

use super::{CounterError, EnergyCounter, Scope};
use crate::{Joules, Source, Watts};

/// This process's CPU time since the counter was opened, priced at a configured power per core.
/// It measures nothing about the hardware: it is an estimate, and says so ([`Source::TimeModel`]).
pub struct CpuTimeCounter {
    start: Duration,
    watts_per_core: Watts,
}

impl CpuTimeCounter {
    /// Starts counting now.
    pub fn open(watts_per_core: Watts) -> Result<Self, CounterError> {
        Ok(CpuTimeCounter { start: cpu_time()?, watts_per_core })
    }
}

fn cpu_time() -> Result<Duration, CounterError> {
    ProcessTime::try_now()
        .map(|t| t.as_duration())
        .map_err(|e| CounterError::Failed { name: "cpu-time".into(), why: format!("the process CPU clock failed: {e}") })
}

impl EnergyCounter for CpuTimeCounter {
    fn name(&self) -> &str {
        "cpu-time"
    }

    fn source(&self) -> Source {
        Source::TimeModel
    }

    fn scope(&self) -> Scope {
        Scope::Process
    }

    fn read(&mut self) -> Result<Joules, CounterError> {
        let used = cpu_time()?.saturating_sub(self.start);
        Ok(Joules::new(used.as_secs_f64() * self.watts_per_core.get()).unwrap_or(Joules::ZERO))
    }
}
