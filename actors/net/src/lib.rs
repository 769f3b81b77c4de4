//! ergon across processes and hosts.
//!
//! - [`wire`]: frames, the hello that opens every connection, and the encoding of each message.
//! - [`link`]: one lane to one peer, decided without I/O: dialing, back-off, which connection to keep.
//! - [`tcp`]: [`TcpTransport`], the transport between node processes, with mutual TLS.
//! - [`node`]: one node process: its configuration, data directory and actors on the transport.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod link;
pub mod wire;
pub mod node;
pub mod tcp;

pub use tcp::{Member, NetSettings, Security, TcpConfig, TcpTransport};
