//! Sharing a machine counter's energy among the handlers that ran, so that what actors are charged
//! can be set beside what the machine measured.
//!
//! RAPL counts the whole machine and updates about once a millisecond; a handler runs for
//! microseconds. So the gate records each run's modelled cost and running time in its actor's
//! [`Account`] (two relaxed atomic additions), and a [`Sampler`] thread reads the counter every few
//! milliseconds. Each window's energy is split by [`share`]:
//!
//! - the handlers' part is the window's energy times the fraction of the counter's capacity they
//!   were running (`busy / (window × CPUs)` for a machine counter, `busy / process CPU time` for
//!   the process's CPU-time counter), shared among the accounts in proportion to their modelled
//!   cost;
//! - the sampler's own part, its CPU time over the same capacity, is charged to [`METER_ACCOUNT`]:
//!   measuring is not free, and is not hidden;
//! - the rest (idle power, other processes, the runtime between handlers) is reported as
//!   unattributed.
//!
//! The three add up to the counter's reading exactly, so audit totals reconcile with the meter.
//! Budgets are charged at run time by the per-message [`Meter`](crate::Meter). Under tutorial
//! [`Accounting`] attribution is a second, measured account of the same work, written beside it;
//! under physical accounting each window also corrects what every actor was charged to the share
//! its admitted runs earned (refusals are measured, never charged), through
//! [`Account::take_correction`], so that over a run the budgets pay what the counter measured
//! minus the sampler's part, the refusals' part and the unattributed rest.
//!
//! ```
//! use std::time::Duration;
//! use energy::attribution::{share, Window};
//! use energy::Joules;
//!
//! let window = Window {
//!     measured: Joules::new(1.0)?,
//!     capacity: Duration::from_millis(100), // 2 CPUs for 50 ms
//!     polling: Duration::from_millis(1),
//!     accounts: vec![
//!         (Joules::new(3e-6)?, Duration::from_millis(30)),
//!         (Joules::new(1e-6)?, Duration::from_millis(10)),
//!     ],
//! };
//! let shares = share(&window);
//! // Handlers ran 40 ms of 100: 0.4 J, split 3:1 by modelled cost.
//! assert!((shares.accounts[0].get() - 0.3).abs() < 1e-12);
//! assert!((shares.accounts[1].get() - 0.1).abs() < 1e-12);
//! assert!((shares.polling.get() - 0.01).abs() < 1e-12);
//! assert!((shares.unattributed.get() - 0.59).abs() < 1e-12);
//! # Ok::<(), energy::QuantityError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::counters::{CounterError, EnergyCounter, Scope};
use crate::{Accounting, Joules, Source};

/// The account the sampler's own cost is charged to; its runs are the counter readings.
pub const METER_ACCOUNT: &str = "energy-meter";

/// What the runs of one actor cost, as modelled at run time, since the sampler last looked; and,
/// under physical accounting, the correction the sampler owes its budget.
#[derive(Debug)]
pub struct Account {
    name: String,
    /// Modelled energy in picojoules, of every run: the weight of the actor's share.
    modelled_pj: AtomicU64,
    /// The part of it that was admitted (a refusal is not charged, nor is its share).
    admitted_pj: AtomicU64,
    /// What the gate charged for the admitted runs, in picojoules.
    charged_pj: AtomicU64,
    busy_ns: AtomicU64,
    runs: AtomicU64,
    refused: AtomicU64,
    /// Picojoules the sampler has corrected the charges by and the gate has not yet applied.
    correction_pj: AtomicI64,
}

fn picojoules(j: Joules) -> u64 {
    (j.get() * 1e12) as u64
}

fn from_picojoules(pj: u64) -> Joules {
    Joules::new(pj as f64 * 1e-12).unwrap_or(Joules::ZERO)
}

