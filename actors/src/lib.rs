//! ergon's actors: the gate every request passes, and the manager actors built on it.
//!
//! - [`gate`]: capability, validation and energy checks, the metered run, the charge and the audit
//!   entry, written once for every actor; [`gated`] and [`gate_error`] declare an actor's
//!   operations and errors to it.
//! - [`managers`]: the eight cluster managers and the worker pool, each declaring its operations
//!   and defaults beside its code.
//! - [`node`]: a node's run time: the [`Environment`] its actors share, the consensus actor that
//!   runs Raft, [`node::local_cluster`] (N nodes in one process), stopping and waiting.
//! - [`transport`]: how a node's actors reach other nodes.
//! - [`metrics`]: the Prometheus figures the gate and the managers push, served at `/metrics`.
//! - [`config`]: the TOML configuration, gathered from each manager's declared defaults.
//!
//! Dependencies point one way: `gate` knows nothing above it, the managers build on `gate` and
//! `node`, and only `config` gathers the managers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The declarations' generated code names `::actors`, here as in any other crate.
extern crate self as actors;

pub mod config;
pub mod gate;
pub mod managers;
pub mod metrics;
pub mod node;
pub mod transport;

pub use cluster;
pub use energy;
pub use security;

pub use config::Config;
pub use ergon_macros::{gate_error, gated};
pub use gate::{Status, TopUp};
pub use node::Environment;

/// The README's Rust examples, compiled and run as doctests so that they cannot drift from the
/// code.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
