//! Measuring one run of a handler.
//!
//! A [`Meter`] is read at the start and end of each stretch of work ([`Meter::begin`],
//! [`Meter::end`]), which the caller times; the raw [`Reading`]s of the stretches add up (an asynchronous handler runs in
//! several), and [`Meter::assess`] turns their sum into joules once. Every [`Sample`] names the
//! [`Source`] of its joules, because a RAPL reading and a CPU-time estimate are not the same claim.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CostModel, Joules, OpCounts, Watts};

/// Where a joule figure came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Hardware energy counters (RAPL through powercap or the perf `power` PMU).
    Rapl,
    /// Hardware performance counters with a per-event energy model.
    PerfCounters,
    /// Instrumented operation counts through the [`CostModel`](crate::CostModel).
    OpCountModel,
    /// Running time × configured watts per core.
    TimeModel,
    /// A constant per run, for tests and simulations.
    Fixed,
}

impl Source {
    /// The name used in logs and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rapl => "rapl",
            Source::PerfCounters => "perf-counters",
            Source::OpCountModel => "op-count-model",
            Source::TimeModel => "time-model",
            Source::Fixed => "fixed",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counter values at the start of a stretch of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// This thread's operation counters, where the build has them.
    pub ops: Option<OpCounts>,
}

/// What changed over one or more stretches of work, before it is turned into joules.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Time spent running.
    pub elapsed: Duration,
    /// Operations executed, where counted.
    pub ops: Option<OpCounts>,
    /// Energy read from hardware counters, where the meter has them.
    pub energy: Option<Joules>,
}

impl Add for Reading {
    type Output = Reading;
    fn add(self, o: Reading) -> Reading {
        // A part without counts makes the whole uncounted: a partial count would undercount.
        Reading {
            elapsed: self.elapsed + o.elapsed,
            ops: both(self.ops, o.ops),
            energy: both(self.energy, o.energy),
        }
    }
}

fn both<T: Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    a.zip(b).map(|(a, b)| a + b)
}

impl AddAssign for Reading {
    fn add_assign(&mut self, o: Reading) {
        *self = *self + o;
    }
}

/// The measured cost of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Energy attributed to the run.
    pub joules: Joules,
    /// What produced `joules`.
    pub source: Source,
    /// Time spent running.
    pub elapsed: Duration,
    /// Operations executed, where counted.
    pub ops: Option<OpCounts>,
}

/// A source of measurements: hardware counters, a model, or a test double.
///
/// `begin` and `end` sit on the hot path of every gated message and must not make system calls.
/// The caller times each stretch, so that the one clock reading at its end also stamps the audit
/// entry; a meter reads only what else it counts.
pub trait Meter: Send {
    /// What this meter's joules are.
    fn source(&self) -> Source;
    /// Reads the counters at the start of a stretch of work.
    fn begin(&self) -> Mark;
    /// Reads them again at the end of a stretch that ran for `elapsed`, and returns the
    /// difference.
    fn end(&self, start: Mark, elapsed: Duration) -> Reading;
    /// Turns a (summed) reading into joules.
    fn assess(&self, reading: &Reading) -> Sample;
}

/// Running time × watts per core. The running time comes from the caller: the gate reads the CPU's
/// time-stamp counter, which costs no system call.
pub struct TimeMeter {
    watts_per_core: Watts,
}

impl TimeMeter {
    /// A time meter charging `watts_per_core` for each second of running time.
    pub fn new(watts_per_core: Watts) -> Self {
        TimeMeter { watts_per_core }
    }
}

impl Meter for TimeMeter {
    fn source(&self) -> Source {
        Source::TimeModel
    }

    fn begin(&self) -> Mark {
        Mark { ops: None }
    }

    fn end(&self, _start: Mark, elapsed: Duration) -> Reading {
        Reading { elapsed, ops: None, energy: None }
    }

    fn assess(&self, reading: &Reading) -> Sample {
        Sample {
            joules: self.watts_per_core * reading.elapsed,
            source: Source::TimeModel,
            elapsed: reading.elapsed,
            ops: reading.ops,
        }
    }
}

/// Operations counted by ergon's LLVM pass, priced by a [`CostModel`]; the running time is
/// recorded beside them.
///
/// Exists only in an instrumented build: [`OpCountMeter::new`] returns `None` otherwise, so a
/// build without counters can never charge zero joules for real work.
pub struct OpCountMeter {
    model: CostModel,
}

impl OpCountMeter {
    /// A meter pricing this thread's operation counts with `model`, if the build counts them.
    pub fn new(model: CostModel) -> Option<Self> {
        (crate::instrumentation() == crate::Instrumentation::Instrumented)
            .then_some(OpCountMeter { model })
    }
}

impl Meter for OpCountMeter {
    fn source(&self) -> Source {
        Source::OpCountModel
    }

    fn begin(&self) -> Mark {
        Mark { ops: crate::measure_ops().ok() }
    }

    fn end(&self, start: Mark, elapsed: Duration) -> Reading {
        let ops = crate::measure_ops().ok();
        Reading { elapsed, ops: start.ops.zip(ops).map(|(a, b)| b.since(&a)), energy: None }
    }

    fn assess(&self, reading: &Reading) -> Sample {
        // In an instrumented build every reading has counts (the meter exists only there).
        let ops = reading.ops.unwrap_or_default();
        Sample { joules: self.model.cost(&ops), source: Source::OpCountModel, elapsed: reading.elapsed, ops: reading.ops }
    }
}

/// Charges the same energy for every run, whatever it did: for tests and simulations that need
/// exact, repeatable costs.
#[derive(Debug, Clone, Copy)]
pub struct FixedMeter {
    /// The energy charged per run.
    pub per_run: Joules,
}

impl Meter for FixedMeter {
    fn source(&self) -> Source {
        Source::Fixed
    }

    fn begin(&self) -> Mark {
        Mark::default()
    }

    fn end(&self, _start: Mark, elapsed: Duration) -> Reading {
        Reading { elapsed, ..Reading::default() }
    }

    fn assess(&self, reading: &Reading) -> Sample {
        Sample { joules: self.per_run, source: Source::Fixed, elapsed: reading.elapsed, ops: reading.ops }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_meter_charges_watts_times_running_time() {
        let meter = TimeMeter::new(Watts::new(10.0).unwrap());
        let mut reading = meter.end(meter.begin(), Duration::from_millis(300));
        reading += meter.end(meter.begin(), Duration::from_millis(200));
        let sample = meter.assess(&reading);
        assert_eq!(sample.elapsed, Duration::from_millis(500));
        assert_eq!(sample.joules.get(), 5.0);
        assert_eq!(sample.source, Source::TimeModel);
    }

    #[test]
    fn a_reading_with_an_uncounted_part_is_uncounted() {
        let counted = Reading { ops: Some(OpCounts { alu: 1, mem: 0, fp: 0, total: 1 }), ..Reading::default() };
        assert_eq!((counted + Reading::default()).ops, None);
        assert_eq!((counted + counted).ops.unwrap().alu, 2);
    }

    #[test]
    fn sources_print_as_they_serialise() {
        for s in [Source::Rapl, Source::PerfCounters, Source::OpCountModel, Source::TimeModel, Source::Fixed] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
