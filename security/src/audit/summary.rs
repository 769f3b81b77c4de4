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
}

impl Summary {
    /// Adds one entry.
    pub fn add(&mut self, entry: &AuditEntry) {
        match entry.kind {
            EntryKind::EnergyAlert => self.alerts += 1,
            EntryKind::LogRepair => self.repairs += 1,
            EntryKind::EnergyUsage | EntryKind::SecurityViolation | EntryKind::Rejected => {
                self.total.add(entry);
                self.by_actor.entry(entry.actor.to_string()).or_default().add(entry);
                self.by_principal.entry(entry.principal.to_string()).or_default().add(entry);
                self.by_operation.entry(entry.operation.to_string()).or_default().add(entry);
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
