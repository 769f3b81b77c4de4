//! Steps 4 and 7: the body runs between two readings of the meter and the clock, and its result
//! is the reply. [`run`] for a body that answers at once, [`run_async`] for one that awaits other
//! actors.

use std::ops::AddAssign;

use actix::dev::{MessageResponse, OneshotSender};
use actix::fut::{self, ActorFutureExt};
use actix::{Actor, ActorFuture, AsyncContext, Context, Message, ResponseActFuture};
use futures::future::Either;
use security::audit::Unavailable;
use energy::{Mark, Reading};

use super::clock::Ticks;
use super::metered::MeteredFuture;
use super::{Gate, GateError, GatedActor, Operation};

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
///     type Result = gate::Reply<u64, CounterError>;
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
) -> Reply<M::Output, M::Error>
where
    A: GatedActor,
    M: Operation,
{
    let start = actor.gate().begin();
    let (result, durable) = match actor.gate().admit(&msg) {
        Err(refusal) => {
            let gate = actor.gate();
            let measured = gate.end(start);
            let (error, durable) = gate.refuse(&msg, refusal, measured);
            (Err(error), durable)
        }
        Ok(ticket) => {
            let result = body(actor, msg);
            let gate = actor.gate();
            let measured = gate.end(start);
            gate.settle::<M>(ticket, measured, result, None)
        }
    };
    match durable {
        None => Reply::Now(result),
        Some(durable) => Reply::WhenDurable(result, durable),
    }
}

/// Told when an audit entry is durable ([`Durability::BeforeReply`](security::audit::Durability)).
pub type DurableReply = futures::channel::oneshot::Receiver<Result<(), Unavailable>>;

/// The reply of a synchronous gated handler: now, or, when the audit log answers only once its
/// entries are durable, as soon as the request's entry is (a refusal if it cannot be made so).
/// The first is the common case, and costs nothing over a plain result.
pub enum Reply<T, E> {
    /// Answer at once.
    Now(Result<T, E>),
    /// Answer once the entry is durable.
    WhenDurable(Result<T, E>, DurableReply),
}

impl<T, E> Reply<T, E> {
    /// The result, if it may be answered now.
    pub fn ready(self) -> Option<Result<T, E>> {
        match self {
            Reply::Now(result) => Some(result),
            Reply::WhenDurable(..) => None,
        }
    }
}

impl<A, M, T, E> MessageResponse<A, M> for Reply<T, E>
where
    A: Actor<Context = Context<A>>,
    M: Message<Result = Result<T, E>>,
    T: 'static,
    E: GateError,
{
    fn handle(self, ctx: &mut Context<A>, tx: Option<OneshotSender<M::Result>>) {
        let answer = |result| {
            if let Some(tx) = tx {
                let _ = tx.send(result);
            }
        };
        match self {
            Reply::Now(result) => answer(result),
            Reply::WhenDurable(result, durable) => {
                ctx.spawn(when_durable(result, Some(durable)).map(move |result, _, _| answer(result)));
            }
        }
    }
}

/// `result`, once its audit entry is durable if the log said it would tell.
fn when_durable<A: Actor, T: 'static, E: GateError>(
    result: Result<T, E>,
    durable: Option<DurableReply>,
) -> impl ActorFuture<A, Output = Result<T, E>> {
    match durable {
        None => Either::Left(fut::ready(result)),
        // A success is acknowledged only if its entry is durable; a refusal stays what it was.
        Some(durable) => Either::Right(fut::wrap_future(durable).map(move |told, _, _| match (told, result) {
            (Ok(Ok(())), result) | (_, result @ Err(_)) => result,
            (Ok(Err(why)), Ok(_)) => Err(E::audit_unavailable(format!("its entry is not durable, so the request is not acknowledged: {why}"))),
            (Err(_), Ok(_)) => Err(E::audit_unavailable("the audit writer stopped before the entry was durable".into())),
        })),
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
            let (error, durable) = gate.refuse(&msg, refusal, measured);
            Box::pin(when_durable(Err(error), durable))
        }
        Ok(ticket) => {
            // Kept to check at the end that the authority was not revoked while the body ran.
            let authority = msg.context().clone();
            let inner = body(actor, msg);
            let measured = actor.gate().end(start);
            Box::pin(MeteredFuture::new(inner, measured).then(move |(result, measured), actor: &mut A, _| {
                let (result, durable) = actor.gate().settle::<M>(ticket, measured, result, Some(&authority));
                when_durable(result, durable)
            }))
        }
    }
}
