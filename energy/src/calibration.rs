//! Fitting joules per operation to a machine's energy counter.
//!
//! [`measure`] runs a workload in several mixes of ALU, memory and floating-point work and records,
//! for each run, the operations the LLVM pass counted, the time it took and the energy the counter
//! saw. [`fit`] finds the non-negative joules per operation of each class, plus the power drawn
//! whatever runs (idle, other processes), that best explain the runs:
//!
//! `joules ≈ alu × j_alu + mem × j_mem + fp × j_fp + seconds × idle_watts`
//!
//! by non-negative least squares, and reports how well it fits (R², each run's residual).
//! [`Profile`] is what the gate loads: a fitted [`CostModel`] where the counter is RAPL, and the
//! documented default where it is not (a CPU-time estimate says nothing about joules per
//! operation).
//!
//! ```
//! use energy::calibration::{fit, Observation};
//! use energy::OpCounts;
//!
//! // Three runs of a machine where an ALU operation costs 0.1 nJ, a memory one 2 nJ, an FP one
//! // 0.5 nJ, and everything else draws 3 W.
//! let run = |alu: u64, mem: u64, fp: u64, seconds: f64| Observation {
//!     mix: "test".into(),
//!     ops: OpCounts { alu, mem, fp, total: alu + mem + fp },
//!     seconds,
//!     joules: alu as f64 * 1e-10 + mem as f64 * 2e-9 + fp as f64 * 5e-10 + seconds * 3.0,
//! };
//! let runs = [run(1_000_000_000, 0, 0, 0.2), run(0, 100_000_000, 0, 0.3), run(0, 0, 500_000_000, 0.25), run(10, 10, 10, 0.1)];
//! let fitted = fit(&runs)?;
//! assert!((fitted.joules_per_op[1] - 2e-9).abs() < 1e-15);
//! assert!((fitted.idle_watts - 3.0).abs() < 1e-6);
//! assert!(fitted.r_squared > 0.999_999);
//! # Ok::<(), energy::calibration::CalibrationError>(())
//! ```

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::counters::{CounterError, EnergyCounter};
use crate::{CostModel, Joules, OpCounts, OpWeights, Source};

/// Why a calibration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// Fewer runs than unknowns.
    #[error("a fit of 4 coefficients needs at least 4 runs; {runs} given")]
    TooFewRuns {
        /// How many runs were given.
        runs: usize,
    },
    /// The runs counted no operations: the binary is not instrumented by ergon's LLVM pass.
    #[error(
        "the workloads counted no operations: this binary is not instrumented by ergon's LLVM pass \
         (build it with `make calibrate`, which uses `cargo ergon`)"
    )]
    NotInstrumented,
    /// The energy counter failed.
    #[error("the energy counter failed: {0}")]
    Counter(#[from] CounterError),
    /// A profile file could not be read or written.
    #[error("{path}: {why}")]
    Profile {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// A mix of work: how many units of each class one round of the workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// Its name in reports.
    pub name: &'static str,
    /// Units of ALU work per round.
    pub alu: u32,
    /// Units of memory work per round.
    pub mem: u32,
    /// Units of floating-point work per round.
    pub fp: u32,
}

/// The mixes a calibration runs: each class alone, each pair, and all three, so that no two
/// columns of the fit move together.
pub const MIXES: [Mix; 7] = [
    Mix { name: "alu", alu: 4, mem: 0, fp: 0 },
    Mix { name: "memory", alu: 0, mem: 4, fp: 0 },
    Mix { name: "fp", alu: 0, mem: 0, fp: 4 },
    Mix { name: "alu+memory", alu: 3, mem: 1, fp: 0 },
    Mix { name: "memory+fp", alu: 0, mem: 1, fp: 3 },
    Mix { name: "alu+fp", alu: 1, mem: 0, fp: 3 },
    Mix { name: "all", alu: 2, mem: 1, fp: 1 },
];

/// One run: what was counted, how long it took, what the counter saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The mix it ran.
    pub mix: String,
    /// Operations the pass counted.
    pub ops: OpCounts,
    /// Wall-clock time.
    pub seconds: f64,
    /// Energy the counter measured.
    pub joules: f64,
}

/// The share of each run the workload is busy, by repeat: a run that is busy throughout does work
/// in proportion to its time, so the idle power could not be told apart from the operations'
/// energy; runs that rest for part of their time can.
pub const DUTY_CYCLES: [f64; 3] = [1.0, 0.5, 0.25];

