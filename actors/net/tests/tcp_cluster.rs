//! Nodes in one process, each on its own TcpTransport with mutual TLS over loopback: they elect
//! a leader and replicate, and every kind of hostile connection is refused without disturbing
//! them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use actors::managers::state_replicator::Replicate;
use actors::node::consensus::Inspect;
use actors::node::wait::eventually;
use actors::security::identity::{Identity, TlsFiles};
use actors::security::{Principal, Scope};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use net::node::Node;
use net::tcp::Stats;
use net::wire::{self, Hello, Lane, Role, Welcome};
use rustls::pki_types::ServerName;
use tokio_util::codec::Framed;

fn files(dir: &std::path::Path, stem: &str) -> TlsFiles {
    let certs = dir.join("certs");
    TlsFiles { ca: certs.join("ca.pem"), cert: certs.join(format!("{stem}.pem")), key: certs.join(format!("{stem}.key")) }
}

/// A TLS connection to `address`, which must prove it is `server`, presenting `stem`'s
/// certificate (or none).
async fn dial(address: SocketAddr, dir: &std::path::Path, stem: Option<(&str, &str)>, server: &str) -> Framed<Box<dyn net::tcp::Io>, tokio_util::codec::LengthDelimitedCodec> {
    let config = match stem {
        Some((stem, name)) => Identity::load(&files(dir, stem), name).unwrap().client_config(),
        None => Identity::anonymous_client_config(&dir.join("certs/ca.pem")).unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from(server.to_owned()).unwrap(), tcp).await.unwrap();
    Framed::new(Box::new(tls) as Box<dyn net::tcp::Io>, wire::codec(wire::DEFAULT_MAX_FRAME_BYTES))
}

async fn welcome(frames: &mut Framed<Box<dyn net::tcp::Io>, tokio_util::codec::LengthDelimitedCodec>) -> Option<Welcome> {
    let frame = tokio::time::timeout(Duration::from_secs(10), frames.next()).await.ok()??.ok()?;
    wire::decode_welcome(&frame).ok()
}

fn node_hello(id: u64, to: u64, cluster: &str) -> Bytes {
    Bytes::from(wire::encode_hello(&Hello { cluster: cluster.into(), role: Role::Node { id, incarnation: 1, lane: Lane::Control, to } }))
}

async fn leader_of(nodes: &[Node]) -> Option<u64> {
    eventually(Duration::from_secs(10), Duration::from_millis(20), || async {
        let mut leaders = Vec::new();
        for node in nodes {
            leaders.push(node.actors().consensus.send(Inspect).await.ok()?.leader?);
        }
        leaders.windows(2).all(|w| w[0] == w[1]).then(|| leaders[0])
    })
    .await
}

