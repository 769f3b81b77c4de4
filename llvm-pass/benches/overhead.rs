//! What instrumentation costs: five workloads built plain and with `cargo ergon`, run side by
//! side in alternating order; each figure is the median over rounds of instrumented / plain.
//!
//! `cargo bench -p ergon-llvm-pass --bench overhead` (or `make bench-pass`); `ERGON_BENCH_ROUNDS`
//! overrides the 9 rounds, `ERGON_BENCH_CPU` the CPU every run is pinned to (the first this
//! process may use): on these shared machines one core can run the same binary half again as
//! fast as the other, which compared unpinned drowns what is measured.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Workload and repetitions per run (about 0.1 s each on this project's machines).
const WORKLOADS: &[(&str, u32)] = &[("hash", 100), ("sort", 30), ("nbody", 100), ("matmul", 400), ("hashmap", 20)];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Builds the workloads plain (in their own target directory: this benchmark's cargo holds the
/// lock on the usual one) and instrumented; returns both executables.
fn build() -> (PathBuf, PathBuf) {
    let root = workspace();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let plain_dir = root.join("target/overhead-plain");
    eprintln!("building the workloads plain ...");
    run(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["build", "--release", "--locked", "-p", "ergon-pass-fixtures", "--bin", "workloads"])
            .env("CARGO_TARGET_DIR", &plain_dir),
        "the plain build",
    );
    eprintln!("building the workloads instrumented (cargo ergon) ...");
    run(
        Command::new(env!("CARGO_BIN_EXE_cargo-ergon"))
            .current_dir(&root)
            .args(["ergon", "build", "--release", "--locked", "-p", "ergon-pass-fixtures", "--instrument", "ergon-pass-fixtures"]),
        "the instrumented build",
    );
    (plain_dir.join("release/workloads"), root.join("target/ergon/release/workloads"))
}

/// One run: (nanoseconds inside the process, checksum).
fn time(exe: &Path, workload: &str, reps: u32) -> (f64, String) {
    let out = Command::new(exe).args([workload, &reps.to_string()]).output().expect("the workload runs");
    assert!(out.status.success(), "{} {workload}: {}", exe.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        ["elapsed_ns", ns, "checksum", sum] => (ns.parse().expect("a number"), sum.to_string()),
        _ => panic!("unexpected output from {workload}: {text}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pins this process, and so every workload it starts, to one CPU; returns it.
fn pin() -> usize {
    // SAFETY: cpu_set_t is plain data; the calls read and write only the set given.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of_val(&allowed), &mut allowed), 0, "sched_getaffinity");
        let first = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &allowed)).expect("some CPU is allowed");
        let cpu = std::env::var("ERGON_BENCH_CPU").ok().map_or(first, |c| c.parse().expect("ERGON_BENCH_CPU is a CPU number"));
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one), 0, "cannot pin to CPU {cpu}");
        cpu
    }
}

fn main() {
    let rounds: usize = std::env::var("ERGON_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(9);
    let (plain, instrumented) = build();
    let cpu = pin();
    let mut ratios = Vec::new();
    let mut lines = Vec::new();
    for &(workload, reps) in WORKLOADS {
        let mut per_round = Vec::new();
        let (mut plain_ns, mut inst_ns) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which build goes first, so drift hits both alike.
            let ((p, p_sum), (i, i_sum)) = if round % 2 == 0 {
                let p = time(&plain, workload, reps);
                (p, time(&instrumented, workload, reps))
            } else {
                let i = time(&instrumented, workload, reps);
                (time(&plain, workload, reps), i)
            };
            assert_eq!(p_sum, i_sum, "{workload}: the instrumented build computed something else");
            per_round.push(i / p);
            plain_ns.push(p / reps as f64);
            inst_ns.push(i / reps as f64);
        }
        let ratio = median(per_round);
        eprintln!("  {workload}: plain {:.0} µs, instrumented {:.0} µs per repetition, {ratio:.3}x", median(plain_ns) / 1e3, median(inst_ns) / 1e3);
        lines.push(format!("RESULT instrumentation_overhead_{workload} {ratio:.3} x"));
        ratios.push(ratio);
    }
    println!("instrumentation overhead: {} workloads, {rounds} alternating rounds each on CPU {cpu}, median of instrumented/plain", WORKLOADS.len());
    for line in lines {
        println!("{line}");
    }
    println!("RESULT instrumentation_overhead_median {:.3} x", median(ratios));
}
