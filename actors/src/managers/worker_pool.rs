//! Each node's pool of worker actors: the application's work, the real thing the resource scaler
//! resizes, the recovery manager restarts and the load distributor assigns shares of load to.
//!
//! The pool is a gated actor like the managers (its budget is the node's energy for work, which
//! load distribution weighs) and the supervisor of its workers: a job that panics stops its
//! worker, because its state can no longer be trusted; the pool reports the stopped worker to
//! the node's failure detector, and the recovery manager's `restart` strategy asks the pool to
//! start a fresh one in its place. Each worker runs on its own arbiter (thread), so jobs run in
//! parallel and a long job never stalls the pool or the managers.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use cluster::NodeId;
use security::SecurityContext;
use serde::{Deserialize, Serialize};

use crate::gate::{Gate, Pending};
use crate::managers::failure_detector::{self, Failure, FailureKind, Report};
use crate::node::Stop;
use crate::metrics::NodeMetrics;
use crate::{gate_error, gated, Environment};

/// The scope worker pools act in.
pub const SCOPE: &str = "resource_management";

/// Why a pool request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    /// The job panicked (its worker is stopped and reported), or no worker could run it.
    #[error("job failed: {0}")]
    JobFailed(String),
    /// The pool cannot take the asked size.
    #[error("resize refused: {0}")]
    ResizeRefused(String),
}

/// The size of each node's worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolSettings {
    /// Workers a pool starts with.
    pub initial: usize,
    /// Workers a pool may grow to; scaling beyond it fails.
    pub max: usize,
    /// Distributions a pool holds a share of at once; an adjustment for a new one past it is
    /// refused (`InvalidRequest`). A share of zero ends the pool's part in a distribution.
    pub max_distributions: usize,
}

impl PoolSettings {
    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        (self.initial == 0 || self.initial > self.max)
            .then(|| format!("need 1 <= initial <= max, got initial {} and max {}", self.initial, self.max))
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { initial: 2, max: 32, max_distributions: 1024 }
    }
}

/// A unit of work: any closure that returns bytes.
pub struct Job(Box<dyn FnOnce() -> Vec<u8> + Send>);

impl Job {
    /// Wraps `work`.
    pub fn new(work: impl FnOnce() -> Vec<u8> + Send + 'static) -> Self {
        Job(Box::new(work))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Runs a job on the least busy worker. Requires `ResourceManagement`.
#[derive(Debug)]
pub struct Work {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The work.
    pub job: Job,
}

/// Grows or shrinks the pool to `workers`. Requires `ScalingManagement`.
#[derive(Debug, Clone)]
pub struct Resize {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The new size.
    pub workers: usize,
}

/// Starts a fresh worker in place of a stopped one (named as in its failure report,
/// `worker-2`). Requires `RecoveryManagement`.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The stopped worker.
    pub worker: String,
}

/// This node's share of a distributed load, sent by a load distributor over the transport.
/// Requires `DistributionManagement`.
#[derive(Debug, Clone)]
pub struct Adjust {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The distribution this share belongs to.
    pub distribution: String,
    /// The load this node should take.
    pub share: f64,
}

/// The pool's size, load and energy (node-internal, not gated: the failure detector reads it
/// every heartbeat and the resource scaler before every decision).
#[derive(Debug, Message)]
#[rtype(result = "PoolLoad")]
pub struct ReadLoad;

/// A pool's size, load and energy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolLoad {
    /// Workers running.
    pub workers: usize,
    /// Stopped workers waiting for a restart.
    pub stopped: usize,
    /// Jobs running or queued.
    pub in_flight: usize,
    /// The load assigned to this node, over all distributions.
    pub assigned: f64,
    /// Joules left in the pool's budget.
    pub remaining_j: f64,
}

impl PoolLoad {
    /// The metrics the resource scaler can scale on: `queue_depth` (jobs in flight per running
    /// worker), `utilization` (the share of running workers with a job), `workers`, `assigned`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let workers = self.workers as f64;
        match name {
            "queue_depth" => Some(if workers > 0.0 { self.in_flight as f64 / workers } else { f64::INFINITY }),
            "utilization" => Some(if workers > 0.0 { (self.in_flight as f64).min(workers) / workers } else { 1.0 }),
            "workers" => Some(workers),
            "assigned" => Some(self.assigned),
            _ => None,
        }
    }

    /// The names [`metric`](Self::metric) knows.
    pub const METRICS: &'static [&'static str] = &["queue_depth", "utilization", "workers", "assigned"];
}

