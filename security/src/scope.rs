//! Scopes: where a context may act, as dotted paths.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A dotted path of lowercase segments (`node_management`, `node_management.join`), or `*` for
/// every scope.
///
/// A scope covers itself and everything below it: `node_management` covers
/// `node_management.join`, not `communication_management.broadcast`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(Arc<str>);

/// A string that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope {0:?}: a scope is `*` or dot-separated segments of a-z, 0-9, `_` and `-`, \
     such as `node_management.join`"
)]
pub struct ScopeError(pub String);

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Scope {
    /// The scope that covers every other.
    pub fn root() -> Scope {
        Scope(Arc::from("*"))
    }

    /// A scope, or an error naming why `path` is not one.
    pub fn new(path: &str) -> Result<Scope, ScopeError> {
        if path == "*" || (path.len() <= 256 && path.split('.').all(valid_segment)) {
            Ok(Scope(Arc::from(path)))
        } else {
            Err(ScopeError(path.to_owned()))
        }
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scope narrowed to one operation: `node_management` → `node_management.join`.
    pub fn child(&self, operation: &str) -> Scope {
        if self.is_root() {
            return Scope(Arc::from(operation));
        }
        Scope(Arc::from(format!("{}.{}", self.0, operation)))
    }

    /// Whether this is `*`.
    pub fn is_root(&self) -> bool {
        &*self.0 == "*"
    }

    /// Whether `other` is this scope or lies below it (`node_management` includes
    /// `node_management.n4`, not `node`).
    pub fn includes(&self, other: &Scope) -> bool {
        self.is_root()
            || other.0 == self.0
            || (other.0.len() > self.0.len() && other.0.starts_with(&*self.0) && other.0.as_bytes()[self.0.len()] == b'.')
    }

    /// Whether a context in this scope may run `operation` on an actor in `actor_scope`, that is,
    /// whether this scope is `actor_scope.operation` or one of its ancestors.
    ///
    /// Runs on every gated message, so it compares in place instead of building the child path.
    pub fn covers(&self, actor_scope: &Scope, operation: &str) -> bool {
        if self.is_root() {
            return true;
        }
        let target = actor_scope.0.bytes().chain(Some(b'.')).chain(operation.bytes());
        let target_len = actor_scope.0.len() + 1 + operation.len();
        let mine = self.0.as_bytes();
        if mine.len() > target_len {
            return false;
        }
        let mut target = target;
        if !mine.iter().all(|b| target.next() == Some(*b)) {
            return false;
        }
        // Equal, or a whole-segment prefix (`node` must not cover `node_management.join`).
        matches!(target.next(), None | Some(b'.'))
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Scope::new(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.0.to_string()
    }
}

impl From<&Scope> for Arc<str> {
    fn from(s: &Scope) -> Arc<str> {
        s.0.clone()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> Scope {
        Scope::new(p).unwrap()
    }

    #[test]
    fn propagation_appends_the_operation() {
        assert_eq!(s("node_management").child("join").as_str(), "node_management.join");
        assert_eq!(Scope::root().child("join").as_str(), "join");
    }

    #[test]
    fn a_scope_covers_itself_and_what_is_below_it() {
        let actor = s("node_management");
        assert!(s("node_management").covers(&actor, "join"));
        assert!(s("node_management.join").covers(&actor, "join"));
        assert!(Scope::root().covers(&actor, "join"));
        assert!(!s("node_management.join").covers(&actor, "leave"));
        assert!(!s("node_management.join.extra").covers(&actor, "join"));
        assert!(!s("communication_management").covers(&actor, "join"));
        assert!(!s("node").covers(&actor, "join"), "prefixes must end at a segment boundary");
    }

    #[test]
    fn inclusion_follows_segments() {
        assert!(s("node_management").includes(&s("node_management.n4")));
        assert!(s("node_management").includes(&s("node_management")));
        assert!(!s("node_management").includes(&s("node_management_x")));
        assert!(!s("node_management.n4").includes(&s("node_management")));
        assert!(Scope::root().includes(&s("anything")));
    }

    #[test]
    fn malformed_scopes_are_rejected_with_the_rule() {
        for bad in ["", "Node", "a..b", "a.", ".a", "a b", "a/b"] {
            let err = Scope::new(bad).unwrap_err();
            assert!(err.to_string().contains("dot-separated"), "{bad}: {err}");
        }
    }
}
