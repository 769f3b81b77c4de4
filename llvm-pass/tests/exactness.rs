//! Dynamic counts of instrumented code are exact: programs with known operation counts report
//! them, up to a per-call constant stated below, and threads keep their own counts.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, Deserialize, Clone, Copy)]
struct Run {
    n: u64,
    alu: u64,
    mem: u64,
    fp: u64,
    total: u64,
}

/// Runs of each scenario, in order of increasing `n`.
fn runs() -> BTreeMap<String, Vec<Run>> {
    let exe = common::instrumented_fixtures().join("exact");
    let out = Command::new(&exe).output().expect("the fixture runs");
    assert!(out.status.success(), "{} failed: {}", exe.display(), String::from_utf8_lossy(&out.stderr));
    let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).expect("UTF-8").lines() {
        #[derive(Deserialize)]
        struct Line {
            scenario: String,
            #[serde(flatten)]
            run: Run,
        }
        let line: Line = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        runs.entry(line.scenario).or_default().push(line.run);
    }
    runs
}

/// Asserts `value(run) == slope·n + c` with one constant `c` for every run, `c <= max_constant`,
/// and returns `c`.
fn exactly(scenario: &str, runs: &[Run], class: &str, value: impl Fn(&Run) -> u64, slope: u64, max_constant: u64) -> u64 {
    assert!(runs.len() >= 3, "{scenario}: {runs:?}");
    let constant = |r: &Run| value(r).checked_sub(slope * r.n).unwrap_or_else(|| panic!("{scenario}: {class} below {slope}·n: {r:?}"));
    let c = constant(&runs[0]);
    for r in runs {
        assert_eq!(constant(r), c, "{scenario}: {class} is not {slope}·n + {c} at n = {}: {runs:?}", r.n);
    }
    assert!(c <= max_constant, "{scenario}: per-call constant {c} for {class} exceeds {max_constant}");
    c
}

#[test]
fn known_programs_count_exactly() {
    let runs = runs();
    let fp = |r: &Run| r.fp;
    // Floating-point additions are counted exactly: no constant at all, whatever the optimiser
    // did to the loops (they are unrolled).
    for scenario in ["fp_adds", "nested", "early_return", "panic", "recursion"] {
        exactly(scenario, &runs[scenario], "fp", fp, 1, 0);
    }
    // Three per whole iteration, two in the one that leaves in the middle: nothing else.
    assert_eq!(exactly("mid_iteration_exit", &runs["mid_iteration_exit"], "fp", fp, 3, 2), 2);
    // Three per value, one more in each of the five cold calls the loop makes: nothing else.
    assert_eq!(exactly("cold_calls_in_a_loop", &runs["cold_calls_in_a_loop"], "fp", fp, 3, 5), 5);
    // One volatile load and one volatile store per iteration, plus at most 16 memory
    // operations per call (the measurement closure and black_box spill a few).
    exactly("loads_and_stores", &runs["loads_and_stores"], "mem", |r| r.mem, 2, 16);
    exactly("loads_and_stores", &runs["loads_and_stores"], "fp", fp, 0, 0);
    // Memory operations outside the loops do not depend on n.
    for scenario in ["fp_adds", "early_return", "panic"] {
        exactly(scenario, &runs[scenario], "mem", |r| r.mem, 0, 32);
    }
    // ALU counts depend on how the loops were compiled, but must grow with the work.
    for (scenario, runs) in &runs {
        if scenario.starts_with("thread") {
            continue;
        }
        assert!(runs[2].alu > runs[0].alu, "{scenario}: {runs:?}");
        for r in runs {
            assert!(r.total >= r.alu + r.mem + r.fp, "{scenario}: {r:?}");
        }
    }
}

#[test]
fn threads_count_their_own_work_only() {
    let runs = runs();
    for k in 1..=4 {
        let scenario = format!("thread_{k}");
        exactly(&scenario, &runs[&scenario], "fp", |r| r.fp, 1, 0);
    }
    // The parent spawned children that did 10·n additions between its two readings; none of
    // them reached its counters, and its own count does not grow with n.
    let parent = &runs["threads_parent"];
    for r in parent {
        assert_eq!(r.fp, 0, "{parent:?}");
    }
    assert!(parent[2].total.abs_diff(parent[1].total) < 100, "{parent:?}");
}
