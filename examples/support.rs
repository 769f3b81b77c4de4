//! What the demos share: their logging, and a listener that counts deliveries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Context, Handler};
use actors::managers::communication::Delivery;

/// Logs warnings and errors to stderr (`RUST_LOG` overrides `default`), without times, in colour
/// on a terminal.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Counts what it receives, so a demo can show deliveries arrived.
pub struct Listener {
    /// Deliveries so far.
    pub received: Arc<AtomicU64>,
}

impl Actor for Listener {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Listener {
    type Result = ();
    fn handle(&mut self, _: Delivery, _: &mut Context<Self>) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}
