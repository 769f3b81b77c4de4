//! The gate: the one place where a request to a gated actor is checked, metered, charged and
//! audited.
//!
//! An actor declares what differs, once per operation, with [`gated`](crate::gated): the
//! capabilities it requires, its base cost, its resource, its validation and its body. Its error
//! enum lists only its own failures; [`gate_error`](crate::gate_error) adds the gate's refusals.
//! The gate does the rest, in this order:
//!
//! 0. **the log**: the audit sink can take entries now (`AuditUnavailable` otherwise: the log
//!    fails closed, and nothing runs that could not be audited);
//! 1. **authority**: the context presents only capabilities its principal was granted
//!    (`InvalidCapabilities`), its scope covers the operation (`InvalidScope`), and both the
//!    principal and the actor hold what the operation requires (`PermissionDenied`);
//! 2. **validation**: the operation's `validate` (`InvalidRequest` or the actor's own variant);
//! 3. **energy**: the estimate (base cost + running mean of the measured cost) is reserved from the
//!    budget (`InsufficientEnergy`);
//! 4. **metered run** of the body;
//! 5. **charge** of the actual cost (base + measured), metrics, alerts at the thresholds;
//! 6. **audit** of every outcome, allowed or not, and the same record as a `tracing` event;
//! 7. **reply** with the body's result or the typed refusal; with durability `before_reply`, once
//!    the entry is on disk ([`Reply`]).
//!
//! A refused request is measured and audited but not charged.
//!
//! ```
//! use actors::gate::{Gate, Pending};
//! use actors::security::SecurityContext;
//! use actors::{gate_error, gated, Environment};
//!
//! #[gate_error]
//! #[derive(Debug, thiserror::Error)]
//! pub enum CounterError {
//!     /// The total would not fit.
//!     #[error("overflow: {0}")]
//!     Overflow(String),
//! }
//!
//! pub struct Add { pub ctx: SecurityContext, pub amount: u64 }
//! pub struct Total { pub ctx: SecurityContext }
//!
//! pub struct Counter { gate: Gate, total: u64 }
//!
//! #[gated(error = CounterError, scope = "counting", budget = 100.0, grants = [ResourceManagement])]
//! impl Counter {
//!     /// Adds to the total; adding nothing is refused.
//!     #[operation(requires = [ResourceManagement], cost = 1.0, resource = "total",
//!                 validate = rules.non_negative("amount", msg.amount as f64).map_err(CounterError::from))]
//!     fn add(&mut self, msg: Add) -> Result<u64, CounterError> {
//!         self.total = self.total.checked_add(msg.amount).ok_or_else(|| CounterError::Overflow(format!("{} + {}", self.total, msg.amount)))?;
//!         Ok(self.total)
//!     }
//!
//!     /// The total so far.
//!     #[operation(requires = [ResourceManagement], cost = 0.0)]
//!     fn total(&mut self, _msg: Total) -> Result<u64, CounterError> {
//!         Ok(self.total)
//!     }
//! }
//!
//! impl Counter {
//!     pub fn new(env: &Environment) -> Self {
//!         Counter { gate: env.gate::<Self>("counter", &Self::default_config()), total: 0 }
//!     }
//! }
//! # use actors::gate::GatedActor;
//! # assert_eq!(Counter::OPERATIONS.iter().map(|o| o.name).collect::<Vec<_>>(), ["top_up", "status", "add", "total"]);
//! ```
//!
//! An operation without a base cost does not build:
//!
//! ```compile_fail
//! # use actors::{gate::Gate, gate_error, gated, security::SecurityContext};
//! # #[gate_error] #[derive(Debug, thiserror::Error)] pub enum PingError {}
//! # pub struct Ping { pub ctx: SecurityContext }
//! # pub struct Pinger { gate: Gate }
//! #[gated(error = PingError, scope = "ping", budget = 1.0, grants = [])]
//! impl Pinger {
//!     #[operation(requires = [])]
//!     fn ping(&mut self, _msg: Ping) -> Result<(), PingError> { Ok(()) }
//! }
//! ```
//!
//! Nor does one named otherwise than its message (`Ping` is `ping`, in the audit log too):
//!
//! ```compile_fail
//! # use actors::{gate::Gate, gate_error, gated, security::SecurityContext};
//! # #[gate_error] #[derive(Debug, thiserror::Error)] pub enum PingError {}
//! # pub struct Ping { pub ctx: SecurityContext }
//! # pub struct Pinger { gate: Gate }
//! #[gated(error = PingError, scope = "ping", budget = 1.0, grants = [])]
//! impl Pinger {
//!     #[operation(requires = [], cost = 0.0)]
//!     fn poke(&mut self, _msg: Ping) -> Result<(), PingError> { Ok(()) }
//! }
//! ```
//!
//! The same with the name and the cost compiles:
//!
//! ```
//! # use actors::{gate::Gate, gate_error, gated, security::SecurityContext};
//! # #[gate_error] #[derive(Debug, thiserror::Error)] pub enum PingError {}
//! # pub struct Ping { pub ctx: SecurityContext }
//! # pub struct Pinger { gate: Gate }
//! #[gated(error = PingError, scope = "ping", budget = 1.0, grants = [])]
//! impl Pinger {
//!     #[operation(requires = [], cost = 0.0)]
//!     fn ping(&mut self, _msg: Ping) -> Result<(), PingError> { Ok(()) }
//! }
//! ```

