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

/// Raft messages a transport took but could not deliver after all, because its connection to
/// `to` broke with them queued: Raft is told, as it would have been at once had the break been
/// known when they were sent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Undelivered {
    /// The peer they were for.
    pub to: NodeId,
    /// Whether a snapshot was among them.
    pub snapshot: bool,
}

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// No such node is connected (never was, or it crashed).
    #[error("node {0} is not reachable")]
    Unreachable(NodeId),
    /// The message was lost on the way (a fault injected by the network).
    #[error("message to node {0} was lost")]
    Lost(NodeId),
    /// The node's actor for this kind of message has a full mailbox: it is not keeping up.
    #[error("node {0} is not keeping up: its mailbox for this message is full")]
    Full(NodeId),
    /// The message is larger than the transport carries.
    #[error("a message of {1} bytes to node {0} is larger than a frame may be")]
    TooLarge(NodeId, usize),
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

    /// Node `me`'s configuration is now `membership`: a transport that keeps connections reaches
    /// the members it did not know and lets go of those removed. One that routes by id alone (the
    /// in-process network) has nothing to do.
    fn follow(&self, _me: NodeId, _membership: &cluster::Membership) {}
}

/// Where a node's incoming messages go, by kind. A node without a failure detector or worker
/// pool leaves those out, and messages of that kind to it are undeliverable.
#[derive(Clone)]
pub struct Inbox {
    raft: Recipient<Peer>,
    heartbeats: Option<Recipient<Heartbeat>>,
    adjustments: Option<Recipient<Adjust>>,
    undelivered: Option<Recipient<Undelivered>>,
}

impl Inbox {
    /// An inbox that takes Raft messages only.
    pub fn new(raft: Recipient<Peer>) -> Self {
        Inbox { raft, heartbeats: None, adjustments: None, undelivered: None }
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

    /// Messages the transport could not deliver after all are reported to `consensus`.
    pub fn with_undelivered(mut self, consensus: Recipient<Undelivered>) -> Self {
        self.undelivered = Some(consensus);
        self
    }

    /// Tells this node's consensus actor that Raft messages it sent were lost with a connection.
    pub fn report(&self, undelivered: Undelivered) {
        if let Some(consensus) = &self.undelivered {
            // A full mailbox drops the report; Raft's own timeouts cover what a report would.
            let _ = consensus.try_send(undelivered);
        }
    }

    /// Hands `message` to node `to`'s actor for it without waiting, or says why not. The inbox's
    /// own senders are used every time: a fresh clone of a sender is never "full" in actix, so
    /// cloning per message would let a flood past every mailbox bound.
    pub fn deliver(&self, to: NodeId, message: Envelope) -> Result<(), Undeliverable> {
        fn sent<M: Message + Send>(to: NodeId, recipient: Option<&Recipient<M>>, m: M) -> Result<(), Undeliverable>
        where
            M::Result: Send,
        {
            match recipient.map(|r| r.try_send(m)) {
                Some(Ok(())) => Ok(()),
                Some(Err(actix::prelude::SendError::Full(_))) => Err(Undeliverable::Full(to)),
                Some(Err(actix::prelude::SendError::Closed(_))) | None => Err(Undeliverable::Unreachable(to)),
            }
        }
        match message {
            Envelope::Raft(m) => sent(to, Some(&self.raft), Peer(m)),
            Envelope::Heartbeat(m) => sent(to, self.heartbeats.as_ref(), m),
            Envelope::Adjust(m) => sent(to, self.adjustments.as_ref(), m),
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
    nodes: BTreeMap<NodeId, Arc<Inbox>>,
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
        self.lock().nodes.insert(id, Arc::new(inbox));
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
            Route::After(0) => inbox.deliver(to, message),
            Route::After(ms) => {
                actix::spawn(async move {
                    actix::clock::sleep(Duration::from_millis(ms)).await;
                    // Lost if the node went away or fell behind meanwhile, as on a real network.
                    let _ = inbox.deliver(to, message);
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Context, Handler};

    use super::*;
    use crate::managers::failure_detector::Vitals;

    /// Takes heartbeats into a mailbox of two, and handles none until released.
    struct Slow(Option<std::sync::mpsc::Receiver<()>>);

    impl Actor for Slow {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(2);
        }
    }

    impl Handler<Heartbeat> for Slow {
        type Result = ();
        fn handle(&mut self, _: Heartbeat, _: &mut Context<Self>) {
            if let Some(release) = self.0.take() {
                let _ = release.recv_timeout(Duration::from_secs(60));
            }
        }
    }

    impl Handler<Peer> for Slow {
        type Result = ();
        fn handle(&mut self, _: Peer, _: &mut Context<Self>) {}
    }

    #[actix::test]
    async fn a_flood_to_a_node_that_is_not_keeping_up_is_refused_not_queued() {
        let (release, released) = std::sync::mpsc::channel();
        let arbiter = actix::Arbiter::new();
        let slow = Slow::start_in_arbiter(&arbiter.handle(), move |_| Slow(Some(released)));
        // Its mailbox bound is set when it starts, on its own arbiter: wait for that.
        slow.send(Peer(RaftMessage::default())).await.unwrap();
        let network = LocalNetwork::new(1);
        network.connect(1, Inbox::new(slow.clone().recipient()));
        network.connect(2, Inbox::new(slow.clone().recipient()).with_heartbeats(slow.clone().recipient()));
        let beat = || Envelope::Heartbeat(Heartbeat { from: 1, vitals: Vitals::default() });
        let results: Vec<_> = (0..100).map(|_| network.send(1, 2, beat())).collect();
        let full = results.iter().filter(|r| matches!(r, Err(Undeliverable::Full(2)))).count();
        // The first is being handled (and blocks), a few fit in the mailbox; the rest are refused.
        assert!(full >= 90, "{full} of 100 refused: {results:?}");
        release.send(()).unwrap();
        arbiter.stop();
    }
}
