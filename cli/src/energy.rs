//! `ergon energy`: what this machine can measure, and calibrating the cost model against it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use energy::calibration::{fit, measure, Fit, Observation, Profile, MIXES};
use energy::counters::{probe, probe_and_open, EnergyCounter, ProbeConfig, Status};
use energy::{Source, Watts};
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Fit joules per ALU, memory and floating-point operation to this machine's energy counter,
    /// and write a profile that the gate loads.
    ///
    /// Probes the counters as `ergon energy probe` does and samples the best one while
    /// micro-workloads run seven mixes of ALU, memory and FP work, each at three duty cycles
    /// (busy all of the run, half, a quarter, so that the idle power can be told apart). The
    /// operations are counted by ergon's LLVM pass, so this binary must be built with
    /// `make calibrate`. The fit is non-negative least squares; it is printed with R² and every
    /// run's residual, and drawn as an SVG of predicted against measured joules.
    ///
    /// Only a fit to RAPL goes into the profile. On a machine without it the counter is CPU time,
    /// an estimate that says nothing about joules per operation: the command says so, shows the
    /// fit anyway, and writes the documented default model (70 pJ per ALU operation, Horowitz,
    /// ISSCC 2014; memory 5x, FP 3x).
    ///
    /// Load the profile with `[energy] profile = "PATH"` in the configuration.
    ///
    /// Examples:
    ///   make calibrate
    ///   target/ergon/release/ergon energy calibrate --repeats 6 --run-ms 500 --out profile.json
    Calibrate {
        /// The powercap sysfs tree to read.
        #[arg(long, default_value = energy::counters::powercap::DEFAULT_ROOT)]
        powercap_root: PathBuf,
        /// Where the perf PMUs are listed.
        #[arg(long, default_value = energy::counters::perf::DEFAULT_PMU_ROOT)]
        pmu_root: PathBuf,
        /// How many times each mix runs (cycling through the three duty cycles).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        repeats: u32,
        /// How long each run lasts, in milliseconds.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..))]
        run_ms: u64,
        /// Watts per core for the CPU-time estimate.
        #[arg(long, default_value_t = 12.5)]
        watts_per_core: f64,
        /// Where to write the profile (JSON).
        #[arg(long, default_value = "ergon-energy-profile.json")]
        out: PathBuf,
        /// Where to draw the fit (SVG).
        #[arg(long, default_value = "ergon-energy-calibration.svg")]
        plot: PathBuf,
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
            // Subzones (core, uncore, dram) under their package, every zone by its name.
            let shown: Vec<String> = found
                .findings
                .iter()
                .map(|f| match f.zone.as_ref().and_then(|z| z.parent.as_ref()) {
                    Some(_) => format!("  └ {}", f.name),
                    None => f.name.clone(),
                })
                .collect();
            let width = shown.iter().map(|s| s.chars().count()).max().unwrap_or(0).max("counter".len());
            println!("{:<width$} {:<14} {:<9} detail", "counter", "source", "status");
            for (f, shown) in found.findings.iter().zip(&shown) {
                let (status, detail) = match &f.status {
                    Status::Usable { joules, watts } => ("usable", format!("{joules:.3} J during the load, {watts:.2} W")),
                    Status::Stuck => ("stuck", format!("readable, but did not advance during {load_ms} ms of load: measures nothing here")),
                    Status::Unusable { why } => ("unusable", why.clone()),
                };
                let chosen = if found.chosen.contains(&f.name) { " [used]" } else { "" };
                println!("{shown:<width$} {:<14} {:<9} {detail}{chosen}", f.source.as_str(), status);
            }
            println!("\nergon uses: {}", found.verdict);
            Ok(ExitCode::SUCCESS)
        }
        EnergyCommand::Calibrate { powercap_root, pmu_root, repeats, run_ms, watts_per_core, out, plot } => {
            let config = ProbeConfig {
                powercap_root,
                pmu_root,
                load: Duration::from_millis(200),
                watts_per_core: Watts::new(watts_per_core)?,
            };
            calibrate(&config, repeats as usize, Duration::from_millis(run_ms), &out, &plot)
        }
    }
}

