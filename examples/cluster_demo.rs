//! The ergon demo: five nodes in one process, each with all eight managers and a worker pool on
//! the reference defaults, their Raft logs on disk under `ergon-demo/data`.
//!
//! Section 1 joins workers (one by a principal without `NodeManagement`, one invalid), subscribes
//! listeners, and broadcasts until the first node's communication budget crosses 80% and 95% and
//! is exhausted. Sections 2 to 4: a leader is elected, updates replicate, a worker pool scales up
//! under load and a panicking worker is restarted, a load is spread by capacity and remaining
//! energy, the leader crashes, the failure is detected, recovery fails leadership over and moves
//! the dead node's work, and the node comes back and is caught up. Then it prints what every step
//! cost, verifies the audit log it wrote, and prints the `ergon audit` commands that read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler};
use actors::cluster::NodeId;
use actors::managers::communication::{Broadcast, CommunicationError, Subscribe};
use actors::energy::{instrumentation, instrumented_modules, Instrumentation, Joules};
use actors::managers::failure_detector::{Failure, FailureDetector, Failures, Peers};
use actors::gate::{GateError, GateStatus};
use actors::managers::leader_election::Leader;
use actors::managers::load_distributor::{Distribute, Distribution};
use actors::node::local_cluster::LocalCluster;
use actors::managers::node_manager::{connect_all, Join, JoinError, ListNodes};
use actors::managers::recovery_manager::{OpenFailures, Recoveries};
use actors::managers::resource_scaler::Scale;
use actors::security::audit::{verify, AuditConfig, AuditLog, AuditReader, EntryKind, Outcome};
use actors::security::{CapSet, Capability, Credential, GrantTable, Origin, Principal, Scope, SecurityContext};
use actors::managers::state_replicator::Replicate;
use actors::managers::worker_pool::{Job, ReadLoad, Work};
use actors::{Config, Environment, Status};
use anyhow::{anyhow, Context as _, Result};
use clap::Parser;
use support::Listener;

mod support;

/// Run five ergon nodes in one process through elections, replication, scaling, a leader crash
/// and its recovery, and write their audit log.
#[derive(Parser)]
struct Args {
    /// Where to write the audit log and the nodes' data (replaced on each run).
    #[arg(long, default_value = "ergon-demo")]
    out: PathBuf,
    /// A TOML configuration to use instead of the reference defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// What the demo's worker pools charge for a job: a heavy batch, so that spent energy shows in
/// how load is spread.
const JOB_JOULES: f64 = 250.0;

#[actix::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    support::init_logging("warn,ergon::audit=error");

