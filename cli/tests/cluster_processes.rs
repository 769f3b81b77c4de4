//! Real node processes (`ergon node`) on loopback addresses with mutual TLS, driven by the Rust
//! client: a leader is elected, acknowledged updates survive `kill -9` of the leader, a new
//! leader takes writes, and the killed node restarts from its data directory and catches up.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{agreed_leader, cluster_files, ergon, operator, until, write, NodeProcess, CLUSTER};
use net::client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_survive_kill_9_of_the_leader_and_the_killed_node_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 3);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(dir.path(), id, None)).collect();
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
    nodes[leader as usize - 1] = NodeProcess::spawn(dir.path(), leader, None);
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
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = start(&format!("{n1}\n[metrics]\nlisten = \"{}\"\n", metrics.local_addr().unwrap()));
    assert!(err.contains(&format!("metrics: cannot listen on {}", metrics.local_addr().unwrap())), "{err}");
    drop(metrics);

    // A data directory that belongs to node 2.
    std::fs::create_dir_all(dir.path().join("n1")).unwrap();
    std::fs::write(dir.path().join("n1/node.toml"), "cluster = \"proc\"\nid = 2\n").unwrap();
    let err = start(&n1);
    assert!(err.contains("belongs to node 2 of cluster \"proc\", not node 1"), "{err}");
}

