//! A node's run time: what its actors share, the consensus actor, one node's actors started
//! together, N nodes in one process, and stopping and waiting.

pub mod assembly;
pub mod attribution;
pub mod consensus;
mod environment;
pub mod gate_cost;
pub mod local_cluster;
mod stop;
pub mod wait;

pub use environment::Environment;
pub use stop::Stop;
