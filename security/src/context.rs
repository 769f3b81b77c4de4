//! Who is asking, with what authority, in which scope.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{CapSet, Scope};

/// An identity that makes requests: a user, a service or a node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal with this name.
    pub fn new(name: &str) -> Self {
        Principal(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string (cheap to clone into audit entries).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl From<&str> for Principal {
    fn from(name: &str) -> Self {
        Principal::new(name)
    }
}

impl std::borrow::Borrow<str> for Principal {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.0)
    }
}

/// The authority a request carries: it travels with every message to a gated actor.
///
/// Obtain one from a [`GrantTable`](crate::GrantTable); a context may be narrowed
/// ([`attenuate`](Self::attenuate), [`propagate`](Self::propagate)) but never widened, and the gate
/// rejects a context presenting capabilities its principal was not granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    /// Who is asking.
    pub principal: Principal,
    /// The capabilities presented for this request.
    pub capabilities: CapSet,
    /// Where the request may act.
    pub scope: Scope,
}

impl SecurityContext {
    /// A context; the gate checks it against the grant table, so building one grants nothing.
    pub fn new(principal: impl Into<Principal>, capabilities: CapSet, scope: Scope) -> Self {
        SecurityContext { principal: principal.into(), capabilities, scope }
    }

    /// The same context presenting only the capabilities also in `keep`.
    pub fn attenuate(&self, keep: CapSet) -> Self {
        SecurityContext { capabilities: self.capabilities.intersection(keep), ..self.clone() }
    }

    /// The context narrowed to one operation (`node_management` → `node_management.join`).
    pub fn propagate(&self, operation: &str) -> Self {
        SecurityContext { scope: self.scope.child(operation), ..self.clone() }
    }
}
