//! The gate's price: the same handler body through plain actix request-reply and through the
//! gate, side by side, and the audit log's batched throughput.
//!
//! Rounds interleave the three variants (plain, gate with an in-memory sink, gate with the file
//! log) so that machine noise hits them alike; each ratio is the median of its per-round ratios.
//! Run with `cargo bench -p ergon-actors --bench gate` (or `make bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler};
use actors::energy::{Thresholds, TimeMeter, Watts};
use actors::gate::{self, Gate, GateClock, GateSetup, GatedActor, Limits};
use actors::security::audit::{AuditConfig, AuditEntry, AuditLog, AuditSink, Durability, EntryKind, MemorySink, Outcome};
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope, SecurityContext};

const REQUESTS_PER_ROUND: u32 = 20_000;
/// Rounds; `ERGON_BENCH_ROUNDS` overrides (a profiler wants fewer).
fn rounds() -> usize {
    std::env::var("ERGON_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15)
}
const AUDIT_ENTRIES: usize = 500_000;

#[actors::gate_error]
#[derive(Debug, thiserror::Error)]
enum BenchError {}

/// The handler body both variants run: a little arithmetic on the actor's state.
fn body(state: &mut u64, x: u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(x);
    *state
}

struct Work {
    ctx: SecurityContext,
    x: u64,
}

struct Plain {
    state: u64,
}

impl Actor for Plain {
    type Context = Context<Self>;
}

impl Handler<Work> for Plain {
    type Result = Result<u64, BenchError>;
    fn handle(&mut self, msg: Work, _: &mut Context<Self>) -> Self::Result {
        Ok(body(&mut self.state, msg.x))
    }
}

struct Gated {
    gate: Gate,
    state: u64,
}

#[actors::gated(error = BenchError, scope = "bench", budget = 1e15, grants = [ResourceManagement])]
impl Gated {
    #[operation(requires = [ResourceManagement], cost = 1e-3, resource = "bench")]
    fn work(&mut self, msg: Work) -> Result<u64, BenchError> {
        Ok(body(&mut self.state, msg.x))
    }
}

fn gated(grants: &Arc<GrantTable>, audit: Arc<dyn AuditSink>) -> Gated {
    let gate = Gate::new(GateSetup {
        actor: "bench".into(),
        scope: Scope::new(Gated::SCOPE).unwrap(),
        operations: Gated::OPERATIONS,
        config: &Gated::default_config(),
        limits: Limits::default(),
        thresholds: Thresholds::default(),
        grants: grants.clone(),
        audit,
        meter: Box::new(TimeMeter::new(Watts::new(12.5).unwrap())),
        accounting: energy::Accounting::Tutorial,
        gate_cost: energy::Joules::ZERO,
        account: None,
        clock: GateClock::system(),
            metrics: None,
        credential: grants.grant(Principal::actor("bench"), Gated::default_config().grants, Scope::root(), Origin::Configured),
    });
    Gated { gate, state: 1 }
}

async fn round<A: Actor<Context = Context<A>> + Handler<Work>>(addr: &Addr<A>, ctx: &SecurityContext) -> Duration {
    let start = Instant::now();
    for x in 0..REQUESTS_PER_ROUND {
        let reply = addr.send(Work { ctx: ctx.clone(), x: x as u64 }).await.unwrap();
        std::hint::black_box(reply.unwrap());
    }
    start.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn audit_throughput(dir: &std::path::Path) -> f64 {
    let mut config = AuditConfig::new(dir);
    config.durability = Durability::IntervalMs(10);
    let (log, _) = AuditLog::open(config).unwrap();
    let template = AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "node-manager/n1", "operator", "join", "worker-1");
    let start = Instant::now();
    for _ in 0..AUDIT_ENTRIES {
        log.record(template.clone());
    }
    log.flush().unwrap();
    let elapsed = start.elapsed();
    log.close().unwrap();
    AUDIT_ENTRIES as f64 / elapsed.as_secs_f64()
}

/// The gate alone, called directly on an actor value (no mailbox, entries discarded): the gate's
/// own price per message, including building the message and its context.
fn gate_alone_ns(grants: &Arc<GrantTable>, ctx: &SecurityContext) -> f64 {
    let mut actor = gated(grants, Arc::new(Discard));
    let n = 1_000_000u32;
    let start = Instant::now();
    for x in 0..n {
        let msg = Work { ctx: ctx.clone(), x: x as u64 };
        let reply = gate::run(&mut actor, msg, |actor, msg| Ok(body(&mut actor.state, msg.x)));
        std::hint::black_box(reply.ready().expect("a sink that does not wait answers now").unwrap());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

struct Discard;
impl AuditSink for Discard {
    fn record(&self, entry: AuditEntry) {
        std::hint::black_box(entry);
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let system = actix::System::new();
    let (plain_ns, memory_ns, file_ns, memory_ratio, file_ratio) = system.block_on(async {
        let grants = Arc::new(GrantTable::new());
        let bench_user_credential = grants.grant(Principal::user("bench-user"), CapSet::of(&[Capability::ResourceManagement]), Scope::root(), Origin::Configured);
        let ctx = bench_user_credential.context(Scope::root()).unwrap();
        let memory = Arc::new(MemorySink::with_capacity(REQUESTS_PER_ROUND as usize));
        let mut config = AuditConfig::new(dir.path().join("gate-log"));
        config.durability = Durability::IntervalMs(10);
        let (file, _) = AuditLog::open(config).unwrap();
        let file = Arc::new(file);

        let plain = Plain { state: 1 }.start();
        let with_memory = gated(&grants, memory.clone()).start();
        let with_file = gated(&grants, file.clone()).start();

        // Warm-up.
        round(&plain, &ctx).await;
        round(&with_memory, &ctx).await;
        round(&with_file, &ctx).await;
        memory.clear();

        let (mut plain_t, mut memory_t, mut file_t) = (Vec::new(), Vec::new(), Vec::new());
        let (mut memory_r, mut file_r) = (Vec::new(), Vec::new());
        for _ in 0..rounds() {
            let p = round(&plain, &ctx).await.as_secs_f64();
            let m = round(&with_memory, &ctx).await.as_secs_f64();
            let f = round(&with_file, &ctx).await.as_secs_f64();
            // The file log's writer catches up before the next round, so that its work lands in
            // the file rounds and not in the plain and memory rounds after them.
            file.flush().unwrap();
            memory.clear();
            let per_request = |t: f64| t * 1e9 / REQUESTS_PER_ROUND as f64;
            plain_t.push(per_request(p));
            memory_t.push(per_request(m));
            file_t.push(per_request(f));
            memory_r.push(m / p);
            file_r.push(f / p);
        }
        file.flush().unwrap();
        (median(plain_t), median(memory_t), median(file_t), median(memory_r), median(file_r))
    });
    let entries_per_s = audit_throughput(&dir.path().join("throughput-log"));
    let before_reply_per_s = system.block_on(before_reply_throughput(&dir.path().join("before-reply-log")));
    let alone_ns = {
        let grants = Arc::new(GrantTable::new());
        let bench_user_credential = grants.grant(Principal::user("bench-user"), CapSet::of(&[Capability::ResourceManagement]), Scope::root(), Origin::Configured);
        let ctx = bench_user_credential.context(Scope::root()).unwrap();
        median((0..5).map(|_| gate_alone_ns(&grants, &ctx)).collect())
    };

    println!("gate benchmark: {} interleaved rounds of {REQUESTS_PER_ROUND} request-reply messages each, one arbiter", rounds());
    println!("RESULT plain_request_reply_ns {plain_ns:.0} ns");
    println!("RESULT gated_request_reply_memory_sink_ns {memory_ns:.0} ns");
    println!("RESULT gated_request_reply_file_sink_ns {file_ns:.0} ns");
    println!("RESULT gate_ratio_memory_sink {memory_ratio:.2} x");
    println!("RESULT gate_ratio_file_sink {file_ratio:.2} x");
    println!("RESULT gate_alone_ns {alone_ns:.0} ns");
    println!("RESULT audit_entries_per_s {entries_per_s:.0} entries/s");
    println!("RESULT audit_before_reply_entries_per_s {before_reply_per_s:.0} entries/s");
}

/// Gated requests answered only once their entries are durable (`Durability::BeforeReply`),
/// 64 in flight at a time, so that each fsync carries a batch: requests (and entries) per second.
async fn before_reply_throughput(dir: &std::path::Path) -> f64 {
    const IN_FLIGHT: usize = 64;
    const REQUESTS: usize = 20_000;
    let grants = Arc::new(GrantTable::new());
    let user = grants.grant(Principal::user("bench-user"), CapSet::of(&[Capability::ResourceManagement]), Scope::root(), Origin::Configured);
    let ctx = user.context(Scope::root()).unwrap();
    let mut config = AuditConfig::new(dir);
    config.durability = Durability::BeforeReply;
    let (log, _) = AuditLog::open(config).unwrap();
    let log = Arc::new(log);
    let actor = gated(&grants, log.clone()).start();
    let start = Instant::now();
    for chunk in 0..REQUESTS / IN_FLIGHT {
        let requests = (0..IN_FLIGHT).map(|i| actor.send(Work { ctx: ctx.clone(), x: (chunk * IN_FLIGHT + i) as u64 }));
        for reply in futures::future::join_all(requests).await {
            std::hint::black_box(reply.unwrap().unwrap());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "before_reply: {} requests, {IN_FLIGHT} in flight, {} fsyncs",
        REQUESTS / IN_FLIGHT * IN_FLIGHT,
        log.syncs()
    );
    (REQUESTS / IN_FLIGHT * IN_FLIGHT) as f64 / elapsed
}
