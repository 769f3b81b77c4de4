//! A power cap in real joules: a communication manager under physical accounting
//! (`examples/physical.toml`) may draw 0.5 W on average and 20 mJ at once. A sender floods it; it
//! is refused with `InsufficientEnergy` while it is over its cap and admitted again as the bucket
//! refills. Every figure is measured: the gate's fixed cost at start-up, each handler by the
//! meter, and each window of the machine's energy counter shared among the actors that ran.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actors::energy::attribution::METER_ACCOUNT;
use actors::energy::{Accounting, Source};
use actors::gate::GateStatus;
use actors::managers::communication::{Broadcast, CommunicationError, CommunicationManager, Subscribe};
use actors::security::audit::{verify, AuditLog};
use actors::security::{CapSet, GrantTable, Origin, Principal, Scope, SecurityContext};
use actors::{Config, Environment, Status};
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use support::Listener;

mod support;

/// Flood a power-capped communication manager under physical accounting, and show it throttled
/// and admitted again as its cap refills.
#[derive(Parser)]
struct Args {
    /// The configuration: physical accounting and the caps.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/physical.toml"))]
    config: PathBuf,
    /// How long to flood, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    flood_ms: u64,
}

/// What the budget has paid: run-time charges plus the sampler's corrections.
fn paid(status: &GateStatus) -> f64 {
    let c = &status.counters;
    c.charged.get() + c.corrected_up.get() - c.corrected_down.get()
}