impl Account {
    /// The actor it is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one run: its modelled cost, its running time, and what the gate charged for it
    /// (`None` for a refusal). Called by the gate on every message.
    pub fn record(&self, modelled: Joules, busy: Duration, charged: Option<Joules>) {
        let modelled = picojoules(modelled);
        self.modelled_pj.fetch_add(modelled, Ordering::Relaxed);
        self.busy_ns.fetch_add(u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        match charged {
            Some(charged) => {
                self.admitted_pj.fetch_add(modelled, Ordering::Relaxed);
                self.charged_pj.fetch_add(picojoules(charged), Ordering::Relaxed);
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The correction owed since the last call, in joules: positive to charge, negative to
    /// credit. The gate applies it to its budget before it admits the next request; it is zero
    /// under tutorial accounting.
    pub fn take_correction(&self) -> f64 {
        match self.correction_pj.load(Ordering::Relaxed) {
            0 => 0.0,
            _ => self.correction_pj.swap(0, Ordering::Relaxed) as f64 * 1e-12,
        }
    }

    fn owe(&self, correction: f64) {
        let pj = (correction * 1e12).clamp(i64::MIN as f64, i64::MAX as f64) as i64;
        // Saturating, so that a budget never owed is never wrapped into a credit.
        let _ = self.correction_pj.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| Some(old.saturating_add(pj)));
    }

    fn take(&self) -> Usage {
        Usage {
            modelled: from_picojoules(self.modelled_pj.swap(0, Ordering::Relaxed)),
            admitted: from_picojoules(self.admitted_pj.swap(0, Ordering::Relaxed)),
            charged: from_picojoules(self.charged_pj.swap(0, Ordering::Relaxed)),
            busy: Duration::from_nanos(self.busy_ns.swap(0, Ordering::Relaxed)),
            runs: self.runs.swap(0, Ordering::Relaxed),
            refused: self.refused.swap(0, Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    modelled: Joules,
    admitted: Joules,
    charged: Joules,
    busy: Duration,
    runs: u64,
    refused: u64,
}

impl Usage {
    /// The part of the actor's share that its admitted runs earned: by modelled cost, or by
    /// count where nothing was modelled.
    fn admitted_fraction(&self) -> f64 {
        if self.modelled > Joules::ZERO {
            (self.admitted.get() / self.modelled.get()).clamp(0.0, 1.0)
        } else if self.runs > 0 {
            (self.runs - self.refused) as f64 / self.runs as f64
        } else {
            0.0
        }
    }
}

/// The accounts of one process, one per actor name.
#[derive(Debug, Default)]
pub struct Accounts {
    accounting: Accounting,
    list: Mutex<Vec<Arc<Account>>>,
}

impl Accounts {
    /// No accounts yet. Under [`Accounting::Physical`] every window corrects each account's
    /// charges to its share.
    pub fn new(accounting: Accounting) -> Arc<Self> {
        Arc::new(Accounts { accounting, list: Mutex::default() })
    }

    /// How the accounts' charges are corrected.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }

    /// The account of `name`, opened on first use.
    pub fn open(&self, name: &str) -> Arc<Account> {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(account) = list.iter().find(|a| a.name == name) {
            return account.clone();
        }
        let account = Arc::new(Account {
            name: name.to_owned(),
            modelled_pj: AtomicU64::new(0),
            admitted_pj: AtomicU64::new(0),
            charged_pj: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            correction_pj: AtomicI64::new(0),
        });
        list.push(account.clone());
        account
    }

    fn take(&self) -> Vec<(Arc<Account>, Usage)> {
        let list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.iter().map(|a| (a.clone(), a.take())).collect()
    }
}

/// One window of the counter, as [`share`] needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// What the counter counted.
    pub measured: Joules,
    /// The CPU time the counter covers: the window times the CPUs for a machine counter, the
    /// process's CPU time for a process counter.
    pub capacity: Duration,
    /// The sampler's own CPU time.
    pub polling: Duration,
    /// Each account's modelled cost and running time.
    pub accounts: Vec<(Joules, Duration)>,
}

/// How a window's energy was shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// Each account's share, in the order of [`Window::accounts`].
    pub accounts: Vec<Joules>,
    /// The sampler's share.
    pub polling: Joules,
    /// What no one ran.
    pub unattributed: Joules,
}

/// Splits a window's energy among the accounts, the sampler and the unattributed rest. The parts
/// add up to `window.measured`.
pub fn share(window: &Window) -> Shares {
    let measured = window.measured.get();
    let capacity = window.capacity.as_secs_f64();
    let fraction = |time: Duration| if capacity > 0.0 { (time.as_secs_f64() / capacity).clamp(0.0, 1.0) } else { 0.0 };
    let busy: Duration = window.accounts.iter().map(|(_, busy)| *busy).sum();
    let handlers = fraction(busy);
    let polling = fraction(window.polling).min(1.0 - handlers);
    let modelled: f64 = window.accounts.iter().map(|(m, _)| m.get()).sum();
    // By modelled cost; by running time where nothing was modelled (a fixed meter charging 0).
    let weight = |&(m, b): &(Joules, Duration)| {
        if modelled > 0.0 {
            m.get() / modelled
        } else if busy > Duration::ZERO {
            b.as_secs_f64() / busy.as_secs_f64()
        } else {
            0.0
        }
    };
    let accounts: Vec<Joules> =
        window.accounts.iter().map(|a| window.measured.scale(handlers * weight(a))).collect();
    let polling = window.measured.scale(polling);
    let given = accounts.iter().map(|j| j.get()).sum::<f64>() + polling.get();
    let unattributed = Joules::new((measured - given).max(0.0)).unwrap_or(Joules::ZERO);
    Shares { accounts, polling, unattributed }
}

/// How often the sampler reads, and how often it reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Between two readings of the counter: short enough to follow handlers, far shorter than the
    /// minutes RAPL takes to wrap.
    pub every: Duration,
    /// Between two reports (audit entries).
    pub report_every: Duration,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { every: Duration::from_millis(10), report_every: Duration::from_secs(1) }
    }
}

/// One actor's line of a [`Report`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Line {
    /// Runs recorded.
    pub runs: u64,
    /// Of them, refused before running (measured, not charged).
    pub refused: u64,
    /// Their running time.
    pub busy: Duration,
    /// What the per-message meter measured for them.
    pub modelled: Joules,
    /// What the gate charged for the admitted ones.
    pub charged: Joules,
    /// Their share of what the counter measured.
    pub attributed: Joules,
    /// Under physical accounting, what the charges were corrected by, in joules (positive:
    /// charged more; negative: credited): the admitted runs' share minus `charged`. Zero under
    /// tutorial accounting.
    pub correction_j: f64,
}

impl Line {
    /// What the actor's budget paid for these runs in all: `charged + correction_j`.
    pub fn paid(&self) -> f64 {
        self.charged.get() + self.correction_j
    }
}

/// What the counter measured over a stretch of time, and who it is attributed to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// How the actors' charges were corrected.
    pub accounting: Accounting,
    /// The counter (`powercap:intel-rapl:0 (package-0)`, `cpu-time`).
    pub counter: String,
    /// What its joules are.
    pub source: Source,
    /// How long the report covers.
    pub period: Duration,
    /// Everything the counter measured in it.
    pub measured: Joules,
    /// Each actor's line, by name; [`METER_ACCOUNT`] is the sampler itself.
    pub lines: BTreeMap<String, Line>,
    /// What no actor ran: idle, other processes, the runtime between handlers.
    pub unattributed: Joules,
    /// Readings that failed (their energy moves to the next reading that works).
    pub failed_reads: u64,
}

