//! The operations every gated actor answers, first in its table: [`TopUp`] and [`Status`].

use std::marker::PhantomData;

use actix::Message;
use energy::Joules;
use security::{CapSet, SecurityContext};

use super::{Declared, GateError, GateStatus, Operation};

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

/// The `Message` and `Operation` impls of a common operation, from its entry in every table.
macro_rules! common_operation {
    ($message:ident answers $output:ty, as $declared:ident at $index:expr) => {
        impl<E: GateError> Message for $message<E> {
            type Result = Result<$output, E>;
        }

        impl<E: GateError> Operation for $message<E> {
            type Output = $output;
            type Error = E;
            const NAME: &'static str = Declared::$declared.name;
            const INDEX: usize = $index;
            const REQUIRES: CapSet = Declared::$declared.requires;

            fn context(&self) -> &SecurityContext {
                &self.ctx
            }

            fn resource(&self) -> &str {
                "budget"
            }
        }
    };
}

common_operation!(TopUp answers Joules, as TOP_UP at 0);
common_operation!(Status answers GateStatus, as STATUS at 1);
