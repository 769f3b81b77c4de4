//! What the actors of one process share.

use std::sync::Arc;

use energy::counters::EnergyCounter;
use energy::{Accounting, Instrumentation, Joules, Meter, OpCountMeter, TimeMeter};
use security::audit::AuditSink;
use security::{GrantTable, Origin, Principal, Scope};

use crate::config::Config;
use crate::gate::{ActorConfig, Gate, GateClock, GateSetup, GatedActor};
use crate::node::attribution::{Attribution, AttributionError};
use crate::metrics::{Metrics, MetricsError, MetricsServer, NodeMetrics};
use crate::node::gate_cost;

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
    gate_cost: Joules,
    metrics: Option<Arc<Metrics>>,
    attribution: Option<Arc<Attribution>>,
    clock: GateClock,
}

impl Environment {
    /// An environment that meters with the best source the build has: operation counts priced
    /// by the cost model (`config.energy`'s calibration profile, else the default) in a build
    /// instrumented by ergon's LLVM pass (`cargo ergon`), else the time model of `config.energy`.
    /// Every audit entry names its source and its accounting. Under physical accounting it first
    /// measures the gate's fixed cost ([`gate_cost`](crate::node::gate_cost)).
    ///
    /// With `config.attribution.enabled`, it also probes the machine's energy counters and
    /// samples the best one, sharing it among the actors ([`Attribution`]); if no counter
    /// advances, it says so in a warning and runs without.
    pub fn new(config: Config, grants: Arc<GrantTable>, audit: Arc<dyn AuditSink>) -> Self {
        let mut env = Environment::without_attribution(config, grants, audit);
        if env.config.attribution.enabled {
            let energy = &env.config.energy;
            match Attribution::start(&env.config.attribution, energy.accounting, energy.watts_per_core, env.audit.clone(), env.metrics.clone()) {
                Ok(attribution) => env.attribution = Some(Arc::new(attribution)),
                Err(e) => tracing::warn!(error = %e, "energy attribution is off"),
            }
        }
        env
    }

    /// The same as [`new`](Environment::new), sampling `counter` (whatever
    /// `config.attribution.enabled` says) instead of probing the machine's: an application's own
    /// counter, or a test's scripted one.
    pub fn with_counter(
        config: Config,
        grants: Arc<GrantTable>,
        audit: Arc<dyn AuditSink>,
        counter: Box<dyn EnergyCounter>,
    ) -> Result<Self, AttributionError> {
        let mut env = Environment::without_attribution(config, grants, audit);
        let probe = energy::counters::Probe::given(&*counter);
        let accounting = env.config.energy.accounting;
        let attribution = Attribution::sample(counter, probe, &env.config.attribution, accounting, env.audit.clone(), env.metrics.clone())?;
        env.attribution = Some(Arc::new(attribution));
        Ok(env)
    }

    fn without_attribution(config: Config, grants: Arc<GrantTable>, audit: Arc<dyn AuditSink>) -> Self {
        let watts = config.energy.watts_per_core;
        let model = config.energy.cost_model;
        let meter: MeterFactory = match energy::instrumentation() {
            Instrumentation::Instrumented => {
                Arc::new(move || Box::new(OpCountMeter::new(model).expect("the build is instrumented")))
            }
            Instrumentation::NotInstrumented => Arc::new(move || Box::new(TimeMeter::new(watts))),
        };
        let gate_cost = match config.energy.accounting {
            Accounting::Tutorial => Joules::ZERO,
            Accounting::Physical => {
                let cost = gate_cost::measure(meter(), watts);
                tracing::info!(%cost, "physical accounting: the gate's fixed cost, measured, is every operation's base cost");
                cost
            }
        };
        let metrics = config.metrics.listen.map(|_| Metrics::new());
        Environment {
            config: Arc::new(config),
            grants,
            audit,
            meter,
            gate_cost,
            metrics,
            attribution: None,
            clock: GateClock::system(),
        }
    }

    /// The process's metrics, when `[metrics] listen` is set.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Serves the metrics at `[metrics] listen` until the returned server is dropped (`None`
    /// when no address is configured).
    pub fn serve_metrics(&self) -> Result<Option<MetricsServer>, MetricsError> {
        match (self.config.metrics.listen, &self.metrics) {
            (Some(address), Some(metrics)) => MetricsServer::start(address, metrics.clone()).map(Some),
            _ => Ok(None),
        }
    }

    /// The gauges of node `node`, when metrics are kept.
    pub fn node_metrics(&self, node: impl ToString) -> Option<NodeMetrics> {
        self.metrics.as_ref().map(|m| m.node(node))
    }

    /// The fixed cost of passing the gate, measured at start-up under physical accounting (zero
    /// under tutorial accounting, whose base costs are declared).
    pub fn gate_cost(&self) -> Joules {
        self.gate_cost
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
            accounting: self.config.energy.accounting,
            gate_cost: self.gate_cost,
            account: self.attribution.as_ref().map(|a| a.account(actor)),
            clock: self.clock.clone(),
            metrics: self.metrics.as_ref().map(|m| m.gate(actor, &A::OPERATIONS.iter().map(|op| op.name).collect::<Vec<_>>())),
            credential,
        })
    }
}
