//! The gate's steps, their order, and what each outcome costs and records.
//! Exercised through the communication manager, whose operations are synchronous, and the node
//! manager for the asynchronous path.

mod common;

use std::time::Duration;

use actix::Actor;
use actors::managers::communication::{Broadcast, CommunicationError, CommunicationManager};
use actors::energy::Watts;
use actors::gate::GateClock;
use actors::managers::node_manager::{Join, JoinError, NodeManager};
use actors::security::audit::{EntryKind, Outcome, Timestamp};
use actors::security::{CapSet, Capability, Principal, Scope, SecurityContext};
use actors::{Config, Status, TopUp};
use common::*;

fn broadcast(ctx: SecurityContext, channel: &str) -> Broadcast {
    Broadcast { ctx, channel: channel.into(), content: "hello".into() }
}

fn small_budget(joules: f64) -> Config {
    let mut config = Config::default();
    config.communication_manager.budget_joules = j(joules);
    config.node_manager.budget_joules = j(joules);
    config
}

#[actix::test]
async fn an_allowed_request_is_charged_base_plus_measured_and_audited() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let receipt = comm.send(broadcast(world.ctx("operator", "communication_management"), "news")).await.unwrap().unwrap();
    assert_eq!(receipt.seq, 1);

    let status = comm.send(Status::new(world.ctx("operator", "*"))).await.unwrap().unwrap();
    // broadcast: 5 J base + 0.5 J measured; the status query itself is charged after the snapshot.
    assert_eq!(status.used, j(5.5));
    assert_eq!(status.counters.allowed, 1);

    let entries = world.entries();
    let e = &entries[0];
    assert_eq!((e.kind, e.outcome, &*e.operation, &*e.principal), (EntryKind::EnergyUsage, Outcome::Allowed, "broadcast", "user:operator"));
    assert_eq!(&*e.scope, "communication_management.broadcast");
    assert_eq!(&*e.actor, "communication-manager/n1");
    let energy = e.energy.as_ref().unwrap();
    assert_eq!((energy.charged_j, energy.measured_j, energy.estimate_j, energy.remaining_j), (5.5, 0.5, 5.0, 994.5));
    assert_eq!(energy.source, "fixed");
}

#[actix::test]
async fn refusals_are_measured_and_audited_but_not_charged() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let no_caps = world.ctx("operator", "communication_management").attenuate(CapSet::EMPTY);
    let err = comm.send(broadcast(no_caps, "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::PermissionDenied(ref why) if why.contains("BroadcastManagement")), "{err}");

    let status = comm.send(Status::new(world.ctx("operator", "*"))).await.unwrap().unwrap();
    assert_eq!(status.used, Joules::ZERO);
    assert_eq!(status.counters.denied, 1);
    let e = &world.entries()[0];
    assert_eq!((e.kind, e.outcome, e.error()), (EntryKind::SecurityViolation, Outcome::Denied, Some("PermissionDenied")));
    let energy = e.energy.as_ref().unwrap();
    assert_eq!((energy.charged_j, energy.measured_j), (0.0, MEASURED));
    assert!(e.reason().unwrap().contains("lacks {BroadcastManagement}"));
}

use actors::energy::Joules;

#[actix::test]
async fn steps_run_in_order_authority_then_validation_then_energy() {
    // A budget too small for a broadcast, so every request below would also fail the energy step.
    let world = World::new(small_budget(1.0));
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let ok = world.ctx("operator", "communication_management");

    // Fails authority, validation and energy: authority is reported.
    let mut bad = broadcast(ok.attenuate(CapSet::EMPTY), "");
    let err = comm.send(bad.clone()).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::PermissionDenied(_)), "{err}");

    // Fails validation and energy: validation is reported.
    bad.ctx = ok.clone();
    let err = comm.send(bad).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidRequest(ref why) if why.contains("channel is empty")), "{err}");

    // Fails only energy.
    let err = comm.send(broadcast(ok, "news")).await.unwrap().unwrap_err();
    assert_eq!(err, CommunicationError::InsufficientEnergy { needed: j(5.0), available: j(1.0) });

    let kinds: Vec<_> = world.entries().iter().map(|e| (e.kind, e.error().unwrap().to_string())).collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::SecurityViolation, "PermissionDenied".into()),
            (EntryKind::Rejected, "InvalidRequest".into()),
            (EntryKind::Rejected, "InsufficientEnergy".into()),
        ]
    );
}

