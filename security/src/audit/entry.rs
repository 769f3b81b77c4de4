//! What one audit entry says.

use std::borrow::Cow;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in nanoseconds since the Unix epoch, written as RFC 3339 with nanoseconds.
///
/// The gate stamps every entry on the hot path, so taking the time is one clock read; turning it
/// into a calendar date happens when the entry is written, on the writer thread.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Now, from the system's real-time clock.
    pub fn now() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }

    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// The same instant as a calendar time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 { i64::MIN } else { i64::MAX }))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_datetime().to_rfc3339_opts(SecondsFormat::Nanos, true))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        let t = DateTime::parse_from_rfc3339(&text).map_err(|e| serde::de::Error::custom(format!("timestamp {text:?}: {e}")))?;
        Ok(Timestamp::from(t.with_timezone(&Utc)))
    }
}

/// What kind of record an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An operation ran and its energy was charged.
    EnergyUsage,
    /// A request was refused for its authority: capabilities or scope.
    SecurityViolation,
    /// A request was refused before running for another reason: invalid, or over budget.
    Rejected,
    /// A budget crossed an alert threshold.
    EnergyAlert,
    /// The log repaired itself after a crash.
    LogRepair,
    /// An actor's share of what the machine's energy counter measured over a period (or the
    /// unattributed rest, or the meter's own polling). `measured_j` is the share, `estimate_j`
    /// what the meter measured for the actor's runs in the period; `charged_j` is zero under
    /// tutorial accounting and, under physical accounting, the correction charged to (or, when
    /// negative, credited to) the actor's budget so that it pays its admitted runs' share.
    EnergyAttribution,
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

fn tutorial() -> Cow<'static, str> {
    Cow::Borrowed("tutorial")
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
    /// What `charged_j` means: `tutorial` (declared constants plus the meter) or `physical`
    /// (measured energy). Entries written before it existed are tutorial.
    #[serde(default = "tutorial")]
    pub accounting: Cow<'static, str>,
    /// Running time in nanoseconds.
    pub elapsed_ns: u64,
    /// Operation counts, when the build is instrumented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpTally>,
}

/// One record of the audit log, as the gate produces it.
///
/// Built on the hot path and dropped on the writer thread, so its strings are static (interned
/// actor names and scopes, see [`intern`](super::intern)) or inline copies: no reference count is
/// shared between the two threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the decision was made.
    pub ts: Timestamp,
    /// What kind of record this is.
    pub kind: EntryKind,
    /// How the request ended.
    pub outcome: Outcome,
    /// The actor that decided (`node-manager/n1`).
    pub actor: Cow<'static, str>,
    /// Who asked.
    pub principal: CompactString,
    /// The operation (`join`, `broadcast`).
    pub operation: Cow<'static, str>,
    /// The scope the operation ran in (`node_management.join`).
    pub scope: Cow<'static, str>,
    /// What the operation was about (a node id, a channel). Inline up to 24 bytes, so that
    /// stamping an entry with an id does not allocate.
    pub resource: CompactString,
    /// The error variant, reason and alert level, where there are any (written as the fields
    /// `error`, `reason` and `alert`).
    #[serde(flatten)]
    pub detail: Detail,
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
            ts: Timestamp::now(),
            kind,
            outcome,
            actor: Cow::Owned(actor.to_owned()),
            principal: CompactString::from(principal),
            operation: Cow::Owned(operation.to_owned()),
            scope: Cow::Borrowed(""),
            resource: CompactString::from(resource),
            detail: Detail::NONE,
            energy: None,
        }
    }

    /// The error variant, when denied or failed (`PermissionDenied`).
    pub fn error(&self) -> Option<&str> {
        self.detail.error()
    }

    /// Why, in words.
    pub fn reason(&self) -> Option<&str> {
        self.detail.reason()
    }

    /// Alert severity, for energy alerts (`warning`, `critical`, `info`).
    pub fn alert(&self) -> Option<&str> {
        self.detail.alert()
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

/// What an entry says beyond its outcome: the error variant, the reason in words, an alert's
/// level, and the network address of a remote caller. Most entries record a success and have none, so it is one pointer: every entry is copied
/// on the gate's hot path, and each byte of it counts there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail(Option<Box<DetailFields>>);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DetailFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
}

impl Detail {
    /// Nothing to add.
    pub const NONE: Detail = Detail(None);

    /// An error variant and why.
    pub fn from_error(code: impl Into<Cow<'static, str>>, reason: String) -> Self {
        Detail::of(DetailFields { error: Some(code.into()), reason: Some(reason), ..DetailFields::default() })
    }

    /// A reason alone.
    pub fn from_reason(reason: String) -> Self {
        Detail::of(DetailFields { reason: Some(reason), ..DetailFields::default() })
    }

    /// An alert's level and message.
    pub fn from_alert(level: impl Into<Cow<'static, str>>, message: String) -> Self {
        Detail::of(DetailFields { alert: Some(level.into()), reason: Some(message), ..DetailFields::default() })
    }

    /// The error variant (`PermissionDenied`).
    pub fn error(&self) -> Option<&str> {
        self.0.as_ref()?.error.as_deref()
    }

    /// Why, in words.
    pub fn reason(&self) -> Option<&str> {
        self.0.as_ref()?.reason.as_deref()
    }

    /// An alert's severity (`warning`, `critical`, `info`).
    pub fn alert(&self) -> Option<&str> {
        self.0.as_ref()?.alert.as_deref()
    }

    /// The same, for a request that came over the network from `remote` (written as the field
    /// `remote`).
    pub fn with_remote(self, remote: Option<&str>) -> Self {
        match remote {
            None => self,
            Some(remote) => {
                let fields = self.0.map_or_else(DetailFields::default, |f| *f);
                Detail::of(DetailFields { remote: Some(remote.to_owned()), ..fields })
            }
        }
    }

    /// The network address the request came from, for a remote caller's.
    pub fn remote(&self) -> Option<&str> {
        self.0.as_ref()?.remote.as_deref()
    }

    fn of(fields: DetailFields) -> Self {
        let empty = fields.error.is_none() && fields.reason.is_none() && fields.alert.is_none() && fields.remote.is_none();
        Detail((!empty).then(|| Box::new(fields)))
    }
}

impl Serialize for Detail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(fields) => fields.serialize(s),
            None => DetailFields::default().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DetailFields::deserialize(d).map(Detail::of)
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
    /// SHA-256 of this line without its `hash` field (or, in a keyed log, HMAC-SHA256 under the
    /// key, written as `mac`).
    #[serde(alias = "mac")]
    pub hash: String,
}
