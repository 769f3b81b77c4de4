//! A cluster of [`Replica`]s on a simulated network with simulated time, driven from one seed.
//!
//! Everything that could differ between two runs (message delays and losses, which node crashes
//! when, election timeouts) is drawn from one seeded generator, and events are ordered by
//! (time, sequence number), so a seed replays exactly: a failing seed is the whole bug report.
//! This is the FoundationDB / TigerBeetle approach, scaled down: the replicas are the real code,
//! only the network, the clock and the disk are simulated.
//!
//! The [`History`] records every update any replica applies, every acknowledgement a client
//! received, and every keyed operation's invocation and answer, and [`Sim::check`] asserts what
//! Raft promises: no two replicas apply different updates at the same version, every acknowledged
//! update is in the log at the version it was acknowledged with, the keyed operations are
//! linearizable ([`crate::linearizable`]), and once the faults stop every member converges to the
//! same state. Membership changes ([`Sim::add_node`], [`Sim::change`]) run through the same
//! replicas' Raft logs.
//!
//! ```
//! use cluster::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(7, SimConfig::nodes(3));
//! let leader = sim.run_until_leader(2_000).expect("a leader within 2 s");
//! sim.propose(leader, b"hello".to_vec());
//! sim.run_for(500);
//! sim.crash(leader);
//! assert!(sim.run_until_leader(2_000).is_some());
//! sim.heal_and_settle(5_000);
//! sim.check().unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::faults::{Faults, Route};
use crate::kv::{Command, Expected, Outcome};
use crate::linearizable::{self, KvOp, KvResult, Recorder};
use crate::membership::Change;
use crate::replica::{MessageType, Output, Replica, ReplicaConfig, ReplicaError, Timing};
use crate::state::UpdateId;
use crate::store::LogStore;
use crate::{NodeId, RaftMessage};

/// Where simulated nodes keep their Raft storage.
#[derive(Debug, Clone)]
pub enum SimStorage {
    /// In memory; a crash keeps what was persisted and loses the rest. Fast.
    Memory,
    /// Real redb files under this directory, one folder per node; a crash closes them and a
    /// restart reopens them.
    Dir(PathBuf),
}

/// The simulated cluster and network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes (ids 1 to n).
    pub nodes: u64,
    /// Raft's timing, in simulated time.
    pub timing: Timing,
    /// Snapshot every this many applied entries (small, so snapshots are exercised).
    pub snapshot_every: u64,
    /// Loss and latency (partitions are set with [`Sim::partition`]).
    pub faults: Faults,
    /// A client gives up on an update after this many milliseconds.
    pub client_timeout_ms: u64,
    /// Where the nodes keep their logs.
    pub storage: SimStorage,
}

impl SimConfig {
    /// `n` nodes with the default timing, 1 to 5 ms latency and no losses.
    pub fn nodes(n: u64) -> Self {
        SimConfig {
            nodes: n,
            timing: Timing::default(),
            snapshot_every: 16,
            faults: Faults::new(0.0, (1, 5)),
            client_timeout_ms: 1_000,
            storage: SimStorage::Memory,
        }
    }
}

struct Node {
    replica: Option<Replica>,
    /// The memory "disk", kept across crashes.
    store: Option<LogStore>,
    /// Client proposals waiting for an ack: seq -> (data, deadline).
    waiting: BTreeMap<u64, (Vec<u8>, u64)>,
    /// Extra election-timeout ticks of the current run.
    jitter: usize,
    /// Whether it was one of the cluster's first members (else it joined, starting empty).
    founder: bool,
    /// Keyed commands waiting for their ack: seq -> (the history's operation, deadline).
    commands: BTreeMap<u64, (usize, u64)>,
    /// Linearizable reads waiting: read seq -> (the history's operation, key, deadline).
    reads: BTreeMap<u64, (usize, Vec<u8>, u64)>,
    /// Membership changes waiting to complete: seq -> deadline.
    changes: BTreeMap<u64, u64>,
}

impl Node {
    fn new(founder: bool) -> Self {
        Node {
            replica: None,
            store: None,
            waiting: BTreeMap::new(),
            jitter: 0,
            founder,
            commands: BTreeMap::new(),
            reads: BTreeMap::new(),
            changes: BTreeMap::new(),
        }
    }

