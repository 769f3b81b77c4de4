//! The machine's energy counter sampled beside the gates: every actor's runs get a share, the
//! sampler pays for its polling, and the audit log's attribution entries add up to the counter.

use std::sync::Arc;

use actix::Actor;
use actors::managers::node_manager::{ListNodes, NodeManager};
use actors::security::audit::{EntryKind, MemorySink, Summary};
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment};
use energy::attribution::METER_ACCOUNT;

#[actix::test]
async fn the_counter_is_shared_among_actors_and_the_audit_log_reconciles_with_it() {
    let mut config = Config::default();
    config.attribution.enabled = true;
    config.attribution.sample_every_ms = 2;
    config.attribution.report_every_ms = 20;
    // Every refusal written, so that the entries alone add up (past the limit, refusals of the
    // current second are in the count that the next "refusals_left_out" entry carries).
    config.limits.max_refusals_per_second = 10_000;
    let audit = Arc::new(MemorySink::new());
    let grants = Arc::new(GrantTable::new());
    let operator_credential = grants.grant(Principal::user("operator"), CapSet::of(&[Capability::NodeManagement]), Scope::root(), Origin::Configured);
    let guest_credential = grants.grant(Principal::user("guest"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let env = Environment::new(config, grants.clone(), audit.clone());
    let attribution = env.attribution().expect("some counter advances on every machine, CPU time at least").clone();

    let n1 = NodeManager::new(&env, "n1").start();
    let operator = operator_credential.context(Scope::new("node_management").unwrap()).unwrap();
    let guest = guest_credential.context(Scope::new("node_management").unwrap()).unwrap();
    for i in 0..3000 {
        let ctx = if i % 10 == 0 { guest.clone() } else { operator.clone() };
        let _ = n1.send(ListNodes { ctx }).await.unwrap();
    }
    let totals = attribution.stop().unwrap();
    assert!(attribution.stop().is_none(), "stopped once");

    // Every run was recorded, denied ones too, at the cost the gate charged for it.
    let (actor, line) = totals.lines.iter().find(|(name, _)| name.starts_with("node-manager")).expect("{totals:#?}");
    assert_eq!(line.runs, 3000);
    let entries = audit.entries();
    let metered: f64 = entries
        .iter()
        .filter(|e| e.kind != EntryKind::EnergyAttribution && e.actor == actor.as_str())
        .filter_map(|e| e.energy.as_ref())
        .map(|e| e.measured_j)
        .sum();
    assert!((line.modelled.get() - metered).abs() <= metered * 1e-6, "{} vs {metered}", line.modelled);
    assert!(line.attributed.get() > 0.0, "{line:?}");
    assert!(totals.lines[METER_ACCOUNT].attributed.get() > 0.0, "polling is charged: {totals:#?}");
    assert_eq!(totals.source, attribution.probe().source);

    // The entries add up to the counter, and the summary shows it.
    let measured = totals.measured.get();
    assert!((totals.accounted().get() - measured).abs() < 1e-9 * measured.max(1.0));
    let summary: Summary = entries.iter().collect();
    let logged = summary.metered.expect("attribution entries were written");
    assert!((logged.measured_j - measured).abs() < 1e-9 * measured.max(1.0), "{} vs {measured}", logged.measured_j);
    assert_eq!(logged.source, totals.source.as_str());
    assert!(logged.by_actor.contains_key("unattributed") && logged.by_actor.contains_key(METER_ACCOUNT));
    assert!((logged.by_actor[actor.as_str()].metered_j - line.modelled.get()).abs() < 1e-9);
}

#[actix::test]
async fn attribution_is_off_unless_configured() {
    let env = Environment::new(Config::default(), Arc::new(GrantTable::new()), Arc::new(MemorySink::new()));
    assert!(env.attribution().is_none());
    let err = Config::from_toml("[attribution]\nsample_every_ms = 50\nreport_every_ms = 10\n").unwrap_err();
    assert!(err.to_string().contains("sample_every_ms (50) must be at least 1 and at most report_every_ms (10)"), "{err}");
}

#[test]
fn a_calibration_profile_gives_the_gate_its_cost_model() {
    use energy::calibration::{Fit, Profile};
    use energy::{CostModel, Joules, OpWeights, Source};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    let model = CostModel { weights: OpWeights { alu: 1.0, mem: 12.0, fp: 2.5 }, unit_energy: Joules::new(3e-10).unwrap() };
    let fit = Fit { joules_per_op: [3e-10, 3.6e-9, 7.5e-10], idle_watts: 4.0, r_squared: 0.99, residuals: vec![] };
    Profile { cost_model: model, basis: "test".into(), counter: "dial".into(), source: Source::Rapl, fit, runs: vec![] }
        .save(&path)
        .unwrap();
    let toml = format!("[energy]\nprofile = {:?}\n", path.display().to_string());
    assert_eq!(Config::from_toml(&toml).unwrap().energy.cost_model, model);
    assert_eq!(Config::default().energy.cost_model, CostModel::default(), "without a profile, the documented default");

    std::fs::write(&path, "garbage").unwrap();
    let err = Config::from_toml(&toml).unwrap_err().to_string();
    assert!(err.contains("energy.profile") && err.contains("profile.json: not a calibration profile"), "{err}");
    let missing = format!("[energy]\nprofile = {:?}\n", dir.path().join("none.json").display().to_string());
    let err = Config::from_toml(&missing).unwrap_err().to_string();
    assert!(err.contains("none.json"), "{err}");
}
