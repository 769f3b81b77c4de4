//! The node manager: a three-node cluster, and every `JoinError` variant.

mod common;

use std::time::Duration;

use actix::{Actor, Addr};
use actors::managers::node_manager::{connect_all, Join, JoinError, Leave, ListNodes, NodeManager};
use actors::security::{CapSet, Capability, Origin, Principal, Scope, SecurityContext};
use actors::Config;
use common::*;

struct Cluster {
    world: World,
    managers: Vec<(String, Addr<NodeManager>)>,
}

async fn cluster(config: Config, n: usize) -> Cluster {
    let world = World::new(config);
    let managers: Vec<_> = (1..=n).map(|i| (format!("n{i}"), NodeManager::new(&world.env, &format!("n{i}")).start())).collect();
    connect_all(&world.ctx("operator", "node_management"), &managers).await.unwrap();
    Cluster { world, managers }
}

impl Cluster {
    /// A node manager on its own arbiter (so the test can block or stop its thread), made a
    /// peer of n1.
    async fn peer_on_own_arbiter(&self, name: &'static str) -> (actix::Arbiter, Addr<NodeManager>) {
        let arbiter = actix::Arbiter::new();
        let env = self.world.env.clone();
        let peer = NodeManager::start_in_arbiter(&arbiter.handle(), move |_| NodeManager::new(&env, name));
        let connect = actors::managers::node_manager::Connect { ctx: self.op(), peer: name.into(), endpoint: peer.clone().recipient() };
        self.managers[0].1.send(connect).await.unwrap().unwrap();
        (arbiter, peer)
    }

    /// A peer of n1 whose thread is kept busy, so that it answers nothing, until the returned
    /// sender says go (or a minute passes).
    async fn blocked_peer(&self, name: &'static str) -> (actix::Arbiter, std::sync::mpsc::Sender<()>) {
        let (arbiter, _peer) = self.peer_on_own_arbiter(name).await;
        let (busy_tx, busy) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        arbiter.spawn(async move {
            let _ = busy_tx.send(());
            let _ = released.recv_timeout(Duration::from_secs(60));
        });
        busy.recv_timeout(Duration::from_secs(10)).unwrap();
        (arbiter, release)
    }

    fn op(&self) -> SecurityContext {
        self.world.ctx("operator", "node_management")
    }

    fn join(&self, id: &str) -> Join {
        Join {
            ctx: self.op(),
            id: id.into(),
            kind: "worker".into(),
            energy_budget: j(500.0),
            capabilities: CapSet::of(&[Capability::BroadcastManagement]),
            scope: Scope::new(&format!("node_management.{id}")).unwrap(),
            raft: None,
        }
    }

    async fn members(&self, i: usize) -> Vec<String> {
        let nodes = self.managers[i].1.send(ListNodes { ctx: self.op() }).await.unwrap().unwrap();
        nodes.into_iter().map(|n| n.id).collect()
    }
}

#[actix::test]
async fn a_join_is_confirmed_by_every_peer_and_grants_what_was_asked() {
    let c = cluster(Config::default(), 3).await;
    let response = c.managers[0].1.send(c.join("w1")).await.unwrap().unwrap();
    assert_eq!(response.confirmed_by, vec!["n2", "n3"]);
    assert_eq!(response.granted_capabilities, CapSet::of(&[Capability::BroadcastManagement]));
    assert_eq!(response.scope.as_str(), "node_management.w1");
    for i in 0..3 {
        assert_eq!(c.members(i).await, vec!["w1"], "manager {i}");
    }
    // The node's principal can now act with what it was granted, through the credential the
    // join answered; the grant says where it came from.
    let node = Principal::node("w1");
    assert_eq!(c.world.env.grants().of(&node), Some(CapSet::of(&[Capability::BroadcastManagement])));
    assert_eq!(response.credential.principal(), &node);
    assert!(matches!(response.credential.origin(), Origin::Delegated { by, .. } if *by == Principal::user("operator")));
    let as_node = response.credential.context(Scope::new("node_management.w1").unwrap()).unwrap();
    assert_eq!(as_node.capabilities(), CapSet::of(&[Capability::BroadcastManagement]));

    let left = c.managers[1].1.send(Leave { ctx: c.op(), id: "w1".into() }).await.unwrap().unwrap();
    assert_eq!(left.id, "w1");
    for i in 0..3 {
        assert!(c.members(i).await.is_empty(), "manager {i}");
    }
    assert_eq!(c.world.env.grants().of(&node), None, "the leave revoked what the join granted");
    assert_eq!(as_node.held().0, CapSet::EMPTY, "and the node's contexts are worthless now");
}

