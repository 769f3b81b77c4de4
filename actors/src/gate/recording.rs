//! Steps 5 and 6: the charge of an admitted request and the audit entry of every request, with
//! the same record as a `tracing` event; budget alerts.

use std::borrow::Cow;

use energy::{Accounting, Joules, Reading, Sample};
use security::audit::compact_str::CompactString;
use security::audit::{AuditEntry, Detail, EnergyRecord, EntryKind, OpTally, Outcome};
use security::SecurityContext;

use super::admission::{Refusal, Ticket};
use super::refusals::{Left, Verdict};
use super::running::DurableReply;
use super::clock::Ticks;
use super::running::Measured;
use super::{Gate, GateError, Operation};

impl Gate {
    /// Turns a run's reading into joules and counts them.
    fn assess(&mut self, reading: &Reading) -> Sample {
        let sample = self.meter.assess(reading);
        self.counters.measured += sample.joules;
        sample
    }

    /// Records a run for attribution, with what was charged for it (`None`: refused).
    fn account_for(&self, sample: &Sample, charged: Option<Joules>) {
        if let Some(account) = &self.account {
            // Under physical accounting the gate's own fixed cost is part of the run's weight.
            let weight = match self.accounting {
                Accounting::Tutorial => sample.joules,
                Accounting::Physical => sample.joules + self.gate_cost,
            };
            account.record(weight, sample.elapsed, charged);
        }
    }

    /// Applies what the attribution sampler corrected this actor's charges by since the last
    /// request (physical accounting; zero otherwise). Its audit entry is the sampler's.
    pub(super) fn apply_correction(&mut self) {
        let Some(account) = &self.account else { return };
        let delta = account.take_correction();
        if delta == 0.0 {
            return;
        }
        let overdraft = self.budget.correct(delta);
        if let Some(metrics) = &self.metrics {
            metrics.corrected(delta);
        }
        let amount = Joules::new(delta.abs()).unwrap_or(Joules::ZERO);
        if delta > 0.0 {
            self.counters.corrected_up += amount;
        } else {
            self.counters.corrected_down += amount;
        }
        if overdraft > Joules::ZERO {
            tracing::info!(actor = %self.actor, %overdraft, "the measured share exceeded the remaining budget");
        }
        self.watch_budget("attribution", None);
    }

    /// Audits a refusal (measured, not charged) and returns its error. Its resource is unchecked
    /// (it may be why the request was refused), so it is cut to a bounded length; past the
    /// principal's limit of refusals a second, it is counted and not written.
    pub(super) fn refuse<M: Operation>(
        &mut self,
        msg: &M,
        refusal: Refusal<M::Error>,
        measured: Measured,
    ) -> (M::Error, Option<DurableReply>) {
        let sample = self.assess(&measured.reading);
        self.account_for(&sample, None);
        self.counters.denied += 1;
        if let (Some(metrics), Some(i)) = (&self.metrics, refusal.operation) {
            let op = metrics.operation(i);
            op.denied.inc();
            op.metered.inc_by(sample.joules.get());
            metrics.budget(&self.budget);
        }
        let principal = msg.context().principal().as_str();
        let left_out = match self.refusals.note(principal, measured.ended, sample.joules.get(), &self.clock) {
            Verdict::LeaveOut => {
                self.counters.left_out += 1;
                return (refusal.error, None);
            }
            Verdict::Write { left_out } => left_out,
        };
        let principal = CompactString::from(principal);
        if left_out.count > 0 {
            self.record_left_out(principal.clone(), left_out);
        }
        let estimate = refusal.operation.map_or(Joules::ZERO, |i| self.estimate(i));
        let energy = self.energy_record(&sample, Joules::ZERO, estimate);
        let durable = self.record(
            measured.ended,
            refusal.kind,
            Outcome::Denied,
            refusal.operation,
            M::NAME,
            principal,
            msg.context().remote().map(|r| &**r),
            capped(msg.resource(), self.limits.max_id_bytes),
            Some(&refusal.error),
            energy,
        );
        (refusal.error, durable)
    }

