//! The node manager: admits nodes to the cluster, tells its peers, and lists the members.
//!
//! A join is validated, announced to every peer node manager, and takes effect only when all of
//! them confirm; the joining node's principal (`node:<id>`, a namespace no actor shares) is then
//! granted the capabilities it asked for in the scope it asked for, never more than its requester
//! presents or this manager holds, never outside either's scope. The grant records the join, and
//! the answer carries the node's credential. A leave, by the requester of the join or the node
//! itself, revokes exactly that grant.
//!
//! A join that names where the node is reached ([`Join::raft`]) also makes it a member of the
//! replicated state: the node manager asks the consensus actor for the membership change (a
//! learner, then a voter once it has caught up) and answers only when it is complete; a leave of
//! such a node removes it from Raft's configuration first. The Raft log is then what the nodes
//! agree on, so peers are told afterwards without waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::{Addr, MailboxError, Recipient};
use cluster::membership::{self, MembershipError};
use cluster::NodeId;
use energy::Joules;
use security::{CapSet, Credential, Namespace, Origin, Principal, Scope, SecurityContext};
use serde::Serialize;

use crate::gate::{Gate, Pending, Rules};
use crate::node::consensus::{ChangeFailure, ChangeMembership, Consensus};
use crate::{gate_error, gated, Environment};

/// The scope node managers act in.
pub const SCOPE: &str = "node_management";

/// Why a node-manager request failed (for every node-manager operation), besides the gate's
/// refusals; `InvalidRequest` also covers a request that conflicts with the membership (a
/// duplicate or unknown id).
#[gate_error(InvalidCapabilities, InvalidScope)]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JoinError {
    /// A peer did not confirm (it refused, or did not answer in time).
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
    /// A peer's mailbox is closed: the peer has stopped.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// Membership changes are decided by the Raft leader, and this node is not it; the message
    /// names the leader and where it is reached, when known.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The node is already a member of the replicated state.
    #[error("already a member: {0}")]
    AlreadyMember(String),
    /// Another membership change is under way; one at a time.
    #[error("change in progress: {0}")]
    ChangeInProgress(String),
    /// The removal would leave a configuration without a reachable majority.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The change was proposed and did not complete in time (it may still complete).
    #[error("membership change failed: {0}")]
    MembershipChangeFailed(String),
}

impl From<ChangeFailure> for JoinError {
    fn from(failure: ChangeFailure) -> Self {
        match failure {
            ChangeFailure::Refused(e) => {
                let text = e.to_string();
                match e {
                    MembershipError::NotLeader { .. } => JoinError::NotLeader(text),
                    MembershipError::AlreadyMember(_) => JoinError::AlreadyMember(text),
                    MembershipError::InProgress { .. } => JoinError::ChangeInProgress(text),
                    MembershipError::NoQuorum { .. } => JoinError::NoQuorum(text),
                    MembershipError::NotMember(_)
                    | MembershipError::ReservedId
                    | MembershipError::AddressTooLong { .. }
                    | MembershipError::BadAddress(_) => {
                        JoinError::InvalidRequest(text)
                    }
                }
            }
            ChangeFailure::NotLeader { leader, address } => JoinError::NotLeader(match (leader, address) {
                (Some(l), Some(a)) => format!("the leader is node {l} at {a}"),
                (Some(l), None) => format!("the leader is node {l}"),
                (None, _) => "no leader is known".to_string(),
            }),
            ChangeFailure::Failed(e) => JoinError::MembershipChangeFailed(e),
        }
    }
}

/// How a node manager runs membership changes of the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipSettings {
    /// How long a join may take to make the node a voter (it must receive a snapshot and catch
    /// up), and a leave to remove it.
    pub membership_timeout_ms: u64,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        MembershipSettings { membership_timeout_ms: 30_000 }
    }
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Its id; its principal is `node:<id>`.
    pub id: String,
    /// What kind of node (`worker`, `storage`).
    pub kind: String,
    /// The energy it brings.
    pub energy_budget: Joules,
    /// What it was granted.
    pub capabilities: CapSet,
    /// Where it may act.
    pub scope: Scope,
    /// On whose authority it joined: only that principal, or the node itself, may remove it.
    pub joined_by: Principal,
}

