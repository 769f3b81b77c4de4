//! One node's replica of the cluster state: a raft-rs `RawNode` and the state machine it drives.
//!
//! The replica decides and the caller does, as in raft-rs itself: [`Replica::tick`] when the
//! caller's clock says a tick has passed, [`Replica::step`] for each message from a peer,
//! [`Replica::propose`] for an update, and then [`Replica::advance`], which persists what must be
//! persisted and hands back the messages to send and the updates it applied. It reads no clock and
//! opens no socket, so the simulation and the actors drive the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
pub use raft::prelude::MessageType;
use raft::{RawNode, SnapshotStatus, StateRole, Storage};

use crate::kv::{Command, Map, Outcome};
use crate::membership::{self, Change, Follower, Member, Membership, MembershipError, View};
use crate::state::{decode_snapshot, encode_snapshot, DecodeError, State, Update, UpdateId};
use crate::store::{LogStore, Persist, StoreError};
use crate::NodeId;

/// Raft's clock, in the caller's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the caller calls [`Replica::tick`].
    pub tick: Duration,
    /// A follower that hears no leader for this long (to twice this long, randomised) campaigns.
    pub election_timeout: Duration,
    /// How often a leader sends heartbeats.
    pub heartbeat: Duration,
}

impl Default for Timing {
    /// 150 ms election timeout and 50 ms heartbeat (the cluster design's defaults), 10 ms ticks.
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(10),
            election_timeout: Duration::from_millis(150),
            heartbeat: Duration::from_millis(50),
        }
    }
}

impl Timing {
    fn ticks(&self, d: Duration) -> usize {
        (d.as_nanos() / self.tick.as_nanos().max(1)).max(1) as usize
    }

    /// The election timeout in ticks.
    pub fn election_ticks(&self) -> usize {
        self.ticks(self.election_timeout)
    }

    /// The heartbeat interval in ticks.
    pub fn heartbeat_ticks(&self) -> usize {
        self.ticks(self.heartbeat)
    }
}

/// How a replica is set up.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node.
    pub id: NodeId,
    /// The id of the replicated state (`State::id`).
    pub state_id: String,
    /// Raft's timing.
    pub timing: Timing,
    /// Snapshot the state and drop the log behind it every this many applied entries.
    pub snapshot_every: u64,
    /// `None`: raft-rs draws each election timeout at random from one to two timeouts. `Some(k)`:
    /// the timeout is always the base plus `k` ticks, so that a seeded simulation replays exactly.
    pub election_jitter_ticks: Option<usize>,
    /// The members a new cluster starts with and where they are reached (until a snapshot that
    /// records membership says otherwise).
    pub members: BTreeMap<NodeId, Member>,
}

impl ReplicaConfig {
    /// Defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        ReplicaConfig {
            id,
            state_id: "cluster".into(),
            timing: Timing::default(),
            snapshot_every: 1024,
            election_jitter_ticks: None,
            members: BTreeMap::new(),
        }
    }
}

/// What can go wrong driving a replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// No leader is known, so an update cannot be proposed now.
    #[error("no leader is known; the update was not proposed")]
    NoLeader,
    /// The store could not persist; the node must stop and be reopened from its data directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A committed entry or snapshot is not ergon's; the node cannot apply past it.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    /// raft-rs refused a message or a configuration.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A peer's message does not fit this node's log; it was not stepped.
    #[error("inconsistent message: {0}")]
    Inconsistent(String),
    /// A membership change was refused.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// One update applied to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The map's revision after this update (the state's version).
    pub version: u64,
    /// Which proposal it was.
    pub update: UpdateId,
    /// The register's data after it (the state id's key).
    pub data: Vec<u8>,
}

/// This node's own proposal, committed by a quorum and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The number [`Replica::propose`] returned.
    pub seq: u64,
    /// The state's version it produced.
    pub version: u64,
    /// What its command did.
    pub outcome: Outcome,
}

/// What one [`Replica::advance`] asks the caller to do, and what it did.
#[derive(Debug, Default)]
pub struct Output {
    /// Send these to their `to` node; order matters only per destination.
    pub messages: Vec<Message>,
    /// Every update applied, in log order.
    pub applied: Vec<Applied>,
    /// This node's proposals that are now committed and applied.
    pub acks: Vec<Ack>,
    /// Reads ([`Replica::read_index`]) whose index the leader confirmed and this node has now
    /// applied: answered from the state now, they see every write acknowledged before they began.
    pub reads: Vec<u64>,
    /// The configuration, when this advance applied a change to it.
    pub membership: Option<Membership>,
    /// This node's membership changes ([`Replica::propose_change`]) that are now complete: the
    /// joining node is a voter, the leaving one is gone.
    pub changes: Vec<u64>,
    /// How many log entries this advance persisted (in one store transaction).
    pub persisted: usize,
}

