//! The ergon demo: three nodes in one process, each with a node manager and a communication
//! manager on the tutorial's defaults, driven until a budget runs out.
//!
//! It joins workers (one by a principal without `NodeManagement`, one invalid), subscribes
//! listeners, and broadcasts until the first node's communication budget crosses 80% and 95%
//! and is exhausted. Then it prints a summary, verifies the audit log it wrote, and prints the
//! `ergon audit` commands that read it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler};
use actors::communication::{Broadcast, CommunicationError, CommunicationManager, Delivery, Subscribe};
use actors::energy::{instrumentation, instrumented_modules, CostModel, Instrumentation, Joules};
use actors::gate::GateStatus;
use actors::node_manager::{connect_all, Join, JoinError, ListNodes, NodeManager};
use actors::security::audit::{verify, AuditConfig, AuditLog, AuditReader};
use actors::security::{CapSet, Capability, GrantTable, Scope, SecurityContext};
use actors::{Config, Environment, Status};
use anyhow::{Context as _, Result};
use clap::Parser;

/// Run three ergon nodes in one process until a budget runs out, and write their audit log.
#[derive(Parser)]
struct Args {
    /// Where to write the audit log and configuration (replaced on each run).
    #[arg(long, default_value = "ergon-demo")]
    out: PathBuf,
    /// A TOML configuration to use instead of the tutorial's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Counts what it receives, so the demo can show deliveries arrived.
struct Listener {
    received: Arc<AtomicU64>,
}

impl Actor for Listener {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Listener {
    type Result = ();
    fn handle(&mut self, _: Delivery, _: &mut Context<Self>) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

struct Node {
    name: String,
    nodes: Addr<NodeManager>,
    comm: Addr<CommunicationManager>,
}

#[actix::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,ergon::audit=error".into()))
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let audit_dir = args.out.join("audit");
    if audit_dir.exists() {
        std::fs::remove_dir_all(&audit_dir).with_context(|| format!("cannot clear {}", audit_dir.display()))?;
    }
    config.audit = AuditConfig { dir: audit_dir.clone(), ..config.audit };
    let (log, _) = AuditLog::open(config.audit.clone())?;
    let log = Arc::new(log);

    println!("ergon demo: 3 nodes, each with a node manager and a communication manager");
    println!(
        "  budgets: node manager {} (join {}), communication manager {} (broadcast {})",
        config.node_manager.budget_joules,
        config.node_manager.costs["join"],
        config.communication_manager.budget_joules,
        config.communication_manager.costs["broadcast"],
    );
    match instrumentation() {
        Instrumentation::Instrumented => println!(
            "  meter: op-count model: operations counted by ergon's LLVM pass ({} instrumented modules), priced at {} per ALU-equivalent operation",
            instrumented_modules(),
            CostModel::default().unit_energy
        ),
        Instrumentation::NotInstrumented => println!(
            "  meter: time model (running time x {}/core): this build is not instrumented (`make demo` builds it with `cargo ergon`)",
            config.meter.watts_per_core
        ),
    }
    println!("  audit log: {}\n", audit_dir.display());

    use Capability::*;
    let grants = Arc::new(GrantTable::new());
    grants.grant("operator", CapSet::of(&[NodeManagement, ConnectionManagement, BroadcastManagement, EnergyManagement]));
    grants.grant("intruder", CapSet::of(&[BroadcastManagement]));
    let env = Environment::new(config.clone(), grants.clone(), log.clone());
    let scope = |s: &str| Scope::new(s).expect("constant scope");
    let operator = |s: &str| grants.context("operator", scope(s)).expect("granted above");

    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Node {
            name: n.to_string(),
            nodes: NodeManager::new(&env, n).start(),
            comm: CommunicationManager::new(&env, n).start(),
        })
        .collect();
    let peers: Vec<_> = nodes.iter().map(|n| (n.name.clone(), n.nodes.clone())).collect();
    connect_all(&operator("node_management"), &peers).await?;
    println!("step 1: the three node managers are peers of each other");