#[actix::test]
async fn invalid_request_for_a_malformed_or_duplicate_join() {
    let c = cluster(Config::default(), 2).await;
    let n1 = &c.managers[0].1;
    let mut empty = c.join("w1");
    empty.id.clear();
    let err = n1.send(empty).await.unwrap().unwrap_err();
    assert_eq!(err, JoinError::InvalidRequest("node id is empty".into()));
    let mut no_energy = c.join("w1");
    no_energy.energy_budget = j(0.0);
    assert!(matches!(n1.send(no_energy).await.unwrap(), Err(JoinError::InvalidRequest(_))));
    let mut bad_chars = c.join("w1");
    bad_chars.id = "w 1\n".into();
    assert!(matches!(n1.send(bad_chars).await.unwrap(), Err(JoinError::InvalidRequest(ref why)) if why.contains("contains ' '")));

    n1.send(c.join("w1")).await.unwrap().unwrap();
    let err = n1.send(c.join("w1")).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InvalidRequest(ref why) if why.contains("already a member")), "{err}");
    let err = n1.send(Leave { ctx: c.op(), id: "w9".into() }).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InvalidRequest(ref why) if why.contains("not a member")), "{err}");
}

#[actix::test]
async fn broadcast_failed_when_a_peer_refuses_and_the_join_is_undone() {
    // n2 can afford nothing: it refuses the announcement for lack of energy.
    let c = cluster(Config::default(), 3).await;
    let mut config = Config::default();
    config.node_manager.budget_joules = j(0.0);
    let env = actors::Environment::new(config, c.world.env.grants().clone(), c.world.env.audit().clone());
    let poor = NodeManager::new(&env, "poor").start();
    let n1 = &c.managers[0].1;
    n1.send(actors::managers::node_manager::Connect { ctx: c.op(), peer: "poor".into(), endpoint: poor.clone().recipient() })
        .await
        .unwrap()
        .unwrap();
    let err = n1.send(c.join("w1")).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::BroadcastFailed(ref why) if why.contains("poor refused: insufficient energy")), "{err}");
    // n2 and n3 confirmed, then were told to undo: n1 put the undo in their mailboxes before it
    // answered, so it is handled before the question below.
    for i in 0..3 {
        assert!(c.members(i).await.is_empty(), "manager {i}");
    }
}

#[actix::test]
async fn broadcast_failed_when_a_peer_does_not_answer_in_time() {
    let mut config = Config::default();
    config.node_manager.reply_timeout_ms = 50;
    let c = cluster(config, 2).await;
    // "slow" runs on its own thread, which a blocking task keeps busy past the timeout.
    // Busy until the test has seen the timeout, however long that takes on this machine.
    let (arbiter, release) = c.blocked_peer("slow").await;
    let n1 = &c.managers[0].1;
    let err = n1.send(c.join("w1")).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::BroadcastFailed(ref why) if why.contains("slow did not answer within 50 ms")), "{err}");
    release.send(()).unwrap();
    arbiter.stop();
}