/// Asks to admit a node. Requires `NodeManagement`.
#[derive(Debug, Clone)]
pub struct Join {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The node's id; it becomes the node's principal.
    pub id: String,
    /// What kind of node.
    pub kind: String,
    /// The energy it brings.
    pub energy_budget: Joules,
    /// Capabilities it asks for.
    pub capabilities: CapSet,
    /// Scope it asks for, within `node_management`.
    pub scope: Scope,
    /// Set when the node joins the replicated state as well: where its peers reach it, and the
    /// voter it replaces, if any. Its id must then be its node number.
    pub raft: Option<RaftMember>,
}

/// How a joining node takes part in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMember {
    /// Where its peers reach it (`host:port`).
    pub address: String,
    /// A voter to remove when it is promoted (replacing a dead node).
    pub replaces: Option<NodeId>,
}

/// An admitted node, and who confirmed it (the peer node managers, or for a member of the
/// replicated state the voters of the configuration it joined).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinResponse {
    /// The node as recorded.
    pub node: Node,
    /// Capabilities granted to its principal.
    pub granted_capabilities: CapSet,
    /// Scope granted.
    pub scope: Scope,
    /// Peers that confirmed the join.
    pub confirmed_by: Vec<String>,
    /// The node's credential: whoever holds it may act as `node:<id>`, within what was granted.
    #[serde(skip)]
    pub credential: Credential,
}

/// Removes a node. Requires `NodeManagement`; answers the removed node.
#[derive(Debug, Clone)]
pub struct Leave {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The node.
    pub id: String,
}

/// Lists the members. Requires `NodeManagement`.
#[derive(Debug, Clone)]
pub struct ListNodes {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// Makes another node manager a peer: joins and leaves are announced to it. Requires
/// `ConnectionManagement`.
#[derive(Clone)]
pub struct Connect {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The peer's name.
    pub peer: String,
    /// Where to announce.
    pub endpoint: Recipient<Announce>,
}

/// A membership change, announced by a peer. Requires `NodeManagement`; answers the id of the
/// confirming manager.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The announcing manager's context.
    pub ctx: SecurityContext,
    /// What changed.
    pub change: MembershipChange,
}

/// What changed in the membership.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipChange {
    /// A node was admitted.
    Joined(Node),
    /// A node left.
    Left(String),
}

/// The node manager of one node.
pub struct NodeManager {
    gate: Gate,
    name: String,
    /// The manager's own context, presented to its peers.
    identity: SecurityContext,
    nodes: BTreeMap<String, Node>,
    /// Joins announced but not yet confirmed, so a second join of the same id is refused.
    joining: BTreeSet<String>,
    /// Leaves announced but not yet confirmed, so a second leave of the same id is refused.
    leaving: BTreeSet<String>,
    /// The grants this manager made, by node: a leave revokes exactly what its join granted.
    granted: BTreeMap<String, Credential>,
    peers: BTreeMap<String, Recipient<Announce>>,
    reply_timeout: Duration,
    /// The node's consensus actor, when it runs the replicated state.
    consensus: Option<Addr<Consensus>>,
    membership_timeout: Duration,
}

impl NodeManager {
    /// The node manager of node `node`, named `node-manager/<node>` in the audit log.
    pub fn new(env: &Environment, node: &str) -> Self {
        let config = &env.config().node_manager;
        let name = format!("node-manager/{node}");
        let gate = env.gate::<Self>(&name, config);
        NodeManager {
            identity: gate.identity(SCOPE),
            gate,
            name: node.to_owned(),
            nodes: BTreeMap::new(),
            joining: BTreeSet::new(),
            leaving: BTreeSet::new(),
            granted: BTreeMap::new(),
            peers: BTreeMap::new(),
            reply_timeout: Duration::from_millis(config.reply_timeout_ms),
            consensus: None,
            membership_timeout: Duration::from_millis(config.settings.membership_timeout_ms),
        }
    }

    /// The same, running membership changes of the replicated state through `consensus`.
    pub fn with_consensus(mut self, consensus: Addr<Consensus>) -> Self {
        self.consensus = Some(consensus);
        self
    }

    /// Asks the consensus actor for `change` and waits for it to complete.
    fn change_membership(&self, change: membership::Change) -> Result<Pending<Self, membership::Membership, JoinError>, JoinError> {
        let Some(consensus) = self.consensus.clone() else {
            return Err(JoinError::InvalidRequest(format!("{} runs no replicated state; its members cannot change", self.name)));
        };
        let request = consensus.send(ChangeMembership { change, timeout: self.membership_timeout });
        Ok(Box::pin(fut::wrap_future(request).map(|answer, _, _| match answer {
            Ok(result) => result.map_err(JoinError::from),
            Err(e) => Err(JoinError::MembershipChangeFailed(format!("the consensus actor is not running: {e}"))),
        })))
    }