    println!("step 2: joins through n1, each announced to n2 and n3");
    let join = |ctx: SecurityContext, id: &str| Join {
        ctx,
        id: id.into(),
        kind: "worker".into(),
        energy_budget: Joules::new(250.0).expect("constant"),
        capabilities: CapSet::of(&[BroadcastManagement]),
        // Each worker may act in its own scope below node_management.
        scope: Scope::new(&format!("node_management.{id}")).unwrap_or_else(|_| scope("node_management")),
    };
    let n1 = &nodes[0];
    for id in ["worker-1", "worker-2", "worker-3"] {
        report_join(id, n1.nodes.send(join(operator("node_management"), id)).await?);
    }
    let intruder = grants.context("intruder", scope("node_management"))?;
    report_join("worker-4 (by intruder)", n1.nodes.send(join(intruder.clone(), "worker-4")).await?);
    report_join("\"\" (empty id)", n1.nodes.send(join(operator("node_management"), "")).await?);
    let members = nodes[2].nodes.send(ListNodes { ctx: operator("node_management") }).await??;
    println!("  n3 sees {} members: {}", members.len(), members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "));

    println!("step 3: two listeners per node subscribe to \"telemetry\"");
    let received = Arc::new(AtomicU64::new(0));
    for node in &nodes {
        for i in 1..=2 {
            let listener = Listener { received: received.clone() }.start();
            let subscribe = Subscribe {
                ctx: operator("communication_management"),
                channel: "telemetry".into(),
                subscriber: format!("{}-listener-{i}", node.name),
                endpoint: listener.recipient(),
            };
            node.comm.send(subscribe).await??;
        }
    }
    // The intruder holds BroadcastManagement only, and claims NodeManagement as well.
    let forged = SecurityContext::new("intruder", CapSet::of(&[BroadcastManagement, NodeManagement]), scope("communication_management"));
    let denied = nodes[0]
        .comm
        .send(Subscribe {
            ctx: forged,
            channel: "telemetry".into(),
            subscriber: "spy".into(),
            endpoint: Listener { received: received.clone() }.start().recipient(),
        })
        .await?;
    println!("  a subscription by the intruder with a forged context: {}", outcome(&denied));

    println!("step 4: n1 broadcasts until its communication budget runs out");
    let mut sent = 0u32;
    let exhausted = loop {
        let broadcast = Broadcast {
            ctx: operator("communication_management"),
            channel: "telemetry".into(),
            content: format!("reading {sent}: 21.{} C", sent % 10),
        };
        match n1.comm.send(broadcast).await? {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        if sent % 50 == 0 {
            let status = status(&n1.comm, operator("*")).await?;
            println!("  {sent} broadcasts: {:.1}% of the budget used", 100.0 * status.used.get() / status.total.get());
        }
    };
    println!("  after {sent} broadcasts: {exhausted}");

    println!("\nsummary");
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>8} {:>7} {:>7} {:>12}",
        "actor", "budget", "used", "left", "allowed", "failed", "denied", "measured"
    );
    for node in &nodes {
        let statuses = [
            node_status(&node.nodes, operator("*")).await?,
            status(&node.comm, operator("*")).await?,
        ];
        for s in statuses {
            println!(
                "  {:<26} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>7} {:>7} {:>12}",
                s.actor,
                s.total.get(),
                s.used.get(),
                s.remaining.get(),
                s.counters.allowed,
                s.counters.failed,
                s.counters.denied,
                format!("{:.1}", s.counters.measured)
            );
        }
    }
    let n1_comm = status(&n1.comm, operator("*")).await?;
    for alert in &n1_comm.alerts {
        println!("  alert on {}: {:?}: {}", n1_comm.actor, alert.level, alert.message);
    }
    println!("  deliveries received by listeners: {}", received.load(Ordering::Relaxed));

    log.flush()?;
    let report = verify(&audit_dir)?;
    println!("\naudit log: {} entries in {}, chain verified", report.entries, audit_dir.display());
    print_operation_counts(&audit_dir)?;
    let ergon = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ergon")))
        .filter(|path| path.exists())
        .map_or_else(|| "cargo run -q -p ergon-cli --".to_string(), |p| p.display().to_string());
    println!("read it with:");
    println!("  {ergon} audit verify {}", audit_dir.display());
    println!("  {ergon} audit summary {}", audit_dir.display());
    println!("  {ergon} audit show {} --denied", audit_dir.display());
    println!("  {ergon} audit show {} --principal operator --operation join", audit_dir.display());
    Ok(())
}

/// The mean operation counts per message of each operation, as the audit log recorded them.
fn print_operation_counts(audit_dir: &std::path::Path) -> Result<()> {
    let mut by_operation: std::collections::BTreeMap<String, (u64, [u64; 4], f64)> = Default::default();
    for entry in AuditReader::open(audit_dir)?.entries() {
        let entry = entry?.entry;
        let Some(energy) = entry.energy else { continue };
        let Some(ops) = energy.ops else { continue };
        let slot = by_operation.entry(entry.operation.to_string()).or_default();
        slot.0 += 1;
        for (sum, n) in slot.1.iter_mut().zip([ops.alu, ops.mem, ops.fp, ops.total]) {
            *sum += n;
        }
        slot.2 += energy.measured_j;
    }
    if by_operation.is_empty() {
        println!("  (no operation counts: this build is not instrumented)");
        return Ok(());
    }
    println!("operation counts per message, mean over the audit log (the gate's own work included):");
    println!("  {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>14}", "operation", "messages", "alu", "mem", "fp", "total", "model energy");
    for (operation, (n, sums, joules)) in by_operation {
        let mean = |s: u64| s / n;
        println!(
            "  {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11.1} nJ",
            operation,
            n,
            mean(sums[0]),
            mean(sums[1]),
            mean(sums[2]),
            mean(sums[3]),
            joules / n as f64 * 1e9
        );
    }
    Ok(())
}

fn report_join(what: &str, result: Result<actors::node_manager::JoinResponse, JoinError>) {
    match result {
        Ok(r) => println!(
            "  join {what}: granted {} in {}, confirmed by {}",
            r.granted_capabilities,
            r.scope,
            r.confirmed_by.join(", ")
        ),
        Err(e) => println!("  join {what}: refused: {e}"),
    }
}

fn outcome<T>(result: &Result<T, CommunicationError>) -> String {
    match result {
        Ok(_) => "allowed".into(),
        Err(e) => format!("refused: {e}"),
    }
}

async fn status(addr: &Addr<CommunicationManager>, ctx: SecurityContext) -> Result<GateStatus> {
    Ok(addr.send(Status::<CommunicationError>::new(ctx)).await??)
}

async fn node_status(addr: &Addr<NodeManager>, ctx: SecurityContext) -> Result<GateStatus> {
    Ok(addr.send(Status::<JoinError>::new(ctx)).await??)
}