#[actix::test]
async fn within_authority_revoked_capabilities_come_before_scope_and_scope_before_permission() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    // A context cannot be made for what a credential does not grant (there is no constructor);
    // what can happen is a context that presents capabilities its grant has lost since.
    let mallory = world.grant("mallory", CapSet::of(&[Capability::BroadcastManagement, Capability::NodeManagement]));
    let stale = world.ctx("mallory", "node_management");
    world.env.grants().revoke_capabilities(mallory.principal(), CapSet::of(&[Capability::NodeManagement]));
    let err = comm.send(broadcast(stale, "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidCapabilities(ref why) if why.contains("NodeManagement")), "{err}");

    let wrong_scope = world.ctx("guest", "node_management");
    let err = comm.send(broadcast(wrong_scope.attenuate(CapSet::EMPTY), "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidScope(_)), "{err}");

    let revoked = world.ctx("mallory", "communication_management");
    world.env.grants().revoke(&mallory);
    let err = comm.send(broadcast(revoked, "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidCapabilities(ref why) if why.contains("no longer holds")), "{err}");
}

#[actix::test]
async fn the_actor_itself_must_hold_the_capability() {
    let mut config = Config::default();
    config.communication_manager.grants = CapSet::of(&[Capability::EnergyManagement]);
    let world = World::new(config);
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let err = comm.send(broadcast(world.ctx("operator", "*"), "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::PermissionDenied(ref why) if why.contains("actor communication-manager/n1 itself lacks")), "{err}");
}

#[actix::test]
async fn the_estimate_includes_the_running_mean_of_measured_costs() {
    // 11 J: the first broadcast is estimated at 5 J and costs 5.5 J; the second is estimated at
    // 5.5 J and fits exactly; the third does not.
    let world = World::new(small_budget(11.0));
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let ctx = world.ctx("operator", "communication_management");
    comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap();
    comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap();
    let err = comm.send(broadcast(ctx, "a")).await.unwrap().unwrap_err();
    assert_eq!(err, CommunicationError::InsufficientEnergy { needed: j(5.5), available: Joules::ZERO });
    let estimates: Vec<_> = world.entries().iter().filter_map(|e| e.energy.as_ref()).map(|e| e.estimate_j).collect();
    assert_eq!(&estimates[..2], &[5.0, 5.5]);
}

#[actix::test]
async fn alerts_fire_once_at_80_and_95_percent() {
    // 100 J and 5.5 J per broadcast: 14 broadcasts use 77 J, the 15th crosses 80% (82.5 J),
    // the 18th crosses 95% (99 J).
    let world = World::new(small_budget(100.0));
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let ctx = world.ctx("operator", "communication_management");
    for _ in 0..18 {
        comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap();
    }
    let alerts: Vec<_> = world
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EntryKind::EnergyAlert)
        .map(|(i, e)| (i, e.alert().unwrap().to_string()))
        .collect();
    assert_eq!(alerts, vec![(15, "warning".to_string()), (19, "critical".to_string())]);
    let status = comm.send(Status::new(world.ctx("operator", "*"))).await.unwrap().unwrap();
    assert_eq!(status.alerts.len(), 2);
}

#[actix::test]
async fn a_refill_rate_restores_the_budget_over_time() {
    let mut config = small_budget(6.0);
    config.communication_manager.refill_watts = Some(Watts::new(200.0).unwrap());
    let world = World::new(config);
    let (clock, time) = GateClock::manual();
    let comm = CommunicationManager::new(&world.env.clone().with_clock(clock), "n1").start();
    let ctx = world.ctx("operator", "communication_management");
    comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap();
    // 0.5 J left; 5.5 J estimated. At 200 W the bucket needs 25 ms to refill that much.
    let err = comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InsufficientEnergy { .. }), "{err}");
    time.advance(Duration::from_millis(24));
    let err = comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InsufficientEnergy { .. }), "24 ms refill 4.8 J: {err}");
    time.advance(Duration::from_millis(36));
    comm.send(broadcast(ctx, "a")).await.unwrap().unwrap();
}

#[actix::test]
async fn top_up_needs_energy_management_and_restores_service() {
    let world = World::new(small_budget(5.0));
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let ctx = world.ctx("operator", "communication_management");
    comm.send(broadcast(ctx.clone(), "a")).await.unwrap().unwrap();
    assert!(comm.send(broadcast(ctx.clone(), "a")).await.unwrap().is_err());

    let guest = world.ctx("guest", "*");
    let err = comm.send(TopUp::<CommunicationError>::new(guest, j(100.0))).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::PermissionDenied(ref why) if why.contains("EnergyManagement")), "{err}");

    let remaining = comm.send(TopUp::<CommunicationError>::new(world.ctx("operator", "*"), j(100.0))).await.unwrap().unwrap();
    // The first broadcast cost 5.5 J of a 5 J budget: the 0.5 J it could not pay was a debt,
    // which the top-up paid first.
    assert_eq!(remaining, j(99.5));
    comm.send(broadcast(ctx, "a")).await.unwrap().unwrap();
}

