//! Metering an actor future stretch by stretch.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix::ActorFuture;

use super::running::Measured;
use super::GatedActor;

/// Wraps an actor future and adds the gate's measurement of every `poll` to what was measured
/// before it: the work the future does on the actor's thread, not the time it waits.
pub(super) struct MeteredFuture<F> {
    inner: F,
    measured: Measured,
}

impl<F> MeteredFuture<F> {
    pub(super) fn new(inner: F, measured: Measured) -> Self {
        MeteredFuture { inner, measured }
    }
}

impl<A, F> ActorFuture<A> for MeteredFuture<F>
where
    A: GatedActor,
    F: ActorFuture<A> + Unpin,
{
    type Output = (F::Output, Measured);

    fn poll(self: Pin<&mut Self>, actor: &mut A, ctx: &mut A::Context, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let start = actor.gate().begin();
        let polled = Pin::new(&mut this.inner).poll(actor, ctx, task);
        this.measured += actor.gate().end(start);
        polled.map(|output| (output, this.measured))
    }
}
