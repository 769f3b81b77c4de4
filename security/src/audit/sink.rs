//! Where the gate sends its entries.

use std::sync::Mutex;

use super::AuditEntry;

/// Takes audit entries on the hot path of every gated message.
///
/// Implementations must be cheap: hand the entry off and return. [`AuditLog`](super::AuditLog)
/// queues it for its writer thread; [`MemorySink`] keeps it in memory.
pub trait AuditSink: Send + Sync {
    /// Takes one entry.
    fn record(&self, entry: AuditEntry);

    /// Whether the sink can take entries now. The gate asks before every request and refuses
    /// the request when the sink cannot, so that nothing is done unaudited: the log fails closed.
    /// Called on every message, so it must be as cheap as an atomic load.
    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    /// Whether requests are answered only once their entries are durable
    /// ([`Durability::BeforeReply`](super::Durability::BeforeReply)); then the gate records
    /// with [`record_durable`](Self::record_durable) and holds each reply until it is told.
    fn replies_after_durable(&self) -> bool {
        false
    }

    /// Takes one entry, and calls `done` once it is durable (or cannot be made so). A sink that
    /// keeps entries in memory is as durable as it gets when it has taken it.
    fn record_durable(&self, entry: AuditEntry, done: Durable) {
        self.record(entry);
        done(Ok(()));
    }
}

/// Told when an entry is durable, or why it cannot be made so: called once, on the writer's thread.
pub type Durable = Box<dyn FnOnce(Result<(), Unavailable>) + Send>;

/// Why an audit sink cannot take entries now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Keeps entries in memory: for tests, and for applications that ship them elsewhere.
#[derive(Debug, Default)]
pub struct MemorySink {
    entries: Mutex<Vec<AuditEntry>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// An empty sink with room for `capacity` entries before it allocates again.
    pub fn with_capacity(capacity: usize) -> Self {
        MemorySink { entries: Mutex::new(Vec::with_capacity(capacity)) }
    }

    /// Removes every entry, keeping the memory for the next ones.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A copy of every entry so far, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Removes and returns every entry so far.
    pub fn take(&self) -> Vec<AuditEntry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl AuditSink for MemorySink {
    fn record(&self, entry: AuditEntry) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }
}
