//! The failure detector (the tutorial's section 3.1): phi-accrual over heartbeats.
//!
//! Every `failure_detection.heartbeat_ms` the detector sends each peer a [`Heartbeat`] over the
//! transport, carrying what this node reports about itself ([`Vitals`]: its applied state version,
//! the leader it knows, its worker pool's capacity and remaining energy); ten times as often it
//! looks at each peer's phi ([`cluster::phi`]). Looking is free; when a peer crosses the threshold (or comes back), the
//! detector sends itself a gated [`Check`], so the decision is charged (15 J) and audited like
//! any request, records a [`Failure`] and hands it to the recovery manager. Operators can send
//! `Check` for any peer at any time. Other actors of the node report failures they see themselves
//! (a worker pool whose worker stopped) with [`Report`]; they take the same path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use cluster::phi::{PhiAccrual, PhiConfig};
use cluster::NodeId;
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};
use serde::{Deserialize, Serialize};

use crate::node::consensus::{Consensus, Inspect};
use crate::node::Stop;
use crate::gate::{self, Gate, Operation, Rules};
use crate::managers::recovery_manager::{self, Recover};
use crate::transport::{Envelope, Transport};
use crate::managers::worker_pool::ReadLoad;
use crate::Environment;

/// The scope failure detectors act in.
pub const SCOPE: &str = "failure_detection";

/// How many failures a detector remembers.
const HISTORY: usize = 1024;

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

/// A detected failure (the tutorial's `Failure { node, time, reason }`).
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
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
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
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Heartbeat {
    /// The sender.
    pub from: NodeId,
    /// What it reports about itself.
    pub vitals: Vitals,
}

/// Why a detection request failed (the tutorial's `DetectionError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum DetectionError {
    /// The failure was recorded but recovery did not take it or did not succeed.
    #[error("failure handling failed: {0}")]
    FailureHandlingFailed(String),
    /// The requester or this detector lacks a required capability.
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
    /// The request is malformed (for instance, not a peer of this node).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

crate::gate_error!(DetectionError);

/// Checks a peer now: if its phi crossed the threshold it is recorded as failed and handed to
/// recovery; if it was failed and is heard again, its rejoining is. Requires `FailureDetection`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PeerView, DetectionError>")]
pub struct Check {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The peer.
    pub node: NodeId,
}

/// Reports a failure an actor of this node saw itself; it is recorded and handed to recovery.
/// Requires `FailureHandling`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), DetectionError>")]
pub struct Report {
    /// Who reports.
    pub ctx: SecurityContext,
    /// What failed.
    pub failure: Failure,
}

/// The failures recorded, oldest first (at most the last 1024). Requires `FailureDetection`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Failure>, DetectionError>")]
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

impl Operation for Check {
    type Output = PeerView;
    type Error = DetectionError;
    const NAME: &'static str = "check";
    const REQUIRES: CapSet = CapSet::of(&[Capability::FailureDetection]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "node"
    }
}

impl Operation for Report {
    type Output = ();
    type Error = DetectionError;
    const NAME: &'static str = "report";
    const REQUIRES: CapSet = CapSet::of(&[Capability::FailureHandling]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.failure.subject
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), DetectionError> {
        let f = &self.failure;
        if f.subject.is_empty() || f.subject.len() > rules.limits.max_id_bytes {
            let reason = format!("subject must be 1 to {} bytes, not {}", rules.limits.max_id_bytes, f.subject.len());
            return Err(DetectionError::InvalidRequest(reason));
        }
        rules.payload("reason", f.reason.len()).map_err(DetectionError::InvalidRequest)
    }
}

impl Operation for Failures {
    type Output = Vec<Failure>;
    type Error = DetectionError;
    const NAME: &'static str = "failures";
    const REQUIRES: CapSet = CapSet::of(&[Capability::FailureDetection]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "failures"
    }
}

/// One peer as the detector follows it.
struct Watch {
    phi: PhiAccrual,
    vitals: Option<Vitals>,
    /// Since when it counts as failed.
    failed_since: Option<Duration>,
    /// A `Check` for it is on its way, so the next sweep does not send another.
    check_pending: bool,
    /// No automatic check before this: the last was refused for want of energy, and asking ten
    /// times a beat would only fill the audit log with refusals.
    quiet_until: Duration,
}