    /// Tells every peer of a change the Raft log already settled, without waiting.
    fn announce_settled(&self, change: MembershipChange) {
        for endpoint in self.peers.values() {
            endpoint.do_send(Announce { ctx: self.identity.clone(), change: change.clone() });
        }
    }

    /// The node number of `id`, for a member of the replicated state.
    fn raft_id(id: &str) -> Result<NodeId, JoinError> {
        id.parse::<NodeId>().ok().filter(|&n| n > 0).ok_or_else(|| {
            JoinError::InvalidRequest(format!("a member of the replicated state is named by its node number (1 or more), not {id:?}"))
        })
    }

    /// Removes a member, and revokes its grant if this manager made it.
    fn forget(&mut self, id: &str) -> Option<Node> {
        if let Some(credential) = self.granted.remove(id) {
            self.gate.grant_table().revoke(&credential);
        }
        self.nodes.remove(id)
    }

    /// Announces a change to every peer; answers who confirmed, or the first reason it failed.
    /// Peers whose mailbox is closed are dropped.
    fn tell_peers(&mut self, change: MembershipChange) -> Pending<Self, Vec<String>, JoinError> {
        let timeout = self.reply_timeout;
        let requests: Vec<_> = self
            .peers
            .iter()
            .map(|(peer, endpoint)| {
                let request = endpoint.send(Announce { ctx: self.identity.clone(), change: change.clone() }).timeout(timeout);
                let peer = peer.clone();
                async move { (peer, request.await) }
            })
            .collect();
        Box::pin(futures::future::join_all(requests).into_actor(self).map(move |replies, actor, _| {
            let mut confirmed = Vec::new();
            let mut closed = Vec::new();
            let mut failed = Vec::new();
            for (peer, reply) in replies {
                match reply {
                    Ok(Ok(_)) => confirmed.push(peer),
                    Err(MailboxError::Closed) => closed.push(peer),
                    Err(MailboxError::Timeout) => failed.push(format!("{peer} did not answer within {} ms", timeout.as_millis())),
                    Ok(Err(refusal)) => failed.push(format!("{peer} refused: {refusal}")),
                }
            }
            if closed.is_empty() && failed.is_empty() {
                return Ok(confirmed);
            }
            // Undo the change where it was confirmed, so the members stay in agreement.
            let undo = match &change {
                MembershipChange::Joined(node) => Some(MembershipChange::Left(node.id.clone())),
                MembershipChange::Left(_) => None,
            };
            for peer in &confirmed {
                if let (Some(undo), Some(endpoint)) = (&undo, actor.peers.get(peer)) {
                    endpoint.do_send(Announce { ctx: actor.identity.clone(), change: undo.clone() });
                }
            }
            for peer in &closed {
                actor.peers.remove(peer);
            }
            if !closed.is_empty() {
                Err(JoinError::ChannelClosed(format!(
                    "peer {} has stopped (mailbox closed); removed from peers",
                    closed.join(", ")
                )))
            } else {
                Err(JoinError::BroadcastFailed(failed.join("; ")))
            }
        }))
    }
}

