//! Membership changes on a cluster of `ergon node` processes, with clients writing and reading
//! all along: a fourth node joins with `--join`, a founder is removed, a killed node is replaced
//! by a fifth (joint consensus), and the refusals come back over the wire with their errors. The
//! clients' history is checked for linearizability at the end.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::workload::{over_clients, Workload};
use common::{agreed_leader, call, cluster_files_joining, operator, until, NodeProcess};
use net::actors::cluster::linearizable::check;
use net::calls::RaftView;
use net::client::{Client, Credentials};

async fn raft(addresses: &[SocketAddr], id: u64, credentials: &Credentials) -> Option<RaftView> {
    let client = Client::connect(addresses[id as usize - 1], id, credentials).await.ok()?;
    client.raft_status().await.ok()
}

/// Waits until node `id` reports exactly `voters`, with no learners and no joint configuration.
async fn voters_become(addresses: &[SocketAddr], id: u64, credentials: &Credentials, voters: &[u64]) -> bool {
    until(Duration::from_secs(30), || async {
        let view = raft(addresses, id, credentials).await?;
        (view.voters == voters && view.learners.is_empty() && view.outgoing.is_empty()).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_leave_and_are_replaced_while_clients_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "[node_manager]\nmembership_timeout_ms = 3000\n";
    let addresses = cluster_files_joining(d, 3, 2, extra);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(d, id, None)).collect();
    let credentials = operator(d);
    until(Duration::from_secs(20), || agreed_leader(&addresses, &[1, 2, 3], &credentials)).await.expect("a leader");
    let workload = Workload::start(over_clients(addresses.clone(), credentials.clone()), vec![1, 2, 3], 3, Duration::from_secs(5));
    workload.acknowledges(10, "three founders").await;

    // Node 4 joins through node 1 (whichever node leads): a learner, then a voter.
    let seed = format!("1@{}", addresses[0]);
    let started = Instant::now();
    nodes.push(NodeProcess::spawn_with(d, 4, None, &["--join", &seed]));
    assert!(voters_become(&addresses, 1, &credentials, &[1, 2, 3, 4]).await, "node 4 becomes a voter");
    eprintln!("node 4 joined in {:?}", started.elapsed());
    assert!(voters_become(&addresses, 4, &credentials, &[1, 2, 3, 4]).await, "node 4 has the configuration too");
    workload.target(&[1, 2, 3, 4]);
    workload.acknowledges(10, "after node 4 joined").await;

    // Node 4 was granted NodeManagement to join; it may not admit anyone else with it.
    let certs = d.join("certs");
    let files = security::identity::TlsFiles { ca: certs.join("ca.pem"), cert: certs.join("n4.pem"), key: certs.join("n4.key") };
    let as_node_4 = Credentials::certificate(common::CLUSTER, "node:4", files).unwrap();
    let client = Client::connect(addresses[0], 1, &as_node_4).await.unwrap();
    let raft = net::calls::RaftJoin { address: "127.0.0.7:7".into(), replaces: None };
    let err = client.join("7", "voter", 10.0, net::actors::security::CapSet::EMPTY, "node_management", Some(raft)).await.unwrap_err();
    assert!(err.to_string().contains("PermissionDenied") && err.to_string().contains("may ask to join only itself"), "{err}");

    // A join of a member, over the wire: the node manager's own error.
    let (ok, out) = call(d, &["join", "4", "--kind", "voter", "--address", &addresses[3].to_string()]);
    assert!(!ok && out.contains("AlreadyMember") && out.contains("node 4 is already a member"), "{out}");

    // Node 2 is removed, and stopped.
    workload.target(&[1, 3, 4]);
    let (ok, out) = call(d, &["leave", "2"]);
    assert!(ok, "{out}");
    assert!(voters_become(&addresses, 1, &credentials, &[1, 3, 4]).await);
    assert!(nodes[1].terminate().is_some());
    workload.acknowledges(10, "after node 2 left").await;

    // Node 3 is killed and replaced by node 5; the cluster commits throughout.
    nodes[2].kill();
    workload.target(&[1, 4]);
    workload.acknowledges(5, "with node 3 dead").await;
    nodes.push(NodeProcess::spawn_with(d, 5, None, &["--join", &seed, "--replaces", "3"]));
    assert!(voters_become(&addresses, 1, &credentials, &[1, 4, 5]).await, "node 5 replaces node 3");
    workload.target(&[1, 4, 5]);
    workload.acknowledges(10, "after node 5 replaced node 3").await;

    // Refusals over the wire: a join that never completes blocks the next one until removed,
    // and a removal that would leave no reachable majority.
    let (ok, out) = call(d, &["join", "9", "--kind", "voter", "--address", "127.0.0.9:9"]);
    assert!(!ok && out.contains("MembershipChangeFailed"), "{out}");
    let (ok, out) = call(d, &["join", "8", "--kind", "voter", "--address", "127.0.0.8:8"]);
    assert!(!ok && out.contains("ChangeInProgress") && out.contains("node 9 is joining"), "{out}");
    let (ok, out) = call(d, &["leave", "9"]);
    assert!(ok, "the learner that never came is removed: {out}");
    let history = workload.finish().await;
    nodes[4].kill();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ok, out) = call(d, &["leave", "4"]);
    assert!(!ok && out.contains("NoQuorum"), "{out}");

    let answered = history.answered();
    assert!(answered > 50, "only {answered} operations answered");
    check(history.operations()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{answered} of {} operations answered; the history is linearizable", history.operations().len());
    for node in &mut nodes {
        node.kill();
    }
}