#[actix::test]
async fn nodes_over_mutual_tls_elect_replicate_and_refuse_every_impostor() {
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 3);
    let addresses: Vec<SocketAddr> = (0..3).map(|_| common::free_port("127.0.0.1")).collect();
    // Nodes 1 and 2 run; node 3's certificate is the test's, to act as an authenticated member.
    let nodes: Vec<Node> = (1..=2).map(|id| Node::start(common::node_config(dir.path(), id, &addresses)).unwrap()).collect();
    let leader = leader_of(&nodes).await.expect("two of three nodes elect a leader over TCP");
    let leading = &nodes[leader as usize - 1];

    let operator = leading.caller(&Principal::user("operator")).unwrap();
    let ctx = operator.context(Scope::new("replication_management").unwrap()).unwrap();
    let state = leading.actors().replicator.send(Replicate { ctx, data: b"over tcp".to_vec() }).await.unwrap().unwrap();
    assert_eq!(state.data, b"over tcp");
    let converged = eventually(Duration::from_secs(5), Duration::from_millis(20), || async {
        for node in &nodes {
            (node.actors().consensus.send(Inspect).await.ok()?.state.version >= state.version).then_some(())?;
        }
        Some(())
    });
    assert!(converged.await.is_some(), "both nodes applied the update");
    let target = &nodes[0];
    let (address, stats) = (target.address(), target.transport().stats());
    let refused_before = Stats::get(&stats.refused_connections);

    // A member presenting node 3's certificate but claiming to be node 2.
    let mut impostor = dial(address, dir.path(), Some(("n3", "n3.test.ergon")), "n1.test.ergon").await;
    impostor.send(node_hello(2, 1, "test")).await.unwrap();
    let Some(Welcome::Refused(why)) = welcome(&mut impostor).await else { panic!("impostor admitted") };
    assert!(why.contains("does not name n2.test.ergon"), "{why}");

    // A hello from another cluster, with a certificate of this one.
    let mut foreign = dial(address, dir.path(), Some(("n3", "n3.test.ergon")), "n1.test.ergon").await;
    foreign.send(node_hello(3, 1, "other")).await.unwrap();
    let Some(Welcome::Refused(why)) = welcome(&mut foreign).await else { panic!("foreign cluster admitted") };
    assert_eq!(why, r#"cluster "other" (peer) is not "test" (this node)"#);

    // A client without credentials, and one whose certificate is not the principal it claims.
    let mut anonymous = dial(address, dir.path(), None, "n1.test.ergon").await;
    let hello = Hello { cluster: "test".into(), role: Role::Client { principal: Some("user:operator".into()), token: None } };
    anonymous.send(Bytes::from(wire::encode_hello(&hello))).await.unwrap();
    let Some(Welcome::Refused(why)) = welcome(&mut anonymous).await else { panic!("anonymous caller admitted") };
    assert_eq!(why, "no certificate presented for operator.user.test.ergon");

    // A frame claiming 4 GiB, and garbage, before any hello.
    let mut huge = dial(address, dir.path(), None, "n1.test.ergon").await;
    huge.get_mut().write_all_u32(u32::MAX).await;
    assert!(welcome(&mut huge).await.is_some_and(|w| matches!(w, Welcome::Refused(ref r) if r.contains("max_frame_bytes"))));
    let mut garbage = dial(address, dir.path(), None, "n1.test.ergon").await;
    garbage.send(Bytes::from_static(b"\x00\x01garbage")).await.unwrap();
    assert!(matches!(welcome(&mut garbage).await, Some(Welcome::Refused(r)) if r.contains("not an ergon connection")));

    // An authenticated member that sends a frame claiming 4 GiB after its hello.
    let mut member = dial(address, dir.path(), Some(("n3", "n3.test.ergon")), "n1.test.ergon").await;
    member.send(node_hello(3, 1, "test")).await.unwrap();
    assert!(matches!(welcome(&mut member).await, Some(Welcome::Accepted { id: 1, .. })));
    let frames_before = Stats::get(&stats.refused_frames);
    member.get_mut().write_all_u32(u32::MAX).await;
    let closed = eventually(Duration::from_secs(5), Duration::from_millis(10), || async {
        (Stats::get(&stats.refused_frames) > frames_before).then_some(())
    });
    assert!(closed.await.is_some(), "the connection was closed and counted");

    assert!(Stats::get(&stats.refused_connections) >= refused_before + 5);
    // The cluster kept serving throughout.
    let ctx = operator.context(Scope::new("replication_management").unwrap()).unwrap();
    let after = leading.actors().replicator.send(Replicate { ctx, data: b"still here".to_vec() }).await.unwrap();
    assert_eq!(after.unwrap().version, state.version + 1);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Writing raw bytes under the framing, as an attacker would.
trait RawWrite {
    async fn write_all_u32(&mut self, n: u32);
}

impl RawWrite for Box<dyn net::tcp::Io> {
    async fn write_all_u32(&mut self, n: u32) {
        use tokio::io::AsyncWriteExt;
        self.write_all(&n.to_be_bytes()).await.unwrap();
        self.flush().await.unwrap();
    }
}

#[actix::test]
async fn a_client_proven_by_its_certificate_calls_any_node_and_acts_only_with_its_grant() {
    use actors::security::identity::certs::write_issued;
    use actors::security::identity::{principal_name, ClusterName};
    use net::calls::Manager;
    use net::client::{Client, ClientError, Credentials};

    let dir = tempfile::tempdir().unwrap();
    let ca = common::certificates(dir.path(), 3);
    let cluster = ClusterName::new(common::CLUSTER).unwrap();
    let intruder = principal_name(&cluster, &Principal::user("intruder")).unwrap();
    write_issued(&dir.path().join("certs"), "intruder", &ca.issue(&intruder).unwrap()).unwrap();
    let addresses: Vec<SocketAddr> = (0..3).map(|_| common::free_port("127.0.0.1")).collect();
    let nodes: Vec<Node> = (1..=3).map(|id| Node::start(common::node_config(dir.path(), id, &addresses)).unwrap()).collect();
    leader_of(&nodes).await.expect("a leader");

    let operator = Credentials::certificate("test", "user:operator", files(dir.path(), "operator")).unwrap();
    // Every node serves: followers pass updates to the leader.
    for (i, address) in addresses.iter().enumerate() {
        let client = Client::connect(*address, i as u64 + 1, &operator).await.unwrap();
        let (version, data) = client.replicate(format!("from client {i}").into_bytes()).await.unwrap();
        assert_eq!((version, data), (i as u64 + 1, format!("from client {i}").into_bytes()));
        let denied = client.leader().await;
        assert!(matches!(&denied, Err(ClientError::Failed(f)) if f.code == "PermissionDenied"), "no ElectionManagement granted: {denied:?}");
    }
    let client = Client::connect(addresses[0], 1, &operator).await.unwrap();
    let calls = (0..64).map(|i| client.replicate(vec![i]));
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|a| a.is_ok()), "64 calls in flight on one connection: {answers:?}");
    let status = client.status(Manager::StateReplicator).await.unwrap();
    assert_eq!(status.actor, "state-replicator/1");
    assert!(status.allowed >= 65, "{status:?}");

    // Membership through the node manager's gate: a node is granted only what both the operator
    // and the node manager hold.
    use actors::security::{CapSet, Capability::*};
    let (joined, _) = client.join("w1", "worker", 50.0, CapSet::of(&[EnergyManagement]), "node_management.w1", None).await.unwrap();
    assert_eq!((joined.id.as_str(), joined.joined_by.as_str()), ("w1", "user:operator"));
    let beyond = client.join("w2", "worker", 50.0, CapSet::of(&[ElectionManagement]), "node_management.w2", None).await;
    assert!(matches!(&beyond, Err(ClientError::Failed(f)) if f.code == "InvalidCapabilities"), "{beyond:?}");
    let impossible = client.join("w3", "worker", f64::NAN, CapSet::EMPTY, "node_management", None).await;
    assert!(matches!(&impossible, Err(ClientError::Failed(f)) if f.code == "InvalidRequest"), "{impossible:?}");
    assert_eq!(client.list_nodes().await.unwrap().len(), 1);
    assert_eq!(client.leave("w1").await.unwrap().id, "w1");
    assert!(client.list_nodes().await.unwrap().is_empty());

    // A certificate the CA signed, for a principal this node grants nothing.
    let stranger = Credentials::certificate("test", "user:intruder", files(dir.path(), "intruder")).unwrap();
    let client = Client::connect(addresses[1], 2, &stranger).await.unwrap();
    let Err(ClientError::Failed(failure)) = client.replicate(b"take over".to_vec()).await else { panic!("the stranger replicated") };
    assert_eq!(failure.code, "PermissionDenied", "{failure}");
    // The stranger's certificate does not prove the operator.
    let forged = Credentials::certificate("test", "user:operator", files(dir.path(), "intruder")).err().expect("refused");
    assert!(forged.to_string().contains("not valid for operator.user.test.ergon"), "{forged}");
    // The node at address 2 is node 2: a client expecting node 1 there is refused by TLS.
    let wrong = Client::connect(addresses[1], 1, &operator).await.err().expect("node 2 cannot pass for node 1");
    assert!(wrong.to_string().contains("TLS with n1.test.ergon"), "{wrong}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }

    // The refusal is in node 2's audit log, with the authenticated principal and its address.
    let log = actors::security::audit::AuditReader::open(&dir.path().join("n2/audit")).unwrap();
    let denied: Vec<_> = log
        .entries()
        .map(|e| e.unwrap().entry)
        .filter(|e| e.principal == "user:intruder" && e.outcome == actors::security::audit::Outcome::Denied)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    let remote = denied[0].detail.remote().expect("the caller's address is recorded");
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    assert_eq!(denied[0].error(), Some("PermissionDenied"));
}

