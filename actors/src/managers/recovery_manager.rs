//! The recovery manager: a strategy per kind of failure.
//!
//! | failure kind | default strategy | what it does |
//! |---|---|---|
//! | `actor_stopped` | `restart` | asks this node's worker pool, its workers' supervisor, to start a fresh worker in place of the stopped one |
//! | `leader_unreachable` | `fail_over` | waits for Raft to elect a leader other than the dead one; if none comes within the reply timeout, campaigns here through the leader election manager; then moves work |
//! | `rejoined` | `catch_up` | waits until the rejoined node's heartbeats report the state version this node had applied, then gives it work again |
//! | `unreachable` | `move_work` | asks the load distributor to spread every recorded load over the live nodes only |
//!
//! The table is `recovery_manager.strategies` in the configuration; a kind without a strategy is
//! answered `StrategyNotFound` and its failure stays open. A failure is open from the moment it
//! arrives until a strategy recovers it (then it, and any earlier failure of the same subject, is
//! removed); [`OpenFailures`] lists what is still open. The strategies call other managers
//! through their gates, with this manager's own identity, so every step is charged and audited
//! where it happens.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use cluster::NodeId;
use futures::future::LocalBoxFuture;
use security::SecurityContext;
use serde::{Deserialize, Serialize};

use crate::gate::{Gate, Pending};
use crate::managers::failure_detector::{Failure, FailureDetector, FailureKind, Peers};
use crate::managers::leader_election::{self, Election, LeaderElection};
use crate::managers::load_distributor::{self, LoadDistributor, Rebalance};
use crate::managers::worker_pool::{self, Restart, WorkerPool};
use crate::node::consensus::{Consensus, Inspect};
use crate::node::wait::eventually;
use crate::{gate_error, gated, Environment};

/// How often a strategy looks again while it waits for the cluster.
const POLL: Duration = Duration::from_millis(20);

/// The scope recovery managers act in.
pub const SCOPE: &str = "recovery_management";

/// How a kind of failure is recovered. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Strategy {
    /// Start a fresh actor in place of a stopped one, through its supervisor.
    Restart,
    /// Make sure a live node leads, then move the dead leader's work.
    FailOver,
    /// Wait for a rejoined node to catch up, then give it work again.
    CatchUp,
    /// Spread the loads over the live nodes only.
    MoveWork,
}

impl Strategy {
    /// The default table: each kind of failure and its strategy.
    pub const DEFAULTS: &'static [(FailureKind, Strategy)] = &[
        (FailureKind::ActorStopped, Strategy::Restart),
        (FailureKind::LeaderUnreachable, Strategy::FailOver),
        (FailureKind::Rejoined, Strategy::CatchUp),
        (FailureKind::Unreachable, Strategy::MoveWork),
    ];

    /// The strategy's name in configuration and logs (`fail_over`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Which strategy the recovery manager applies to each kind of failure. A kind left out has
/// no strategy, and its failures are answered `StrategyNotFound`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoverySettings {
    /// Failure kind to strategy.
    pub strategies: BTreeMap<FailureKind, Strategy>,
    /// Failures of distinct subjects open at once. A failure of a subject already open replaces
    /// it; past the bound a new one is refused (`RecoveryFailed`, naming the bound) and stays with
    /// whoever reported it (the detector keeps it in its history).
    pub max_open: usize,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings { strategies: Strategy::DEFAULTS.iter().copied().collect(), max_open: 1024 }
    }
}

/// Why a recovery request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecoveryError {
    /// No strategy is configured for the failure's kind.
    #[error("strategy not found: {0}")]
    StrategyNotFound(String),
    /// The strategy ran and did not recover the failure.
    #[error("recovery failed: {0}")]
    RecoveryFailed(String),
}

/// Recovers a failure with its kind's strategy. Requires `RecoveryManagement` and
/// `FailureHandling`.
#[derive(Debug, Clone)]
pub struct Recover {
    /// Who asks (usually the node's failure detector).
    pub ctx: SecurityContext,
    /// What failed.
    pub failure: Failure,
}

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovered {
    /// The failure, now removed from the open ones.
    pub failure: Failure,
    /// The strategy that recovered it.
    pub strategy: Strategy,
    /// What the strategy did.
    pub outcome: String,
}

