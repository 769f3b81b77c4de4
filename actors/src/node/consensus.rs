//! The consensus actor of one node: runs its [`Replica`] on actix's clock and a [`Transport`].
//!
//! It is the "doing" half of raft-rs's split: a `run_interval` ticks the replica, the [`Peer`]
//! handler steps it, and then the `Ready` loop persists (inside [`Replica::advance`]), sends and
//! applies.
//!
//! **Group commit.** Proposals, reads and peers' messages are handed to Raft as they arrive, and
//! Raft is driven once the mailbox is empty (a `Drive` the actor sends itself, which actix runs
//! after the messages already queued), or after [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`] of
//! proposals if the mailbox never empties. Everything that arrived while the actor was busy thus
//! becomes one `Ready`: one store transaction and one fsync on this node, one append to each
//! follower, and one on each follower too. Raft's rules hold: entries are persisted before the
//! messages that depend on them are sent (a leader's appends may go out first, as before).
//!
//! Each consensus actor runs on an arbiter (a thread) of its own, so that the nodes of one
//! process (a `LocalCluster`) sync their stores at the same time, as separate machines would.
//!
//! It is not a gated manager: Raft's own traffic (heartbeats, appends, votes) is not
//! a request anyone makes, and charging it would drain budgets while the cluster idles. The gated
//! facades in front of it, [`LeaderElection`](crate::managers::leader_election::LeaderElection) and
//! [`StateReplicator`](crate::managers::state_replicator::StateReplicator), charge the campaigns and updates
//! that principals ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cluster::membership::{self, Member, Membership, MembershipError};
use cluster::replica::MessageType;
use cluster::{Command, LogStore, NodeId, Outcome, Replica, ReplicaConfig, ReplicaError, State, Versioned};
use futures::channel::oneshot;
use serde::{Deserialize, Serialize};

use crate::metrics::NodeMetrics;
use crate::node::Stop;
use crate::transport::{Envelope, Peer, Transport, Undelivered};
use crate::Environment;

/// Messages handled before Raft is driven even if more are waiting.
pub const MAX_BATCH: usize = 256;
/// Bytes of proposals handled before Raft is driven even if more are waiting.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How large the batches were: the entries each `Ready` persisted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Batches {
    /// `Ready`s that persisted entries.
    pub readies: u64,
    /// Entries they persisted.
    pub entries: u64,
    /// The most entries one persisted.
    pub largest: u64,
}

/// Raft's timing and log compaction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// How often Raft's clock ticks; the timeouts below are rounded to whole ticks.
    pub tick_ms: u64,
    /// A follower that hears no leader for one to two of these campaigns (150 ms by default).
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats (50 ms by default).
    pub heartbeat_ms: u64,
    /// Snapshot the state and drop the log behind it every this many entries.
    pub snapshot_every: u64,
    /// Messages the consensus actor's mailbox holds (peers' Raft traffic and local proposals);
    /// past it the transport answers `Full` and Raft treats the peer as unreachable for now.
    pub mailbox_capacity: usize,
}

impl RaftSettings {
    /// The same settings as the cluster core's timing.
    pub fn timing(&self) -> cluster::Timing {
        cluster::Timing {
            tick: Duration::from_millis(self.tick_ms),
            election_timeout: Duration::from_millis(self.election_timeout_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
        }
    }

    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.mailbox_capacity == 0 {
            return Some("mailbox_capacity must be at least 1".into());
        }
        (self.tick_ms == 0 || self.heartbeat_ms < self.tick_ms || self.election_timeout_ms <= self.heartbeat_ms).then(|| {
            format!(
                "need 0 < tick_ms <= heartbeat_ms < election_timeout_ms, got {} / {} / {}",
                self.tick_ms, self.heartbeat_ms, self.election_timeout_ms
            )
        })
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings { tick_ms: 10, election_timeout_ms: 150, heartbeat_ms: 50, snapshot_every: 1024, mailbox_capacity: 4096 }
    }
}