#[actix::test]
async fn channel_closed_when_a_peer_has_stopped() {
    let c = cluster(Config::default(), 2).await;
    // n3 runs on its own arbiter; stopping the arbiter stops it, as a crash would.
    let (arbiter, n3) = c.peer_on_own_arbiter("n3").await;
    let n1 = &c.managers[0].1;
    arbiter.stop();
    stopped(&n3).await;
    let err = n1.send(c.join("w1")).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::ChannelClosed(ref why) if why.contains("peer n3 has stopped")), "{err}");
    // The dead peer was dropped; the next join goes through with n2 alone.
    let ok = n1.send(c.join("w1")).await.unwrap().unwrap();
    assert_eq!(ok.confirmed_by, vec!["n2"]);
}

#[actix::test]
async fn permission_denied_without_node_management() {
    let c = cluster(Config::default(), 1).await;
    let mut join = c.join("w1");
    join.ctx = c.world.ctx("guest", "node_management");
    let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::PermissionDenied(ref why) if why.contains("\"user:guest\" lacks {NodeManagement}")), "{err}");
}

#[actix::test]
async fn insufficient_energy_once_the_budget_is_spent() {
    let mut config = Config::default();
    config.node_manager.budget_joules = j(25.0);
    let c = cluster(config, 1).await;
    let n1 = &c.managers[0].1;
    n1.send(c.join("w1")).await.unwrap().unwrap();
    n1.send(c.join("w2")).await.unwrap().unwrap();
    let err = n1.send(c.join("w3")).await.unwrap().unwrap_err();
    assert_eq!(err, JoinError::InsufficientEnergy { needed: j(10.5), available: j(4.0) });
}

#[actix::test]
async fn invalid_capabilities_when_asking_for_more_than_the_manager_holds() {
    let c = cluster(Config::default(), 1).await;
    let mut join = c.join("w1");
    join.capabilities = CapSet::of(&[Capability::SecurityManagement]);
    let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InvalidCapabilities(ref why) if why.contains("cannot grant {SecurityManagement}")), "{err}");
}

#[actix::test]
async fn invalid_scope_when_asking_for_a_scope_outside_node_management() {
    let c = cluster(Config::default(), 1).await;
    let mut join = c.join("w1");
    join.scope = Scope::new("communication_management").unwrap();
    let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InvalidScope(ref why) if why.contains("outside node_management")), "{err}");
    // And a context whose own scope does not cover the join.
    let mut join = c.join("w1");
    join.ctx = c.world.ctx("operator", "node_management.leave");
    let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InvalidScope(ref why) if why.contains("does not cover node_management.join")), "{err}");
}

/// What a hostile caller holding only `NodeManagement` would try, and what it gets.
mod as_an_attacker {
    use super::*;
    use actors::security::audit::{EntryKind, Outcome};

    fn refused_and_audited(c: &Cluster, operation: &str, principal: &str) {
        let entries = c.world.entries();
        let last = entries.iter().rev().find(|e| e.operation == operation).expect("audited");
        assert_eq!((last.outcome, &*last.principal), (Outcome::Denied, principal), "{last:?}");
        assert!(matches!(last.kind, EntryKind::Rejected | EntryKind::SecurityViolation), "{last:?}");
    }

    #[actix::test]
    async fn a_join_cannot_grant_more_than_its_requester_holds() {
        let c = cluster(Config::default(), 1).await;
        c.world.grant("mallory", CapSet::of(&[Capability::NodeManagement]));
        let mut join = c.join("w1");
        join.ctx = c.world.ctx("mallory", "node_management");
        join.capabilities = CapSet::of(&[Capability::NodeManagement, Capability::EnergyManagement]);
        let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
        assert!(matches!(err, JoinError::InvalidCapabilities(ref why) if why.contains("cannot grant {EnergyManagement}")), "{err}");
        refused_and_audited(&c, "join", "user:mallory");
        assert_eq!(c.world.env.grants().of(&Principal::node("w1")), None);
    }

    #[actix::test]
    async fn a_join_cannot_delegate_a_scope_wider_than_its_requesters() {
        let c = cluster(Config::default(), 1).await;
        let mut join = c.join("w1");
        join.ctx = c.world.ctx("operator", "node_management.w2");
        let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
        assert!(matches!(err, JoinError::InvalidScope(_)), "{err}");
        refused_and_audited(&c, "join", "user:operator");
    }