#[actix::test]
async fn a_capability_token_acts_with_what_it_allows_and_an_attenuated_one_with_less() {
    use actors::security::token::{attenuate, TokenAuthority};
    use actors::security::{CapSet, Capability::*};
    use net::client::{Client, ClientError, Credentials};

    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 3);
    let authority = TokenAuthority::generate();
    let public = dir.path().join("certs/token.pub");
    std::fs::write(&public, authority.public_pem()).unwrap();
    let addresses: Vec<SocketAddr> = (0..3).map(|_| common::free_port("127.0.0.1")).collect();
    let extra = format!("tokens = {{ key = \"{}\" }}", public.display());
    let nodes: Vec<Node> = (1..=3)
        .map(|id| Node::start(net::node::NodeConfig::load(&common::write_node_config(dir.path(), id, &addresses, &extra)).unwrap()).unwrap())
        .collect();
    leader_of(&nodes).await.expect("a leader");
    let ca = dir.path().join("certs/ca.pem");

    let ci = Principal::user("ci");
    let token = authority.issue(&ci, CapSet::of(&[StateManagement, ReplicationManagement]), &Scope::root(), Duration::from_secs(600)).unwrap();
    let full = Client::connect(addresses[0], 1, &Credentials::token("test", &ca, &token).unwrap()).await.unwrap();
    assert_eq!(full.replicate(b"by token".to_vec()).await.unwrap().0, 1);

    // Narrowed offline by its holder to reading, and handed on.
    let reader = attenuate(&token, Some(CapSet::of(&[StateManagement])), None, None).unwrap();
    let read_only = Client::connect(addresses[1], 2, &Credentials::token("test", &ca, &reader).unwrap()).await.unwrap();
    let state = eventually(Duration::from_secs(5), Duration::from_millis(20), || async {
        read_only.read_state().await.ok().filter(|(version, _)| *version == 1)
    });
    assert_eq!(state.await, Some((1, b"by token".to_vec())));
    let refused = read_only.replicate(b"write".to_vec()).await;
    assert!(matches!(&refused, Err(ClientError::Failed(f)) if f.code == "PermissionDenied"), "{refused:?}");

    // A token signed by another key is refused in the handshake.
    let forged = TokenAuthority::generate().issue(&ci, CapSet::all(), &Scope::root(), Duration::from_secs(600)).unwrap();
    let err = Client::connect(addresses[0], 1, &Credentials::token("test", &ca, &forged).unwrap()).await.err().expect("refused");
    assert!(err.to_string().contains("token refused"), "{err}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[actix::test]
async fn an_insecure_cluster_runs_only_when_its_configuration_says_so() {
    use net::client::{Client, Credentials};
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 2);
    let addresses: Vec<SocketAddr> = (0..2).map(|_| common::free_port("127.0.0.1")).collect();
    let insecure = |id: u64| {
        let text = common::node_toml(dir.path(), id, &addresses, "");
        let text: String = text.lines().filter(|l| !l.starts_with("tls = ")).map(|l| format!("{l}\n")).collect();
        let refused = net::node::NodeConfig::from_toml(&text, dir.path()).unwrap_err();
        assert!(refused.contains("insecure = true"), "{refused}");
        net::node::NodeConfig::from_toml(&text.replace("[node]\n", "[node]\ninsecure = true\n"), dir.path()).unwrap()
    };
    let nodes: Vec<Node> = (1..=2).map(|id| Node::start(insecure(id)).unwrap()).collect();
    leader_of(&nodes).await.expect("insecure nodes elect");
    // Without TLS a caller is whoever it says it is: the reason this mode is for loopback only.
    let client = Client::connect(addresses[0], 1, &Credentials::insecure("test", "user:operator").unwrap()).await.unwrap();
    assert_eq!(client.replicate(b"plain".to_vec()).await.unwrap().0, 1);
    // A TLS client cannot talk to it by mistake.
    let tls = Credentials::certificate("test", "user:operator", files(dir.path(), "operator")).unwrap();
    assert!(Client::connect(addresses[0], 1, &tls).await.is_err());
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A one-node cluster in `dir` with `network` in its `[network]` section, its address, and the
/// operator's credentials.
fn one_node(dir: &std::path::Path, network: &str) -> (Node, [SocketAddr; 1], net::client::Credentials) {
    common::certificates(dir, 1);
    let addresses = [common::free_port("127.0.0.1")];
    let config = common::write_node_config(dir, 1, &addresses, &format!("\n[network]\n{network}\n"));
    let node = Node::start(net::node::NodeConfig::load(&config).unwrap()).unwrap();
    let operator = net::client::Credentials::certificate("test", "user:operator", files(dir, "operator")).unwrap();
    (node, addresses, operator)
}

#[actix::test]
async fn a_node_serves_at_most_max_callers_at_once() {
    use net::client::Client;
    let dir = tempfile::tempdir().unwrap();
    let (node, addresses, operator) = one_node(dir.path(), "max_callers = 1");
    let first = Client::connect(addresses[0], 1, &operator).await.unwrap();
    let second = Client::connect(addresses[0], 1, &operator).await.err().expect("a second caller is refused");
    assert!(second.to_string().contains("max_callers"), "{second}");
    drop(first);
    let again = eventually(Duration::from_secs(5), Duration::from_millis(20), || async { Client::connect(addresses[0], 1, &operator).await.ok() });
    assert!(again.await.is_some(), "the place is free again once the first caller left");
    node.shutdown().await.unwrap();
}

#[actix::test]
async fn one_address_cannot_hold_every_handshake_slot() {
    use net::client::Client;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (node, addresses, operator) = one_node(dir.path(), "max_handshakes_per_address = 2");
    // Two silent connections from 127.0.0.1 take that address's slots; a third is closed at once.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(addresses[0]).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(addresses[0]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut [0u8; 1])).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the third handshake from one address is refused: {closed:?}");
    // Another address is still served.
    let other = Client::connect_from(Some("127.0.0.7".parse().unwrap()), addresses[0], 1, &operator).await;
    assert!(other.is_ok(), "{:?}", other.err());
    drop(silent);
    node.shutdown().await.unwrap();
}