mod admission;
mod clock;
mod common;
mod config;
mod declaration;
mod error;
mod metered;
mod recording;
mod refusals;
mod running;

use std::sync::Arc;

use energy::attribution::Account;
use energy::{Accounting, EnergyAlert, EnergyBudget, EnergyMonitor, Joules, Meter, Source, Watts};
use security::{CapSet, Credential, GrantTable, Scope, SecurityContext};

use crate::metrics::GateMetrics;
use serde::Serialize;

pub use clock::{GateClock, ManualTime};
pub use common::{Status, TopUp};
pub use config::{ActorConfig, Limits, NoSettings};
pub use declaration::{Declared, GatedActor, Invalid, Operation, Pending, Rules};
pub use error::GateError;
pub use running::{run, run_async, Reply};

use clock::WallClock;
use refusals::RefusalLimiter;

/// Per-operation state: its base cost and what it has measured so far.
struct OperationState {
    name: &'static str,
    base: Joules,
    /// `actor_scope.name`, built once: the audit entry of every run carries it.
    scope: &'static str,
    runs: u64,
    mean_measured: f64,
}

/// What the gate has counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateCounters {
    /// Requests that ran and succeeded.
    pub allowed: u64,
    /// Requests that ran and failed.
    pub failed: u64,
    /// Requests refused before running.
    pub denied: u64,
    /// Refusals not written to the audit log, past a principal's limit (counted in `denied`).
    pub left_out: u64,
    /// Energy measured over all requests, refused ones included.
    pub measured: Joules,
    /// Energy charged at run time.
    pub charged: Joules,
    /// Physical accounting: charged afterwards, where the actor's share of the machine's counter
    /// exceeded what it was charged at run time.
    pub corrected_up: Joules,
    /// Physical accounting: credited back, where its share fell short of the run-time charges.
    pub corrected_down: Joules,
}

/// A snapshot of a gate, for status queries and summaries.
#[derive(Debug, Clone, Serialize)]
pub struct GateStatus {
    /// The actor.
    pub actor: String,
    /// Budget total.
    pub total: Joules,
    /// Budget used (`total − remaining`).
    pub used: Joules,
    /// Budget remaining.
    pub remaining: Joules,
    /// Charged after the budget ran out, owed to the next refills and top-ups.
    pub debt: Joules,
    /// Refill rate, if any.
    pub refill: Option<Watts>,
    /// What the meter measures with.
    pub source: Source,
    /// What its joules mean.
    pub accounting: Accounting,
    /// Counters.
    pub counters: GateCounters,
    /// Recent alerts, oldest first.
    pub alerts: Vec<EnergyAlert>,
    /// Per operation: name, base cost, runs, mean measured cost.
    pub operations: Vec<(String, Joules, u64, Joules)>,
}

/// Everything a gate is built from. [`Environment::gate`](crate::Environment::gate) fills it in
/// from the process's configuration.
pub struct GateSetup<'a, S = NoSettings> {
    /// The actor's name in the audit log (`node-manager/n1`).
    pub actor: String,
    /// The actor's scope (`node_management`).
    pub scope: Scope,
    /// The operations the actor declared, with their default costs.
    pub operations: &'static [Declared],
    /// Budget, grants and the configured base costs.
    pub config: &'a ActorConfig<S>,
    /// Limits for validation.
    pub limits: Limits,
    /// Alert thresholds.
    pub thresholds: energy::Thresholds,
    /// Who holds what.
    pub grants: Arc<GrantTable>,
    /// Where decisions are recorded.
    pub audit: Arc<dyn security::audit::AuditSink>,
    /// How runs are measured.
    pub meter: Box<dyn Meter>,
    /// What a charged joule means.
    pub accounting: Accounting,
    /// The fixed cost of passing the gate, measured: every operation's base cost under physical
    /// accounting.
    pub gate_cost: Joules,
    /// Where each run's modelled cost is recorded for attribution of the machine counter, when
    /// it is sampled.
    pub account: Option<Arc<Account>>,
    /// What the gate's time is.
    pub clock: GateClock,
    /// Where its counters and budget go for Prometheus, when the process serves metrics.
    pub metrics: Option<GateMetrics>,
    /// The actor's own grant, with which it asks other actors.
    pub credential: Credential,
}

/// The gate of one actor. See the [module documentation](self).
pub struct Gate {
    actor: &'static str,
    scope: Scope,
    own: CapSet,
    grants: Arc<GrantTable>,
    budget: EnergyBudget,
    monitor: EnergyMonitor,
    limits: Limits,
    operations: Vec<OperationState>,
    meter: Box<dyn Meter>,
    accounting: Accounting,
    gate_cost: Joules,
    account: Option<Arc<Account>>,
    metrics: Option<GateMetrics>,
    audit: Arc<dyn security::audit::AuditSink>,
    clock: WallClock,
    credential: Credential,
    refusals: RefusalLimiter,
    /// The sink answers only once entries are durable: replies wait for it.
    before_reply: bool,
    counters: GateCounters,
    mailbox_capacity: usize,
}

