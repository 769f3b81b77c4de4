//! Stopping a node's actors.

use actix::Message;

/// Stops an actor at once, as a crash would: nothing is flushed that was not already durable.
/// The consensus actor, the failure detector and the worker pool answer it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;