/// Who leads, and in which term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Leadership {
    /// The leader.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
}

/// Why a campaign did not make this node leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignFailure {
    /// The vote requests reached too few peers to win.
    Unsent(String),
    /// The election ended without this node winning, or did not end in time.
    Lost(String),
}

/// Asks the node to stand for election and waits for the outcome, at most `timeout`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Leadership, CampaignFailure>")]
pub struct Campaign {
    /// How long to wait for a result.
    pub timeout: Duration,
}

/// Proposes a change to the replicated map and waits, at most `timeout`, until a quorum has
/// committed it and this node has applied it. Answers what it did, and the register after it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Committed, String>")]
pub struct Propose {
    /// The change.
    pub change: Change,
    /// How long to wait for the commit.
    pub timeout: Duration,
}

/// What a [`Propose`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The register's data (the state id's key).
    Register(Vec<u8>),
    /// A command on the map.
    Command(Command),
}

impl Change {
    /// About how many bytes it adds to the log.
    fn bytes(&self) -> usize {
        match self {
            Change::Register(data) => data.len(),
            Change::Command(Command::Put { key, value } | Command::CompareAndSet { key, value, .. }) => key.len() + value.len(),
            Change::Command(Command::Delete { key }) => key.len(),
        }
    }
}

/// A committed proposal: what its command did, and the register after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The register (the state id's key) at the proposal's revision.
    pub state: State,
    /// What the command did.
    pub outcome: Outcome,
}

/// Reads one key of the map.
#[derive(Debug, Message)]
#[rtype(result = "Result<KeyView, String>")]
pub struct ReadKey {
    /// The key.
    pub key: Vec<u8>,
    /// How fresh the answer must be.
    pub consistency: Consistency,
    /// How long a linearizable read may wait for the leader's confirmation.
    pub timeout: Duration,
}

/// How fresh a read is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Raft's ReadIndex: the leader confirms with a quorum that it still leads, and this node
    /// answers once it has applied the leader's commit index, so the read sees every write
    /// acknowledged before it began, wherever it was written.
    #[default]
    Linearizable,
    /// This node's applied map, answered at once: it may miss writes the cluster has committed
    /// and this node has not yet applied.
    Stale,
    /// This node's applied map if it is the leader, or heard from the leader within
    /// `max_lag_ms` and has applied all it knows committed: it may miss only writes of about
    /// that window. Otherwise the read is served linearizably (and says so).
    Bounded {
        /// How long ago, at most, this node may have heard from the leader.
        max_lag_ms: u64,
    },
}

/// A key as this node has applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// How fresh it is.
    pub consistency: Consistency,
    /// What it holds, and the revision that wrote it.
    pub value: Option<Versioned>,
    /// The map's revision as this node has applied it.
    pub revision: u64,
    /// The last log index this node has applied.
    pub applied_index: u64,
    /// The highest index this node knows to be committed: how far it may trail.
    pub commit_index: u64,
}

/// What this node knows of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    /// This node.
    pub id: NodeId,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The replicated state as it has applied it.
    #[serde(skip)]
    pub state: State,
    /// The highest index it knows to be committed.
    pub commit_index: u64,
    /// The last index it has applied.
    pub applied_index: u64,
    /// The cluster's voting members, as its configuration says (the incoming ones, while a
    /// joint change is under way).
    pub voters: Vec<NodeId>,
    /// The voters of the outgoing configuration during a joint change; else empty.
    pub outgoing: Vec<NodeId>,
    /// Members that receive the log without voting: nodes joining.
    pub learners: Vec<NodeId>,
    /// Where each member is reached, where known.
    pub addresses: BTreeMap<NodeId, String>,
    /// How large the batches this node persisted were.
    pub batches: Batches,
}

