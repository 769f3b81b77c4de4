//! Calibration on synthetic runs: known coefficients come back, within 1% under noise, and the
//! profile keeps the documented default unless the counter is RAPL.

use energy::calibration::{fit, CalibrationError, Observation, Profile, DEFAULT_BASIS, DUTY_CYCLES, MIXES};
use energy::{CostModel, OpCounts, Source};

/// Joules per ALU, memory and FP operation, and idle watts, of a made-up machine.
const TRUTH: ([f64; 3], f64) = ([0.5e-9, 2.0e-9, 1.0e-9], 5.0);

/// Deterministic noise in [-1, 1].
fn noise(i: usize) -> f64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// Every mix three times, busy for each duty cycle in turn, as `energy::calibration::measure`
/// would record them on that machine,
/// with the measured joules off by up to `relative_noise`.
fn runs(relative_noise: f64) -> Vec<Observation> {
    let ([alu_j, mem_j, fp_j], idle) = TRUTH;
    let mut runs = Vec::new();
    for (repeat, duty) in DUTY_CYCLES.iter().enumerate() {
        for (m, mix) in MIXES.iter().enumerate() {
            let i = repeat * MIXES.len() + m;
            let seconds = 0.15 + 0.1 * (noise(i + 100) + 1.0) / 2.0;
            // About a billion operations a second while busy, shared among the mix's classes.
            let per_unit = (seconds * duty * 1e9 / 4.0) as u64;
            let ops = OpCounts {
                alu: per_unit * u64::from(mix.alu) + 1000,
                mem: per_unit * u64::from(mix.mem) / 4 + 1000,
                fp: per_unit * u64::from(mix.fp) + 1000,
                total: 0,
            };
            let exact = ops.alu as f64 * alu_j + ops.mem as f64 * mem_j + ops.fp as f64 * fp_j + seconds * idle;
            runs.push(Observation { mix: mix.name.into(), ops, seconds, joules: exact * (1.0 + relative_noise * noise(i)) });
        }
    }
    runs
}

fn within(got: f64, want: f64, relative: f64) -> bool {
    (got - want).abs() <= want.abs() * relative
}

#[test]
fn exact_runs_give_back_the_coefficients() {
    let fitted = fit(&runs(0.0)).unwrap();
    for (got, want) in fitted.joules_per_op.iter().zip(TRUTH.0) {
        assert!(within(*got, want, 1e-6), "{got} vs {want}");
    }
    assert!(within(fitted.idle_watts, TRUTH.1, 1e-6));
    assert!(fitted.r_squared > 0.999_999_9 && fitted.residuals.iter().all(|r| r.abs() < 1e-9));
}

#[test]
fn noisy_runs_give_back_the_coefficients_within_one_percent() {
    let runs = runs(0.001);
    let fitted = fit(&runs).unwrap();
    for (class, (got, want)) in ["alu", "memory", "fp"].iter().zip(fitted.joules_per_op.iter().zip(TRUTH.0)) {
        assert!(within(*got, want, 0.01), "{class}: {got} vs {want}");
    }
    assert!(within(fitted.idle_watts, TRUTH.1, 0.01), "{}", fitted.idle_watts);
    assert_eq!(fitted.residuals.len(), runs.len());
    assert!(fitted.residuals.iter().all(|r| r.abs() < 0.002), "residuals are of the order of the noise");
}

#[test]
fn a_class_that_costs_nothing_is_zero_not_negative() {
    // Memory is free on this machine, and the noise would push an unconstrained fit below zero.
    let mut runs = runs(0.0);
    for (i, run) in runs.iter_mut().enumerate() {
        run.joules -= run.ops.mem as f64 * TRUTH.0[1];
        run.joules *= 1.0 + 0.002 * noise(i + 7);
    }
    let fitted = fit(&runs).unwrap();
    assert!(fitted.joules_per_op.iter().all(|j| *j >= 0.0), "{fitted:?}");
    assert!(fitted.joules_per_op[1] < 1e-11, "{fitted:?}");
    assert_eq!(fit(&runs[..3]).unwrap_err(), CalibrationError::TooFewRuns { runs: 3 });
}

#[test]
fn the_profile_uses_the_fit_only_for_rapl() {
    let runs = runs(0.0);
    let fitted = fit(&runs).unwrap();
    let rapl = Profile::new("powercap:intel-rapl:0 (package-0)", Source::Rapl, fitted.clone(), runs.clone());
    let model = rapl.cost_model;
    assert!(within(model.unit_energy.get(), 0.5e-9, 1e-6) && within(model.weights.mem, 4.0, 1e-6), "{model:?}");
    assert!(rapl.basis.contains("RAPL"), "{}", rapl.basis);

    let estimate = Profile::new("cpu-time", Source::TimeModel, fitted, runs);
    assert_eq!(estimate.cost_model, CostModel::default());
    assert!(estimate.basis.contains("cpu-time is not RAPL") && estimate.basis.contains(DEFAULT_BASIS), "{}", estimate.basis);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    rapl.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), rapl);
    std::fs::write(&path, "{\"cost_model\": 3}").unwrap();
    let err = Profile::load(&path).unwrap_err().to_string();
    assert!(err.contains("profile.json: not a calibration profile"), "{err}");
    let err = Profile::load(&dir.path().join("none.json")).unwrap_err().to_string();
    assert!(err.contains("none.json"), "{err}");
}
