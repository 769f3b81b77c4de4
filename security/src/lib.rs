//! Authority for ergon: who may do what, and a record of what was done.
//!
//! - [`Capability`] names one authority; [`CapSet`] is a set of them as a bitset, so a check is a
//!   couple of instructions.
//! - A [`SecurityContext`] travels with each request: the [`Principal`], the capabilities it
//!   presents and the [`Scope`] it acts in. Scopes propagate per operation
//!   (`node_management` → `node_management.join`).
//! - The [`GrantTable`] says what each principal holds; a context may present less, never more.
//! - [`audit`] is the tamper-evident log: JSON Lines, SHA-256 hash-chained, batched, rotated,
//!   repaired after a crash, with a reader and a verifier.
//!
//! This crate depends on nothing else of ergon.
//!
//! ```
//! use security::{Capability, CapSet, GrantTable, Scope};
//!
//! let grants = GrantTable::new();
//! grants.grant("alice", CapSet::of(&[Capability::NodeManagement]));
//! let ctx = grants.context("alice", Scope::new("node_management")?)?;
//! assert!(ctx.capabilities.contains(Capability::NodeManagement));
//! assert_eq!(ctx.propagate("join").scope.as_str(), "node_management.join");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
mod capability;
mod context;
mod grants;
mod scope;

pub use capability::{CapSet, Capability, UnknownCapability};
pub use context::{Principal, SecurityContext};
pub use grants::{GrantTable, UnknownPrincipal};
pub use scope::{Scope, ScopeError};
