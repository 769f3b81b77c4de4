//! Two transports over mutual TLS with no actors but a recorder: control traffic overtakes a
//! backlog of large appends, because it travels on a connection of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Context, Handler};
use actors::managers::failure_detector::{Heartbeat, Vitals};
use actors::node::wait::eventually;
use actors::security::identity::{node_name, ClusterName, Identity, TlsFiles};
use actors::security::{CapSet, GrantTable};
use actors::transport::{Envelope, Inbox, Peer, Transport};
use cluster::replica::MessageType;
use cluster::RaftMessage;
use net::tcp::{Member, NetSettings, Security, TcpConfig, TcpTransport};

/// Records the kinds of what arrives, in order.
struct Recorder(Arc<Mutex<Vec<&'static str>>>);

impl Handler<actors::transport::Undelivered> for Recorder {
    type Result = ();
    fn handle(&mut self, _: actors::transport::Undelivered, _: &mut Context<Self>) {
        self.0.lock().unwrap().push("undelivered");
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(10_000);
    }
}

impl Handler<Peer> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Peer, _: &mut Context<Self>) {
        self.0.lock().unwrap().push("append");
    }
}

impl Handler<Heartbeat> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Heartbeat, _: &mut Context<Self>) {
        self.0.lock().unwrap().push("heartbeat");
    }
}

/// A Raft append from node 1 to node 2 carrying `bytes` of data.
fn append(bytes: usize) -> Envelope {
    let mut append = RaftMessage { from: 1, to: 2, term: 1, ..Default::default() };
    append.set_msg_type(MessageType::MsgAppend);
    append.entries.push(cluster::RaftEntry { data: vec![7u8; bytes], ..Default::default() });
    Envelope::Raft(append)
}

fn transport(dir: &std::path::Path, me: u64, members: &[Member]) -> TcpTransport {
    let cluster = ClusterName::new(common::CLUSTER).unwrap();
    let certs = dir.join("certs");
    let files = TlsFiles { ca: certs.join("ca.pem"), cert: certs.join(format!("n{me}.pem")), key: certs.join(format!("n{me}.key")) };
    TcpTransport::start(TcpConfig {
        cluster: cluster.clone(),
        me,
        incarnation: 1,
        listen: members[me as usize - 1].address,
        peers: members.to_vec(),
        security: Security::Tls(Identity::load(&files, &node_name(&cluster, me)).unwrap()),
        settings: NetSettings::default(),
        grants: Arc::new(GrantTable::new()),
        member_grants: CapSet::EMPTY,
    })
    .unwrap()
}

#[actix::test]
async fn a_heartbeat_overtakes_a_backlog_of_large_appends() {
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 2);
    let members: Vec<Member> = (1..=2).map(|id| Member { id, address: common::free_port("127.0.0.1") }).collect();
    let (one, two) = (transport(dir.path(), 1, &members), transport(dir.path(), 2, &members));
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder(arrived.clone()).start();
    two.attach(Inbox::new(recorder.clone().recipient()).with_heartbeats(recorder.recipient()));
    let connected = eventually(Duration::from_secs(10), Duration::from_millis(10), || async { (one.connected() == [2]).then_some(()) });
    assert!(connected.await.is_some(), "both lanes connect");
    // Both dialed at once; both ends keep the same connection per lane and close the other.
    let settled = eventually(Duration::from_secs(10), Duration::from_millis(10), || async {
        let open = |t: &TcpTransport| net::tcp::Stats::get(&t.stats().open);
        (open(&one) == 2 && open(&two) == 2).then_some(())
    });
    assert!(settled.await.is_some(), "one connection per lane at each end");

    // 32 MiB of appends queued first, then one heartbeat.
    let appends = 32;
    for _ in 0..appends {
        one.send(1, 2, append(1 << 20)).expect("the data lane queues 32 MiB");
    }
    one.send(1, 2, Envelope::Heartbeat(Heartbeat { from: 1, vitals: Vitals::default() })).unwrap();

    let all = eventually(Duration::from_secs(30), Duration::from_millis(10), || async {
        (arrived.lock().unwrap().len() == appends + 1).then_some(())
    });
    assert!(all.await.is_some(), "everything arrives: {:?}", arrived.lock().unwrap().len());
    let order = arrived.lock().unwrap().clone();
    let heartbeat = order.iter().position(|k| *k == "heartbeat").unwrap();
    assert!(heartbeat < appends, "the heartbeat arrived after every append queued before it: {order:?}");
    assert!(net::tcp::Stats::get(&one.stats().flushes) < net::tcp::Stats::get(&one.stats().messages_written), "writes were batched");
}

