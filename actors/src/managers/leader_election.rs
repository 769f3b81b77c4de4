//! The leader election manager: a gated facade over the node's [`Consensus`] actor. Raft elects
//! leaders by itself when a leader goes quiet; [`Election`] is the operator's lever to make a
//! chosen node stand now, and it is charged like any campaign.

use std::time::Duration;

use actix::prelude::*;
use cluster::NodeId;
use security::SecurityContext;

use crate::gate::{Gate, Pending};
use crate::node::consensus::{Campaign, CampaignFailure, Consensus, Inspect, Leadership, NodeView};
use crate::{gate_error, gated, Environment};

/// The scope leader election managers act in.
pub const SCOPE: &str = "election_management";

/// Why an election request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ElectionError {
    /// The election ended without this node winning, or did not end in time.
    #[error("election failed: {0}")]
    ElectionFailed(String),
    /// The vote requests could not reach enough peers to win.
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
}

/// Makes `candidate` stand for election now. Sent to the candidate's own manager. Requires
/// `ElectionManagement` and `VoteManagement`; answers the leadership it won.
#[derive(Debug, Clone)]
pub struct Election {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The node that should lead: this manager's own node.
    pub candidate: NodeId,
}

/// Who leads, as this node knows it. Requires `ElectionManagement`.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// This node's view of Raft: its term, the leader it knows, its commit and applied index, and the
/// voters. Requires `ElectionManagement`.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// The leader election manager of one node.
pub struct LeaderElection {
    gate: Gate,
    node: NodeId,
    consensus: Addr<Consensus>,
    timeout: Duration,
}

impl LeaderElection {
    /// The manager of node `node`, named `leader-election/<node>`.
    pub fn new(env: &Environment, node: NodeId, consensus: Addr<Consensus>) -> Self {
        let config = &env.config().leader_election;
        LeaderElection {
            gate: env.gate::<Self>(&format!("leader-election/{node}"), config),
            node,
            consensus,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }
}

/// The leader election manager's operations: a campaign costs 20 J by default, asking who leads
/// nothing.
#[gated(
    error = ElectionError,
    scope = SCOPE,
    budget = 3000.0,
    grants = [ElectionManagement, VoteManagement, BroadcastManagement, EnergyManagement],
    reply_timeout_ms = 2000
)]
impl LeaderElection {
    /// Makes this manager's node campaign now; answers the leadership it won.
    #[operation(
        requires = [ElectionManagement, VoteManagement],
        cost = 20.0,
        resource = "leadership",
        validate = if msg.candidate == 0 { Err(ElectionError::InvalidRequest("candidate 0 is not a node id".into())) } else { Ok(()) }
    )]
    fn election(&mut self, msg: Election) -> Pending<Self, Leadership, ElectionError> {
        if msg.candidate != self.node {
            let reason = format!("this is node {}'s election manager; send Election to node {}'s own", self.node, msg.candidate);
            return Box::pin(fut::ready(Err(ElectionError::InvalidRequest(reason))));
        }
        let campaign = self.consensus.send(Campaign { timeout: self.timeout });
        Box::pin(fut::wrap_future(campaign).map(|answer, _, _| match answer {
            Ok(Ok(leadership)) => Ok(leadership),
            Ok(Err(CampaignFailure::Unsent(reason))) => Err(ElectionError::BroadcastFailed(reason)),
            Ok(Err(CampaignFailure::Lost(reason))) => Err(ElectionError::ElectionFailed(reason)),
            Err(e) => Err(ElectionError::ElectionFailed(format!("the consensus actor is gone: {e}"))),
        }))
    }

    /// Term, leader, commit and applied index, and voters, as this node knows them.
    #[operation(requires = [ElectionManagement], cost = 0.0, resource = "raft")]
    fn raft_status(&mut self, _msg: RaftStatus) -> Pending<Self, NodeView, ElectionError> {
        Box::pin(fut::wrap_future(self.consensus.send(Inspect)).map(|view, _, _| {
            view.map_err(|e| ElectionError::ElectionFailed(format!("the consensus actor is gone: {e}")))
        }))
    }

    /// Who leads, as this node knows it.
    #[operation(requires = [ElectionManagement], cost = 0.0, resource = "leadership")]
    fn leader(&mut self, _msg: Leader) -> Pending<Self, Option<Leadership>, ElectionError> {
        Box::pin(fut::wrap_future(self.consensus.send(Inspect)).map(|view, _, _| match view {
            Ok(view) => Ok(view.leader.map(|leader| Leadership { leader, term: view.term })),
            Err(e) => Err(ElectionError::ElectionFailed(format!("the consensus actor is gone: {e}"))),
        }))
    }
}
