//! A node's run time: what its actors share, the consensus actor, N nodes in one process, and
//! stopping and waiting.

pub mod attribution;
pub mod consensus;
mod environment;
pub mod local_cluster;
mod stop;
pub mod wait;

pub use environment::Environment;
pub use stop::Stop;
