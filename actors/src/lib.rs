//! ergon's actors: the gate every request passes, and the manager actors built on it.
//!
//! - [`gate`]: capability, validation and energy checks, the metered run, the charge and the audit
//!   entry, written once for every actor.
//! - [`node_manager`] and [`communication`]: the tutorial's section 1 managers.
//! - [`leader_election`] and [`state_replicator`]: section 2, gated facades over each node's
//!   [`consensus`] actor, which runs the `ergon-cluster` Raft replica over a [`transport`];
//!   [`local_cluster`] starts N such nodes in one process.
//! - [`failure_detector`] and [`recovery_manager`]: section 3, phi-accrual over heartbeats and a
//!   recovery strategy per kind of failure.
//! - [`load_distributor`] and [`resource_scaler`]: section 4, energy-aware shares of a load and
//!   resizing each node's [`worker_pool`].
//! - [`Environment`]: what the actors of one process share (configuration, grant table, audit sink,
//!   meter), from which each actor builds its gate.
//! - [`config`]: the TOML configuration and its defaults, the tutorial's numbers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attribution;
pub mod communication;
pub mod config;
pub mod consensus;
mod environment;
pub mod failure_detector;
pub mod gate;
pub mod leader_election;
pub mod load_distributor;
pub mod local_cluster;
mod messages;
pub mod node_manager;
pub mod recovery_manager;
pub mod resource_scaler;
pub mod state_replicator;
pub mod transport;
pub mod wait;
pub mod worker_pool;

pub use cluster;
pub use energy;
pub use security;

pub use config::Config;
pub use environment::Environment;
pub use messages::{Status, TopUp};
