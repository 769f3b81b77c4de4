//! One node's actors, started together: its consensus actor's peers (eight managers and a worker
//! pool) wired to one another and to a transport. [`LocalCluster`](super::local_cluster::LocalCluster)
//! starts several in one process; a node process starts one.

use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext, Context};
use cluster::NodeId;

use crate::managers::communication::CommunicationManager;
use crate::managers::failure_detector::FailureDetector;
use crate::managers::leader_election::LeaderElection;
use crate::managers::load_distributor::LoadDistributor;
use crate::managers::node_manager::NodeManager;
use crate::managers::recovery_manager::{Links, RecoveryManager};
use crate::managers::resource_scaler::ResourceScaler;
use crate::managers::state_replicator::StateReplicator;
use crate::managers::worker_pool::WorkerPool;
use crate::node::consensus::Consensus;
use crate::node::Stop;
use crate::transport::{Inbox, Transport};
use crate::Environment;

/// One node's actors.
#[derive(Clone)]
pub struct ClusterNode {
    /// Its consensus actor.
    pub consensus: Addr<Consensus>,
    /// Its node manager (named `node-manager/<id>`).
    pub nodes: Addr<NodeManager>,
    /// Its communication manager.
    pub communication: Addr<CommunicationManager>,
    /// Its leader election manager.
    pub election: Addr<LeaderElection>,
    /// Its state replication manager.
    pub replicator: Addr<StateReplicator>,
    /// Its failure detector.
    pub detector: Addr<FailureDetector>,
    /// Its recovery manager.
    pub recovery: Addr<RecoveryManager>,
    /// Its load distributor.
    pub distributor: Addr<LoadDistributor>,
    /// Its resource scaler, managing the pool as resource `workers`.
    pub scaler: Addr<ResourceScaler>,
    /// Its worker pool.
    pub pool: Addr<WorkerPool>,
}

impl ClusterNode {
    /// Starts node `id`'s managers and worker pool around its running `consensus` actor, in a
    /// cluster of `voters`, reaching peers through `transport`. Connect [`ClusterNode::inbox`]
    /// to the transport so that peers reach them.
    pub fn start(env: &Environment, id: NodeId, voters: &[NodeId], consensus: Addr<Consensus>, transport: Arc<dyn Transport>) -> Self {
        // The detector, pool and recovery manager refer to one another: their addresses exist
        // before they run.
        let (detector_cx, recovery_cx) = (Context::<FailureDetector>::new(), Context::<RecoveryManager>::new());
        let (detector, recovery) = (detector_cx.address(), recovery_cx.address());
        let pool = WorkerPool::new(env, id, Some(detector.clone().recipient())).start();
        let election = LeaderElection::new(env, id, consensus.clone()).start();
        let distributor = LoadDistributor::new(env, id, detector.clone(), transport.clone()).start();
        let links = Links {
            consensus: consensus.clone(),
            election: election.clone(),
            detector: detector.clone(),
            distributor: distributor.clone(),
            pool: pool.clone(),
        };
        recovery_cx.run(RecoveryManager::new(env, id, links));
        let watcher = FailureDetector::new(
            env,
            id,
            voters,
            transport,
            consensus.clone(),
            Some(pool.clone().recipient()),
            Some(recovery.clone()),
        );
        detector_cx.run(watcher);
        ClusterNode {
            nodes: NodeManager::new(env, &id.to_string()).with_consensus(consensus.clone()).start(),
            communication: CommunicationManager::new(env, &id.to_string()).start(),
            replicator: StateReplicator::new(env, id, consensus.clone()).start(),
            scaler: ResourceScaler::new(env, id, [("workers".to_owned(), pool.clone())]).start(),
            consensus,
            election,
            detector,
            recovery,
            distributor,
            pool,
        }
    }

    /// Where the transport hands this node's incoming messages, and reports what it lost.
    pub fn inbox(&self) -> Inbox {
        Inbox::new(self.consensus.clone().recipient())
            .with_heartbeats(self.detector.clone().recipient())
            .with_adjustments(self.pool.clone().recipient())
            .with_undelivered(self.consensus.clone().recipient())
    }

    /// Stops the actors that run on timers; the others stop as their addresses drop.
    pub async fn stop(self) {
        let _ = self.detector.send(Stop).await;
        let _ = self.pool.send(Stop).await;
        let _ = self.consensus.send(Stop).await;
    }
}
