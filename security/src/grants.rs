//! What each principal is granted, and the credentials that carry it.
//!
//! A grant is a record: a principal, the capabilities it holds, the scope it may act in, and where
//! it came from (the configuration, or a delegation by another principal). Granting hands out a
//! [`Credential`] for the record, and a [`SecurityContext`] can be made only from one: whoever
//! holds the credential may act as the principal, within the grant's scope, and nobody else can.
//! Revoking changes the record itself, so every context made from it loses the authority on its
//! next message.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use crate::{CapSet, Principal, Scope, SecurityContext};

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The application's configuration or set-up code.
    Configured,
    /// A delegation: `by` asked `via` (an actor) to grant, in its operation `operation`
    /// (a join).
    Delegated {
        /// The principal on whose authority it was granted.
        by: Principal,
        /// The actor that granted it.
        via: Principal,
        /// The operation and its subject (`join worker-1`).
        operation: String,
    },
    /// A capability token, verified when a connection opened; the grant lives as long as the
    /// connection (see [`GrantTable::grant_unlisted`]).
    Token {
        /// The token's revocation id (of its last block), hex.
        id: String,
    },
}

/// One grant: see the [module documentation](self).
pub(crate) struct Grant {
    principal: Principal,
    scope: Scope,
    origin: Origin,
    /// What it holds now; revocations clear bits.
    caps: AtomicU32,
    /// Bumped by every change of `caps`.
    version: AtomicU64,
}

impl Grant {
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    /// What it holds and at which version. The version is read first and checked after, so the
    /// pair is consistent even while a revocation runs.
    pub(crate) fn held(&self) -> (CapSet, u64) {
        loop {
            let version = self.version.load(Ordering::Acquire);
            let caps = CapSet::from_bits(self.caps.load(Ordering::Acquire));
            if self.version.load(Ordering::Acquire) == version {
                return (caps, version);
            }
        }
    }

    fn change(&self, caps: CapSet) {
        self.caps.store(caps.bits(), Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The right to act as a principal: handed out by [`GrantTable::grant`], it makes
/// [`SecurityContext`]s within its grant's capabilities and scope. Cloning it gives the same
/// authority away; there is no other way to obtain it.
#[derive(Clone)]
pub struct Credential(Arc<Grant>);

/// A context was asked for outside its grant's scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} is granted scope {granted}, which does not include {asked}")]
pub struct OutsideGrant {
    /// Whose credential.
    pub principal: Principal,
    /// The grant's scope.
    pub granted: Scope,
    /// The scope asked for.
    pub asked: Scope,
}

impl Credential {
    /// Whose authority it carries.
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// What the grant holds now.
    pub fn capabilities(&self) -> CapSet {
        self.0.held().0
    }

    /// Where the grant may act.
    pub fn scope(&self) -> &Scope {
        &self.0.scope
    }

    /// Where the grant came from.
    pub fn origin(&self) -> &Origin {
        &self.0.origin
    }

    /// A context presenting everything the grant holds, in `scope` (which must lie within the
    /// grant's).
    pub fn context(&self, scope: Scope) -> Result<SecurityContext, OutsideGrant> {
        if !self.0.scope.includes(&scope) {
            return Err(OutsideGrant { principal: self.0.principal.clone(), granted: self.0.scope.clone(), asked: scope });
        }
        Ok(SecurityContext::from_grant(self.0.clone(), self.capabilities(), scope))
    }

    /// Whether two credentials are for the same grant.
    pub fn same_grant(&self, other: &Credential) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.same_grant(other)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.0.principal)
            .field("capabilities", &self.capabilities())
            .field("scope", &self.0.scope)
            .field("origin", &self.0.origin)
            .finish()
    }
}

/// The grants of the actors of a process.
///
/// The gate reads a context's own grant on every message (two atomic loads), not this table; the
/// table is consulted when granting, revoking and listing, which are rare.
#[derive(Default)]
pub struct GrantTable {
    grants: RwLock<FxHashMap<Principal, Vec<Arc<Grant>>>>,
    /// Bumped by every grant and revocation.
    version: AtomicU64,
}

impl fmt::Debug for GrantTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantTable").field("version", &self.version()).finish_non_exhaustive()
    }
}

impl GrantTable {
    /// An empty table.
    pub fn new() -> Self {
        GrantTable::default()
    }

