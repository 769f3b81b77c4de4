//! The replicated map on three live nodes: puts, deletes and compare-and-sets through any node,
//! each answered once committed with what it did; reads of this node's applied map, saying how
//! fresh they are; the single register as one of the keys; and refusals by the gate.

mod common;

use std::time::Duration;

use actors::cluster::{Expected, NodeId, Outcome};
use actors::managers::state_replicator::{CompareAndSet, Consistency, Delete, Get, Put, Read, ReadState, Replicate, ReplicationError};
use common::{eventually, Cluster};

impl Cluster {
    async fn put(&self, via: NodeId, key: &str, value: &str) -> Result<Outcome, ReplicationError> {
        let ctx = self.world.ctx("operator", "replication_management");
        let put = Put { ctx, key: key.into(), value: value.into() };
        self.node(via).unwrap().replicator.send(put).await.unwrap()
    }

    async fn cas(&self, via: NodeId, key: &str, expected: Expected, value: &str) -> Result<Outcome, ReplicationError> {
        let ctx = self.world.ctx("operator", "replication_management");
        let cas = CompareAndSet { ctx, key: key.into(), expected, value: value.into() };
        self.node(via).unwrap().replicator.send(cas).await.unwrap()
    }

    async fn get(&self, via: NodeId, who: &str, key: &str) -> Result<Read, ReplicationError> {
        self.read(via, who, key, Consistency::Linearizable).await
    }

    async fn read(&self, via: NodeId, who: &str, key: &str, consistency: Consistency) -> Result<Read, ReplicationError> {
        let ctx = self.world.ctx(who, "replication_management");
        self.node(via).unwrap().replicator.send(Get { ctx, key: key.into(), consistency }).await.unwrap()
    }
}