    /// Says that refusals of `principal` were left out of the log, with the energy measured for
    /// them, so that the log's energy stays whole.
    pub(super) fn record_left_out(&mut self, principal: CompactString, left: Left) {
        let count = left.count;
        let reason = format!("{count} more refusals of {principal} in one second were counted, not written");
        tracing::warn!(actor = %self.actor, %principal, count, "{reason}");
        self.audit.record(AuditEntry {
            ts: self.clock.now(),
            kind: EntryKind::Rejected,
            outcome: Outcome::Denied,
            actor: Cow::Borrowed(self.actor),
            principal: principal.clone(),
            operation: Cow::Borrowed("refusals_left_out"),
            scope: Cow::Borrowed(self.scope_of(None)),
            resource: principal,
            detail: Detail::from_error("RefusalsLeftOut", reason),
            energy: Some(EnergyRecord {
                charged_j: 0.0,
                measured_j: left.measured_j,
                estimate_j: 0.0,
                remaining_j: self.budget.remaining().get(),
                source: Cow::Borrowed(self.meter.source().as_str()),
                accounting: Cow::Borrowed(self.accounting.as_str()),
                elapsed_ns: 0,
                ops: None,
            }),
        });
    }

    /// Steps 5 and 6 for an admitted request, and its reply. With `authority`, the context it was
    /// admitted with, a run during which that authority was revoked is refused after all (it ran,
    /// so it is charged) and audited as a security violation.
    pub(super) fn settle<M: Operation>(
        &mut self,
        ticket: Ticket,
        measured: Measured,
        result: Result<M::Output, M::Error>,
        authority: Option<&SecurityContext>,
    ) -> (Result<M::Output, M::Error>, Option<DurableReply>) {
        let revoked = authority.and_then(|ctx| {
            let (held, version) = ctx.held();
            (version != ticket.grant_version && !held.contains_all(ctx.capabilities())).then(|| {
                let lost = ctx.capabilities().difference(held);
                M::Error::invalid_capabilities(format!(
                    "{lost} of {} was revoked while {} ran, so its result is withheld",
                    ctx.principal(),
                    M::NAME
                ))
            })
        });
        let (kind, result) = match revoked {
            Some(error) => (EntryKind::SecurityViolation, Err(error)),
            None => (EntryKind::EnergyUsage, result),
        };
        let sample = self.assess(&measured.reading);
        let estimate = ticket.hold.amount();
        let state = &mut self.operations[ticket.operation];
        state.runs += 1;
        state.mean_measured += (sample.joules.get() - state.mean_measured) / state.runs as f64;
        let actual = state.base + sample.joules;
        self.account_for(&sample, Some(actual));
        let overdraft = self.budget.settle(ticket.hold, actual);
        // Under a power cap an overdraft of a few microjoules is the cap at work, not news.
        if overdraft > Joules::ZERO && self.budget.refill_rate().is_none() {
            tracing::warn!(actor = %self.actor, operation = M::NAME, %overdraft, "measured cost exceeded the remaining budget");
        }
        self.counters.charged += actual;
        let outcome = match (&result, kind) {
            (Ok(_), _) => {
                self.counters.allowed += 1;
                Outcome::Allowed
            }
            (Err(_), EntryKind::SecurityViolation) => {
                self.counters.denied += 1;
                Outcome::Denied
            }
            (Err(_), _) => {
                self.counters.failed += 1;
                Outcome::Failed
            }
        };
        if let Some(metrics) = &self.metrics {
            let op = metrics.operation(ticket.operation);
            match outcome {
                Outcome::Allowed => op.allowed.inc(),
                Outcome::Denied => op.denied.inc(),
                Outcome::Failed => op.failed.inc(),
            };
            op.charged.inc_by(actual.get());
            op.metered.inc_by(sample.joules.get());
            metrics.budget(&self.budget);
        }
        let energy = self.energy_record(&sample, actual, estimate);
        let durable = self.record(
            measured.ended,
            kind,
            outcome,
            Some(ticket.operation),
            M::NAME,
            ticket.principal,
            ticket.remote.as_deref(),
            ticket.resource,
            result.as_ref().err(),
            energy,
        );
        self.watch_budget(M::NAME, Some(ticket.operation));
        (result, durable)
    }

