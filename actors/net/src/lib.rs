//! ergon across processes and hosts.
//!
//! - [`wire`]: frames, the hello that opens every connection, and the encoding of each message.
//! - [`link`]: one lane to one peer, decided without I/O: dialing, back-off, which connection to keep.
//! - [`tcp`]: [`TcpTransport`], the transport between node processes, with mutual TLS.
//! - [`calls`] and [`service`]: the operations remote callers may send, and serving them to
//!   authenticated callers (by certificate or capability token) through the managers' gates.
//! - [`client`]: a typed client of a node's managers.
//! - [`node`]: one node process: its configuration, data directory and actors on the transport.
//!
//! Identities (certificates, TLS configurations) and tokens are `security`'s
//! (`security::identity`, `security::token`); the actors are `actors`', unchanged by which
//! transport carries their messages.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod calls;
pub mod client;
pub mod link;
pub mod node;
pub mod service;
pub mod tcp;
pub mod wire;

pub use actors;
pub use tcp::{Member, NetSettings, Security, TcpConfig, TcpTransport};
