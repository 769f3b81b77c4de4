//! What the actors of one process share.

use std::sync::Arc;

use energy::{Instrumentation, Meter, OpCountMeter, TimeMeter};
use security::audit::AuditSink;
use security::{GrantTable, Scope};

use crate::attribution::Attribution;
use crate::config::{ActorConfig, Config};
use crate::gate::{Gate, GateSetup};

type MeterFactory = Arc<dyn Fn() -> Box<dyn Meter> + Send + Sync>;

/// Configuration, grants, audit sink and meter: everything an actor needs to build its gate.
///
/// ```
/// use std::sync::Arc;
/// use actors::{Config, Environment};
/// use actors::security::{audit::MemorySink, GrantTable};
///
/// let env = Environment::new(Config::default(), Arc::new(GrantTable::new()), Arc::new(MemorySink::new()));
/// assert_eq!(env.config().node_manager.budget_joules.get(), 1000.0);
/// ```
#[derive(Clone)]
pub struct Environment {
    config: Arc<Config>,
    grants: Arc<GrantTable>,
    audit: Arc<dyn AuditSink>,
    meter: MeterFactory,
    attribution: Option<Arc<Attribution>>,
}

impl Environment {
    /// An environment that meters with the best source the build has: operation counts priced
    /// by the cost model (`config.meter`'s calibration profile, else the default) in a build instrumented by ergon's LLVM pass (`cargo ergon`), else the
    /// time model of `config.meter`. Every audit entry names its source.
    ///
    /// With `config.attribution.enabled`, it also probes the machine's energy counters and
    /// samples the best one, sharing it among the actors ([`Attribution`]); if no counter
    /// advances, it says so in a warning and runs without.
    pub fn new(config: Config, grants: Arc<GrantTable>, audit: Arc<dyn AuditSink>) -> Self {
        let watts = config.meter.watts_per_core;
        let model = config.meter.cost_model;
        let meter: MeterFactory = match energy::instrumentation() {
            Instrumentation::Instrumented => {
                Arc::new(move || Box::new(OpCountMeter::new(model).expect("the build is instrumented")))
            }
            Instrumentation::NotInstrumented => Arc::new(move || Box::new(TimeMeter::new(watts))),
        };
        let attribution = config.attribution.enabled.then(|| Attribution::start(&config.attribution, watts, audit.clone()));
        let attribution = match attribution {
            Some(Ok(attribution)) => Some(Arc::new(attribution)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "energy attribution is off");
                None
            }
            None => None,
        };
        Environment { config: Arc::new(config), grants, audit, meter, attribution }
    }

    /// The machine counter's sampler and the actors' accounts, when attribution is on.
    pub fn attribution(&self) -> Option<&Arc<Attribution>> {
        self.attribution.as_ref()
    }

    /// The same environment with another meter for every gate built from it (tests use
    /// [`energy::FixedMeter`] for exact costs).
    pub fn with_meter(mut self, meter: impl Fn() -> Box<dyn Meter> + Send + Sync + 'static) -> Self {
        self.meter = Arc::new(meter);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The grant table.
    pub fn grants(&self) -> &Arc<GrantTable> {
        &self.grants
    }

    /// The audit sink.
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// A gate for an actor named `actor`, acting in `scope`. The actor's own principal (its
    /// name) is granted what the actor holds, so that it can present a context to its peers.
    pub fn gate(&self, actor: &str, scope: &str, config: &ActorConfig) -> Gate {
        self.grants.grant(actor, config.grants);
        Gate::new(GateSetup {
            actor: actor.to_owned(),
            scope: Scope::new(scope).expect("actor scopes are constants"),
            config: config.clone(),
            limits: self.config.limits,
            thresholds: self.config.alerts,
            grants: self.grants.clone(),
            audit: self.audit.clone(),
            meter: (self.meter)(),
            account: self.attribution.as_ref().map(|a| a.account(actor)),
        })
    }
}
