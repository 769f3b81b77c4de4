//! Steps 1 to 3: authority, validation, energy. Authority is the context's own grant, read
//! with two atomic loads: what it holds now, and at which version (kept in the ticket, so that a
//! revocation while an asynchronous operation runs is seen when it settles). Admission either holds the estimate as a
//! reservation (a [`Ticket`]) or says why not (a [`Refusal`]).

use energy::{Joules, Reservation};
use security::audit::compact_str::CompactString;
use security::audit::EntryKind;

use super::{Declared, Gate, GateError, Operation, Rules};

/// An admitted request: who asked, about what, and the energy held for it.
pub(super) struct Ticket {
    pub(super) operation: usize,
    /// The version of the requester's grant when it was admitted.
    pub(super) grant_version: u64,
    pub(super) principal: CompactString,
    /// Where a remote request came from.
    pub(super) remote: Option<std::sync::Arc<str>>,
    pub(super) resource: CompactString,
    pub(super) hold: Reservation,
}

/// A refused request, ready to be audited.
pub(super) struct Refusal<E> {
    /// The operation, unless the actor has none of that name.
    pub(super) operation: Option<usize>,
    pub(super) kind: EntryKind,
    pub(super) error: E,
}

impl Gate {
    /// Where `M` stands in this actor's table: `M::INDEX`, if that is `M`'s entry (a message of
    /// another actor, sent through this gate by hand, is not).
    fn operation_of<M: Operation>(&self) -> Option<usize> {
        let declared = self.operations.get(M::INDEX)?.name;
        // The same literal is usually the same pointer; comparing bytes is the fallback.
        (std::ptr::eq(declared, M::NAME) || declared == M::NAME).then_some(M::INDEX)
    }

    /// Steps 1 to 3: authority, validation, energy.
    pub(super) fn admit<M: Operation>(&mut self, msg: &M) -> Result<Ticket, Refusal<M::Error>> {
        let ctx = msg.context();
        if let Err(why) = self.audit.available() {
            // Nothing is done that cannot be audited. (This refusal is offered to the log too,
            // and is in the tracing output whether or not the log takes it.)
            let error = M::Error::audit_unavailable(why.to_string());
            return Err(Refusal { operation: self.operation_of::<M>(), kind: EntryKind::Rejected, error });
        }
        let Some(operation) = self.operation_of::<M>() else {
            let reason = format!("{} has no operation {:?}", self.actor, M::NAME);
            return Err(Refusal { operation: None, kind: EntryKind::Rejected, error: M::Error::invalid_request(reason) });
        };
        let violation = |error| Refusal { operation: Some(operation), kind: EntryKind::SecurityViolation, error };
        let who = ctx.principal().as_str();
        let (held, grant_version) = ctx.held();
        if !held.contains_all(ctx.capabilities()) {
            let revoked = ctx.capabilities().difference(held);
            let reason = format!("the context presents {revoked}, which the grant of {who:?} no longer holds (revoked)");
            return Err(violation(M::Error::invalid_capabilities(reason)));
        }
        if !ctx.scope().covers(&self.scope, M::NAME) {
            let reason = format!("scope {} does not cover {}", ctx.scope(), self.operations[operation].scope);
            return Err(violation(M::Error::invalid_scope(reason)));
        }
        let lacking = M::REQUIRES.difference(ctx.capabilities());
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

        if self.budget.refill_rate().is_some() {
            let now = self.clock.instant();
            self.budget.refill(now);
        }
        self.apply_correction();
        let estimate = if operation < Declared::COMMON { Joules::ZERO } else { self.estimate(operation) };
        match self.budget.reserve(estimate) {
            Ok(hold) => Ok(Ticket {
                operation,
                grant_version,
                principal: CompactString::from(who),
                remote: ctx.remote().cloned(),
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
}