/// The last recoveries (at most 1024), oldest first. Requires `RecoveryManagement`.
#[derive(Debug, Clone)]
pub struct Recoveries {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// The failures not yet recovered, oldest first. Requires `RecoveryManagement`.
#[derive(Debug, Clone)]
pub struct OpenFailures {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// How many recoveries a manager remembers.
const HISTORY: usize = 1024;

/// The actors of this node the strategies act through.
#[derive(Clone)]
pub struct Links {
    /// Who leads, what is applied.
    pub consensus: Addr<Consensus>,
    /// Campaigns when no leader comes.
    pub election: Addr<LeaderElection>,
    /// What peers report (for catching up).
    pub detector: Addr<FailureDetector>,
    /// Moves work.
    pub distributor: Addr<LoadDistributor>,
    /// Restarts workers.
    pub pool: Addr<WorkerPool>,
}

/// The recovery manager of one node.
pub struct RecoveryManager {
    gate: Gate,
    node: NodeId,
    strategies: BTreeMap<FailureKind, Strategy>,
    max_open: usize,
    open: Vec<Failure>,
    done: VecDeque<Recovered>,
    links: Links,
    timeout: Duration,
}

impl RecoveryManager {
    /// The manager of node `node`, named `recovery-manager/<node>`, with the strategies of
    /// `env`'s configuration.
    pub fn new(env: &Environment, node: NodeId, links: Links) -> Self {
        let config = &env.config().recovery_manager;
        RecoveryManager {
            gate: env.gate::<Self>(&format!("recovery-manager/{node}"), config),
            node,
            strategies: config.settings.strategies.clone(),
            max_open: config.settings.max_open,
            open: Vec::new(),
            done: VecDeque::new(),
            links,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }

    /// The work of `strategy` for `failure`: what it did, or why it could not.
    fn run(&self, strategy: Strategy, failure: &Failure) -> LocalBoxFuture<'static, Result<String, String>> {
        let (me, within, links) = (self.node, self.timeout, self.links.clone());
        let node = failure.node;
        let move_work = move_work(links.distributor.clone(), self.gate.identity(load_distributor::SCOPE));
        match strategy {
            Strategy::Restart => {
                let restart = Restart { ctx: self.gate.identity(worker_pool::SCOPE), worker: failure.subject.clone() };
                Box::pin(async move {
                    if node != me {
                        return Err(format!("node {me} cannot restart an actor of node {node}"));
                    }
                    links
                        .pool
                        .send(restart)
                        .await
                        .map_err(|e| format!("the worker pool is gone: {e}"))?
                        .map_err(|e| e.to_string())
                })
            }
            Strategy::FailOver => {
                let elect = Election { ctx: self.gate.identity(leader_election::SCOPE), candidate: me };
                Box::pin(async move {
                    let other_leader = || async {
                        let view = links.consensus.send(Inspect).await.ok()?;
                        view.leader.filter(|&l| l != node).map(|l| (l, view.term))
                    };
                    let led = match eventually(within, POLL, other_leader).await {
                        Some((leader, term)) => format!("node {leader} leads term {term}"),
                        None => match links.election.send(elect).await {
                            Ok(Ok(won)) => format!("no leader within {within:?}; node {me} campaigned and won term {}", won.term),
                            Ok(Err(e)) => return Err(format!("no leader within {within:?}, and the campaign failed: {e}")),
                            Err(e) => return Err(format!("the leader election manager is gone: {e}")),
                        },
                    };
                    Ok(format!("{led}; {}", move_work.await?))
                })
            }
            Strategy::CatchUp => Box::pin(async move {
                let target = links.consensus.send(Inspect).await.map_err(|e| format!("consensus is gone: {e}"))?.state.version;
                let reported = || async {
                    let peers = links.detector.send(Peers).await.ok()?;
                    peers.into_iter().find(|p| p.node == node)?.vitals.map(|v| v.version)
                };
                let caught_up = || async { reported().await.filter(|&v| v >= target) };
                match eventually(within, POLL, caught_up).await {
                    Some(version) => Ok(format!("node {node} caught up to version {version}; {}", move_work.await?)),
                    None => Err(format!(
                        "node {node} reports version {} after {within:?}, short of {target}",
                        reported().await.map_or("nothing".to_owned(), |v| v.to_string())
                    )),
                }
            }),
            Strategy::MoveWork => Box::pin(move_work),
        }
    }
}

/// Asks the distributor to spread every recorded load over the live nodes.
async fn move_work(distributor: Addr<LoadDistributor>, ctx: SecurityContext) -> Result<String, String> {
    match distributor.send(Rebalance { ctx }).await {
        Ok(Ok(moved)) if moved.is_empty() => Ok("no load was placed here to move".to_owned()),
        Ok(Ok(moved)) => {
            let nodes: Vec<_> = moved[0].shares.keys().collect();
            Ok(format!("moved {} load(s) onto nodes {nodes:?}", moved.len()))
        }
        Ok(Err(e)) => Err(format!("moving work: {e}")),
        Err(e) => Err(format!("the load distributor is gone: {e}")),
    }
}

/// The recovery manager's operations: a recovery costs 35 J by default, listing what is open or
/// done nothing.
#[gated(
    error = RecoveryError,
    scope = SCOPE,
    budget = 6000.0,
    grants = [
        RecoveryManagement,
        StrategyManagement,
        FailureHandling,
        ElectionManagement,
        VoteManagement,
        DistributionManagement,
        EnergyManagement
    ],
    reply_timeout_ms = 2000,
    settings = RecoverySettings
)]
impl RecoveryManager {
    /// Recovers a failure with its kind's strategy.
    #[operation(
        requires = [RecoveryManagement, FailureHandling],
        cost = 35.0,
        resource = &msg.failure.subject,
        validate = if msg.failure.node == 0 { Err(RecoveryError::InvalidRequest("node 0 is not a node id".into())) } else { Ok(()) }
    )]
    fn recover(&mut self, msg: Recover) -> Pending<Self, Recovered, RecoveryError> {
        let failure = msg.failure;
        match self.open.iter().position(|f| f.node == failure.node && f.subject == failure.subject) {
            Some(i) => self.open[i] = failure.clone(),
            None if self.open.len() >= self.max_open => {
                let reason = format!(
                    "{} failures are open already, the most this manager keeps (recovery_manager.max_open); {} of {} is not taken",
                    self.open.len(),
                    failure.kind.name(),
                    failure.subject
                );
                return Box::pin(fut::ready(Err(RecoveryError::RecoveryFailed(reason))));
            }
            None => self.open.push(failure.clone()),
        }
        let kind = failure.kind.name();
        let Some(&strategy) = self.strategies.get(&failure.kind) else {
            let reason = format!("no strategy handles {kind} failures; set recovery_manager.strategies.{kind}");
            return Box::pin(fut::ready(Err(RecoveryError::StrategyNotFound(reason))));
        };
        let work = self.run(strategy, &failure);
        Box::pin(fut::wrap_future(work).map(move |result, manager: &mut Self, _| match result {
            Ok(outcome) => {
                tracing::info!(node = manager.node, kind, subject = %failure.subject, strategy = strategy.name(), "recovered: {outcome}");
                manager.open.retain(|f| !(f.node == failure.node && f.subject == failure.subject));
                let recovered = Recovered { failure, strategy, outcome };
                if manager.done.len() == HISTORY {
                    manager.done.pop_front();
                }
                manager.done.push_back(recovered.clone());
                Ok(recovered)
            }
            Err(reason) => Err(RecoveryError::RecoveryFailed(format!(
                "{} of {} ({kind}): {reason}",
                strategy.name(),
                failure.subject
            ))),
        }))
    }

    /// The failures not yet recovered, oldest first.
    #[operation(requires = [RecoveryManagement], cost = 0.0, resource = "failures")]
    fn open_failures(&mut self, _msg: OpenFailures) -> Result<Vec<Failure>, RecoveryError> {
        Ok(self.open.clone())
    }

    /// The last recoveries, oldest first.
    #[operation(requires = [RecoveryManagement], cost = 0.0, resource = "recoveries")]
    fn recoveries(&mut self, _msg: Recoveries) -> Result<Vec<Recovered>, RecoveryError> {
        Ok(self.done.iter().cloned().collect())
    }
}