/// The node manager's operations: joins and leaves are announced to every peer and take effect
/// only when all of them confirm. `join` costs 10 J and `leave` 10 J by default; listing and
/// announcements 1 J, connecting a peer 5 J.
#[gated(
    error = JoinError,
    scope = SCOPE,
    budget = 1000.0,
    grants = [NodeManagement, ConnectionManagement, BroadcastManagement, EnergyManagement],
    settings = MembershipSettings
)]
impl NodeManager {
    /// Admits a node: validated, announced to every peer, and granted what it asked for once all
    /// confirm (never more than its requester presents or this manager holds, never outside
    /// either's scope); the answer carries the node's credential.
    #[operation(requires = [NodeManagement], cost = 10.0, resource = &msg.id, validate = validate_join(msg, rules))]
    fn join(&mut self, msg: Join) -> Pending<Self, JoinResponse, JoinError> {
        // For a member of the replicated state, Raft's configuration says who is a member.
        if msg.raft.is_none() && (self.nodes.contains_key(&msg.id) || self.joining.contains(&msg.id)) {
            let reason = format!("node {} is already a member of {}", msg.id, self.name);
            return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
        }
        if self.gate.grant_table().of(&Principal::actor(&msg.id)).is_some() {
            let reason = format!("{} is the name of an actor here; a node is never named like one", msg.id);
            return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
        }
        let joined_by = msg.ctx.principal().clone();
        let node = Node {
            id: msg.id.clone(),
            kind: msg.kind,
            energy_budget: msg.energy_budget,
            capabilities: msg.capabilities,
            scope: msg.scope,
            joined_by: joined_by.clone(),
        };
        let admit = move |actor: &mut Self, node: Node, confirmed_by: Vec<String>| {
            let origin = Origin::Delegated { by: joined_by, via: actor.gate.principal().clone(), operation: format!("join {}", node.id) };
            let credential = actor.gate.grant_table().grant(Principal::node(&node.id), node.capabilities, node.scope.clone(), origin);
            actor.granted.insert(node.id.clone(), credential.clone());
            actor.nodes.insert(node.id.clone(), node.clone());
            JoinResponse { granted_capabilities: node.capabilities, scope: node.scope.clone(), node, confirmed_by, credential }
        };
        if let Some(member) = msg.raft {
            let change = match Self::raft_id(&node.id) {
                Ok(id) => membership::Change::Join { id, address: member.address, replaces: member.replaces },
                Err(e) => return Box::pin(fut::ready(Err(e))),
            };
            let changed = match self.change_membership(change) {
                Ok(changed) => changed,
                Err(e) => return Box::pin(fut::ready(Err(e))),
            };
            self.joining.insert(node.id.clone());
            return Box::pin(changed.map(move |membership, actor, _| {
                actor.joining.remove(&node.id);
                let voters = membership?.voters.iter().map(|v| format!("node {v}")).collect();
                actor.announce_settled(MembershipChange::Joined(node.clone()));
                Ok(admit(actor, node, voters))
            }));
        }
        self.joining.insert(node.id.clone());
        Box::pin(self.tell_peers(MembershipChange::Joined(node.clone())).map(move |confirmed, actor, _| {
            actor.joining.remove(&node.id);
            let confirmed_by = confirmed?;
            Ok(admit(actor, node, confirmed_by))
        }))
    }

    /// Removes a member, once every peer confirms, and revokes what its join granted. Only the
    /// principal on whose authority it joined, or the node itself, may remove it; a member of the
    /// replicated state leaves Raft's configuration instead, on the authority of any holder of
    /// `NodeManagement`.
    #[operation(requires = [NodeManagement], cost = 10.0, resource = &msg.id, validate = Ok(rules.id("node id", &msg.id)?))]
    fn leave(&mut self, msg: Leave) -> Pending<Self, Node, JoinError> {
        // A member of the replicated state (joined through any node's manager, or one of the
        // founders, whom no manager admitted) leaves Raft's configuration. Who joined it is
        // recorded only by the manager that admitted it, so the rule cannot be that one's: any
        // holder of NodeManagement (which the gate checked) may remove a member, as it must to
        // remove a dead one.
        if let (Some(_), Ok(raft_id)) = (&self.consensus, Self::raft_id(&msg.id)) {
            let node = match self.nodes.get(&msg.id) {
                Some(node) => node.clone(),
                None => Node {
                    id: msg.id.clone(),
                    kind: "founder".into(),
                    energy_budget: Joules::ZERO,
                    capabilities: CapSet::EMPTY,
                    scope: Scope::new(SCOPE).expect("the node manager's scope is a constant"),
                    joined_by: Principal::node(&msg.id),
                },
            };
            if !self.leaving.insert(msg.id.clone()) {
                let reason = format!("node {} is already leaving {}", msg.id, self.name);
                return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
            }
            let changed = match self.change_membership(membership::Change::Leave { id: raft_id }) {
                Ok(changed) => changed,
                Err(e) => {
                    self.leaving.remove(&msg.id);
                    return Box::pin(fut::ready(Err(e)));
                }
            };
            return Box::pin(changed.map(move |changed, actor, _| {
                actor.leaving.remove(&msg.id);
                changed?;
                actor.forget(&msg.id);
                actor.announce_settled(MembershipChange::Left(msg.id.clone()));
                Ok(node)
            }));
        }
        let Some(node) = self.nodes.get(&msg.id) else {
            let reason = format!("node {} is not a member of {}", msg.id, self.name);
            return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
        };
        let who = msg.ctx.principal();
        if *who != node.joined_by && *who != Principal::node(&node.id) {
            let reason = format!("node {} joined on the authority of {}; {who} may not remove it", node.id, node.joined_by);
            return Box::pin(fut::ready(Err(JoinError::PermissionDenied(reason))));
        }
        if !self.leaving.insert(msg.id.clone()) {
            let reason = format!("node {} is already leaving {}", msg.id, self.name);
            return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
        }
        Box::pin(self.tell_peers(MembershipChange::Left(msg.id.clone())).map(move |confirmed, actor, _| {
            actor.leaving.remove(&msg.id);
            confirmed?;
            let node = actor.forget(&msg.id).ok_or_else(|| JoinError::InvalidRequest(format!("node {} left meanwhile", msg.id)))?;
            Ok(node)
        }))
    }

