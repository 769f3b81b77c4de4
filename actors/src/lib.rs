//! ergon's actors: the gate every request passes, and the manager actors built on it.
//!
//! - [`gate`]: capability, validation and energy checks, the metered run, the charge and the audit
//!   entry, written once for every actor.
//! - [`node_manager`] and [`communication`]: the tutorial's section 1 managers.
//! - [`leader_election`] and [`state_replicator`]: section 2, gated facades over each node's
//!   [`consensus`] actor, which runs the `ergon-cluster` Raft replica over a [`transport`];
//!   [`local_cluster`] starts N such nodes in one process.
//! - [`Environment`]: what the actors of one process share (configuration, grant table, audit sink,
//!   meter), from which each actor builds its gate.
//! - [`config`]: the TOML configuration and its defaults, the tutorial's numbers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod communication;
pub mod config;
pub mod consensus;
mod environment;
pub mod gate;
pub mod leader_election;
pub mod local_cluster;
mod messages;
pub mod node_manager;
pub mod state_replicator;
pub mod transport;

pub use cluster;
pub use energy;
pub use security;

pub use config::Config;
pub use environment::Environment;
pub use messages::{Status, TopUp};
