//! What the actors of one process share.

use std::sync::Arc;

use energy::{Instrumentation, Meter, OpCountMeter, TimeMeter};
use security::audit::AuditSink;
use security::{GrantTable, Origin, Principal, Scope};

use crate::config::Config;
use crate::gate::{ActorConfig, Gate, GateClock, GateSetup, GatedActor};
use crate::node::attribution::Attribution;

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
    clock: GateClock,
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
        Environment { config: Arc::new(config), grants, audit, meter, attribution, clock: GateClock::system() }
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

    /// The same environment with another clock for every gate built from it (tests use
    /// [`GateClock::manual`] to control time).
    pub fn with_clock(mut self, clock: GateClock) -> Self {
        self.clock = clock;
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

    /// A gate for actor `A`, named `actor` in the audit log, configured by `config` (its section
    /// of this environment's configuration). The actor's own principal (`actor:<actor>`) is
    /// granted what the actor holds, and the gate keeps the credential, so that the actor can
    /// present a context to its peers.
    pub fn gate<A: GatedActor>(&self, actor: &str, config: &ActorConfig<A::Settings>) -> Gate {
        let credential = self.grants.grant(Principal::actor(actor), config.grants, Scope::root(), Origin::Configured);
        Gate::new(GateSetup {
            actor: actor.to_owned(),
            scope: Scope::new(A::SCOPE).expect("actor scopes are constants"),
            operations: A::OPERATIONS,
            config,
            limits: self.config.limits,
            thresholds: self.config.alerts,
            grants: self.grants.clone(),
            audit: self.audit.clone(),
            meter: (self.meter)(),
            account: self.attribution.as_ref().map(|a| a.account(actor)),
            clock: self.clock.clone(),
            credential,
        })
    }
}