    #[actix::test]
    async fn a_join_cannot_take_an_actors_name() {
        let c = cluster(Config::default(), 1).await;
        let mut join = c.join("w1");
        join.id = "node-manager/n1".into();
        let err = c.managers[0].1.send(join).await.unwrap().unwrap_err();
        assert!(matches!(err, JoinError::InvalidRequest(ref why) if why.contains("the name of an actor")), "{err}");
        // And even a node that were named so would be node:..., never the actor.
        assert_ne!(Principal::node("node-manager/n1"), Principal::actor("node-manager/n1"));
        assert!(c.world.env.grants().of(&Principal::actor("node-manager/n1")).is_some(), "the actor keeps its grants");
    }

    #[actix::test]
    async fn a_leave_cannot_remove_another_requesters_node() {
        let c = cluster(Config::default(), 2).await;
        c.managers[0].1.send(c.join("w1")).await.unwrap().unwrap();
        c.world.grant("mallory", CapSet::of(&[Capability::NodeManagement]));
        let leave = Leave { ctx: c.world.ctx("mallory", "node_management"), id: "w1".into() };
        let err = c.managers[1].1.send(leave).await.unwrap().unwrap_err();
        assert!(matches!(err, JoinError::PermissionDenied(ref why) if why.contains("user:operator")), "{err}");
        assert_eq!(c.members(0).await, vec!["w1"], "still a member");
        assert!(c.world.env.grants().of(&Principal::node("w1")).is_some(), "still granted");
        let entries = c.world.entries();
        let last = entries.iter().rev().find(|e| e.operation == "leave").unwrap();
        assert_eq!((last.outcome, last.error()), (Outcome::Failed, Some("PermissionDenied")));
    }

    #[actix::test]
    async fn two_leaves_at_once_remove_the_node_once() {
        let c = cluster(Config::default(), 2).await;
        c.managers[0].1.send(c.join("w1")).await.unwrap().unwrap();
        let leave = || Leave { ctx: c.op(), id: "w1".into() };
        let (first, second) = futures::join!(c.managers[0].1.send(leave()), c.managers[0].1.send(leave()));
        let results = [first.unwrap(), second.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(JoinError::InvalidRequest(why)) if why.contains("already leaving"))), "{results:?}");
        assert!(c.members(1).await.is_empty());
    }

    #[actix::test]
    async fn a_revocation_reaches_a_join_that_is_waiting_for_its_peers() {
        let mut config = Config::default();
        config.node_manager.reply_timeout_ms = 30_000;
        let c = cluster(config, 1).await;
        let (arbiter, release) = c.blocked_peer("slow").await;
        let mallory = c.world.grant("mallory", CapSet::of(&[Capability::NodeManagement, Capability::BroadcastManagement]));
        let mut join = c.join("w1");
        join.ctx = c.world.ctx("mallory", "node_management");
        let pending = c.managers[0].1.send(join);
        let revoke = async {
            // Admitted and waiting for the slow peer's confirmation: revoke, then let it answer.
            let list = ListNodes { ctx: c.op() };
            c.managers[0].1.send(list).await.unwrap().unwrap();
            c.world.env.grants().revoke(&mallory);
            release.send(()).unwrap();
        };
        let (answer, ()) = futures::join!(pending, revoke);
        let err = answer.unwrap().unwrap_err();
        assert!(matches!(err, JoinError::InvalidCapabilities(ref why) if why.contains("revoked while join ran")), "{err}");
        let entries = c.world.entries();
        let join = entries.iter().rev().find(|e| e.operation == "join").unwrap();
        assert_eq!((join.kind, join.outcome, &*join.principal), (EntryKind::SecurityViolation, Outcome::Denied, "user:mallory"));
        arbiter.stop();
    }
}
