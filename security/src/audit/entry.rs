//! What one audit entry says.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of record an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An operation ran and its energy was charged (the tutorial's `EnergyUsage`).
    EnergyUsage,
    /// A request was refused for its authority: capabilities or scope (the tutorial's
    /// `SecurityViolation`).
    SecurityViolation,
    /// A request was refused before running for another reason: invalid, or over budget.
    Rejected,
    /// A budget crossed an alert threshold.
    EnergyAlert,
    /// The log repaired itself after a crash.
    LogRepair,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran and succeeded.
    Allowed,
    /// Ran and returned an error.
    Failed,
    /// Refused before running.
    Denied,
}

/// Operation counts as the audit log stores them (`energy::OpCounts`; this crate depends on no
/// other part of ergon, so it keeps its own copy of the four fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpTally {
    /// ALU operations.
    pub alu: u64,
    /// Memory operations.
    pub mem: u64,
    /// Floating-point operations.
    pub fp: u64,
    /// All counted operations.
    pub total: u64,
}

/// The energy side of an entry. All figures are joules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// What was debited from the budget (zero for a denied request).
    pub charged_j: f64,
    /// What the meter measured for this request, denied or not.
    pub measured_j: f64,
    /// What the gate estimated before running.
    pub estimate_j: f64,
    /// What remained in the budget afterwards.
    pub remaining_j: f64,
    /// Which meter produced `measured_j` (`rapl`, `op-count-model`, `time-model`, …).
    pub source: Cow<'static, str>,
    /// Running time in nanoseconds.
    pub elapsed_ns: u64,
    /// Operation counts, when the build is instrumented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpTally>,
}

/// One record of the audit log, as the gate produces it.
///
/// Built on the hot path, so its strings are shared (`Arc<str>`) or static where they can be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the decision was made.
    pub ts: DateTime<Utc>,
    /// What kind of record this is.
    pub kind: EntryKind,
    /// How the request ended.
    pub outcome: Outcome,
    /// The actor that decided (`node-manager/n1`).
    pub actor: Arc<str>,
    /// Who asked.
    pub principal: Arc<str>,
    /// The operation (`join`, `broadcast`).
    pub operation: Cow<'static, str>,
    /// The scope the operation ran in (`node_management.join`).
    pub scope: Arc<str>,
    /// What the operation was about (a node id, a channel).
    pub resource: String,
    /// The error variant, when denied or failed (`PermissionDenied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'static, str>>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Alert severity, for energy alerts (`warning`, `critical`, `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Cow<'static, str>>,
    /// Energy measured and charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<EnergyRecord>,
}

impl AuditEntry {
    /// An entry stamped now, with no error, reason or energy yet.
    pub fn new(
        kind: EntryKind,
        outcome: Outcome,
        actor: &str,
        principal: &str,
        operation: &str,
        resource: &str,
    ) -> Self {
        AuditEntry {
            ts: Utc::now(),
            kind,
            outcome,
            actor: Arc::from(actor),
            principal: Arc::from(principal),
            operation: Cow::Owned(operation.to_owned()),
            scope: Arc::from(""),
            resource: resource.to_owned(),
            error: None,
            reason: None,
            alert: None,
            energy: None,
        }
    }

    /// Whether the request was refused before running.
    pub fn is_denied(&self) -> bool {
        self.outcome == Outcome::Denied
    }

    /// Joules debited by this entry.
    pub fn charged(&self) -> f64 {
        self.energy.as_ref().map_or(0.0, |e| e.charged_j)
    }
}

/// An entry as it sits in the log, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Position in the log, from 0, continuous across segments.
    pub seq: u64,
    /// Hash of the previous entry (64 zeros for the first).
    pub prev: String,
    /// The record.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// SHA-256 of this line without its `hash` field.
    pub hash: String,
}
