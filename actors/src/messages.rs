//! Operations every gated actor answers.

use std::marker::PhantomData;

use actix::Message;
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};

use crate::gate::{GateError, GateStatus, Operation};

/// Adds energy to an actor's budget. Requires `EnergyManagement`; answers the remaining energy.
pub struct TopUp<E> {
    /// Who asks.
    pub ctx: SecurityContext,
    /// How much to add.
    pub amount: Joules,
    error: PhantomData<fn() -> E>,
}

impl<E> TopUp<E> {
    /// A top-up of `amount`.
    pub fn new(ctx: SecurityContext, amount: Joules) -> Self {
        TopUp { ctx, amount, error: PhantomData }
    }
}

impl<E: GateError> Message for TopUp<E> {
    type Result = Result<Joules, E>;
}

impl<E: GateError> Operation for TopUp<E> {
    type Output = Joules;
    type Error = E;
    const NAME: &'static str = "top_up";
    const REQUIRES: CapSet = CapSet::of(&[Capability::EnergyManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "budget"
    }
}

/// Reads an actor's budget, counters and alerts. Requires `EnergyManagement`.
pub struct Status<E> {
    /// Who asks.
    pub ctx: SecurityContext,
    error: PhantomData<fn() -> E>,
}

impl<E> Status<E> {
    /// A status query.
    pub fn new(ctx: SecurityContext) -> Self {
        Status { ctx, error: PhantomData }
    }
}

impl<E: GateError> Message for Status<E> {
    type Result = Result<GateStatus, E>;
}

impl<E: GateError> Operation for Status<E> {
    type Output = GateStatus;
    type Error = E;
    const NAME: &'static str = "status";
    const REQUIRES: CapSet = CapSet::of(&[Capability::EnergyManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "budget"
    }
}

/// Implements the handlers of [`TopUp`] and [`Status`] for a gated actor.
#[macro_export]
macro_rules! common_handlers {
    ($actor:ty, $error:ty) => {
        impl ::actix::Handler<$crate::TopUp<$error>> for $actor {
            type Result = Result<$crate::energy::Joules, $error>;
            fn handle(&mut self, msg: $crate::TopUp<$error>, _: &mut Self::Context) -> Self::Result {
                $crate::gate::run(self, msg, |actor, msg| Ok($crate::gate::GatedActor::gate(actor).top_up(msg.amount)))
            }
        }

        impl ::actix::Handler<$crate::Status<$error>> for $actor {
            type Result = Result<$crate::gate::GateStatus, $error>;
            fn handle(&mut self, msg: $crate::Status<$error>, _: &mut Self::Context) -> Self::Result {
                $crate::gate::run(self, msg, |actor, _| Ok($crate::gate::GatedActor::gate(actor).status()))
            }
        }
    };
}
