//! The resource scaler: when a resource's metric is above the threshold, it resizes the resource
//! by the factor.
//!
//! A resource is a worker pool registered under a name (a node's own pool is `workers`); its
//! metrics are what the pool reports ([`PoolLoad::metric`]: `queue_depth`, `utilization`,
//! `workers`, `assigned`). Scaling is a real action: the pool starts or stops worker actors. The
//! new size is `ceil(workers x factor)`; a size beyond the pool's `workers.max` fails with
//! `ScalingFailed` and leaves the pool as it was.

use std::collections::BTreeMap;

use actix::prelude::*;
use cluster::NodeId;
use security::SecurityContext;
use serde::Serialize;

use crate::gate::{Gate, Pending, Rules};
use crate::managers::worker_pool::{self, PoolLoad, ReadLoad, Resize, WorkerPool};
use crate::{gate_error, gated, Environment};

/// The scope resource scalers act in.
pub const SCOPE: &str = "scaling_management";

/// Why a scaling request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalingError {
    /// No resource of that name is registered.
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    /// The resource has no such metric.
    #[error("metric not found: {0}")]
    MetricNotFound(String),
    /// The resource refused the new size, or could not be reached.
    #[error("scaling failed: {0}")]
    ScalingFailed(String),
}

/// Scales `resource` by `factor` if its `metric` is above `threshold`. Requires `ScalingManagement` and `ResourceManagement`.
#[derive(Debug, Clone)]
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

/// The resource scaler of one node.
pub struct ResourceScaler {
    gate: Gate,
    resources: BTreeMap<String, Addr<WorkerPool>>,
}

impl ResourceScaler {
    /// The scaler of node `node`, named `resource-scaler/<node>`, managing `resources`.
    pub fn new(env: &Environment, node: NodeId, resources: impl IntoIterator<Item = (String, Addr<WorkerPool>)>) -> Self {
        ResourceScaler {
            gate: env.gate::<Self>(&format!("resource-scaler/{node}"), &env.config().resource_scaler),
            resources: resources.into_iter().collect(),
        }
    }
}

/// The resource scaler's operation: a scaling decision costs 45 J by default.
#[gated(error = ScalingError, scope = SCOPE, budget = 8000.0, grants = [ScalingManagement, ResourceManagement, EnergyManagement])]
impl ResourceScaler {
    /// Reads the resource's metric and, if it is above the threshold, resizes the resource.
    #[operation(requires = [ScalingManagement, ResourceManagement], cost = 45.0, resource = &msg.resource, validate = validate_scale(msg, rules))]
    fn scale(&mut self, msg: Scale) -> Pending<Self, Scaling, ScalingError> {
        let Some(pool) = self.resources.get(&msg.resource).cloned() else {
            let known: Vec<_> = self.resources.keys().cloned().collect();
            let reason = format!("{:?} is not registered; this scaler manages {known:?}", msg.resource);
            return Box::pin(fut::ready(Err(ScalingError::ResourceNotFound(reason))));
        };
        let ctx = self.gate.identity(worker_pool::SCOPE);
        let decide = async move {
            let load: PoolLoad =
                pool.send(ReadLoad).await.map_err(|e| ScalingError::ScalingFailed(format!("{} is gone: {e}", msg.resource)))?;
            let value = load.metric(&msg.metric).ok_or_else(|| {
                ScalingError::MetricNotFound(format!(
                    "{} has no metric {:?}; it has {:?}",
                    msg.resource,
                    msg.metric,
                    PoolLoad::METRICS
                ))
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
    }
}

fn validate_scale(msg: &Scale, rules: &Rules<'_>) -> Result<(), ScalingError> {
    rules.id("resource", &msg.resource)?;
    rules.id("metric", &msg.metric)?;
    if !msg.threshold.is_finite() {
        return Err(ScalingError::InvalidRequest(format!("threshold {} is not a finite number", msg.threshold)));
    }
    if !(msg.factor.is_finite() && msg.factor > 0.0) {
        return Err(ScalingError::InvalidRequest(format!("factor {} is not a finite, positive number", msg.factor)));
    }
    Ok(())
}