    /// Grants `caps` to `principal` in `scope`, and hands out the credential. A principal granted
    /// again in the same scope from the same origin gets the same grant, holding both.
    pub fn grant(&self, principal: Principal, caps: CapSet, scope: Scope, origin: Origin) -> Credential {
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let records = grants.entry(principal.clone()).or_default();
        let grant = match records.iter().find(|g| g.scope == scope && g.origin == origin) {
            Some(grant) => {
                grant.change(grant.held().0.union(caps));
                grant.clone()
            }
            None => {
                let grant =
                    Arc::new(Grant { principal, scope, origin, caps: AtomicU32::new(caps.bits()), version: AtomicU64::new(0) });
                records.push(grant.clone());
                grant
            }
        };
        self.version.fetch_add(1, Ordering::Release);
        Credential(grant)
    }

    /// Grants `caps` to `principal` in `scope` without recording the grant in the table: it lives
    /// as long as its credential (a connection's authority from a token, verified when the
    /// connection opened and gone when it closes), and revoking it means dropping it.
    pub fn grant_unlisted(&self, principal: Principal, caps: CapSet, scope: Scope, origin: Origin) -> Credential {
        self.version.fetch_add(1, Ordering::Release);
        Credential(Arc::new(Grant { principal, scope, origin, caps: AtomicU32::new(caps.bits()), version: AtomicU64::new(0) }))
    }

    /// Revokes everything `credential` grants: every context made from it is refused from its next
    /// message on.
    pub fn revoke(&self, credential: &Credential) {
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        credential.0.change(CapSet::EMPTY);
        if let Some(records) = grants.get_mut(&credential.0.principal) {
            records.retain(|g| !Arc::ptr_eq(g, &credential.0));
            if records.is_empty() {
                grants.remove(&credential.0.principal);
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Removes `caps` from every grant of `principal`.
    pub fn revoke_capabilities(&self, principal: &Principal, caps: CapSet) {
        let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
        for grant in grants.get(principal).into_iter().flatten() {
            grant.change(grant.held().0.difference(caps));
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever any grant changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// What `principal` holds over all its grants, or `None` if it holds none.
    pub fn of(&self, principal: &Principal) -> Option<CapSet> {
        let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
        let records = grants.get(principal)?;
        Some(records.iter().fold(CapSet::EMPTY, |all, g| all.union(g.held().0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capability::*;

    fn scope(s: &str) -> Scope {
        Scope::new(s).unwrap()
    }

    #[test]
    fn grants_accumulate_and_revocations_reach_contexts_made_before() {
        let t = GrantTable::new();
        let alice = Principal::user("alice");
        let first = t.grant(alice.clone(), CapSet::of(&[NodeManagement]), Scope::root(), Origin::Configured);
        let again = t.grant(alice.clone(), CapSet::of(&[BroadcastManagement]), Scope::root(), Origin::Configured);
        assert!(first.same_grant(&again), "one grant per principal, scope and origin");
        assert_eq!(t.of(&alice), Some(CapSet::of(&[NodeManagement, BroadcastManagement])));
        let ctx = first.context(scope("node_management")).unwrap();
        let (held, version) = ctx.held();
        assert_eq!(held, ctx.capabilities());

        t.revoke_capabilities(&alice, CapSet::of(&[NodeManagement]));
        let (held, after) = ctx.held();
        assert_ne!(after, version, "a revocation changes the grant's version");
        assert_eq!(held, CapSet::of(&[BroadcastManagement]), "the context made before sees it");
        assert_eq!(t.of(&Principal::user("nobody")), None);

        t.revoke(&first);
        assert_eq!(ctx.held().0, CapSet::EMPTY);
        assert_eq!(t.of(&alice), None);
    }

    #[test]
    fn a_context_stays_within_its_grants_scope_and_namespaces_do_not_meet() {
        let t = GrantTable::new();
        let node = t.grant(Principal::node("w1"), CapSet::of(&[NodeManagement]), scope("node_management.w1"), Origin::Configured);
        assert!(node.context(scope("node_management.w1.join")).is_ok());
        let err = node.context(scope("node_management")).unwrap_err();
        assert_eq!(err.to_string(), "node:w1 is granted scope node_management.w1, which does not include node_management");
        let ctx = node.context(scope("node_management.w1")).unwrap();
        assert!(ctx.narrow(Scope::root()).is_none(), "a context is never widened");
        assert_ne!(Principal::node("failure-detector/1"), Principal::actor("failure-detector/1"));
        assert_eq!(Principal::actor("failure-detector/1").name(), "failure-detector/1");
    }
}
