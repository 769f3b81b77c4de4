//! Steps 1 to 3: authority, validation, energy. Admission either holds the estimate as a
//! reservation (a [`Ticket`]) or says why not (a [`Refusal`]).

use energy::Reservation;
use security::audit::compact_str::CompactString;
use security::audit::EntryKind;
use security::{CapSet, Principal};

use super::{Gate, GateError, Operation, Rules};

/// The last grant lookup. Most messages to an actor come from the principal before, usually in
/// clones of one context (so comparing principals compares pointers), and any grant or revocation
/// changes the table's version.
pub(super) struct Lookup {
    version: u64,
    principal: Principal,
    /// The principal's name as audit entries carry it.
    name: CompactString,
    held: Option<CapSet>,
}

/// An admitted request: who asked, about what, and the energy held for it.
pub(super) struct Ticket {
    pub(super) operation: usize,
    pub(super) principal: CompactString,
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
        let Some(operation) = self.operation_of::<M>() else {
            let reason = format!("{} has no operation {:?}", self.actor, M::NAME);
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

        if self.budget.refill_rate().is_some() {
            let now = self.clock.instant();
            self.budget.refill(now);
        }
        match self.budget.reserve(self.estimate(operation)) {
            Ok(hold) => Ok(Ticket { operation, principal: name, resource: CompactString::from(msg.resource()), hold }),
            Err(short) => Err(Refusal {
                operation: Some(operation),
                kind: EntryKind::Rejected,
                error: M::Error::insufficient_energy(short.needed, short.available),
            }),
        }
    }
}