/// One worker: runs jobs until one panics.
struct Worker {
    slot: usize,
    pool: Addr<WorkerPool>,
    /// Why it stopped, if a job broke it.
    broken: Option<String>,
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(reason) = self.broken.take() {
            self.pool.do_send(WorkerStopped { slot: self.slot, reason });
        }
        // The thread was the worker's alone.
        Arbiter::current().stop();
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, String>")]
struct Run(Job);

impl Handler<Run> for Worker {
    type Result = Result<Vec<u8>, String>;

    fn handle(&mut self, Run(job): Run, ctx: &mut Context<Self>) -> Self::Result {
        catch_unwind(AssertUnwindSafe(job.0)).map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            let reason = format!("worker-{} panicked: {what}", self.slot);
            self.broken = Some(reason.clone());
            ctx.stop();
            reason
        })
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct WorkerStopped {
    slot: usize,
    reason: String,
}

enum Slot {
    Running { worker: Addr<Worker>, in_flight: usize },
    Stopped,
}

/// A node's pool of workers.
pub struct WorkerPool {
    gate: Gate,
    node: NodeId,
    settings: PoolSettings,
    slots: Vec<Slot>,
    shares: BTreeMap<String, f64>,
    detector: Option<Recipient<Report>>,
    timeout: Duration,
    metrics: Option<NodeMetrics>,
}

impl WorkerPool {
    /// The pool of node `node`, named `worker-pool/<node>`; stopped workers are reported to
    /// `detector`.
    pub fn new(env: &Environment, node: NodeId, detector: Option<Recipient<Report>>) -> Self {
        let config = &env.config().worker_pool;
        WorkerPool {
            gate: env.gate::<Self>(&format!("worker-pool/{node}"), config),
            node,
            settings: config.settings,
            slots: Vec::new(),
            shares: BTreeMap::new(),
            detector,
            timeout: Duration::from_millis(config.reply_timeout_ms),
            metrics: env.node_metrics(node),
        }
    }

    /// Sets the pool's gauges, after a job started or ended or a worker came or went.
    fn show(&self) {
        if let Some(metrics) = &self.metrics {
            let load = self.load();
            metrics.workers.set(i64::try_from(load.workers).unwrap_or(i64::MAX));
            metrics.in_flight.set(i64::try_from(load.in_flight).unwrap_or(i64::MAX));
        }
    }

    fn start_workers(&mut self, ctx: &mut Context<Self>) {
        self.slots = (0..self.settings.initial).map(|slot| self.spawn(slot, ctx.address())).collect();
        self.show();
    }

    /// Starts a worker for `slot` on a thread of its own; it stops (and ends its thread) when a
    /// job breaks it or when the pool drops its address and its queue is done.
    fn spawn(&self, slot: usize, pool: Addr<WorkerPool>) -> Slot {
        let worker = Worker::start_in_arbiter(&Arbiter::new().handle(), move |_| Worker { slot, pool, broken: None });
        Slot::Running { worker, in_flight: 0 }
    }

