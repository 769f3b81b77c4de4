//! A cluster of nodes in one process: each node's consensus actor, its eight managers and its
//! worker pool, on a [`LocalNetwork`], with its Raft store in its own data directory. Tests, the
//! benchmark and the demo build on it; crash and restart are what they look like on a real
//! machine (the actors stop, the files stay).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Member, NodeId, ReplicaError};

use crate::managers::failure_detector::Peers;
pub use crate::node::assembly::ClusterNode;
use crate::node::consensus::{Consensus, Inspect, NodeView};
use crate::node::wait::eventually;
use crate::transport::LocalNetwork;
use crate::Environment;

/// N nodes in one process. Must be used inside an actix system.
pub struct LocalCluster {
    env: Environment,
    network: LocalNetwork,
    dir: PathBuf,
    voters: Vec<NodeId>,
    /// Nodes started after the founders, with no configuration of their own until they join.
    joiners: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, ClusterNode>,
}

impl LocalCluster {
    /// Starts nodes 1 to `n`, node `i` keeping its Raft store in `dir/node-i`; the network's
    /// losses are drawn from `seed`.
    pub async fn start(env: Environment, n: u64, dir: &Path, seed: u64) -> Result<Self, ReplicaError> {
        let mut cluster = LocalCluster {
            env,
            network: LocalNetwork::new(seed),
            dir: dir.to_owned(),
            voters: (1..=n).collect(),
            joiners: BTreeSet::new(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.boot(id).await?;
        }
        Ok(cluster)
    }

    /// Starts a node that is not a member yet, with an empty data directory: it takes part once a
    /// leader adds it (`ChangeMembership` with a join).
    pub async fn add(&mut self, id: NodeId) -> Result<(), ReplicaError> {
        self.joiners.insert(id);
        self.boot(id).await
    }

    /// Starts node `id` from its data directory. A node that was just crashed may still hold its
    /// store for a moment while its actor winds down; the open is retried for up to 2 s.
    pub async fn boot(&mut self, id: NodeId) -> Result<(), ReplicaError> {
        let dir = self.dir.join(format!("node-{id}"));
        let deadline = Instant::now() + Duration::from_secs(2);
        let founders: BTreeMap<NodeId, Member> = match self.joiners.contains(&id) {
            true => BTreeMap::new(),
            false => self.voters.iter().map(|&v| (v, Member::default())).collect(),
        };
        let consensus = loop {
            match Consensus::start(&self.env, id, &founders, &dir, Arc::new(self.network.clone())) {
                Ok(addr) => break addr,
                Err(_) if Instant::now() < deadline => actix::clock::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(e),
            }
        };
        let node = ClusterNode::start(&self.env, id, &self.voters, consensus, Arc::new(self.network.clone()));
        self.network.connect(id, node.inbox());
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Crashes node `id`: it leaves the network and its actors stop; its files stay.
    pub async fn crash(&mut self, id: NodeId) {
        self.network.disconnect(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.stop().await;
        }
    }

    /// The network, for injecting faults.
    pub fn network(&self) -> &LocalNetwork {
        &self.network
    }

    /// The nodes the cluster was founded with, up or down.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// The nodes that are up.
    pub fn up(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s actors, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&ClusterNode> {
        self.nodes.get(&id)
    }

    /// What each live node knows.
    pub async fn views(&self) -> Vec<NodeView> {
        let mut views = Vec::new();
        for node in self.nodes.values() {
            if let Ok(view) = node.consensus.send(Inspect).await {
                views.push(view);
            }
        }
        views
    }

    /// The leader that a majority of the cluster recognises in the highest term, waiting for one
    /// at most `within`.
    pub async fn leader(&self, within: Duration) -> Option<NodeId> {
        let recognised = || async {
            let views = self.views().await;
            let max_term = views.iter().map(|v| v.term).max().unwrap_or(0);
            let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
            for leader in views.iter().filter(|v| v.term == max_term).filter_map(|v| v.leader) {
                *votes.entry(leader).or_default() += 1;
            }
            // A majority of the voters the leader itself has applied.
            let quorum = |leader: NodeId| views.iter().find(|v| v.id == leader).map_or(usize::MAX, |v| v.voters.len() / 2 + 1);
            votes.into_iter().find(|&(l, n)| n >= quorum(l) && self.nodes.contains_key(&l)).map(|(l, _)| l)
        };
        eventually(within, Duration::from_millis(2), recognised).await
    }

    /// Waits at most `within` until every live node's failure detector has had a heartbeat from
    /// every other live node reporting a running worker pool (so load can be placed on it).
    pub async fn heard(&self, within: Duration) -> bool {
        let everyone_heard = || async {
            for node in self.nodes.values() {
                let peers = node.detector.send(Peers).await.ok()?;
                let live: Vec<_> = peers.iter().filter(|p| self.nodes.contains_key(&p.node)).collect();
                let heard = live.len() == self.nodes.len() && live.iter().all(|p| p.vitals.is_some_and(|v| v.capacity > 0.0));
                heard.then_some(())?;
            }
            Some(())
        };
        eventually(within, Duration::from_millis(10), everyone_heard).await.is_some()
    }

    /// Waits at most `within` until every live node has applied `version`.
    pub async fn converged(&self, version: u64, within: Duration) -> bool {
        let applied = || async { self.views().await.iter().all(|v| v.state.version >= version).then_some(()) };
        eventually(within, Duration::from_millis(10), applied).await.is_some()
    }
}
