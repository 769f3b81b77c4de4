//! The resource scaler (the tutorial's section 4.2): when a resource's metric is above the
//! threshold, resize it by the factor.
//!
//! A resource is a worker pool registered under a name (a node's own pool is `workers`); its
//! metrics are what the pool reports ([`PoolLoad::metric`]: `queue_depth`, `utilization`,
//! `workers`, `assigned`). Scaling is a real action: the pool starts or stops worker actors. The
//! new size is `ceil(workers x factor)`; a size beyond the pool's `workers.max` fails with
//! `ScalingFailed` and leaves the pool as it was.

use std::collections::BTreeMap;

use actix::prelude::*;
use cluster::NodeId;
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};
use serde::Serialize;

use crate::gate::{self, Gate, Operation, Rules};
use crate::worker_pool::{self, PoolLoad, ReadLoad, Resize, WorkerPool};
use crate::Environment;

/// The scope resource scalers act in.
pub const SCOPE: &str = "scaling_management";

/// Why a scaling request failed (the tutorial's `ScalingError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum ScalingError {
    /// No resource of that name is registered.
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    /// The resource has no such metric.
    #[error("metric not found: {0}")]
    MetricNotFound(String),
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
    /// The resource refused the new size, or could not be reached.
    #[error("scaling failed: {0}")]
    ScalingFailed(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

crate::gate_error!(ScalingError);

/// Scales `resource` by `factor` if its `metric` is above `threshold` (the tutorial's
/// `ScaleRequest`). Requires `ScalingManagement` and `ResourceManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Scaling, ScalingError>")]
pub struct Scale {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The resource's name.
    pub resource: String,
    /// The metric to compare.
    pub metric: String,
    /// Scale only above this value.
    pub threshold: f64,
    /// New size = ceil(size x factor).
    pub factor: f64,
}

/// What a scaling request found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// The resource.
    pub resource: String,
    /// The metric's value.
    pub value: f64,
    /// Workers before.
    pub from: usize,
    /// Workers after (the same when the metric was not above the threshold).
    pub to: usize,
}

impl Operation for Scale {
    type Output = Scaling;
    type Error = ScalingError;
    const NAME: &'static str = "scale";
    const REQUIRES: CapSet = CapSet::of(&[Capability::ScalingManagement, Capability::ResourceManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.resource
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), ScalingError> {
        rules.id("resource", &self.resource).map_err(ScalingError::InvalidRequest)?;
        rules.id("metric", &self.metric).map_err(ScalingError::InvalidRequest)?;
        if !self.threshold.is_finite() {
            return Err(ScalingError::InvalidRequest(format!("threshold {} is not a finite number", self.threshold)));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(ScalingError::InvalidRequest(format!("factor {} is not a finite, positive number", self.factor)));
        }
        Ok(())
    }
}

/// The resource scaler of one node.
pub struct ResourceScaler {
    gate: Gate,
    resources: BTreeMap<String, Addr<WorkerPool>>,
}

impl ResourceScaler {
    /// Operations and their default base costs: a scaling decision is the tutorial's 45 J.
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] = &[(Scale::NAME, 45.0), ("top_up", 0.0), ("status", 0.0)];

    /// The scaler of node `node`, named `resource-scaler/<node>`, managing `resources`.
    pub fn new(env: &Environment, node: NodeId, resources: impl IntoIterator<Item = (String, Addr<WorkerPool>)>) -> Self {
        ResourceScaler {
            gate: env.gate(&format!("resource-scaler/{node}"), SCOPE, &env.config().resource_scaler),
            resources: resources.into_iter().collect(),
        }
    }
}

crate::gated_actor!(ResourceScaler);

impl Handler<Scale> for ResourceScaler {
    type Result = ResponseActFuture<Self, Result<Scaling, ScalingError>>;

    fn handle(&mut self, msg: Scale, _: &mut Context<Self>) -> Self::Result {
        gate::run_async(self, msg, |scaler, msg| -> ResponseActFuture<Self, _> {
            let Some(pool) = scaler.resources.get(&msg.resource).cloned() else {
                let known: Vec<_> = scaler.resources.keys().cloned().collect();
                let reason = format!("{:?} is not registered; this scaler manages {known:?}", msg.resource);
                return Box::pin(fut::ready(Err(ScalingError::ResourceNotFound(reason))));
            };
            let ctx = scaler.gate.identity(worker_pool::SCOPE);
            let decide = async move {
                let load: PoolLoad = pool.send(ReadLoad).await.map_err(|e| ScalingError::ScalingFailed(format!("{} is gone: {e}", msg.resource)))?;
                let value = load.metric(&msg.metric).ok_or_else(|| {
                    ScalingError::MetricNotFound(format!("{} has no metric {:?}; it has {:?}", msg.resource, msg.metric, PoolLoad::METRICS))
                })?;
                let from = load.workers;
                if value <= msg.threshold {
                    return Ok(Scaling { resource: msg.resource, value, from, to: from });
                }
                let to = ((from.max(1) as f64) * msg.factor).ceil().max(1.0) as usize;
                match pool.send(Resize { ctx, workers: to }).await {
                    Ok(Ok(to)) => Ok(Scaling { resource: msg.resource, value, from, to }),
                    Ok(Err(e)) => Err(ScalingError::ScalingFailed(e.to_string())),
                    Err(e) => Err(ScalingError::ScalingFailed(format!("{} is gone: {e}", msg.resource))),
                }
            };
            Box::pin(fut::wrap_future(decide))
        })
    }
}

crate::common_handlers!(ResourceScaler, ScalingError);