impl NodeView {
    /// Every member: voters of both configurations and learners.
    pub fn members(&self) -> Vec<NodeId> {
        let all: BTreeSet<NodeId> = self.voters.iter().chain(&self.outgoing).chain(&self.learners).copied().collect();
        all.into_iter().collect()
    }
}

/// Asks for a membership change and waits, at most `timeout`, until it is complete on this
/// node: a joining node is a voter, a leaving one is gone. Only the leader accepts one; the
/// answer is the configuration after it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Membership, ChangeFailure>")]
pub struct ChangeMembership {
    /// The change.
    pub change: membership::Change,
    /// How long to wait for it to complete.
    pub timeout: Duration,
}

/// Why a membership change did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeFailure {
    /// This node is not the leader, which decides membership changes; nothing was proposed.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// Where it is reached, if known.
        address: Option<String>,
    },
    /// The leader refused it; nothing was proposed.
    Refused(MembershipError),
    /// It was proposed and did not complete in time, or the node stopped; it may still complete.
    Failed(String),
}


/// Reads what this node knows of the cluster.
#[derive(Debug, Message)]
#[rtype(result = "NodeView")]
pub struct Inspect;

/// The consensus actor of one node.
pub struct Consensus {
    replica: Replica,
    transport: Arc<dyn Transport>,
    tick: Duration,
    mailbox_capacity: usize,
    /// Proposals waiting for their commit, by sequence number, with the term they were made in.
    proposals: BTreeMap<u64, (u64, oneshot::Sender<Result<Committed, String>>)>,
    campaigns: Vec<PendingCampaign>,
    /// Linearizable reads waiting for their index, by read number: the key and whom to answer.
    reads: BTreeMap<u64, WaitingRead>,
    /// Membership changes waiting to complete, by number.
    changes: BTreeMap<u64, oneshot::Sender<Membership>>,
    /// Messages and proposal bytes handed to Raft since it was last driven.
    undriven: (usize, usize),
    /// A `Drive` is queued.
    drive_queued: bool,
    batches: Batches,
    /// Whether the actor runs on an arbiter of its own, which it stops when it stops.
    own_arbiter: bool,
    metrics: Option<NodeMetrics>,
}

/// A linearizable read waiting for its index: the key, and whom to answer.
type WaitingRead = (Vec<u8>, oneshot::Sender<Result<KeyView, String>>);

struct PendingCampaign {
    /// The term the campaign started in; a leader of a later term ends it.
    from_term: u64,
    /// Peers the vote requests could not be handed to.
    unsent: BTreeSet<NodeId>,
    reply: oneshot::Sender<Result<Leadership, CampaignFailure>>,
}

impl Consensus {
    /// A consensus actor over `replica`, ticking every `tick`, sending through `transport`.
    pub fn new(replica: Replica, transport: Arc<dyn Transport>, tick: Duration, mailbox_capacity: usize) -> Self {
        Consensus { replica, transport, tick, mailbox_capacity, proposals: BTreeMap::new(),
            campaigns: Vec::new(),
            reads: BTreeMap::new(),
            changes: BTreeMap::new(),
            undriven: (0, 0),
            drive_queued: false,
            batches: Batches::default(),
            own_arbiter: false,
            metrics: None,
        }
    }

