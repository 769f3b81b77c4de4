//! How a node's consensus actor reaches its peers.
//!
//! [`Transport`] is the one door: hand it a Raft message and it either takes it or says at once
//! that it cannot be delivered, so Raft can react (a leader waits to hear a snapshot's fate before
//! it sends a follower anything else). [`LocalNetwork`] connects the nodes of one process and
//! injects faults through [`cluster::faults::Faults`], the same model the deterministic simulation
//! uses. A TCP transport implements the same trait; the actors do not change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Message, Recipient};
use cluster::faults::{Faults, Route};
use cluster::{NodeId, RaftMessage};
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

/// Carries Raft messages between nodes.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message` (to `message.to`) from `from`.
    fn send(&self, from: NodeId, message: RaftMessage) -> Result<(), Undeliverable>;
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
    nodes: BTreeMap<NodeId, Recipient<Peer>>,
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

    /// Connects node `id`; messages to it go to `endpoint`.
    pub fn connect(&self, id: NodeId, endpoint: Recipient<Peer>) {
        self.lock().nodes.insert(id, endpoint);
    }

    /// Disconnects node `id`, as when its process crashes: messages to it are undeliverable.
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
    fn send(&self, from: NodeId, message: RaftMessage) -> Result<(), Undeliverable> {
        let to = message.to;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let endpoint = inner.nodes.get(&to).ok_or(Undeliverable::Unreachable(to))?.clone();
        match inner.faults.route(&mut inner.rng, from, to) {
            Route::Lost => Err(Undeliverable::Lost(to)),
            Route::After(0) => endpoint.try_send(Peer(message)).map_err(|_| Undeliverable::Unreachable(to)),
            Route::After(ms) => {
                actix::spawn(async move {
                    actix::clock::sleep(Duration::from_millis(ms)).await;
                    // Lost if the node went away meanwhile, as on a real network.
                    let _ = endpoint.try_send(Peer(message));
                });
                Ok(())
            }
        }
    }
}
