//! The state replication manager (the tutorial's section 2.2): a gated facade over the node's
//! [`Consensus`] actor. An update is answered only once a quorum has committed it; when no quorum
//! can be had in time the answer is `ReplicaUpdateFailed`, and the update may still commit later
//! (as with any consensus system, a timeout does not mean "not applied").

use std::time::Duration;

use actix::prelude::*;
use cluster::{NodeId, State};
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};

use crate::consensus::{Consensus, Inspect, Propose};
use crate::gate::{self, Gate, Operation, Rules};
use crate::Environment;

/// The scope state replication managers act in.
pub const SCOPE: &str = "replication_management";

/// Why a replication request failed (the tutorial's `ReplicationError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum ReplicationError {
    /// No quorum committed the update in time, or no leader is known.
    #[error("replica update failed: {0}")]
    ReplicaUpdateFailed(String),
    /// The requester or this manager lacks a required capability.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The budget cannot cover the request.
    #[error("insufficient energy: needs {needed}, {available} available")]
    InsufficientEnergy {
        /// Estimated cost.
        needed: Joules,
        /// Budget available.
        available: Joules,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

crate::gate_error!(ReplicationError);

/// Replaces the replicated state's data (the tutorial's `StateUpdate`). Requires
/// `ReplicationManagement` and `StateManagement`; answers the new state once a quorum committed it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<State, ReplicationError>")]
pub struct Replicate {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The new data.
    pub data: Vec<u8>,
}

/// The replicated state as this node has applied it (it may trail the leader). Requires
/// `StateManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<State, ReplicationError>")]
pub struct ReadState {
    /// Who asks.
    pub ctx: SecurityContext,
}

impl Operation for Replicate {
    type Output = State;
    type Error = ReplicationError;
    const NAME: &'static str = "replicate";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ReplicationManagement, Capability::StateManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "state"
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), ReplicationError> {
        rules.payload("data", self.data.len()).map_err(ReplicationError::InvalidRequest)
    }
}

impl Operation for ReadState {
    type Output = State;
    type Error = ReplicationError;
    const NAME: &'static str = "read_state";
    const REQUIRES: CapSet = CapSet::of(&[Capability::StateManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "state"
    }
}

/// The state replication manager of one node.
pub struct StateReplicator {
    gate: Gate,
    consensus: Addr<Consensus>,
    timeout: Duration,
}

impl StateReplicator {
    /// Operations and their default base costs: an update is the tutorial's 25 J.
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] =
        &[(Replicate::NAME, 25.0), (ReadState::NAME, 0.0), ("top_up", 0.0), ("status", 0.0)];

    /// The manager of node `node`, named `state-replicator/<node>`.
    pub fn new(env: &Environment, node: NodeId, consensus: Addr<Consensus>) -> Self {
        let config = &env.config().state_replicator;
        StateReplicator {
            gate: env.gate(&format!("state-replicator/{node}"), SCOPE, config),
            consensus,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }
}

crate::gated_actor!(StateReplicator);

fn gone(e: MailboxError) -> ReplicationError {
    ReplicationError::ReplicaUpdateFailed(format!("the consensus actor is gone: {e}"))
}

impl Handler<Replicate> for StateReplicator {
    type Result = ResponseActFuture<Self, Result<State, ReplicationError>>;

    fn handle(&mut self, msg: Replicate, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, msg| -> ResponseActFuture<Self, _> {
            let proposal = actor.consensus.send(Propose { data: msg.data, timeout: actor.timeout });
            Box::pin(fut::wrap_future(proposal).map(|answer, _, _| {
                answer.map_err(gone)?.map_err(ReplicationError::ReplicaUpdateFailed)
            }))
        })
    }
}

impl Handler<ReadState> for StateReplicator {
    type Result = ResponseActFuture<Self, Result<State, ReplicationError>>;

    fn handle(&mut self, msg: ReadState, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, _| -> ResponseActFuture<Self, _> {
            Box::pin(fut::wrap_future(actor.consensus.send(Inspect)).map(|view, _, _| Ok(view.map_err(gone)?.state)))
        })
    }
}

crate::common_handlers!(StateReplicator, ReplicationError);
