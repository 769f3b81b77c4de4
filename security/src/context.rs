//! Who is asking, with what authority, in which scope.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::grants::Grant;
use crate::{CapSet, Scope};

/// The namespace a principal lives in. A name in one can never be taken for a name in another:
/// a node that joins as `failure-detector/1` is `node:failure-detector/1`, not the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// People and programs an application grants authority to (`user:operator`).
    User,
    /// Nodes admitted to the cluster (`node:worker-1`).
    Node,
    /// Actors of ergon itself (`actor:node-manager/1`).
    Actor,
}

impl Namespace {
    fn prefix(self) -> &'static str {
        match self {
            Namespace::User => "user:",
            Namespace::Node => "node:",
            Namespace::Actor => "actor:",
        }
    }
}

/// An identity that makes requests: a user, a node or an actor, written `namespace:name`.
///
/// Naming a principal grants nothing: authority comes only with a
/// [`Credential`](crate::Credential).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal in `namespace`.
    pub fn new(namespace: Namespace, name: &str) -> Self {
        Principal(Arc::from(format!("{}{name}", namespace.prefix())))
    }

    /// A user (`user:<name>`).
    pub fn user(name: &str) -> Self {
        Principal::new(Namespace::User, name)
    }

    /// A node (`node:<name>`).
    pub fn node(name: &str) -> Self {
        Principal::new(Namespace::Node, name)
    }

    /// An actor (`actor:<name>`).
    pub fn actor(name: &str) -> Self {
        Principal::new(Namespace::Actor, name)
    }

    /// The whole name, `namespace:name`, as audit entries carry it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name within its namespace.
    pub fn name(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, name)| name)
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        [Namespace::User, Namespace::Node, Namespace::Actor]
            .into_iter()
            .find(|ns| self.0.starts_with(ns.prefix()))
            .unwrap_or(Namespace::User)
    }

    /// The name as a shared string (cheap to clone into audit entries).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// A principal written without a known namespace, or with an empty name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a principal: write user:<name>, node:<name> or actor:<name>")]
pub struct NotAPrincipal(pub String);

impl std::str::FromStr for Principal {
    type Err = NotAPrincipal;

    /// Parses `namespace:name`.
    fn from_str(s: &str) -> Result<Self, NotAPrincipal> {
        let (prefix, name) = s.split_once(':').ok_or_else(|| NotAPrincipal(s.to_owned()))?;
        let namespace = [Namespace::User, Namespace::Node, Namespace::Actor]
            .into_iter()
            .find(|ns| ns.prefix().strip_suffix(':') == Some(prefix))
            .ok_or_else(|| NotAPrincipal(s.to_owned()))?;
        if name.is_empty() {
            return Err(NotAPrincipal(s.to_owned()));
        }
        Ok(Principal::new(namespace, name))
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
/// It is made only from a [`Credential`](crate::Credential), which the
/// [`GrantTable`](crate::GrantTable) hands out when it grants, and may be narrowed
/// ([`attenuate`](Self::attenuate), [`propagate`](Self::propagate)) but never widened. It has no
/// public constructor and cannot be deserialised, so holding a principal's name is not holding
/// its authority. The gate checks on every message that the grant it came from still holds what
/// it presents, so a revocation applies to contexts made before it.
///
/// ```compile_fail
/// use security::{CapSet, Principal, Scope, SecurityContext};
/// // There is no way to claim a principal without its credential.
/// let forged = SecurityContext::new(Principal::actor("node-manager/1"), CapSet::all(), Scope::root());
/// ```
#[derive(Clone)]
pub struct SecurityContext {
    grant: Arc<Grant>,
    capabilities: CapSet,
    scope: Scope,
    remote: Option<Arc<str>>,
}

impl SecurityContext {
    pub(crate) fn from_grant(grant: Arc<Grant>, capabilities: CapSet, scope: Scope) -> Self {
        SecurityContext { grant, capabilities, scope, remote: None }
    }

    /// The same context, for a request that arrived over the network from `address` (the audit
    /// log records it beside the principal). It adds no authority.
    pub fn from_remote(self, address: &str) -> Self {
        SecurityContext { remote: Some(Arc::from(address)), ..self }
    }

    /// Where the request came from, if it came over the network.
    pub fn remote(&self) -> Option<&Arc<str>> {
        self.remote.as_ref()
    }

    /// Who is asking.
    pub fn principal(&self) -> &Principal {
        self.grant.principal()
    }

    /// The capabilities presented for this request.
    pub fn capabilities(&self) -> CapSet {
        self.capabilities
    }

    /// Where the request may act.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What the grant this context came from holds now, and its version (which changes with every
    /// revocation of it): what the gate checks the presented capabilities against.
    pub fn held(&self) -> (CapSet, u64) {
        self.grant.held()
    }

    /// Whether two contexts came from the same grant.
    pub fn same_grant(&self, other: &SecurityContext) -> bool {
        Arc::ptr_eq(&self.grant, &other.grant)
    }

    /// The same context presenting only the capabilities also in `keep`.
    pub fn attenuate(&self, keep: CapSet) -> Self {
        SecurityContext { capabilities: self.capabilities.intersection(keep), ..self.clone() }
    }

    /// The context narrowed to one operation (`node_management` → `node_management.join`).
    pub fn propagate(&self, operation: &str) -> Self {
        SecurityContext { scope: self.scope.child(operation), ..self.clone() }
    }

    /// The context narrowed to `scope`, if `scope` lies within its own.
    pub fn narrow(&self, scope: Scope) -> Option<Self> {
        self.scope.includes(&scope).then(|| SecurityContext { scope, ..self.clone() })
    }
}

impl PartialEq for SecurityContext {
    fn eq(&self, other: &Self) -> bool {
        self.same_grant(other) && self.capabilities == other.capabilities && self.scope == other.scope
    }
}

impl Eq for SecurityContext {}

impl fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityContext")
            .field("principal", self.principal())
            .field("capabilities", &self.capabilities)
            .field("scope", &self.scope)
            .finish()
    }
}
