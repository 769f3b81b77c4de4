//! Which energy counters this machine has, whether they can be read, whether they advance, and
//! which to use.
//!
//! A counter that can be read is not yet a counter that measures: some virtual machines expose
//! RAPL zones that read 0 forever. So the probe reads every counter, runs a short CPU load, reads
//! again, and calls a counter usable only if it advanced.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::perf::{self, PerfCounter, PowerEvent};
use super::powercap::{self, PowercapCounter, Zone};
use super::{CpuTimeCounter, EnergyCounter};
use crate::{Joules, Source, Watts};

/// What to probe, and how.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The powercap tree (`/sys/class/powercap`).
    pub powercap_root: PathBuf,
    /// Where the perf PMUs are listed (`/sys/bus/event_source/devices`).
    pub pmu_root: PathBuf,
    /// How long the load between the two readings runs.
    pub load: Duration,
    /// The price of a second of CPU time, for the last-resort counter.
    pub watts_per_core: Watts,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            powercap_root: PathBuf::from(powercap::DEFAULT_ROOT),
            pmu_root: PathBuf::from(perf::DEFAULT_PMU_ROOT),
            load: Duration::from_millis(200),
            watts_per_core: Watts::new(12.5).expect("constant"),
        }
    }
}

/// What the probe found out about one counter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The counter (`powercap:intel-rapl:0 (package-0)`, `cpu-time`).
    pub name: String,
    /// What its joules would be.
    pub source: Source,
    /// Whether it can be used.
    #[serde(flatten)]
    pub status: Status,
    /// For a powercap zone: which RAPL domain it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<RaplZone>,
}

/// The RAPL domain a powercap finding is, as far as its directory says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaplZone {
    /// Its directory name (`intel-rapl:0:1`).
    pub id: String,
    /// What it measures (`package-0`, `core`, `uncore`, `dram`, `psys`), if its `name` file
    /// could be read.
    pub name: Option<String>,
    /// The package it is a subzone of.
    pub parent: Option<String>,
    /// Read through the MMIO interface (`intel-rapl-mmio:N`) rather than the MSRs.
    pub mmio: bool,
}

/// Whether a counter can be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// It advanced under the load.
    Usable {
        /// Energy it counted during the load.
        joules: f64,
        /// The mean power over the load.
        watts: f64,
    },
    /// It can be read but did not advance under the load: it measures nothing here.
    Stuck,
    /// It is missing or cannot be read.
    Unusable {
        /// Why, and what to do.
        why: String,
    },
}

/// Everything the probe found, and its choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// One finding per counter: powercap zones, perf power events, hardware counters, CPU time.
    pub findings: Vec<Finding>,
    /// The counters to use, summed (names as in `findings`).
    pub chosen: Vec<String>,
    /// What the choice's joules are.
    pub source: Source,
    /// The choice in words.
    pub verdict: String,
}

impl Probe {
    /// No probe: the caller chose `counter` itself (a counter of its own, or a test's).
    pub fn given(counter: &dyn EnergyCounter) -> Probe {
        Probe {
            findings: Vec::new(),
            chosen: vec![counter.name().to_owned()],
            source: counter.source(),
            verdict: format!("{} ({}), chosen by the caller", counter.name(), counter.source()),
        }
    }
}

/// Probes with a busy loop on this thread as the load.
pub fn probe(config: &ProbeConfig) -> Probe {
    let load = config.load;
    probe_with(config, || spin(load))
}

