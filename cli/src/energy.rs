//! `ergon energy`: what this machine can measure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use energy::counters::{probe, ProbeConfig, Status};
use energy::Watts;

#[derive(Subcommand)]
pub enum EnergyCommand {
    /// List every energy counter of this machine, whether it can be read, and whether it
    /// advances under a short CPU load; then say which ergon would use.
    ///
    /// The counters, best first: RAPL through powercap sysfs, RAPL through the perf `power` PMU,
    /// hardware performance counters (instructions and cache misses, priced per event), and the
    /// process's CPU time x watts per core.
    ///
    /// A counter that can be read but does not advance (as on many virtual machines) measures
    /// nothing and is reported as stuck. RAPL's energy_uj files are readable by root only since
    /// CVE-2020-8694; the listing says how to grant access. Without usable RAPL the choice is the
    /// process's CPU time x watts per core, an estimate that the listing names as such.
    ///
    /// Examples:
    ///   ergon energy probe
    ///   ergon energy probe --powercap-root /tmp/fake-powercap --json
    Probe {
        /// The powercap sysfs tree to read.
        #[arg(long, default_value = energy::counters::powercap::DEFAULT_ROOT)]
        powercap_root: PathBuf,
        /// Where the perf PMUs are listed (the `power` PMU is RAPL through perf).
        #[arg(long, default_value = energy::counters::perf::DEFAULT_PMU_ROOT)]
        pmu_root: PathBuf,
        /// How long the CPU load between the two readings runs, in milliseconds.
        #[arg(long, default_value_t = 200)]
        load_ms: u64,
        /// Watts per core for the CPU-time estimate.
        #[arg(long, default_value_t = 12.5)]
        watts_per_core: f64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: EnergyCommand) -> Result<ExitCode> {
    match command {
        EnergyCommand::Probe { powercap_root, pmu_root, load_ms, watts_per_core, json } => {
            let config = ProbeConfig {
                powercap_root,
                pmu_root,
                load: Duration::from_millis(load_ms),
                watts_per_core: Watts::new(watts_per_core)?,
            };
            if !json {
                eprintln!("probing: reading every counter, {load_ms} ms of CPU load, reading again ...");
            }
            let found = probe(&config);
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<34} {:<14} {:<9} detail", "counter", "source", "status");
            for f in &found.findings {
                let (status, detail) = match &f.status {
                    Status::Usable { joules, watts } => ("usable", format!("{joules:.3} J during the load, {watts:.2} W")),
                    Status::Stuck => ("stuck", format!("did not advance during {load_ms} ms of load: measures nothing here")),
                    Status::Unusable { why } => ("unusable", why.clone()),
                };
                println!("{:<34} {:<14} {:<9} {detail}", f.name, f.source.as_str(), status);
            }
            println!("\nergon uses: {}", found.verdict);
            Ok(ExitCode::SUCCESS)
        }
    }
}
