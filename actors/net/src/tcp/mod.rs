//! [`TcpTransport`]: the [`Transport`] between node processes, over TCP with mutual TLS.
//!
//! Each pair of members keeps two connections, one per [`Lane`]: control traffic (heartbeats,
//! votes, load adjustments) never queues behind an append or a snapshot. A connection is used
//! only once both ends have proven who they are (the hello of [`crate::wire`], checked against
//! the peer's certificate). Each has a bounded queue, in messages and in bytes; a message for a
//! peer with no connection, or whose queue is full, is [`Undeliverable`] at once, and Raft
//! messages lost with a connection that broke are reported to the consensus actor
//! ([`actors::transport::Undelivered`]), so Raft always hears what the network did. Writes are
//! batched: a writer takes everything queued, then flushes once.
//!
//! The transport runs on a tokio runtime of its own, so that TLS and encoding do not share a
//! thread with the actors; [`Transport::send`] only encodes and queues.

pub(crate) mod connection;
pub(crate) mod handshake;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actors::managers::worker_pool::Adjust;
use actors::security::identity::{ClusterName, Identity};
use actors::security::{CapSet, Credential, GrantTable, Origin, Principal, Scope, SecurityContext};
use actors::transport::{Envelope, Inbox, Transport, Undeliverable};
use bytes::Bytes;
use cluster::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::link::{Backoff, Link};
use crate::wire::{Lane, PeerFrame, DEFAULT_MAX_FRAME_BYTES};

pub use handshake::{Authority, Caller, Callers, ClientProof, Frames, Io};

/// The network's limits and timing (the `[network]` section of a node's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSettings {
    /// The largest frame sent or accepted; a peer that claims a larger one is disconnected.
    pub max_frame_bytes: usize,
    /// Messages each lane to each peer queues before sends are refused as `Full`.
    pub queue_messages: usize,
    /// Bytes each lane to each peer queues before sends are refused as `Full`.
    pub queue_bytes: usize,
    /// The first reconnection delay.
    pub backoff_initial_ms: u64,
    /// The longest reconnection delay.
    pub backoff_max_ms: u64,
    /// How long a connection may take to connect, prove its identity and say hello.
    pub handshake_timeout_ms: u64,
    /// Connections that may be in their handshake at once; more are closed on arrival.
    pub max_handshakes: usize,
    /// Of those, how many may come from one address, so that one host cannot hold them all.
    pub max_handshakes_per_address: usize,
    /// Caller (client) connections served at once; more are refused in their handshake.
    pub max_callers: usize,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_messages: 4096,
            queue_bytes: 64 << 20,
            backoff_initial_ms: 100,
            backoff_max_ms: 5000,
            handshake_timeout_ms: 5000,
            max_handshakes: 64,
            max_handshakes_per_address: 8,
            max_callers: 1024,
        }
    }
}

impl NetSettings {
    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > u32::MAX as usize {
            return Some(format!("max_frame_bytes must be between 1024 and {}, got {}", u32::MAX, self.max_frame_bytes));
        }
        if self.queue_messages == 0 || self.queue_bytes < self.max_frame_bytes {
            return Some("queue_messages must be at least 1 and queue_bytes at least max_frame_bytes".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Some("need 0 < backoff_initial_ms <= backoff_max_ms".into());
        }
        (self.handshake_timeout_ms == 0 || self.max_handshakes == 0 || self.max_handshakes_per_address == 0 || self.max_callers == 0)
            .then(|| "handshake_timeout_ms, max_handshakes, max_handshakes_per_address and max_callers must be at least 1".into())
    }

    fn backoff(&self) -> Backoff {
        Backoff { initial: Duration::from_millis(self.backoff_initial_ms), max: Duration::from_millis(self.backoff_max_ms) }
    }
}

