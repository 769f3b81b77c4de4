//! The cluster's managers, each a gated actor that declares its operations, error and defaults in
//! its own file, and the worker pool they manage.
//!
//! - [`node_manager`] and [`communication`]: membership and pub/sub.
//! - [`leader_election`] and [`state_replicator`]: gated facades over each node's
//!   [`Consensus`](crate::node::consensus::Consensus) actor, which runs Raft.
//! - [`failure_detector`] and [`recovery_manager`]: phi-accrual over heartbeats (deciding in
//!   [`cluster::detector`]) and a recovery strategy per kind of failure.
//! - [`load_distributor`] and [`resource_scaler`]: energy-aware shares of a load, and resizing
//!   each node's [`worker_pool`].

pub mod communication;
pub mod failure_detector;
pub mod leader_election;
pub mod load_distributor;
pub mod node_manager;
pub mod recovery_manager;
pub mod resource_scaler;
pub mod state_replicator;
pub mod worker_pool;