/// One node's replica: Raft plus the state machine.
pub struct Replica {
    node: RawNode<LogStore>,
    store: LogStore,
    /// The state's id: the register's key in the map.
    state_id: String,
    map: Map,
    applied_index: u64,
    snapshot_every: u64,
    incarnation: u64,
    next_seq: u64,
    pending: BTreeSet<u64>,
    /// What is known of each member beyond its id (addresses).
    members: BTreeMap<NodeId, Member>,
    /// This node's membership changes that are not yet complete, by number.
    changing: BTreeMap<u64, Change>,
    /// Snapshot at the next chance, whatever `snapshot_every` says: a learner was added, and a new
    /// node must start from a snapshot that names it rather than from entry 1 of a log whose first
    /// configuration was never an entry.
    compact_now: bool,
    /// The voter a leader that removed itself asks to campaign, once the Ready it stepped
    /// down in is done (raft-rs allows a follower no new messages within one).
    hand_over: Option<NodeId>,
    /// Ticks since this run began, and the tick at which each peer was last heard from: whether
    /// a removal leaves a reachable quorum is judged on these, not on raft-rs's `recent_active`,
    /// which it clears at every quorum check.
    ticks: u64,
    heard: BTreeMap<NodeId, u64>,
    election_ticks: u64,
    next_read: u64,
    /// Reads whose index is known, waiting for this node to apply it: (number, index).
    confirmed_reads: Vec<(u64, u64)>,
}

impl Replica {
    /// Starts (or restarts) a replica over `store`, restoring the state from its snapshot; the
    /// committed entries after it are applied again by the first [`advance`](Replica::advance)s.
    pub fn open(config: &ReplicaConfig, store: LogStore) -> Result<Self, ReplicaError> {
        let snapshot = store.snapshot_now();
        let applied_index = snapshot.get_metadata().index;
        let (state_id, map, members) = if applied_index == 0 {
            (config.state_id.clone(), Map::default(), None)
        } else {
            let s = decode_snapshot(&snapshot.data)?;
            (s.state_id, s.map, s.members)
        };
        let members = members.unwrap_or_else(|| config.members.clone());
        let election = config.timing.election_ticks();
        let (min, max) = match config.election_jitter_ticks {
            Some(k) => (election + k, election + k + 1),
            None => (election, 2 * election),
        };
        let raft_config = raft::Config {
            id: config.id,
            election_tick: election,
            heartbeat_tick: config.timing.heartbeat_ticks(),
            min_election_tick: min,
            max_election_tick: max,
            applied: applied_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_config.validate()?;
        let node = RawNode::new(&raft_config, store.clone(), &crate::logging::logger(config.id))?;
        Ok(Replica {
            node,
            incarnation: store.incarnation(),
            store,
            state_id,
            map,
            applied_index,
            snapshot_every: config.snapshot_every.max(1),
            next_seq: 0,
            pending: BTreeSet::new(),
            members,
            changing: BTreeMap::new(),
            compact_now: false,
            hand_over: None,
            ticks: 0,
            heard: BTreeMap::new(),
            election_ticks: election as u64,
            next_read: 0,
            confirmed_reads: Vec::new(),
        })
    }

    /// Advances Raft's clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.node.tick();
    }

    /// Hands Raft a message from a peer, once it is consistent with this node's log. raft-rs
    /// takes its input on trust and aborts the process on some inconsistencies (a commit index
    /// past the log's end, an append that contradicts a committed entry); a message from a buggy
    /// or hostile peer, or one that outlived a lost disk, must not reach those paths.
    pub fn step(&mut self, mut message: Message) -> Result<(), ReplicaError> {
        let me = self.id();
        if message.to != me {
            return Err(ReplicaError::Inconsistent(format!("a message for node {} reached node {me}", message.to)));
        }
        let log = &self.node.raft.raft_log;
        if message.get_msg_type() == MessageType::MsgHeartbeat && message.commit > log.last_index() {
            // A leader commits at most what this node has acknowledged; anything beyond this log
            // is not this node's to commit yet.
            tracing::warn!(node = me, from = message.from, commit = message.commit, last = log.last_index(), "heartbeat commits past this log; clamped");
            message.commit = log.last_index();
        }
        if message.get_msg_type() == MessageType::MsgAppend {
            let committed = log.committed;
            if let Some(e) = message.entries.iter().find(|e| e.index <= committed && log.term(e.index).is_ok_and(|t| t != e.term)) {
                return Err(ReplicaError::Inconsistent(format!(
                    "node {} sent entry {} of term {}, which contradicts entry {} committed here",
                    message.from, e.index, e.term, e.index
                )));
            }
        }
        self.heard.insert(message.from, self.ticks);
        Ok(self.node.step(message)?)
    }

