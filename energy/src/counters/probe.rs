//! Which energy counters this machine has, whether they can be read, whether they advance, and
//! which to use.
//!
//! A counter that can be read is not yet a counter that measures: some virtual machines expose
//! RAPL zones that read 0 forever. So the probe reads every counter, runs a short CPU load, reads
//! again, and calls a counter usable only if it advanced.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::powercap::{self, PowercapCounter, Zone};
use super::{CpuTimeCounter, EnergyCounter};
use crate::{Source, Watts};

/// What to probe, and how.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The powercap tree (`/sys/class/powercap`).
    pub powercap_root: PathBuf,
    /// How long the load between the two readings runs.
    pub load: Duration,
    /// The price of a second of CPU time, for the last-resort counter.
    pub watts_per_core: Watts,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            powercap_root: PathBuf::from(powercap::DEFAULT_ROOT),
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
    /// One finding per counter, RAPL zones first.
    pub findings: Vec<Finding>,
    /// The counters to use, summed (names as in `findings`).
    pub chosen: Vec<String>,
    /// What the choice's joules are.
    pub source: Source,
    /// The choice in words.
    pub verdict: String,
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
    let mut findings = Vec::new();
    let mut zones: Vec<Zone> = Vec::new();
    // Each counter that opened, with the index of its finding (filled in after the load).
    let mut open: Vec<(usize, Box<dyn EnergyCounter>)> = Vec::new();
    let mut opened = |findings: &mut Vec<Finding>, counter: Box<dyn EnergyCounter>| {
        findings.push(Finding { name: counter.name().to_owned(), source: counter.source(), status: Status::Stuck });
        open.push((findings.len() - 1, counter));
    };
    let unusable = |name: String, source, why: String| Finding { name, source, status: Status::Unusable { why } };
    match powercap::discover(&config.powercap_root) {
        Err(e) => findings.push(unusable("powercap".into(), Source::Rapl, e.to_string())),
        Ok(found) if found.is_empty() => {
            let why = format!("no intel-rapl zones under {}", config.powercap_root.display());
            findings.push(unusable("powercap".into(), Source::Rapl, why));
        }
        Ok(found) => {
            for (id, zone) in found {
                let counter = zone.and_then(|zone| {
                    zones.push(zone.clone());
                    PowercapCounter::open(zone)
                });
                match counter {
                    Ok(counter) => opened(&mut findings, Box::new(counter)),
                    Err(e) => findings.push(unusable(format!("powercap:{id}"), Source::Rapl, e.to_string())),
                }
            }
        }
    }
    match CpuTimeCounter::open(config.watts_per_core) {
        Ok(counter) => opened(&mut findings, Box::new(counter)),
        Err(e) => findings.push(unusable("cpu-time".into(), Source::TimeModel, e.to_string())),
    }

    let started = Instant::now();
    load();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    for (i, counter) in &mut open {
        findings[*i].status = match counter.read() {
            Ok(j) if j.get() > 0.0 => Status::Usable { joules: j.get(), watts: j.get() / seconds },
            Ok(_) => Status::Stuck,
            Err(e) => Status::Unusable { why: e.to_string() },
        };
    }
    choose(findings, &zones)
}

/// RAPL's machine zones if every one of them advanced, else CPU time.
fn choose(findings: Vec<Finding>, zones: &[Zone]) -> Probe {
    let usable = |name: &str| findings.iter().any(|f| f.name == name && matches!(f.status, Status::Usable { .. }));
    let machine: Vec<String> =
        powercap::machine_zones(zones).into_iter().map(|z| format!("powercap:{} ({})", z.id, z.name)).collect();
    if !machine.is_empty() && machine.iter().all(|name| usable(name)) {
        let verdict = format!("RAPL through powercap: {}", machine.join(" + "));
        return Probe { findings, chosen: machine, source: Source::Rapl, verdict };
    }
    let why_not_rapl = if zones.is_empty() {
        "this machine shows no RAPL zones".to_owned()
    } else {
        "its RAPL zones cannot be read or do not advance".to_owned()
    };
    if usable("cpu-time") {
        let verdict = format!(
            "CPU time x watts per core, because {why_not_rapl}: an estimate from running time, not a measurement of energy"
        );
        return Probe { findings, chosen: vec!["cpu-time".into()], source: Source::TimeModel, verdict };
    }
    let verdict = format!("nothing measures energy here: {why_not_rapl}, and the CPU clock did not advance");
    Probe { findings, chosen: Vec::new(), source: Source::TimeModel, verdict }
}
