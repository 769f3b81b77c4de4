//! ergon's LLVM instrumentation: per-thread counts of the ALU, memory and floating-point
//! operations that Rust code executes.
//!
//! The pass reads a module (rustc's bitcode, or textual IR), finishes its optimisation,
//! classifies every instruction ([`classify`] holds the table), adds at each basic block the
//! increments of thread-local counters ([`instrument`] says which symbols), verifies the module
//! and writes bitcode or an object file. The energy crate's run time reads the counters
//! (`energy::measure_ops`).
//!
//! Two binaries use it: `ergon-instrument` (one file in, one file out) and `cargo-ergon` (a whole
//! cargo build, see [`build`]).
//!
//! ```no_run
//! use inkwell::context::Context;
//! use llvm_pass::{instrument_module, module_io, Options};
//!
//! let ctx = Context::create();
//! let module = module_io::load(&ctx, "app.bc".as_ref())?;
//! let report = instrument_module(&module, &Options::default())?;
//! println!("{} functions, {} floating-point instructions", report.functions.len(), report.totals.fp);
//! # Ok::<(), llvm_pass::PassError>(())
//! ```

pub mod build;
pub mod classify;
pub mod instrument;
pub mod module_io;
mod placement;
pub mod producer;
pub mod report;

use std::path::{Path, PathBuf};

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::TargetMachine;

pub use module_io::Emit;
pub use report::{FunctionReport, Report};

/// Everything that can go wrong between reading a module and writing its instrumented form.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The input is empty.
    #[error("{path} is empty: expected LLVM bitcode (.bc) or textual IR (.ll)")]
    Empty { path: PathBuf },
    /// The input is not a module LLVM can parse.
    #[error("{path} is not a valid LLVM module: {detail}")]
    Malformed { path: PathBuf, detail: String },
    /// The bitcode was written by an LLVM this one cannot read.
    #[error(
        "{path} was written by {producer}, and this ergon-instrument runs on {reader}, which cannot \
         read it; build the input with the rustc whose LLVM matches (rustc --version --verbose shows it)"
    )]
    VersionMismatch { path: PathBuf, producer: String, reader: String },
    /// The module already defines the counters.
    #[error("the module is already instrumented (it defines `{}`); instrumenting twice would count twice", instrument::COUNTERS_SYMBOL)]
    AlreadyInstrumented,
    /// No code generator for the module's target.
    #[error("cannot generate code for target {triple}: {detail}")]
    Target { triple: String, detail: String },
    /// An LLVM pass pipeline failed.
    #[error("the LLVM pipeline {pipeline:?} failed: {detail}")]
    Pipeline { pipeline: String, detail: String },
    /// The instrumented module is invalid: a bug in the pass.
    #[error("the instrumented module does not verify (a bug in ergon's pass; nothing was written): {detail}")]
    Verify { detail: String },
    /// Code generation failed.
    #[error("code generation failed: {detail}")]
    Codegen { detail: String },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// How to instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The LLVM pipeline run before counting. rustc's `-C linker-plugin-lto` bitcode has only had
    /// the pre-link half of the optimiser, so the default runs the whole of it; counting after
    /// it means the counts describe the code that runs. Empty: count the module as it is.
    pub before: String,
    /// The pipeline run after the counters are added, which lets LLVM keep counters in registers
    /// inside loops (the counts were taken already and do not change).
    pub after: String,
    /// The CPU to generate code for (rustc's default is `x86-64`).
    pub cpu: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { before: "default<O3>".into(), after: AFTER_PIPELINE.into(), cpu: "x86-64".into() }
    }
}

/// Turns the pass's accumulators and counts into registers (SROA), folds what is constant, and
/// lets indvars replace a count read after a loop by its closed form where that is cheap (the
/// compared bound, mostly). Exact by construction: every rewrite is one LLVM proves.
pub const AFTER_PIPELINE: &str = "function(sroa,instcombine<no-verify-fixpoint>,simplifycfg,loop(indvars),instcombine<no-verify-fixpoint>,simplifycfg)";

/// Optimises (per `options.before`), instruments, verifies and re-optimises `module` in place.
pub fn instrument_module(module: &Module<'_>, options: &Options) -> Result<Report, PassError> {
    let machine = module_io::target_machine(module, &options.cpu)?;
    instrument_with(module, &machine, options)
}

fn instrument_with(module: &Module<'_>, machine: &TargetMachine, options: &Options) -> Result<Report, PassError> {
    if !options.before.is_empty() {
        module_io::run_pipeline(module, machine, &options.before)?;
    }
    let report = instrument::instrument(module)?;
    module_io::verify(module)?;
    if !options.after.is_empty() {
        module_io::run_pipeline(module, machine, &options.after)?;
    }
    Ok(report)
}

/// Instruments a module held in memory (`name` names it in errors) and returns it as `emit`
/// asks, with the report.
pub fn instrument_bytes(input: &[u8], name: &Path, emit: Emit, options: &Options) -> Result<(Vec<u8>, Report), PassError> {
    let ctx = Context::create();
    let module = module_io::parse(&ctx, input, name)?;
    let machine = module_io::target_machine(&module, &options.cpu)?;
    let report = instrument_with(&module, &machine, options)?;
    Ok((module_io::emit(&module, &machine, emit)?, report))
}

/// Reads `input`, instruments it and writes `output` (whole or not at all); returns the report.
pub fn instrument_file(input: &Path, output: &Path, emit: Emit, options: &Options) -> Result<Report, PassError> {
    let bytes = std::fs::read(input).map_err(|source| PassError::Read { path: input.into(), source })?;
    let (out, report) = instrument_bytes(&bytes, input, emit, options)?;
    module_io::write_atomically(output, &out)?;
    Ok(report)
}