    /// The transport tells the replica what became of a message of kind `kind` it sent to `to`.
    /// Raft needs this for snapshots (a leader sends no more to a follower until it hears the
    /// snapshot's fate) and uses it to stop streaming appends to a peer that cannot be reached.
    pub fn report_delivery(&mut self, to: NodeId, kind: MessageType, delivered: bool) {
        if kind == MessageType::MsgSnapshot {
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            self.node.report_snapshot(to, status);
        }
        if !delivered {
            self.node.report_unreachable(to);
        }
    }

    /// Starts an election now rather than waiting for the timeout.
    pub fn campaign(&mut self) -> Result<(), ReplicaError> {
        Ok(self.node.campaign()?)
    }

    /// Proposes new data for the register (the state id's key).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ReplicaError> {
        let key = self.state_id.as_bytes().to_vec();
        self.propose_command(Command::Put { key, value: data })
    }

    /// Proposes a command. Followers forward to the leader. Returns the number that an [`Ack`]
    /// will carry once a quorum has committed it and this node has applied it.
    pub fn propose_command(&mut self, command: Command) -> Result<u64, ReplicaError> {
        let seq = self.next_seq;
        let update = Update { id: UpdateId { origin: self.id(), incarnation: self.incarnation, seq }, command };
        match self.node.propose(Vec::new(), update.encode()) {
            Ok(()) => {
                self.next_seq += 1;
                self.pending.insert(seq);
                Ok(seq)
            }
            Err(raft::Error::ProposalDropped) => Err(ReplicaError::NoLeader),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a linearizable read (Raft's ReadIndex): the leader confirms with a quorum that it
    /// still leads and answers its commit index; once this node has applied that far, the read's
    /// number appears in [`Output::reads`]. Returns that number. A read that no leader confirms
    /// (none known, or leadership changed) never appears: the caller times it out.
    pub fn read_index(&mut self) -> u64 {
        let seq = self.next_read;
        self.next_read += 1;
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.incarnation.to_le_bytes());
        ctx.extend_from_slice(&seq.to_le_bytes());
        self.node.read_index(ctx);
        seq
    }

    /// The read number in a read context of this run, if it is one.
    fn own_read(&self, ctx: &[u8]) -> Option<u64> {
        let (incarnation, seq) = ctx.split_at_checked(8)?;
        let incarnation = u64::from_le_bytes(incarnation.try_into().ok()?);
        let seq = u64::from_le_bytes(seq.try_into().ok()?);
        (incarnation == self.incarnation).then_some(seq)
    }

    /// Stops waiting for a proposal (the caller gave up on it). If it commits later it is still
    /// applied, but no [`Ack`] is produced.
    pub fn forget(&mut self, seq: u64) {
        self.pending.remove(&seq);
    }

    /// Asks for a membership change. Only the leader checks and proposes one (its followers'
    /// progress decides whether a removal leaves a quorum); others answer
    /// [`MembershipError::NotLeader`]. Returns the number that [`Output::changes`] will carry once
    /// the change is complete on this node: for a join, once the node is a voter, which the leader
    /// (whichever node leads by then) makes it when it has caught up.
    pub fn propose_change(&mut self, change: Change) -> Result<u64, ReplicaError> {
        if !self.is_leader() {
            return Err(MembershipError::NotLeader { leader: self.leader() }.into());
        }
        let membership = self.membership();
        let cc = membership::plan(&change, &self.view(&membership, &|id| self.follower(id)))?;
        self.node.propose_conf_change(Vec::new(), cc)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.changing.insert(seq, change);
        Ok(seq)
    }

    fn view<'a>(&self, membership: &'a Membership, followers: &'a dyn Fn(NodeId) -> Follower) -> View<'a> {
        View {
            leader: self.id(),
            membership,
            pending: self.node.raft.has_pending_conf(),
            committed: self.commit_index(),
            followers,
        }
    }

    fn follower(&self, id: NodeId) -> Follower {
        let active = self.heard.get(&id).is_some_and(|&at| self.ticks - at <= self.election_ticks);
        self.node.raft.prs().get(id).map_or(Follower::default(), |p| Follower { matched: p.matched, active })
    }

    /// The leader's housekeeping: promote a learner that
    /// has caught up, and leave a joint configuration that the leader which entered it did not
    /// live to leave.
    fn tend_membership(&mut self) -> Result<(), ReplicaError> {
        if !self.is_leader() {
            return Ok(());
        }
        if self.node.raft.has_pending_conf() {
            return Ok(());
        }
        // The common case, checked without building anything: nothing to promote, and no joint
        // configuration to leave (ergon enters joint ones only with automatic leaving).
        let conf = self.node.raft.prs().conf();
        if conf.learners().is_empty() && conf.learners_next().is_empty() && !*conf.auto_leave() {
            return Ok(());
        }
        let membership = self.membership();
        let change = if membership.is_joint() {
            Some(membership::leave_joint())
        } else {
            membership::promotion(&self.view(&membership, &|id| self.follower(id)))
        };
        if let Some(cc) = change {
            tracing::info!(node = self.id(), changes = ?cc.changes, "membership: proposing");
            self.node.propose_conf_change(Vec::new(), cc)?;
        }
        Ok(())
    }

    /// A leader that removed itself stops leading at once: raft-rs 0.7 would go on leading, and
    /// panics where a leader looks up its own progress (committing, persisting) once it is not
    /// a member. It becomes a follower in the same term (a new term would change the hard state
    /// in the middle of a Ready, which raft-rs forbids), and once that Ready is done it tells
    /// its most caught-up voter, if that one has every entry, to campaign now; the remaining
    /// voters elect one anyway after an election timeout. What it was still proposing is
    /// answered when its wait runs out (it may still commit).
    fn step_down(&mut self) {
        let last = self.node.raft.raft_log.last_index();
        let successor = self.voters().into_iter().filter(|&v| v != self.id()).max_by_key(|&v| self.follower(v).matched);
        self.hand_over = successor.filter(|&v| self.follower(v).matched == last);
        tracing::info!(node = self.id(), term = self.node.raft.term, successor = ?self.hand_over, "removed while leading: stepping down");
        let term = self.node.raft.term;
        self.node.raft.become_follower(term, raft::INVALID_ID);
    }

    /// Stops waiting for a membership change (the caller gave up on it); it may still complete.
    pub fn forget_change(&mut self, seq: u64) {
        self.changing.remove(&seq);
    }

    /// Persists, applies and collects whatever Raft has ready.
    pub fn advance(&mut self) -> Result<Output, ReplicaError> {
        let mut out = Output::default();
        self.tend_membership()?;
        if !self.node.has_ready() {
            return Ok(out);
        }
        let mut ready = self.node.ready();
        for read in ready.take_read_states() {
            if let Some(seq) = self.own_read(&read.request_ctx) {
                self.confirmed_reads.push((seq, read.index));
            }
        }
        // A leader may send appends before persisting its own copy (Raft thesis 10.2.1).
        out.messages.extend(ready.take_messages());
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        if let Some(snapshot) = &snapshot {
            self.restore(snapshot)?;
        }
        self.apply(ready.take_committed_entries(), &mut out)?;
        out.persisted = ready.entries().len();
        self.store.persist(Persist {
            snapshot: snapshot.as_ref(),
            entries: ready.entries(),
            hard_state: ready.hs(),
            ..Persist::default()
        })?;
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        self.store.persist(Persist { commit: light.commit_index(), ..Persist::default() })?;
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut out)?;
        self.node.advance_apply();
        if let Some(successor) = self.hand_over.take() {
            self.node.raft.send_timeout_now(successor);
        }
        let applied = self.applied_index;
        self.confirmed_reads.retain(|&(seq, index)| {
            let servable = index <= applied;
            if servable {
                out.reads.push(seq);
            }
            !servable
        });
        self.maybe_compact()?;
        Ok(out)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ReplicaError> {
        let s = decode_snapshot(&snapshot.data)?;
        (self.state_id, self.map) = (s.state_id, s.map);
        if let Some(members) = s.members {
            self.members = members;
        }
        self.applied_index = snapshot.get_metadata().index;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<(), ReplicaError> {
        for entry in entries {
            self.applied_index = entry.index;
            if entry.get_entry_type() != EntryType::EntryNormal {
                self.apply_conf_change(&entry, out)?;
                continue;
            }
            // Empty entries are new leaders' no-ops.
            if entry.data.is_empty() {
                continue;
            }
            let update = Update::decode(&entry.data, &self.state_id)?;
            let outcome = self.map.apply(&update.command);
            let version = self.map.revision();
            let id = update.id;
            if id.origin == self.id() && id.incarnation == self.incarnation && self.pending.remove(&id.seq) {
                out.acks.push(Ack { seq: id.seq, version, outcome });
            }
            let data = self.map.get(self.state_id.as_bytes()).map(|v| v.value.clone()).unwrap_or_default();
            out.applied.push(Applied { version, update: id, data });
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry, out: &mut Output) -> Result<(), ReplicaError> {
        let corrupt = |e: prost::DecodeError| DecodeError::new("configuration change", e.to_string());
        let cc = match entry.get_entry_type() {
            EntryType::EntryConfChange => {
                let v1 = ConfChange::decode(entry.data.as_slice()).map_err(corrupt)?;
                membership::conf_change(&[(v1.node_id, v1.get_change_type())], v1.context)
            }
            _ => ConfChangeV2::decode(entry.data.as_slice()).map_err(corrupt)?,
        };
        // A change raft-rs finds invalid is one every node refuses alike: applying nothing is
        // how a state machine rejects a configuration change.
        let conf = match self.node.apply_conf_change(&cc) {
            Ok(conf) => conf,
            Err(e) => {
                tracing::warn!(node = self.id(), index = entry.index, "membership change not applied: {e}");
                return Ok(());
            }
        };
        membership::record(&mut self.members, &cc, &conf)?;
        if self.is_leader() && !self.node.raft.promotable() {
            self.step_down();
        }
        let membership = Membership::of(&conf, &self.members);
        tracing::info!(node = self.id(), index = entry.index, voters = ?membership.voters, outgoing = ?membership.outgoing, learners = ?membership.learners, "membership changed");
        if cc.changes.iter().any(|c| c.get_change_type() == raft::prelude::ConfChangeType::AddLearnerNode) {
            self.compact_now = true;
        }
        self.changing.retain(|&seq, change| {
            let done = match change {
                Change::Join { id, .. } => membership.voters.contains(id) && !membership.is_joint(),
                Change::Leave { id } => !membership.contains(*id),
            };
            if done {
                out.changes.push(seq);
            }
            !done
        });
        out.membership = Some(membership);
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), ReplicaError> {
        let snapshot_index = self.store.snapshot_now().get_metadata().index;
        let due = self.applied_index >= snapshot_index + self.snapshot_every;
        if !(due || self.compact_now && self.applied_index > snapshot_index) {
            return Ok(());
        }
        self.compact_now = false;
        let mut snapshot = Snapshot { data: encode_snapshot(&self.state_id, &self.map, &self.members), ..Snapshot::default() };
        let meta = snapshot.mut_metadata();
        meta.index = self.applied_index;
        meta.term = self.node.store().term(self.applied_index)?;
        meta.set_conf_state(self.node.raft.prs().conf().to_conf_state());
        self.store.persist(Persist { compact: Some(snapshot), ..Persist::default() })?;
        Ok(())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.node.raft.id
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.node.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    /// How many ticks ago this node last heard from the leader it knows: 0 if it leads, `None`
    /// if it knows none or has not heard from it in this run.
    pub fn leader_contact(&self) -> Option<u64> {
        if self.is_leader() {
            return Some(0);
        }
        let leader = self.leader()?;
        self.heard.get(&leader).map(|&at| self.ticks - at)
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Which run of this node this is (see [`UpdateId`]).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The cluster's voting members (of both configurations, while joint).
    pub fn voters(&self) -> Vec<NodeId> {
        self.node.raft.prs().conf().voters().ids().iter().collect()
    }

    /// The configuration as this node has applied it.
    pub fn membership(&self) -> Membership {
        Membership::of(&self.node.raft.prs().conf().to_conf_state(), &self.members)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The register as this node has applied it: the state id's key, at the map's revision.
    pub fn state(&self) -> State {
        State::of(&self.state_id, &self.map)
    }

    /// The map as this node has applied it.
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// The index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The highest index this node knows to be committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// How many proposals of this node are still waiting for their commit.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), &[1, 2, 3]).unwrap();
        let replica = Replica::open(&ReplicaConfig::new(2), store).unwrap();
        (dir, replica)
    }

    fn message(kind: MessageType, to: NodeId) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        (m.from, m.to, m.term) = (1, to, 1);
        m
    }

    #[test]
    fn a_heartbeat_committing_past_the_log_is_clamped_not_fatal() {
        let (_dir, mut replica) = follower();
        let mut beat = message(MessageType::MsgHeartbeat, 2);
        beat.commit = 1_000;
        replica.step(beat).unwrap();
        replica.advance().unwrap();
        assert_eq!(replica.node.raft.raft_log.committed, replica.node.raft.raft_log.last_index());
    }

    #[test]
    fn misaddressed_or_contradicting_messages_are_refused() {
        let (_dir, mut replica) = follower();
        let err = replica.step(message(MessageType::MsgHeartbeat, 3)).unwrap_err();
        assert!(err.to_string().contains("a message for node 3 reached node 2"), "{err}");

        // Commit one entry of term 1, then an append that says index 1 was of term 7.
        let mut append = message(MessageType::MsgAppend, 2);
        append.entries = vec![Entry { index: 1, term: 1, ..Default::default() }];
        append.commit = 1;
        replica.step(append).unwrap();
        replica.advance().unwrap();
        let mut liar = message(MessageType::MsgAppend, 2);
        liar.term = 7;
        liar.entries = vec![Entry { index: 1, term: 7, ..Default::default() }];
        let err = replica.step(liar).unwrap_err();
        assert!(err.to_string().contains("contradicts entry 1 committed here"), "{err}");
    }

    /// A one-node cluster's replica, leading once it has campaigned.
    fn alone(dir: &std::path::Path, snapshot_every: u64) -> Replica {
        let store = LogStore::open(dir, &[1]).unwrap();
        let config = ReplicaConfig { snapshot_every, ..ReplicaConfig::new(1) };
        let mut replica = Replica::open(&config, store).unwrap();
        replica.campaign().unwrap();
        replica.advance().unwrap();
        replica.advance().unwrap();
        assert!(replica.is_leader());
        replica
    }

    fn commit(replica: &mut Replica, command: Command) -> Ack {
        let seq = replica.propose_command(command).unwrap();
        let mut acks = Vec::new();
        for _ in 0..4 {
            acks.extend(replica.advance().unwrap().acks);
        }
        acks.into_iter().find(|a| a.seq == seq).expect("a one-node cluster commits at once")
    }

    #[test]
    fn keys_commit_with_their_outcomes_and_survive_a_snapshot_and_a_restart() {
        use crate::kv::Expected;
        let dir = tempfile::tempdir().unwrap();
        let mut replica = alone(dir.path(), 3);
        let put = |k: &str, v: &str| Command::Put { key: k.into(), value: v.into() };
        assert_eq!(commit(&mut replica, put("a", "1")).outcome, Outcome::Written { revision: 1 });
        let stale = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Revision(5), value: b"2".to_vec() };
        assert!(matches!(commit(&mut replica, stale).outcome, Outcome::Mismatch { revision: 2, .. }));
        let seq = replica.propose(b"register".to_vec()).unwrap();
        let acks: Vec<Ack> = (0..4).flat_map(|_| replica.advance().unwrap().acks).collect();
        assert_eq!(acks.iter().find(|a| a.seq == seq).unwrap().version, 3);
        commit(&mut replica, Command::Delete { key: b"a".to_vec() });
        commit(&mut replica, put("b", "2"));
        assert_eq!(replica.state(), State { id: "cluster".into(), data: b"register".to_vec(), version: 5 });
        let map = replica.map().clone();
        assert!(replica.store.snapshot_now().get_metadata().index > 0, "compacted into a snapshot");
        drop(replica);

        let reopened = alone(dir.path(), 3);
        assert_eq!(reopened.map(), &map, "the snapshot and the entries after it restore every key");
        assert_eq!(reopened.map().get(b"b").unwrap().value, b"2");
        assert!(reopened.map().get(b"a").is_none());
    }

    #[test]
    fn a_read_index_is_confirmed_and_served_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = alone(dir.path(), 1000);
        commit(&mut replica, Command::Put { key: b"k".to_vec(), value: b"v".to_vec() });
        let seq = replica.read_index();
        let reads: Vec<u64> = (0..3).flat_map(|_| replica.advance().unwrap().reads).collect();
        assert_eq!(reads, [seq], "served once, after its index was applied");
        assert_eq!(replica.map().get(b"k").unwrap().value, b"v");
        assert_eq!(replica.own_read(b"short"), None, "a context that is not ours is ignored");
    }
}
