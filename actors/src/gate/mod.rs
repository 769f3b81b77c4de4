//! The gate: the one place where a request to a gated actor is checked, metered, charged and
//! audited.
//!
//! An actor declares what differs: its messages implement [`Operation`] (name, required
//! capabilities, validation), its error type implements [`GateError`], and its handlers call
//! [`run`] (or [`run_async`]) with the body of the operation. The gate does the rest, in this order:
//!
//! 1. **authority**: the context presents only capabilities its principal was granted
//!    (`InvalidCapabilities`), its scope covers the operation (`InvalidScope`), and both the
//!    principal and the actor hold what the operation requires (`PermissionDenied`);
//! 2. **validation**: [`Operation::validate`] (`InvalidRequest` or the actor's own variant);
//! 3. **energy**: the estimate (base cost + running mean of the measured cost) is reserved from the
//!    budget (`InsufficientEnergy`);
//! 4. **metered run** of the body;
//! 5. **charge** of the actual cost (base + measured), metrics, alerts at the thresholds;
//! 6. **audit** of every outcome, allowed or not, and the same record as a `tracing` event;
//! 7. **reply** with the body's result or the typed refusal.
//!
//! A refused request is measured and audited but not charged.

mod error;
mod metered;
mod wall_clock;

use std::borrow::Cow;
use std::ops::AddAssign;
use std::sync::Arc;
use std::time::Instant;

use actix::fut::{self, ActorFutureExt};
use actix::{Actor, ActorFuture, Message, ResponseActFuture};
use energy::attribution::Account;
use energy::{EnergyAlert, EnergyBudget, EnergyMonitor, Joules, Mark, Meter, Reading, Reservation, Sample, Source, Watts};
use security::audit::compact_str::CompactString;
use security::audit::{AuditEntry, AuditSink, Detail, EnergyRecord, EntryKind, OpTally, Outcome};
use security::{CapSet, GrantTable, Principal, Scope, SecurityContext};
use serde::Serialize;

pub use error::GateError;
use metered::MeteredFuture;
use wall_clock::{Ticks, WallClock};

use crate::config::{ActorConfig, Limits};

/// A request to a gated actor: what it is called, what it needs, and what makes it valid.
pub trait Operation: Message<Result = Result<Self::Output, Self::Error>> + 'static {
    /// What a successful run returns.
    type Output: 'static;
    /// The actor's typed error.
    type Error: GateError;
    /// The operation's name in configuration, scopes and the audit log (`join`).
    const NAME: &'static str;
    /// Capabilities that both the requester and the actor must hold.
    const REQUIRES: CapSet;

    /// The authority the request carries.
    fn context(&self) -> &SecurityContext;
    /// What the request is about, for the audit log (a node id, a channel).
    fn resource(&self) -> &str;
    /// Checks the request itself: ids, sizes, numbers, what it asks to be granted.
    fn validate(&self, _rules: &Rules<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What validation may consult.
pub struct Rules<'a> {
    /// Size limits.
    pub limits: &'a Limits,
    /// The capabilities the actor holds (and so may delegate).
    pub actor_grants: CapSet,
    /// The actor's scope.
    pub actor_scope: &'a Scope,
}

impl Rules<'_> {
    /// Checks an identifier: non-empty, at most `limits.max_id_bytes`, of `A-Z a-z 0-9 . _ - : /`.
    pub fn id(&self, what: &str, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err(format!("{what} is empty"));
        }
        if value.len() > self.limits.max_id_bytes {
            return Err(format!("{what} is {} bytes long; the limit is {}", value.len(), self.limits.max_id_bytes));
        }
        match value.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:/".contains(*c))) {
            Some(c) => Err(format!("{what} {value:?} contains {c:?}; use letters, digits and . _ - : /")),
            None => Ok(()),
        }
    }

    /// Checks a payload's size against `limits.max_payload_bytes`.
    pub fn payload(&self, what: &str, len: usize) -> Result<(), String> {
        if len > self.limits.max_payload_bytes {
            return Err(format!("{what} is {len} bytes; the limit is {}", self.limits.max_payload_bytes));
        }
        Ok(())
    }
}

/// An actor whose messages pass the gate.
pub trait GatedActor: Actor {
    /// The actor's gate.
    fn gate(&mut self) -> &mut Gate;
}