    /// Forgets every client request: a crash loses them, and their clients never hear back.
    fn drop_requests(&mut self) -> usize {
        let lost = self.waiting.len();
        self.waiting.clear();
        self.commands.clear();
        self.reads.clear();
        self.changes.clear();
        lost
    }
}

/// What every replica applied and every client was told.
#[derive(Debug, Default)]
pub struct History {
    /// The update applied at each version, as first seen on any replica.
    pub applied: BTreeMap<u64, (UpdateId, Vec<u8>)>,
    /// Updates acknowledged to a client, with the version they were acknowledged at.
    pub acked: Vec<(UpdateId, u64, Vec<u8>)>,
    /// Updates whose client gave up (they may or may not have committed).
    pub timed_out: usize,
    /// Proposals refused at once (no leader known).
    pub refused: usize,
    /// Every keyed operation, invoked and (perhaps) answered, in simulated milliseconds.
    pub kv: Recorder,
    /// Membership changes completed on the node that asked.
    pub changes: usize,
    /// What went wrong while running, found as it happened.
    pub violations: Vec<String>,
}

/// A simulated cluster.
pub struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    next_tick: u64,
    nodes: BTreeMap<NodeId, Node>,
    /// In flight: (delivery time, send order) -> (from, message, lost on the way).
    in_flight: BTreeMap<(u64, u64), (NodeId, RaftMessage, bool)>,
    sent: u64,
    history: History,
}