    fn energy_record(&self, sample: &Sample, charged: Joules, estimate: Joules) -> EnergyRecord {
        EnergyRecord {
            charged_j: charged.get(),
            measured_j: sample.joules.get(),
            estimate_j: estimate.get(),
            remaining_j: self.budget.remaining().get(),
            source: Cow::Borrowed(sample.source.as_str()),
            accounting: Cow::Borrowed(self.accounting.as_str()),
            elapsed_ns: sample.elapsed.as_nanos().min(u64::MAX as u128) as u64,
            ops: sample.ops.map(|o| OpTally { alu: o.alu, mem: o.mem, fp: o.fp, total: o.total }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record<E: GateError>(
        &mut self,
        at: Ticks,
        kind: EntryKind,
        outcome: Outcome,
        operation: Option<usize>,
        name: &'static str,
        principal: CompactString,
        remote: Option<&str>,
        resource: CompactString,
        error: Option<&E>,
        energy: EnergyRecord,
    ) -> Option<DurableReply> {
        let detail = error.map_or(Detail::NONE, |e| Detail::from_error(e.code(), e.to_string())).with_remote(remote);
        // The same record as a `tracing` event: refusals of authority at WARN, other refusals and
        // failures at INFO, successes at DEBUG. It is emitted from the parts, so that the entry
        // can be built straight into the sink's argument (borrowing a built entry costs a copy).
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "ergon::audit",
                    $level,
                    actor = self.actor,
                    principal = principal.as_str(),
                    remote,
                    operation = name,
                    resource = resource.as_str(),
                    ?outcome,
                    error = detail.error(),
                    charged_j = energy.charged_j,
                    "{}",
                    detail.reason().unwrap_or("ok")
                )
            };
        }
        match (kind, outcome) {
            (EntryKind::SecurityViolation, _) => event!(tracing::Level::WARN),
            (_, Outcome::Denied | Outcome::Failed) => event!(tracing::Level::INFO),
            _ => event!(tracing::Level::DEBUG),
        }
        macro_rules! entry {
            () => {
                AuditEntry {
                    ts: self.clock.stamp(at),
                    kind,
                    outcome,
                    actor: Cow::Borrowed(self.actor),
                    principal,
                    operation: Cow::Borrowed(name),
                    scope: Cow::Borrowed(self.scope_of(operation)),
                    resource,
                    detail,
                    energy: Some(energy),
                }
            };
        }
        if !self.before_reply {
            // Built straight into the call: a built entry moved in would cost a copy.
            self.audit.record(entry!());
            return None;
        }
        let (durable, reply) = futures::channel::oneshot::channel();
        self.audit.record_durable(
            entry!(),
            Box::new(move |answer| {
                let _ = durable.send(answer);
            }),
        );
        Some(reply)
    }

    /// Raises an alert if the budget crossed a threshold.
    pub(super) fn watch_budget(&mut self, name: &'static str, operation: Option<usize>) {
        let Some(alert) = self.monitor.observe(&self.budget) else { return };
        if let Some(metrics) = &self.metrics {
            metrics.alert(alert.level.as_str());
        }
        let level = match alert.level {
            energy::AlertLevel::Critical => {
                tracing::error!(actor = %self.actor, "{}", alert.message);
                "critical"
            }
            energy::AlertLevel::Warning => {
                tracing::warn!(actor = %self.actor, "{}", alert.message);
                "warning"
            }
            energy::AlertLevel::Info => {
                tracing::info!(actor = %self.actor, "{}", alert.message);
                "info"
            }
        };
        self.audit.record(AuditEntry {
            ts: self.clock.now(),
            kind: EntryKind::EnergyAlert,
            outcome: Outcome::Allowed,
            actor: Cow::Borrowed(self.actor),
            principal: CompactString::const_new("system"),
            operation: Cow::Borrowed(name),
            scope: Cow::Borrowed(self.scope_of(operation)),
            resource: CompactString::from(self.actor),
            detail: Detail::from_alert(level, alert.message),
            energy: Some(EnergyRecord {
                charged_j: 0.0,
                measured_j: 0.0,
                estimate_j: 0.0,
                remaining_j: alert.remaining.get(),
                source: Cow::Borrowed(self.meter.source().as_str()),
                accounting: Cow::Borrowed(self.accounting.as_str()),
                elapsed_ns: 0,
                ops: None,
            }),
        });
    }
}

/// `text` as an audit entry carries a field nobody checked: at most `max` bytes (cut at a
/// character), and `…` if cut.
fn capped(text: &str, max: usize) -> CompactString {
    if text.len() <= max {
        return CompactString::from(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut capped = CompactString::from(&text[..end]);
    capped.push('…');
    capped
}