/// A member that completes its handshakes as node 2 and then never reads.
async fn stalled_peer(dir: std::path::PathBuf, address: std::net::SocketAddr) {
    use futures::{SinkExt, StreamExt};
    let cluster = ClusterName::new(common::CLUSTER).unwrap();
    let certs = dir.join("certs");
    let files = TlsFiles { ca: certs.join("ca.pem"), cert: certs.join("n2.pem"), key: certs.join("n2.key") };
    let acceptor = tokio_rustls::TlsAcceptor::from(Identity::load(&files, &node_name(&cluster, 2)).unwrap().server_config());
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let mut held = Vec::new();
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(tls) = acceptor.accept(tcp).await else { continue };
        let mut frames = tokio_util::codec::Framed::new(tls, net::wire::codec(net::wire::DEFAULT_MAX_FRAME_BYTES));
        let _hello = frames.next().await;
        let welcome = net::wire::encode_welcome(&net::wire::Welcome::Accepted { id: 2, incarnation: 1 });
        frames.send(bytes::Bytes::from(welcome)).await.unwrap();
        held.push(frames); // never read again
    }
}

#[actix::test]
async fn sends_to_a_peer_that_is_not_connected_or_not_reading_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 2);
    let members: Vec<Member> = (1..=2).map(|id| Member { id, address: common::free_port("127.0.0.1") }).collect();
    let one = transport(dir.path(), 1, &members);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder(reports.clone()).start();
    one.attach(Inbox::new(recorder.clone().recipient()).with_undelivered(recorder.recipient()));
    let beat = || Envelope::Heartbeat(Heartbeat { from: 1, vitals: Vitals::default() });
    assert_eq!(one.send(1, 2, beat()), Err(actors::transport::Undeliverable::Unreachable(2)), "no connection yet");
    assert_eq!(one.send(1, 9, beat()), Err(actors::transport::Undeliverable::Unreachable(9)), "not a member");

    let peer = actix::spawn(stalled_peer(dir.path().to_owned(), members[1].address));
    let connected = eventually(Duration::from_secs(10), Duration::from_millis(10), || async { (one.connected() == [2]).then_some(()) });
    assert!(connected.await.is_some(), "both lanes connect");
    // The peer's socket buffers fill, then the queue (64 MiB), then sends are refused as Full.
    let mut full = 0;
    for _ in 0..200 {
        if one.send(1, 2, append(1 << 20)) == Err(actors::transport::Undeliverable::Full(2)) {
            full += 1;
        }
    }
    assert!(full >= 100, "{full} of 200 MiB refused as Full: the queue is bounded in bytes");
    // The control lane has its own queue: heartbeats still go.
    assert_eq!(one.send(1, 2, beat()), Ok(()));
    // A message larger than a frame is refused before it is queued.
    assert!(matches!(one.send(1, 2, append(9 << 20)), Err(actors::transport::Undeliverable::TooLarge(2, _))));

    // The peer goes away with the appends still queued: Raft is told they were not delivered.
    peer.abort();
    let told = eventually(Duration::from_secs(10), Duration::from_millis(10), || async {
        reports.lock().unwrap().contains(&"undelivered").then_some(())
    });
    assert!(told.await.is_some(), "the consensus actor hears of the appends lost with the connection");
}

#[actix::test]
async fn a_connection_to_a_peer_that_stopped_reading_still_closes() {
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path(), 2);
    let members: Vec<Member> = (1..=2).map(|id| Member { id, address: common::free_port("127.0.0.1") }).collect();
    let one = transport(dir.path(), 1, &members);
    let peer = actix::spawn(stalled_peer(dir.path().to_owned(), members[1].address));
    let connected = eventually(Duration::from_secs(10), Duration::from_millis(10), || async { (one.connected() == [2]).then_some(()) });
    assert!(connected.await.is_some(), "both lanes connect");
    for _ in 0..100 {
        let _ = one.send(1, 2, append(1 << 20));
    }
    // Its writer is blocked on a full socket; closing must not wait for the peer to read.
    one.shutdown();
    let closed = eventually(Duration::from_secs(10), Duration::from_millis(20), || async {
        (net::tcp::Stats::get(&one.stats().open) == 0).then_some(())
    });
    assert!(closed.await.is_some(), "{} connections still open", net::tcp::Stats::get(&one.stats().open));
    peer.abort();
}