/// Runs every mix `repeats` times for `each`, reading `counter` around every run, and calls
/// `progress(done, total)` after each. In repeat `r` the workload is busy for
/// `DUTY_CYCLES[r % 3]` of the run and sleeps for the rest. `workload(mix, deadline)` runs rounds
/// of the mix until the deadline; it must be compiled by ergon's LLVM pass, or nothing is counted.
pub fn measure(
    counter: &mut dyn EnergyCounter,
    repeats: usize,
    each: Duration,
    mut workload: impl FnMut(&Mix, Instant),
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Observation>, CalibrationError> {
    let total = MIXES.len() * repeats;
    let mut observations = Vec::with_capacity(total);
    for repeat in 0..repeats {
        let duty = DUTY_CYCLES[repeat % DUTY_CYCLES.len()];
        for mix in &MIXES {
            let ops_before = crate::measure_ops().map_err(|_| CalibrationError::NotInstrumented)?;
            let joules_before = counter.read()?;
            let start = Instant::now();
            workload(mix, start + each.mul_f64(duty));
            std::thread::sleep((start + each).saturating_duration_since(Instant::now()));
            let seconds = start.elapsed().as_secs_f64();
            let joules = counter.read()?.saturating_sub(joules_before).get();
            let ops = crate::measure_ops().map_err(|_| CalibrationError::NotInstrumented)?.since(&ops_before);
            observations.push(Observation { mix: mix.name.into(), ops, seconds, joules });
            progress(observations.len(), total);
        }
    }
    if observations.iter().all(|o| o.ops.alu + o.ops.mem + o.ops.fp == 0) {
        return Err(CalibrationError::NotInstrumented);
    }
    Ok(observations)
}

/// The fitted coefficients and how well they explain the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Joules per ALU, memory and floating-point operation.
    pub joules_per_op: [f64; 3],
    /// Power drawn whatever runs.
    pub idle_watts: f64,
    /// 1 − residual sum of squares / total sum of squares.
    pub r_squared: f64,
    /// Each run's (predicted − measured) / measured, in the order given.
    pub residuals: Vec<f64>,
}

impl Fit {
    /// The energy this fit predicts for `ops` over `seconds`.
    pub fn predict(&self, ops: &OpCounts, seconds: f64) -> f64 {
        let [a, m, f] = self.joules_per_op;
        ops.alu as f64 * a + ops.mem as f64 * m + ops.fp as f64 * f + seconds * self.idle_watts
    }

    /// The fit as a cost model: the ALU operation's energy as the unit, the others relative to
    /// it (or picojoules as the unit, if the fit gave ALU operations no energy).
    pub fn cost_model(&self) -> CostModel {
        let [a, m, f] = self.joules_per_op;
        let unit = if a > 0.0 { a } else { 1e-12 };
        CostModel {
            weights: OpWeights { alu: a / unit, mem: m / unit, fp: f / unit },
            unit_energy: Joules::new(unit).unwrap_or(Joules::ZERO),
        }
    }
}

/// Fits joules per operation of each class and the idle power to `runs` by non-negative least
/// squares.
pub fn fit(runs: &[Observation]) -> Result<Fit, CalibrationError> {
    if runs.len() < 4 {
        return Err(CalibrationError::TooFewRuns { runs: runs.len() });
    }
    let rows: Vec<[f64; 4]> =
        runs.iter().map(|r| [r.ops.alu as f64, r.ops.mem as f64, r.ops.fp as f64, r.seconds]).collect();
    let y: Vec<f64> = runs.iter().map(|r| r.joules).collect();
    let x = nnls(&rows, &y);
    let fit = Fit { joules_per_op: [x[0], x[1], x[2]], idle_watts: x[3], r_squared: 0.0, residuals: Vec::new() };
    let predicted: Vec<f64> = runs.iter().map(|r| fit.predict(&r.ops, r.seconds)).collect();
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_res: f64 = y.iter().zip(&predicted).map(|(y, p)| (y - p).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|y| (y - mean).powi(2)).sum();
    let r_squared = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else if ss_res == 0.0 { 1.0 } else { 0.0 };
    let residuals = y.iter().zip(&predicted).map(|(y, p)| if *y != 0.0 { (p - y) / y } else { *p }).collect();
    Ok(Fit { r_squared, residuals, ..fit })
}

