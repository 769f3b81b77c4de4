//! The node manager: admits nodes to the cluster, tells its peers, and lists the members
//! (the tutorial's section 1.1).
//!
//! A join is validated, announced to every peer node manager, and takes effect only when all of
//! them confirm; the joining node's principal is then granted the capabilities it asked for
//! (never more than this manager holds) in the scope it asked for (never outside
//! `node_management`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::{Context, Handler, MailboxError, Message, Recipient, ResponseActFuture};
use energy::Joules;
use security::{CapSet, Capability, Scope, SecurityContext};
use serde::Serialize;

use crate::gate::{self, Gate, Operation, Rules};
use crate::Environment;

/// The scope node managers act in.
pub const SCOPE: &str = "node_management";

/// Why a node-manager request failed (the tutorial's `JoinError`, for every node-manager
/// operation).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum JoinError {
    /// The request is malformed, or conflicts with the membership (a duplicate id).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A peer did not confirm (it refused, or did not answer in time).
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
    /// A peer's mailbox is closed: the peer has stopped.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
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
    /// The request presents or asks for capabilities that cannot be had.
    #[error("invalid capabilities: {0}")]
    InvalidCapabilities(String),
    /// The request's scope, or the scope it asks for, is outside `node_management`.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
}

crate::gate_error!(JoinError, InvalidCapabilities, InvalidScope);

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Its id, also its principal.
    pub id: String,
    /// What kind of node (`worker`, `storage`).
    pub kind: String,
    /// The energy it brings.
    pub energy_budget: Joules,
    /// What it was granted.
    pub capabilities: CapSet,
    /// Where it may act.
    pub scope: Scope,
}

/// Asks to admit a node. Requires `NodeManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<JoinResponse, JoinError>")]
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
}

/// An admitted node, and who confirmed it.
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
}

/// Removes a node. Requires `NodeManagement`; answers the removed node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Node, JoinError>")]
pub struct Leave {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The node.
    pub id: String,
}

/// Lists the members. Requires `NodeManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Node>, JoinError>")]
pub struct ListNodes {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// Makes another node manager a peer: joins and leaves are announced to it. Requires
/// `ConnectionManagement`.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), JoinError>")]
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
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, JoinError>")]
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

const NODE_MANAGEMENT: CapSet = CapSet::of(&[Capability::NodeManagement]);

impl Operation for Join {
    type Output = JoinResponse;
    type Error = JoinError;
    const NAME: &'static str = "join";
    const REQUIRES: CapSet = NODE_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.id
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), JoinError> {
        rules.id("node id", &self.id).map_err(JoinError::InvalidRequest)?;
        rules.id("node kind", &self.kind).map_err(JoinError::InvalidRequest)?;
        if self.energy_budget == Joules::ZERO {
            return Err(JoinError::InvalidRequest(format!("node {} brings no energy budget", self.id)));
        }
        let extra = self.capabilities.difference(rules.actor_grants);
        if !extra.is_empty() {
            return Err(JoinError::InvalidCapabilities(format!(
                "cannot grant {extra}: this node manager holds only {}",
                rules.actor_grants
            )));
        }
        if !rules.actor_scope.includes(&self.scope) {
            return Err(JoinError::InvalidScope(format!(
                "scope {} is outside {}; ask for {} or a scope below it",
                self.scope, rules.actor_scope, rules.actor_scope
            )));
        }
        Ok(())
    }
}

impl Operation for Leave {
    type Output = Node;
    type Error = JoinError;
    const NAME: &'static str = "leave";
    const REQUIRES: CapSet = NODE_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.id
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), JoinError> {
        rules.id("node id", &self.id).map_err(JoinError::InvalidRequest)
    }
}

impl Operation for ListNodes {
    type Output = Vec<Node>;
    type Error = JoinError;
    const NAME: &'static str = "list_nodes";
    const REQUIRES: CapSet = NODE_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "members"
    }
}

impl Operation for Connect {
    type Output = ();
    type Error = JoinError;
    const NAME: &'static str = "connect";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ConnectionManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.peer
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), JoinError> {
        rules.id("peer name", &self.peer).map_err(JoinError::InvalidRequest)
    }
}

impl Operation for Announce {
    type Output = String;
    type Error = JoinError;
    const NAME: &'static str = "announce";
    const REQUIRES: CapSet = NODE_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        match &self.change {
            MembershipChange::Joined(node) => &node.id,
            MembershipChange::Left(id) => id,
        }
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), JoinError> {
        rules.id("node id", self.resource()).map_err(JoinError::InvalidRequest)
    }
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
    peers: BTreeMap<String, Recipient<Announce>>,
    reply_timeout: Duration,
}

