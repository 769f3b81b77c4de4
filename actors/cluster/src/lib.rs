//! ergon's cluster core: the parts of the cluster managers that decide, without the parts that do.
//!
//! - [`Replica`]: one node's copy of the replicated [`State`], on tikv's raft-rs. It is driven
//!   by its caller (tick, step, propose, advance) and never reads a clock or opens a socket.
//! - [`faults`]: the network fault model (loss, latency, partitions) the simulation and the
//!   in-process transport share.
//! - [`phi`]: phi-accrual failure detection over heartbeats, with Akka's defaults, and
//!   [`detector`]: the failure detector's decisions over it (when a peer is failed, when it is
//!   back, when to check, when to back off).
//! - [`placement`]: energy-aware load shares (capacity x remaining joules).
//! - [`membership`]: who is in the cluster and the rules for changing it (learners promoted
//!   once caught up, joint consensus when two voters change, refusals that name their reason).
//! - [`linearizable`]: histories of client operations on the keyed store and the check, key by
//!   key, that some sequential order explains them (todc-utils' Wing-Gong-Lowe checker).
//! - [`LogStore`]: the Raft log, hard state and snapshots, durable in a node's data directory.
//! - [`sim`]: N replicas on a simulated network with simulated time, dropping, delaying and
//!   partitioning messages and crashing and restarting nodes, all from one seed, with a checker
//!   that no acknowledged update is lost and every replica converges.
//!
//! What it is not: an actor system or a transport. The gated manager actors in `ergon-actors`
//! drive these pieces; a network transport delivers the [`raft`] messages they produce.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod detector;
pub mod faults;
pub mod kv;
pub mod linearizable;
pub mod membership;
mod logging;
pub mod phi;
pub mod placement;
pub mod replica;
pub mod sim;
pub mod state;
pub mod store;

pub use raft::prelude::Message as RaftMessage;
pub use raft::prelude::Entry as RaftEntry;
pub use replica::{Ack, Applied, Output, Replica, ReplicaConfig, ReplicaError, Timing};
pub use state::{DecodeError, State, Update, UpdateId};
pub use kv::{Command, Expected, Map, Outcome, Versioned};
pub use membership::{Change, Member, Membership, MembershipError};
pub use store::{LogStore, StoreError};

/// A node's id within its cluster. Raft reserves 0.
pub type NodeId = u64;