/// Non-negative least squares for four unknowns: the best unconstrained least-squares solution
/// over every subset of the unknowns that comes out non-negative. With 16 subsets this is exact,
/// and simpler than an active-set method.
fn nnls(rows: &[[f64; 4]], y: &[f64]) -> [f64; 4] {
    // Columns are scaled to unit norm first: operation counts (1e9) and seconds (0.1) differ by
    // ten orders of magnitude.
    let norms: [f64; 4] = std::array::from_fn(|j| rows.iter().map(|r| r[j] * r[j]).sum::<f64>().sqrt());
    let mut best = ([0.0; 4], y.iter().map(|v| v * v).sum::<f64>());
    for subset in 1u32..16 {
        let columns: Vec<usize> = (0..4).filter(|j| subset & (1 << j) != 0 && norms[*j] > 0.0).collect();
        if columns.len() != subset.count_ones() as usize {
            continue;
        }
        let k = columns.len();
        let mut ata = vec![vec![0.0; k + 1]; k];
        for (row, target) in rows.iter().zip(y) {
            for (a, &ja) in columns.iter().enumerate() {
                let xa = row[ja] / norms[ja];
                for (b, &jb) in columns.iter().enumerate() {
                    ata[a][b] += xa * row[jb] / norms[jb];
                }
                ata[a][k] += xa * target;
            }
        }
        let Some(solution) = solve(ata) else { continue };
        if solution.iter().any(|v| *v < 0.0) {
            continue;
        }
        let mut x = [0.0; 4];
        for (&j, v) in columns.iter().zip(&solution) {
            x[j] = v / norms[j];
        }
        let residual: f64 = rows.iter().zip(y).map(|(r, t)| (t - (0..4).map(|j| r[j] * x[j]).sum::<f64>()).powi(2)).sum();
        if residual < best.1 {
            best = (x, residual);
        }
    }
    best.0
}

/// Solves an augmented k × (k+1) system by Gaussian elimination with partial pivoting; `None` if
/// it is singular.
fn solve(mut m: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = m.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (cell, pivot) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *cell -= factor * pivot;
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

/// What the gate loads: a cost model and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The model the gate prices operation counts with.
    pub cost_model: CostModel,
    /// What the model's numbers come from, in words.
    pub basis: String,
    /// The counter the runs were measured with, and what its joules are.
    pub counter: String,
    /// What the counter's joules are.
    pub source: Source,
    /// The fit to the runs, kept even when the model is the default, so it can be inspected.
    pub fit: Fit,
    /// The runs.
    pub runs: Vec<Observation>,
}

/// Where the documented default comes from.
pub const DEFAULT_BASIS: &str = "default: ALU 70 pJ per operation (Horowitz, \"Computing's energy problem\", \
    ISSCC 2014, a simple instruction on a 45 nm core), memory 5x and FP 3x (the reference design's weights)";

impl Profile {
    /// The profile for `runs` measured with `counter`: the fit's model where the counter is RAPL,
    /// else the default model, saying why.
    pub fn new(counter: &str, source: Source, fit: Fit, runs: Vec<Observation>) -> Profile {
        let (cost_model, basis) = if source == Source::Rapl {
            (fit.cost_model(), format!("fit to {counter} (RAPL) over {} runs, R² {:.4}", runs.len(), fit.r_squared))
        } else {
            let why = format!("{counter} is not RAPL ({source}), so its fit says nothing about joules per operation; ");
            (CostModel::default(), format!("{why}{DEFAULT_BASIS}"))
        };
        Profile { cost_model, basis, counter: counter.to_owned(), source, fit, runs }
    }

    /// Reads a profile written by `ergon energy calibrate`.
    pub fn load(path: &std::path::Path) -> Result<Profile, CalibrationError> {
        let error = |why: String| CalibrationError::Profile { path: path.display().to_string(), why };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| error(format!("not a calibration profile: {e}")))
    }

    /// Writes it as JSON, through a temporary file, so a crash leaves the old profile or the new
    /// one, never half of one.
    pub fn save(&self, path: &std::path::Path) -> Result<(), CalibrationError> {
        let error = |why: String| CalibrationError::Profile { path: path.display().to_string(), why };
        let text = serde_json::to_string_pretty(self).map_err(|e| error(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| error(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| error(e.to_string()))
    }
}
