//! Metering an actor future stretch by stretch.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix::ActorFuture;
use energy::Reading;

use super::GatedActor;

/// Wraps an actor future and adds the meter's reading of every `poll` to what was measured
/// before it: the work the future does on the actor's thread, not the time it waits.
pub(super) struct Metered<F> {
    inner: F,
    reading: Reading,
}

impl<F> Metered<F> {
    pub(super) fn new(inner: F, reading: Reading) -> Self {
        Metered { inner, reading }
    }
}

impl<A, F> ActorFuture<A> for Metered<F>
where
    A: GatedActor,
    F: ActorFuture<A> + Unpin,
{
    type Output = (F::Output, Reading);

    fn poll(self: Pin<&mut Self>, actor: &mut A, ctx: &mut A::Context, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mark = actor.gate().begin();
        let polled = Pin::new(&mut this.inner).poll(actor, ctx, task);
        this.reading += actor.gate().end(mark);
        polled.map(|output| (output, this.reading))
    }
}
