//! Replication latency, throughput and failover on live actors with the durable (fsync'd) log.
//!
//! Each node runs its consensus actor on an arbiter (thread) of its own, its gated managers on the
//! process's; the in-process network adds no delay, so the figures are the cost of ergon and
//! raft-rs plus each node's fsync, not of a wire. The throughput run keeps 64 updates in flight
//! and prints the batch sizes the group commit reached. Run with `make bench-cluster`; `ERGON_BENCH_OPS` sets the number of
//! updates per cluster size (default 2000).

use std::time::{Duration, Instant};

use actors::energy::{FixedMeter, Joules};
use actors::node::local_cluster::LocalCluster;
use actors::security::audit::MemorySink;
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope, SecurityContext};
use actors::managers::state_replicator::Replicate;
use actors::node::consensus::Batches;
use actors::{Config, Environment};
use futures::future::join_all;

fn env() -> (Environment, SecurityContext) {
    let mut config = Config::default();
    // The benchmark measures replication, not budgets.
    for actor in [&mut config.state_replicator, &mut config.leader_election] {
        actor.budget_joules = Joules::new(1e12).unwrap();
    }
    let grants = std::sync::Arc::new(GrantTable::new());
    use Capability::*;
    let bench_credential = grants.grant(Principal::user("bench"), CapSet::of(&[ReplicationManagement, StateManagement]), Scope::root(), Origin::Configured);
    let env = Environment::new(config, grants.clone(), std::sync::Arc::new(MemorySink::new()))
        .with_meter(|| Box::new(FixedMeter { per_run: Joules::ZERO }));
    let ctx = bench_credential.context(Scope::new("replication_management").unwrap()).unwrap();
    (env, ctx)
}

const IN_FLIGHT: usize = 64;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(n: u64, ops: usize) -> (f64, f64) {
    let (env, ctx) = env();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(env, n, dir.path(), 1).await.unwrap();
    let leader = cluster.leader(Duration::from_secs(5)).await.expect("a leader");
    let replicator = &cluster.node(leader).unwrap().replicator;
    let mut samples = Vec::with_capacity(ops);
    for i in 0..ops {
        let started = Instant::now();
        let update = Replicate { ctx: ctx.clone(), data: format!("update {i}").into_bytes() };
        replicator.send(update).await.unwrap().expect("replicated");
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Updates per second with `in_flight` clients each sending one update after another, their p99
/// latency, and the batches each node persisted: (readies, entries, largest) per node.
async fn throughput(n: u64, ops: usize, in_flight: usize) -> (f64, f64, Vec<(u64, Batches)>) {
    let (env, ctx) = env();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(env, n, dir.path(), 1).await.unwrap();
    let leader = cluster.leader(Duration::from_secs(5)).await.expect("a leader");
    let replicator = cluster.node(leader).unwrap().replicator.clone();
    let before: Vec<Batches> = cluster.views().await.iter().map(|v| v.batches).collect();
    let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let started = Instant::now();
    let clients = (0..in_flight).map(|_| {
        let (replicator, ctx, next) = (replicator.clone(), ctx.clone(), next.clone());
        async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.get();
                if i >= ops {
                    return latencies;
                }
                next.set(i + 1);
                let sent = Instant::now();
                let update = Replicate { ctx: ctx.clone(), data: format!("update {i}").into_bytes() };
                replicator.send(update).await.unwrap().expect("replicated");
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
        }
    });
    let mut latencies: Vec<f64> = join_all(clients).await.into_iter().flatten().collect();
    let rate = ops as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let batches = cluster
        .views()
        .await
        .iter()
        .zip(before)
        .map(|(v, b)| (v.id, Batches { readies: v.batches.readies - b.readies, entries: v.batches.entries - b.entries, largest: v.batches.largest }))
        .collect();
    (rate, percentile(&latencies, 0.99), batches)
}

/// Leader crash to the first write a new leader acknowledges, median of `rounds`.
async fn failover(n: u64, rounds: usize) -> f64 {
    let (env, ctx) = env();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(env, n, dir.path(), 1).await.unwrap();
    let mut samples = Vec::new();
    for round in 0..rounds {
        let old = cluster.leader(Duration::from_secs(5)).await.expect("a leader");
        cluster.crash(old).await;
        let crashed = Instant::now();
        loop {
            let Some(new) = cluster.leader(Duration::from_secs(5)).await else { panic!("no new leader") };
            let update = Replicate { ctx: ctx.clone(), data: format!("after crash {round}").into_bytes() };
            if cluster.node(new).unwrap().replicator.send(update).await.unwrap().is_ok() {
                break;
            }
        }
        samples.push(crashed.elapsed().as_secs_f64() * 1e3);
        cluster.boot(old).await.unwrap();
        // Let the restarted node catch up before the next round.
        actix::clock::sleep(Duration::from_millis(300)).await;
    }
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 0.5)
}

fn main() {
    let ops = std::env::var("ERGON_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let system = actix::System::new();
    let figures = system.block_on(async move {
        let (p50_3, p99_3) = latency(3, ops).await;
        let (p50_5, p99_5) = latency(5, ops).await;
        let (ops_5, loaded_p99_5, batches) = throughput(5, ops.max(IN_FLIGHT * 10), IN_FLIGHT).await;
        let failover_5 = failover(5, 5).await;
        (p50_3, p99_3, p50_5, p99_5, ops_5, loaded_p99_5, batches, failover_5)
    });
    let (p50_3, p99_3, p50_5, p99_5, ops_5, loaded_p99_5, batches, failover_5) = figures;
    println!("replication benchmark: {ops} sequential updates per size through the leader's gated StateReplicator, fsync'd redb log, one process");
    println!("RESULT replicate_p50_ms_3n {p50_3:.2} ms");
    println!("RESULT replicate_p99_ms_3n {p99_3:.2} ms");
    println!("RESULT replicate_p50_ms_5n {p50_5:.2} ms");
    println!("RESULT replicate_p99_ms_5n {p99_5:.2} ms");
    println!("RESULT replicate_ops_per_s_5n {ops_5:.0} ops/s ({IN_FLIGHT} in flight)");
    println!("RESULT replicate_p99_ms_5n_loaded {loaded_p99_5:.2} ms ({IN_FLIGHT} in flight)");
    for (node, b) in batches {
        let mean = if b.readies == 0 { 0.0 } else { b.entries as f64 / b.readies as f64 };
        println!("batches node {node}: {} readies persisted {} entries, {mean:.1} per batch on average, {} at most", b.readies, b.entries, b.largest);
    }
    println!("RESULT failover_ms_5n {failover_5:.0} ms");
}