/// Keeps this thread's CPU busy for `duration`.
pub fn spin(duration: Duration) {
    let start = Instant::now();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    while start.elapsed() < duration {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

/// Probes with `load` between the two readings (tests make fake counters advance in it).
pub fn probe_with(config: &ProbeConfig, load: impl FnOnce()) -> Probe {
    probe_and_open(config, load).0
}

/// Probes, and returns the chosen counters too, summed into one, ready to be sampled.
pub fn probe_and_open(config: &ProbeConfig, load: impl FnOnce()) -> (Probe, Option<SumCounter>) {
    let mut candidates = Candidates::default();
    let mut groups: Vec<Group> = Vec::new();

    match powercap::discover(&config.powercap_root) {
        Err(e) => candidates.unusable("powercap".into(), Source::Rapl, e.to_string()),
        Ok(found) if found.is_empty() => {
            let why = format!("no intel-rapl zones under {}", config.powercap_root.display());
            candidates.unusable("powercap".into(), Source::Rapl, why);
        }
        Ok(found) => {
            candidates.rapl_found = true;
            let mut zones: Vec<Zone> = Vec::new();
            for (id, zone) in found {
                let domain = RaplZone {
                    name: zone.as_ref().ok().map(|z| z.name.clone()),
                    parent: powercap::parent_of(&id).map(str::to_owned),
                    mmio: id.starts_with("intel-rapl-mmio:"),
                    id: id.clone(),
                };
                let name = match &domain.name {
                    Some(name) => format!("powercap:{id} ({name})"),
                    None => format!("powercap:{id}"),
                };
                let counter = zone.and_then(|zone| {
                    zones.push(zone.clone());
                    PowercapCounter::open(zone)
                });
                candidates.add(name, Source::Rapl, counter.map(|c| Box::new(c) as _));
                candidates.findings.last_mut().expect("just added").zone = Some(domain);
            }
            let machine = powercap::machine_zones(&zones).into_iter().map(|z| format!("powercap:{} ({})", z.id, z.name));
            groups.push(Group { members: machine.collect(), source: Source::Rapl, how: "RAPL through powercap" });
        }
    }

    #[cfg(feature = "rapl-energy")]
    {
        let counter = super::rapl_energy::RaplEnergyCounter::open();
        candidates.rapl_found |= counter.is_ok();
        candidates.add("rapl-energy".into(), Source::Rapl, counter.map(|c| Box::new(c) as _));
        groups.push(Group { members: vec!["rapl-energy".into()], source: Source::Rapl, how: "RAPL through the rapl-energy crate" });
    }

    match perf::discover_power(&config.pmu_root) {
        Err(e) => candidates.unusable("perf:power".into(), Source::Rapl, e.to_string()),
        Ok(found) => {
            candidates.rapl_found |= !found.is_empty();
            let mut events: Vec<PowerEvent> = Vec::new();
            for (name, event) in found {
                let counter = event.and_then(|event| {
                    events.push(event.clone());
                    PerfCounter::power(&event)
                });
                candidates.add(format!("perf:power/{name}"), Source::Rapl, counter.map(|c| Box::new(c) as _));
            }
            let machine = perf::machine_events(&events).into_iter().map(|e| format!("perf:power/{}", e.name));
            groups.push(Group { members: machine.collect(), source: Source::Rapl, how: "RAPL through the perf power PMU" });
        }
    }

    let hardware = perf::online_cpus().and_then(|cpus| PerfCounter::hardware(&cpus));
    let name = "perf:instructions+cache-misses".to_owned();
    candidates.add(name.clone(), Source::PerfCounters, hardware.map(|c| Box::new(c) as _));
    groups.push(Group {
        members: vec![name],
        source: Source::PerfCounters,
        how: "hardware performance counters priced per event",
    });

    let cpu_time = CpuTimeCounter::open(config.watts_per_core);
    candidates.add("cpu-time".into(), Source::TimeModel, cpu_time.map(|c| Box::new(c) as _));
    groups.push(Group { members: vec!["cpu-time".into()], source: Source::TimeModel, how: "CPU time x watts per core" });

    let started = Instant::now();
    load();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    candidates.read_all(seconds);
    choose(candidates, &groups)
}

/// Every counter probed: its finding, and the counter itself while it is open.
#[derive(Default)]
struct Candidates {
    findings: Vec<Finding>,
    open: Vec<(usize, Box<dyn EnergyCounter>)>,
    /// Whether any RAPL zone or event exists, usable or not.
    rapl_found: bool,
}

impl Candidates {
    fn add(&mut self, name: String, source: Source, counter: Result<Box<dyn EnergyCounter>, super::CounterError>) {
        match counter {
            Ok(counter) => {
                self.findings.push(Finding { name: counter.name().to_owned(), source, status: Status::Stuck, zone: None });
                self.open.push((self.findings.len() - 1, counter));
            }
            Err(e) => self.unusable(name, source, e.to_string()),
        }
    }

    fn unusable(&mut self, name: String, source: Source, why: String) {
        self.findings.push(Finding { name, source, status: Status::Unusable { why }, zone: None });
    }

    /// Reads every open counter once more: those that advanced are usable.
    fn read_all(&mut self, seconds: f64) {
        for (i, counter) in &mut self.open {
            self.findings[*i].status = match counter.read() {
                Ok(j) if j.get() > 0.0 => Status::Usable { joules: j.get(), watts: j.get() / seconds },
                Ok(_) => Status::Stuck,
                Err(e) => Status::Unusable { why: e.to_string() },
            };
        }
    }

    fn usable(&self, name: &str) -> bool {
        self.findings.iter().any(|f| f.name == name && matches!(f.status, Status::Usable { .. }))
    }

    /// Takes the open counters named `names` out.
    fn take(&mut self, names: &[String]) -> Vec<Box<dyn EnergyCounter>> {
        let findings = &self.findings;
        let (taken, kept) = std::mem::take(&mut self.open)
            .into_iter()
            .partition::<Vec<_>, _>(|(i, _)| names.contains(&findings[*i].name));
        self.open = kept;
        taken.into_iter().map(|(_, counter)| counter).collect()
    }
}

/// Counters that together measure the machine (or, for CPU time, this process), best first.
struct Group {
    members: Vec<String>,
    source: Source,
    how: &'static str,
}

/// The first group whose counters all advanced.
fn choose(mut candidates: Candidates, groups: &[Group]) -> (Probe, Option<SumCounter>) {
    let chosen = groups.iter().find(|g| !g.members.is_empty() && g.members.iter().all(|m| candidates.usable(m)));
    let why_not_rapl = if candidates.rapl_found {
        "its RAPL counters cannot be read or do not advance"
    } else {
        "this machine shows no RAPL counters"
    };
    let Some(group) = chosen else {
        let verdict = format!("nothing measures energy here: {why_not_rapl}, and neither do the other counters");
        let probe = Probe { findings: candidates.findings, chosen: Vec::new(), source: Source::TimeModel, verdict };
        return (probe, None);
    };
    let verdict = match group.source {
        Source::Rapl => format!("{}: {}", group.how, group.members.join(" + ")),
        Source::PerfCounters => format!(
            "{}, because {why_not_rapl}: a model of energy from counted events, not a measurement of it",
            group.how
        ),
        _ => format!(
            "{}, because {why_not_rapl}: an estimate from running time, not a measurement of energy",
            group.how
        ),
    };
    let counter = SumCounter { name: group.members.join(" + "), source: group.source, parts: candidates.take(&group.members) };
    let probe = Probe { findings: candidates.findings, chosen: group.members.clone(), source: group.source, verdict };
    (probe, Some(counter))
}

/// Several counters read as one: their sum.
pub struct SumCounter {
    name: String,
    source: Source,
    parts: Vec<Box<dyn EnergyCounter>>,
}

impl EnergyCounter for SumCounter {
    fn name(&self) -> &str {
        &self.name
    }

    fn source(&self) -> Source {
        self.source
    }

    fn scope(&self) -> super::Scope {
        // A group is all machine counters or the one process counter.
        self.parts.first().map_or(super::Scope::Machine, |p| p.scope())
    }

    fn read(&mut self) -> Result<Joules, super::CounterError> {
        let mut sum = Joules::ZERO;
        for part in &mut self.parts {
            sum += part.read()?;
        }
        Ok(sum)
    }
}