impl Gate {
    /// A gate with a full budget. Each declared operation costs what the configuration says, or
    /// what it declared.
    pub fn new<S>(setup: GateSetup<'_, S>) -> Gate {
        let config = setup.config;
        let before_reply = setup.audit.replies_after_durable();
        let clock = WallClock::new(setup.clock);
        let budget = match config.refill_watts {
            Some(rate) => EnergyBudget::with_refill(config.budget_joules, rate, clock.instant()),
            None => EnergyBudget::new(config.budget_joules),
        };
        let operations = setup
            .operations
            .iter()
            .map(|op| OperationState {
                name: op.name,
                base: match setup.accounting {
                    Accounting::Tutorial => config.costs.get(op.name).copied().unwrap_or_else(|| op.base()),
                    Accounting::Physical => setup.gate_cost,
                },
                scope: security::audit::intern(setup.scope.child(op.name).as_str()),
                runs: 0,
                mean_measured: 0.0,
            })
            .collect();
        if let Some(metrics) = &setup.metrics {
            metrics.budget(&budget);
        }
        Gate {
            actor: security::audit::intern(&setup.actor),
            scope: setup.scope,
            own: config.grants,
            grants: setup.grants,
            budget,
            monitor: EnergyMonitor::new(setup.thresholds),
            limits: setup.limits,
            operations,
            meter: setup.meter,
            accounting: setup.accounting,
            gate_cost: setup.gate_cost,
            account: setup.account,
            metrics: setup.metrics,
            audit: setup.audit,
            clock,
            credential: setup.credential,
            refusals: RefusalLimiter::new(setup.limits.max_refusals_per_second),
            before_reply,
            counters: GateCounters::default(),
            mailbox_capacity: config.mailbox_capacity,
        }
    }

    /// How many messages the actor's mailbox holds before senders wait (configured, because
    /// actix's default of 16 is too small for a manager).
    pub fn mailbox_capacity(&self) -> usize {
        self.mailbox_capacity
    }

    /// The actor's name.
    pub fn actor(&self) -> &str {
        self.actor
    }

    /// The capabilities the actor holds.
    pub fn grants(&self) -> CapSet {
        self.own
    }

    /// The context this actor presents when it asks a manager acting in `scope`: its own grant
    /// (made when the gate was built, in every scope) with everything it holds, narrowed to that
    /// manager's scope.
    pub fn identity(&self, scope: &str) -> SecurityContext {
        let scope = Scope::new(scope).expect("manager scopes are constants");
        self.credential.context(scope).expect("an actor's own grant covers every scope")
    }

    /// The actor's own principal (`actor:<name>`).
    pub fn principal(&self) -> &security::Principal {
        self.credential.principal()
    }

    /// The shared grant table.
    pub fn grant_table(&self) -> &Arc<GrantTable> {
        &self.grants
    }

    /// The budget.
    pub fn budget(&self) -> &EnergyBudget {
        &self.budget
    }

    /// Adds energy to the budget (the body of a gated top-up; the gate audits it).
    pub fn top_up(&mut self, amount: Joules) -> Joules {
        self.budget.top_up(amount);
        if let Some(metrics) = &self.metrics {
            metrics.budget(&self.budget);
        }
        self.watch_budget(Declared::TOP_UP.name, Some(0));
        self.budget.remaining()
    }

    /// A snapshot for status queries.
    pub fn status(&self) -> GateStatus {
        GateStatus {
            actor: self.actor.to_string(),
            total: self.budget.total(),
            used: self.budget.used(),
            remaining: self.budget.remaining(),
            debt: self.budget.debt(),
            refill: self.budget.refill_rate(),
            source: self.meter.source(),
            accounting: self.accounting,
            counters: self.counters.clone(),
            alerts: self.monitor.recent().cloned().collect(),
            operations: self
                .operations
                .iter()
                .map(|o| (o.name.to_owned(), o.base, o.runs, Joules::new(o.mean_measured).unwrap_or(Joules::ZERO)))
                .collect(),
        }
    }

    /// The scope an operation runs in (`actor_scope.operation`), or the actor's own.
    fn scope_of(&self, operation: Option<usize>) -> &'static str {
        match operation {
            Some(i) => self.operations[i].scope,
            None => security::audit::intern(self.scope.as_str()),
        }
    }

    /// Base cost plus the running mean of what the operation measured.
    fn estimate(&self, operation: usize) -> Joules {
        let state = &self.operations[operation];
        state.base + Joules::new(state.mean_measured).unwrap_or(Joules::ZERO)
    }
}

impl Drop for Gate {
    /// Says how many refusals were left out of the log in each principal's last second.
    fn drop(&mut self) {
        for (principal, count) in self.refusals.unreported() {
            self.record_left_out(principal, count);
        }
    }
}
