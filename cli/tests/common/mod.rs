//! Clusters of real `ergon node` processes for tests: certificates and configurations, processes
//! that are killed when the test ends however it ends, clients, and network namespaces whose
//! links iptables can cut.

#![allow(dead_code)]

pub mod workload;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net::client::{Client, ClientError, Credentials};
use security::identity::TlsFiles;

pub const CLUSTER: &str = "proc";

/// `ergon` with `args`, waited for.
pub fn ergon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ergon")).args(args).output().expect("the ergon binary runs")
}

/// `ergon call --config dir/client.toml args`: whether it succeeded, and what it printed (stdout,
/// then stderr).
pub fn call(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ergon")).args(["call", "--config"]).arg(dir.join("client.toml")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A port nobody listens on at `ip` right now.
pub fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap()
}

/// Node `id`'s address: 127.0.0.`id`, so that firewall rules can tell the nodes apart.
pub fn node_ip(id: u64) -> String {
    format!("127.0.0.{id}")
}

/// Certificates made by `ergon certs init`, configurations for nodes `1..=n` on 127.0.0.1..n
/// (`dir/nN.toml`), and the operator's client configuration (`dir/client.toml`).
pub fn cluster_files(dir: &Path, n: u64) -> Vec<SocketAddr> {
    cluster_files_with(dir, n, "")
}

/// Like [`cluster_files`], with `extra` appended to every node's configuration.
pub fn cluster_files_with(dir: &Path, n: u64, extra: &str) -> Vec<SocketAddr> {
    cluster_files_joining(dir, n, 0, extra)
}