impl NodeManager {
    /// Operations and their default base costs: `join` is the tutorial's 10 J; the others are
    /// ergon's (the tutorial has no leave, list, connect or announce).
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] = &[
        (Join::NAME, 10.0),
        (Leave::NAME, 10.0),
        (ListNodes::NAME, 1.0),
        (Connect::NAME, 5.0),
        (Announce::NAME, 1.0),
        ("top_up", 0.0),
        ("status", 0.0),
    ];

    /// The node manager of node `node`, named `node-manager/<node>` in the audit log.
    pub fn new(env: &Environment, node: &str) -> Self {
        let config = &env.config().node_manager;
        let name = format!("node-manager/{node}");
        let gate = env.gate(&name, SCOPE, config);
        let scope = Scope::new(SCOPE).expect("constant");
        NodeManager {
            identity: SecurityContext::new(name.as_str(), config.grants, scope),
            gate,
            name: node.to_owned(),
            nodes: BTreeMap::new(),
            joining: BTreeSet::new(),
            peers: BTreeMap::new(),
            reply_timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }

    /// Announces a change to every peer; answers who confirmed, or the first reason it failed.
    /// Peers whose mailbox is closed are dropped.
    fn announce(&mut self, change: MembershipChange) -> ResponseActFuture<Self, Result<Vec<String>, JoinError>> {
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
                Err(JoinError::ChannelClosed(format!("peer {} has stopped (mailbox closed); removed from peers", closed.join(", "))))
            } else {
                Err(JoinError::BroadcastFailed(failed.join("; ")))
            }
        }))
    }
}

crate::gated_actor!(NodeManager);

impl Handler<Join> for NodeManager {
    type Result = ResponseActFuture<Self, Result<JoinResponse, JoinError>>;

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, msg| -> ResponseActFuture<Self, _> {
            if actor.nodes.contains_key(&msg.id) || actor.joining.contains(&msg.id) {
                let reason = format!("node {} is already a member of {}", msg.id, actor.name);
                return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
            }
            let node = Node {
                id: msg.id.clone(),
                kind: msg.kind,
                energy_budget: msg.energy_budget,
                capabilities: msg.capabilities,
                scope: msg.scope,
            };
            actor.joining.insert(node.id.clone());
            Box::pin(actor.announce(MembershipChange::Joined(node.clone())).map(move |confirmed, actor, _| {
                actor.joining.remove(&node.id);
                let confirmed_by = confirmed?;
                actor.gate.grant_table().grant(node.id.as_str(), node.capabilities);
                actor.nodes.insert(node.id.clone(), node.clone());
                Ok(JoinResponse { granted_capabilities: node.capabilities, scope: node.scope.clone(), node, confirmed_by })
            }))
        })
    }
}

impl Handler<Leave> for NodeManager {
    type Result = ResponseActFuture<Self, Result<Node, JoinError>>;

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |actor, msg| -> ResponseActFuture<Self, _> {
            if !actor.nodes.contains_key(&msg.id) {
                let reason = format!("node {} is not a member of {}", msg.id, actor.name);
                return Box::pin(fut::ready(Err(JoinError::InvalidRequest(reason))));
            }
            Box::pin(actor.announce(MembershipChange::Left(msg.id.clone())).map(move |confirmed, actor, _| {
                confirmed?;
                let node = actor.nodes.remove(&msg.id).expect("checked before announcing");
                actor.gate.grant_table().revoke(&node.id, node.capabilities);
                Ok(node)
            }))
        })
    }
}

impl Handler<ListNodes> for NodeManager {
    type Result = Result<Vec<Node>, JoinError>;

    fn handle(&mut self, msg: ListNodes, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, _| Ok(actor.nodes.values().cloned().collect()))
    }
}

impl Handler<Connect> for NodeManager {
    type Result = Result<(), JoinError>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, msg| {
            actor.peers.insert(msg.peer, msg.endpoint);
            Ok(())
        })
    }
}

impl Handler<Announce> for NodeManager {
    type Result = Result<String, JoinError>;

    fn handle(&mut self, msg: Announce, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, msg| {
            match msg.change {
                MembershipChange::Joined(node) => {
                    actor.nodes.insert(node.id.clone(), node);
                }
                MembershipChange::Left(id) => {
                    actor.nodes.remove(&id);
                }
            }
            Ok(actor.name.clone())
        })
    }
}

crate::common_handlers!(NodeManager, JoinError);

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
