//! How a node's actors reach their peers.
//!
//! [`Transport`] is the one door: hand it an [`Envelope`] (a Raft message, a heartbeat, a load
//! adjustment) and it either takes it or says at once that it cannot be delivered, so the sender
//! can react (a leader waits to hear a snapshot's fate before it sends a follower anything else; a
//! load distributor reports `AdjustmentFailed`). On arrival a node's [`Inbox`] hands each kind to
//! the actor that owns it. [`LocalNetwork`] connects the nodes of one process and injects faults
//! through [`cluster::faults::Faults`], the same model the deterministic simulation uses. A TCP
//! transport implements the same trait; the actors do not change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Message, Recipient};
use cluster::faults::{Faults, Route};
use cluster::{NodeId, RaftMessage};

use crate::managers::failure_detector::Heartbeat;
use crate::managers::load_distributor::Adjust;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A Raft message from a peer, as the transport delivers it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Peer(pub RaftMessage);

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// No such node is connected (never was, or it crashed).
    #[error("node {0} is not reachable")]
    Unreachable(NodeId),
    /// The message was lost on the way (a fault injected by the network).
    #[error("message to node {0} was lost")]
    Lost(NodeId),
}

/// What travels between nodes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Envelope {
    /// Raft's own traffic, for the consensus actor. (Boxing it would cost an allocation per
    /// Raft message to shrink the rarer heartbeats and adjustments.)
    Raft(RaftMessage),
    /// A liveness beat, for the failure detector.
    Heartbeat(Heartbeat),
    /// A node's share of a load, for its worker pool.
    Adjust(Adjust),
}

impl Envelope {
    /// What kind of message it is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Envelope::Raft(_) => "raft",
            Envelope::Heartbeat(_) => "heartbeat",
            Envelope::Adjust(_) => "adjustment",
        }
    }
}

/// Carries messages between nodes.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message` from node `from` to node `to`.
    fn send(&self, from: NodeId, to: NodeId, message: Envelope) -> Result<(), Undeliverable>;
}

/// Where a node's incoming messages go, by kind. A node without a failure detector or worker
/// pool leaves those out, and messages of that kind to it are undeliverable.
#[derive(Clone)]
pub struct Inbox {
    raft: Recipient<Peer>,
    heartbeats: Option<Recipient<Heartbeat>>,
    adjustments: Option<Recipient<Adjust>>,
}

impl Inbox {
    /// An inbox that takes Raft messages only.
    pub fn new(raft: Recipient<Peer>) -> Self {
        Inbox { raft, heartbeats: None, adjustments: None }
    }

    /// Heartbeats go to `detector`.
    pub fn with_heartbeats(mut self, detector: Recipient<Heartbeat>) -> Self {
        self.heartbeats = Some(detector);
        self
    }

    /// Load adjustments go to `pool`.
    pub fn with_adjustments(mut self, pool: Recipient<Adjust>) -> Self {
        self.adjustments = Some(pool);
        self
    }

    /// Hands `message` to its actor without waiting; false if that actor is missing or gone.
    fn deliver(&self, message: Envelope) -> bool {
        match message {
            Envelope::Raft(m) => self.raft.try_send(Peer(m)).is_ok(),
            Envelope::Heartbeat(m) => self.heartbeats.as_ref().is_some_and(|r| r.try_send(m).is_ok()),
            Envelope::Adjust(m) => self.adjustments.as_ref().is_some_and(|r| r.try_send(m).is_ok()),
        }
    }
}

/// The nodes of one process, with injected loss, latency, partitions and crashes.
///
/// Delays are real time (the message is delivered by a timer on the sender's arbiter). The
/// generator is seeded, so which messages are lost is reproducible for the same sequence of
/// sends; timing in a live actor system is not, which is what the simulation is for.
#[derive(Clone)]
pub struct LocalNetwork {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    nodes: BTreeMap<NodeId, Inbox>,
    faults: Faults,
    rng: ChaCha8Rng,
}

impl LocalNetwork {
    /// A network with no faults, its loss drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let inner = Inner { nodes: BTreeMap::new(), faults: Faults::default(), rng: ChaCha8Rng::seed_from_u64(seed) };
        LocalNetwork { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects node `id`; messages to it go to `inbox`.
    pub fn connect(&self, id: NodeId, inbox: Inbox) {
        self.lock().nodes.insert(id, inbox);
    }

    /// Disconnects node `id`, as when its process crashes: messages to and from it are
    /// undeliverable.
    pub fn disconnect(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts `minority` off from every other connected node.
    pub fn partition(&self, minority: &[NodeId]) {
        self.lock().faults.partition(minority);
    }

    /// Removes any partition.
    pub fn heal(&self) {
        self.lock().faults.heal();
    }

    /// Sets loss and latency.
    pub fn set_faults(&self, drop_rate: f64, latency_ms: (u64, u64)) {
        let mut inner = self.lock();
        inner.faults.drop_rate = drop_rate;
        inner.faults.latency_ms = latency_ms;
    }
}

impl Transport for LocalNetwork {
    fn send(&self, from: NodeId, to: NodeId, message: Envelope) -> Result<(), Undeliverable> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if !inner.nodes.contains_key(&from) {
            // A crashed node's timers may still fire for a moment; nothing it sends arrives.
            return Err(Undeliverable::Lost(to));
        }
        let inbox = inner.nodes.get(&to).ok_or(Undeliverable::Unreachable(to))?.clone();
        match inner.faults.route(&mut inner.rng, from, to) {
            Route::Lost => Err(Undeliverable::Lost(to)),
            Route::After(0) => inbox.deliver(message).then_some(()).ok_or(Undeliverable::Unreachable(to)),
            Route::After(ms) => {
                actix::spawn(async move {
                    actix::clock::sleep(Duration::from_millis(ms)).await;
                    // Lost if the node went away meanwhile, as on a real network.
                    inbox.deliver(message);
                });
                Ok(())
            }
        }
    }
}
