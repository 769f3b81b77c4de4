//! Steps 4 and 7: the body runs between two readings of the meter and the clock, and its result
//! is the reply. [`run`] for a body that answers at once, [`run_async`] for one that awaits other
//! actors.

use std::ops::AddAssign;

use actix::fut::{self, ActorFutureExt};
use actix::{ActorFuture, ResponseActFuture};
use energy::{Mark, Reading};

use super::clock::Ticks;
use super::metered::MeteredFuture;
use super::{Gate, GatedActor, Operation};

/// The start of a stretch of work: the meter's counters and the clock.
pub(super) struct Start {
    mark: Mark,
    at: Ticks,
}

/// What a request's stretches of work measured, and when the last one ended: the time its audit
/// entry carries.
#[derive(Clone, Copy)]
pub(super) struct Measured {
    pub(super) reading: Reading,
    pub(super) ended: Ticks,
}

impl AddAssign for Measured {
    fn add_assign(&mut self, later: Measured) {
        self.reading += later.reading;
        self.ended = later.ended;
    }
}

impl Gate {
    pub(super) fn begin(&self) -> Start {
        let mark = self.meter.begin();
        Start { mark, at: self.clock.ticks() }
    }

    pub(super) fn end(&self, start: Start) -> Measured {
        let ended = self.clock.ticks();
        let reading = self.meter.end(start.mark, self.clock.between(start.at, ended));
        Measured { reading, ended }
    }
}

/// Passes `msg` through the gate and runs `body` for it if admitted. For synchronous handlers.
///
/// The handlers that [`gated`](crate::gated) writes call it with the operation's body. A handler
/// of another message can call it too, to pass a declared operation through the gate on a
/// requester's behalf:
///
/// ```
/// use actix::{Context, Handler, Message};
/// use actors::gate::{self, Gate};
/// use actors::security::SecurityContext;
/// use actors::{gate_error, gated};
///
/// #[gate_error]
/// #[derive(Debug, thiserror::Error)]
/// pub enum CounterError {}
///
/// pub struct Add { pub ctx: SecurityContext, pub amount: u64 }
/// pub struct Counter { gate: Gate, total: u64 }
///
/// #[gated(error = CounterError, scope = "counting", budget = 100.0, grants = [ResourceManagement])]
/// impl Counter {
///     #[operation(requires = [ResourceManagement], cost = 1.0, resource = "total")]
///     fn add(&mut self, msg: Add) -> Result<u64, CounterError> {
///         self.total += msg.amount;
///         Ok(self.total)
///     }
/// }
///
/// /// A tick from a timer of the application's: one more, charged to whoever the tick names.
/// #[derive(Message)]
/// #[rtype(result = "Result<u64, CounterError>")]
/// pub struct Tick { pub on_behalf_of: SecurityContext }
///
/// impl Handler<Tick> for Counter {
///     type Result = Result<u64, CounterError>;
///     fn handle(&mut self, tick: Tick, _: &mut Context<Self>) -> Self::Result {
///         let add = Add { ctx: tick.on_behalf_of, amount: 1 };
///         gate::run(self, add, |counter, add| counter.add(add))
///     }
/// }
/// ```
pub fn run<A, M>(
    actor: &mut A,
    msg: M,
    body: impl FnOnce(&mut A, M) -> Result<M::Output, M::Error>,
) -> Result<M::Output, M::Error>
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
            gate.settle::<M>(ticket, measured, result, None)
        }
    }
}

/// Like [`run`], for a body that returns a future (it awaits replies from other actors).
///
/// Only the stretches in which the future runs on the actor are metered; time spent waiting for
/// replies is not charged. If the requester's authority is revoked before the future completes,
/// the result is withheld: the reply is a refusal, audited as a security violation. Energy stays
/// reserved until the future completes, so requests admitted
/// meanwhile cannot overdraw the budget.
pub fn run_async<A, M, F>(
    actor: &mut A,
    msg: M,
    body: impl FnOnce(&mut A, M) -> F,
) -> ResponseActFuture<A, Result<M::Output, M::Error>>
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
            // Kept to check at the end that the authority was not revoked while the body ran.
            let authority = msg.context().clone();
            let inner = body(actor, msg);
            let measured = actor.gate().end(start);
            Box::pin(MeteredFuture::new(inner, measured).map(move |(result, measured), actor: &mut A, _| {
                actor.gate().settle::<M>(ticket, measured, result, Some(&authority))
            }))
        }
    }
}
