//! Partitions with real packet loss, as Jepsen makes them: five `ergon node` processes inside a
//! network namespace of the test's own, iptables DROP rules between their 127.0.0.x addresses.
//! Needs root, iproute2 and iptables; `make test` installs what is missing first (CI runs as
//! root). Without root it fails, saying so. Every call goes through `ergon call` inside the namespace.
//! Clients keep doing keyed puts, gets and compare-and-sets throughout, and their history is
//! checked for linearizability at the end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::workload::{over_cli, Workload};
use common::{cluster_files, Netns, NodeProcess};
use net::actors::cluster::linearizable::check;
use serde_json::Value;

/// `ergon call --node <node> --json <args>` inside `netns`: the answer, or what it printed.
fn call(netns: &Netns, dir: &Path, node: u64, args: &[&str]) -> Result<Value, String> {
    let out = netns
        .command(env!("CARGO_BIN_EXE_ergon"))
        .args(["call", "--config"])
        .arg(dir.join("client.toml"))
        .args(["--node", &node.to_string(), "--json"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        let printed: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(printed["answer"].clone())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leader_of(netns: &Netns, dir: &Path, nodes: &[u64]) -> Option<u64> {
    let leaders: Option<Vec<u64>> = nodes.iter().map(|&n| call(netns, dir, n, &["leader"]).ok()?["Leader"][0].as_u64()).collect();
    let leaders = leaders?;
    leaders.windows(2).all(|w| w[0] == w[1]).then(|| leaders[0])
}

fn state(netns: &Netns, dir: &Path, node: u64) -> Option<(u64, Vec<u8>)> {
    let answer = call(netns, dir, node, &["read-state"]).ok()?;
    let state = &answer["State"];
    let data = state["data"].as_array()?.iter().map(|b| b.as_u64().map(|b| b as u8)).collect::<Option<Vec<u8>>>()?;
    Some((state["version"].as_u64()?, data))
}

#[test]
fn a_partitioned_minority_cannot_commit_the_majority_can_and_every_node_converges_after_healing() {
    // Nodes are dropped (killed) before the namespace.
    let netns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    cluster_files(dir.path(), 5);
    let all: Vec<u64> = (1..=5).collect();
    let _nodes: Vec<NodeProcess> = all.iter().map(|&id| NodeProcess::spawn(dir.path(), id, Some(&netns))).collect();

    let leader = until(Duration::from_secs(20), || leader_of(&netns, dir.path(), &all)).expect("five nodes elect a leader");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let workload = {
        let _inside = runtime.enter();
        Workload::start(over_cli(dir.path().to_owned(), netns.0.clone()), all.clone(), 3, Duration::from_secs(10))
    };
    for i in 0..5 {
        call(&netns, dir.path(), all[i % 5], &["replicate", &format!("before {i}")]).expect("writes before the partition");
    }

    // The leader and one other node are cut off from the other three.
    let other = all.iter().copied().find(|&n| n != leader).unwrap();
    let minority = [leader, other];
    let majority: Vec<u64> = all.iter().copied().filter(|n| !minority.contains(n)).collect();
    for &m in &minority {
        for &n in &majority {
            netns.cut(m, n);
        }
    }

    // The majority elects a new leader and commits.
    let committed = until(Duration::from_secs(15), || {
        majority.iter().find_map(|&n| call(&netns, dir.path(), n, &["replicate", "majority"]).ok())
    })
    .expect("the majority commits during the partition");
    let version = committed["State"]["version"].as_u64().unwrap();
    assert!(version >= 6, "five writes before, one now, and the clients' keyed commands: {version}");

    // The minority cannot: its writes are not acknowledged.
    for &m in &minority {
        let refused = call(&netns, dir.path(), m, &["replicate", "minority"]).expect_err("a minority node acknowledged a write");
        assert!(refused.contains("ReplicaUpdateFailed"), "node {m}: {refused}");
    }

    netns.heal();
    // The clients go on through the healing, then stop, so that the nodes can be seen to agree.
    std::thread::sleep(Duration::from_secs(2));
    let history = runtime.block_on(workload.finish());
    let converged = until(Duration::from_secs(20), || {
        let states: Option<Vec<_>> = all.iter().map(|&n| state(&netns, dir.path(), n)).collect();
        let states = states?;
        states.windows(2).all(|w| w[0] == w[1]).then(|| states[0].clone())
    })
    .expect("every node converges after the partition heals");
    assert!(converged.0 >= version, "{converged:?}");
    assert_eq!(converged.1, b"majority", "what the majority acknowledged, and nothing of the minority's");

    let answered = history.answered();
    assert!(answered >= 20, "only {answered} keyed operations answered");
    check(history.operations()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{answered} of {} keyed operations answered; the history is linearizable", history.operations().len());
}
