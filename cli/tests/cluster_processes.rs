//! Real node processes (`ergon node`) on loopback addresses with mutual TLS, driven by the Rust
//! client: a leader is elected, acknowledged updates survive `kill -9` of the leader, a new
//! leader takes writes, and the killed node restarts from its data directory and catches up.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net::client::{Client, ClientError, Credentials};
use security::identity::TlsFiles;

const CLUSTER: &str = "proc";

/// A node process, killed when dropped, so that a failing test leaves nothing running.
struct NodeProcess {
    id: u64,
    child: Option<Child>,
    log: PathBuf,
}

impl NodeProcess {
    fn spawn(dir: &Path, id: u64) -> NodeProcess {
        let log = dir.join(format!("n{id}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ergon"))
            .args(["node", "--config"])
            .arg(dir.join(format!("n{id}.toml")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("ergon node starts");
        NodeProcess { id, child: Some(child), log }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- node {} log (last lines) ---\n{}", self.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap()
}

fn ergon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ergon")).args(args).output().expect("the ergon binary runs")
}

/// Certificates made by `ergon certs init`, and configurations for `n` nodes on 127.0.0.1..n.
fn cluster_files(dir: &Path, n: u64) -> Vec<SocketAddr> {
    let certs = dir.join("certs");
    let out = ergon(&["certs", "init", "--cluster", CLUSTER, "--nodes", &n.to_string(), "--user", "operator", "--out", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let addresses: Vec<SocketAddr> = (1..=n).map(|i| free_port(&format!("127.0.0.{i}"))).collect();
    let members: Vec<String> = addresses.iter().enumerate().map(|(i, a)| format!("{{ id = {}, address = \"{a}\" }}", i + 1)).collect();
    for id in 1..=n {
        let config = format!(
            r#"[node]
id = {id}
cluster = "{CLUSTER}"
listen = "{listen}"
data_dir = "n{id}"
members = [{members}]
tls = {{ ca = "certs/ca.pem", cert = "certs/n{id}.pem", key = "certs/n{id}.key" }}
callers = [{{ principal = "user:operator", capabilities = ["StateManagement", "ReplicationManagement", "ElectionManagement", "EnergyManagement"] }}]

[audit]
durability = "before_reply"
"#,
            listen = addresses[id as usize - 1],
            members = members.join(", "),
        );
        std::fs::write(dir.join(format!("n{id}.toml")), config).unwrap();
    }
    addresses
}

fn operator(dir: &Path) -> Credentials {
    let certs = dir.join("certs");
    let files = TlsFiles { ca: certs.join("ca.pem"), cert: certs.join("operator.pem"), key: certs.join("operator.key") };
    Credentials::certificate(CLUSTER, "user:operator", files).unwrap()
}

/// Polls `f` every 50 ms until it answers `Some`, at most `within`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(within: Duration, mut f: impl FnMut() -> F) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = f().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader, as every node in `ids` knows it.
async fn agreed_leader(addresses: &[SocketAddr], ids: &[u64], credentials: &Credentials) -> Option<u64> {
    let mut leaders = Vec::new();
    for &id in ids {
        let client = Client::connect(addresses[id as usize - 1], id, credentials).await.ok()?;
        leaders.push(client.leader().await.ok()??.0);
    }
    leaders.windows(2).all(|w| w[0] == w[1]).then(|| leaders[0])
}

/// Replicates `data` through the first node of `ids` that acknowledges it.
async fn write(addresses: &[SocketAddr], ids: &[u64], credentials: &Credentials, data: &[u8]) -> Result<u64, ClientError> {
    let mut last = ClientError::Connect("no node tried".into());
    for &id in ids {
        match Client::connect(addresses[id as usize - 1], id, credentials).await {
            Ok(client) => match client.replicate(data.to_vec()).await {
                Ok((version, _)) => return Ok(version),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_survive_kill_9_of_the_leader_and_the_killed_node_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 3);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(dir.path(), id)).collect();
    let credentials = operator(dir.path());
    let all = [1, 2, 3];

    let leader = until(Duration::from_secs(20), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader is elected");
    let mut acknowledged = Vec::new();
    for i in 0..20u8 {
        acknowledged.push(write(&addresses, &all, &credentials, &[i]).await.expect("a write through any node is acknowledged"));
    }

    nodes[leader as usize - 1].kill();
    let killed_at = Instant::now();
    let survivors: Vec<u64> = all.iter().copied().filter(|&id| id != leader).collect();
    let version = until(Duration::from_secs(10), || async { write(&addresses, &survivors, &credentials, b"after the kill").await.ok() })
        .await
        .expect("the survivors take writes");
    let failover = killed_at.elapsed();
    eprintln!("failover: a write acknowledged {failover:?} after kill -9 of leader {leader}");
    assert!(failover < Duration::from_secs(2), "a new leader took a write {failover:?} after kill -9 of the old one");
    acknowledged.push(version);
    assert!(acknowledged.windows(2).all(|w| w[0] < w[1]), "versions only grow: {acknowledged:?}");

    // The killed node restarts from its data directory and catches up.
    nodes[leader as usize - 1] = NodeProcess::spawn(dir.path(), leader);
    let restarted = addresses[leader as usize - 1];
    let caught_up = until(Duration::from_secs(20), || async {
        let client = Client::connect(restarted, leader, &credentials).await.ok()?;
        let (applied, data) = client.read_state().await.ok()?;
        (applied >= version).then_some((applied, data))
    })
    .await
    .expect("the restarted node applies every acknowledged update");
    assert_eq!(caught_up, (version, b"after the kill".to_vec()), "no acknowledged update was lost");

    // SIGTERM stops a node cleanly: exit status 0 and an audit log that verifies.
    for node in &mut nodes {
        let status = node.terminate().expect("the node exits");
        assert!(status.success(), "node {} exited with {status}: {}", node.id, node.log());
    }
    for id in all {
        let verified = ergon(&["audit", "verify", dir.path().join(format!("n{id}/audit")).to_str().unwrap()]);
        assert!(verified.status.success(), "node {id}: {}", String::from_utf8_lossy(&verified.stdout));
    }
}

#[test]
fn a_node_refuses_to_start_with_a_message_that_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 2);
    let start = |config: &str| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ergon")).args(["node", "--config"]).arg(&path).output().unwrap();
        assert!(!out.status.success(), "started with {config}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let n1 = std::fs::read_to_string(dir.path().join("n1.toml")).unwrap();

    let no_tls = n1.replace(r#"tls = { ca = "certs/ca.pem", cert = "certs/n1.pem", key = "certs/n1.key" }"#, "");
    assert!(start(&no_tls).contains("insecure = true"), "TLS or an explicit insecure = true");
    let wrong_cert = n1.replace("certs/n1.pem", "certs/n2.pem");
    assert!(start(&wrong_cert).contains("n2.pem is not valid for n1.proc.ergon"));
    let missing = n1.replace("certs/n1.key", "certs/missing.key");
    assert!(start(&missing).contains("missing.key"));
    let typo = n1.replace("data_dir", "datadir");
    assert!(start(&typo).contains("datadir"));

    // The port is taken.
    let taken = TcpListener::bind(addresses[0]).unwrap();
    let err = start(&n1);
    assert!(err.contains(&format!("cannot listen on {}", addresses[0])), "{err}");
    drop(taken);

    // A data directory that belongs to node 2.
    std::fs::create_dir_all(dir.path().join("n1")).unwrap();
    std::fs::write(dir.path().join("n1/node.toml"), "cluster = \"proc\"\nid = 2\n").unwrap();
    let err = start(&n1);
    assert!(err.contains("belongs to node 2 of cluster \"proc\", not node 1"), "{err}");
}