impl Sim {
    /// A cluster of `config.nodes` replicas, all up, none yet a leader.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            next_tick: config.timing.tick.as_millis() as u64,
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            sent: 0,
            history: History::default(),
            config,
        };
        for id in 1..=sim.config.nodes {
            sim.nodes.insert(id, Node::new(true));
            sim.start(id);
        }
        sim
    }

    fn voters(&self) -> Vec<NodeId> {
        (1..=self.config.nodes).collect()
    }

    /// Starts node `id` from whatever its disk holds.
    fn start(&mut self, id: NodeId) {
        // A node that joins later starts with no configuration and learns it from a snapshot.
        let voters = if self.nodes[&id].founder { self.voters() } else { Vec::new() };
        let store = match &self.config.storage {
            SimStorage::Memory => {
                self.nodes[&id].store.clone().unwrap_or_else(|| LogStore::in_memory(&voters))
            }
            SimStorage::Dir(dir) => match LogStore::open(&dir.join(format!("node-{id}")), &voters) {
                Ok(store) => store,
                Err(e) => return self.violation(format!("node {id} cannot reopen its store: {e}")),
            },
        };
        // Distinct timeouts for live nodes, so that two candidates never tie forever.
        let taken: BTreeSet<usize> = self.nodes.values().filter(|n| n.replica.is_some()).map(|n| n.jitter).collect();
        let span = self.config.timing.election_ticks();
        let free: Vec<usize> = (0..span).filter(|k| !taken.contains(k)).collect();
        let jitter = free[self.rng.gen_range(0..free.len())];
        let config = ReplicaConfig {
            timing: self.config.timing,
            snapshot_every: self.config.snapshot_every,
            election_jitter_ticks: Some(jitter),
            ..ReplicaConfig::new(id)
        };
        match Replica::open(&config, store.clone()) {
            Ok(replica) => {
                let node = self.nodes.get_mut(&id).expect("known node");
                node.replica = Some(replica);
                node.jitter = jitter;
                if matches!(self.config.storage, SimStorage::Memory) {
                    node.store = Some(store);
                }
            }
            Err(e) => self.violation(format!("node {id} cannot restart: {e}")),
        }
    }

    fn violation(&mut self, what: String) {
        self.history.violations.push(format!("t={} ms: {what}", self.now));
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// What has happened so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Node `id`'s replica, if it is up.
    pub fn replica(&self, id: NodeId) -> Option<&Replica> {
        self.nodes.get(&id)?.replica.as_ref()
    }

    /// The ids of the nodes that are up.
    pub fn up(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_some()).map(|(&id, _)| id).collect()
    }

    /// The ids of the nodes that are down.
    pub fn down(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_none()).map(|(&id, _)| id).collect()
    }

    /// The leader of the highest term among the nodes that are up, if it can reach a majority.
    pub fn leader(&self) -> Option<NodeId> {
        let (id, replica) = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| n.replica.as_ref().filter(|r| r.is_leader()).map(|r| (id, r)))
            .max_by_key(|(_, r)| r.term())?;
        let voters = replica.membership().voters;
        let reachable = voters.iter().filter(|&&peer| self.replica(peer).is_some() && self.config.faults.connected(id, peer)).count();
        (reachable > voters.len() / 2).then_some(id)
    }

    /// Crashes node `id`: its Raft node, state machine and client proposals are gone, its disk
    /// stays. Messages to it are lost until it restarts.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.replica = None;
            self.history.timed_out += node.drop_requests();
        }
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_some_and(|n| n.replica.is_none()) {
            self.start(id);
        }
    }

    /// Splits the cluster: nodes in `minority` can talk only among themselves.
    pub fn partition(&mut self, minority: &[NodeId]) {
        self.config.faults.partition(minority);
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        self.config.faults.heal();
    }

    /// Sets the chance that a message is lost.
    pub fn set_drop_rate(&mut self, rate: f64) {
        self.config.faults.drop_rate = rate;
    }

    /// A client asks node `id` to replicate `data`. Returns false when the node is down or knows
    /// no leader (the client is told at once, as `ReplicaUpdateFailed` would tell it).
    pub fn propose(&mut self, id: NodeId, data: Vec<u8>) -> bool {
        let deadline = self.now + self.config.client_timeout_ms;
        let Some(node) = self.nodes.get_mut(&id) else { return false };
        let Some(replica) = node.replica.as_mut() else { return false };
        match replica.propose(data.clone()) {
            Ok(seq) => {
                node.waiting.insert(seq, (data, deadline));
                self.advance(id);
                true
            }
            Err(_) => {
                self.history.refused += 1;
                false
            }
        }
    }

    /// A client asks node `id` to do `op` on `key`, recorded in the history from now until its
    /// answer. Returns false when it was refused at once (node down, no leader known).
    pub fn client(&mut self, id: NodeId, key: &[u8], op: KvOp) -> bool {
        let deadline = self.now + self.config.client_timeout_ms;
        let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else { return false };
        let command = match &op {
            KvOp::Put(value) => Some(Command::Put { key: key.to_vec(), value: value.clone() }),
            KvOp::Delete => Some(Command::Delete { key: key.to_vec() }),
            KvOp::Cas { expected, value } => {
                let expected = expected.clone().map_or(Expected::Absent, Expected::Value);
                Some(Command::CompareAndSet { key: key.to_vec(), expected, value: value.clone() })
            }
            KvOp::Get => None,
        };
        let started = match command {
            Some(command) => replica.propose_command(command).map(|seq| (seq, false)),
            None => Ok((replica.read_index(), true)),
        };
        let Ok((seq, read)) = started else {
            self.history.refused += 1;
            return false;
        };
        let n = self.history.kv.invoke(key, op, self.now);
        let node = self.nodes.get_mut(&id).expect("known node");
        if read {
            node.reads.insert(seq, (n, key.to_vec(), deadline));
        } else {
            node.commands.insert(seq, (n, deadline));
        }
        self.advance(id);
        true
    }

    /// Adds a node that is not a member yet (the next free id), up, with an empty disk; it
    /// becomes a member through [`Sim::change`].
    pub fn add_node(&mut self) -> NodeId {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        self.nodes.insert(id, Node::new(false));
        self.start(id);
        id
    }

    /// Asks node `via` for a membership change; it completes (in [`History::changes`]) when the
    /// node that asked has applied it.
    pub fn change(&mut self, via: NodeId, change: Change) -> Result<u64, ReplicaError> {
        let deadline = self.now + 10 * self.config.client_timeout_ms;
        let Some(node) = self.nodes.get_mut(&via) else { return Err(ReplicaError::NoLeader) };
        let Some(replica) = node.replica.as_mut() else { return Err(ReplicaError::NoLeader) };
        let seq = replica.propose_change(change)?;
        node.changes.insert(seq, deadline);
        self.advance(via);
        Ok(seq)
    }

    /// The members (voters and learners) the current leader has applied, or the founders.
    pub fn members(&self) -> BTreeSet<NodeId> {
        match self.leader().and_then(|l| self.replica(l)) {
            Some(leader) => leader.membership().ids(),
            None => self.voters().into_iter().collect(),
        }
    }

    /// Every node id, member or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Runs the simulation for `ms` simulated milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            let next = self.next_tick.min(end);
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > next {
                    break;
                }
                let ((at, _), (from, message, lost)) = entry.remove_entry();
                self.now = at;
                self.deliver(from, message, lost);
            }
            self.now = next;
            if self.now == self.next_tick {
                self.next_tick += self.config.timing.tick.as_millis() as u64;
                self.tick_all();
            }
        }
    }

    /// Runs until some node leads a majority, for at most `ms`; returns the leader.
    pub fn run_until_leader(&mut self, ms: u64) -> Option<NodeId> {
        let end = self.now + ms;
        while self.now < end {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            self.run_for(1);
        }
        self.leader()
    }

    /// Ends every fault (partition, losses, crashed nodes) and runs until every replica has applied
    /// everything committed, for at most `ms`.
    pub fn heal_and_settle(&mut self, ms: u64) {
        self.heal();
        self.config.faults.drop_rate = 0.0;
        for id in self.down() {
            self.restart(id);
        }
        let end = self.now + ms;
        while self.now < end {
            self.run_for(50);
            if self.settled() {
                return;
            }
        }
    }

    /// Whether every member has applied all the leader committed, no learner is still joining
    /// and no client waits.
    fn settled(&self) -> bool {
        let Some(leader) = self.leader().and_then(|id| self.replica(id)) else { return false };
        let target = leader.commit_index();
        let membership = leader.membership();
        membership.learners.is_empty()
            && !membership.is_joint()
            && membership.ids().iter().all(|id| self.replica(*id).is_some_and(|r| r.applied_index() >= target))
            && self.nodes.values().all(|n| n.waiting.is_empty() && n.commands.is_empty() && n.reads.is_empty())
    }

    /// Checks the history and, on a settled cluster, that every replica holds the same state.
    pub fn check(&self) -> Result<(), String> {
        let h = &self.history;
        if let Some(v) = h.violations.first() {
            return Err(format!("{v} ({} violations in all)", h.violations.len()));
        }
        for (id, version, data) in &h.acked {
            match h.applied.get(version) {
                Some((applied, applied_data)) if applied == id && applied_data == data => {}
                Some((applied, _)) => {
                    return Err(format!("update {id:?} was acknowledged at version {version}, which holds {applied:?}"))
                }
                None => return Err(format!("update {id:?} was acknowledged at version {version}, which no replica applied")),
            }
        }
        linearizable::check(h.kv.operations()).map_err(|e| e.to_string())?;
        let members = self.members();
        let states: BTreeSet<(u64, Vec<u8>)> = self
            .nodes
            .iter()
            .filter(|(id, _)| members.contains(id))
            .filter_map(|(_, n)| n.replica.as_ref())
            .map(|r| {
                let state = r.state();
                (state.version, state.data)
            })
            .collect();
        if !self.settled() {
            return Err(format!("the cluster did not settle: {}", self.describe()));
        }
        if states.len() != 1 {
            return Err(format!("replicas disagree after settling: {states:?}"));
        }
        let (version, data) = states.into_iter().next().expect("one state");
        let latest = h.applied.last_key_value().map(|(v, (_, d))| (*v, d.as_slice()));
        if version > 0 && latest != Some((version, data.as_slice())) {
            return Err(format!("replicas hold version {version}, the history's latest is {latest:?}"));
        }
        Ok(())
    }

    /// One line per node: role, term, commit and applied index, state version.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            match &node.replica {
                None => out.push_str(&format!("\n  node {id}: down")),
                Some(r) => out.push_str(&format!(
                    "\n  node {id}: {} term {} leader {:?} commit {} applied {} version {} waiting {}",
                    if r.is_leader() { "leader" } else { "follower" },
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    r.applied_index(),
                    r.state().version,
                    node.waiting.len(),
                )),
            }
        }
        out
    }

    fn tick_all(&mut self) {
        let now = self.now;
        for id in self.up() {
            let node = self.nodes.get_mut(&id).expect("up node");
            let replica = node.replica.as_mut().expect("up node");
            replica.tick();
            let expired: Vec<u64> = node.waiting.iter().filter(|(_, (_, d))| *d <= now).map(|(&s, _)| s).collect();
            for seq in expired {
                node.waiting.remove(&seq);
                replica.forget(seq);
                self.history.timed_out += 1;
            }
            // A client that gives up leaves its operation unanswered in the history: it may or
            // may not have taken effect.
            node.commands.retain(|&seq, (_, d)| {
                let keep = *d > now;
                if !keep {
                    replica.forget(seq);
                }
                keep
            });
            node.reads.retain(|_, (_, _, d)| *d > now);
            node.changes.retain(|_, d| *d > now);
            self.advance(id);
        }
    }

    fn deliver(&mut self, from: NodeId, message: RaftMessage, lost: bool) {
        let to = message.to;
        let receiver = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut());
        let Some(receiver) = receiver.filter(|_| !lost && self.config.faults.connected(from, to)) else {
            return self.report(from, to, message.get_msg_type(), false);
        };
        // Only a snapshot's fate is reported on success: that is all raft-rs waits for.
        let kind = message.get_msg_type();
        if let Err(e) = receiver.step(message) {
            // raft-rs rejects stale or unknown messages; that is the network's business, not a bug.
            tracing::debug!(node = to, "message refused: {e}");
        }
        self.advance(to);
        if kind == MessageType::MsgSnapshot {
            self.report(from, to, kind, true);
        }
    }

    /// Tells the sender, if it is still up, what became of its message.
    fn report(&mut self, from: NodeId, to: NodeId, kind: MessageType, delivered: bool) {
        if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.replica.as_mut()) {
            sender.report_delivery(to, kind, delivered);
            self.advance(from);
        }
    }

    fn advance(&mut self, id: NodeId) {
        let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else { return };
        match replica.advance() {
            Ok(output) => self.absorb(id, output),
            Err(e) => {
                self.violation(format!("node {id} failed to advance: {e}"));
                self.crash(id);
            }
        }
    }

    fn absorb(&mut self, id: NodeId, output: Output) {
        for applied in output.applied {
            match self.history.applied.get(&applied.version) {
                Some((seen, data)) if *seen != applied.update || *data != applied.data => {
                    let what = format!(
                        "node {id} applied {:?} at version {}, where {seen:?} was applied before",
                        applied.update, applied.version
                    );
                    self.violation(what);
                }
                Some(_) => {}
                None => {
                    self.history.applied.insert(applied.version, (applied.update, applied.data));
                }
            }
        }
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known node");
        let incarnation = node.replica.as_ref().map_or(0, |r| r.incarnation());
        for ack in output.acks {
            if let Some((data, _)) = node.waiting.remove(&ack.seq) {
                let update = UpdateId { origin: id, incarnation, seq: ack.seq };
                self.history.acked.push((update, ack.version, data));
            }
            if let Some((n, _)) = node.commands.remove(&ack.seq) {
                let is_cas = matches!(self.history.kv.operations()[n].op, KvOp::Cas { .. });
                let result = match ack.outcome {
                    Outcome::Written { .. } if is_cas => KvResult::Cas(true),
                    Outcome::Mismatch { .. } => KvResult::Cas(false),
                    Outcome::Written { .. } | Outcome::Deleted { .. } => KvResult::Done,
                };
                self.history.kv.complete(n, result, now);
            }
        }
        for read in output.reads {
            if let Some((n, key, _)) = node.reads.remove(&read) {
                let map = node.replica.as_ref().expect("a replica that advanced").map();
                self.history.kv.complete(n, KvResult::Value(map.get(&key).map(|v| v.value.clone())), now);
            }
        }
        for change in output.changes {
            if node.changes.remove(&change).is_some() {
                self.history.changes += 1;
            }
        }
        for message in output.messages {
            self.send(id, message);
        }
    }

    fn send(&mut self, from: NodeId, message: RaftMessage) {
        // A lost message is queued too, and reported to the sender when it would have arrived,
        // as a real transport's failed send would be, rather than inside the sender's own advance.
        let (delay, lost) = match self.config.faults.route(&mut self.rng, from, message.to) {
            Route::After(ms) => (ms, false),
            Route::Lost => (self.config.faults.latency_ms.0, true),
        };
        self.sent += 1;
        self.in_flight.insert((self.now + delay, self.sent), (from, message, lost));
    }

    /// Draws from the simulation's generator, so that a scenario built on it replays too.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled_sim() -> Sim {
        let mut sim = Sim::new(1, SimConfig::nodes(3));
        let leader = sim.run_until_leader(2_000).unwrap();
        for i in 0..3 {
            sim.propose(leader, vec![i]);
        }
        sim.heal_and_settle(5_000);
        sim.check().unwrap();
        sim
    }

    #[test]
    fn the_checker_catches_a_lost_or_misplaced_acknowledgement() {
        let mut sim = settled_sim();
        let (id, version, data) = sim.history.acked[0].clone();
        sim.history.acked.push((id, version + 100, data.clone()));
        assert!(sim.check().unwrap_err().contains("which no replica applied"));

        let mut sim = settled_sim();
        let other = sim.history.acked[1].0;
        sim.history.acked.push((other, version, data));
        assert!(sim.check().unwrap_err().contains("which holds"));
    }

    #[test]
    fn the_checker_catches_a_read_of_an_overwritten_value() {
        let mut sim = Sim::new(3, SimConfig::nodes(3));
        let leader = sim.run_until_leader(2_000).unwrap();
        let follower = sim.up().into_iter().find(|&id| id != leader).unwrap();
        for (i, via) in [leader, follower, leader].into_iter().enumerate() {
            sim.client(via, b"k", KvOp::Put(format!("v{i}").into_bytes()));
            sim.run_for(100);
            sim.client(follower, b"k", KvOp::Get);
            sim.run_for(100);
        }
        sim.heal_and_settle(5_000);
        sim.check().unwrap();
        assert_eq!(sim.history.kv.answered(), 6);
        // A read after everything that answers the first value: no order explains it.
        let now = sim.now();
        let n = sim.history.kv.invoke(b"k", KvOp::Get, now);
        sim.history.kv.complete(n, KvResult::Value(Some(b"v0".to_vec())), now + 1);
        let err = sim.check().unwrap_err();
        assert!(err.contains("key \"k\" is not linearizable"), "{err}");
    }

    #[test]
    fn a_node_joins_a_running_cluster_and_another_leaves() {
        let mut sim = Sim::new(5, SimConfig::nodes(3));
        let leader = sim.run_until_leader(2_000).unwrap();
        for i in 0..40 {
            sim.client(leader, b"k", KvOp::Put(format!("v{i}").into_bytes()));
        }
        sim.run_for(500);
        let new = sim.add_node();
        assert_eq!(new, 4);
        sim.change(leader, Change::Join { id: new, address: "127.0.0.4:7000".into(), replaces: None }).unwrap();
        sim.run_for(1_000);
        assert_eq!(sim.history.changes, 1, "the join completed once node 4 was a voter");
        let membership = sim.replica(leader).unwrap().membership();
        assert_eq!(membership.voters, [1, 2, 3, 4].into());
        assert_eq!(membership.address(4), Some("127.0.0.4:7000"));
        assert_eq!(sim.replica(new).unwrap().map().get(b"k").unwrap().value, b"v39", "it caught up from a snapshot");

        let err = sim.change(leader, Change::Join { id: new, address: String::new(), replaces: None }).unwrap_err();
        assert!(err.to_string().contains("node 4 is already a member"), "{err}");
        let other = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
        let err = sim.change(other, Change::Leave { id: leader }).unwrap_err();
        assert!(err.to_string().contains("not the leader"), "{err}");

        // The leader removes itself and hands over.
        sim.change(leader, Change::Leave { id: leader }).unwrap();
        sim.run_for(1_000);
        let next = sim.run_until_leader(2_000).unwrap();
        assert_ne!(next, leader);
        assert_eq!(sim.replica(next).unwrap().membership().voters.len(), 3);
        assert!(!sim.members().contains(&leader));
        sim.client(next, b"k", KvOp::Put(b"after".to_vec()));
        sim.heal_and_settle(5_000);
        sim.check().unwrap();
    }

    #[test]
    fn the_checker_catches_diverged_or_unsettled_replicas() {
        let mut sim = settled_sim();
        sim.history.applied.insert(99, (UpdateId { origin: 1, incarnation: 1, seq: 99 }, vec![]));
        assert!(sim.check().unwrap_err().contains("history's latest"));

        let mut sim = settled_sim();
        let leader = sim.leader().unwrap();
        sim.crash(leader);
        assert!(sim.check().unwrap_err().contains("did not settle"));
    }
}
