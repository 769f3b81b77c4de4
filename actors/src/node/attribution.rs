//! The machine's energy counter, sampled beside the gates and shared among their actors, with each
//! share written to the audit log.
//!
//! The gate charges every message at run time from its per-message meter (operation counts or
//! running time). [`Attribution`] probes the machine's counters, samples the best one in the
//! background ([`energy::attribution::Sampler`]) and writes, every report period, one
//! `energy_attribution` entry per actor that ran: its share of what the counter measured beside
//! what it was charged. The unattributed rest and the sampler's own cost are entries too, so the
//! entries of a log add up to what the counter measured (`ergon audit summary` shows both).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use energy::attribution::{Account, Accounts, Line, Report, Sampler, SamplerConfig, METER_ACCOUNT};
use energy::counters::{probe_and_open, EnergyCounter, Probe, ProbeConfig};
use energy::{Accounting, Watts};
use security::audit::{AuditEntry, AuditSink, Detail, EnergyRecord, EntryKind, Outcome};

use crate::config::AttributionConfig;
use crate::metrics::Metrics;

/// The actor name of the unattributed rest in the audit log.
pub const UNATTRIBUTED: &str = "unattributed";

/// Why attribution could not start.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// No counter of this machine advanced under the probe's load.
    #[error("no energy counter to sample: {0}")]
    NoCounter(String),
    /// The chosen counter failed when the sampler started.
    #[error("the energy counter failed: {0}")]
    Counter(#[from] energy::counters::CounterError),
}

/// The process's accounts and the sampler that shares the counter among them.
pub struct Attribution {
    accounts: Arc<Accounts>,
    sampler: Mutex<Option<Sampler>>,
    probe: Probe,
}

impl Attribution {
    /// Probes the machine, picks its best counter, and starts sampling it; reports go to `audit`.
    pub fn start(
        config: &AttributionConfig,
        accounting: Accounting,
        watts_per_core: Watts,
        audit: Arc<dyn AuditSink>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Attribution, AttributionError> {
        let probe_config = ProbeConfig {
            powercap_root: config.powercap_root.clone(),
            pmu_root: config.pmu_root.clone(),
            load: Duration::from_millis(config.probe_load_ms),
            watts_per_core,
        };
        let load = probe_config.load;
        let (probe, counter) = probe_and_open(&probe_config, || energy::counters::probe::spin(load));
        let counter = counter.ok_or_else(|| AttributionError::NoCounter(probe.verdict.clone()))?;
        Attribution::sample(Box::new(counter), probe, config, accounting, audit, metrics)
    }

    /// Starts sampling `counter`, which `probe` chose (or which the caller supplies, with a
    /// probe that says so: [`Probe::given`]).
    pub fn sample(
        counter: Box<dyn EnergyCounter>,
        probe: Probe,
        config: &AttributionConfig,
        accounting: Accounting,
        audit: Arc<dyn AuditSink>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Attribution, AttributionError> {
        tracing::info!(counter = counter.name(), source = %counter.source(), %accounting, verdict = %probe.verdict, "sampling the energy counter");
        let accounts = Accounts::new(accounting);
        let sampling = SamplerConfig {
            every: Duration::from_millis(config.sample_every_ms),
            report_every: Duration::from_millis(config.report_every_ms),
        };
        let sampler = Sampler::start(counter, accounts.clone(), sampling, Box::new(move |report| {
            write(&*audit, report);
            if let Some(metrics) = &metrics {
                metrics.report(report);
            }
        }))?;
        Ok(Attribution { accounts, sampler: Mutex::new(Some(sampler)), probe })
    }

    /// What the probe found, and its choice.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The account the gate of `actor` records its runs in.
    pub fn account(&self, actor: &str) -> Arc<Account> {
        self.accounts.open(actor)
    }

    /// Everything reported so far (`None` once stopped).
    pub fn totals(&self) -> Option<Report> {
        self.sampler.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Sampler::totals)
    }

    /// Closes the last window, writes its entries, and returns the totals (`None` if already
    /// stopped). Dropping the last clone of the environment does the same, without the totals.
    pub fn stop(&self) -> Option<Report> {
        self.sampler.lock().unwrap_or_else(PoisonError::into_inner).take().map(Sampler::stop)
    }
}

/// One entry per line of the report, and one for the unattributed rest. Under physical
/// accounting an actor's entry charges its correction (`charged_j`, negative for a credit).
fn write(audit: &dyn AuditSink, report: &Report) {
    let entry = |actor: &str, reason: String, energy: EnergyRecord| {
        let mut entry =
            AuditEntry::new(EntryKind::EnergyAttribution, Outcome::Allowed, actor, "ergon", "attribution", &report.counter);
        entry.detail = Detail::from_reason(reason);
        entry.energy = Some(energy);
        entry
    };
    let record = |line: &Line| EnergyRecord {
        charged_j: line.correction_j,
        measured_j: line.attributed.get(),
        estimate_j: line.modelled.get(),
        remaining_j: 0.0,
        source: report.source.as_str().into(),
        accounting: report.accounting.as_str().into(),
        elapsed_ns: u64::try_from(line.busy.as_nanos()).unwrap_or(u64::MAX),
        ops: None,
    };
    let period = report.period.as_secs_f64();
    for (actor, line) in &report.lines {
        let mut reason = format!("{} runs, {:?} running, in {period:.3} s", line.runs, line.busy);
        if report.accounting == Accounting::Physical && actor != METER_ACCOUNT {
            reason.push_str(&format!("; charged {:.3e} J at run time, corrected by {:+.3e} J", line.charged.get(), line.correction_j));
            if line.refused > 0 {
                reason.push_str(&format!(" ({} refusals measured, not charged)", line.refused));
            }
        }
        audit.record(entry(actor, reason, record(line)));
    }
    let mut reason = format!("idle, other processes and the runtime between handlers, in {period:.3} s");
    if report.failed_reads > 0 {
        reason.push_str(&format!("; {} readings failed and were carried over", report.failed_reads));
    }
    let rest = Line { attributed: report.unattributed, ..Line::default() };
    audit.record(entry(UNATTRIBUTED, reason, record(&rest)));
}
