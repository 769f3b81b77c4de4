//! The communication manager: delivery with confirmation, and every `CommunicationError` variant.

mod common;

use std::time::Duration;

use actix::Actor;
use actors::managers::communication::{Broadcast, CommunicationError, CommunicationManager, Subscribe, Unsubscribe};
use actors::security::{CapSet, Capability, SecurityContext};
use actors::Config;
use common::*;

fn op(world: &World) -> SecurityContext {
    world.ctx("operator", "communication_management")
}

fn subscribe(world: &World, channel: &str, name: &str, endpoint: actix::Recipient<actors::managers::communication::Delivery>) -> Subscribe {
    Subscribe { ctx: op(world), channel: channel.into(), subscriber: name.into(), endpoint }
}

fn say(world: &World, channel: &str, content: &str) -> Broadcast {
    Broadcast { ctx: op(world), channel: channel.into(), content: content.into() }
}

#[actix::test]
async fn a_broadcast_reaches_every_subscriber_and_says_who() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let (a, a_rx) = subscriber(16);
    let (b, b_rx) = subscriber(16);
    assert_eq!(comm.send(subscribe(&world, "news", "a", a.recipient())).await.unwrap(), Ok(1));
    assert_eq!(comm.send(subscribe(&world, "news", "b", b.recipient())).await.unwrap(), Ok(2));
    let receipt = comm.send(say(&world, "news", "hello")).await.unwrap().unwrap();
    assert_eq!((receipt.seq, receipt.delivered), (1, vec!["a".to_string(), "b".to_string()]));
    for rx in [a_rx, b_rx] {
        let got = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((&*got.channel, got.seq, &*got.from, &*got.content), ("news", 1, "user:operator", "hello"));
    }
    // After unsubscribing, a is no longer delivered to.
    assert_eq!(comm.send(Unsubscribe { ctx: op(&world), channel: "news".into(), subscriber: "a".into() }).await.unwrap(), Ok(1));
    let receipt = comm.send(say(&world, "news", "again")).await.unwrap().unwrap();
    assert_eq!(receipt.delivered, vec!["b".to_string()]);
    // A channel nobody listens to takes broadcasts and delivers to no one.
    assert!(comm.send(say(&world, "quiet", "anyone?")).await.unwrap().unwrap().delivered.is_empty());
}

#[actix::test]
async fn invalid_request_for_bad_ids_oversized_content_and_unknown_subscriptions() {
    let mut config = Config::default();
    config.limits.max_payload_bytes = 8;
    let world = World::new(config);
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let err = comm.send(say(&world, "", "x")).await.unwrap().unwrap_err();
    assert_eq!(err, CommunicationError::InvalidRequest("channel is empty".into()));
    let err = comm.send(say(&world, "news", "far too long")).await.unwrap().unwrap_err();
    assert_eq!(err, CommunicationError::InvalidRequest("content is 12 bytes; the limit is 8".into()));
    let err = comm.send(Unsubscribe { ctx: op(&world), channel: "news".into(), subscriber: "a".into() }).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidRequest(ref why) if why.contains("a is not subscribed to news")));
    let (a, _rx) = subscriber(16);
    comm.send(subscribe(&world, "news", "a", a.clone().recipient())).await.unwrap().unwrap();
    let err = comm.send(subscribe(&world, "news", "a", a.recipient())).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidRequest(ref why) if why.contains("already subscribed")));
}