/// How a node proves itself and checks its peers.
#[derive(Clone)]
pub enum Security {
    /// Mutual TLS with this identity.
    Tls(Identity),
    /// No TLS: every peer is believed to be whom it claims. Loopback development only.
    Insecure,
}

/// A member of the cluster and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// Its address.
    pub address: SocketAddr,
}

/// What a transport is started with.
pub struct TcpConfig {
    /// The cluster's name.
    pub cluster: ClusterName,
    /// This node.
    pub me: NodeId,
    /// This run of it (the Raft store's incarnation).
    pub incarnation: u64,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The other members.
    pub peers: Vec<Member>,
    /// TLS, or not.
    pub security: Security,
    /// Limits and timing.
    pub settings: NetSettings,
    /// Where members are granted what they may do on this node, and `member_grants` what that
    /// is: the authority a peer's load adjustment acts with here.
    pub grants: Arc<GrantTable>,
    /// What an authenticated member may do on this node (its load distributor's adjustments).
    pub member_grants: CapSet,
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The settings are inconsistent.
    #[error("network settings: {0}")]
    Settings(String),
    /// The runtime could not be made.
    #[error("starting the network runtime: {0}")]
    Runtime(std::io::Error),
}

/// Counts of what happened on the network, for tests, logs and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections that passed their handshake and were used.
    pub connections: AtomicU64,
    /// Member connections open now.
    pub open: AtomicU64,
    /// Connections refused in their handshake (identity, cluster, version, garbage, too many).
    pub refused_connections: AtomicU64,
    /// Connections closed for a frame that was too long, undecodable or forged.
    pub refused_frames: AtomicU64,
    /// Frames received but dropped because the actor for them was not keeping up.
    pub dropped_frames: AtomicU64,
    /// Messages written.
    pub messages_written: AtomicU64,
    /// Flushes: each wrote one batch of messages.
    pub flushes: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A message on its way to a peer.
struct Outgoing {
    frame: Bytes,
    snapshot: bool,
}

/// The sending end of one connection's queue.
#[derive(Clone)]
struct Queue {
    connection: u64,
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<AtomicUsize>,
}

/// One lane to one peer: its link state, the queue of the connection in use, and a wake-up for
/// its dialer.
struct LaneState {
    link: Mutex<Link>,
    queue: Mutex<Option<(Queue, CancellationToken)>>,
    changed: Notify,
}

struct PeerState {
    address: SocketAddr,
    lanes: [LaneState; 2],
    /// What this peer acts with here: `node:<id>`, granted `member_grants`.
    authority: SecurityContext,
    /// The grant behind `authority`, revoked when the peer is removed.
    credential: Credential,
    /// Cancelled when the peer leaves the membership (or the transport shuts down): its dialers
    /// and connections end.
    gone: CancellationToken,
}

/// One lane of one peer, holding the peer's state alive while in use.
struct LaneRef {
    peer: Arc<PeerState>,
    lane: Lane,
}

impl std::ops::Deref for LaneRef {
    type Target = LaneState;

    fn deref(&self) -> &LaneState {
        &self.peer.lanes[self.lane.index()]
    }
}

struct Shared {
    me: NodeId,
    listen_ip: std::net::IpAddr,
    cluster: ClusterName,
    incarnation: u64,
    settings: NetSettings,
    security: Security,
    /// The members this node talks to; it changes as the cluster's membership does.
    peers: RwLock<BTreeMap<NodeId, Arc<PeerState>>>,
    grants: Arc<GrantTable>,
    member_grants: CapSet,
    inbox: RwLock<Option<Arc<Inbox>>>,
    callers: RwLock<Option<Arc<dyn Callers>>>,
    handshakes: Arc<Semaphore>,
    /// Handshakes under way per source address (an entry only while it has one).
    handshakes_from: Mutex<BTreeMap<std::net::IpAddr, usize>>,
    callers_served: Arc<Semaphore>,
    next_connection: AtomicU64,
    stats: Stats,
    shutdown: CancellationToken,
}

