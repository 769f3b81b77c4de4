//! `cargo ergon`: build, test or run a cargo project with chosen crates instrumented by ergon's
//! LLVM pass. The same executable is also cargo's rustc wrapper and rustc's linker during that
//! build (see `llvm_pass::build`).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use llvm_pass::build::{linker, rustc_wrapper, subcommand, ENV_CRATES, ENV_LINKER_ROLE};

/// Builds a cargo project with the chosen crates counting the ALU, memory and floating-point
/// operations they execute (per thread, read by `energy::measure_ops`). The standard library and
/// the crates left out stay as shipped.
///
/// Any cargo command that compiles works: build, test, run, bench. Artifacts go to
/// `target/ergon/` so they never mix with uninstrumented ones. Needs only the rustup toolchain:
/// the pass runs on the toolchain's own LLVM.
#[derive(Parser)]
#[command(
    name = "cargo ergon",
    bin_name = "cargo ergon",
    version,
    after_help = "Examples:\n  \
      cargo ergon build --release                       instrument every crate of the workspace\n  \
      cargo ergon run --release --instrument actors,cluster-demo -p ergon-examples --bin cluster-demo\n  \
      cargo ergon test --instrument my-crate --lib --tests\n\n\
      Crate names and package names are both accepted. Cross-crate LTO is switched off for the\n\
      instrumented crates (the pass works per crate); doctests are not instrumented."
)]
struct Cli {
    /// Comma-separated crates (or packages) to instrument; default: every crate of the workspace.
    #[arg(long, value_name = "CRATES")]
    instrument: Option<String>,
    /// The cargo command to run.
    command: String,
    /// Arguments for cargo, as you would give them to `cargo <COMMAND>`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = if std::env::var_os(ENV_LINKER_ROLE).is_some() {
        linker::run(&args)
    } else if std::env::var_os(ENV_CRATES).is_some() && args.first().is_some_and(|a| !a.to_string_lossy().starts_with('-')) {
        rustc_wrapper::run(&args[0], &args[1..])
    } else {
        // cargo runs `cargo-ergon ergon <args>`; accept being run directly too.
        let args = if args.first().is_some_and(|a| a == "ergon") { &args[1..] } else { &args[..] };
        let wants_help = args.first().is_some_and(|a| a == "-h" || a == "--help" || a == "-V" || a == "--version");
        match subcommand::parse(args).filter(|_| !wants_help) {
            None => {
                // Let clap print the help, the version, or what is missing.
                Cli::parse_from(std::iter::once(OsString::from("cargo-ergon")).chain(args.iter().cloned()));
                let _ = Cli::command().print_help();
                2
            }
            Some(request) => match subcommand::run(&request) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("cargo-ergon: {e}");
                    1
                }
            },
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