#[actix::test]
async fn broadcast_failed_names_a_subscriber_whose_mailbox_is_full() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    // A subscriber with room for one message, on its own thread, kept busy.
    let arbiter = actix::Arbiter::new();
    let (out, rx) = std::sync::mpsc::channel();
    let slow = Subscriber::start_in_arbiter(&arbiter.handle(), move |_| Subscriber { out, capacity: 1 });
    let (fast, _fast_rx) = subscriber(16);
    comm.send(subscribe(&world, "news", "slow", slow.clone().recipient())).await.unwrap().unwrap();
    comm.send(subscribe(&world, "news", "fast", fast.recipient())).await.unwrap().unwrap();
    let (busy_tx, busy) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    slow.do_send(Block(released, busy_tx));
    busy.recv_timeout(Duration::from_secs(2)).unwrap();

    // The first message fits in the mailbox; the second does not.
    let first = comm.send(say(&world, "news", "one")).await.unwrap().unwrap();
    assert_eq!(first.delivered, vec!["fast".to_string(), "slow".to_string()]);
    let err = comm.send(say(&world, "news", "two")).await.unwrap().unwrap_err();
    assert!(
        matches!(err, CommunicationError::BroadcastFailed(ref why) if why.contains("mailbox of slow is full") && why.contains("delivered to fast")),
        "{err}"
    );
    // The refused message was reported, not queued: slow gets only the first.
    release.send(()).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(&*got.content, "one");
    assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
    arbiter.stop();
}

#[actix::test]
async fn channel_closed_when_a_subscriber_has_stopped_and_it_is_removed() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let (gone, _gone_rx) = subscriber(16);
    let (alive, _alive_rx) = subscriber(16);
    comm.send(subscribe(&world, "news", "gone", gone.clone().recipient())).await.unwrap().unwrap();
    comm.send(subscribe(&world, "news", "alive", alive.recipient())).await.unwrap().unwrap();
    gone.send(Stop).await.unwrap();
    stopped(&gone).await;
    let err = comm.send(say(&world, "news", "hello")).await.unwrap().unwrap_err();
    assert!(
        matches!(err, CommunicationError::ChannelClosed(ref why) if why.contains("subscriber gone has stopped") && why.contains("delivered to alive")),
        "{err}"
    );
    let receipt = comm.send(say(&world, "news", "hello")).await.unwrap().unwrap();
    assert_eq!(receipt.delivered, vec!["alive".to_string()]);
}

#[actix::test]
async fn permission_denied_without_broadcast_management() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let mut msg = say(&world, "news", "x");
    msg.ctx = msg.ctx.attenuate(CapSet::of(&[Capability::NodeManagement]));
    let err = comm.send(msg).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::PermissionDenied(ref why) if why.contains("lacks {BroadcastManagement}")), "{err}");
}

#[actix::test]
async fn insufficient_energy_once_the_budget_is_spent() {
    let mut config = Config::default();
    config.communication_manager.budget_joules = j(12.0);
    let world = World::new(config);
    let comm = CommunicationManager::new(&world.env, "n1").start();
    comm.send(say(&world, "news", "1")).await.unwrap().unwrap();
    comm.send(say(&world, "news", "2")).await.unwrap().unwrap();
    let err = comm.send(say(&world, "news", "3")).await.unwrap().unwrap_err();
    assert_eq!(err, CommunicationError::InsufficientEnergy { needed: j(5.5), available: j(1.0) });
}

#[actix::test]
async fn invalid_capabilities_for_a_context_presenting_revoked_capabilities() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let eve = world.grant("eve", CapSet::of(&[Capability::BroadcastManagement, Capability::SecurityManagement]));
    let stale = world.ctx("eve", "communication_management");
    world.env.grants().revoke_capabilities(eve.principal(), CapSet::of(&[Capability::SecurityManagement]));
    let err = comm.send(Broadcast { ctx: stale, channel: "news".into(), content: "x".into() }).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidCapabilities(ref why) if why.contains("{SecurityManagement}")), "{err}");
}

#[actix::test]
async fn invalid_scope_for_a_context_scoped_elsewhere() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let mut msg = say(&world, "news", "x");
    msg.ctx = world.ctx("operator", "communication_management.subscribe");
    let err = comm.send(msg).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidScope(ref why) if why.contains("does not cover communication_management.broadcast")), "{err}");
}