    fn load(&self) -> PoolLoad {
        let (mut workers, mut in_flight) = (0, 0);
        for slot in &self.slots {
            if let Slot::Running { in_flight: n, .. } = slot {
                workers += 1;
                in_flight += n;
            }
        }
        PoolLoad {
            workers,
            stopped: self.slots.len() - workers,
            in_flight,
            assigned: self.shares.values().sum(),
            remaining_j: self.gate.budget().remaining().get(),
        }
    }
}

/// The pool's operations: a job costs 1 J by default plus what it measures; the managers'
/// requests cost the pool nothing (the managers are charged for them).
#[gated(
    error = PoolError,
    scope = SCOPE,
    budget = 10000.0,
    grants = [ResourceManagement, ScalingManagement, DistributionManagement, RecoveryManagement, FailureHandling, EnergyManagement],
    mailbox = 4096,
    reply_timeout_ms = 5000,
    settings = PoolSettings,
    started = start_workers
)]
impl WorkerPool {
    /// Runs a job on the least busy worker.
    #[operation(requires = [ResourceManagement], cost = 1.0, resource = "job")]
    fn work(&mut self, msg: Work) -> Pending<Self, Vec<u8>, PoolError> {
        let least_busy = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Running { worker, in_flight } => Some((i, worker, in_flight)),
                Slot::Stopped => None,
            })
            .min_by_key(|(_, _, in_flight)| **in_flight);
        let Some((slot, worker, in_flight)) = least_busy else {
            let reason = format!("no worker is running; {} are stopped, waiting for a restart", self.slots.len());
            return Box::pin(fut::ready(Err(PoolError::JobFailed(reason))));
        };
        *in_flight += 1;
        let run = worker.send(Run(msg.job)).timeout(self.timeout);
        self.show();
        Box::pin(fut::wrap_future(run).map(move |answer, pool: &mut Self, _| {
            if let Some(Slot::Running { in_flight, .. }) = pool.slots.get_mut(slot) {
                *in_flight = in_flight.saturating_sub(1);
            }
            pool.show();
            match answer {
                Ok(result) => result.map_err(PoolError::JobFailed),
                Err(e) => Err(PoolError::JobFailed(format!("worker-{slot} did not answer: {e}"))),
            }
        }))
    }

    /// Grows or shrinks the pool.
    #[operation(
        requires = [ScalingManagement],
        cost = 0.0,
        resource = "workers",
        validate = if msg.workers == 0 { Err(PoolError::InvalidRequest("a pool needs at least one worker".into())) } else { Ok(()) }
    )]
    fn resize(&mut self, msg: Resize, ctx: &mut Context<Self>) -> Result<usize, PoolError> {
        if msg.workers > self.settings.max {
            return Err(PoolError::ResizeRefused(format!(
                "worker-pool/{} holds at most {} workers (worker_pool.max); {} were asked",
                self.node, self.settings.max, msg.workers
            )));
        }
        // Shrinking drops the last workers' addresses; each stops once its queue is done.
        self.slots.truncate(msg.workers);
        while self.slots.len() < msg.workers {
            let slot = self.spawn(self.slots.len(), ctx.address());
            self.slots.push(slot);
        }
        self.show();
        Ok(msg.workers)
    }

    /// Starts a fresh worker in place of a stopped one.
    #[operation(requires = [RecoveryManagement], cost = 0.0, resource = &msg.worker, validate = Ok(rules.id("worker", &msg.worker)?))]
    fn restart(&mut self, msg: Restart, ctx: &mut Context<Self>) -> Result<String, PoolError> {
        let slot = msg.worker.strip_prefix("worker-").and_then(|n| n.parse::<usize>().ok());
        match slot.and_then(|i| self.slots.get(i).map(|s| (i, s))) {
            None => Err(PoolError::InvalidRequest(format!(
                "worker-pool/{} has no {:?}; its workers are worker-0 to worker-{}",
                self.node,
                msg.worker,
                self.slots.len().saturating_sub(1)
            ))),
            Some((_, Slot::Running { .. })) => Ok(format!("{} is running; nothing to restart", msg.worker)),
            Some((i, Slot::Stopped)) => {
                self.slots[i] = self.spawn(i, ctx.address());
                Ok(format!("restarted {} of worker-pool/{}", msg.worker, self.node))
            }
        }
    }

    /// Takes this node's share of a distributed load; answers the load assigned over all
    /// distributions.
    #[operation(
        requires = [DistributionManagement],
        cost = 0.0,
        resource = &msg.distribution,
        validate = {
            rules.id("distribution", &msg.distribution)?;
            Ok(rules.non_negative("share", msg.share)?)
        }
    )]
    fn adjust(&mut self, msg: Adjust) -> Result<f64, PoolError> {
        let bound = self.settings.max_distributions;
        if msg.share == 0.0 {
            self.shares.remove(&msg.distribution);
        } else if self.shares.contains_key(&msg.distribution) || self.shares.len() < bound {
            self.shares.insert(msg.distribution, msg.share);
        } else {
            return Err(PoolError::InvalidRequest(format!(
                "worker-pool/{} holds shares of {bound} distributions, the most it keeps (worker_pool.max_distributions); {} is not taken",
                self.node, msg.distribution
            )));
        }
        Ok(self.shares.values().sum())
    }
}

impl Handler<WorkerStopped> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: WorkerStopped, _: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(msg.slot) else { return };
        *slot = Slot::Stopped;
        self.show();
        let Some(detector) = &self.detector else {
            tracing::warn!(node = self.node, "{} (no failure detector to report it to)", msg.reason);
            return;
        };
        let failure = Failure {
            node: self.node,
            kind: FailureKind::ActorStopped,
            subject: format!("worker-{}", msg.slot),
            time: SystemTime::now(),
            reason: msg.reason,
        };
        detector.do_send(Report { ctx: self.gate.identity(failure_detector::SCOPE), failure });
    }
}

impl Handler<ReadLoad> for WorkerPool {
    type Result = MessageResult<ReadLoad>;

    fn handle(&mut self, _: ReadLoad, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.load())
    }
}

impl Handler<Stop> for WorkerPool {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
