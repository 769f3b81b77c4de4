//! A counter whose owner says what it reads: for tests and simulations of attribution, where the
//! energy must be known exactly.

use std::sync::{Arc, Mutex, PoisonError};

use super::{CounterError, EnergyCounter, Scope};
use crate::{Joules, Source};

/// A machine counter that reads what its owner added to it (plus `per_read` at every reading),
/// and fails when told to. Clones share the reading.
///
/// ```
/// use energy::counters::{EnergyCounter, ScriptedCounter};
/// use energy::{Joules, Source};
///
/// let dial = ScriptedCounter::new(Source::Rapl);
/// let mut counter = dial.clone();
/// dial.add(1.5);
/// assert_eq!(counter.read()?, Joules::new(1.5)?);
/// dial.fail_next();
/// assert!(counter.read().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ScriptedCounter {
    source: Source,
    state: Arc<Mutex<Script>>,
}

#[derive(Debug, Default)]
struct Script {
    joules: f64,
    per_read: f64,
    fail_next: bool,
}

impl ScriptedCounter {
    /// A counter at 0 J that claims its joules are `source`'s.
    pub fn new(source: Source) -> Self {
        ScriptedCounter { source, state: Arc::default() }
    }

    /// The same, advancing by `per_read` at every reading.
    pub fn advancing(source: Source, per_read: Joules) -> Self {
        let counter = ScriptedCounter::new(source);
        counter.lock().per_read = per_read.get();
        counter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Winds it forward by `joules` (ignored unless finite and positive).
    pub fn add(&self, joules: f64) {
        if joules.is_finite() && joules > 0.0 {
            self.lock().joules += joules;
        }
    }

    /// Makes the next reading fail.
    pub fn fail_next(&self) {
        self.lock().fail_next = true;
    }
}

impl EnergyCounter for ScriptedCounter {
    fn name(&self) -> &str {
        "scripted"
    }

    fn source(&self) -> Source {
        self.source
    }

    fn scope(&self) -> Scope {
        Scope::Machine
    }

    fn read(&mut self) -> Result<Joules, CounterError> {
        let mut script = self.lock();
        if std::mem::take(&mut script.fail_next) {
            return Err(CounterError::Failed { name: "scripted".into(), why: "told to fail".into() });
        }
        script.joules += script.per_read;
        Ok(Joules::new(script.joules).unwrap_or(Joules::ZERO))
    }
}