    /// The same, setting `metrics`' Raft gauges as it goes.
    pub fn with_metrics(mut self, metrics: Option<NodeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Raft has been handed a message (and `bytes` of proposals): drive it once the mailbox is
    /// empty, or now if the batch is full.
    fn drive_soon(&mut self, ctx: &mut Context<Self>, bytes: usize) {
        self.undriven = (self.undriven.0 + 1, self.undriven.1 + bytes);
        if self.undriven.0 >= MAX_BATCH || self.undriven.1 >= MAX_BATCH_BYTES {
            self.drive(ctx);
        } else if !self.drive_queued {
            self.drive_queued = true;
            ctx.notify(Drive);
        }
    }

    /// Persists, sends and applies whatever the replica has ready, and answers whoever waited.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        self.undriven = (0, 0);
        let output = match self.replica.advance() {
            Ok(output) => output,
            Err(e) => {
                // The store failed or a committed entry is corrupt: this node must not go on.
                // Stopping drops every waiting reply, which its requester sees as a failure.
                tracing::error!(node = self.replica.id(), "consensus stopped: {e}");
                ctx.stop();
                return;
            }
        };
        let me = self.replica.id();
        if output.persisted > 0 {
            let b = &mut self.batches;
            (b.readies, b.entries, b.largest) = (b.readies + 1, b.entries + output.persisted as u64, b.largest.max(output.persisted as u64));
        }
        for message in output.messages {
            let (to, kind) = (message.to, message.get_msg_type());
            let delivered = self.transport.send(me, to, Envelope::Raft(message));
            if let Err(e) = &delivered {
                tracing::debug!(node = me, "{e}");
                if matches!(kind, MessageType::MsgRequestVote | MessageType::MsgRequestPreVote) {
                    self.campaigns.iter_mut().for_each(|c| {
                        c.unsent.insert(to);
                    });
                }
            }
            // A snapshot handed to the transport is as delivered as this node can know.
            if kind == MessageType::MsgSnapshot || delivered.is_err() {
                self.replica.report_delivery(to, kind, delivered.is_ok());
            }
        }
        let id = self.replica.state().id;
        for ack in output.acks {
            let data = output.applied.iter().find(|a| a.version == ack.version).map(|a| a.data.clone());
            if let (Some((_, reply)), Some(data)) = (self.proposals.remove(&ack.seq), data) {
                let state = State { id: id.clone(), data, version: ack.version };
                let _ = reply.send(Ok(Committed { state, outcome: ack.outcome }));
            }
        }
        for seq in output.reads {
            if let Some((key, reply)) = self.reads.remove(&seq) {
                let _ = reply.send(Ok(self.key_view(&key, Consistency::Linearizable)));
            }
        }
        if let Some(membership) = &output.membership {
            self.transport.follow(me, membership);
        }
        for seq in output.changes {
            if let Some(reply) = self.changes.remove(&seq) {
                let _ = reply.send(self.replica.membership());
            }
        }
        self.abandon_proposals_of_past_terms();
        self.settle_campaigns();
        if let Some(m) = &self.metrics {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            m.term.set(gauge(self.replica.term()));
            m.leader.set(gauge(self.replica.leader().unwrap_or(0)));
            m.commit.set(gauge(self.replica.commit_index()));
            m.applied.set(gauge(self.replica.applied_index()));
        }
    }

    /// Answers proposals made in an earlier term at once, as etcd does: the leader they went to
    /// may be gone, and waiting out the timeout would hold the client for nothing. Like a timeout,
    /// this does not mean the update will not commit.
    fn abandon_proposals_of_past_terms(&mut self) {
        let term = self.replica.term();
        if self.proposals.values().all(|(made, _)| *made >= term) {
            return;
        }
        let leader = self.replica.leader().map_or("none yet".to_owned(), |l| format!("node {l}"));
        let stale: Vec<u64> = self.proposals.iter().filter(|(_, (t, _))| *t < term).map(|(seq, _)| *seq).collect();
        for seq in stale {
            if let Some((made, reply)) = self.proposals.remove(&seq) {
                self.replica.forget(seq);
                let _ = reply.send(Err(format!(
                    "leadership changed (term {made} to {term}, leader: {leader}) before the update committed; it may still commit"
                )));
            }
        }
    }

