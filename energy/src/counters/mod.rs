//! Machine energy counters: what the hardware, or failing that the process's CPU time, says has
//! been used.
//!
//! A [`Meter`](crate::Meter) is read at the start and end of every message and must not make a
//! system call; an [`EnergyCounter`] is read with one (a sysfs file, a perf descriptor), so it is
//! sampled in the background, and its readings are shared among the messages that ran in between.
//! Every counter says what its joules are ([`Source`]): a RAPL figure and a CPU-time estimate are
//! not the same claim. The counters, best first:
//!
//! - [`powercap`]: RAPL through sysfs;
//! - [`perf`]: RAPL through the perf `power` PMU, and hardware performance counters priced per
//!   event (both through perf-event2);
//! - with the `rapl-energy` feature (GPL-3.0), `rapl_energy`: RAPL through the rapl-energy crate;
//! - [`cpu_time`]: the process's CPU time x watts per core, the last resort;
//! - and for tests, [`ScriptedCounter`], which reads what its owner says.
//!
//! [`probe()`] finds out which of them a machine has, whether they can be read and whether they
//! advance, and picks the best; [`probe_and_open`] hands over the choice, ready to be sampled.

pub mod cpu_time;
pub mod perf;
pub mod powercap;
pub mod probe;
#[cfg(feature = "rapl-energy")]
pub mod rapl_energy;
mod scripted;
mod sysfs;

use std::path::PathBuf;

use crate::{Joules, Source};

pub use cpu_time::CpuTimeCounter;
pub use scripted::ScriptedCounter;
pub use perf::{PerfCounter, PowerEvent};
pub use powercap::{PowercapCounter, Zone};
pub use probe::{probe, probe_and_open, probe_with, Finding, Probe, ProbeConfig, RaplZone, Status, SumCounter};

/// A cumulative energy counter.
pub trait EnergyCounter: Send {
    /// Its name (`powercap:intel-rapl:0`, `cpu-time`).
    fn name(&self) -> &str;
    /// What its joules are.
    fn source(&self) -> Source;
    /// Whether it counts the machine or this process.
    fn scope(&self) -> Scope {
        Scope::Machine
    }
    /// Energy used since the counter was opened. Read it more often than the hardware counter
    /// can wrap (minutes for RAPL), or wraps are lost.
    fn read(&mut self) -> Result<Joules, CounterError>;
}

/// Whether a counter counts the whole machine or this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every process on every CPU (RAPL, machine-wide perf events).
    Machine,
    /// This process only (its CPU time).
    Process,
}

/// Why a counter cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CounterError {
    /// A file or directory the counter needs does not exist.
    #[error("{path}: missing: {why}")]
    Missing {
        /// What is missing.
        path: PathBuf,
        /// What that means.
        why: String,
    },
    /// The file exists but cannot be read.
    #[error("{path}: cannot be read: {why}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The system's reason, and what to do.
        why: String,
    },
    /// The file does not hold a counter value.
    #[error("{path}: {contents:?} is not a counter value{why}")]
    Garbage {
        /// The file.
        path: PathBuf,
        /// What it holds (at most 64 bytes of it).
        contents: String,
        /// More, when there is more to say (starts with "; ").
        why: String,
    },
    /// The counter's clock or interface failed.
    #[error("{name}: {why}")]
    Failed {
        /// The counter.
        name: String,
        /// What went wrong.
        why: String,
    },
}
