//! The state replication manager: a gated facade over the node's [`Consensus`] actor. An update is answered only once a quorum has committed it; when no quorum
//! can be had in time the answer is `ReplicaUpdateFailed`, and the update may still commit later
//! (as with any consensus system, a timeout does not mean "not applied").

use std::time::Duration;

use actix::prelude::*;
use cluster::{NodeId, State};
use security::SecurityContext;

use crate::gate::{Gate, Pending};
use crate::node::consensus::{Consensus, Inspect, Propose};
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

fn gone(e: MailboxError) -> ReplicationError {
    ReplicationError::ReplicaUpdateFailed(format!("the consensus actor is gone: {e}"))
}

/// The state replication manager's operations: an update costs 25 J by default, a read nothing.
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
        let proposal = self.consensus.send(Propose { data: msg.data, timeout: self.timeout });
        Box::pin(
            fut::wrap_future(proposal).map(|answer, _, _| answer.map_err(gone)?.map_err(ReplicationError::ReplicaUpdateFailed)),
        )
    }

    /// The state as this node has applied it.
    #[operation(requires = [StateManagement], cost = 0.0, resource = "state")]
    fn read_state(&mut self, _msg: ReadState) -> Pending<Self, State, ReplicationError> {
        Box::pin(fut::wrap_future(self.consensus.send(Inspect)).map(|view, _, _| Ok(view.map_err(gone)?.state)))
    }
}
