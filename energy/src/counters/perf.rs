//! Counters read through `perf_event_open`: RAPL's `power` PMU, and hardware events priced by a
//! per-event energy.
//!
//! The `power` PMU (`/sys/bus/event_source/devices/power`) exposes the RAPL domains as events
//! (`energy-pkg`, `energy-cores`, `energy-ram`, `energy-psys`). sysfs gives each event's
//! configuration, its scale (joules per count) and its unit, and `cpumask` names one CPU per
//! package, where the event must be opened. The kernel extends the counts to 64 bits, so they do
//! not wrap. The root is configurable, so tests describe PMUs in trees they build.
//!
//! Hardware events count work, not energy: [`PerfCounter::hardware`] prices instructions and
//! last-level cache misses with published per-event energies, and says so
//! ([`Source::PerfCounters`]). Cycles are not priced: they measure the same work as the
//! instructions a second time.
//!
//! Both count the whole machine (every process on the CPUs they are opened on). That needs root,
//! `CAP_PERFMON`, or `kernel.perf_event_paranoid` at most 0; the errors say which is missing.

use std::io;
use std::path::{Path, PathBuf};

use perf_event::events::{Dynamic, Event, Hardware};
use perf_event::{Builder, Counter};

use super::sysfs::{read_cpu_list, read_text};
use super::{CounterError, EnergyCounter};
use crate::{Joules, Source};

/// Where Linux lists its perf PMUs.
pub const DEFAULT_PMU_ROOT: &str = "/sys/bus/event_source/devices";

/// Where Linux lists the CPUs that are online.
pub const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

/// Energy of one instruction: Horowitz's 70 pJ for a simple instruction on a 45 nm core
/// ("Computing's energy problem", ISSCC 2014), the unit energy of the default
/// [`CostModel`](crate::CostModel) too.
pub const INSTRUCTION_JOULES: f64 = 70e-12;

/// Energy of one last-level cache miss: a 64-byte line from DRAM, eight 64-bit accesses at the
/// low end (1.3 nJ) of Horowitz's 1.3-2.6 nJ per access (ISSCC 2014).
pub const CACHE_MISS_JOULES: f64 = 8.0 * 1.3e-9;

/// One event of the `power` PMU, as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerEvent {
    /// The event (`energy-pkg`).
    pub name: String,
    /// The PMU's directory.
    pub pmu: PathBuf,
    /// Joules per count (`events/<name>.scale`).
    pub scale: f64,
    /// One CPU per package (`cpumask`).
    pub cpus: Vec<usize>,
}

/// An event's name, and the event or why it could not be described.
pub type FoundEvent = (String, Result<PowerEvent, CounterError>);

/// Every `energy-*` event of the `power` PMU under `root`, each with the reason it could not be
/// described if it could not. A missing PMU is an error: the kernel exposes no RAPL through perf.
pub fn discover_power(root: &Path) -> Result<Vec<FoundEvent>, CounterError> {
    let pmu = root.join("power");
    let events_dir = pmu.join("events");
    let entries = std::fs::read_dir(&events_dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CounterError::Missing {
            path: pmu.clone(),
            why: "no `power` PMU: the kernel exposes no RAPL events through perf here (no RAPL driver, \
                  or a virtual machine)"
                .into(),
        },
        _ => super::powercap::unreadable(&events_dir, &e),
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("energy-") && !name.contains('.'))
        .collect();
    names.sort();
    let cpus = read_cpu_list(&pmu.join("cpumask"));
    Ok(names
        .into_iter()
        .map(|name| {
            let described = cpus.clone().and_then(|cpus| describe_power_event(&pmu, &name, cpus));
            (name, described)
        })
        .collect())
}

fn describe_power_event(pmu: &Path, name: &str, cpus: Vec<usize>) -> Result<PowerEvent, CounterError> {
    let events = pmu.join("events");
    let scale_path = events.join(format!("{name}.scale"));
    let scale_text = read_text(&scale_path)?;
    let scale = scale_text.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| {
        CounterError::Garbage {
            path: scale_path,
            contents: scale_text.chars().take(64).collect(),
            why: "; a scale is a positive number of joules per count".into(),
        }
    })?;
    let unit_path = events.join(format!("{name}.unit"));
    let unit = read_text(&unit_path)?;
    if unit != "Joules" {
        return Err(CounterError::Garbage {
            path: unit_path,
            contents: unit.chars().take(64).collect(),
            why: "; ergon reads energy events in Joules only".into(),
        });
    }
    Ok(PowerEvent { name: name.to_owned(), pmu: pmu.to_owned(), scale, cpus })
}