impl Shared {
    fn peer(&self, peer: NodeId) -> Option<Arc<PeerState>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned()
    }

    fn lane(&self, peer: NodeId, lane: Lane) -> Option<LaneRef> {
        self.peer(peer).map(|peer| LaneRef { peer, lane })
    }

    /// The state of a new peer `m`, granted what members may do here.
    fn new_peer(&self, m: &Member) -> PeerState {
        let member_scope = Scope::root();
        let credential = self.grants.grant(Principal::node(&m.id.to_string()), self.member_grants, member_scope.clone(), Origin::Configured);
        let authority = credential.context(member_scope).expect("granted in this scope");
        let lane = || LaneState {
            link: Mutex::new(Link::new(self.me, m.id, self.settings.backoff())),
            queue: Mutex::new(None),
            changed: Notify::new(),
        };
        PeerState { address: m.address, lanes: [lane(), lane()], authority, credential, gone: self.shutdown.child_token() }
    }

    fn inbox(&self) -> Option<Arc<Inbox>> {
        self.inbox.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The transport between node processes: see the [module documentation](self).
pub struct TcpTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TcpTransport {
    /// Binds the listening address, then starts accepting and dialing. Incoming messages are
    /// dropped until [`TcpTransport::attach`] says where they go.
    pub fn start(config: TcpConfig) -> Result<Self, NetError> {
        if let Some(problem) = config.settings.problem() {
            return Err(NetError::Settings(problem));
        }
        let listener = std::net::TcpListener::bind(config.listen).map_err(|source| NetError::Listen { address: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| NetError::Listen { address: config.listen, source })?;
        listener.set_nonblocking(true).map_err(|source| NetError::Listen { address: config.listen, source })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("ergon-net-{}", config.me))
            .enable_all()
            .build()
            .map_err(NetError::Runtime)?;
        let shared = Arc::new(Shared {
            me: config.me,
            listen_ip: local_addr.ip(),
            cluster: config.cluster,
            incarnation: config.incarnation,
            settings: config.settings,
            security: config.security,
            peers: RwLock::new(BTreeMap::new()),
            grants: config.grants,
            member_grants: config.member_grants,
            inbox: RwLock::new(None),
            callers: RwLock::new(None),
            handshakes: Arc::new(Semaphore::new(config.settings.max_handshakes)),
            handshakes_from: Mutex::new(BTreeMap::new()),
            callers_served: Arc::new(Semaphore::new(config.settings.max_callers)),
            next_connection: AtomicU64::new(1),
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
        });
        if matches!(shared.security, Security::Insecure) {
            tracing::warn!(node = shared.me, "INSECURE: no TLS; peers and callers are believed to be whom they claim");
        }
        {
            let _entered = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| NetError::Listen { address: local_addr, source })?;
            runtime.spawn(handshake::accept_loop(shared.clone(), listener));
        }
        tracing::info!(node = shared.me, cluster = %shared.cluster, %local_addr, peers = config.peers.len().saturating_sub(1), "listening");
        let transport = TcpTransport { shared, local_addr, runtime: Some(runtime) };
        transport.set_peers(&config.peers);
        Ok(transport)
    }

    /// Talks to exactly the members in `members` (this node excepted) from now on: a new one is
    /// dialed, one whose address changed is redialed there, one no longer listed has its
    /// connections closed and its grant revoked.
    pub fn set_peers(&self, members: &[Member]) {
        let Some(runtime) = &self.runtime else { return };
        let shared = &self.shared;
        let wanted: BTreeMap<NodeId, SocketAddr> = members.iter().filter(|m| m.id != shared.me).map(|m| (m.id, m.address)).collect();
        let mut peers = shared.peers.write().unwrap_or_else(|e| e.into_inner());
        peers.retain(|id, peer| {
            let keep = wanted.get(id) == Some(&peer.address);
            if !keep {
                tracing::info!(node = shared.me, peer = id, address = %peer.address, "no longer a peer");
                peer.gone.cancel();
                shared.grants.revoke(&peer.credential);
            }
            keep
        });
        for (&id, &address) in &wanted {
            if peers.contains_key(&id) {
                continue;
            }
            tracing::info!(node = shared.me, peer = id, %address, "new peer");
            peers.insert(id, Arc::new(shared.new_peer(&Member { id, address })));
            for lane in Lane::ALL {
                runtime.spawn(handshake::dialer(shared.clone(), id, address, lane));
            }
        }
    }

    /// Incoming messages go to `inbox` from now on.
    pub fn attach(&self, inbox: Inbox) {
        *self.shared.inbox.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(inbox));
    }

    /// Client connections are served by `callers` from now on; before, they are refused.
    pub fn serve_callers(&self, callers: Arc<dyn Callers>) {
        *self.shared.callers.write().unwrap_or_else(|e| e.into_inner()) = Some(callers);
    }

    /// Where it listens (useful when it was asked to bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What has happened on the network so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The peers with a connection up on both lanes.
    pub fn connected(&self) -> Vec<NodeId> {
        let up = |lane: &LaneState| lane.link.lock().unwrap_or_else(|e| e.into_inner()).current().is_some();
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.iter().filter(|(_, p)| p.lanes.iter().all(up)).map(|(&id, _)| id).collect()
    }

    /// Closes every connection and stops accepting and dialing.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks; actors may drop the transport on their own runtime.
            runtime.shutdown_background();
        }
    }
}