    // The demo makes a job panic on purpose; its worker catches it. One log line says so, not
    // a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let payload = info.payload();
        let what = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        tracing::warn!("panic{place}: {}", what.unwrap_or("(no message)"));
    }));

    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.worker_pool.costs.insert("work".into(), Joules::new(JOB_JOULES)?);
    // Sample the machine's best energy counter beside the gates and share it among the actors.
    config.attribution.enabled = true;
    let (audit_dir, data_dir) = (args.out.join("audit"), args.out.join("data"));
    for dir in [&audit_dir, &data_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    }
    config.audit = AuditConfig { dir: audit_dir.clone(), ..config.audit };
    let (log, _) = AuditLog::open(config.audit.clone())?;
    let log = Arc::new(log);

    println!("ergon demo: 5 nodes in one process, each with the eight managers and a worker pool");
    match config.energy.accounting {
        actors::energy::Accounting::Tutorial => println!(
            "  tutorial accounting: base costs are the reference design's constants, story units beside the few \
             microjoules measured (power-cap-demo shows physical accounting)"
        ),
        actors::energy::Accounting::Physical => {
            println!("  physical accounting: base costs are the gate's measured fixed cost, shares of the counter correct the budgets")
        }
    }
    println!(
        "  budgets: node manager {} (join {}), communication {} (broadcast {}), election {} (campaign {}),",
        config.node_manager.budget_joules,
        config.node_manager.costs["join"],
        config.communication_manager.budget_joules,
        config.communication_manager.costs["broadcast"],
        config.leader_election.budget_joules,
        config.leader_election.costs["election"],
    );
    println!(
        "           replication {} (update {}), failure detector {} (check {}), recovery {} (recover {}),",
        config.state_replicator.budget_joules,
        config.state_replicator.costs["replicate"],
        config.failure_detector.budget_joules,
        config.failure_detector.costs["check"],
        config.recovery_manager.budget_joules,
        config.recovery_manager.costs["recover"],
    );
    println!(
        "           distribution {} (distribute {}), scaling {} (scale {}), worker pool {} (job {}, set by the demo)",
        config.load_distributor.budget_joules,
        config.load_distributor.costs["distribute"],
        config.resource_scaler.budget_joules,
        config.resource_scaler.costs["scale"],
        config.worker_pool.budget_joules,
        config.worker_pool.costs["work"],
    );
    let d = &config.failure_detector.settings;
    println!(
        "  raft: election timeout {} ms, heartbeat {} ms; failure detection: a heartbeat every {} ms, phi threshold {} (Akka's defaults)",
        config.raft.election_timeout_ms, config.raft.heartbeat_ms, d.heartbeat_ms, d.threshold
    );
    match instrumentation() {
        Instrumentation::Instrumented => println!(
            "  meter: op-count model: operations counted by ergon's LLVM pass ({} instrumented modules), priced at {} per ALU-equivalent operation",
            instrumented_modules(),
            config.energy.cost_model.unit_energy
        ),
        Instrumentation::NotInstrumented => println!(
            "  meter: time model (running time x {}/core): this build is not instrumented (`make demo` builds it with `cargo ergon`)",
            config.energy.watts_per_core
        ),
    }
    println!("  audit log: {}; Raft logs: {}\n", audit_dir.display(), data_dir.display());

    use Capability::*;
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(Principal::user("operator"), CapSet::all(), Scope::root(), Origin::Configured);
    let intruder = grants.grant(Principal::user("intruder"), CapSet::of(&[BroadcastManagement]), Scope::root(), Origin::Configured);
    let env = Environment::new(config.clone(), grants.clone(), log.clone());
    let attribution = env.attribution().cloned();
    if let Some(attribution) = &attribution {
        println!("  energy counter, sampled beside the gates: {}\n", attribution.probe().verdict);
    }
    let scope = |s: &str| Scope::new(s).expect("constant scope");
    let operator = |s: &str| operator.context(scope(s)).expect("granted in every scope");

    let mut cluster = LocalCluster::start(env, 5, &data_dir, 1).await?;
    section_one(&cluster, &grants, &intruder, &operator).await?;
    cluster_steps(&mut cluster, &operator).await?;
    let metered = attribution.as_ref().and_then(|a| a.stop());
    summary(&cluster, &operator, &audit_dir, &log).await?;
    if let Some(report) = metered {
        print_attribution(&report);
    }
    print_commands(&audit_dir);
    Ok(())
}

