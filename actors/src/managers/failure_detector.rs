//! The failure detector: phi-accrual over heartbeats.
//!
//! Every `failure_detector.heartbeat_ms` the detector sends each peer a [`Heartbeat`] over the
//! transport (while this node's consensus actor runs: a node without one falls silent), carrying what this node reports about itself ([`Vitals`]: its applied state version,
//! the leader it knows, its worker pool's capacity and remaining energy); ten times as often it
//! asks its [`Detector`] (in the deterministic cluster core) which peers crossed the threshold or
//! came back. Asking is free; for each such peer the detector sends itself a gated [`Check`], so
//! the decision is charged (15 J by default) and audited like any request, records a [`Failure`]
//! and hands it to the recovery manager. Operators can send `Check` for any peer at any time.
//! Other actors of the node report failures they see themselves (a worker pool whose worker
//! stopped) with [`Report`]; they take the same path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use cluster::detector::{Change, Detector, DetectorConfig};
use cluster::NodeId;
use security::SecurityContext;
use serde::{Deserialize, Serialize};

use crate::gate::{Gate, Pending};
use crate::managers::recovery_manager::{self, Recover};
use crate::managers::worker_pool::ReadLoad;
use crate::node::consensus::{Consensus, Inspect};
use crate::node::Stop;
use crate::transport::{Envelope, Transport};
use crate::metrics::NodeMetrics;
use crate::{gate_error, gated, Environment};

/// The scope failure detectors act in.
pub const SCOPE: &str = "failure_detection";

/// How many failures a detector remembers.
const HISTORY: usize = 1024;

/// Heartbeats and phi-accrual detection. The defaults are Akka's cluster failure detector's: a
/// beat a second, and a silent node is declared failed about 4.5 s after its last beat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectionSettings {
    /// How often every node sends each peer a heartbeat, and checks each peer's phi.
    pub heartbeat_ms: u64,
    /// Phi at or above this means failed.
    pub threshold: f64,
    /// How many heartbeat intervals to remember per peer.
    pub max_sample_size: usize,
    /// A floor under the intervals' standard deviation.
    pub min_std_deviation_ms: u64,
    /// A pause this long on top of the mean interval is not suspicious.
    pub acceptable_heartbeat_pause_ms: u64,
    /// The interval assumed before any has been measured.
    pub first_heartbeat_estimate_ms: u64,
}

impl DetectionSettings {
    /// The cluster core's detector settings.
    pub fn detector(&self) -> DetectorConfig {
        DetectorConfig { phi: self.phi(), heartbeat: Duration::from_millis(self.heartbeat_ms), back_off_beats: 10 }
    }

    /// The same settings as the cluster core's phi-accrual configuration.
    pub fn phi(&self) -> cluster::phi::PhiConfig {
        cluster::phi::PhiConfig {
            threshold: self.threshold,
            max_sample_size: self.max_sample_size,
            min_std_deviation: Duration::from_millis(self.min_std_deviation_ms),
            acceptable_heartbeat_pause: Duration::from_millis(self.acceptable_heartbeat_pause_ms),
            first_heartbeat_estimate: Duration::from_millis(self.first_heartbeat_estimate_ms),
        }
    }

    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        (self.heartbeat_ms == 0 || !(self.threshold.is_finite() && self.threshold > 0.0)).then(|| {
            format!("need heartbeat_ms > 0 and a positive threshold, got {} ms and {}", self.heartbeat_ms, self.threshold)
        })
    }
}

impl Default for DetectionSettings {
    fn default() -> Self {
        let akka = cluster::phi::PhiConfig::default();
        DetectionSettings {
            heartbeat_ms: 1000,
            threshold: akka.threshold,
            max_sample_size: akka.max_sample_size,
            min_std_deviation_ms: akka.min_std_deviation.as_millis() as u64,
            acceptable_heartbeat_pause_ms: akka.acceptable_heartbeat_pause.as_millis() as u64,
            first_heartbeat_estimate_ms: akka.first_heartbeat_estimate.as_millis() as u64,
        }
    }
}

/// What kind of failure, which decides the recovery strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FailureKind {
    /// A peer went silent.
    Unreachable,
    /// A peer that last reported itself leader went silent.
    LeaderUnreachable,
    /// A peer declared failed is heard again: not a failure but the end of one, which needs
    /// the node caught up and given work again.
    Rejoined,
    /// An actor of this node stopped (a worker whose job panicked).
    ActorStopped,
}

