//! The state replication manager: a gated facade over the node's [`Consensus`] actor and its
//! replicated map of keys. A write is answered only once a quorum has committed it; when no
//! quorum can be had in time the answer is `ReplicaUpdateFailed`, and the write may still commit
//! later (as with any consensus system, a timeout does not mean "not applied").
//!
//! The tutorial's single register (`Replicate`, `ReadState`) is the map's key named after the
//! state's id. `Put`, `Get`, `Delete` and `CompareAndSet` reach every other key. A `Get` is
//! linearizable unless it asks for [`Consistency::Stale`], and its answer says which it was.

use std::time::Duration;

use actix::prelude::*;
use cluster::{Command, Expected, NodeId, Outcome, State, Versioned};
use security::SecurityContext;

use crate::gate::{Gate, Invalid, Pending, Rules};
pub use crate::node::consensus::Consistency;
use crate::node::consensus::{Change, Committed, Consensus, Inspect, Propose, ReadKey};
use crate::{gate_error, gated, Environment};

/// The scope state replication managers act in.
pub const SCOPE: &str = "replication_management";

/// Why a replication request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicationError {
    /// No quorum committed the update in time, or no leader is known.
    #[error("replica update failed: {0}")]
    ReplicaUpdateFailed(String),
}

/// Replaces the replicated state's data . Requires
/// `ReplicationManagement` and `StateManagement`; answers the new state once a quorum committed it.
#[derive(Debug, Clone)]
pub struct Replicate {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The new data.
    pub data: Vec<u8>,
}

/// The replicated state as this node has applied it (it may trail the leader). Requires
/// `StateManagement`.
#[derive(Debug, Clone)]
pub struct ReadState {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// Sets `key` to `value`. Requires `ReplicationManagement`; answers once a quorum committed it.
#[derive(Debug, Clone)]
pub struct Put {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The key (at most `limits.max_key_bytes`).
    pub key: Vec<u8>,
    /// The value (at most `limits.max_payload_bytes`).
    pub value: Vec<u8>,
}

/// Removes `key`. Requires `ReplicationManagement`.
#[derive(Debug, Clone)]
pub struct Delete {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The key.
    pub key: Vec<u8>,
}

/// Sets `key` to `value` if it holds what is `expected` (absent, a revision, a value).
/// Requires `ReplicationManagement`; a mismatch is an answer ([`Outcome::Mismatch`], with what
/// the key held), agreed on by the cluster like any write.
#[derive(Debug, Clone)]
pub struct CompareAndSet {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The key.
    pub key: Vec<u8>,
    /// What it must hold.
    pub expected: Expected,
    /// Its new value.
    pub value: Vec<u8>,
}

/// Reads `key`, linearizably unless asked otherwise. Requires `StateManagement`.
#[derive(Debug, Clone)]
pub struct Get {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The key.
    pub key: Vec<u8>,
    /// How fresh the answer must be.
    pub consistency: Consistency,
}

/// A read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// What the key holds, and the revision that wrote it.
    pub value: Option<Versioned>,
    /// The map's revision this was read at.
    pub revision: u64,
    /// How fresh it is: the level it was served at.
    pub level: Consistency,
    /// Log entries this node knew committed but had not applied when it answered.
    pub behind: u64,
}

/// The state replication manager of one node.
pub struct StateReplicator {
    gate: Gate,
    consensus: Addr<Consensus>,
    timeout: Duration,
}

