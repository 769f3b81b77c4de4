//! What each principal is granted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use rustc_hash::FxHashMap;

use crate::{CapSet, Principal, Scope, SecurityContext};

/// The capabilities granted to each principal, shared by the actors of a process.
///
/// Reads take a shared lock and are short; grants and revocations are rare. The gate looks a
/// principal up on every message, so the map uses a fast non-cryptographic hash: principals are
/// names the application registers, not keys an attacker can choose in bulk.
#[derive(Debug, Default)]
pub struct GrantTable {
    grants: RwLock<FxHashMap<Principal, CapSet>>,
    /// Bumped by every grant and revocation, so that readers may cache a lookup until it changes.
    version: AtomicU64,
}

/// A principal with no entry in the grant table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {0:?} holds no grants")]
pub struct UnknownPrincipal(pub String);

impl GrantTable {
    /// An empty table.
    pub fn new() -> Self {
        GrantTable::default()
    }

    /// Adds `caps` to what `principal` holds.
    pub fn grant(&self, principal: impl Into<Principal>, caps: CapSet) {
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let entry = grants.entry(principal.into()).or_default();
        *entry = entry.union(caps);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Removes `caps` from what `principal` holds (the principal stays known).
    pub fn revoke(&self, principal: &str, caps: CapSet) {
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = grants.get_mut(principal) {
            *entry = entry.difference(caps);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever any grant changes: a lookup made at one version stays
    /// valid while the version is the same.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// What `principal` holds, or `None` if it was never granted anything.
    pub fn of(&self, principal: &str) -> Option<CapSet> {
        self.grants.read().unwrap_or_else(|e| e.into_inner()).get(principal).copied()
    }

    /// A context presenting everything `principal` holds, in `scope`.
    pub fn context(&self, principal: &str, scope: Scope) -> Result<SecurityContext, UnknownPrincipal> {
        let caps = self.of(principal).ok_or_else(|| UnknownPrincipal(principal.to_owned()))?;
        Ok(SecurityContext::new(principal, caps, scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capability::*;

    #[test]
    fn grants_accumulate_and_revocations_remove() {
        let t = GrantTable::new();
        t.grant("n1", CapSet::of(&[NodeManagement]));
        t.grant("n1", CapSet::of(&[BroadcastManagement]));
        assert_eq!(t.of("n1"), Some(CapSet::of(&[NodeManagement, BroadcastManagement])));
        let before = t.version();
        t.revoke("n1", CapSet::of(&[NodeManagement]));
        assert_ne!(t.version(), before, "a revocation invalidates cached lookups");
        assert_eq!(t.of("n1"), Some(CapSet::of(&[BroadcastManagement])));
        assert_eq!(t.of("nobody"), None);
        let err = t.context("nobody", Scope::root()).unwrap_err();
        assert_eq!(err.to_string(), "principal \"nobody\" holds no grants");
    }
}