#[actix_rt::test]
async fn keys_are_written_through_any_node_and_read_everywhere() {
    let cluster = Cluster::start(3, actors::Config::default()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.expect("a leader");
    let follower = *cluster.up().iter().find(|&&id| id != leader).unwrap();

    let first = cluster.put(follower, "colour", "red").await.unwrap();
    let Outcome::Written { revision } = first else { panic!("{first:?}") };
    assert_eq!(revision, 1);
    // A compare-and-set against the wrong revision changes nothing, and says what is there.
    let stale = cluster.cas(leader, "colour", Expected::Revision(99), "blue").await.unwrap();
    let Outcome::Mismatch { current: Some(current), .. } = stale else { panic!("{stale:?}") };
    assert_eq!((current.value.as_slice(), current.revision), (&b"red"[..], 1));
    let swapped = cluster.cas(follower, "colour", Expected::Revision(1), "blue").await.unwrap();
    assert_eq!(swapped, Outcome::Written { revision: 3 });
    let created = cluster.cas(leader, "shape", Expected::Absent, "round").await.unwrap();
    assert_eq!(created, Outcome::Written { revision: 4 });
    let ctx = cluster.world.ctx("operator", "replication_management");
    let deleted = cluster.node(leader).unwrap().replicator.send(Delete { ctx, key: b"shape".to_vec() }).await.unwrap().unwrap();
    assert_eq!(deleted, Outcome::Deleted { revision: 5, existed: true });

    // The register is the state id's key; it counts every write as before.
    let ctx = cluster.world.ctx("operator", "replication_management");
    let state = cluster.node(leader).unwrap().replicator.send(Replicate { ctx, data: b"reg".to_vec() }).await.unwrap().unwrap();
    assert_eq!((state.version, state.data.as_slice()), (6, &b"reg"[..]));

    assert!(cluster.converged(6, Duration::from_secs(2)).await);
    for id in cluster.up() {
        let read = cluster.get(id, "reader", "colour").await.unwrap();
        assert_eq!(read.level, Consistency::Linearizable);
        assert_eq!((read.value.unwrap().value.as_slice(), read.revision), (&b"blue"[..], 6), "node {id}");
        assert!(cluster.get(id, "reader", "shape").await.unwrap().value.is_none());
        let ctx = cluster.world.ctx("reader", "replication_management");
        let register = cluster.node(id).unwrap().replicator.send(ReadState { ctx }).await.unwrap().unwrap();
        assert_eq!(register.data, b"reg");
    }
}

#[actix_rt::test]
async fn a_linearizable_read_on_another_node_sees_every_acknowledged_write_and_a_stale_one_says_it_may_not() {
    let cluster = Cluster::start(3, actors::Config::default()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.expect("a leader");
    let followers: Vec<NodeId> = cluster.up().into_iter().filter(|&id| id != leader).collect();
    // Messages take 1 to 15 ms, so that a follower often applies a write later than the follower
    // that was answered: a read served from its applied map would miss it.
    cluster.network().set_faults(0.0, (1, 15));
    for i in 0..20 {
        let (writer, reader) = (followers[i % 2], followers[(i + 1) % 2]);
        let value = format!("v{i}");
        let Outcome::Written { revision } = cluster.put(writer, "k", &value).await.unwrap() else { panic!() };
        let read = cluster.get(reader, "reader", "k").await.unwrap();
        let seen = read.value.expect("written");
        assert_eq!((seen.value, seen.revision), (value.into_bytes(), revision), "read {i} on node {reader} after a write through {writer}");
        assert!(read.revision >= revision && read.level == Consistency::Linearizable);
    }

    // Cut one follower off: the others commit a write it cannot know of.
    cluster.network().set_faults(0.0, (0, 0));
    let cut = followers[0];
    cluster.network().partition(&[cut]);
    let Outcome::Written { revision } = cluster.put(leader, "k", "after the cut").await.unwrap() else { panic!() };
    let stale = cluster.read(cut, "reader", "k", Consistency::Stale).await.unwrap();
    assert_eq!(stale.level, Consistency::Stale, "a stale read says so");
    assert!(stale.revision < revision && stale.value.as_ref().unwrap().value == b"v19", "and may miss the write: {stale:?}");
    // Bounded staleness: within the bound the cut node answers from its map, and says so...
    let bounded = Consistency::Bounded { max_lag_ms: 10_000 };
    let read = cluster.read(cut, "reader", "k", bounded).await.unwrap();
    assert_eq!(read.level, bounded);
    assert_eq!(read.value.unwrap().value, b"v19", "it heard from the leader well within 10 s, so it may miss the write");
    let healthy = followers[1];
    assert_eq!(cluster.read(healthy, "reader", "k", bounded).await.unwrap().level, bounded);
    // ...past it, the read must be linearizable, which the cut node cannot serve.
    actix::clock::sleep(Duration::from_millis(400)).await;
    let err = cluster.read(cut, "reader", "k", Consistency::Bounded { max_lag_ms: 300 }).await.unwrap_err();
    assert!(err.to_string().contains("no leader confirmed the read"), "{err}");
    let err = cluster.get(cut, "reader", "k").await.unwrap_err();
    assert!(err.to_string().contains("no leader confirmed the read"), "a linearizable read there cannot be served: {err}");
    cluster.network().heal();
    let healed = eventually(Duration::from_secs(5), || async { cluster.get(cut, "reader", "k").await.ok() }).await.expect("served again");
    assert_eq!(healed.value.unwrap().value, b"after the cut");
}

#[actix_rt::test]
async fn the_gate_refuses_bad_keys_oversized_values_and_missing_capabilities() {
    let cluster = Cluster::start(1, actors::Config::default()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.expect("a leader");
    let err = cluster.put(leader, "", "x").await.unwrap_err();
    assert!(matches!(&err, ReplicationError::InvalidRequest(why) if why.contains("the key is empty")), "{err}");
    let long = "k".repeat(1025);
    let err = cluster.put(leader, &long, "x").await.unwrap_err();
    assert!(err.to_string().contains("limits.max_key_bytes"), "{err}");
    let huge = "v".repeat((64 << 10) + 1);
    let err = cluster.put(leader, "k", &huge).await.unwrap_err();
    assert!(err.to_string().contains("value is 65537 bytes"), "{err}");
    // Reading needs StateManagement, writing ReplicationManagement: the reader may only read.
    let ctx = cluster.world.ctx("reader", "replication_management");
    let err = cluster.node(leader).unwrap().replicator.send(Put { ctx, key: b"k".to_vec(), value: vec![] }).await.unwrap().unwrap_err();
    assert!(matches!(err, ReplicationError::PermissionDenied(_)), "{err}");
    assert!(cluster.get(leader, "reader", "k").await.unwrap().value.is_none());
    // Every refusal was audited, with the key as the resource.
    let refused = eventually(Duration::from_secs(1), || async {
        let entries = cluster.world.entries();
        let n = entries.iter().filter(|e| e.operation == "put" && e.outcome == actors::security::audit::Outcome::Denied).count();
        (n == 4).then_some(n)
    })
    .await;
    assert_eq!(refused, Some(4));
}