#[actix::test]
async fn an_asynchronous_operation_holds_its_estimate_until_it_completes() {
    // While the first join awaits its peer's confirmation, the manager handles the second; the
    // first join's 10 J stay reserved, so the second cannot spend them.
    let world = World::new(small_budget(25.0));
    let n1 = NodeManager::new(&world.env, "n1").start();
    let n2 = NodeManager::new(&world.env, "n2").start();
    let op = world.ctx("operator", "node_management");
    n1.send(actors::managers::node_manager::Connect { ctx: op.clone(), peer: "n2".into(), endpoint: n2.clone().recipient() })
        .await
        .unwrap()
        .unwrap();
    let join = |id: &str| Join {
        ctx: op.clone(),
        id: id.into(),
        kind: "worker".into(),
        energy_budget: j(100.0),
        capabilities: CapSet::EMPTY,
        scope: Scope::new("node_management").unwrap(),
        raft: None,
    };
    let first = n1.send(join("w1"));
    let second = n1.send(join("w2"));
    let (first, second) = futures::join!(first, second);
    first.unwrap().unwrap();
    // 25 J − 5.5 J (connect) − 10 J (held for the first join) leaves 9.5 J < 10 J.
    let err = second.unwrap().unwrap_err();
    assert!(matches!(err, JoinError::InsufficientEnergy { .. }), "{err}");
}

#[actix::test]
async fn a_revocation_takes_effect_on_the_next_message() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let ctx = world.ctx("operator", "communication_management");
    comm.send(broadcast(ctx.clone(), "news")).await.unwrap().unwrap();
    world.env.grants().revoke_capabilities(&Principal::user("operator"), CapSet::of(&[Capability::BroadcastManagement]));
    let err = comm.send(broadcast(ctx.clone(), "news")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::InvalidCapabilities(ref why) if why.contains("BroadcastManagement")), "{err}");
    world.grant("operator", CapSet::of(&[Capability::BroadcastManagement]));
    comm.send(broadcast(ctx, "news")).await.unwrap().unwrap();
}

#[actix::test]
async fn entries_carry_the_time_their_run_ended_in_order_and_its_running_time() {
    let world = World::new(Config::default());
    let comm = CommunicationManager::new(&world.env, "n1").start();
    let nanos = |t: Timestamp| t.to_datetime().timestamp_nanos_opt().unwrap();
    let before = nanos(Timestamp::now());
    for _ in 0..3 {
        comm.send(broadcast(world.ctx("operator", "communication_management"), "news")).await.unwrap().unwrap();
        // A refusal is stamped the same way.
        comm.send(broadcast(world.ctx("operator", "node_management"), "news")).await.unwrap().unwrap_err();
    }
    let after = nanos(Timestamp::now());

    let entries = world.entries();
    assert_eq!(entries.len(), 6);
    let stamps: Vec<i64> = entries.iter().map(|e| nanos(e.ts)).collect();
    // The gate's clock is the time-stamp counter anchored to the system clock: they agree to
    // well within a millisecond over a test's length.
    let tolerance = Duration::from_millis(1).as_nanos() as i64;
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(stamps[0] >= before - tolerance && stamps[5] <= after + tolerance, "{before} {stamps:?} {after}");
    // The gate times every run, whatever the meter (here a fixed charge per run).
    assert!(entries.iter().all(|e| e.energy.as_ref().unwrap().elapsed_ns > 0));
}

#[actix::test]
async fn a_flood_of_refusals_is_counted_not_written_and_its_fields_are_capped() {
    let world = World::new(Config::default());
    let (clock, time) = GateClock::manual();
    let comm = CommunicationManager::new(&world.env.clone().with_clock(clock), "n1").start();
    // Refusals cost their sender nothing; 300 in one second, each naming a 64 KiB channel.
    let huge = "c".repeat(64 << 10);
    for _ in 0..300 {
        let err = comm.send(broadcast(world.ctx("guest", "communication_management"), &huge)).await.unwrap().unwrap_err();
        assert!(matches!(err, CommunicationError::InvalidRequest(_)), "{err}");
    }
    let written = world.entries();
    assert_eq!(written.len(), 100, "the limit is 100 a second");
    assert!(written.iter().all(|e| e.resource.len() <= 128 + '…'.len_utf8() && e.resource.ends_with('…')), "capped");
    let status = comm.send(Status::new(world.ctx("operator", "*"))).await.unwrap().unwrap();
    assert_eq!((status.counters.denied, status.counters.left_out), (300, 200));

    // The next second's first refusal is written after one entry that says how many were not.
    time.advance(Duration::from_secs(1));
    comm.send(broadcast(world.ctx("guest", "communication_management"), &huge)).await.unwrap().unwrap_err();
    let entries = world.entries();
    let said = &entries[entries.len() - 2];
    assert_eq!((&*said.operation, said.error(), &*said.principal), ("refusals_left_out", Some("RefusalsLeftOut"), "user:guest"));
    assert!(said.reason().unwrap().starts_with("200 more refusals"), "{:?}", said.reason());
    assert_eq!(said.energy.as_ref().unwrap().measured_j, 200.0 * MEASURED, "the energy of what was left out is kept");
    assert_eq!(entries.last().unwrap().operation, "broadcast");
    // Another principal has a second of its own.
    comm.send(broadcast(world.ctx("operator", "node_management"), "news")).await.unwrap().unwrap_err();
    assert_eq!(world.entries().last().unwrap().principal, "user:operator");
}
