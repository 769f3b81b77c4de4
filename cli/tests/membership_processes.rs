//! Membership changes on a cluster of `ergon node` processes, with clients writing and reading
//! all along: a fourth node joins with `--join`, a founder is removed, a killed node is replaced
//! by a fifth (joint consensus), and the refusals come back over the wire with their errors. The
//! clients' history is checked for linearizability at the end.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net::actors::cluster::linearizable::{check, KvOp, KvResult, Recorder};
use common::{agreed_leader, cluster_files_joining, operator, until, NodeProcess};
use net::calls::{Answer, Call, Expect, RaftView};
use net::client::{Client, Credentials};

/// Clients doing puts, linearizable gets and compare-and-sets on a few keys through the nodes
/// in `targets`, recording every operation; they run until `stop`.
struct Workload {
    history: Arc<Mutex<Recorder>>,
    acked: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(addresses: Vec<SocketAddr>, credentials: Credentials, targets: Vec<u64>) -> Workload {
        let history = Arc::new(Mutex::new(Recorder::default()));
        let acked = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(targets));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let tasks = (0..3u64)
            .map(|client| {
                let (history, acked, targets, stop) = (history.clone(), acked.clone(), targets.clone(), stop.clone());
                let (addresses, credentials) = (addresses.clone(), credentials.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut last_written: Option<Vec<u8>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let node = {
                            let t = targets.lock().unwrap();
                            t[(n as usize + client as usize) % t.len()]
                        };
                        let key = format!("k{}", n % 3).into_bytes();
                        let value = format!("c{client}-{n}").into_bytes();
                        let op = match n % 4 {
                            0 | 1 => KvOp::Put(value.clone()),
                            2 => KvOp::Get,
                            _ => KvOp::Cas { expected: last_written.clone(), value: value.clone() },
                        };
                        let now = || epoch.elapsed().as_nanos() as u64;
                        let i = history.lock().unwrap().invoke(&key, op.clone(), now());
                        let result = tokio::time::timeout(Duration::from_secs(5), async {
                            let client = Client::connect(addresses[node as usize - 1], node, &credentials).await.ok()?;
                            match &op {
                                KvOp::Put(v) => client.put(&key, v).await.ok().map(|_| KvResult::Done),
                                KvOp::Get => {
                                    let read = client.get(&key, net::actors::managers::state_replicator::Consistency::Linearizable).await.ok()?;
                                    Some(KvResult::Value(read.map(|(v, _)| v)))
                                }
                                KvOp::Cas { expected, value } => {
                                    let expected = expected.clone().map_or(Expect::Absent, Expect::Value);
                                    let call = Call::CompareAndSet { key: key.clone(), expected, value: value.clone() };
                                    match client.call(call).await.ok()? {
                                        Answer::Written { .. } => Some(KvResult::Cas(true)),
                                        Answer::Mismatch { .. } => Some(KvResult::Cas(false)),
                                        _ => None,
                                    }
                                }
                                KvOp::Delete => None,
                            }
                        })
                        .await
                        .ok()
                        .flatten();
                        // An operation that failed or timed out may still take effect: it stays
                        // unanswered in the history.
                        if let Some(result) = result {
                            if matches!(result, KvResult::Done | KvResult::Cas(true)) {
                                acked.fetch_add(1, Ordering::Relaxed);
                                last_written = Some(value);
                            }
                            history.lock().unwrap().complete(i, result, now());
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Workload { history, acked, targets, stop, tasks }
    }

    fn target(&self, nodes: &[u64]) {
        *self.targets.lock().unwrap() = nodes.to_vec();
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged.
    async fn acknowledges(&self, more: usize, what: &str) {
        let goal = self.acked.load(Ordering::Relaxed) + more;
        let reached = until(Duration::from_secs(20), || async { (self.acked.load(Ordering::Relaxed) >= goal).then_some(()) }).await;
        assert!(reached.is_some(), "{what}: only {} of {goal} writes acknowledged", self.acked.load(Ordering::Relaxed));
    }

    async fn finish(self) -> Recorder {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.history).unwrap().into_inner().unwrap()
    }
}

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

fn call(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ergon")).args(["call", "--config"]).arg(dir.join("client.toml")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
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
    let workload = Workload::start(addresses.clone(), credentials.clone(), vec![1, 2, 3]);
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
