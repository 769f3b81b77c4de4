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
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};

use crate::config::PoolSettings;
use crate::consensus::Stop;
use crate::failure_detector::{self, Failure, FailureKind, Report};
use crate::gate::{self, Gate, Operation, Rules};
use crate::Environment;

/// The scope worker pools act in.
pub const SCOPE: &str = "resource_management";

/// Why a pool request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum PoolError {
    /// The job panicked (its worker is stopped and reported), or no worker could run it.
    #[error("job failed: {0}")]
    JobFailed(String),
    /// The pool cannot take the asked size.
    #[error("resize refused: {0}")]
    ResizeRefused(String),
    /// The requester or the pool lacks a required capability.
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

crate::gate_error!(PoolError);

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
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<u8>, PoolError>")]
pub struct Submit {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The work.
    pub job: Job,
}

/// Grows or shrinks the pool to `workers`. Requires `ScalingManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<usize, PoolError>")]
pub struct Resize {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The new size.
    pub workers: usize,
}

/// Starts a fresh worker in place of a stopped one (named as in its failure report,
/// `worker-2`). Requires `RecoveryManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, PoolError>")]
pub struct RestartWorker {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The stopped worker.
    pub worker: String,
}

/// This node's share of a distributed load, sent by a load distributor over the transport.
/// Requires `DistributionManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<f64, PoolError>")]
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

impl Operation for Submit {
    type Output = Vec<u8>;
    type Error = PoolError;
    const NAME: &'static str = "work";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ResourceManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "job"
    }
}

impl Operation for Resize {
    type Output = usize;
    type Error = PoolError;
    const NAME: &'static str = "resize";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ScalingManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "workers"
    }

    fn validate(&self, _: &Rules<'_>) -> Result<(), PoolError> {
        if self.workers == 0 {
            return Err(PoolError::InvalidRequest("a pool needs at least one worker".into()));
        }
        Ok(())
    }
}

impl Operation for RestartWorker {
    type Output = String;
    type Error = PoolError;
    const NAME: &'static str = "restart";
    const REQUIRES: CapSet = CapSet::of(&[Capability::RecoveryManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.worker
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), PoolError> {
        rules.id("worker", &self.worker).map_err(PoolError::InvalidRequest)
    }
}

impl Operation for Adjust {
    type Output = f64;
    type Error = PoolError;
    const NAME: &'static str = "adjust";
    const REQUIRES: CapSet = CapSet::of(&[Capability::DistributionManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.distribution
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), PoolError> {
        rules.id("distribution", &self.distribution).map_err(PoolError::InvalidRequest)?;
        if !(self.share.is_finite() && self.share >= 0.0) {
            return Err(PoolError::InvalidRequest(format!("share {} is not a finite, non-negative load", self.share)));
        }
        Ok(())
    }
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
}

impl WorkerPool {
    /// Operations and their default base costs: a job is 1 J plus what it measures; the
    /// managers' requests cost the pool nothing (they are charged by the managers).
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] = &[
        (Submit::NAME, 1.0),
        (Resize::NAME, 0.0),
        (RestartWorker::NAME, 0.0),
        (Adjust::NAME, 0.0),
        ("top_up", 0.0),
        ("status", 0.0),
    ];

    /// The pool of node `node`, named `worker-pool/<node>`; stopped workers are reported to
    /// `detector`.
    pub fn new(env: &Environment, node: NodeId, detector: Option<Recipient<Report>>) -> Self {
        let config = &env.config().worker_pool;
        WorkerPool {
            gate: env.gate(&format!("worker-pool/{node}"), SCOPE, config),
            node,
            settings: env.config().workers,
            slots: Vec::new(),
            shares: BTreeMap::new(),
            detector,
            timeout: Duration::from_millis(config.reply_timeout_ms),
        }
    }

