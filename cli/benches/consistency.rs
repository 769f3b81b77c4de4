//! Reads at each consistency level and a membership change, on five `ergon node` processes on
//! loopback with mutual TLS and durable logs, driven by the Rust client. Prints `RESULT` lines;
//! run with `make bench-reads`. `ERGON_BENCH_OPS` sets the number of reads per level (default
//! 2000).
//!
//! Reads rotate over the five nodes, so four in five go through a follower: a linearizable read
//! there asks the leader for its read index (the leader confirms it still leads with a quorum)
//! and waits until the follower has applied that far; a stale read answers from the follower's
//! applied map at once. The membership change is a join answered: from the operator's `Join` to
//! the leader to its answer, which comes once the new node, started with `--join-later`, has
//! received a snapshot, caught up as a learner and been promoted to voter.
//!
//! Every read passes a gate and is audited; the nodes sync their audit logs every 10 ms (the
//! default). `ERGON_BENCH_AUDIT=before_reply` holds each answer until its entry is synced.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use support::{percentile, result};
use common::{agreed_leader, cluster_files_joining, operator, until, NodeProcess};
use net::actors::managers::state_replicator::Consistency;
use net::calls::RaftJoin;
use net::client::Client;
use net::actors::security::CapSet;

const NODES: u64 = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ops: usize = std::env::var("ERGON_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    // Budgets are not what is measured.
    let extra = "[state_replicator]\nbudget_joules = 1e15\n[node_manager]\nbudget_joules = 1e15\n";
    let addresses = cluster_files_joining(dir.path(), NODES, 1, extra);
    // The nodes' default audit durability (a sync every 10 ms), not the test files' before_reply,
    // which holds every answer, reads included, until its audit entry is synced: what is measured
    // is the read path. ERGON_BENCH_AUDIT=before_reply measures with it.
    let durability = match std::env::var("ERGON_BENCH_AUDIT").as_deref() {
        Ok("before_reply") => "\"before_reply\"",
        _ => "{ interval_ms = 10 }",
    };
    for id in 1..=NODES + 1 {
        let file = dir.path().join(format!("n{id}.toml"));
        let text = std::fs::read_to_string(&file).unwrap().replace("durability = \"before_reply\"", &format!("durability = {durability}"));
        std::fs::write(&file, text).unwrap();
    }
    let all: Vec<u64> = (1..=NODES).collect();
    let mut nodes: Vec<NodeProcess> = all.iter().map(|&id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    let leader = until(Duration::from_secs(30), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader");
    let mut clients = Vec::new();
    for &id in &all {
        clients.push(Client::connect(addresses[id as usize - 1], id, &credentials).await.unwrap());
    }
    clients[leader as usize - 1].put(b"bench", b"value").await.unwrap();

    for (name, consistency) in [("linearizable", Consistency::Linearizable), ("stale", Consistency::Stale)] {
        let mut samples = Vec::with_capacity(ops);
        for i in 0..ops {
            let started = Instant::now();
            let read = clients[i % clients.len()].get(b"bench", consistency).await.expect("read");
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(consistency == Consistency::Stale || read.is_some(), "a linearizable read sees the write");
        }
        samples.sort_by(f64::total_cmp);
        result!("read_{name}_p50_ms_5n {:.3} ms", percentile(&samples, 0.5));
        result!("read_{name}_p99_ms_5n {:.3} ms", percentile(&samples, 0.99));
    }

    // A sixth node joins: learner, snapshot, catch-up, voter. Started with --join-later, it lists
    // the members that will contact it, as well as itself.
    let new = NODES + 1;
    let config = dir.path().join(format!("n{new}.toml"));
    let everyone = addresses.iter().enumerate().map(|(i, a)| format!("{{ id = {}, address = \"{a}\" }}", i + 1)).collect::<Vec<_>>().join(", ");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.lines().map(|l| if l.starts_with("members = ") { format!("members = [{everyone}]") } else { l.to_string() }).collect::<Vec<_>>().join("\n");
    std::fs::write(&config, text).unwrap();
    nodes.push(NodeProcess::spawn_with(dir.path(), new, None, &["--join-later"]));
    let leader = until(Duration::from_secs(10), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader");
    let to_leader = &clients[leader as usize - 1];
    // The new node's listener must be up before it can be sent anything.
    until(Duration::from_secs(10), || async { Client::connect(addresses[new as usize - 1], new, &credentials).await.ok().map(|_| ()) })
        .await
        .expect("the new node listens");
    let raft = RaftJoin { address: addresses[new as usize - 1].to_string(), replaces: None };
    let started = Instant::now();
    let (_, voters) = to_leader.join(&new.to_string(), "voter", 100.0, CapSet::EMPTY, "node_management", Some(raft)).await.expect("the join is answered");
    result!("membership_change_ms {:.1} ms (join answered: learner to voter; voters now {})", started.elapsed().as_secs_f64() * 1e3, voters.join(", "));
    drop(nodes);
}
