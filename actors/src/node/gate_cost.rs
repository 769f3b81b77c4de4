//! The fixed cost of passing the gate, measured at start-up: under physical accounting it is every
//! operation's base cost, in place of the tutorial's declared constants.
//!
//! A scratch gate (its own grant table and an in-memory audit sink, so nothing real sees it) runs
//! a few thousand requests whose body does nothing. Their running time per request, priced at
//! `[energy] watts_per_core`, is what a request costs whatever its body does; the part the gate's
//! meter already measures (admission runs inside the metered stretch) is taken off, so it is not
//! charged twice. The median of several rounds is kept: a round that was preempted counts once.

use std::sync::Arc;

use energy::{Joules, Meter, Watts};
use security::audit::MemorySink;
use security::{CapSet, GrantTable, Origin, Principal, Scope, SecurityContext};

use crate::gate::{self, Gate, GateClock, GateSetup, GatedActor, Limits};
use crate::{gate_error, gated};

#[gate_error]
#[derive(Debug, thiserror::Error)]
enum ProbeError {}

struct Nothing {
    ctx: SecurityContext,
}

struct Probe {
    gate: Gate,
}

#[gated(error = ProbeError, scope = "gate_cost", budget = 1e9, grants = [])]
impl Probe {
    #[operation(requires = [], cost = 0.0)]
    fn nothing(&mut self, _msg: Nothing) -> Result<(), ProbeError> {
        Ok(())
    }
}

/// Requests per round, and rounds.
const REQUESTS: u32 = 2000;
const ROUNDS: usize = 5;

/// The measured fixed cost of one request through a gate metered by `meter`, in joules of running
/// time at `watts_per_core`.
pub fn measure(meter: Box<dyn Meter>, watts_per_core: Watts) -> Joules {
    let grants = Arc::new(GrantTable::new());
    let sink = Arc::new(MemorySink::with_capacity(REQUESTS as usize));
    let config = Probe::default_config();
    let credential = grants.grant(Principal::actor("gate-cost"), CapSet::EMPTY, Scope::root(), Origin::Configured);
    let ctx = credential.context(Scope::new(Probe::SCOPE).expect("a constant")).expect("the root grant covers it");
    let mut probe = Probe {
        gate: Gate::new(GateSetup {
            actor: "gate-cost".into(),
            scope: Scope::new(Probe::SCOPE).expect("a constant"),
            operations: Probe::OPERATIONS,
            config: &config,
            limits: Limits::default(),
            thresholds: energy::Thresholds::default(),
            grants: grants.clone(),
            audit: sink.clone(),
            meter,
            accounting: energy::Accounting::Tutorial,
            gate_cost: Joules::ZERO,
            account: None,
            clock: GateClock::system(),
            metrics: None,
            credential,
        }),
    };
    let mut round = || {
        let measured_before = probe.gate.status().counters.measured;
        let started = std::time::Instant::now();
        for _ in 0..REQUESTS {
            let reply = gate::run(&mut probe, Nothing { ctx: ctx.clone() }, |p, m| p.nothing(m));
            std::hint::black_box(reply);
        }
        // Wall time, as the time meter measures its stretches, so that taking off what it metered
        // takes off the same kind of time.
        let spent = watts_per_core * started.elapsed();
        let metered = probe.gate.status().counters.measured.saturating_sub(measured_before);
        sink.clear();
        let fixed = match spent.saturating_sub(metered) {
            // Never zero: a round whose stretches were all it measured still cost its time.
            Joules::ZERO => spent,
            fixed => fixed,
        };
        fixed.scale(1.0 / f64::from(REQUESTS))
    };
    round();
    let mut rounds: Vec<Joules> = (0..ROUNDS).map(|_| round()).collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_costs_something_and_not_much() {
        let watts = Watts::new(10.0).unwrap();
        let cost = measure(Box::new(energy::TimeMeter::new(watts)), watts);
        // At 10 W, between 10 ns and 1 ms of CPU time a request, even in a debug build on a busy machine.
        assert!(cost.get() > 1e-7 && cost.get() < 1e-2, "{cost}");
    }
}