    fn settle_campaigns(&mut self) {
        let (term, leader) = (self.replica.term(), self.replica.leader());
        let peers = self.replica.voters().len().saturating_sub(1);
        let quorum = self.replica.voters().len() / 2 + 1;
        for campaign in std::mem::take(&mut self.campaigns) {
            let outcome = match leader {
                Some(leader) if term > campaign.from_term || self.replica.is_leader() => {
                    if leader == self.replica.id() {
                        Some(Ok(Leadership { leader, term }))
                    } else {
                        Some(Err(CampaignFailure::Lost(format!("node {leader} won term {term}"))))
                    }
                }
                _ if peers + 1 - campaign.unsent.len().min(peers) < quorum => Some(Err(CampaignFailure::Unsent(format!(
                    "vote requests could not reach nodes {:?}; too few left for a quorum of {quorum}",
                    campaign.unsent
                )))),
                _ => None,
            };
            match outcome {
                Some(result) => {
                    let _ = campaign.reply.send(result);
                }
                None => self.campaigns.push(campaign),
            }
        }
    }
}

impl Consensus {
    /// Opens node `id`'s Raft store in `dir` (creating it for a cluster of `founders`, or with no
    /// configuration for a node that will join) and starts its consensus actor with the timing of
    /// `env`'s configuration. Connect the returned address to the transport
    /// (`LocalNetwork::connect`) so that peers reach it.
    pub fn start(
        env: &Environment,
        id: NodeId,
        founders: &BTreeMap<NodeId, Member>,
        dir: &Path,
        transport: Arc<dyn Transport>,
    ) -> Result<Addr<Consensus>, ReplicaError> {
        let replica = Consensus::open(env, id, founders, dir)?;
        Ok(Consensus::run(env, replica, transport))
    }

    /// Opens node `id`'s replica from its Raft store in `dir`, with the timing of `env`'s
    /// configuration. A new store starts as a cluster of `founders` (where they are reached);
    /// with none, the node has no configuration until a leader adds it and sends a snapshot. Its
    /// incarnation is known from here on, before anything is sent.
    pub fn open(env: &Environment, id: NodeId, founders: &BTreeMap<NodeId, Member>, dir: &Path) -> Result<Replica, ReplicaError> {
        let settings = env.config().raft;
        let voters: Vec<NodeId> = founders.keys().copied().collect();
        let store = LogStore::open(dir, &voters)?;
        let config = ReplicaConfig {
            timing: settings.timing(),
            snapshot_every: settings.snapshot_every,
            members: founders.clone(),
            ..ReplicaConfig::new(id)
        };
        Replica::open(&config, store)
    }