impl Transport for TcpTransport {
    fn follow(&self, _me: NodeId, membership: &cluster::Membership) {
        // A node that has no configuration yet (it is waiting to join) keeps the peers it was
        // configured with: they are the members that will contact it.
        if membership.ids().is_empty() {
            return;
        }
        // Members without a usable address (none recorded yet) keep the connection they have.
        let known = self.shared.peers.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(&id, p)| (id, p.address)).collect::<BTreeMap<_, _>>();
        let members: Vec<Member> = membership
            .ids()
            .into_iter()
            .filter_map(|id| {
                let address = membership.address(id).and_then(|a| a.parse().ok()).or_else(|| known.get(&id).copied())?;
                Some(Member { id, address })
            })
            .collect();
        self.set_peers(&members);
    }

    fn send(&self, _from: NodeId, to: NodeId, message: Envelope) -> Result<(), Undeliverable> {
        let frame = match message {
            Envelope::Raft(m) => PeerFrame::Raft(m),
            Envelope::Heartbeat(h) => PeerFrame::Heartbeat(h),
            // The sender's authority stays here: the receiver grants members their own.
            Envelope::Adjust(Adjust { distribution, share, .. }) => PeerFrame::Adjust { distribution, share },
        };
        let lane = frame.lane();
        let snapshot = matches!(&frame, PeerFrame::Raft(m) if m.get_msg_type() == cluster::replica::MessageType::MsgSnapshot);
        let state = self.shared.lane(to, lane).ok_or(Undeliverable::Unreachable(to))?;
        let Some((queue, _)) = state.queue.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(Undeliverable::Unreachable(to));
        };
        let bytes = Bytes::from(frame.encode());
        let len = bytes.len();
        if len > self.shared.settings.max_frame_bytes {
            tracing::error!(node = self.shared.me, to, len, "message larger than max_frame_bytes dropped");
            return Err(Undeliverable::TooLarge(to, len));
        }
        if queue.bytes.fetch_add(len, Ordering::AcqRel) + len > self.shared.settings.queue_bytes {
            queue.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(Undeliverable::Full(to));
        }
        queue.tx.try_send(Outgoing { frame: bytes, snapshot }).map_err(|e| {
            queue.bytes.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Undeliverable::Full(to),
                mpsc::error::TrySendError::Closed(_) => Undeliverable::Unreachable(to),
            }
        })
    }
}
