//! ergon across processes and hosts.
//!
//! - [`wire`]: frames, the hello that opens every connection, and the encoding of each message.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod wire;