fn calibrate(config: &ProbeConfig, repeats: usize, each: Duration, out: &Path, plot: &Path) -> Result<ExitCode> {
    if energy::instrumentation() != energy::Instrumentation::Instrumented {
        bail!(
            "this ergon binary is not instrumented by ergon's LLVM pass, so it cannot count the operations \
             it would fit: build and run it with `make calibrate`"
        );
    }
    eprintln!("probing the energy counters ...");
    let load = config.load;
    let (probe, counter) = probe_and_open(config, || energy::counters::probe::spin(load));
    let Some(mut counter) = counter else { bail!("{}", probe.verdict) };
    println!("counter: {}", probe.verdict);
    let rapl = probe.source == Source::Rapl;
    if !rapl {
        println!(
            "NOTE: {} is not RAPL. The fit below says nothing about joules per operation; the profile keeps \
             the documented default.",
            counter.name()
        );
    }
    let mut work = workloads::Workloads::new();
    let total = MIXES.len() * repeats;
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs, {eta} left").expect("a constant template"),
    );
    bar.set_message("calibrating");
    let runs = measure(
        &mut counter,
        repeats,
        each,
        |mix, deadline| {
            work.run([mix.alu, mix.mem, mix.fp], deadline);
        },
        |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let fitted = fit(&runs)?;
    print_fit(&runs, &fitted);
    draw(plot, &runs, &fitted, counter.name())?;
    println!("drawn: {}", plot.display());
    let profile = Profile::new(counter.name(), probe.source, fitted, runs);
    profile.save(out)?;
    println!("profile: {} ({})", out.display(), profile.basis);
    println!("load it with `[energy] profile = \"{}\"` in the configuration", out.display());
    Ok(ExitCode::SUCCESS)
}

fn print_fit(runs: &[Observation], fitted: &Fit) {
    let [alu, mem, fp] = fitted.joules_per_op;
    println!(
        "\nfit: ALU {:.3} nJ, memory {:.3} nJ, FP {:.3} nJ per operation; {:.3} W whatever runs; R² {:.5}",
        alu * 1e9,
        mem * 1e9,
        fp * 1e9,
        fitted.idle_watts,
        fitted.r_squared
    );
    println!("{:<11} {:>8} {:>14} {:>14} {:>14} {:>11} {:>11} {:>9}", "mix", "seconds", "alu", "memory", "fp", "measured J", "fitted J", "residual");
    for (run, residual) in runs.iter().zip(&fitted.residuals) {
        println!(
            "{:<11} {:>8.3} {:>14} {:>14} {:>14} {:>11.4} {:>11.4} {:>8.2}%",
            run.mix,
            run.seconds,
            run.ops.alu,
            run.ops.mem,
            run.ops.fp,
            run.joules,
            fitted.predict(&run.ops, run.seconds),
            residual * 100.0
        );
    }
}

/// Fitted against measured joules, one point per run, with the line where they are equal.
fn draw(path: &Path, runs: &[Observation], fitted: &Fit, counter: &str) -> Result<()> {
    use plotters::prelude::*;
    let points: Vec<(f64, f64)> = runs.iter().map(|r| (r.joules, fitted.predict(&r.ops, r.seconds))).collect();
    let top = points.iter().flat_map(|(a, b)| [*a, *b]).fold(0.0, f64::max).max(1e-12) * 1.05;
    let root = SVGBackend::new(path, (720, 540)).into_drawing_area();
    let chart = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("ergon calibration against {counter}: R² {:.4}", fitted.r_squared), ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..top, 0.0..top)?;
        chart.configure_mesh().x_desc("measured J").y_desc("fitted J").draw()?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (top, top)], &BLACK))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
        root.present()?;
        Ok(())
    };
    chart().map_err(|e| anyhow::anyhow!("{}: cannot draw the fit: {e}", path.display()))
}