    /// Starts the consensus actor of `replica` on an arbiter of its own, sending through
    /// `transport`.
    pub fn run(env: &Environment, replica: Replica, transport: Arc<dyn Transport>) -> Addr<Consensus> {
        let settings = env.config().raft;
        let metrics = env.node_metrics(replica.id());
        let mut consensus = Consensus::new(replica, transport, settings.timing().tick, settings.mailbox_capacity).with_metrics(metrics);
        consensus.own_arbiter = true;
        let arbiter = actix::Arbiter::new();
        Consensus::start_in_arbiter(&arbiter.handle(), move |_| consensus)
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.transport.follow(self.replica.id(), &self.replica.membership());
        ctx.run_interval(self.tick, |actor, ctx| {
            actor.replica.tick();
            actor.drive(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.own_arbiter {
            actix::Arbiter::current().stop();
        }
    }
}

/// Drives Raft: what the actor sends itself to run after the messages already queued.
#[derive(Message)]
#[rtype(result = "()")]
struct Drive;

impl Handler<Drive> for Consensus {
    type Result = ();

    fn handle(&mut self, _: Drive, ctx: &mut Context<Self>) {
        self.drive_queued = false;
        if self.undriven.0 > 0 {
            self.drive(ctx);
        }
    }
}

impl Handler<Peer> for Consensus {
    type Result = ();

    fn handle(&mut self, Peer(message): Peer, ctx: &mut Context<Self>) {
        match self.replica.step(message) {
            Ok(()) => {}
            // A message that contradicts this log is a peer's bug, a lost disk or an attack.
            Err(e @ ReplicaError::Inconsistent(_)) => tracing::warn!(node = self.replica.id(), "peer message refused: {e}"),
            // Stale terms, unknown peers: Raft refuses them and nothing else needs to happen.
            Err(e) => tracing::debug!(node = self.replica.id(), "peer message refused: {e}"),
        }
        self.drive_soon(ctx, 0);
    }
}

impl Handler<Undelivered> for Consensus {
    type Result = ();

    fn handle(&mut self, lost: Undelivered, _: &mut Context<Self>) {
        if lost.snapshot {
            self.replica.report_delivery(lost.to, MessageType::MsgSnapshot, false);
        }
        self.replica.report_delivery(lost.to, MessageType::MsgAppend, false);
    }
}

impl Handler<Propose> for Consensus {
    type Result = ResponseActFuture<Self, Result<Committed, String>>;

    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) -> Self::Result {
        let bytes = msg.change.bytes();
        let proposed = match msg.change {
            Change::Register(data) => self.replica.propose(data),
            Change::Command(command) => self.replica.propose_command(command),
        };
        let seq = match proposed {
            Ok(seq) => seq,
            Err(e) => return Box::pin(fut::ready(Err(e.to_string()))),
        };
        let (reply, answer) = oneshot::channel();
        self.proposals.insert(seq, (self.replica.term(), reply));
        self.drive_soon(ctx, bytes);
        let timeout = msg.timeout;
        Box::pin(fut::wrap_future(actix::clock::timeout(timeout, answer)).map(move |result, actor: &mut Self, _| {
            match result {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err("the consensus actor stopped".to_owned()),
                Err(_) => {
                    actor.proposals.remove(&seq);
                    actor.replica.forget(seq);
                    let leader = actor.replica.leader().map_or("none known".to_owned(), |l| format!("node {l}"));
                    Err(format!("no quorum committed the update within {timeout:?} (leader: {leader})"))
                }
            }
        }))
    }
}

impl Handler<ChangeMembership> for Consensus {
    type Result = ResponseActFuture<Self, Result<Membership, ChangeFailure>>;

    fn handle(&mut self, msg: ChangeMembership, ctx: &mut Context<Self>) -> Self::Result {
        let seq = match self.replica.propose_change(msg.change) {
            Ok(seq) => seq,
            Err(ReplicaError::Membership(MembershipError::NotLeader { leader })) => {
                let address = leader.and_then(|l| self.replica.membership().address(l).map(str::to_owned));
                return Box::pin(fut::ready(Err(ChangeFailure::NotLeader { leader, address })));
            }
            Err(ReplicaError::Membership(refusal)) => return Box::pin(fut::ready(Err(ChangeFailure::Refused(refusal)))),
            Err(e) => return Box::pin(fut::ready(Err(ChangeFailure::Failed(e.to_string())))),
        };
        let (reply, answer) = oneshot::channel();
        self.changes.insert(seq, reply);
        self.drive(ctx);
        let timeout = msg.timeout;
        Box::pin(fut::wrap_future(actix::clock::timeout(timeout, answer)).map(move |result, actor: &mut Self, _| match result {
            Ok(Ok(membership)) => Ok(membership),
            Ok(Err(_)) => Err(ChangeFailure::Failed("the consensus actor stopped".to_owned())),
            Err(_) => {
                actor.changes.remove(&seq);
                actor.replica.forget_change(seq);
                let m = actor.replica.membership();
                Err(ChangeFailure::Failed(format!(
                    "the change did not complete within {timeout:?} (voters {:?}, learners {:?}); it may still complete",
                    m.voters, m.learners
                )))
            }
        }))
    }
}

impl Handler<Campaign> for Consensus {
    type Result = ResponseActFuture<Self, Result<Leadership, CampaignFailure>>;

    fn handle(&mut self, msg: Campaign, ctx: &mut Context<Self>) -> Self::Result {
        if self.replica.is_leader() {
            let leadership = Leadership { leader: self.replica.id(), term: self.replica.term() };
            return Box::pin(fut::ready(Ok(leadership)));
        }
        let (reply, answer) = oneshot::channel();
        self.campaigns.push(PendingCampaign { from_term: self.replica.term(), unsent: BTreeSet::new(), reply });
        if let Err(e) = self.replica.campaign() {
            return Box::pin(fut::ready(Err(CampaignFailure::Lost(e.to_string()))));
        }
        self.drive(ctx);
        let timeout = msg.timeout;
        Box::pin(fut::wrap_future(actix::clock::timeout(timeout, answer)).map(move |result, _: &mut Self, _| {
            match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(CampaignFailure::Lost("the consensus actor stopped".to_owned())),
                Err(_) => Err(CampaignFailure::Lost(format!("no leader was elected within {timeout:?}"))),
            }
        }))
    }
}

impl Handler<Stop> for Consensus {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Consensus {
    fn key_view(&self, key: &[u8], consistency: Consistency) -> KeyView {
        let r = &self.replica;
        KeyView {
            consistency,
            value: r.map().get(key).cloned(),
            revision: r.map().revision(),
            applied_index: r.applied_index(),
            commit_index: r.commit_index(),
        }
    }
}

impl Handler<ReadKey> for Consensus {
    type Result = ResponseActFuture<Self, Result<KeyView, String>>;