impl StateReplicator {
    /// The manager of node `node`, named `state-replicator/<node>`.
    pub fn new(env: &Environment, node: NodeId, consensus: Addr<Consensus>) -> Self {
        let config = &env.config().state_replicator;
        StateReplicator {
            gate: env.gate::<Self>(&format!("state-replicator/{node}"), config),
            consensus,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }
}

/// A key and a value that may be written: the key within `limits.max_key_bytes`, the value within
/// `limits.max_payload_bytes`.
fn writable(rules: &Rules<'_>, key: &[u8], value: &[u8]) -> Result<(), Invalid> {
    rules.key(key)?;
    rules.payload("value", value.len())
}

/// A key as the audit log names it: itself where it is text.
fn key_name(key: &[u8]) -> &str {
    std::str::from_utf8(key).unwrap_or("(a key that is not UTF-8)")
}

fn gone(e: MailboxError) -> ReplicationError {
    ReplicationError::ReplicaUpdateFailed(format!("the consensus actor is gone: {e}"))
}

/// The state replication manager's operations: a write costs 25 J by default, a read of a key 1 J, of the register nothing.
#[gated(
    error = ReplicationError,
    scope = SCOPE,
    budget = 4000.0,
    grants = [ReplicationManagement, StateManagement, ReplicaManagement, EnergyManagement]
)]
impl StateReplicator {
    /// Replaces the state's data; answers the new state once a quorum has committed it.
    #[operation(
        requires = [ReplicationManagement, StateManagement],
        cost = 25.0,
        resource = "state",
        validate = Ok(rules.payload("data", msg.data.len())?)
    )]
    fn replicate(&mut self, msg: Replicate) -> Pending<Self, State, ReplicationError> {
        Box::pin(self.propose(Change::Register(msg.data)).map(|committed, _, _| committed.map(|c| c.state)))
    }

    /// The state as this node has applied it.
    #[operation(requires = [StateManagement], cost = 0.0, resource = "state")]
    fn read_state(&mut self, _msg: ReadState) -> Pending<Self, State, ReplicationError> {
        Box::pin(fut::wrap_future(self.consensus.send(Inspect)).map(|view, _, _| Ok(view.map_err(gone)?.state)))
    }

    /// Sets a key; answers its revision once a quorum has committed it.
    #[operation(
        requires = [ReplicationManagement],
        cost = 25.0,
        resource = key_name(&msg.key),
        validate = Ok(writable(rules, &msg.key, &msg.value)?)
    )]
    fn put(&mut self, msg: Put) -> Pending<Self, Outcome, ReplicationError> {
        self.command(Command::Put { key: msg.key, value: msg.value })
    }

    /// Removes a key.
    #[operation(requires = [ReplicationManagement], cost = 25.0, resource = key_name(&msg.key), validate = Ok(rules.key(&msg.key)?))]
    fn delete(&mut self, msg: Delete) -> Pending<Self, Outcome, ReplicationError> {
        self.command(Command::Delete { key: msg.key })
    }

    /// Sets a key if it holds what is expected.
    #[operation(
        requires = [ReplicationManagement],
        cost = 25.0,
        resource = key_name(&msg.key),
        validate = {
            if let Expected::Value(v) = &msg.expected {
                rules.payload("expected value", v.len())?;
            }
            Ok(writable(rules, &msg.key, &msg.value)?)
        }
    )]
    fn compare_and_set(&mut self, msg: CompareAndSet) -> Pending<Self, Outcome, ReplicationError> {
        self.command(Command::CompareAndSet { key: msg.key, expected: msg.expected, value: msg.value })
    }

    /// Reads a key: linearizable (the leader confirms its commit index with a quorum first) or
    /// stale (this node's applied map, at once).
    #[operation(requires = [StateManagement], cost = 1.0, resource = key_name(&msg.key), validate = Ok(rules.key(&msg.key)?))]
    fn get(&mut self, msg: Get) -> Pending<Self, Read, ReplicationError> {
        let read = ReadKey { key: msg.key, consistency: msg.consistency, timeout: self.timeout };
        Box::pin(fut::wrap_future(self.consensus.send(read)).map(|view, _, _| {
            let view = view.map_err(gone)?.map_err(ReplicationError::ReplicaUpdateFailed)?;
            let behind = view.commit_index.saturating_sub(view.applied_index);
            Ok(Read { value: view.value, revision: view.revision, level: view.consistency, behind })
        }))
    }
}

impl StateReplicator {
    /// Proposes `change` and waits for its commit.
    fn propose(&self, change: Change) -> impl ActorFuture<Self, Output = Result<Committed, ReplicationError>> {
        let proposal = self.consensus.send(Propose { change, timeout: self.timeout });
        fut::wrap_future(proposal).map(|answer, _, _| answer.map_err(gone)?.map_err(ReplicationError::ReplicaUpdateFailed))
    }

    fn command(&self, command: Command) -> Pending<Self, Outcome, ReplicationError> {
        Box::pin(self.propose(Change::Command(command)).map(|committed, _, _| committed.map(|c| c.outcome)))
    }
}
