//! Serving remote callers: each connection acts for the principal it proved in its handshake,
//! with what this node grants that principal, and every call passes the gate of the manager it
//! names like any local request (capabilities, energy, validation, audit).
//!
//! Authentication happens once per connection; the gate's check of each call stays a bitset
//! test against the connection's grant. A principal with a valid certificate that this node has
//! granted nothing is still served: its calls are refused by the gates, and audited, with its
//! name.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use actors::gate::{GateError, Status};
use actors::managers::communication::Broadcast;
use actors::energy::Joules;
use actors::managers::leader_election::{Leader, RaftStatus};
use actors::managers::node_manager::{Join, Leave, ListNodes, RaftMember};
use actors::managers::state_replicator::{CompareAndSet, Delete, Get, Put, ReadState, Replicate};
use actors::managers::{
    communication, failure_detector, leader_election, load_distributor, node_manager, recovery_manager, resource_scaler,
    state_replicator, worker_pool,
};
use actors::node::assembly::ClusterNode;
use actors::security::token::TokenKey;
use actors::security::{CapSet, Credential, GrantTable, Origin, Principal, Scope, SecurityContext};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};

use crate::calls::{Answer, Call, Failure, Manager, RaftView, Request, Response};
use crate::tcp::connection::write_batches;
use crate::tcp::{Authority, Caller, Callers, ClientProof};

/// How many calls of one connection run at once; more wait until one is answered.
const MAX_IN_FLIGHT: usize = 128;

/// A node's managers, served to remote callers.
pub struct Service {
    actors: ClusterNode,
    grants: Arc<GrantTable>,
    callers: Vec<Credential>,
    tokens: Option<Tokens>,
}

/// How a node checks capability tokens.
pub struct Tokens {
    /// The cluster's token key.
    pub key: TokenKey,
    /// Revocation ids (hex) of tokens no longer accepted.
    pub revoked: Vec<String>,
}

/// The scopes a caller may act in: the managers'.
const SCOPES: [&str; 9] = [
    node_manager::SCOPE,
    communication::SCOPE,
    leader_election::SCOPE,
    state_replicator::SCOPE,
    failure_detector::SCOPE,
    recovery_manager::SCOPE,
    load_distributor::SCOPE,
    resource_scaler::SCOPE,
    worker_pool::SCOPE,
];

impl Service {
    /// Serves `actors`. A caller proven by its certificate acts with its credential among
    /// `callers` (the configured grants), or with nothing, granted in `grants`; one with a token
    /// acts with what the token allows, if `tokens` says how to check them.
    pub fn new(actors: ClusterNode, grants: Arc<GrantTable>, callers: Vec<Credential>, tokens: Option<Tokens>) -> Self {
        Service { actors, grants, callers, tokens }
    }
}

impl Callers for Service {
    fn authenticate(&self, proof: &ClientProof) -> Result<Authority, String> {
        match proof {
            ClientProof::Certificate(principal) => Ok(Authority::new(self.credential(principal), Vec::new())),
            ClientProof::Token(token) => {
                let tokens = self.tokens.as_ref().ok_or("this node accepts no tokens ([node] tokens is not configured); present a certificate")?;
                let scopes: Vec<Scope> = SCOPES.iter().map(|s| Scope::new(s).expect("managers' scopes are constants")).collect();
                let verified = tokens.key.verify(token, &scopes, &tokens.revoked).map_err(|e| e.to_string())?;
                let origin = || Origin::Token { id: verified.id.clone() };
                let mut grants = verified
                    .grants
                    .iter()
                    .map(|(scope, caps)| self.grants.grant_unlisted(verified.principal.clone(), *caps, scope.clone(), origin()));
                // A token that allows nothing here still names its principal for the audit log.
                let first = grants.next().unwrap_or_else(|| self.grants.grant_unlisted(verified.principal.clone(), CapSet::EMPTY, Scope::root(), origin()));
                Ok(Authority::new(first, grants.collect()))
            }
        }
    }

    fn serve(&self, caller: Caller, authority: Authority) -> BoxFuture<'static, ()> {
        let actors = self.actors.clone();
        Box::pin(serve(actors, caller, authority))
    }
}

impl Service {
    /// The grant of `principal` on this node, or an empty one for the connection (not listed, so
    /// strangers do not grow the table), so that its calls reach the gates and are refused and
    /// audited there.
    fn credential(&self, principal: &Principal) -> Credential {
        match self.callers.iter().find(|c| c.principal() == principal) {
            Some(configured) => configured.clone(),
            None => self.grants.grant_unlisted(principal.clone(), CapSet::EMPTY, Scope::root(), Origin::Configured),
        }
    }
}

async fn serve(actors: ClusterNode, caller: Caller, authority: Authority) {
    let Caller { frames, address, .. } = caller;
    let remote: Arc<str> = Arc::from(address.to_string());
    let principal = authority.principal().clone();
    tracing::info!(%address, %principal, "caller connected");
    let (mut sink, mut stream) = frames.split();
    let (answers, mut answered) = mpsc::channel::<Bytes>(MAX_IN_FLIGHT);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let write = write_batches(&mut sink, &mut answered, |frame| frame, |_| {});
    let read = async {
        while let Some(frame) = stream.next().await {
            let request = match frame.map_err(|e| e.to_string()).and_then(|f| Request::decode(&f).map_err(|e| e.to_string())) {
                Ok(request) => request,
                Err(reason) => return Err(reason),
            };
            let permit = in_flight.clone().acquire_owned().await.expect("never closed");
            let (actors, authority, answers, remote) = (actors.clone(), authority.clone(), answers.clone(), remote.clone());
            tokio::spawn(async move {
                let result = dispatch(&actors, &authority, &remote, request.call).await;
                let frame = Response { id: request.id, result }.encode().unwrap_or_else(|e| {
                    let failure = Failure::new("Internal", format!("the answer could not be encoded: {e}"));
                    Response { id: request.id, result: Err(failure) }.encode().expect("a failure encodes")
                });
                let _ = answers.send(Bytes::from(frame)).await;
                drop(permit);
            });
        }
        Ok(())
    };
    tokio::select! {
        written = write => if let Err(e) = written { tracing::info!(%address, %principal, "caller connection closed: {e}") },
        read = read => match read {
            Ok(()) => tracing::info!(%address, %principal, "caller disconnected"),
            Err(reason) => tracing::warn!(%address, %principal, "caller connection closed: {reason}"),
        },
    }
}