impl FailureKind {
    /// The kind's name in configuration and logs (`leader_unreachable`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A detected failure: where, what kind, what failed, when and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The node it happened on.
    pub node: NodeId,
    /// What kind it is.
    pub kind: FailureKind,
    /// What failed: `node 3`, or an actor's name (`worker-2`).
    pub subject: String,
    /// When it was detected.
    pub time: SystemTime,
    /// Why it counts as failed.
    pub reason: String,
}

/// What a node reports about itself in its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct Vitals {
    /// The replicated state version it has applied.
    pub version: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its worker pool's running workers.
    pub capacity: f64,
    /// Joules left in its worker pool's budget.
    pub remaining_j: f64,
}

/// A liveness beat from a peer.
#[derive(Debug, Clone, PartialEq, Message, Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct Heartbeat {
    /// The sender.
    pub from: NodeId,
    /// What it reports about itself.
    pub vitals: Vitals,
}

/// Why a detection request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectionError {
    /// The failure was recorded but recovery did not take it or did not succeed.
    #[error("failure handling failed: {0}")]
    FailureHandlingFailed(String),
}

/// Checks a peer now: if its phi crossed the threshold it is recorded as failed and handed to
/// recovery; if it was failed and is heard again, its rejoining is. Requires `FailureDetection`.
#[derive(Debug, Clone)]
pub struct Check {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The peer.
    pub node: NodeId,
}

/// Reports a failure an actor of this node saw itself; it is recorded and handed to recovery.
/// Requires `FailureHandling`.
#[derive(Debug, Clone)]
pub struct Report {
    /// Who reports.
    pub ctx: SecurityContext,
    /// What failed.
    pub failure: Failure,
}

/// The failures recorded, oldest first (at most the last 1024). Requires `FailureDetection`.
#[derive(Debug, Clone)]
pub struct Failures {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// How this node sees every node, itself included (node-internal, not gated: the load
/// distributor and the recovery manager read it).
#[derive(Debug, Message)]
#[rtype(result = "Vec<PeerView>")]
pub struct Peers;

/// How this node sees one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerView {
    /// The node.
    pub node: NodeId,
    /// Whether it counts as alive (never declared failed, or heard again since).
    pub alive: bool,
    /// Its phi now.
    pub phi: f64,
    /// Milliseconds since its last heartbeat, if any arrived.
    pub silent_ms: Option<u64>,
    /// What it last reported about itself.
    pub vitals: Option<Vitals>,
}

/// The failure detector of one node.
pub struct FailureDetector {
    gate: Gate,
    node: NodeId,
    epoch: Instant,
    every: Duration,
    decisions: Detector,
    vitals: BTreeMap<NodeId, Vitals>,
    local: Vitals,
    failures: VecDeque<Failure>,
    transport: Arc<dyn Transport>,
    consensus: Addr<Consensus>,
    pool: Option<Recipient<ReadLoad>>,
    recovery: Option<Addr<recovery_manager::RecoveryManager>>,
    metrics: Option<NodeMetrics>,
}