/// Per-operation state: its base cost and what it has measured so far.
struct OperationState {
    name: String,
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
    /// Energy measured over all requests, refused ones included.
    pub measured: Joules,
    /// Energy charged.
    pub charged: Joules,
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
    /// Refill rate, if any.
    pub refill: Option<Watts>,
    /// What the meter measures with.
    pub source: Source,
    /// Counters.
    pub counters: GateCounters,
    /// Recent alerts, oldest first.
    pub alerts: Vec<EnergyAlert>,
    /// Per operation: name, base cost, runs, mean measured cost.
    pub operations: Vec<(String, Joules, u64, Joules)>,
}

/// Everything a gate is built from.
pub struct GateSetup {
    /// The actor's name in the audit log (`node-manager/n1`).
    pub actor: String,
    /// The actor's scope (`node_management`).
    pub scope: Scope,
    /// Budget, grants and base costs.
    pub config: ActorConfig,
    /// Limits for validation.
    pub limits: Limits,
    /// Alert thresholds.
    pub thresholds: energy::Thresholds,
    /// Who holds what.
    pub grants: Arc<GrantTable>,
    /// Where decisions are recorded.
    pub audit: Arc<dyn AuditSink>,
    /// How runs are measured.
    pub meter: Box<dyn Meter>,
    /// Where each run's modelled cost is recorded for attribution of the machine counter, when
    /// it is sampled.
    pub account: Option<Arc<Account>>,
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
    account: Option<Arc<Account>>,
    audit: Arc<dyn AuditSink>,
    clock: WallClock,
    last_lookup: Option<Lookup>,
    counters: GateCounters,
    mailbox_capacity: usize,
}

/// The last grant lookup. Most messages to an actor come from the principal before, usually in
/// clones of one context (so comparing principals compares pointers), and any grant or revocation
/// changes the table's version.
struct Lookup {
    version: u64,
    principal: Principal,
    /// The principal's name as audit entries carry it.
    name: CompactString,
    held: Option<CapSet>,
}

/// An admitted request: who asked, about what, and the energy held for it.
pub struct Ticket {
    operation: usize,
    principal: CompactString,
    resource: CompactString,
    hold: Reservation,
}

/// The start of a stretch of work: the meter's counters and the clock.
struct Start {
    mark: Mark,
    at: Ticks,
}

/// What a request's stretches of work measured, and when the last one ended: the time its audit
/// entry carries.
#[derive(Clone, Copy)]
struct Measured {
    reading: Reading,
    ended: Ticks,
}

impl AddAssign for Measured {
    fn add_assign(&mut self, later: Measured) {
        self.reading += later.reading;
        self.ended = later.ended;
    }
}

/// A refused request, ready to be audited.
struct Refusal<E> {
    operation: Option<usize>,
    kind: EntryKind,
    error: E,
}

