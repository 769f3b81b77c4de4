//! What a node shows Prometheus: one registry per process, in the OpenMetrics text format, served
//! at `/metrics` ([`MetricsServer`], when `[metrics] listen` is set).
//!
//! The figures are pushed where they change, never pulled from the actors at scrape time (a scrape
//! must not queue behind a busy mailbox, nor pass a gate): the gate adds to per-operation counters
//! it looked up once when it was built ([`GateMetrics`], a few relaxed atomic additions a
//! message), the attribution sampler adds each report, and the consensus actor, failure detector
//! and worker pool set their gauges ([`NodeMetrics`]).
//!
//! Names follow Prometheus' conventions: base units in the name (`_joules`, `_watts`), `_total`
//! on counters, and labels for what varies (`actor`, `operation`, `outcome`, `node`, `peer`).
//!
//! ```
//! use actors::metrics::Metrics;
//!
//! let metrics = Metrics::new();
//! let gate = metrics.gate("node-manager/n1", &["join"]);
//! gate.operation(0).allowed.inc();
//! let text = metrics.encode();
//! assert!(text.contains(r#"ergon_requests_total{actor="node-manager/n1",operation="join",outcome="allowed"} 1"#), "{text}");
//! assert!(text.ends_with("# EOF\n"));
//! ```

mod http;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use energy::attribution::{Report, METER_ACCOUNT};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use http::{MetricsError, MetricsServer};