impl FailureDetector {
    /// The detector of node `node`, named `failure-detector/<node>`, watching the other
    /// `voters`, reading this node's vitals from `consensus` and `pool`, handing failures to
    /// `recovery`.
    pub fn new(
        env: &Environment,
        node: NodeId,
        voters: &[NodeId],
        transport: Arc<dyn Transport>,
        consensus: Addr<Consensus>,
        pool: Option<Recipient<ReadLoad>>,
        recovery: Option<Addr<recovery_manager::RecoveryManager>>,
    ) -> Self {
        let config = &env.config().failure_detector;
        let settings = config.settings;
        FailureDetector {
            gate: env.gate::<Self>(&format!("failure-detector/{node}"), config),
            node,
            epoch: Instant::now(),
            every: Duration::from_millis(settings.heartbeat_ms),
            decisions: Detector::new(node, voters, settings.detector(), Duration::ZERO),
            vitals: BTreeMap::new(),
            local: Vitals::default(),
            failures: VecDeque::new(),
            transport,
            consensus,
            pool,
            recovery,
            metrics: env.node_metrics(node),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn start_beating(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.every, |detector, ctx| detector.beat(ctx));
        // Looking costs little, so look ten times per beat: detection lags the threshold by a
        // tenth of an interval, not a whole one.
        let look = (self.every / 10).max(Duration::from_millis(10));
        ctx.run_interval(look, |detector, ctx| detector.sweep(ctx));
    }

    /// Reads this node's vitals, then sends them to every peer.
    fn beat(&mut self, ctx: &mut Context<Self>) {
        let view = self.consensus.send(Inspect);
        let load = self.pool.as_ref().map(|pool| pool.send(ReadLoad));
        let read = async move {
            (
                view.await.ok(),
                match load {
                    Some(l) => l.await.ok(),
                    None => None,
                },
            )
        };
        ctx.spawn(fut::wrap_future(read).map(|(view, load), detector: &mut Self, _| {
            let Some(view) = view else {
                // Without its consensus actor this node cannot take part in the cluster: it falls
                // silent, so that its peers see it fail instead of a healthy-looking husk.
                tracing::error!(node = detector.node, "the consensus actor is gone; no more heartbeats");
                return;
            };
            // The peers are the members the cluster agreed on: a node added is watched (and so
            // given work by the distributor, which places over this view), a node removed is not.
            let members = view.members();
            if !members.is_empty() && !members.iter().filter(|&&m| m != detector.node).eq(detector.decisions.peers().collect::<Vec<_>>().iter()) {
                tracing::info!(node = detector.node, ?members, "failure detector: watching the new membership");
                let gone: Vec<NodeId> = detector.decisions.peers().filter(|p| !members.contains(p)).collect();
                detector.decisions.set_peers(&members, detector.now());
                detector.vitals.retain(|id, _| members.contains(id));
                if let Some(metrics) = &detector.metrics {
                    gone.iter().for_each(|&peer| metrics.forget_peer(peer));
                }
            }
            detector.local.version = view.state.version;
            detector.local.leader = view.leader;
            if let Some(leader) = view.leader {
                let now = detector.now();
                detector.decisions.led(leader, now);
            }
            if let Some(load) = load {
                detector.local.capacity = load.workers as f64;
                detector.local.remaining_j = load.remaining_j;
            }
            let beat = Heartbeat { from: detector.node, vitals: detector.local };
            for peer in detector.decisions.peers() {
                if let Err(e) = detector.transport.send(detector.node, peer, Envelope::Heartbeat(beat.clone())) {
                    tracing::trace!(node = detector.node, "heartbeat: {e}");
                }
            }
        }));
    }

    /// Sends a gated `Check` for every peer the core says is due, and tells the core how each
    /// ended.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if let Some(metrics) = &self.metrics {
            let now = self.now();
            for peer in self.decisions.peers() {
                if let Some(state) = self.decisions.state(peer, now) {
                    metrics.phi(peer, state.phi);
                }
            }
        }
        let me = ctx.address();
        for node in self.decisions.due(self.now()) {
            let check = me.send(Check { ctx: self.gate.identity(SCOPE), node });
            ctx.spawn(fut::wrap_future(check).map(move |answer, detector: &mut Self, _| {
                let refused = matches!(answer, Ok(Err(DetectionError::InsufficientEnergy { .. })));
                let now = detector.now();
                detector.decisions.answered(node, refused, now);
            }));
        }
    }

    fn view(&self, node: NodeId, now: Duration) -> PeerView {
        match self.decisions.state(node, now) {
            Some(state) => PeerView {
                node,
                alive: state.alive,
                phi: state.phi,
                silent_ms: Some(state.silent.as_millis() as u64),
                vitals: self.vitals.get(&node).copied(),
            },
            None => PeerView { node, alive: true, phi: 0.0, silent_ms: Some(0), vitals: Some(self.local) },
        }
    }

    fn record(&mut self, failure: &Failure) {
        tracing::warn!(node = self.node, kind = failure.kind.name(), subject = %failure.subject, "{}", failure.reason);
        if self.failures.len() == HISTORY {
            self.failures.pop_front();
        }
        self.failures.push_back(failure.clone());
    }

    /// Hands `failure` to recovery and waits for its answer.
    fn hand_off(&self, failure: Failure) -> Pending<Self, (), DetectionError> {
        let Some(recovery) = &self.recovery else {
            let reason = "no recovery manager is attached to this detector".to_owned();
            return Box::pin(fut::ready(Err(DetectionError::FailureHandlingFailed(reason))));
        };
        let what = format!("{} of {}", failure.kind.name(), failure.subject);
        let request = recovery.send(Recover { ctx: self.gate.identity(recovery_manager::SCOPE), failure });
        Box::pin(fut::wrap_future(request).map(move |answer, _, _| match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DetectionError::FailureHandlingFailed(format!("recovery of {what}: {e}"))),
            Err(e) => Err(DetectionError::FailureHandlingFailed(format!("the recovery manager is gone: {e}"))),
        }))
    }
}

