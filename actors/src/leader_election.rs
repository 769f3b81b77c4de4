//! The leader election manager (the tutorial's section 2.1): a gated facade over the node's
//! [`Consensus`] actor. Raft elects leaders by itself when a leader goes quiet; `Elect` is the
//! operator's lever to make a chosen node stand now, and it is charged like any campaign.

use std::time::Duration;

use actix::prelude::*;
use cluster::NodeId;
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};

use crate::consensus::{Campaign, CampaignFailure, Consensus, Inspect, Leadership};
use crate::gate::{self, Gate, Operation, Rules};
use crate::Environment;

/// The scope leader election managers act in.
pub const SCOPE: &str = "election_management";

/// Why an election request failed (the tutorial's `ElectionError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum ElectionError {
    /// The election ended without this node winning, or did not end in time.
    #[error("election failed: {0}")]
    ElectionFailed(String),
    /// The vote requests could not reach enough peers to win.
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
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

crate::gate_error!(ElectionError);

/// Makes `candidate` stand for election now. Sent to the candidate's own manager. Requires
/// `ElectionManagement` and `VoteManagement`; answers the leadership it won.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Leadership, ElectionError>")]
pub struct Elect {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The node that should lead: this manager's own node.
    pub candidate: NodeId,
}

/// Who leads, as this node knows it. Requires `ElectionManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Leadership>, ElectionError>")]
pub struct CurrentLeader {
    /// Who asks.
    pub ctx: SecurityContext,
}

impl Operation for Elect {
    type Output = Leadership;
    type Error = ElectionError;
    const NAME: &'static str = "election";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ElectionManagement, Capability::VoteManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "leadership"
    }

    fn validate(&self, _: &Rules<'_>) -> Result<(), ElectionError> {
        if self.candidate == 0 {
            return Err(ElectionError::InvalidRequest("candidate 0 is not a node id".into()));
        }
        Ok(())
    }
}

impl Operation for CurrentLeader {
    type Output = Option<Leadership>;
    type Error = ElectionError;
    const NAME: &'static str = "leader";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ElectionManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "leadership"
    }
}

/// The leader election manager of one node.
pub struct LeaderElection {
    gate: Gate,
    node: NodeId,
    consensus: Addr<Consensus>,
    timeout: Duration,
}

impl LeaderElection {
    /// Operations and their default base costs: a campaign is the tutorial's 20 J.
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] =
        &[(Elect::NAME, 20.0), (CurrentLeader::NAME, 0.0), ("top_up", 0.0), ("status", 0.0)];

    /// The manager of node `node`, named `leader-election/<node>`.
    pub fn new(env: &Environment, node: NodeId, consensus: Addr<Consensus>) -> Self {
        let config = &env.config().leader_election;
        LeaderElection {
            gate: env.gate(&format!("leader-election/{node}"), SCOPE, config),
            node,
            consensus,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }
}

crate::gated_actor!(LeaderElection);

impl Handler<Elect> for LeaderElection {
    type Result = ResponseActFuture<Self, Result<Leadership, ElectionError>>;

    fn handle(&mut self, msg: Elect, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, msg| -> ResponseActFuture<Self, _> {
            if msg.candidate != actor.node {
                let reason = format!(
                    "this is node {}'s election manager; send Elect to node {}'s own",
                    actor.node, msg.candidate
                );
                return Box::pin(fut::ready(Err(ElectionError::InvalidRequest(reason))));
            }
            let campaign = actor.consensus.send(Campaign { timeout: actor.timeout });
            Box::pin(fut::wrap_future(campaign).map(|answer, _, _| match answer {
                Ok(Ok(leadership)) => Ok(leadership),
                Ok(Err(CampaignFailure::Unsent(reason))) => Err(ElectionError::BroadcastFailed(reason)),
                Ok(Err(CampaignFailure::Lost(reason))) => Err(ElectionError::ElectionFailed(reason)),
                Err(e) => Err(ElectionError::ElectionFailed(format!("the consensus actor is gone: {e}"))),
            }))
        })
    }
}

impl Handler<CurrentLeader> for LeaderElection {
    type Result = ResponseActFuture<Self, Result<Option<Leadership>, ElectionError>>;

    fn handle(&mut self, msg: CurrentLeader, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, _| -> ResponseActFuture<Self, _> {
            Box::pin(fut::wrap_future(actor.consensus.send(Inspect)).map(|view, _, _| match view {
                Ok(view) => Ok(view.leader.map(|leader| Leadership { leader, term: view.term })),
                Err(e) => Err(ElectionError::ElectionFailed(format!("the consensus actor is gone: {e}"))),
            }))
        })
    }
}

crate::common_handlers!(LeaderElection, ElectionError);