    fn start_workers(&mut self, ctx: &mut Context<Self>) {
        self.slots = (0..self.settings.initial).map(|slot| self.spawn(slot, ctx.address())).collect();
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

crate::gated_actor!(WorkerPool, start_workers);

impl Handler<Submit> for WorkerPool {
    type Result = ResponseActFuture<Self, Result<Vec<u8>, PoolError>>;

    fn handle(&mut self, msg: Submit, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |pool, msg| -> ResponseActFuture<Self, _> {
            let least_busy = pool
                .slots
                .iter_mut()
                .enumerate()
                .filter_map(|(i, slot)| match slot {
                    Slot::Running { worker, in_flight } => Some((i, worker, in_flight)),
                    Slot::Stopped => None,
                })
                .min_by_key(|(_, _, in_flight)| **in_flight);
            let Some((slot, worker, in_flight)) = least_busy else {
                let reason = format!("no worker is running; {} are stopped, waiting for a restart", pool.slots.len());
                return Box::pin(fut::ready(Err(PoolError::JobFailed(reason))));
            };
            *in_flight += 1;
            let run = worker.send(Run(msg.job)).timeout(pool.timeout);
            Box::pin(fut::wrap_future(run).map(move |answer, pool: &mut Self, _| {
                if let Some(Slot::Running { in_flight, .. }) = pool.slots.get_mut(slot) {
                    *in_flight = in_flight.saturating_sub(1);
                }
                match answer {
                    Ok(result) => result.map_err(PoolError::JobFailed),
                    Err(e) => Err(PoolError::JobFailed(format!("worker-{slot} did not answer: {e}"))),
                }
            }))
        })
    }
}

impl Handler<Resize> for WorkerPool {
    type Result = Result<usize, PoolError>;

    fn handle(&mut self, msg: Resize, ctx: &mut Context<Self>) -> Self::Result {
        let me = ctx.address();
        gate::run(self, msg, |pool, msg| {
            if msg.workers > pool.settings.max {
                return Err(PoolError::ResizeRefused(format!(
                    "worker-pool/{} holds at most {} workers (workers.max); {} were asked",
                    pool.node, pool.settings.max, msg.workers
                )));
            }
            // Shrinking drops the last workers' addresses; each stops once its queue is done.
            pool.slots.truncate(msg.workers);
            while pool.slots.len() < msg.workers {
                let slot = pool.spawn(pool.slots.len(), me.clone());
                pool.slots.push(slot);
            }
            Ok(msg.workers)
        })
    }
}

impl Handler<RestartWorker> for WorkerPool {
    type Result = Result<String, PoolError>;

    fn handle(&mut self, msg: RestartWorker, ctx: &mut Context<Self>) -> Self::Result {
        let me = ctx.address();
        gate::run(self, msg, |pool, msg| {
            let slot = msg.worker.strip_prefix("worker-").and_then(|n| n.parse::<usize>().ok());
            match slot.and_then(|i| pool.slots.get(i).map(|s| (i, s))) {
                None => Err(PoolError::InvalidRequest(format!(
                    "worker-pool/{} has no {:?}; its workers are worker-0 to worker-{}",
                    pool.node,
                    msg.worker,
                    pool.slots.len().saturating_sub(1)
                ))),
                Some((_, Slot::Running { .. })) => Ok(format!("{} is running; nothing to restart", msg.worker)),
                Some((i, Slot::Stopped)) => {
                    pool.slots[i] = pool.spawn(i, me);
                    Ok(format!("restarted {} of worker-pool/{}", msg.worker, pool.node))
                }
            }
        })
    }
}

impl Handler<Adjust> for WorkerPool {
    type Result = Result<f64, PoolError>;

    fn handle(&mut self, msg: Adjust, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |pool, msg| {
            pool.shares.insert(msg.distribution, msg.share);
            Ok(pool.shares.values().sum())
        })
    }
}

impl Handler<WorkerStopped> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: WorkerStopped, _: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(msg.slot) else { return };
        *slot = Slot::Stopped;
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

crate::common_handlers!(WorkerPool, PoolError);
