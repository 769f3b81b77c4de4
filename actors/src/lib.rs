//! ergon's actors: the gate every request passes, and the manager actors built on it.
//!
//! - [`gate`]: capability, validation and energy checks, the metered run, the charge and the audit
//!   entry, written once for every actor.
//! - [`node_manager`] and [`communication`]: the tutorial's section 1 managers.
//! - [`Environment`]: what the actors of one process share (configuration, grant table, audit sink,
//!   meter), from which each actor builds its gate.
//! - [`config`]: the TOML configuration and its defaults, the tutorial's numbers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod communication;
pub mod config;
mod environment;
pub mod gate;
mod messages;
pub mod node_manager;

pub use energy;
pub use security;

pub use config::Config;
pub use environment::Environment;
pub use messages::{Status, TopUp};