/// A context of `authority` for a manager in `scope`, from `remote`.
fn context_of(authority: &Authority, remote: &str, scope: &str) -> SecurityContext {
    authority.context(&Scope::new(scope).expect("managers' scopes are constants")).from_remote(remote)
}

/// Sends a gated request and turns its outcome into the wire's.
async fn ask<A, M, T, E>(actor: &Addr<A>, msg: M) -> Result<T, Failure>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: GateError + Send,
{
    match actor.send(msg).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(Failure::new(e.code(), e.to_string())),
        Err(e) => Err(Failure::new("Unavailable", format!("the manager is not running: {e}"))),
    }
}

async fn dispatch(actors: &ClusterNode, authority: &Authority, remote: &str, call: Call) -> Result<Answer, Failure> {
    let context = |scope| context_of(authority, remote, scope);
    match call {
        Call::Replicate { data } => {
            ask(&actors.replicator, Replicate { ctx: context(state_replicator::SCOPE), data }).await.map(Answer::from)
        }
        Call::ReadState => ask(&actors.replicator, ReadState { ctx: context(state_replicator::SCOPE) }).await.map(Answer::from),
        Call::Leader => ask(&actors.election, Leader { ctx: context(leader_election::SCOPE) })
            .await
            .map(|l| Answer::Leader(l.map(|l| (l.leader, l.term)))),
        Call::Broadcast { channel, content } => {
            let msg = Broadcast { ctx: context(communication::SCOPE), channel, content };
            ask(&actors.communication, msg).await.map(|r| Answer::Receipt { seq: r.seq, delivered: r.delivered })
        }
        Call::Join { id, kind, energy_budget_j, capabilities, scope, raft } => {
            let invalid = |e: String| Failure::new("InvalidRequest", e);
            let energy_budget = Joules::new(energy_budget_j).map_err(|e| invalid(format!("energy_budget_j: {e}")))?;
            let scope = Scope::new(&scope).map_err(|e| invalid(format!("scope: {e}")))?;
            let raft = raft.map(|r| RaftMember { address: r.address, replaces: r.replaces });
            let msg = Join { ctx: context(node_manager::SCOPE), id, kind, energy_budget, capabilities, scope, raft };
            let joined = ask(&actors.nodes, msg).await?;
            Ok(Answer::Joined { node: joined.node.into(), confirmed_by: joined.confirmed_by })
        }
        Call::Leave { id } => ask(&actors.nodes, Leave { ctx: context(node_manager::SCOPE), id }).await.map(|n| Answer::Node(n.into())),
        Call::ListNodes => ask(&actors.nodes, ListNodes { ctx: context(node_manager::SCOPE) })
            .await
            .map(|nodes| Answer::Nodes(nodes.into_iter().map(Into::into).collect())),
        Call::RaftStatus => ask(&actors.election, RaftStatus { ctx: context(leader_election::SCOPE) }).await.map(|v| {
            Answer::Raft(RaftView {
                id: v.id,
                term: v.term,
                leader: v.leader,
                commit_index: v.commit_index,
                applied_index: v.applied_index,
                voters: v.voters,
                outgoing: v.outgoing,
                learners: v.learners,
                addresses: v.addresses.into_iter().collect(),
            })
        }),
        Call::Put { key, value } => {
            ask(&actors.replicator, Put { ctx: context(state_replicator::SCOPE), key, value }).await.map(Answer::from)
        }
        Call::Get { key, consistency } => {
            ask(&actors.replicator, Get { ctx: context(state_replicator::SCOPE), key, consistency }).await.map(Answer::from)
        }
        Call::Delete { key } => ask(&actors.replicator, Delete { ctx: context(state_replicator::SCOPE), key }).await.map(Answer::from),
        Call::CompareAndSet { key, expected, value } => {
            let msg = CompareAndSet { ctx: context(state_replicator::SCOPE), key, expected: expected.into(), value };
            ask(&actors.replicator, msg).await.map(Answer::from)
        }
        Call::Status { manager } => {
            macro_rules! status {
                ($addr:expr, $module:ident, $error:ident) => {
                    ask(&$addr, Status::<$module::$error>::new(context($module::SCOPE))).await
                };
            }
            let status = match manager {
                Manager::NodeManager => status!(actors.nodes, node_manager, JoinError),
                Manager::CommunicationManager => status!(actors.communication, communication, CommunicationError),
                Manager::LeaderElection => status!(actors.election, leader_election, ElectionError),
                Manager::StateReplicator => status!(actors.replicator, state_replicator, ReplicationError),
                Manager::FailureDetector => status!(actors.detector, failure_detector, DetectionError),
                Manager::RecoveryManager => status!(actors.recovery, recovery_manager, RecoveryError),
                Manager::LoadDistributor => status!(actors.distributor, load_distributor, DistributionError),
                Manager::ResourceScaler => status!(actors.scaler, resource_scaler, ScalingError),
                Manager::WorkerPool => status!(actors.pool, worker_pool, PoolError),
            };
            status.map(|s| Answer::Status(s.into()))
        }
    }
}