/// The events whose sum is the machine's energy as the `power` PMU sees it: `energy-psys` alone
/// when there is one (it covers the rest), else `energy-pkg` plus `energy-ram` (`energy-cores`
/// and `energy-gpu` are inside the package).
pub fn machine_events(events: &[PowerEvent]) -> Vec<&PowerEvent> {
    if let Some(psys) = events.iter().find(|e| e.name == "energy-psys") {
        return vec![psys];
    }
    events.iter().filter(|e| e.name == "energy-pkg" || e.name == "energy-ram").collect()
}

/// The CPUs that are online.
pub fn online_cpus() -> Result<Vec<usize>, CounterError> {
    read_cpu_list(Path::new(ONLINE_CPUS))
}

/// Events opened on a set of CPUs, each count priced in joules.
pub struct PerfCounter {
    name: String,
    source: Source,
    /// Every opened descriptor with the joules of one of its counts.
    parts: Vec<(Counter, f64)>,
}

impl std::fmt::Debug for PerfCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfCounter").field("name", &self.name).field("descriptors", &self.parts.len()).finish()
    }
}

impl PerfCounter {
    /// Opens a `power` PMU event on one CPU of each package.
    pub fn power(event: &PowerEvent) -> Result<Self, CounterError> {
        let event_path = event.pmu.join("events").join(&event.name);
        let garbage = |why: String| CounterError::Garbage { path: event_path.clone(), contents: String::new(), why };
        let mut builder = Dynamic::builder(&event.pmu).map_err(|e| garbage(format!("; the PMU's format: {e}")))?;
        builder.event(&event.name).map_err(|e| garbage(format!("; the event's configuration: {e}")))?;
        let dynamic = builder.build().map_err(|e| garbage(format!("; {e}")))?;
        let name = format!("perf:power/{}", event.name);
        PerfCounter::open(name, Source::Rapl, &[(dynamic, event.scale)], &event.cpus, &event_path)
    }

    /// Opens instructions and last-level cache misses on `cpus`, priced at [`INSTRUCTION_JOULES`]
    /// and [`CACHE_MISS_JOULES`].
    pub fn hardware(cpus: &[usize]) -> Result<Self, CounterError> {
        let events = [(Hardware::INSTRUCTIONS, INSTRUCTION_JOULES), (Hardware::CACHE_MISSES, CACHE_MISS_JOULES)];
        let path = Path::new(DEFAULT_PMU_ROOT).join("cpu");
        PerfCounter::open("perf:instructions+cache-misses".into(), Source::PerfCounters, &events, cpus, &path)
    }

    /// Opens each of `events` on each of `cpus`, counting every process there; a count of event
    /// `i` is worth `events[i].1` joules. `what` names the events in errors.
    pub fn open<E: Event + Copy>(
        name: String,
        source: Source,
        events: &[(E, f64)],
        cpus: &[usize],
        what: &Path,
    ) -> Result<Self, CounterError> {
        let mut parts = Vec::with_capacity(events.len() * cpus.len());
        for &(event, joules_per_count) in events {
            for &cpu in cpus {
                let counter = Builder::new(event)
                    .one_cpu(cpu)
                    .any_pid()
                    .enabled(true)
                    .build()
                    .map_err(|e| open_error(&name, what, cpu, &e))?;
                parts.push((counter, joules_per_count));
            }
        }
        Ok(PerfCounter { name, source, parts })
    }
}

fn open_error(name: &str, what: &Path, cpu: usize, e: &io::Error) -> CounterError {
    let on_cpu = format!("perf_event_open on CPU {cpu}: {e}");
    match e.kind() {
        io::ErrorKind::PermissionDenied => CounterError::Unreadable {
            path: what.to_owned(),
            why: format!(
                "{on_cpu}: counting every process needs root or CAP_PERFMON, or kernel.perf_event_paranoid \
                 at most 0 (it is {}): `sudo sysctl kernel.perf_event_paranoid=0`",
                paranoia()
            ),
        },
        _ if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP | libc::EINVAL)) => {
            CounterError::Missing {
                path: what.to_owned(),
                why: format!(
                    "{on_cpu}: the kernel cannot count this event here (virtual machines usually expose no \
                     hardware counters)"
                ),
            }
        }
        _ => CounterError::Failed { name: name.to_owned(), why: on_cpu },
    }
}

fn paranoia() -> String {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

impl EnergyCounter for PerfCounter {
    fn name(&self) -> &str {
        &self.name
    }

    fn source(&self) -> Source {
        self.source
    }

    fn read(&mut self) -> Result<Joules, CounterError> {
        let mut joules = 0.0;
        for (counter, joules_per_count) in &mut self.parts {
            let count = counter.read().map_err(|e| CounterError::Failed { name: self.name.clone(), why: e.to_string() })?;
            joules += count as f64 * *joules_per_count;
        }
        Joules::new(joules).map_err(|e| CounterError::Failed { name: self.name.clone(), why: e.to_string() })
    }
}
