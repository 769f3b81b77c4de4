//! Totals over a log: how many requests, how many refused, how many joules, by whom.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{AuditEntry, EntryKind, Outcome};

/// Counts and joules for one actor, principal or operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Requests refused before running.
    pub denied: u64,
    /// Requests that ran and failed.
    pub failed: u64,
    /// Joules charged.
    pub joules: f64,
}

impl Tally {
    fn add(&mut self, entry: &AuditEntry) {
        self.requests += 1;
        self.denied += u64::from(entry.outcome == Outcome::Denied);
        self.failed += u64::from(entry.outcome == Outcome::Failed);
        self.joules += entry.charged();
    }
}

/// Totals over the requests of a log. Alerts and repairs are counted apart, not as requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// All requests.
    pub total: Tally,
    /// Energy alerts raised.
    pub alerts: u64,
    /// Log repairs recorded.
    pub repairs: u64,
    /// By actor.
    pub by_actor: BTreeMap<String, Tally>,
    /// By principal.
    pub by_principal: BTreeMap<String, Tally>,
    /// By operation.
    pub by_operation: BTreeMap<String, Tally>,
    /// Requests by what their joules are, `accounting/source`: `physical/op-count-model`,
    /// `tutorial/time-model`. A log written under one configuration has one.
    pub joules_from: BTreeMap<String, u64>,
    /// What the machine's energy counter measured and whom it is attributed to, when the log
    /// has attribution entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metered: Option<Metered>,
}

/// The energy counter's account of a log: its total and each actor's share, beside what the
/// per-message meter measured for the actor at run time. The shares (with `unattributed` and `energy-meter`) add up to the
/// total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metered {
    /// What the counter's joules are (`rapl`, `time-model`).
    pub source: String,
    /// `physical` if the shares corrected the budgets, `tutorial` if they were only reported.
    pub accounting: String,
    /// Everything it measured.
    pub measured_j: f64,
    /// By actor.
    pub by_actor: BTreeMap<String, Attributed>,
}

/// One actor's metered energy and its share of the counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attributed {
    /// What the per-message meter measured for its runs (the gate charged this plus the
    /// operations' base costs).
    pub metered_j: f64,
    /// Its share of the counter's measurement.
    pub attributed_j: f64,
    /// Under physical accounting, what its charges were corrected by to pay its share (its
    /// refusals' share is measured, never charged); zero under tutorial accounting.
    pub corrected_j: f64,
}

impl Summary {
    /// Adds one entry.
    pub fn add(&mut self, entry: &AuditEntry) {
        match entry.kind {
            EntryKind::EnergyAlert => self.alerts += 1,
            EntryKind::LogRepair => self.repairs += 1,
            EntryKind::EnergyAttribution => {
                if let Some(energy) = &entry.energy {
                    let meter = self.metered.get_or_insert_with(|| Metered {
                        source: energy.source.to_string(),
                        accounting: energy.accounting.to_string(),
                        ..Metered::default()
                    });
                    meter.measured_j += energy.measured_j;
                    let line = meter.by_actor.entry(entry.actor.to_string()).or_default();
                    line.metered_j += energy.estimate_j;
                    line.attributed_j += energy.measured_j;
                    line.corrected_j += energy.charged_j;
                }
            }
            EntryKind::EnergyUsage | EntryKind::SecurityViolation | EntryKind::Rejected => {
                self.total.add(entry);
                self.by_actor.entry(entry.actor.to_string()).or_default().add(entry);
                self.by_principal.entry(entry.principal.to_string()).or_default().add(entry);
                self.by_operation.entry(entry.operation.to_string()).or_default().add(entry);
                if let Some(energy) = &entry.energy {
                    *self.joules_from.entry(format!("{}/{}", energy.accounting, energy.source)).or_default() += 1;
                }
            }
        }
    }
}

impl<'a> FromIterator<&'a AuditEntry> for Summary {
    fn from_iter<I: IntoIterator<Item = &'a AuditEntry>>(iter: I) -> Self {
        let mut summary = Summary::default();
        iter.into_iter().for_each(|e| summary.add(e));
        summary
    }
}