impl Report {
    fn new(accounting: Accounting, counter: &str, source: Source) -> Report {
        Report {
            accounting,
            counter: counter.to_owned(),
            source,
            period: Duration::ZERO,
            measured: Joules::ZERO,
            lines: BTreeMap::new(),
            unattributed: Joules::ZERO,
            failed_reads: 0,
        }
    }

    /// Everything attributed plus the unattributed rest: equal to `measured` up to rounding.
    pub fn accounted(&self) -> Joules {
        self.lines.values().map(|l| l.attributed).sum::<Joules>() + self.unattributed
    }

    fn add(&mut self, other: &Report) {
        self.period += other.period;
        self.measured += other.measured;
        self.unattributed += other.unattributed;
        self.failed_reads += other.failed_reads;
        for (name, line) in &other.lines {
            self.add_line(name, line);
        }
    }

    fn add_line(&mut self, name: &str, line: &Line) {
        let total = self.lines.entry(name.to_owned()).or_default();
        total.runs += line.runs;
        total.refused += line.refused;
        total.busy += line.busy;
        total.modelled += line.modelled;
        total.charged += line.charged;
        total.attributed += line.attributed;
        total.correction_j += line.correction_j;
    }
}

/// Reads a counter in the background and shares its energy among the accounts.
pub struct Sampler {
    shared: Arc<SamplerShared>,
    thread: Option<JoinHandle<()>>,
}

struct SamplerShared {
    stop: Mutex<bool>,
    wake: Condvar,
    totals: Mutex<Report>,
}

/// Receives each report; the actors write them to the audit log.
pub type Reporter = Box<dyn FnMut(&Report) + Send>;