#[test]
fn a_token_issued_and_attenuated_with_the_cli_acts_on_a_node_process_with_no_more_than_it_allows() {
    let dir = tempfile::tempdir().unwrap();
    cluster_files(dir.path(), 1);
    let _node = NodeProcess::spawn(dir.path(), 1, None);
    let key = dir.path().join("certs/token.key");
    let issued = ergon(&["token", "issue", "--key", key.to_str().unwrap(), "--principal", "user:ci", "--capabilities", "StateManagement,ReplicationManagement", "--valid-for", "10m"]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let token = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let narrowed = ergon(&["token", "attenuate", &token, "--capabilities", "StateManagement"]);
    let reader = String::from_utf8(narrowed.stdout).unwrap().trim().to_owned();
    let inspected = String::from_utf8(ergon(&["token", "inspect", &reader]).stdout).unwrap();
    assert!(inspected.contains(r#"principal("user:ci")"#) && inspected.contains("block 1 (attenuation 1)"), "{inspected}");

    let client = dir.path().join("client.toml");
    let call = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ergon")).args(["call", "--config"]).arg(&client).args(args).env("ERGON_TOKEN", token).output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let written = loop {
        let out = call(&token, &["replicate", "by token"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let read = call(&reader, &["read-state"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "node 1: version 1: by token", "{}", String::from_utf8_lossy(&read.stderr));
    let refused = call(&reader, &["replicate", "more"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"), "{}", String::from_utf8_lossy(&refused.stderr));
}

/// A raw TLS connection to `address`, which must prove it is `server`, presenting the
/// certificate `stem` of the test's CA (or none), framed as ergon frames are.
async fn raw(dir: &std::path::Path, address: std::net::SocketAddr, stem: Option<(&str, &str)>, server: &str) -> tokio_util::codec::Framed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, tokio_util::codec::LengthDelimitedCodec> {
    use security::identity::{Identity, TlsFiles};
    let certs = dir.join("certs");
    let config = match stem {
        Some((stem, name)) => {
            let files = TlsFiles { ca: certs.join("ca.pem"), cert: certs.join(format!("{stem}.pem")), key: certs.join(format!("{stem}.key")) };
            Identity::load(&files, name).unwrap().client_config()
        }
        None => Identity::anonymous_client_config(&certs.join("ca.pem")).unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tokio_util::codec::Framed::new(tls, net::wire::codec(net::wire::DEFAULT_MAX_FRAME_BYTES))
}

/// What the node answered to a hello (or to whatever was sent instead).
async fn answer<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(frames: &mut tokio_util::codec::Framed<T, tokio_util::codec::LengthDelimitedCodec>) -> Option<net::wire::Welcome> {
    use futures::StreamExt;
    let frame = tokio::time::timeout(Duration::from_secs(10), frames.next()).await.ok()??.ok()?;
    net::wire::decode_welcome(&frame).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_process_refuses_impostors_strangers_garbage_and_huge_frames_and_keeps_serving() {
    use bytes::Bytes;
    use futures::SinkExt;
    use net::wire::{encode_hello, Hello, Lane, Role, Welcome};
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 3);
    // Nodes 1 and 2 run; node 3's certificate is the attacker's.
    let nodes: Vec<NodeProcess> = (1..=2).map(|id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    until(Duration::from_secs(20), || agreed_leader(&addresses, &[1, 2], &credentials)).await.expect("a leader");
    let (target, server) = (addresses[0], "n1.proc.ergon");
    let node_hello = |id: u64, cluster: &str| {
        Bytes::from(encode_hello(&Hello { cluster: cluster.into(), role: Role::Node { id, incarnation: 1, lane: Lane::Control, to: 1 } }))
    };

    let mut impostor = raw(dir.path(), target, Some(("n3", "n3.proc.ergon")), server).await;
    impostor.send(node_hello(2, CLUSTER)).await.unwrap();
    assert!(matches!(answer(&mut impostor).await, Some(Welcome::Refused(r)) if r.contains("does not name n2.proc.ergon")));

    let mut foreign = raw(dir.path(), target, Some(("n3", "n3.proc.ergon")), server).await;
    foreign.send(node_hello(3, "other")).await.unwrap();
    assert!(matches!(answer(&mut foreign).await, Some(Welcome::Refused(r)) if r == r#"cluster "other" (peer) is not "proc" (this node)"#));

    let mut anonymous = raw(dir.path(), target, None, server).await;
    let hello = Hello { cluster: CLUSTER.into(), role: Role::Client { principal: Some("user:operator".into()), token: None } };
    anonymous.send(Bytes::from(encode_hello(&hello))).await.unwrap();
    assert!(matches!(answer(&mut anonymous).await, Some(Welcome::Refused(r)) if r.contains("no certificate presented")));

    let mut garbage = raw(dir.path(), target, None, server).await;
    garbage.send(Bytes::from_static(b"GET / HTTP/1.1")).await.unwrap();
    assert!(matches!(answer(&mut garbage).await, Some(Welcome::Refused(r)) if r.contains("not an ergon connection")));

    let mut huge = raw(dir.path(), target, None, server).await;
    huge.get_mut().write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    huge.get_mut().flush().await.unwrap();
    assert!(matches!(answer(&mut huge).await, Some(Welcome::Refused(r)) if r.contains("max_frame_bytes")));

    // A member that sends a frame claiming 4 GiB after its hello is cut off.
    let mut member = raw(dir.path(), target, Some(("n3", "n3.proc.ergon")), server).await;
    member.send(node_hello(3, CLUSTER)).await.unwrap();
    assert!(matches!(answer(&mut member).await, Some(Welcome::Accepted { id: 1, .. })));
    member.get_mut().write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    member.get_mut().flush().await.unwrap();

    // The cluster kept serving, and node 1's log names each refusal and its reason.
    write(&addresses, &[1, 2], &credentials, b"still serving").await.expect("a write after the attacks");
    let logged = until(Duration::from_secs(5), || async {
        let log = nodes[0].log();
        (log.matches("connection refused").count() >= 5 && log.contains("a frame claims more bytes than max_frame_bytes allows")).then_some(())
    });
    assert!(logged.await.is_some(), "{}", nodes[0].log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_with_sigstop_is_replaced_and_catches_up_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 3);
    let nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    let all = [1, 2, 3];
    let leader = until(Duration::from_secs(20), || agreed_leader(&addresses, &all, &credentials)).await.expect("a leader");
    write(&addresses, &all, &credentials, b"before").await.expect("a write");

    // Frozen, not dead: its sockets stay open, and its peers must not wait on them.
    nodes[leader as usize - 1].signal("STOP");
    let others: Vec<u64> = all.iter().copied().filter(|&n| n != leader).collect();
    let version = until(Duration::from_secs(10), || async { write(&addresses, &others, &credentials, b"while frozen").await.ok() })
        .await
        .expect("the other two elect a new leader and take writes");
    let new_leader = until(Duration::from_secs(5), || agreed_leader(&addresses, &others, &credentials)).await.unwrap();
    assert_ne!(new_leader, leader);

    nodes[leader as usize - 1].signal("CONT");
    let frozen = addresses[leader as usize - 1];
    let caught_up = until(Duration::from_secs(20), || async {
        let client = Client::connect(frozen, leader, &credentials).await.ok()?;
        let (applied, data) = client.read_state().await.ok()?;
        (applied >= version).then_some((applied, data))
    });
    assert_eq!(caught_up.await, Some((version, b"while frozen".to_vec())), "the resumed node follows the new leader");
}
