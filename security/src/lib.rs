//! Authority for ergon: who may do what, and a record of what was done.
//!
//! - [`Capability`] names one authority; [`CapSet`] is a set of them as a bitset, so a check is a
//!   couple of instructions.
//! - A [`SecurityContext`] travels with each request: the [`Principal`], the capabilities it
//!   presents and the [`Scope`] it acts in. Scopes propagate per operation
//!   (`node_management` → `node_management.join`).
//! - The [`GrantTable`] records what each principal is granted, in which scope and by whom, and
//!   hands out a [`Credential`] per grant: the only way to make a context. A context may present
//!   less than its grant, never more, and a revocation reaches every context made from the grant.
//! - [`identity`] proves who is at the other end of a connection: X.509 certificates that name
//!   nodes and users under the cluster's domain, and the TLS configurations that check them.
//! - [`token`]: capability tokens (biscuits) the cluster's key signs and their holders attenuate.
//! - [`audit`] is the tamper-evident log: JSON Lines, SHA-256 hash-chained, batched, rotated,
//!   repaired after a crash, with a reader and a verifier.
//!
//! This crate depends on nothing else of ergon.
//!
//! ```
//! use security::{Capability, CapSet, GrantTable, Origin, Principal, Scope};
//!
//! let grants = GrantTable::new();
//! let alice = grants.grant(Principal::user("alice"), CapSet::of(&[Capability::NodeManagement]), Scope::root(), Origin::Configured);
//! let ctx = alice.context(Scope::new("node_management")?)?;
//! assert!(ctx.capabilities().contains(Capability::NodeManagement));
//! assert_eq!(ctx.propagate("join").scope().as_str(), "node_management.join");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
mod capability;
mod context;
mod grants;
pub mod identity;
mod scope;
pub mod token;

pub use capability::{CapSet, Capability, UnknownCapability};
pub use context::{Namespace, NotAPrincipal, Principal, SecurityContext};
pub use grants::{Credential, GrantTable, Origin, OutsideGrant};
pub use scope::{Scope, ScopeError};
