//! Physical accounting on a counter the test winds: the budgets pay what the counter measured
//! (minus the sampler's part, the refusals' part and the unattributed rest), and an actor whose
//! measured share exceeds its power cap is refused until the cap refills.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actors::gate::Status;
use actors::managers::communication::{Broadcast, CommunicationManager};
use actors::managers::node_manager::{ListNodes, JoinError, NodeManager};
use actors::security::audit::{AuditEntry, MemorySink, Summary};
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment};
use energy::attribution::METER_ACCOUNT;
use energy::counters::ScriptedCounter;
use energy::{Accounting, Joules, Source, Watts};

fn physical_config() -> Config {
    let mut config = Config::from_toml(
        r#"
        # A power cap: 2 W on average, 200 mJ at once. The run-time charges alone stay under it;
        # the measured shares of a 500 W machine do not.
        node_manager = { budget_joules = 0.2, refill_watts = 2.0 }
        [energy]
        accounting = "physical"
        [attribution]
        sample_every_ms = 2
        report_every_ms = 10
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Every refusal written, so that the log alone adds up.
    config.limits.max_refusals_per_second = 1_000_000;
    config
}

#[actix::test]
async fn budgets_pay_what_the_counter_measured_and_a_power_cap_throttles_and_refills() {
    let config = physical_config();
    assert_eq!(config.energy.accounting, Accounting::Physical);
    assert_eq!(config.node_manager.refill_watts, Some(Watts::new(2.0).unwrap()));
    let audit = Arc::new(MemorySink::new());
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(
        Principal::user("operator"),
        CapSet::of(&[Capability::NodeManagement, Capability::BroadcastManagement, Capability::EnergyManagement]),
        Scope::root(),
        Origin::Configured,
    );
    let guest = grants.grant(Principal::user("guest"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let dial = ScriptedCounter::new(Source::Rapl);
    let env = Environment::with_counter(config, grants, audit.clone(), Box::new(dial.clone())).unwrap();
    assert!(env.gate_cost() > Joules::ZERO, "the gate's fixed cost was measured");
    let attribution = env.attribution().unwrap().clone();

    let nm = NodeManager::new(&env, "n1").start();
    let comm = CommunicationManager::new(&env, "n1").start();
    let nm_ctx = operator.context(Scope::new("node_management").unwrap()).unwrap();
    let comm_ctx = operator.context(Scope::new("communication_management").unwrap()).unwrap();
    let guest_ctx = guest.context(Scope::new("node_management").unwrap()).unwrap();
    let status = |ctx| Status::<JoinError>::new(ctx);
    let base = nm.send(status(nm_ctx.clone())).await.unwrap().unwrap();
    assert!(base.operations.iter().all(|(_, cost, _, _)| *cost == env.gate_cost()), "every base cost is the gate's: {base:?}");
    assert_eq!(base.accounting, Accounting::Physical);

    // A 500 W machine: the counter gains 1 J every 2 ms while the actors work.
    let winding = Arc::new(AtomicBool::new(true));
    let winder = {
        let (dial, winding) = (dial.clone(), winding.clone());
        std::thread::spawn(move || {
            let mut wound = 0u32;
            while winding.load(Ordering::Relaxed) {
                dial.add(1.0);
                wound += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            wound
        })
    };
    let (mut throttled, mut admitted) = (0u32, 0u32);
    let started = Instant::now();
    while (throttled < 20 || admitted < 200 || started.elapsed() < Duration::from_millis(100)) && started.elapsed() < Duration::from_secs(20) {
        for i in 0..50u32 {
            let ctx = if i % 10 == 0 { guest_ctx.clone() } else { nm_ctx.clone() };
            match nm.send(ListNodes { ctx }).await.unwrap() {
                Ok(_) => admitted += 1,
                Err(JoinError::InsufficientEnergy { .. }) => throttled += 1,
                Err(JoinError::PermissionDenied(_)) => {}
                Err(e) => panic!("{e}"),
            }
            comm.send(Broadcast { ctx: comm_ctx.clone(), channel: "c".into(), content: "x".into() }).await.unwrap().unwrap();
        }
    }
    winding.store(false, Ordering::Relaxed);
    let wound = winder.join().unwrap();
    let totals = attribution.stop().unwrap();
    // The sampler wrote its last entries as it stopped: these are the entries its windows cover.
    let in_windows = audit.entries();
    assert!(throttled >= 20 && admitted >= 200, "the cap throttled {throttled} and admitted {admitted}");

    // Throttled while over its cap (the last window's correction applies now, and what the
    // budget cannot pay is a debt), admitted again once the bucket has refilled: 200 mJ at 2 W
    // takes 100 ms from empty, longer with a debt to pay first.
    let _ = nm.send(ListNodes { ctx: nm_ctx.clone() }).await.unwrap();
    let refilled = Instant::now();
    let mut again = false;
    while !again && refilled.elapsed() < Duration::from_secs(10) {
        actix::clock::sleep(Duration::from_millis(20)).await;
        again = nm.send(ListNodes { ctx: nm_ctx.clone() }).await.unwrap().is_ok();
    }
    assert!(again, "the cap refilled");

    // The counter's every joule is accounted for.
    let measured = totals.measured.get();
    assert!((measured - f64::from(wound)).abs() < 1e-6, "{measured} J reported, {wound} J wound");
    assert!((totals.accounted().get() - measured).abs() < 1e-9 * measured);
    let nm_line = &totals.lines["node-manager/n1"];
    let comm_line = &totals.lines["communication-manager/n1"];
    assert!(nm_line.refused > 0 && comm_line.refused == 0, "{nm_line:?} {comm_line:?}");
    // The communication manager was refused nothing: it paid its whole share, up from what it
    // was charged at run time. The node manager paid its admitted runs' share.
    assert!((comm_line.paid() - comm_line.attributed.get()).abs() < 1e-9, "{comm_line:?}");
    assert!(comm_line.correction_j > 0.0, "{comm_line:?}");
    assert!(nm_line.paid() <= nm_line.attributed.get() + 1e-9 && nm_line.paid() > 0.0, "{nm_line:?}");
    let refusals = nm_line.attributed.get() - nm_line.paid();
    let paid: f64 = [nm_line, comm_line].iter().map(|l| l.paid()).sum();
    let sum = paid + refusals + totals.lines[METER_ACCOUNT].attributed.get() + totals.unattributed.get();
    assert!((sum - measured).abs() < 1e-6, "budgets {paid} + refusals {refusals} + sampler + unattributed = {sum}, counter {measured}");

    // The audit log says the same: each request's run-time charge plus the corrections of the
    // attribution entries is what each budget paid.
    let paid_in_log = |entries: &[AuditEntry], actor: &str| -> f64 {
        entries.iter().filter(|e| e.actor == actor).filter_map(|e| e.energy.as_ref()).map(|e| e.charged_j).sum()
    };
    for (actor, line) in [("node-manager/n1", nm_line), ("communication-manager/n1", comm_line)] {
        let logged = paid_in_log(&in_windows, actor);
        assert!((logged - line.paid()).abs() < 1e-8, "{actor}: log {logged}, report {}", line.paid());
    }
    let entries = audit.entries();
    for e in entries.iter().filter_map(|e| e.energy.as_ref()) {
        assert_eq!(e.accounting, "physical", "{e:?}");
    }
    let summary: Summary = entries.iter().collect();
    let metered = summary.metered.as_ref().unwrap();
    assert_eq!((metered.accounting.as_str(), metered.source.as_str()), ("physical", "rapl"));
    assert!((metered.by_actor["communication-manager/n1"].corrected_j - comm_line.correction_j).abs() < 1e-9);
    assert!(summary.joules_from.keys().all(|k| k.starts_with("physical/")), "{:?}", summary.joules_from);

    // And the gate applied every correction: what the node manager's budget consumed is what the
    // log says it paid (the status reads it before its own charge).
    let logged = paid_in_log(&entries, "node-manager/n1");
    let after = nm.send(status(nm_ctx.clone())).await.unwrap().unwrap();
    let c = &after.counters;
    let consumed = c.charged.get() + c.corrected_up.get() - c.corrected_down.get();
    assert!((consumed - logged).abs() < 1e-8, "budget consumed {consumed}, log {logged}");
    assert!(c.corrected_up > Joules::ZERO, "{c:?}");
}
