//! Clients that keep a cluster busy with puts, linearizable gets and compare-and-sets on a few
//! keys while a test injects faults, recording every operation for the linearizability check
//! ([`cluster::linearizable`]). They reach the nodes through the Rust client or, inside a
//! network namespace, through `ergon call`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use net::actors::cluster::linearizable::{KvOp, KvResult, Recorder};
use net::actors::managers::state_replicator::Consistency;
use net::calls::{Answer, Call, Expect};
use net::client::{Client, Credentials};

/// Runs one operation on one node; `None` when it failed or its answer never came (it may still
/// have taken effect).
pub type Execute = Arc<dyn Fn(u64, Vec<u8>, KvOp) -> BoxFuture<'static, Option<KvResult>> + Send + Sync>;

/// What an answer says about `op`.
fn result_of(op: &KvOp, answer: Answer) -> Option<KvResult> {
    match (op, answer) {
        (KvOp::Put(_) | KvOp::Delete, Answer::Written { .. } | Answer::Deleted { .. }) => Some(KvResult::Done),
        (KvOp::Cas { .. }, Answer::Written { .. }) => Some(KvResult::Cas(true)),
        (KvOp::Cas { .. }, Answer::Mismatch { .. }) => Some(KvResult::Cas(false)),
        (KvOp::Get, Answer::Read { value, .. }) => Some(KvResult::Value(value.map(|(v, _)| v))),
        _ => None,
    }
}

fn call_of(key: Vec<u8>, op: &KvOp) -> Call {
    match op {
        KvOp::Put(value) => Call::Put { key, value: value.clone() },
        KvOp::Delete => Call::Delete { key },
        KvOp::Get => Call::Get { key, consistency: Consistency::Linearizable },
        KvOp::Cas { expected, value } => {
            Call::CompareAndSet { key, expected: expected.clone().map_or(Expect::Absent, Expect::Value), value: value.clone() }
        }
    }
}

/// Through the Rust client, a connection per operation.
pub fn over_clients(addresses: Vec<SocketAddr>, credentials: Credentials) -> Execute {
    Arc::new(move |node, key, op| {
        let (address, credentials) = (addresses[node as usize - 1], credentials.clone());
        Box::pin(async move {
            let client = Client::connect(address, node, &credentials).await.ok()?;
            result_of(&op, client.call(call_of(key, &op)).await.ok()?)
        })
    })
}

/// Through `ergon call --json` with `dir/client.toml`, inside network namespace `netns`.
pub fn over_cli(dir: PathBuf, netns: String) -> Execute {
    Arc::new(move |node, key, op| {
        let (dir, netns) = (dir.clone(), netns.clone());
        Box::pin(async move {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("the workload writes text");
            let mut args = vec!["call".to_string(), "--config".into(), dir.join("client.toml").display().to_string()];
            args.extend(["--node".into(), node.to_string(), "--json".into()]);
            match &op {
                KvOp::Put(value) => args.extend(["put".into(), text(&key), text(value)]),
                KvOp::Delete => args.extend(["delete".into(), text(&key)]),
                KvOp::Get => args.extend(["get".into(), text(&key)]),
                KvOp::Cas { expected, value } => {
                    args.extend(["cas".into(), text(&key), text(value)]);
                    match expected {
                        Some(v) => args.extend(["--expect".into(), text(v)]),
                        None => args.push("--absent".into()),
                    }
                }
            }
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("ip").args(["netns", "exec", &netns, env!("CARGO_BIN_EXE_ergon")]).args(&args).output()
            })
            .await
            .ok()?
            .ok()?;
            if !out.status.success() {
                return None;
            }
            let printed: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            result_of(&op, serde_json::from_value(printed["answer"].clone()).ok()?)
        })
    })
}

/// Concurrent clients on keys `k0` to `k2`, each doing puts, gets and compare-and-sets in turn
/// through the nodes it is told to use, until finished.
pub struct Workload {
    history: Arc<Mutex<Recorder>>,
    acked: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// `clients` clients through `execute`, on the nodes in `targets`; each gives an operation
    /// up after `timeout`.
    pub fn start(execute: Execute, targets: Vec<u64>, clients: u64, timeout: Duration) -> Workload {
        let history = Arc::new(Mutex::new(Recorder::default()));
        let acked = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(targets));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let tasks = (0..clients)
            .map(|client| {
                let (history, acked, targets, stop, execute) = (history.clone(), acked.clone(), targets.clone(), stop.clone(), execute.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut last_written: Option<Vec<u8>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let node = {
                            let t = targets.lock().unwrap();
                            t[(n + client) as usize % t.len()]
                        };
                        let key = format!("k{}", (n + client) % 3).into_bytes();
                        let value = format!("c{client}-{n}").into_bytes();
                        let op = match n % 4 {
                            0 | 1 => KvOp::Put(value.clone()),
                            2 => KvOp::Get,
                            _ => KvOp::Cas { expected: last_written.clone(), value: value.clone() },
                        };
                        let now = || epoch.elapsed().as_nanos() as u64;
                        let i = history.lock().unwrap().invoke(&key, op.clone(), now());
                        let result = tokio::time::timeout(timeout, execute(node, key, op)).await.ok().flatten();
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

    /// Uses the nodes in `nodes` from now on.
    pub fn target(&self, nodes: &[u64]) {
        *self.targets.lock().unwrap() = nodes.to_vec();
    }

    /// How many writes were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits, at most 30 s, until `more` writes beyond those acknowledged so far are
    /// acknowledged; panics saying `what` otherwise.
    pub async fn acknowledges(&self, more: usize, what: &str) {
        let goal = self.acknowledged() + more;
        let reached = super::until(Duration::from_secs(30), || async { (self.acknowledged() >= goal).then_some(()) }).await;
        assert!(reached.is_some(), "{what}: only {} of {goal} writes acknowledged", self.acknowledged());
    }

    /// Stops the clients (each finishes its operation) and answers the history.
    pub async fn finish(self) -> Recorder {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.history).unwrap().into_inner().unwrap()
    }
}