/// Membership and pub/sub: joins, subscriptions, and broadcasts until a budget runs out.
async fn section_one(
    cluster: &LocalCluster,
    grants: &GrantTable,
    intruder: &Credential,
    operator: &impl Fn(&str) -> SecurityContext,
) -> Result<()> {
    use Capability::*;
    let scope = |s: &str| Scope::new(s).expect("constant scope");
    let node = |id: NodeId| cluster.node(id).expect("every node is up");
    let peers: Vec<_> = cluster.up().into_iter().map(|id| (id.to_string(), node(id).nodes.clone())).collect();
    connect_all(&operator("node_management"), &peers).await?;
    println!("step 1: the five node managers are peers of each other");

    println!("step 2: joins through node 1, each announced to nodes 2 to 5");
    let join = |ctx: SecurityContext, id: &str| Join {
        ctx,
        id: id.into(),
        kind: "worker".into(),
        energy_budget: Joules::new(250.0).expect("constant"),
        capabilities: CapSet::of(&[BroadcastManagement]),
        // Each worker may act in its own scope below node_management.
        scope: Scope::new(&format!("node_management.{id}")).unwrap_or_else(|_| scope("node_management")),
        raft: None,
    };
    let n1 = node(1);
    for id in ["worker-1", "worker-2", "worker-3"] {
        report_join(id, n1.nodes.send(join(operator("node_management"), id)).await?);
    }
    report_join("worker-4 (by intruder)", n1.nodes.send(join(intruder.context(scope("node_management"))?, "worker-4")).await?);
    report_join("\"\" (empty id)", n1.nodes.send(join(operator("node_management"), "")).await?);
    let members = node(3).nodes.send(ListNodes { ctx: operator("node_management") }).await??;
    println!("  node 3 sees {} members: {}", members.len(), members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "));

    println!("step 3: two listeners per node subscribe to \"telemetry\"");
    let received = Arc::new(AtomicU64::new(0));
    for id in cluster.up() {
        for i in 1..=2 {
            let listener = Listener { received: received.clone() }.start();
            let subscribe = Subscribe {
                ctx: operator("communication_management"),
                channel: "telemetry".into(),
                subscriber: format!("n{id}-listener-{i}"),
                endpoint: listener.recipient(),
            };
            node(id).communication.send(subscribe).await??;
        }
    }
    // A context can be made only from a credential, so the intruder cannot claim anyone else's
    // authority; and once its own grant is revoked, the context it made before is worthless.
    let before = intruder.context(scope("communication_management"))?;
    grants.revoke(intruder);
    let denied = n1
        .communication
        .send(Subscribe {
            ctx: before,
            channel: "telemetry".into(),
            subscriber: "spy".into(),
            endpoint: Listener { received: received.clone() }.start().recipient(),
        })
        .await?;
    println!("  a subscription by the intruder after its grant was revoked: {}", outcome(&denied));

    println!("step 4: node 1 broadcasts until its communication budget runs out");
    let mut sent = 0u32;
    let exhausted = loop {
        let broadcast = Broadcast {
            ctx: operator("communication_management"),
            channel: "telemetry".into(),
            content: format!("reading {sent}: 21.{} C", sent % 10),
        };
        match n1.communication.send(broadcast).await? {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        if sent % 50 == 0 {
            let status = status::<_, CommunicationError>(&n1.communication, operator("*")).await?;
            println!("  {sent} broadcasts: {:.1}% of the budget used", 100.0 * status.used.get() / status.total.get());
        }
    };
    println!("  after {sent} broadcasts: {exhausted}");
    let n1_comm = status::<_, CommunicationError>(&n1.communication, operator("*")).await?;
    for alert in &n1_comm.alerts {
        println!("  alert on {}: {:?}: {}", n1_comm.actor, alert.level, alert.message);
    }
    println!("  deliveries received by listeners: {}\n", received.load(Ordering::Relaxed));
    Ok(())
}

/// A CPU-bound job of about `rounds` xorshift steps.
fn crunch(rounds: u64) -> Job {
    Job::new(move || {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = std::hint::black_box(x.wrapping_add(i));
        }
        x.to_le_bytes().to_vec()
    })
}

/// Each node's share, and the workers and joules it was weighed by.
async fn print_shares(d: &Distribution, detector: &Addr<FailureDetector>) {
    let peers = detector.send(Peers).await.unwrap_or_default();
    for (node, share) in &d.shares {
        let vitals = peers.iter().find(|p| p.node == *node).and_then(|p| p.vitals).unwrap_or_default();
        println!("  node {node}: {share:>5.1}   ({} workers x {:.0} J left in its pool)", vitals.capacity, vitals.remaining_j);
    }
}

/// Election, replication, failure detection, recovery, load distribution and scaling on the five
/// nodes.
async fn cluster_steps(cluster: &mut LocalCluster, operator: &impl Fn(&str) -> SecurityContext) -> Result<()> {
    let within = Duration::from_secs(10);
    let leader = cluster.leader(within).await.ok_or_else(|| anyhow!("no leader was elected within {within:?}"))?;
    let node = |cluster: &LocalCluster, id: NodeId| cluster.node(id).map(|n| (n.replicator.clone(), n.distributor.clone()));
    let known = cluster.node(leader).expect("up").election.send(Leader { ctx: operator("election_management") }).await??;
    println!("step 5: Raft elected a leader: node {leader} (term {})", known.map_or(0, |l| l.term));

    println!("step 6: five updates replicate, through followers and the leader; each answers after a quorum committed it");
    let followers: Vec<NodeId> = cluster.up().into_iter().filter(|&id| id != leader).collect();
    for (i, &via) in followers.iter().chain([&leader]).enumerate() {
        let (replicator, _) = node(cluster, via).expect("up");
        let data = format!("config v{i}").into_bytes();
        let state = replicator.send(Replicate { ctx: operator("replication_management"), data }).await??;
        println!("  via node {via}: version {} = {:?}", state.version, String::from_utf8_lossy(&state.data));
    }
    let converged = cluster.converged(5, Duration::from_secs(5)).await;
    println!("  every node applied version 5: {converged}");

    // The coordinator asks for distributions; the busy node's pool is scaled up; the spender's
    // pool spends energy without growing.
    let (coordinator, busy, spender) = (followers[0], followers[1], followers[2]);
    let busy_node = cluster.node(busy).expect("up");
    let (pool, scaler) = (busy_node.pool.clone(), busy_node.scaler.clone());
    println!("step 7: node {busy}'s worker pool gets 12 CPU-heavy jobs at once");
    let started = Instant::now();
    let jobs: Vec<_> =
        (0..12).map(|_| pool.send(Work { ctx: operator("resource_management"), job: crunch(40_000_000) })).collect();
    actix::clock::sleep(Duration::from_millis(20)).await;
    let load = pool.send(ReadLoad).await?;
    println!("  {} jobs in flight on {} workers: queue_depth {:.1}", load.in_flight, load.workers, load.metric("queue_depth").unwrap_or(0.0));
    let scale = |threshold| Scale {
        ctx: operator("scaling_management"),
        resource: "workers".into(),
        metric: "queue_depth".into(),
        threshold,
        factor: 2.0,
    };
    let scaled = scaler.send(scale(1.5)).await??;
    println!("  the scaler saw queue_depth {:.1} > 1.5 and scaled the pool by 2: {} -> {} workers", scaled.value, scaled.from, scaled.to);
    for job in jobs {
        job.await??;
    }
    println!("  all 12 done in {} ms", started.elapsed().as_millis());
    let poisoned = pool.send(Work { ctx: operator("resource_management"), job: Job::new(|| panic!("poisoned input")) }).await?;
    println!("  a job panics: {}", poisoned.err().map_or("?".into(), |e| e.to_string()));
    let restarted = poll(within, || async { (pool.send(ReadLoad).await.ok()?.stopped == 0).then_some(()) }).await;
    let load = pool.send(ReadLoad).await?;
    println!(
        "  its worker was reported, recovered with the restart strategy: {} workers running, {} stopped{}",
        load.workers,
        load.stopped,
        if restarted.is_some() { "" } else { " (not restarted in time)" }
    );

    let spender_pool = cluster.node(spender).expect("up").pool.clone();
    for _ in 0..8 {
        spender_pool.send(Work { ctx: operator("resource_management"), job: crunch(1_000_000) }).await??;
    }
    println!("  node {spender}'s pool runs 8 jobs too, and stays at its 2 workers");

    cluster.heard(within).await;
    println!("step 8: node {coordinator} spreads a load of 100 over the live nodes by capacity x remaining energy");
    let (_, distributor) = node(cluster, coordinator).expect("up");
    let ingest = Distribute { ctx: operator("distribution_management"), id: "ingest".into(), load: 100.0 };
    let before = distributor.send(ingest).await??;
    let coordinator_detector = cluster.node(coordinator).expect("up").detector.clone();
    print_shares(&before, &coordinator_detector).await;

    println!("step 9: the leader, node {leader}, crashes");
    let crashed_at = Instant::now();
    cluster.crash(leader).await;
    let new_leader = cluster.leader(within).await;
    match new_leader {
        Some(l) => println!("  Raft elected node {l} {} ms after the crash", crashed_at.elapsed().as_millis()),
        None => println!("  no new leader within {within:?}"),
    }
    let survivors = cluster.up();
    let detected = poll(within, || async {
        for &id in &survivors {
            let failures = cluster.node(id)?.detector.send(Failures { ctx: operator("failure_detection") }).await.ok()?.ok()?;
            if !failures.iter().any(|f| f.node == leader) {
                return None;
            }
        }
        Some(crashed_at.elapsed())
    })
    .await;
    let recovered = poll(within, || async {
        for &id in &survivors {
            let open = cluster.node(id)?.recovery.send(OpenFailures { ctx: operator("recovery_management") }).await.ok()?.ok()?;
            if !open.is_empty() {
                return None;
            }
        }
        Some(crashed_at.elapsed())
    })
    .await;
    let ms = |d: Option<Duration>| d.map_or("not within 10 s".to_owned(), |d| format!("{} ms", d.as_millis()));
    println!("  every survivor's failure detector declared node {leader} failed after {}", ms(detected));
    let watcher = cluster.node(coordinator).expect("up");
    let (detector, recovery, distributor) = (watcher.detector.clone(), watcher.recovery.clone(), watcher.distributor.clone());
    let failures = detector.send(Failures { ctx: operator("failure_detection") }).await??;
    if let Some(f) = failures.iter().rev().find(|f: &&Failure| f.node == leader) {
        println!("  node {coordinator} recorded: {} of {}: {}", f.kind.name(), f.subject, f.reason);
    }
    println!("  every survivor recovered it after {}", ms(recovered));
    let recoveries = recovery.send(Recoveries { ctx: operator("recovery_management") }).await??;
    if let Some(r) = recoveries.iter().rev().find(|r| r.failure.node == leader) {
        println!("  node {coordinator}'s recovery: {}: {}", r.strategy.name(), r.outcome);
    }
    let ctx = operator("distribution_management");
    let after = distributor.send(actors::managers::load_distributor::Distributions { ctx }).await??;
    if let Some(d) = after.first() {
        println!("  the load now:");
        print_shares(d, &detector).await;
    }

    if let Some(l) = new_leader {
        println!("step 10: updates go on through the new leader");
        let (replicator, _) = node(cluster, l).expect("up");
        let state = replicator.send(Replicate { ctx: operator("replication_management"), data: b"config v5".to_vec() }).await??;
        println!("  via node {l}: version {}", state.version);
    }

    println!("step 11: node {leader} restarts from its data directory");
    cluster.boot(leader).await?;
    let back = poll(within, || async {
        let recoveries = recovery.send(Recoveries { ctx: operator("recovery_management") }).await.ok()?.ok()?;
        recoveries.into_iter().find(|r| r.failure.node == leader && r.failure.kind.name() == "rejoined")
    })
    .await;
    match back {
        Some(r) => println!("  node {coordinator} saw it rejoin and recovered it with {}: {}", r.strategy.name(), r.outcome),
        None => println!("  node {coordinator} did not see it rejoin within {within:?}"),
    }
    println!();
    Ok(())
}

/// Asks `probe` every 100 ms until it answers, for at most `within` (each ask is a gated,
/// audited query, so not too often).
async fn poll<T, F: std::future::Future<Output = Option<T>>>(within: Duration, probe: impl FnMut() -> F) -> Option<T> {
    actors::node::wait::eventually(within, Duration::from_millis(100), probe).await
}

/// What every step cost, from the audit log, and where to read it.
async fn summary(cluster: &LocalCluster, operator: &impl Fn(&str) -> SecurityContext, audit_dir: &Path, log: &AuditLog) -> Result<()> {
    // Let the last recoveries' audit entries land.
    actix::clock::sleep(Duration::from_millis(200)).await;
    log.flush()?;
    println!("summary: what each operation cost, over all nodes (from the audit log)");
    println!("  {:<22} {:<14} {:>8} {:>7} {:>7} {:>12}", "manager", "operation", "allowed", "failed", "denied", "charged");
    let mut rows: BTreeMap<(String, String), (u64, u64, u64, f64)> = BTreeMap::new();
    for entry in AuditReader::open(audit_dir)?.entries() {
        let entry = entry?.entry;
        let Some(energy) = &entry.energy else { continue };
        if entry.alert().is_some() || entry.kind == EntryKind::EnergyAttribution {
            continue;
        }
        let manager = entry.actor.split('/').next().unwrap_or_default().to_owned();
        let row = rows.entry((manager, entry.operation.to_string())).or_default();
        match entry.outcome {
            Outcome::Allowed => row.0 += 1,
            Outcome::Failed => row.1 += 1,
            Outcome::Denied => row.2 += 1,
        }
        row.3 += energy.charged_j;
    }
    for ((manager, operation), (allowed, failed, denied, charged)) in &rows {
        println!("  {manager:<22} {operation:<14} {allowed:>8} {failed:>7} {denied:>7} {:>10.1} J", charged);
    }
    let total: f64 = rows.values().map(|r| r.3).sum();
    println!("  {:<22} {:<14} {:>8} {:>7} {:>7} {:>10.1} J", "all", "", "", "", "", total);
    if let Some(n1) = cluster.node(1) {
        let s = status::<_, CommunicationError>(&n1.communication, operator("*")).await?;
        println!("  {} has {:.1} of {:.1} left", s.actor, s.remaining.get(), s.total.get());
    }

    let report = verify(audit_dir)?;
    println!("\naudit log: {} entries in {}, chain verified", report.entries, audit_dir.display());
    print_operation_counts(audit_dir)?;
    Ok(())
}

/// The energy counter's total over the run, and each manager's share of it beside what its
/// per-message meter measured.
fn print_attribution(report: &actors::energy::attribution::Report) {
    println!("\nthe energy counter ({}, {}) over {:.1} s: {:.3} J", report.counter, report.source, report.period.as_secs_f64(), report.measured.get());
    let mut by_manager: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    for (actor, line) in &report.lines {
        let row = by_manager.entry(actor.split('/').next().unwrap_or(actor)).or_default();
        row.0 += line.runs;
        row.1 += line.modelled.get();
        row.2 += line.attributed.get();
    }
    println!("  {:<22} {:>8} {:>13} {:>15}", "manager", "runs", "metered µJ", "attributed µJ");
    for (manager, (runs, metered, attributed)) in &by_manager {
        println!("  {manager:<22} {runs:>8} {:>13.3} {:>15.1}", metered * 1e6, attributed * 1e6);
    }
    println!("  {:<22} {:>8} {:>13} {:>15.1}", "unattributed", "", "", report.unattributed.get() * 1e6);
    println!(
        "  attributed + unattributed = {:.3} J of {:.3} J measured ({} readings failed)",
        report.accounted().get(),
        report.measured.get(),
        report.failed_reads
    );
    if report.source != actors::energy::Source::Rapl {
        println!("  ({} is not RAPL: these joules are an estimate from CPU time, not a measurement)", report.counter);
    }
}

/// The commands that read the audit log.
fn print_commands(audit_dir: &Path) {
    let ergon = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ergon")))
        .filter(|path| path.exists())
        .map_or_else(|| "cargo run -q -p ergon-cli --".to_string(), |p| p.display().to_string());
    println!("read it with:");
    println!("  {ergon} audit verify {}", audit_dir.display());
    println!("  {ergon} audit summary {}", audit_dir.display());
    println!("  {ergon} audit show {} --denied", audit_dir.display());
    println!("  {ergon} audit show {} --operation recover", audit_dir.display());
    println!("  {ergon} audit show {} --principal user:operator --operation join", audit_dir.display());
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

fn report_join(what: &str, result: Result<actors::managers::node_manager::JoinResponse, JoinError>) {
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

/// The status of any gated manager.
async fn status<A, E>(addr: &Addr<A>, ctx: SecurityContext) -> Result<GateStatus>
where
    A: Actor<Context = Context<A>> + Handler<Status<E>>,
    E: GateError + Send + Sync,
{
    Ok(addr.send(Status::<E>::new(ctx)).await??)
}
