//! The README's "Writing a gated actor" example, built exactly as the README shows it (the first
//! test checks that the README still shows this text) and sent requests through the gate.

use std::sync::Arc;

use actix::Actor;
use actors::energy::{FixedMeter, Joules};
use actors::security::audit::{MemorySink, Outcome};
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment, Status};

use readme::{Balance, Deposit, Ledger, LedgerError};

// Kept unindented, as the README shows it.
#[rustfmt::skip]
mod readme {
// README: begin
use actors::gate::{Gate, GatedActor};
use actors::security::SecurityContext;
use actors::{gate_error, gated, Environment};

#[gate_error]
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("overflow: the balance would pass {0}")]
    Overflow(u64),
}

pub struct Deposit { pub ctx: SecurityContext, pub amount: u64 }
pub struct Balance { pub ctx: SecurityContext }

pub struct Ledger { gate: Gate, balance: u64 }

impl Ledger {
    pub fn new(env: &Environment) -> Self {
        Ledger { gate: env.gate::<Self>("ledger", &Self::default_config()), balance: 0 }
    }
}

#[gated(error = LedgerError, scope = "ledger", budget = 100.0, grants = [ResourceManagement, EnergyManagement])]
impl Ledger {
    #[operation(requires = [ResourceManagement], cost = 2.0, resource = "balance",
        validate = if msg.amount == 0 { Err(LedgerError::InvalidRequest("nothing to deposit".into())) } else { Ok(()) })]
    fn deposit(&mut self, msg: Deposit) -> Result<u64, LedgerError> {
        self.balance = self.balance.checked_add(msg.amount).ok_or(LedgerError::Overflow(u64::MAX))?;
        Ok(self.balance)
    }

    #[operation(requires = [ResourceManagement], cost = 0.0, resource = "balance")]
    fn balance(&mut self, _msg: Balance) -> Result<u64, LedgerError> {
        Ok(self.balance)
    }
}
// README: end
}

#[test]
fn the_readme_shows_exactly_this_actor() {
    let source = include_str!("readme_actor.rs");
    let begin = source.find("// README: begin\n").unwrap() + "// README: begin\n".len();
    let end = source.find("// README: end").unwrap();
    let actor = &source[begin..end];
    let readme = include_str!("../../README.md");
    assert!(readme.contains(&format!("```rust\n{actor}```")), "README.md no longer shows the actor of tests/readme_actor.rs");
    assert!(actor.lines().count() < 40, "{} lines", actor.lines().count());
}

#[actix::test]
async fn the_readme_actor_passes_every_request_through_the_gate() {
    let grants = Arc::new(GrantTable::new());
    let teller_credential = grants.grant(Principal::user("teller"), CapSet::of(&[Capability::ResourceManagement, Capability::EnergyManagement]), Scope::root(), Origin::Configured);
    let audit = Arc::new(MemorySink::new());
    let env = Environment::new(Config::default(), grants.clone(), audit.clone())
        .with_meter(|| Box::new(FixedMeter { per_run: Joules::new(0.5).unwrap() }));
    let ledger = Ledger::new(&env).start();
    let ctx = teller_credential.context(Scope::new("ledger").unwrap()).unwrap();

    assert_eq!(ledger.send(Deposit { ctx: ctx.clone(), amount: 40 }).await.unwrap().unwrap(), 40);
    assert_eq!(ledger.send(Deposit { ctx: ctx.clone(), amount: 2 }).await.unwrap().unwrap(), 42);
    let err = ledger.send(Deposit { ctx: ctx.clone(), amount: 0 }).await.unwrap().unwrap_err();
    assert!(matches!(err, LedgerError::InvalidRequest(ref why) if why == "nothing to deposit"), "{err}");
    let err = ledger.send(Deposit { ctx: ctx.clone(), amount: u64::MAX }).await.unwrap().unwrap_err();
    assert!(matches!(err, LedgerError::Overflow(_)), "{err}");
    assert_eq!(ledger.send(Balance { ctx: ctx.clone() }).await.unwrap().unwrap(), 42);

    // 2 J base + 0.5 J measured for each of three runs (the overflow ran and failed), 0.5 J for
    // the balance; the invalid deposit was refused before it ran and is not charged.
    let status = ledger.send(Status::<LedgerError>::new(ctx.clone())).await.unwrap().unwrap();
    assert_eq!(status.remaining, Joules::new(100.0 - 3.0 * 2.5 - 0.5).unwrap());
    let names: Vec<&str> = status.operations.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names, ["top_up", "status", "deposit", "balance"]);

    let outcomes: Vec<(String, Outcome)> = audit.entries().into_iter().map(|e| (e.operation.to_string(), e.outcome)).collect();
    let expect = [("deposit", Outcome::Allowed), ("deposit", Outcome::Allowed), ("deposit", Outcome::Denied), ("deposit", Outcome::Failed), ("balance", Outcome::Allowed), ("status", Outcome::Allowed)];
    assert_eq!(outcomes, expect.map(|(op, outcome)| (op.to_string(), outcome)));

    // Someone without ResourceManagement is refused by the gate, not by the actor.
    let visitor_credential = grants.grant(Principal::user("visitor"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let visitor = visitor_credential.context(Scope::new("ledger").unwrap()).unwrap();
    let err = ledger.send(Balance { ctx: visitor }).await.unwrap().unwrap_err();
    assert!(matches!(err, LedgerError::PermissionDenied(ref why) if why.contains("ResourceManagement")), "{err}");
}
