//! The operations every gated actor answers, first in its table: [`TopUp`] and [`Status`].

use std::marker::PhantomData;

use actix::Message;
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};

use super::{GateError, GateStatus, Operation};

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
    const INDEX: usize = 0;
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
    const INDEX: usize = 1;
    const REQUIRES: CapSet = CapSet::of(&[Capability::EnergyManagement]);

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        "budget"
    }
}
