//! Leader election and state replication on live actors: real time, real redb stores in temp
//! directories, the in-process network with injected faults.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actors::cluster::{NodeId, State};
use actors::consensus::{Consensus, Inspect, NodeView, Stop};
use actors::leader_election::{CurrentLeader, Elect, ElectionError, LeaderElection};
use actors::security::{CapSet, Capability};
use actors::state_replicator::{ReadState, Replicate, ReplicationError, StateReplicator};
use actors::transport::LocalNetwork;
use actors::Config;
use common::{World, MEASURED};

struct Node {
    consensus: Addr<Consensus>,
    election: Addr<LeaderElection>,
    replicator: Addr<StateReplicator>,
}

struct Cluster {
    world: World,
    network: LocalNetwork,
    dir: tempfile::TempDir,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    async fn start(n: u64, config: Config) -> Cluster {
        let world = World::new(config);
        use Capability::*;
        let all = [ElectionManagement, VoteManagement, ReplicationManagement, StateManagement, EnergyManagement];
        world.env.grants().grant("operator", CapSet::of(&all));
        world.env.grants().grant("reader", CapSet::of(&[StateManagement, ElectionManagement]));
        let mut cluster = Cluster {
            world,
            network: LocalNetwork::new(1),
            dir: tempfile::tempdir().unwrap(),
            voters: (1..=n).collect(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.boot(id).await;
        }
        cluster
    }

    /// Starts node `id` from its data directory (retrying while a crashed run still holds it).
    async fn boot(&mut self, id: NodeId) {
        let dir = self.dir.path().join(format!("node-{id}"));
        let deadline = Instant::now() + Duration::from_secs(2);
        let consensus = loop {
            match Consensus::start(&self.world.env, id, &self.voters, &dir, Arc::new(self.network.clone())) {
                Ok(addr) => break addr,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    actix::clock::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("node {id} cannot start: {e}"),
            }
        };
        self.network.connect(id, consensus.clone().recipient());
        let election = LeaderElection::new(&self.world.env, id, consensus.clone()).start();
        let replicator = StateReplicator::new(&self.world.env, id, consensus.clone()).start();
        self.nodes.insert(id, Node { consensus, election, replicator });
    }

    async fn crash(&mut self, id: NodeId) {
        self.network.disconnect(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.consensus.send(Stop).await.unwrap();
        }
    }

    async fn views(&self) -> Vec<NodeView> {
        let mut views = Vec::new();
        for node in self.nodes.values() {
            if let Ok(view) = node.consensus.send(Inspect).await {
                views.push(view);
            }
        }
        views
    }

    /// The node that leads a majority of the live nodes' views, once one does.
    async fn leader(&self, within: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + within;
        loop {
            let views = self.views().await;
            let max_term = views.iter().map(|v| v.term).max().unwrap_or(0);
            let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
            for v in views.iter().filter(|v| v.term == max_term) {
                if let Some(leader) = v.leader {
                    *votes.entry(leader).or_default() += 1;
                }
            }
            let quorum = self.voters.len() / 2 + 1;
            if let Some((&leader, _)) = votes.iter().find(|(l, &n)| n >= quorum && self.nodes.contains_key(l)) {
                return Some(leader);
            }
            if Instant::now() > deadline {
                return None;
            }
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn replicate(&self, via: NodeId, data: &str) -> Result<State, ReplicationError> {
        let ctx = self.world.ctx("operator", "replication_management");
        self.nodes[&via].replicator.send(Replicate { ctx, data: data.as_bytes().to_vec() }).await.unwrap()
    }

    async fn read(&self, id: NodeId) -> State {
        let ctx = self.world.ctx("operator", "replication_management");
        self.nodes[&id].replicator.send(ReadState { ctx }).await.unwrap().unwrap()
    }

    async fn elect(&self, via: NodeId, candidate: NodeId, principal: &str) -> Result<actors::consensus::Leadership, ElectionError> {
        let ctx = self.world.ctx(principal, "election_management");
        self.nodes[&via].election.send(Elect { ctx, candidate }).await.unwrap()
    }

    /// Waits until every live node has applied `version`.
    async fn converged(&self, version: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.views().await.iter().all(|v| v.state.version >= version) {
                return true;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

fn quick_timeouts() -> Config {
    let mut config = Config::default();
    config.leader_election.reply_timeout_ms = 600;
    config.state_replicator.reply_timeout_ms = 600;
    config
}

#[actix_rt::test]
async fn three_nodes_elect_a_leader_and_replicate_through_any_node() {
    let cluster = Cluster::start(3, Config::default()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.expect("a leader within 2 s");
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();

    let first = cluster.replicate(follower, "a=1").await.unwrap();
    assert_eq!((first.version, first.data.as_slice()), (1, &b"a=1"[..]), "a follower forwards to the leader");
    let second = cluster.replicate(leader, "a=2").await.unwrap();
    assert_eq!(second.version, 2);
    assert!(cluster.converged(2, Duration::from_secs(1)).await);
    for &id in cluster.nodes.keys() {
        assert_eq!(cluster.read(id).await, second);
    }

    // Each update is charged the tutorial's 25 J plus what the meter measured.
    let charged: Vec<f64> =
        cluster.world.entries().iter().filter(|e| e.operation == "replicate").map(|e| e.charged()).collect();
    assert_eq!(charged, vec![25.0 + MEASURED, 25.0 + MEASURED]);
}

#[actix_rt::test]
async fn after_the_leader_crashes_a_new_leader_accepts_writes_within_two_seconds() {
    for n in [3, 5] {
        let mut cluster = Cluster::start(n, Config::default()).await;
        let old = cluster.leader(Duration::from_secs(2)).await.expect("a first leader");
        cluster.replicate(old, "before").await.unwrap();
        cluster.crash(old).await;
        let crashed = Instant::now();
        let new = cluster.leader(Duration::from_secs(2)).await.expect("a new leader within 2 s");
        assert_ne!(new, old);
        let state = cluster.replicate(new, "after").await.unwrap();
        let failover = crashed.elapsed();
        assert!(failover < Duration::from_secs(2), "{n} nodes: failover took {failover:?}");
        assert_eq!((state.version, state.data.as_slice()), (2, &b"after"[..]));
    }
}

#[actix_rt::test]
async fn a_cut_off_leader_cannot_commit_and_catches_up_after_healing() {
    let cluster = Cluster::start(3, quick_timeouts()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    cluster.replicate(leader, "v1").await.unwrap();
    cluster.network.partition(&[leader]);

    let err = cluster.replicate(leader, "lost").await.unwrap_err();
    assert!(matches!(err, ReplicationError::ReplicaUpdateFailed(_)), "{err:?}");
    let majority = loop {
        let l = cluster.leader(Duration::from_secs(2)).await.expect("the majority elects a leader");
        if l != leader {
            break l;
        }
        actix::clock::sleep(Duration::from_millis(20)).await;
    };
    let v = cluster.replicate(majority, "v2").await.unwrap();

    cluster.network.heal();
    assert!(cluster.converged(v.version, Duration::from_secs(2)).await, "the old leader did not catch up");
    assert_eq!(cluster.read(leader).await.data, b"v2");
    // The refused update is charged nothing beyond what ran: a failure is audited, not debited twice.
    let failed = cluster.world.entries().into_iter().find(|e| e.error.as_deref() == Some("ReplicaUpdateFailed"));
    assert!(failed.is_some(), "the failed update is in the audit log");
}

#[actix_rt::test]
async fn every_replication_error_is_reachable() {
    let mut config = quick_timeouts();
    config.limits.max_payload_bytes = 8;
    config.state_replicator.budget_joules = common::j(60.0);
    let cluster = Cluster::start(3, config).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    let r = &cluster.nodes[&leader].replicator;

    let ctx = cluster.world.ctx("reader", "replication_management");
    let err = r.send(Replicate { ctx, data: b"x".to_vec() }).await.unwrap().unwrap_err();
    assert!(matches!(err, ReplicationError::PermissionDenied(_)), "{err:?}");

    let err = cluster.replicate(leader, "far too long").await.unwrap_err();
    assert!(matches!(err, ReplicationError::InvalidRequest(ref m) if m.contains("data is 12 bytes")), "{err:?}");

    cluster.replicate(leader, "1").await.unwrap();
    cluster.replicate(leader, "2").await.unwrap();
    let err = cluster.replicate(leader, "3").await.unwrap_err();
    assert!(matches!(err, ReplicationError::InsufficientEnergy { .. }), "{err:?}");

    // Every other node is gone: no quorum.
    let mut cluster = cluster;
    let others: Vec<NodeId> = cluster.nodes.keys().copied().filter(|&id| id != leader).collect();
    for id in others {
        cluster.crash(id).await;
    }
    let ctx = cluster.world.ctx("operator", "replication_management");
    let topped = cluster.nodes[&leader].replicator.send(actors::TopUp::new(ctx, common::j(100.0))).await.unwrap();
    assert!(topped.is_ok());
    let err = cluster.replicate(leader, "4").await.unwrap_err();
    assert!(matches!(err, ReplicationError::ReplicaUpdateFailed(_)), "{err:?}");
}

#[actix_rt::test]
async fn every_election_error_is_reachable() {
    let mut config = quick_timeouts();
    config.leader_election.budget_joules = common::j(60.0);
    let cluster = Cluster::start(3, config).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();

    // The leader standing again simply keeps its leadership.
    let won = cluster.elect(leader, leader, "operator").await.unwrap();
    assert_eq!(won.leader, leader);
    let ctx = cluster.world.ctx("operator", "election_management");
    let known = cluster.nodes[&follower].election.send(CurrentLeader { ctx }).await.unwrap().unwrap();
    assert_eq!(known.map(|l| l.leader), Some(leader));

    let err = cluster.elect(follower, leader, "operator").await.unwrap_err();
    assert!(matches!(err, ElectionError::InvalidRequest(ref m) if m.contains("own")), "{err:?}");
    let err = cluster.elect(follower, 0, "operator").await.unwrap_err();
    assert!(matches!(err, ElectionError::InvalidRequest(_)), "{err:?}");
    let err = cluster.elect(follower, follower, "reader").await.unwrap_err();
    assert!(matches!(err, ElectionError::PermissionDenied(_)), "{err:?}");

    // With a healthy leader the others refuse to pre-vote (Raft's leader lease): the campaign fails.
    let err = cluster.elect(follower, follower, "operator").await.unwrap_err();
    assert!(matches!(err, ElectionError::ElectionFailed(_)), "{err:?}");

    // Cut off, the candidate's vote requests reach no one.
    let other = *cluster.nodes.keys().find(|&&id| id != leader && id != follower).unwrap();
    cluster.network.partition(&[other]);
    let err = cluster.elect(other, other, "operator").await.unwrap_err();
    assert!(matches!(err, ElectionError::BroadcastFailed(_)), "{err:?}");

    // Each node has its own 60 J budget; a campaign costs 20 J plus what the meter measured, and
    // one that ran and failed is charged like one that won.
    cluster.elect(leader, leader, "operator").await.unwrap();
    let err = cluster.elect(leader, leader, "operator").await.unwrap_err();
    assert!(matches!(err, ElectionError::InsufficientEnergy { .. }), "{err:?}");
}

#[actix_rt::test]
async fn a_node_restarted_from_its_data_directory_loses_no_committed_update() {
    let mut cluster = Cluster::start(3, Config::default()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    for i in 0..3 {
        cluster.replicate(leader, &format!("u{i}")).await.unwrap();
    }
    cluster.crash(follower).await;
    for i in 3..5 {
        cluster.replicate(leader, &format!("u{i}")).await.unwrap();
    }
    cluster.boot(follower).await;
    assert!(cluster.converged(5, Duration::from_secs(2)).await, "the restarted node did not catch up");

    // The whole cluster goes down and comes back: every acknowledged update is still there.
    for id in cluster.voters.clone() {
        cluster.crash(id).await;
    }
    for id in cluster.voters.clone() {
        cluster.boot(id).await;
    }
    let leader = cluster.leader(Duration::from_secs(3)).await.expect("a leader after a full restart");
    let next = cluster.replicate(leader, "u5").await.unwrap();
    assert_eq!(next.version, 6, "versions continue from the durable log");
    assert!(cluster.converged(6, Duration::from_secs(2)).await);
}
