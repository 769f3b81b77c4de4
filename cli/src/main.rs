//! `ergon`: the operator's tool for ergon's energy audit logs and energy counters.

mod audit;
mod energy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Read, check and summarise the audit logs that ergon's gated actors write, and find out what
/// this machine can measure.
///
/// Every request to a gated actor, allowed or denied, is one entry of a hash-chained JSON Lines
/// log: who asked, what for, whether it was allowed, and how many joules it cost. A log is a
/// directory of `segment-NNNNNN.jsonl` files with a `HEAD` file beside them; every audit command
/// also accepts a single segment file.
#[derive(Parser)]
#[command(name = "ergon", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Find out which energy counters this machine has and which ergon would use.
    #[command(subcommand)]
    Energy(energy::EnergyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audit(command) => audit::run(command),
        Command::Energy(command) => energy::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ergon: {error:#}");
            ExitCode::from(audit::EXIT_UNREADABLE)
        }
    }
}