/// Files for a cluster founded by nodes `1..=founders`, and for `joiners` more nodes after them
/// that list only themselves as members (they are started with `--join`); the founders grant
/// each joiner `node:<id>` what joining needs. Answers every node's address.
pub fn cluster_files_joining(dir: &Path, founders: u64, joiners: u64, extra: &str) -> Vec<SocketAddr> {
    let n = founders + joiners;
    let certs = dir.join("certs");
    let out = ergon(&["certs", "init", "--cluster", CLUSTER, "--nodes", &n.to_string(), "--user", "operator", "--out", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ergon(&["token", "keygen", "--out", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let addresses: Vec<SocketAddr> = (1..=n).map(|id| free_port(&node_ip(id))).collect();
    let member = |id: u64| format!("{{ id = {id}, address = \"{}\" }}", addresses[id as usize - 1]);
    let everyone = (1..=n).map(member).collect::<Vec<_>>().join(", ");
    let founding = (1..=founders).map(member).collect::<Vec<_>>().join(", ");
    let joining: String = (founders + 1..=n)
        .map(|j| format!(", {{ principal = \"node:{j}\", capabilities = [\"NodeManagement\", \"ElectionManagement\"] }}"))
        .collect();
    for id in 1..=n {
        let members = if id <= founders { founding.clone() } else { member(id) };
        let config = format!(
            r#"[node]
id = {id}
cluster = "{CLUSTER}"
listen = "{listen}"
data_dir = "n{id}"
members = [{members}]
tls = {{ ca = "certs/ca.pem", cert = "certs/n{id}.pem", key = "certs/n{id}.key" }}
callers = [{{ principal = "user:operator", capabilities = ["StateManagement", "ReplicationManagement", "ElectionManagement", "EnergyManagement", "NodeManagement"] }}{joining}]
tokens = {{ key = "certs/token.pub" }}

[audit]
durability = "before_reply"
{extra}
"#,
            listen = addresses[id as usize - 1],
        );
        std::fs::write(dir.join(format!("n{id}.toml")), config).unwrap();
    }
    let client = format!(
        r#"cluster = "{CLUSTER}"
principal = "user:operator"
tls = {{ ca = "certs/ca.pem", cert = "certs/operator.pem", key = "certs/operator.key" }}
nodes = [{everyone}]
# Apart from every node's address, so that cutting nodes off one another leaves the client's way.
source = "127.0.0.100"
"#
    );
    std::fs::write(dir.join("client.toml"), client).unwrap();
    addresses
}

/// The operator's credentials.
pub fn operator(dir: &Path) -> Credentials {
    let certs = dir.join("certs");
    let files = TlsFiles { ca: certs.join("ca.pem"), cert: certs.join("operator.pem"), key: certs.join("operator.key") };
    Credentials::certificate(CLUSTER, "user:operator", files).unwrap()
}

/// A network namespace of the test's own, with its loopback up; deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    /// Creates one. Needs root (CI runs as root) and iproute2.
    pub fn create() -> Netns {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("ergon-test-{}-{}", std::process::id(), COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("iproute2's ip runs");
            assert!(out.status.success(), "ip {}: {} (these tests need root)", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &name]);
        let netns = Netns(name);
        run(&["netns", "exec", &netns.0, "ip", "link", "set", "lo", "up"]);
        netns
    }

    /// Runs `program args` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0, program]);
        command
    }

    /// Drops every packet between node `a` and node `b`, both ways, as Jepsen does.
    pub fn cut(&self, a: u64, b: u64) {
        for (from, to) in [(a, b), (b, a)] {
            let out = self.command("iptables").args(["-A", "INPUT", "-s", &node_ip(from), "-d", &node_ip(to), "-j", "DROP"]).output().unwrap();
            assert!(out.status.success(), "iptables: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// Removes every rule.
    pub fn heal(&self) {
        let out = self.command("iptables").args(["-F", "INPUT"]).output().unwrap();
        assert!(out.status.success(), "iptables -F: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// A node process, killed when dropped, so that a failing test leaves nothing running.
pub struct NodeProcess {
    pub id: u64,
    child: Option<Child>,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts node `id` of `dir`'s cluster, inside `netns` if given.
    pub fn spawn(dir: &Path, id: u64, netns: Option<&Netns>) -> NodeProcess {
        Self::spawn_with(dir, id, netns, &[])
    }

    /// Starts node `id` with `args` after its configuration (`--join ...`).
    pub fn spawn_with(dir: &Path, id: u64, netns: Option<&Netns>, args: &[&str]) -> NodeProcess {
        let log = dir.join(format!("n{id}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let ergon = env!("CARGO_BIN_EXE_ergon");
        let mut command = match netns {
            Some(netns) => netns.command(ergon),
            None => Command::new(ergon),
        };
        // `ip netns exec` executes the program in its own process: the child is the node.
        let child = command
            .args(["node", "--config"])
            .arg(dir.join(format!("n{id}.toml")))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("ergon node starts");
        NodeProcess { id, child: Some(child), log }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with the system's `kill`.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
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

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            // A panic's message is above its backtrace, which would fill the tail.
            let lines: Vec<&str> = log.lines().collect();
            for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
                eprintln!("--- node {} panicked ---\n{}", self.id, lines[i..(i + 3).min(lines.len())].join("\n"));
            }
            let tail: Vec<&str> = lines.iter().rev().take(30).copied().collect();
            eprintln!("--- node {} log (last lines) ---\n{}", self.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

/// Polls `probe` every 50 ms until it answers `Some`, at most `within`.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(within: Duration, probe: impl FnMut() -> F) -> Option<T> {
    net::actors::node::wait::eventually(within, Duration::from_millis(50), probe).await
}

/// The leader, as every node in `ids` knows it.
pub async fn agreed_leader(addresses: &[SocketAddr], ids: &[u64], credentials: &Credentials) -> Option<u64> {
    let mut leaders = Vec::new();
    for &id in ids {
        let client = Client::connect(addresses[id as usize - 1], id, credentials).await.ok()?;
        leaders.push(client.leader().await.ok()??.0);
    }
    leaders.windows(2).all(|w| w[0] == w[1]).then(|| leaders[0])
}

/// Replicates `data` through the first node of `ids` that acknowledges it.
pub async fn write(addresses: &[SocketAddr], ids: &[u64], credentials: &Credentials, data: &[u8]) -> Result<u64, ClientError> {
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
