//! A cluster's files for tests: a CA, certificates for its nodes and callers, and node
//! configurations on free loopback ports.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use actors::security::identity::certs::{write_issued, write_new, Authority};
use actors::security::identity::{node_name, principal_name, ClusterName};
use actors::security::Principal;
use net::node::NodeConfig;

pub const CLUSTER: &str = "test";

/// A port nobody listens on right now.
pub fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap()
}

/// A CA and certificates for nodes `1..=n` and for `user:operator`, in `dir/certs`.
pub fn certificates(dir: &Path, n: u64) -> Authority {
    let cluster = ClusterName::new(CLUSTER).unwrap();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = Authority::generate(&cluster).unwrap();
    write_new(&certs.join("ca.pem"), ca.cert_pem(), false).unwrap();
    for id in 1..=n {
        write_issued(&certs, &format!("n{id}"), &ca.issue(&node_name(&cluster, id)).unwrap()).unwrap();
    }
    let operator = principal_name(&cluster, &Principal::user("operator")).unwrap();
    write_issued(&certs, "operator", &ca.issue(&operator).unwrap()).unwrap();
    ca
}

/// The configuration file text of node `id` in a cluster listening at `addresses`.
pub fn node_toml(dir: &Path, id: u64, addresses: &[SocketAddr], extra: &str) -> String {
    let members: Vec<String> =
        addresses.iter().enumerate().map(|(i, a)| format!("{{ id = {}, address = \"{a}\" }}", i + 1)).collect();
    let certs = dir.join("certs");
    format!(
        r#"[node]
id = {id}
cluster = "{CLUSTER}"
listen = "{listen}"
data_dir = "{data}"
members = [{members}]
tls = {{ ca = "{certs}/ca.pem", cert = "{certs}/n{id}.pem", key = "{certs}/n{id}.key" }}
callers = [{{ principal = "user:operator", capabilities = ["StateManagement", "ReplicationManagement", "EnergyManagement", "NodeManagement"] }}]

{extra}
"#,
        listen = addresses[id as usize - 1],
        data = dir.join(format!("n{id}")).display(),
        members = members.join(", "),
        certs = certs.display(),
    )
}

/// Writes node `id`'s configuration to `dir/n<id>.toml` and returns the path.
pub fn write_node_config(dir: &Path, id: u64, addresses: &[SocketAddr], extra: &str) -> PathBuf {
    let path = dir.join(format!("n{id}.toml"));
    std::fs::write(&path, node_toml(dir, id, addresses, extra)).unwrap();
    path
}

/// Node `id`'s configuration, parsed.
pub fn node_config(dir: &Path, id: u64, addresses: &[SocketAddr]) -> NodeConfig {
    NodeConfig::load(&write_node_config(dir, id, addresses, "")).unwrap()
}
