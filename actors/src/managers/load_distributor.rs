//! The load distributor: spreads a load over the live nodes in
//! proportion to capacity x remaining energy ([`cluster::placement`]), so a node that is running
//! out of joules is given less before it runs out.
//!
//! What it knows of each node comes from the failure detector's view: who is alive, and what
//! each node's heartbeats report (its worker pool's running workers and remaining budget). Each
//! node is sent its share over the transport as an [`Adjust`] to its worker pool; a share that
//! cannot be delivered fails the request with `AdjustmentFailed`, and only a distribution that
//! reached every node is recorded. [`Rebalance`] spreads every recorded load again over the nodes
//! alive now: the recovery manager's way to move work off a dead node.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use cluster::placement::{distribute, Candidate, PlacementError};
use cluster::NodeId;
use security::SecurityContext;
use serde::Serialize;

use crate::gate::{Gate, Pending};
use crate::managers::failure_detector::{FailureDetector, PeerView, Peers};
use crate::managers::worker_pool;
pub use crate::managers::worker_pool::Adjust;
use crate::transport::{Envelope, Transport};
use crate::{gate_error, gated, Environment};

/// The scope load distributors act in.
pub const SCOPE: &str = "distribution_management";

/// Why a distribution request failed, besides the gate's refusals.
#[gate_error]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    /// A node could not be sent its share, or no live node can take the load.
    #[error("adjustment failed: {0}")]
    AdjustmentFailed(String),
}

/// Spreads `load` over the live nodes and records it as distribution `id` (replacing an earlier
/// one of that id). Requires `DistributionManagement`.
#[derive(Debug, Clone)]
pub struct Distribute {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The distribution's name (`ingest`).
    pub id: String,
    /// The load, in any unit the application uses (requests per second, jobs).
    pub load: f64,
}

/// Spreads every recorded load again over the nodes alive now. Requires
/// `DistributionManagement`.
#[derive(Debug, Clone)]
pub struct Rebalance {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// The recorded distributions. Requires `DistributionManagement`.
#[derive(Debug, Clone)]
pub struct Distributions {
    /// Who asks.
    pub ctx: SecurityContext,
}

/// The load distributor's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct DistributorSettings {
    /// Distributions recorded at once; a new one past it is refused (`InvalidRequest`), while
    /// recorded ones may be distributed again.
    pub max_distributions: usize,
}

impl Default for DistributorSettings {
    fn default() -> Self {
        DistributorSettings { max_distributions: 1024 }
    }
}

/// A load and each node's share of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// Its name.
    pub id: String,
    /// The whole load.
    pub load: f64,
    /// Each live node's share.
    pub shares: BTreeMap<NodeId, f64>,
}

/// The load distributor of one node.
pub struct LoadDistributor {
    gate: Gate,
    node: NodeId,
    detector: Addr<FailureDetector>,
    transport: Arc<dyn Transport>,
    distributions: BTreeMap<String, Distribution>,
    max_distributions: usize,
}

impl LoadDistributor {
    /// The distributor of node `node`, named `load-distributor/<node>`, seeing the cluster
    /// through `detector` and reaching the nodes through `transport`.
    pub fn new(env: &Environment, node: NodeId, detector: Addr<FailureDetector>, transport: Arc<dyn Transport>) -> Self {
        LoadDistributor {
            gate: env.gate::<Self>(&format!("load-distributor/{node}"), &env.config().load_distributor),
            node,
            detector,
            transport,
            distributions: BTreeMap::new(),
            max_distributions: env.config().load_distributor.settings.max_distributions,
        }
    }

