//! Five `ergon node` processes on loopback with mutual TLS and durable logs (Raft's redb store
//! and an audit log that answers only once each entry is synced), driven by the Rust client.
//! Prints `RESULT` lines; run with `make bench-tcp`. `ERGON_BENCH_OPS` sets the number of updates
//! of the latency and throughput runs (default 2000), `ERGON_BENCH_SECS` the length of the
//! availability run (default 10).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{percentile, result};
use common::{agreed_leader, cluster_files_with, operator, until, NodeProcess};
use net::client::{Client, Credentials};

const NODES: u64 = 5;
const IN_FLIGHT: usize = 64;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A client of every node, reconnecting to whichever it needs.
struct Clients {
    addresses: Vec<SocketAddr>,
    credentials: Credentials,
    open: Vec<Option<Arc<Client>>>,
}

impl Clients {
    fn new(addresses: &[SocketAddr], credentials: &Credentials) -> Self {
        Clients { addresses: addresses.to_vec(), credentials: credentials.clone(), open: vec![None; addresses.len()] }
    }

    async fn get(&mut self, node: u64) -> Option<Arc<Client>> {
        let slot = &mut self.open[node as usize - 1];
        if slot.is_none() {
            let connect = Client::connect(self.addresses[node as usize - 1], node, &self.credentials);
            *slot = tokio::time::timeout(Duration::from_millis(500), connect).await.ok()?.ok().map(Arc::new);
        }
        slot.clone()
    }

    /// One update, through `first` or, failing that, the next nodes in turn, within `deadline`.
    /// Answers the node that acknowledged it.
    async fn write(&mut self, first: u64, data: Vec<u8>, deadline: Instant) -> Option<u64> {
        let mut node = first;
        while Instant::now() < deadline {
            if let Some(client) = self.get(node).await {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, client.replicate(data.clone())).await {
                    Ok(Ok(_)) => return Some(node),
                    Ok(Err(_)) | Err(_) => self.open[node as usize - 1] = None,
                }
            }
            node = node % NODES + 1;
        }
        None
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ops = env_or("ERGON_BENCH_OPS", 2000);
    let secs = env_or("ERGON_BENCH_SECS", 10) as u64;
    let dir = tempfile::tempdir().unwrap();
    // The benchmark measures the network and replication, not budgets.
    let addresses = cluster_files_with(dir.path(), NODES, "[state_replicator]\nbudget_joules = 1e15\n");
    let all: Vec<u64> = (1..=NODES).collect();
    let mut nodes: Vec<NodeProcess> = all.iter().map(|&id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    let leader = until(Duration::from_secs(30), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader");
    let client = Arc::new(Client::connect(addresses[leader as usize - 1], leader, &credentials).await.unwrap());

    // Sequential latency through the leader.
    let mut samples = Vec::with_capacity(ops);
    for i in 0..ops {
        let started = Instant::now();
        client.replicate(format!("sequential {i}").into_bytes()).await.expect("replicated");
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    result!("tcp_replicate_p50_ms_5n {:.3} ms", percentile(&samples, 0.5));
    result!("tcp_replicate_p99_ms_5n {:.3} ms", percentile(&samples, 0.99));

    // Throughput with 64 requests in flight on one connection to the leader.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    let sent = Instant::now();
                    client.replicate(b"in flight".to_vec()).await.expect("replicated");
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    result!("tcp_replicate_ops_per_s_5n {:.0} ops/s", ops as f64 / elapsed);
    result!("tcp_replicate_p99_ms_5n_loaded {:.3} ms", percentile(&latencies, 0.99));

    // Availability over a steady run in which the leader is killed once, and the failover: from
    // the kill to the first write acknowledged after it.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let first_after_kill: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let killed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (addresses, credentials) = (addresses.clone(), credentials.clone());
            let (stop, answered, asked) = (stop.clone(), answered.clone(), asked.clone());
            let (first_after_kill, killed) = (first_after_kill.clone(), killed.clone());
            tokio::spawn(async move {
                let mut clients = Clients::new(&addresses, &credentials);
                let mut preferred = w % NODES + 1;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    asked.fetch_add(1, Ordering::Relaxed);
                    if let Some(node) = clients.write(preferred, b"steady".to_vec(), sent + Duration::from_secs(1)).await {
                        answered.fetch_add(1, Ordering::Relaxed);
                        preferred = node;
                        if killed.lock().unwrap().is_some_and(|k| sent >= k) {
                            first_after_kill.lock().unwrap().get_or_insert_with(Instant::now);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    let current = until(Duration::from_secs(5), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader");
    *killed.lock().unwrap() = Some(Instant::now());
    nodes[current as usize - 1].kill();
    tokio::time::sleep(Duration::from_secs(secs - secs / 3)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let killed_at = killed.lock().unwrap().unwrap();
    match *first_after_kill.lock().unwrap() {
        Some(first) => result!("tcp_failover_ms_5n {:.1} ms", (first - killed_at).as_secs_f64() * 1e3),
        None => result!("tcp_failover_ms_5n none: no write was acknowledged after the kill"),
    }
    let (answered, asked) = (answered.load(Ordering::Relaxed), asked.load(Ordering::Relaxed));
    result!("tcp_availability_5n {:.5} fraction ({answered} of {asked} answered within 1 s)", answered as f64 / asked as f64);
    drop(nodes);
}