/// The failure detector of one node.
pub struct FailureDetector {
    gate: Gate,
    node: NodeId,
    epoch: Instant,
    every: Duration,
    phi: PhiConfig,
    peers: BTreeMap<NodeId, Watch>,
    local: Vitals,
    /// When each node was last known to lead (from this node's Raft view or its own heartbeat):
    /// a node that led when it went silent is a lost leader even if Raft has moved on since.
    last_led: BTreeMap<NodeId, Duration>,
    failures: VecDeque<Failure>,
    transport: Arc<dyn Transport>,
    consensus: Addr<Consensus>,
    pool: Option<Recipient<ReadLoad>>,
    recovery: Option<Addr<recovery_manager::RecoveryManager>>,
}

impl FailureDetector {
    /// Operations and their default base costs: a check is the tutorial's 15 J, a report (a
    /// failure an actor saw itself, with no phi to compute) 5 J.
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] =
        &[(Check::NAME, 15.0), (Report::NAME, 5.0), (Failures::NAME, 0.0), ("top_up", 0.0), ("status", 0.0)];

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
        let settings = env.config().failure_detection;
        FailureDetector {
            gate: env.gate(&format!("failure-detector/{node}"), SCOPE, &env.config().failure_detector),
            node,
            epoch: Instant::now(),
            every: Duration::from_millis(settings.heartbeat_ms),
            phi: settings.phi(),
            peers: voters.iter().filter(|&&v| v != node).map(|&v| (v, Watch::new(settings.phi()))).collect(),
            local: Vitals::default(),
            last_led: BTreeMap::new(),
            failures: VecDeque::new(),
            transport,
            consensus,
            pool,
            recovery,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn start_beating(&mut self, ctx: &mut Context<Self>) {
        // Every peer counts as heard at start, so one that never speaks is detected too.
        let now = self.now();
        self.peers.values_mut().for_each(|w| w.phi.heartbeat(now));
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
        let read = async move { (view.await.ok(), match load { Some(l) => l.await.ok(), None => None }) };
        ctx.spawn(fut::wrap_future(read).map(|(view, load), detector: &mut Self, _| {
            if let Some(view) = view {
                detector.local.version = view.state.version;
                detector.local.leader = view.leader;
                if let Some(leader) = view.leader {
                    detector.last_led.insert(leader, detector.now());
                }
            }
            if let Some(load) = load {
                detector.local.capacity = load.workers as f64;
                detector.local.remaining_j = load.remaining_j;
            }
            let beat = Heartbeat { from: detector.node, vitals: detector.local };
            for &peer in detector.peers.keys() {
                if let Err(e) = detector.transport.send(detector.node, peer, Envelope::Heartbeat(beat.clone())) {
                    tracing::trace!(node = detector.node, "heartbeat: {e}");
                }
            }
        }));
    }

    /// Sends a gated `Check` for every peer whose state changed: silent past the threshold, or
    /// failed and heard again.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        let threshold = self.phi.threshold;
        let identity = self.gate.identity(SCOPE);
        for (&node, watch) in &mut self.peers {
            let failed_now = watch.phi.phi(now) >= threshold;
            if failed_now != watch.failed_since.is_some() && !watch.check_pending && now >= watch.quiet_until {
                watch.check_pending = true;
                ctx.notify(Check { ctx: identity.clone(), node });
            }
        }
    }

    fn view(&self, node: NodeId, now: Duration) -> PeerView {
        match self.peers.get(&node) {
            Some(w) => PeerView {
                node,
                alive: w.failed_since.is_none(),
                phi: w.phi.phi(now),
                silent_ms: w.phi.last_heartbeat().map(|t| now.saturating_sub(t).as_millis() as u64),
                vitals: w.vitals,
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
    fn hand_off(&self, failure: Failure) -> ResponseActFuture<Self, Result<(), DetectionError>> {
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

impl Watch {
    fn new(config: PhiConfig) -> Self {
        Watch { phi: PhiAccrual::new(config), vitals: None, failed_since: None, check_pending: false, quiet_until: Duration::ZERO }
    }
}

crate::gated_actor!(FailureDetector, start_beating);

impl Handler<Heartbeat> for FailureDetector {
    type Result = ();

    fn handle(&mut self, beat: Heartbeat, _: &mut Context<Self>) {
        let now = self.now();
        let Some(watch) = self.peers.get_mut(&beat.from) else {
            tracing::debug!(node = self.node, from = beat.from, "heartbeat from a node that is not a peer");
            return;
        };
        if watch.failed_since.is_some() && watch.phi.phi(now) >= self.phi.threshold {
            // Back from the dead: its silence says nothing about its rhythm from now on.
            watch.phi = PhiAccrual::new(self.phi);
        }
        watch.phi.heartbeat(now);
        watch.vitals = Some(beat.vitals);
        if beat.vitals.leader == Some(beat.from) {
            self.last_led.insert(beat.from, now);
        }
    }
}

impl Handler<Check> for FailureDetector {
    type Result = ResponseActFuture<Self, Result<PeerView, DetectionError>>;

    fn handle(&mut self, msg: Check, _: &mut Context<Self>) -> Self::Result {
        let node = msg.node;
        if let Some(watch) = self.peers.get_mut(&node) {
            watch.check_pending = false;
        }
        let checked = gate::run_async(self, msg, |detector, msg| -> ResponseActFuture<Self, _> {
            let (now, threshold, node) = (detector.now(), detector.phi.threshold, msg.node);
            let Some(watch) = detector.peers.get_mut(&node) else {
                let reason = format!("node {node} is not a peer of node {}", detector.node);
                return Box::pin(fut::ready(Err(DetectionError::InvalidRequest(reason))));
            };
            let phi = watch.phi.phi(now);
            let last_heard = watch.phi.last_heartbeat().unwrap_or_default();
            let silent = now.saturating_sub(last_heard);
            let led_until = detector.last_led.get(&node).copied();
            let change = match (watch.failed_since, phi >= threshold) {
                (None, true) => {
                    watch.failed_since = Some(now);
                    let was_leader = led_until.is_some_and(|t| t + detector.every >= last_heard);
                    let kind = if was_leader { FailureKind::LeaderUnreachable } else { FailureKind::Unreachable };
                    let reason = format!("no heartbeat for {} ms: phi {phi:.1} >= {threshold}", silent.as_millis());
                    Some((kind, reason))
                }
                (Some(since), false) => {
                    watch.failed_since = None;
                    let reason = format!("heard again {} ms after it was declared failed", (now - since).as_millis());
                    Some((FailureKind::Rejoined, reason))
                }
                _ => None,
            };
            let view = detector.view(node, now);
            let Some((kind, reason)) = change else {
                return Box::pin(fut::ready(Ok(view)));
            };
            let failure = Failure { node, kind, subject: format!("node {node}"), time: SystemTime::now(), reason };
            detector.record(&failure);
            Box::pin(detector.hand_off(failure).map(move |handled, _, _| handled.map(|()| view)))
        });
        Box::pin(checked.map(move |result, detector: &mut Self, _| {
            if let (Err(DetectionError::InsufficientEnergy { .. }), Some(watch)) = (&result, detector.peers.get_mut(&node)) {
                watch.quiet_until = detector.epoch.elapsed() + detector.every * 10;
            }
            result
        }))
    }
}

impl Handler<Report> for FailureDetector {
    type Result = ResponseActFuture<Self, Result<(), DetectionError>>;

    fn handle(&mut self, msg: Report, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |detector, msg| {
            detector.record(&msg.failure);
            detector.hand_off(msg.failure)
        })
    }
}

impl Handler<Failures> for FailureDetector {
    type Result = Result<Vec<Failure>, DetectionError>;

    fn handle(&mut self, msg: Failures, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |detector, _| Ok(detector.failures.iter().cloned().collect()))
    }
}

impl Handler<Peers> for FailureDetector {
    type Result = MessageResult<Peers>;

    fn handle(&mut self, _: Peers, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let mut nodes: Vec<NodeId> = self.peers.keys().copied().collect();
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

crate::common_handlers!(FailureDetector, DetectionError);
