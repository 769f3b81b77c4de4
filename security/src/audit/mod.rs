//! The tamper-evident audit log.
//!
//! Every decision of the gate, allowed or denied, becomes an [`AuditEntry`]. An [`AuditSink`]
//! takes entries on the hot path; [`AuditLog`] is the durable one:
//!
//! - **Format.** A directory of JSON Lines segments (`segment-000001.jsonl`, …) and a `HEAD`
//!   file. Each line is one entry with its sequence number, the hash of the entry before it
//!   (`prev`) and its own `hash`: SHA-256 over the line without the `hash` field. The chain
//!   continues across segments.
//! - **Evidence.** Editing an entry breaks its hash; deleting or reordering entries breaks the
//!   sequence and the `prev` links; removing the newest entries leaves `HEAD` pointing past the
//!   end. [`verify`] finds the first such problem. A party that can rewrite every later entry
//!   *and* `HEAD` is not detected: the chain has no secret key.
//! - **Writing.** Serialising and hashing happen on a writer thread, off the caller's path, in
//!   batches; [`Durability`] chooses fsync per entry, every N ms, or never. Segments rotate by
//!   size.
//! - **Crashes.** A torn final line is repaired when the log is opened: the bytes are moved to a
//!   side file, the repair is reported, and a `log_repair` entry records it in the chain.
//!
//! ```
//! use security::audit::{verify, AuditConfig, AuditEntry, AuditLog, AuditSink, EntryKind, Outcome};
//!
//! let dir = tempfile::tempdir()?;
//! let (log, _report) = AuditLog::open(AuditConfig::new(dir.path()))?;
//! log.record(AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "node-manager/n1", "alice", "join", "n4"));
//! log.close()?;
//! assert_eq!(verify(dir.path())?.entries, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use compact_str;

mod chain;
mod entry;
mod log;
mod reader;
mod sink;
mod summary;
mod verify;

pub use chain::{AuditKey, KeyError};
pub use entry::{AuditEntry, Detail, EnergyRecord, EntryKind, OpTally, Outcome, StoredEntry, Timestamp};
pub use log::{
    repair, AuditConfig, AuditError, AuditLog, Durability, OnFailure, OpenReport, RepairReport, StopHook, TailRepair,
    EXIT_AUDIT_FAILED,
};
pub use reader::{AuditReader, Filter, ReadError};
pub use sink::{AuditSink, Durable, MemorySink, Unavailable};
pub use summary::{Attributed, Metered, Summary, Tally};
pub use verify::{verify, verify_keyed, verify_with, Problem, Verification, VerifyError, VerifyReport};

/// A `'static` copy of `name`, made once per distinct name and kept for the life of the process.
///
/// For the few, long-lived names that go into every entry (actor names, scopes), so that entries
/// can borrow them instead of sharing a reference count across threads. Never for request data:
/// every distinct string stays in memory.
pub fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Parses one line of a log (without its newline) and checks it against its own hash: for readers
/// that follow a growing file. Chain links are [`verify`]'s business.
pub fn decode_line(line: &[u8]) -> Result<StoredEntry, String> {
    chain::decode(line, chain::Check::Unchecked).map_err(|e| match e {
        chain::LineError::Malformed(why) => format!("not an audit entry: {why}"),
        chain::LineError::HashMismatch { seq } | chain::LineError::Keyed { seq } | chain::LineError::Unkeyed { seq } => {
            format!("entry {seq}: {}", e.describe())
        }
    })
}

/// The file name of segment `index` (1-based).
fn segment_name(index: u32) -> String {
    format!("segment-{index:06}.jsonl")
}

/// The segment index of a file name, if it is a segment.
fn segment_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".jsonl")?;
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The segments of a log directory, in order.
fn list_segments(dir: &std::path::Path) -> std::io::Result<Vec<(u32, std::path::PathBuf)>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if let Some(index) = item.file_name().to_str().and_then(segment_index) {
            segments.push((index, item.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Name of the file beside the segments that records the newest durable entry.
const HEAD_FILE: &str = "HEAD";