impl Gate {
    /// A gate with a full budget.
    pub fn new(setup: GateSetup) -> Gate {
        let config = setup.config;
        let budget = match config.refill_watts {
            Some(rate) => EnergyBudget::with_refill(config.budget_joules, rate, Instant::now()),
            None => EnergyBudget::new(config.budget_joules),
        };
        let operations = config
            .costs
            .iter()
            .map(|(name, base)| OperationState {
                name: name.clone(),
                base: *base,
                scope: security::audit::intern(setup.scope.child(name).as_str()),
                runs: 0,
                mean_measured: 0.0,
            })
            .collect();
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
            account: setup.account,
            audit: setup.audit,
            clock: WallClock::new(),
            last_lookup: None,
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

    /// The context this actor presents when it asks a manager acting in `scope`: its own
    /// principal (granted what it holds when the gate was built) with everything it holds,
    /// narrowed to that manager's scope.
    pub fn identity(&self, scope: &str) -> SecurityContext {
        SecurityContext::new(self.actor, self.own, Scope::new(scope).expect("manager scopes are constants"))
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
        self.watch_budget("top_up", None);
        self.budget.remaining()
    }

    /// A snapshot for status queries.
    pub fn status(&self) -> GateStatus {
        GateStatus {
            actor: self.actor.to_string(),
            total: self.budget.total(),
            used: self.budget.used(),
            remaining: self.budget.remaining(),
            refill: self.budget.refill_rate(),
            source: self.meter.source(),
            counters: self.counters.clone(),
            alerts: self.monitor.recent().cloned().collect(),
            operations: self
                .operations
                .iter()
                .map(|o| (o.name.clone(), o.base, o.runs, Joules::new(o.mean_measured).unwrap_or(Joules::ZERO)))
                .collect(),
        }
    }

    /// What `principal` holds, from the last lookup if no grant has changed since.
    fn held_by(&mut self, principal: &Principal) -> &Lookup {
        let version = self.grants.version();
        if !matches!(&self.last_lookup, Some(last) if last.version == version && last.principal == *principal) {
            self.last_lookup = None;
        }
        let grants = &self.grants;
        self.last_lookup.get_or_insert_with(|| Lookup {
            version,
            principal: principal.clone(),
            name: CompactString::from(principal.as_str()),
            held: grants.of(principal.as_str()),
        })
    }

    fn operation(&self, name: &str) -> Option<usize> {
        self.operations.iter().position(|o| o.name == name)
    }

    /// Steps 1 to 3: authority, validation, energy.
    fn admit<M: Operation>(&mut self, msg: &M) -> Result<Ticket, Refusal<M::Error>> {
        let ctx = msg.context();
        let Some(operation) = self.operation(M::NAME) else {
            tracing::error!(actor = %self.actor, operation = M::NAME, "operation has no configured base cost");
            let reason = format!("{} has no operation {:?} configured", self.actor, M::NAME);
            return Err(Refusal { operation: None, kind: EntryKind::Rejected, error: M::Error::invalid_request(reason) });
        };
        let violation = |error| Refusal { operation: Some(operation), kind: EntryKind::SecurityViolation, error };
        let who = ctx.principal.as_str();
        let lookup = self.held_by(&ctx.principal);
        let (held, name) = (lookup.held, lookup.name.clone());
        match held {
            None => {
                let reason = format!("principal {who:?} holds no grants, so its context is not valid");
                return Err(violation(M::Error::invalid_capabilities(reason)));
            }
            Some(held) if !held.contains_all(ctx.capabilities) => {
                let extra = ctx.capabilities.difference(held);
                let reason = format!("the context presents {extra}, which {who:?} was never granted");
                return Err(violation(M::Error::invalid_capabilities(reason)));
            }
            Some(_) => {}
        }
        if !ctx.scope.covers(&self.scope, M::NAME) {
            let reason = format!("scope {} does not cover {}", ctx.scope, self.operations[operation].scope);
            return Err(violation(M::Error::invalid_scope(reason)));
        }
        let lacking = M::REQUIRES.difference(ctx.capabilities);
        if !lacking.is_empty() {
            let reason = format!("{who:?} lacks {lacking}, required for {}", M::NAME);
            return Err(violation(M::Error::permission_denied(reason)));
        }
        let lacking = M::REQUIRES.difference(self.own);
        if !lacking.is_empty() {
            let reason = format!("actor {} itself lacks {lacking}, required for {}", self.actor, M::NAME);
            return Err(violation(M::Error::permission_denied(reason)));
        }

        let rules = Rules { limits: &self.limits, actor_grants: self.own, actor_scope: &self.scope };
        if let Err(error) = msg.validate(&rules) {
            return Err(Refusal { operation: Some(operation), kind: EntryKind::Rejected, error });
        }

        let now = self.budget.refill_rate().map(|_| Instant::now());
        if let Some(now) = now {
            self.budget.refill(now);
        }
        match self.budget.reserve(self.estimate(operation)) {
            Ok(hold) => Ok(Ticket {
                operation,
                principal: name,
                resource: CompactString::from(msg.resource()),
                hold,
            }),
            Err(short) => Err(Refusal {
                operation: Some(operation),
                kind: EntryKind::Rejected,
                error: M::Error::insufficient_energy(short.needed, short.available),
            }),
        }
    }

    /// Turns a run's reading into joules, counts them, and records them for attribution.
    fn assess(&mut self, reading: &Reading) -> Sample {
        let sample = self.meter.assess(reading);
        self.counters.measured += sample.joules;
        if let Some(account) = &self.account {
            account.record(sample.joules, sample.elapsed);
        }
        sample
    }

    /// Audits a refusal (measured, not charged) and returns its error.
    fn refuse<M: Operation>(&mut self, msg: &M, refusal: Refusal<M::Error>, measured: Measured) -> M::Error {
        let sample = self.assess(&measured.reading);
        self.counters.denied += 1;
        let ctx = msg.context();
        let estimate = refusal.operation.map_or(Joules::ZERO, |i| self.estimate(i));
        let energy = self.energy_record(&sample, Joules::ZERO, estimate);
        self.record(
            measured.ended,
            refusal.kind,
            Outcome::Denied,
            refusal.operation,
            M::NAME,
            CompactString::from(ctx.principal.as_str()),
            CompactString::from(msg.resource()),
            Some(&refusal.error),
            energy,
        );
        refusal.error
    }

    /// Steps 5 and 6 for an admitted request.
    fn settle<M: Operation>(&mut self, ticket: Ticket, measured: Measured, result: &Result<M::Output, M::Error>) {
        let sample = self.assess(&measured.reading);
        let estimate = ticket.hold.amount();
        let state = &mut self.operations[ticket.operation];
        state.runs += 1;
        state.mean_measured += (sample.joules.get() - state.mean_measured) / state.runs as f64;
        let actual = state.base + sample.joules;
        let overdraft = self.budget.settle(ticket.hold, actual);
        if overdraft > Joules::ZERO {
            tracing::warn!(actor = %self.actor, operation = M::NAME, %overdraft, "measured cost exceeded the remaining budget");
        }
        self.counters.charged += actual;
        let outcome = match result {
            Ok(_) => {
                self.counters.allowed += 1;
                Outcome::Allowed
            }
            Err(_) => {
                self.counters.failed += 1;
                Outcome::Failed
            }
        };
        let energy = self.energy_record(&sample, actual, estimate);
        self.record(
            measured.ended,
            EntryKind::EnergyUsage,
            outcome,
            Some(ticket.operation),
            M::NAME,
            ticket.principal,
            ticket.resource,
            result.as_ref().err(),
            energy,
        );
        self.watch_budget(M::NAME, Some(ticket.operation));
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

    fn energy_record(&self, sample: &Sample, charged: Joules, estimate: Joules) -> EnergyRecord {
        EnergyRecord {
            charged_j: charged.get(),
            measured_j: sample.joules.get(),
            estimate_j: estimate.get(),
            remaining_j: self.budget.remaining().get(),
            source: Cow::Borrowed(sample.source.as_str()),
            elapsed_ns: sample.elapsed.as_nanos().min(u64::MAX as u128) as u64,
            ops: sample.ops.map(|o| OpTally { alu: o.alu, mem: o.mem, fp: o.fp, total: o.total }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record<E: GateError>(
        &mut self,
        at: Ticks,
        kind: EntryKind,
        outcome: Outcome,
        operation: Option<usize>,
        name: &'static str,
        principal: CompactString,
        resource: CompactString,
        error: Option<&E>,
        energy: EnergyRecord,
    ) {
        let detail = error.map_or(Detail::NONE, |e| Detail::from_error(e.code(), e.to_string()));
        // The same record as a `tracing` event: refusals of authority at WARN, other refusals and
        // failures at INFO, successes at DEBUG. It is emitted from the parts, so that the entry
        // can be built straight into the sink's argument (borrowing a built entry costs a copy).
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "ergon::audit",
                    $level,
                    actor = self.actor,
                    principal = principal.as_str(),
                    operation = name,
                    resource = resource.as_str(),
                    ?outcome,
                    error = detail.error(),
                    charged_j = energy.charged_j,
                    "{}",
                    detail.reason().unwrap_or("ok")
                )
            };
        }
        match (kind, outcome) {
            (EntryKind::SecurityViolation, _) => event!(tracing::Level::WARN),
            (_, Outcome::Denied | Outcome::Failed) => event!(tracing::Level::INFO),
            _ => event!(tracing::Level::DEBUG),
        }
        self.audit.record(AuditEntry {
            ts: self.clock.stamp(at),
            kind,
            outcome,
            actor: Cow::Borrowed(self.actor),
            principal,
            operation: Cow::Borrowed(name),
            scope: Cow::Borrowed(self.scope_of(operation)),
            resource,
            detail,
            energy: Some(energy),
        });
    }

    /// Raises an alert if the budget crossed a threshold.
    fn watch_budget(&mut self, name: &'static str, operation: Option<usize>) {
        let Some(alert) = self.monitor.observe(&self.budget) else { return };
        let level = match alert.level {
            energy::AlertLevel::Critical => {
                tracing::error!(actor = %self.actor, "{}", alert.message);
                "critical"
            }
            energy::AlertLevel::Warning => {
                tracing::warn!(actor = %self.actor, "{}", alert.message);
                "warning"
            }
            energy::AlertLevel::Info => {
                tracing::info!(actor = %self.actor, "{}", alert.message);
                "info"
            }
        };
        self.audit.record(AuditEntry {
            ts: self.clock.now(),
            kind: EntryKind::EnergyAlert,
            outcome: Outcome::Allowed,
            actor: Cow::Borrowed(self.actor),
            principal: CompactString::const_new("system"),
            operation: Cow::Borrowed(name),
            scope: Cow::Borrowed(self.scope_of(operation)),
            resource: CompactString::from(self.actor),
            detail: Detail::from_alert(level, alert.message),
            energy: Some(EnergyRecord {
                charged_j: 0.0,
                measured_j: 0.0,
                estimate_j: 0.0,
                remaining_j: alert.remaining.get(),
                source: Cow::Borrowed(self.meter.source().as_str()),
                elapsed_ns: 0,
                ops: None,
            }),
        });
    }

    fn begin(&self) -> Start {
        let mark = self.meter.begin();
        Start { mark, at: self.clock.ticks() }
    }

    fn end(&self, start: Start) -> Measured {
        let ended = self.clock.ticks();
        let reading = self.meter.end(start.mark, self.clock.between(start.at, ended));
        Measured { reading, ended }
    }
}

/// Implements `Actor` (with the configured mailbox capacity) and [`GatedActor`] for a manager
/// whose gate is its field `gate`. `gated_actor!(Pool, on_start)` also calls
/// `self.on_start(ctx)` when the actor starts (to start timers or children).
#[macro_export]
macro_rules! gated_actor {
    ($actor:ty $(, $on_start:ident)?) => {
        impl ::actix::Actor for $actor {
            type Context = ::actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                ctx.set_mailbox_capacity(self.gate.mailbox_capacity());
                $(self.$on_start(ctx);)?
            }
        }

        impl $crate::gate::GatedActor for $actor {
            fn gate(&mut self) -> &mut $crate::gate::Gate {
                &mut self.gate
            }
        }
    };
}

/// Passes `msg` through the gate and runs `body` for it if admitted. For synchronous handlers.
///
/// ```ignore
/// impl Handler<ListNodes> for NodeManager {
///     type Result = Result<Vec<Node>, JoinError>;
///     fn handle(&mut self, msg: ListNodes, _: &mut Context<Self>) -> Self::Result {
///         gate::run(self, msg, |actor, _| Ok(actor.nodes.values().cloned().collect()))
///     }
/// }
/// ```
pub fn run<A, M>(actor: &mut A, msg: M, body: impl FnOnce(&mut A, M) -> Result<M::Output, M::Error>) -> Result<M::Output, M::Error>
where
    A: GatedActor,
    M: Operation,
{
    let start = actor.gate().begin();
    match actor.gate().admit(&msg) {
        Err(refusal) => {
            let gate = actor.gate();
            let measured = gate.end(start);
            Err(gate.refuse(&msg, refusal, measured))
        }
        Ok(ticket) => {
            let result = body(actor, msg);
            let gate = actor.gate();
            let measured = gate.end(start);
            gate.settle::<M>(ticket, measured, &result);
            result
        }
    }
}

/// Like [`run`], for a body that returns a future (it awaits replies from other actors).
///
/// Only the stretches in which the future runs on the actor are metered; time spent waiting for
/// replies is not charged. Energy stays reserved until the future completes, so requests admitted
/// meanwhile cannot overdraw the budget.
pub fn run_async<A, M, F>(actor: &mut A, msg: M, body: impl FnOnce(&mut A, M) -> F) -> ResponseActFuture<A, Result<M::Output, M::Error>>
where
    A: GatedActor,
    M: Operation,
    F: ActorFuture<A, Output = Result<M::Output, M::Error>> + Unpin + 'static,
{
    let start = actor.gate().begin();
    match actor.gate().admit(&msg) {
        Err(refusal) => {
            let gate = actor.gate();
            let measured = gate.end(start);
            Box::pin(fut::ready(Err(gate.refuse(&msg, refusal, measured))))
        }
        Ok(ticket) => {
            let inner = body(actor, msg);
            let measured = actor.gate().end(start);
            Box::pin(MeteredFuture::new(inner, measured).map(move |(result, measured), actor: &mut A, _| {
                actor.gate().settle::<M>(ticket, measured, &result);
                result
            }))
        }
    }
}