#[actix::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // The capped budget crosses its alert thresholds again and again, by design: the table shows it.
    support::init_logging("warn,ergon::audit=error,actors::gate=off");
    let config = Config::load(&args.config)?;
    if config.energy.accounting != Accounting::Physical {
        bail!("{}: this demo shows physical accounting; set [energy] accounting = \"physical\"", args.config.display());
    }
    let cap = &config.communication_manager;
    let Some(watts) = cap.refill_watts else { bail!("{}: communication_manager has no refill_watts: no power cap", args.config.display()) };
    if config.audit.dir.exists() {
        std::fs::remove_dir_all(&config.audit.dir).with_context(|| format!("cannot clear {}", config.audit.dir.display()))?;
    }
    let (log, _) = AuditLog::open(config.audit.clone())?;
    let log = Arc::new(log);
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(Principal::user("operator"), CapSet::all(), Scope::root(), Origin::Configured);
    let ctx: SecurityContext = operator.context(Scope::new("communication_management")?).context("granted in every scope")?;
    let env = Environment::new(config.clone(), grants, log.clone());

    println!("ergon power-cap demo: physical accounting ({})", args.config.display());
    println!("  the gate's fixed cost, measured at start-up: {:.2} µJ a request (every operation's base cost)", env.gate_cost().get() * 1e6);
    let Some(attribution) = env.attribution().cloned() else { bail!("no energy counter could be sampled (see the warning above)") };
    println!("  energy counter: {}", attribution.probe().verdict);
    if attribution.probe().source != Source::Rapl {
        println!("  (not RAPL: its joules are CPU time priced at {}/core, an estimate, and the audit log says so)", config.energy.watts_per_core);
    }
    println!("  communication manager's power cap: {watts} on average, {} at once\n", cap.budget_joules);

    let comm = CommunicationManager::new(&env, "n1").start();
    let received = Arc::new(AtomicU64::new(0));
    for i in 0..3 {
        let endpoint = Listener { received: received.clone() }.start().recipient();
        let subscribe = Subscribe { ctx: ctx.clone(), channel: "telemetry".into(), subscriber: format!("listener-{i}"), endpoint };
        comm.send(subscribe).await?.context("subscribe")?;
    }
    let started = Instant::now();
    let status = |comm: &Addr<CommunicationManager>| comm.send(Status::<CommunicationError>::new(ctx.clone()));

    println!("step 1: a sender floods it with broadcasts for {} ms", args.flood_ms);
    println!("  {:>7} {:>9} {:>9} {:>12} {:>14}", "t (ms)", "admitted", "refused", "left (mJ)", "paid (mJ)");
    let (mut admitted, mut refused) = (0u64, 0u64);
    let flood = Duration::from_millis(args.flood_ms);
    let mut next_line = Duration::from_millis(100);
    while started.elapsed() < flood {
        let broadcast = Broadcast { ctx: ctx.clone(), channel: "telemetry".into(), content: "sample".into() };
        match comm.send(broadcast).await? {
            Ok(_) => admitted += 1,
            Err(CommunicationError::InsufficientEnergy { .. }) => refused += 1,
            Err(e) => bail!("broadcast: {e}"),
        }
        if started.elapsed() >= next_line {
            next_line += Duration::from_millis(100);
            let s = status(&comm).await??;
            println!(
                "  {:>7} {admitted:>9} {refused:>9} {:>12.3} {:>14.3}",
                started.elapsed().as_millis(),
                s.remaining.get() * 1e3,
                paid(&s) * 1e3
            );
        }
    }
    if refused == 0 {
        println!("  (never over its cap: this machine is slower than the cap assumes)");
    }

    let rest = Duration::from_secs_f64((cap.budget_joules.get() / watts.get()).clamp(0.05, 2.0) * 1.5);
    println!("step 2: the sender rests {} ms; the bucket refills at {watts}", rest.as_millis());
    actix::clock::sleep(rest).await;
    let s = status(&comm).await??;
    println!("  {:.3} of {:.3} mJ available again", s.remaining.get() * 1e3, s.total.get() * 1e3);
    println!("step 3: ten broadcasts, one every 20 ms: within the cap");
    let mut again = 0;
    for _ in 0..10 {
        let broadcast = Broadcast { ctx: ctx.clone(), channel: "telemetry".into(), content: "sample".into() };
        if comm.send(broadcast).await?.is_ok() {
            again += 1;
        }
        actix::clock::sleep(Duration::from_millis(20)).await;
    }
    println!("  {again} of 10 admitted");

    let report = attribution.stop().context("the sampler was running")?;
    let s = status(&comm).await??;
    let elapsed = started.elapsed().as_secs_f64();
    // What a cap of `watts` with a burst of `budget_joules` lets through in `elapsed`.
    let allowed = watts.get() * elapsed + cap.budget_joules.get();
    let settled = paid(&s) - s.debt.get();
    println!(
        "\nover {elapsed:.2} s the communication manager was charged {:.3} mJ, {:.3} mJ of it still owed to the next refills: {:.3} W on average",
        paid(&s) * 1e3,
        s.debt.get() * 1e3,
        paid(&s) / elapsed
    );
    let verdict = if settled <= allowed * 1.000_001 { "within" } else { "over" };
    println!("  paid so far {:.3} mJ: {verdict} what its cap allows in that time, {watts} x {elapsed:.2} s + the {:.0} mJ burst = {:.3} mJ", settled * 1e3, cap.budget_joules.get() * 1e3, allowed * 1e3);
    println!("the energy counter ({}, {}) measured {:.3} J:", report.counter, report.source, report.measured.get());
    println!("  {:<26} {:>7} {:>8} {:>14} {:>14} {:>14}", "actor", "runs", "refused", "run time mJ", "corrected mJ", "paid mJ");
    let mut budgets = 0.0;
    for (actor, line) in report.lines.iter().filter(|(a, _)| a.as_str() != METER_ACCOUNT) {
        budgets += line.paid();
        println!(
            "  {actor:<26} {:>7} {:>8} {:>14.3} {:>+14.3} {:>14.3}",
            line.runs,
            line.refused,
            line.charged.get() * 1e3,
            line.correction_j * 1e3,
            line.paid() * 1e3
        );
    }
    let refusals: f64 = report.lines.values().map(|l| (l.attributed.get() - l.paid()).max(0.0)).sum::<f64>()
        - report.lines.get(METER_ACCOUNT).map_or(0.0, |l| l.attributed.get());
    let sampler = report.lines.get(METER_ACCOUNT).map_or(0.0, |l| l.attributed.get());
    println!(
        "  budgets {:.3} J + refusals' share {:.3} J + the sampler {:.3} J + unattributed {:.3} J = {:.3} J",
        budgets,
        refusals,
        sampler,
        report.unattributed.get(),
        budgets + refusals + sampler + report.unattributed.get()
    );
    println!("  deliveries received by the listeners: {}", received.load(Ordering::Relaxed));

    log.flush()?;
    let verified = verify(&config.audit.dir)?;
    println!("\naudit log: {} entries in {}, chain verified", verified.entries, config.audit.dir.display());
    println!("read it with:  ergon audit summary {}", config.audit.dir.display());
    Ok(())
}