/// A counter of joules (or any quantity that is not a count).
pub type Amount = Counter<f64, AtomicU64>;
/// A gauge of a quantity.
pub type Level = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    actor: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    actor: String,
    operation: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Actor {
    actor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Correction {
    actor: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Alert {
    actor: String,
    level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnergyCounter {
    counter: String,
    source: String,
    accounting: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Node {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Peer {
    node: String,
    peer: String,
}

/// The metric of `labels` in `family`, created on first use. A function, so that the family's
/// read guard ends here: two guards alive in one expression would deadlock the second creation.
fn handle<S: Clone + std::hash::Hash + Eq, M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    family: &Family<S, M, C>,
    labels: &S,
) -> M {
    family.get_or_create(labels).clone()
}

/// The process's registry and every family in it.
pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    charged: Family<Operation, Amount>,
    metered: Family<Operation, Amount>,
    corrected: Family<Correction, Amount>,
    attributed: Family<Actor, Amount>,
    remaining: Family<Actor, Level>,
    capacity: Family<Actor, Level>,
    refill: Family<Actor, Level>,
    alerts: Family<Alert, Counter>,
    counter_joules: Family<EnergyCounter, Amount>,
    unattributed: Family<EnergyCounter, Amount>,
    sampler: Family<EnergyCounter, Amount>,
    raft_term: Family<Node, Gauge>,
    raft_leader: Family<Node, Gauge>,
    raft_commit: Family<Node, Gauge>,
    raft_applied: Family<Node, Gauge>,
    phi: Family<Peer, Level>,
    pool_workers: Family<Node, Gauge>,
    pool_in_flight: Family<Node, Gauge>,
}

impl Metrics {
    /// An empty registry with every family ergon reports.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ergon");
        macro_rules! family {
            ($name:literal, $help:literal) => {{
                let family = Family::default();
                registry.register($name, $help, family.clone());
                family
            }};
            ($name:literal, $help:literal, $unit:expr) => {{
                let family = Family::default();
                registry.register_with_unit($name, $help, $unit, family.clone());
                family
            }};
        }
        let joules = || Unit::Joules;
        Arc::new(Metrics {
            requests: family!("requests", "Requests to a gated actor, by how they ended: allowed, failed (ran and failed) or denied (refused before running)"),
            charged: family!("charged", "Energy charged to the actor's budget at run time: base cost plus what the meter measured", joules()),
            metered: family!("metered", "Energy the per-message meter measured, refused requests included", joules()),
            corrected: family!("corrected", "Physical accounting: energy charged after the fact (up) or credited back (down) so that the actor pays its share of the machine's counter", joules()),
            attributed: family!("attributed", "The actor's share of what the machine's energy counter measured", joules()),
            remaining: family!("budget_remaining", "Energy left in the actor's budget, as of its last request", joules()),
            capacity: family!("budget_capacity", "The actor's budget: its total, or its burst under a power cap", joules()),
            refill: family!("budget_refill", "The actor's power cap: the rate its budget refills at", Unit::Other("watts".into())),
            alerts: family!("alerts", "Budget alerts raised, by level"),
            counter_joules: family!("energy_counter", "What the machine's energy counter measured (RAPL where there is one; the source says)", joules()),
            unattributed: family!("energy_unattributed", "Energy the counter measured that no actor ran: idle, other processes, the runtime between handlers", joules()),
            sampler: family!("energy_sampler", "The attribution sampler's own share of the counter: what measuring costs", joules()),
            raft_term: family!("raft_term", "The node's Raft term"),
            raft_leader: family!("raft_leader", "The leader this node knows (0: none)"),
            raft_commit: family!("raft_commit_index", "The highest log index this node knows to be committed"),
            raft_applied: family!("raft_applied_index", "The highest log index this node has applied"),
            phi: family!("phi", "Phi-accrual suspicion of each peer, as this node's failure detector last computed it"),
            pool_workers: family!("worker_pool_workers", "Workers running in the node's pool"),
            pool_in_flight: family!("worker_pool_in_flight", "Jobs the node's pool has started and not finished"),
            registry,
        })
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The handles of one gate: per operation (in the order of `operations`) and for its budget.
    pub fn gate(&self, actor: &str, operations: &[&str]) -> GateMetrics {
        let actor_labels = Actor { actor: actor.to_owned() };
        let operations = operations
            .iter()
            .map(|operation| {
                let request = |outcome| Request { actor: actor.to_owned(), operation: (*operation).to_owned(), outcome };
                let labels = Operation { actor: actor.to_owned(), operation: (*operation).to_owned() };
                OperationMetrics {
                    allowed: handle(&self.requests, &request("allowed")),
                    failed: handle(&self.requests, &request("failed")),
                    denied: handle(&self.requests, &request("denied")),
                    charged: handle(&self.charged, &labels),
                    metered: handle(&self.metered, &labels),
                }
            })
            .collect();
        let correction = |direction| Correction { actor: actor.to_owned(), direction };
        GateMetrics {
            operations,
            remaining: handle(&self.remaining, &actor_labels),
            capacity: handle(&self.capacity, &actor_labels),
            refill: handle(&self.refill, &actor_labels),
            corrected_up: handle(&self.corrected, &correction("up")),
            corrected_down: handle(&self.corrected, &correction("down")),
            alerts: self.alerts.clone(),
            actor: actor.to_owned(),
        }
    }

    /// The gauges of node `node`'s consensus actor, failure detector and worker pool.
    pub fn node(&self, node: impl ToString) -> NodeMetrics {
        let node = node.to_string();
        let labels = Node { node: node.clone() };
        NodeMetrics {
            term: handle(&self.raft_term, &labels),
            leader: handle(&self.raft_leader, &labels),
            commit: handle(&self.raft_commit, &labels),
            applied: handle(&self.raft_applied, &labels),
            workers: handle(&self.pool_workers, &labels),
            in_flight: handle(&self.pool_in_flight, &labels),
            phi: self.phi.clone(),
            node,
        }
    }

    /// Adds one attribution report: each actor's share, the counter's total, the unattributed
    /// rest and the sampler's own cost.
    pub fn report(&self, report: &Report) {
        let counter = EnergyCounter {
            counter: report.counter.clone(),
            source: report.source.to_string(),
            accounting: report.accounting.to_string(),
        };
        self.counter_joules.get_or_create(&counter).inc_by(report.measured.get());
        self.unattributed.get_or_create(&counter).inc_by(report.unattributed.get());
        for (actor, line) in &report.lines {
            if actor == METER_ACCOUNT {
                self.sampler.get_or_create(&counter).inc_by(line.attributed.get());
            } else {
                self.attributed.get_or_create(&Actor { actor: actor.clone() }).inc_by(line.attributed.get());
            }
        }
    }
}

/// One operation's counters.
#[derive(Clone)]
pub struct OperationMetrics {
    /// Requests that ran and succeeded.
    pub allowed: Counter,
    /// Requests that ran and failed.
    pub failed: Counter,
    /// Requests refused before running.
    pub denied: Counter,
    /// Joules charged at run time.
    pub charged: Amount,
    /// Joules the meter measured.
    pub metered: Amount,
}

/// A gate's handles, looked up once.
pub struct GateMetrics {
    operations: Vec<OperationMetrics>,
    remaining: Level,
    capacity: Level,
    refill: Level,
    corrected_up: Amount,
    corrected_down: Amount,
    alerts: Family<Alert, Counter>,
    actor: String,
}

impl GateMetrics {
    /// The counters of operation `index` (in the order the gate was built with).
    pub fn operation(&self, index: usize) -> &OperationMetrics {
        &self.operations[index]
    }

    /// Sets the budget's gauges.
    pub fn budget(&self, budget: &energy::EnergyBudget) {
        self.remaining.set(budget.remaining().get());
        self.capacity.set(budget.total().get());
        self.refill.set(budget.refill_rate().map_or(0.0, |w| w.get()));
    }

    /// Adds a correction of physical accounting.
    pub fn corrected(&self, delta: f64) {
        if delta > 0.0 {
            self.corrected_up.inc_by(delta);
        } else {
            self.corrected_down.inc_by(-delta);
        }
    }

    /// Counts an alert.
    pub fn alert(&self, level: &str) {
        self.alerts.get_or_create(&Alert { actor: self.actor.clone(), level: level.to_owned() }).inc();
    }
}

/// One node's gauges.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Raft term.
    pub term: Gauge,
    /// The known leader, 0 for none.
    pub leader: Gauge,
    /// Commit index.
    pub commit: Gauge,
    /// Applied index.
    pub applied: Gauge,
    /// Workers running.
    pub workers: Gauge,
    /// Jobs in flight.
    pub in_flight: Gauge,
    phi: Family<Peer, Level>,
    node: String,
}

impl NodeMetrics {
    /// Sets the suspicion of `peer`.
    pub fn phi(&self, peer: impl ToString, phi: f64) {
        // Phi is infinite for a peer silent past all history, and the text format has no "inf".
        let phi = if phi.is_nan() { 0.0 } else { phi.min(f64::MAX) };
        self.phi.get_or_create(&Peer { node: self.node.clone(), peer: peer.to_string() }).set(phi);
    }

    /// `peer` is no longer watched (it left the cluster): its suspicion is no longer served.
    pub fn forget_peer(&self, peer: impl ToString) {
        self.phi.remove(&Peer { node: self.node.clone(), peer: peer.to_string() });
    }
}