/// The failure detector's operations: a check costs 15 J by default, a report (a failure an actor
/// saw itself, with no phi to compute) 5 J, the list of failures nothing.
#[gated(
    error = DetectionError,
    scope = SCOPE,
    budget = 5000.0,
    grants = [FailureDetection, FailureHandling, RecoveryManagement, NodeManagement, EnergyManagement],
    reply_timeout_ms = 5000,
    settings = DetectionSettings,
    started = start_beating
)]
impl FailureDetector {
    /// Checks a peer now; a peer found failed, or back, is recorded and handed to recovery.
    #[operation(requires = [FailureDetection], cost = 15.0, resource = "node")]
    fn check(&mut self, msg: Check) -> Pending<Self, PeerView, DetectionError> {
        let (node, now) = (msg.node, self.now());
        let checked = match self.decisions.check(node, now) {
            Ok(checked) => checked,
            Err(e) => return Box::pin(fut::ready(Err(DetectionError::InvalidRequest(e.to_string())))),
        };
        let view = self.view(node, now);
        let Some(change) = checked.change else {
            return Box::pin(fut::ready(Ok(view)));
        };
        let kind = match change {
            Change::Failed { was_leader: true, .. } => FailureKind::LeaderUnreachable,
            Change::Failed { .. } => FailureKind::Unreachable,
            Change::Rejoined { .. } => FailureKind::Rejoined,
        };
        let failure =
            Failure { node, kind, subject: format!("node {node}"), time: SystemTime::now(), reason: change.to_string() };
        self.record(&failure);
        Box::pin(self.hand_off(failure).map(move |handled, _, _| handled.map(|()| view)))
    }

    /// Records a failure an actor of this node saw itself and hands it to recovery.
    #[operation(
        requires = [FailureHandling],
        cost = 5.0,
        resource = &msg.failure.subject,
        validate = {
            let f = &msg.failure;
            if f.subject.is_empty() || f.subject.len() > rules.limits.max_id_bytes {
                let reason = format!("subject must be 1 to {} bytes, not {}", rules.limits.max_id_bytes, f.subject.len());
                return Err(DetectionError::InvalidRequest(reason));
            }
            Ok(rules.payload("reason", f.reason.len())?)
        }
    )]
    fn report(&mut self, msg: Report) -> Pending<Self, (), DetectionError> {
        self.record(&msg.failure);
        self.hand_off(msg.failure)
    }

    /// The failures recorded, oldest first.
    #[operation(requires = [FailureDetection], cost = 0.0, resource = "failures")]
    fn failures(&mut self, _msg: Failures) -> Result<Vec<Failure>, DetectionError> {
        Ok(self.failures.iter().cloned().collect())
    }
}

impl Handler<Heartbeat> for FailureDetector {
    type Result = ();

    fn handle(&mut self, beat: Heartbeat, _: &mut Context<Self>) {
        let now = self.now();
        if !self.decisions.heartbeat(beat.from, now, beat.vitals.leader == Some(beat.from)) {
            tracing::debug!(node = self.node, from = beat.from, "heartbeat from a node that is not a peer");
            return;
        }
        self.vitals.insert(beat.from, beat.vitals);
    }
}

impl Handler<Peers> for FailureDetector {
    type Result = MessageResult<Peers>;

    fn handle(&mut self, _: Peers, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let mut nodes: Vec<NodeId> = self.decisions.peers().collect();
        nodes.push(self.node);
        nodes.sort_unstable();
        MessageResult(nodes.into_iter().map(|n| self.view(n, now)).collect())
    }
}

impl Handler<Stop> for FailureDetector {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