    fn handle(&mut self, msg: ReadKey, ctx: &mut Context<Self>) -> Self::Result {
        match msg.consistency {
            Consistency::Stale => return Box::pin(fut::ready(Ok(self.key_view(&msg.key, Consistency::Stale)))),
            Consistency::Bounded { max_lag_ms } => {
                let r = &self.replica;
                let lag_ms = r.leader_contact().map(|ticks| ticks.saturating_mul(self.tick.as_millis() as u64));
                if lag_ms.is_some_and(|lag| lag <= max_lag_ms) && r.applied_index() >= r.commit_index() {
                    return Box::pin(fut::ready(Ok(self.key_view(&msg.key, msg.consistency))));
                }
            }
            Consistency::Linearizable => {}
        }
        // Bounded like the mailbox: a caller cannot park more reads here than it could queue.
        if self.reads.len() >= self.mailbox_capacity {
            let busy = format!("{} linearizable reads are already waiting (raft.mailbox_capacity)", self.reads.len());
            return Box::pin(fut::ready(Err(busy)));
        }
        let seq = self.replica.read_index();
        let (reply, answer) = oneshot::channel();
        self.reads.insert(seq, (msg.key, reply));
        self.drive_soon(ctx, 0);
        let timeout = msg.timeout;
        Box::pin(fut::wrap_future(actix::clock::timeout(timeout, answer)).map(move |result, actor: &mut Self, _| match result {
            Ok(Ok(view)) => view,
            Ok(Err(_)) => Err("the consensus actor stopped".to_owned()),
            Err(_) => {
                actor.reads.remove(&seq);
                let leader = actor.replica.leader().map_or("none known".to_owned(), |l| format!("node {l}"));
                Err(format!("no leader confirmed the read within {timeout:?} (leader: {leader})"))
            }
        }))
    }
}

impl Handler<Inspect> for Consensus {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        let r = &self.replica;
        let m = r.membership();
        MessageResult(NodeView {
            id: r.id(),
            term: r.term(),
            leader: r.leader(),
            state: r.state(),
            commit_index: r.commit_index(),
            applied_index: r.applied_index(),
            voters: m.voters.iter().copied().collect(),
            outgoing: m.outgoing.iter().copied().collect(),
            learners: m.learners.iter().copied().collect(),
            addresses: m.members.iter().filter(|(_, x)| !x.address.is_empty()).map(|(&id, x)| (id, x.address.clone())).collect(),
            batches: self.batches,
        })
    }
}