    /// Computes the shares of `load` over the live nodes in `peers` and sends each node its own;
    /// nothing is recorded unless every node took it.
    fn place(&mut self, id: &str, load: f64, peers: &[PeerView]) -> Result<Distribution, DistributionError> {
        let candidates: Vec<Candidate> = peers
            .iter()
            .filter(|p| p.alive)
            .filter_map(|p| p.vitals.map(|v| Candidate { node: p.node, capacity: v.capacity, remaining_j: v.remaining_j }))
            .collect();
        let shares = distribute(load, &candidates).map_err(|e| match e {
            PlacementError::NoCapacity(_) => DistributionError::AdjustmentFailed(format!(
                "{e} (live nodes that have reported: {:?})",
                candidates.iter().map(|c| c.node).collect::<Vec<_>>()
            )),
            other => DistributionError::InvalidRequest(other.to_string()),
        })?;
        let ctx = self.gate.identity(worker_pool::SCOPE);
        let unsent: Vec<String> = shares
            .iter()
            .filter_map(|(&node, &share)| {
                let adjust = Adjust { ctx: ctx.clone(), distribution: id.to_owned(), share };
                self.transport.send(self.node, node, Envelope::Adjust(adjust)).err().map(|e| e.to_string())
            })
            .collect();
        if !unsent.is_empty() {
            return Err(DistributionError::AdjustmentFailed(format!("{id}: {}", unsent.join("; "))));
        }
        let distribution = Distribution { id: id.to_owned(), load, shares };
        self.distributions.insert(id.to_owned(), distribution.clone());
        Ok(distribution)
    }

    /// Runs `body` with the detector's current view of the cluster.
    fn with_peers<T: 'static>(
        &mut self,
        body: impl FnOnce(&mut Self, Vec<PeerView>) -> Result<T, DistributionError> + 'static,
    ) -> Pending<Self, T, DistributionError> {
        Box::pin(fut::wrap_future(self.detector.send(Peers)).map(|peers, distributor: &mut Self, _| match peers {
            Ok(peers) => body(distributor, peers),
            Err(e) => Err(DistributionError::AdjustmentFailed(format!("the failure detector is gone: {e}"))),
        }))
    }
}

/// The load distributor's operations: a distribution costs 40 J by default, and so does a
/// rebalance, which is one or more distributions; listing them costs nothing.
#[gated(
    error = DistributionError,
    scope = SCOPE,
    budget = 7000.0,
    grants = [DistributionManagement, NodeManagement, EnergyManagement],
    settings = DistributorSettings
)]
impl LoadDistributor {
    /// Spreads a load over the live nodes and records it under its id.
    #[operation(
        requires = [DistributionManagement],
        cost = 40.0,
        resource = &msg.id,
        validate = {
            rules.id("distribution id", &msg.id)?;
            Ok(rules.non_negative("load", msg.load)?)
        }
    )]
    fn distribute(&mut self, msg: Distribute) -> Pending<Self, Distribution, DistributionError> {
        if !self.distributions.contains_key(&msg.id) && self.distributions.len() >= self.max_distributions {
            let reason = format!(
                "{} distributions are recorded, the most this distributor keeps (load_distributor.max_distributions); {} is not taken",
                self.distributions.len(),
                msg.id
            );
            return Box::pin(fut::ready(Err(DistributionError::InvalidRequest(reason))));
        }
        self.with_peers(move |distributor, peers| distributor.place(&msg.id, msg.load, &peers))
    }

    /// Spreads every recorded load again over the nodes alive now.
    #[operation(requires = [DistributionManagement], cost = 40.0, resource = "distributions")]
    fn rebalance(&mut self, _msg: Rebalance) -> Pending<Self, Vec<Distribution>, DistributionError> {
        self.with_peers(|distributor, peers| {
            let loads: Vec<(String, f64)> = distributor.distributions.values().map(|d| (d.id.clone(), d.load)).collect();
            loads.into_iter().map(|(id, load)| distributor.place(&id, load, &peers)).collect()
        })
    }

    /// The recorded distributions.
    #[operation(requires = [DistributionManagement], cost = 0.0, resource = "distributions")]
    fn distributions(&mut self, _msg: Distributions) -> Result<Vec<Distribution>, DistributionError> {
        Ok(self.distributions.values().cloned().collect())
    }
}