    /// The members.
    #[operation(requires = [NodeManagement], cost = 1.0, resource = "members")]
    fn list_nodes(&mut self, _msg: ListNodes) -> Result<Vec<Node>, JoinError> {
        Ok(self.nodes.values().cloned().collect())
    }

    /// Makes another node manager a peer.
    #[operation(requires = [ConnectionManagement], cost = 5.0, resource = &msg.peer, validate = Ok(rules.id("peer name", &msg.peer)?))]
    fn connect(&mut self, msg: Connect) -> Result<(), JoinError> {
        self.peers.insert(msg.peer, msg.endpoint);
        Ok(())
    }

    /// Applies a peer's membership change; answers this manager's node.
    #[operation(requires = [NodeManagement], cost = 1.0, resource = msg.change.node_id(), validate = Ok(rules.id("node id", msg.change.node_id())?))]
    fn announce(&mut self, msg: Announce) -> Result<String, JoinError> {
        match msg.change {
            MembershipChange::Joined(node) => {
                self.nodes.insert(node.id.clone(), node);
            }
            MembershipChange::Left(id) => {
                self.forget(&id);
            }
        }
        Ok(self.name.clone())
    }
}

/// A join delegates nothing its requester does not hold itself, nothing this manager cannot
/// give, and no scope wider than either's.
fn validate_join(msg: &Join, rules: &Rules<'_>) -> Result<(), JoinError> {
    rules.id("node id", &msg.id)?;
    rules.id("node kind", &msg.kind)?;
    // A node granted NodeManagement so that it can join (`ergon node --join`) joins itself only.
    let requester = msg.ctx.principal();
    if requester.namespace() == Namespace::Node && requester.name() != msg.id {
        return Err(JoinError::PermissionDenied(format!("{requester} may ask to join only itself, not node {}", msg.id)));
    }
    if msg.energy_budget == Joules::ZERO {
        return Err(JoinError::InvalidRequest(format!("node {} brings no energy budget", msg.id)));
    }
    let (requester, presented) = (msg.ctx.principal(), msg.ctx.capabilities());
    let beyond_requester = msg.capabilities.difference(presented);
    if !beyond_requester.is_empty() {
        return Err(JoinError::InvalidCapabilities(format!(
            "cannot grant {beyond_requester}: {requester} presents only {presented}, and a join delegates at most that"
        )));
    }
    let extra = msg.capabilities.difference(rules.actor_grants);
    if !extra.is_empty() {
        return Err(JoinError::InvalidCapabilities(format!(
            "cannot grant {extra}: this node manager holds only {}",
            rules.actor_grants
        )));
    }
    if !rules.actor_scope.includes(&msg.scope) {
        return Err(JoinError::InvalidScope(format!(
            "scope {} is outside {}; ask for {} or a scope below it",
            msg.scope, rules.actor_scope, rules.actor_scope
        )));
    }
    if !msg.ctx.scope().includes(&msg.scope) {
        return Err(JoinError::InvalidScope(format!(
            "scope {} is outside {requester}'s own {}, and a join delegates at most that",
            msg.scope,
            msg.ctx.scope()
        )));
    }
    Ok(())
}

impl MembershipChange {
    /// The node that joined or left.
    pub fn node_id(&self) -> &str {
        match self {
            MembershipChange::Joined(node) => &node.id,
            MembershipChange::Left(id) => id,
        }
    }
}

/// Makes every node manager a peer of every other, on behalf of `ctx` (which needs
/// `ConnectionManagement`).
pub async fn connect_all(ctx: &SecurityContext, managers: &[(String, actix::Addr<NodeManager>)]) -> Result<(), JoinError> {
    for (name, addr) in managers {
        for (peer, peer_addr) in managers.iter().filter(|(p, _)| p != name) {
            let request = Connect { ctx: ctx.clone(), peer: peer.clone(), endpoint: peer_addr.clone().recipient() };
            addr.send(request).await.map_err(|e| JoinError::ChannelClosed(format!("{name}: {e}")))??;
        }
    }
    Ok(())
}
