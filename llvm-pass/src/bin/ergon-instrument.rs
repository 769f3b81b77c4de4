//! `ergon-instrument IN -o OUT`: one LLVM module in, the same module counting its operations out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use llvm_pass::{instrument_file, Emit, Options};

/// Instruments an LLVM module so that it counts the ALU, memory and floating-point operations it
/// executes, per thread, in counters that ergon's run time reads (`energy::measure_ops`).
///
/// The input is bitcode (`.bc`, for instance from `rustc -O --emit=llvm-bc` or from
/// `-C linker-plugin-lto`) or textual IR (`.ll`), written by the same LLVM major version as this
/// tool (rustc 1.95: LLVM 22). The output is written whole or not at all.
///
/// Example: `rustc -O --emit=llvm-bc --crate-type=lib work.rs && ergon-instrument work.bc -o work.o --emit obj --report work.json`
///
/// To build a whole cargo project instrumented, use `cargo ergon build` instead.
#[derive(Parser)]
#[command(name = "ergon-instrument", version)]
struct Cli {
    /// The module to instrument (.bc or .ll).
    input: PathBuf,
    /// Where to write the instrumented module.
    #[arg(short, long)]
    output: PathBuf,
    /// Write bitcode, a native object file, or textual IR.
    #[arg(long, value_enum, default_value = "bc")]
    emit: Emit,
    /// Also write a JSON report: for every function, its name (and demangled name), its block
    /// count and its static counts per class (alu, mem, fp, other).
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// The LLVM pipeline to run before counting (opt's -passes syntax); "" counts the module as
    /// it is.
    #[arg(long, default_value = "default<O3>")]
    before: String,
    /// The LLVM pipeline to run after the counters are added (it may move increments, never
    /// change them); "" leaves them where the pass put them.
    #[arg(long, default_value = llvm_pass::AFTER_PIPELINE)]
    after: String,
    /// The CPU to generate code for.
    #[arg(long, default_value = "x86-64")]
    cpu: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options { before: cli.before, after: cli.after, cpu: cli.cpu };
    let report = match instrument_file(&cli.input, &cli.output, cli.emit, &options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("ergon-instrument: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cli.report {
        let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
        if let Err(e) = llvm_pass::module_io::write_atomically(path, &json) {
            eprintln!("ergon-instrument: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "ergon-instrument: {} functions, {} blocks: {} ALU, {} memory, {} floating-point, {} other instructions",
        report.functions.len(),
        report.blocks,
        report.totals.alu,
        report.totals.mem,
        report.totals.fp,
        report.totals.other
    );
    ExitCode::SUCCESS
}
