//! Leader election and state replication on live actors: real time, real redb stores in temp
//! directories, the in-process network with injected faults.

mod common;

use std::time::{Duration, Instant};

use actors::cluster::{NodeId, State};
use actors::managers::leader_election::{Leader, Election, ElectionError};
use actors::managers::state_replicator::{ReadState, Replicate, ReplicationError};
use actors::Config;
use common::{eventually, Cluster, MEASURED};

impl Cluster {
    async fn replicate(&self, via: NodeId, data: &str) -> Result<State, ReplicationError> {
        let ctx = self.world.ctx("operator", "replication_management");
        self.node(via).unwrap().replicator.send(Replicate { ctx, data: data.as_bytes().to_vec() }).await.unwrap()
    }

    async fn read(&self, id: NodeId) -> State {
        let ctx = self.world.ctx("operator", "replication_management");
        self.node(id).unwrap().replicator.send(ReadState { ctx }).await.unwrap().unwrap()
    }

    async fn elect(&self, via: NodeId, candidate: NodeId, principal: &str) -> Result<actors::node::consensus::Leadership, ElectionError> {
        let ctx = self.world.ctx(principal, "election_management");
        self.node(via).unwrap().election.send(Election { ctx, candidate }).await.unwrap()
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
    let follower = *cluster.up().iter().find(|&&id| id != leader).unwrap();

    let first = cluster.replicate(follower, "a=1").await.unwrap();
    assert_eq!((first.version, first.data.as_slice()), (1, &b"a=1"[..]), "a follower forwards to the leader");
    let second = cluster.replicate(leader, "a=2").await.unwrap();
    assert_eq!(second.version, 2);
    assert!(cluster.converged(2, Duration::from_secs(1)).await);
    for id in cluster.up() {
        assert_eq!(cluster.read(id).await, second);
    }

    // Each update is charged its default base cost, 25 J, plus what the meter measured.
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
    cluster.network().partition(&[leader]);

    let err = cluster.replicate(leader, "lost").await.unwrap_err();
    assert!(matches!(err, ReplicationError::ReplicaUpdateFailed(_)), "{err:?}");
    let other_leader = || async { cluster.leader(Duration::from_secs(2)).await.filter(|&l| l != leader) };
    let majority = eventually(Duration::from_secs(10), other_leader).await.expect("the majority elects a leader");
    let v = cluster.replicate(majority, "v2").await.unwrap();

    cluster.network().heal();
    assert!(cluster.converged(v.version, Duration::from_secs(2)).await, "the old leader did not catch up");
    assert_eq!(cluster.read(leader).await.data, b"v2");
    // The update that failed for want of a quorum is in the audit log with its error variant.
    let failed = cluster.world.entries().into_iter().find(|e| e.error() == Some("ReplicaUpdateFailed"));
    assert!(failed.is_some(), "the failed update is in the audit log");
}

#[actix_rt::test]
async fn every_replication_error_is_reachable() {
    let mut config = quick_timeouts();
    config.limits.max_payload_bytes = 8;
    config.state_replicator.budget_joules = common::j(60.0);
    let cluster = Cluster::start(3, config).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    let r = &cluster.node(leader).unwrap().replicator;

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
    let others: Vec<NodeId> = cluster.up().into_iter().filter(|&id| id != leader).collect();
    for id in others {
        cluster.crash(id).await;
    }
    let ctx = cluster.world.ctx("operator", "replication_management");
    let topped = cluster.node(leader).unwrap().replicator.send(actors::TopUp::new(ctx, common::j(100.0))).await.unwrap();
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
    let follower = *cluster.up().iter().find(|&&id| id != leader).unwrap();

    // The leader standing again simply keeps its leadership.
    let won = cluster.elect(leader, leader, "operator").await.unwrap();
    assert_eq!(won.leader, leader);
    let ctx = cluster.world.ctx("operator", "election_management");
    let known = cluster.node(follower).unwrap().election.send(Leader { ctx }).await.unwrap().unwrap();
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
    let other = *cluster.up().iter().find(|&&id| id != leader && id != follower).unwrap();
    cluster.network().partition(&[other]);
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
    let follower = *cluster.up().iter().find(|&&id| id != leader).unwrap();
    for i in 0..3 {
        cluster.replicate(leader, &format!("u{i}")).await.unwrap();
    }
    cluster.crash(follower).await;
    for i in 3..5 {
        cluster.replicate(leader, &format!("u{i}")).await.unwrap();
    }
    cluster.boot(follower).await.unwrap();
    assert!(cluster.converged(5, Duration::from_secs(2)).await, "the restarted node did not catch up");

    // The whole cluster goes down and comes back: every acknowledged update is still there.
    for id in cluster.voters().to_vec() {
        cluster.crash(id).await;
    }
    for id in cluster.voters().to_vec() {
        cluster.boot(id).await.unwrap();
    }
    let leader = cluster.leader(Duration::from_secs(3)).await.expect("a leader after a full restart");
    let next = cluster.replicate(leader, "u5").await.unwrap();
    assert_eq!(next.version, 6, "versions continue from the durable log");
    assert!(cluster.converged(6, Duration::from_secs(2)).await);
}