impl Sampler {
    /// Starts sampling `counter` on its own thread, sharing among `accounts`, and calling `report`
    /// every `config.report_every` (and once more when stopped).
    pub fn start(
        mut counter: Box<dyn EnergyCounter>,
        accounts: Arc<Accounts>,
        config: SamplerConfig,
        mut report: Reporter,
    ) -> Result<Sampler, CounterError> {
        let shared = Arc::new(SamplerShared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            totals: Mutex::new(Report::new(accounts.accounting(), counter.name(), counter.source())),
        });
        let mut window = WindowClock::start(&mut *counter)?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ergon-energy-sampler".into())
            .spawn(move || {
                let shared = thread_shared;
                let mut pending = Report::new(accounts.accounting(), counter.name(), counter.source());
                let mut last_report = Instant::now();
                loop {
                    let stopping = {
                        let stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
                        if *stop {
                            true
                        } else {
                            let (stop, _) =
                                shared.wake.wait_timeout(stop, config.every).unwrap_or_else(PoisonError::into_inner);
                            *stop
                        }
                    };
                    window.close(&mut *counter, &accounts, &mut pending);
                    if stopping || last_report.elapsed() >= config.report_every {
                        report(&pending);
                        shared.totals.lock().unwrap_or_else(PoisonError::into_inner).add(&pending);
                        pending = Report::new(accounts.accounting(), counter.name(), counter.source());
                        last_report = Instant::now();
                    }
                    if stopping {
                        break;
                    }
                }
            })
            .map_err(|e| CounterError::Failed { name: "sampler".into(), why: format!("cannot start its thread: {e}") })?;
        Ok(Sampler { shared, thread: Some(thread) })
    }

    /// Everything reported so far.
    pub fn totals(&self) -> Report {
        self.shared.totals.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Closes the last window, reports it, and returns the totals.
    pub fn stop(mut self) -> Report {
        self.halt();
        self.totals()
    }

    fn halt(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where the current window started.
struct WindowClock {
    scope: Scope,
    cpus: u32,
    last_energy: Joules,
    last_at: Instant,
    last_process: Duration,
    last_own: Duration,
}

fn process_cpu() -> Duration {
    cpu_time::ProcessTime::try_now().map(|t| t.as_duration()).unwrap_or_default()
}

fn own_cpu() -> Duration {
    cpu_time::ThreadTime::try_now().map(|t| t.as_duration()).unwrap_or_default()
}

impl WindowClock {
    fn start(counter: &mut dyn EnergyCounter) -> Result<WindowClock, CounterError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Ok(WindowClock {
            scope: counter.scope(),
            cpus,
            last_energy: counter.read()?,
            last_at: Instant::now(),
            last_process: process_cpu(),
            last_own: Duration::ZERO,
        })
    }

    /// Reads the counter, shares the window since the last reading, and adds it to `report`. A
    /// failed reading leaves the window open: its energy is counted by the next reading.
    fn close(&mut self, counter: &mut dyn EnergyCounter, accounts: &Accounts, report: &mut Report) {
        let energy = match counter.read() {
            Ok(energy) => energy,
            Err(e) => {
                tracing::warn!(counter = counter.name(), error = %e, "energy counter reading failed");
                report.failed_reads += 1;
                return;
            }
        };
        let now = Instant::now();
        let process = process_cpu();
        let own = own_cpu();
        let capacity = match self.scope {
            Scope::Machine => (now - self.last_at) * self.cpus,
            Scope::Process => process.saturating_sub(self.last_process),
        };
        // Called on the sampler's thread: its CPU time is what measuring costs.
        let polling = own.saturating_sub(self.last_own);
        let handlers = accounts.take();
        let window = Window {
            measured: energy.saturating_sub(self.last_energy),
            capacity,
            polling,
            accounts: handlers.iter().map(|(_, u)| (u.modelled, u.busy)).collect(),
        };
        let shares = share(&window);
        for ((account, usage), attributed) in handlers.iter().zip(&shares.accounts) {
            if usage.runs == 0 && attributed.get() == 0.0 {
                continue;
            }
            let correction_j = match accounts.accounting() {
                Accounting::Tutorial => 0.0,
                Accounting::Physical => attributed.get() * usage.admitted_fraction() - usage.charged.get(),
            };
            if correction_j != 0.0 {
                account.owe(correction_j);
            }
            let line = Line {
                runs: usage.runs,
                refused: usage.refused,
                busy: usage.busy,
                modelled: usage.modelled,
                charged: usage.charged,
                attributed: *attributed,
                correction_j,
            };
            report.add_line(account.name(), &line);
        }
        let reading = Line { runs: 1, busy: polling, attributed: shares.polling, ..Line::default() };
        report.add_line(METER_ACCOUNT, &reading);
        report.measured += window.measured;
        report.unattributed += shares.unattributed;
        report.period += now - self.last_at;
        self.last_energy = energy;
        self.last_at = now;
        self.last_process = process;
        self.last_own = own;
    }
}
