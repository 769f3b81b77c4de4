//! Configuration: budgets, base costs, grants and limits, over the defaults each actor declares
//! (the reference defaults of the README: 10 J a join, 1000 J for the node manager, and so on).
//!
//! A TOML file overrides only what it names; everything else keeps its default:
//!
//! ```toml
//! [node_manager]
//! budget_joules = 2000.0
//! refill_watts = 5.0
//! costs = { join = 12.0 }
//!
//! [audit]
//! dir = "/var/log/ergon"
//! durability = { interval_ms = 50 }
//! ```

use std::path::{Path, PathBuf};

use energy::{Accounting, Thresholds, Watts};
use security::audit::AuditConfig;
use serde::{Deserialize, Serialize};

pub use crate::gate::{ActorConfig, Limits};
use crate::gate::GatedActor;
use crate::managers::communication::CommunicationManager;
use crate::managers::failure_detector::{DetectionSettings, FailureDetector};
use crate::managers::leader_election::LeaderElection;
use crate::managers::load_distributor::{DistributorSettings, LoadDistributor};
use crate::managers::node_manager::{MembershipSettings, NodeManager};
use crate::managers::recovery_manager::{RecoveryManager, RecoverySettings};
use crate::managers::resource_scaler::ResourceScaler;
use crate::managers::state_replicator::StateReplicator;
use crate::managers::worker_pool::{PoolSettings, WorkerPool};
use crate::node::consensus::RaftSettings;

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What a joule charged means, and how handler runs are turned into joules.
    pub energy: EnergyConfig,
    /// Sampling the machine's energy counter and sharing it among the actors.
    pub attribution: AttributionConfig,
    /// Prometheus metrics at `/metrics`.
    pub metrics: MetricsConfig,
    /// Request size limits.
    pub limits: Limits,
    /// Budget alert thresholds.
    pub alerts: Thresholds,
    /// The audit log.
    pub audit: AuditConfig,
    /// Raft's timing and log compaction, for every node's consensus actor.
    pub raft: RaftSettings,
    /// The node manager.
    pub node_manager: ActorConfig<MembershipSettings>,
    /// The communication manager.
    pub communication_manager: ActorConfig,
    /// The leader election manager.
    pub leader_election: ActorConfig,
    /// The state replication manager.
    pub state_replicator: ActorConfig,
    /// The failure detector, with its heartbeats and phi-accrual settings.
    pub failure_detector: ActorConfig<DetectionSettings>,
    /// The recovery manager, with which strategy handles which kind of failure.
    pub recovery_manager: ActorConfig<RecoverySettings>,
    /// The load distributor.
    pub load_distributor: ActorConfig<DistributorSettings>,
    /// The resource scaler.
    pub resource_scaler: ActorConfig,
    /// Each node's pool of worker actors (the application's work, and the budget that load
    /// distribution weighs), with how many workers it starts with and may grow to.
    pub worker_pool: ActorConfig<PoolSettings>,
}

/// What a charged joule means ([`Accounting`]), and how the per-message meter prices a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyConfig {
    /// `tutorial` (the default: the declared base costs of the reference design, 10 J a join)
    /// or `physical` (base costs are the gate's fixed cost, measured at start-up, and with
    /// `[attribution]` on, budgets pay their share of the machine's counter).
    pub accounting: Accounting,
    /// Power charged per second of handler running time, where operations are not counted. The
    /// default, 12.5 W, is a server package's TDP shared among its cores (for example 200 W over
    /// 16 cores).
    pub watts_per_core: Watts,
    /// A calibration profile written by `ergon energy calibrate`, whose cost model prices
    /// operation counts (relative to the working directory). Without one, the documented default
    /// model does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
    /// The cost model: the profile's, once the configuration is loaded, else the default.
    #[serde(skip)]
    pub cost_model: energy::CostModel,
}

/// Whether and how the machine's energy counter is sampled and shared among the actors (see
/// [`energy::attribution`]). Off by default: it starts a thread and probes the machine's counters
/// with a short CPU load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// Probe the counters, sample the best one and write each actor's share to the audit log.
    pub enabled: bool,
    /// Milliseconds between two readings of the counter.
    pub sample_every_ms: u64,
    /// Milliseconds between two sets of attribution entries in the audit log.
    pub report_every_ms: u64,
    /// Milliseconds of CPU load between the probe's two readings.
    pub probe_load_ms: u64,
    /// The powercap sysfs tree.
    pub powercap_root: std::path::PathBuf,
    /// Where the perf PMUs are listed.
    pub pmu_root: std::path::PathBuf,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            enabled: false,
            sample_every_ms: 10,
            report_every_ms: 1000,
            probe_load_ms: 20,
            powercap_root: energy::counters::powercap::DEFAULT_ROOT.into(),
            pmu_root: energy::counters::perf::DEFAULT_PMU_ROOT.into(),
        }
    }
}

/// Where the process serves Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The address of `http://ADDRESS/metrics` (`127.0.0.1:9464`; port 0 picks one). Without
    /// it, no metrics are kept or served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Why a configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("configuration: {0}")]
    Parse(String),
    /// The values are inconsistent.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            energy: EnergyConfig {
                accounting: Accounting::Tutorial,
                watts_per_core: Watts::new(12.5).expect("constant"),
                profile: None,
                cost_model: energy::CostModel::default(),
            },
            attribution: AttributionConfig::default(),
            metrics: MetricsConfig::default(),
            limits: Limits::default(),
            alerts: Thresholds::default(),
            audit: AuditConfig::new("ergon-audit"),
            raft: RaftSettings::default(),
            node_manager: NodeManager::default_config(),
            communication_manager: CommunicationManager::default_config(),
            leader_election: LeaderElection::default_config(),
            state_replicator: StateReplicator::default_config(),
            failure_detector: FailureDetector::default_config(),
            recovery_manager: RecoveryManager::default_config(),
            load_distributor: LoadDistributor::default_config(),
            resource_scaler: ResourceScaler::default_config(),
            worker_pool: WorkerPool::default_config(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Config::from_toml(&text)
    }

    /// Parses TOML over the defaults and checks the result.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let overrides: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some((old, new)) = MOVED.iter().find(|(old, _)| overrides.contains_key(*old)) {
            return Err(ConfigError::Parse(format!("[{old}] is now part of [{new}]: move its keys there")));
        }
        let mut merged = toml::Table::try_from(Config::default()).expect("the defaults serialise");
        merge(&mut merged, overrides.clone());
        let mut config: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if let Some(path) = &config.energy.profile {
            let profile = energy::calibration::Profile::load(path)
                .map_err(|e| ConfigError::Invalid(format!("energy.profile: {e}")))?;
            config.energy.cost_model = profile.cost_model;
        }
        if config.energy.accounting == Accounting::Physical {
            if let Some(section) = overrides.iter().find_map(|(name, t)| t.as_table()?.contains_key("costs").then_some(name)) {
                return Err(ConfigError::Invalid(format!(
                    "{section}.costs: physical accounting measures each operation's fixed cost (the gate's, at start-up); \
                     declared costs are the tutorial accounting's"
                )));
            }
        }
        config.check()?;
        let known = toml::Table::try_from(&config).expect("a configuration serialises");
        if let Some(key) = unknown_key(&overrides, &known, "") {
            return Err(ConfigError::Parse(format!("{key}: no such setting")));
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if let Some(problem) = self.alerts.problem() {
            return Err(ConfigError::Invalid(problem));
        }
        let sampling = &self.attribution;
        if sampling.sample_every_ms == 0 || sampling.report_every_ms < sampling.sample_every_ms {
            return Err(ConfigError::Invalid(format!(
                "attribution: sample_every_ms ({}) must be at least 1 and at most report_every_ms ({})",
                sampling.sample_every_ms, sampling.report_every_ms
            )));
        }
        check_actor::<NodeManager>("node_manager", &self.node_manager)?;
        check_actor::<CommunicationManager>("communication_manager", &self.communication_manager)?;
        check_actor::<LeaderElection>("leader_election", &self.leader_election)?;
        check_actor::<StateReplicator>("state_replicator", &self.state_replicator)?;
        check_actor::<FailureDetector>("failure_detector", &self.failure_detector)?;
        check_actor::<RecoveryManager>("recovery_manager", &self.recovery_manager)?;
        check_actor::<LoadDistributor>("load_distributor", &self.load_distributor)?;
        check_actor::<ResourceScaler>("resource_scaler", &self.resource_scaler)?;
        check_actor::<WorkerPool>("worker_pool", &self.worker_pool)?;
        let problems = [
            self.raft.problem().map(|p| format!("raft: {p}")),
            self.failure_detector.settings.problem().map(|p| format!("failure_detector: {p}")),
            self.worker_pool.settings.problem().map(|p| format!("worker_pool: {p}")),
        ];
        match problems.into_iter().flatten().next() {
            Some(problem) => Err(ConfigError::Invalid(problem)),
            None => Ok(()),
        }
    }
}

/// Sections that became part of another, and where they went.
const MOVED: [(&str, &str); 4] = [
    ("failure_detection", "failure_detector"),
    ("recovery", "recovery_manager"),
    ("workers", "worker_pool"),
    ("meter", "energy"),
];

/// Checks an actor's section against what the actor declared.
fn check_actor<A: GatedActor>(section: &str, config: &ActorConfig<A::Settings>) -> Result<(), ConfigError> {
    if let Some(unknown) = config.costs.keys().find(|k| !A::OPERATIONS.iter().any(|op| op.name == k.as_str())) {
        let known: Vec<_> = A::OPERATIONS.iter().map(|op| op.name).collect();
        return Err(ConfigError::Invalid(format!(
            "{section}.costs.{unknown}: no such operation; {section} has {}",
            known.join(", ")
        )));
    }
    if config.mailbox_capacity == 0 {
        return Err(ConfigError::Invalid(format!("{section}.mailbox_capacity must be at least 1")));
    }
    Ok(())
}

/// The first key of `given` (a file's tables) that `known` (the configuration it produced,
/// serialised) does not have: a misspelt setting. Sections that flatten an actor's own settings
/// into its budget cannot have serde refuse unknown keys, so this does, for every section alike.
fn unknown_key(given: &toml::Table, known: &toml::Table, path: &str) -> Option<String> {
    given.iter().find_map(|(key, value)| {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match (known.get(key), value) {
            (None, _) => Some(here),
            (Some(toml::Value::Table(known)), toml::Value::Table(given)) => unknown_key(given, known, &here),
            _ => None,
        }
    })
}

/// Overlays `overrides` on `base`, table by table.
fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over)) => merge(inner, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managers::failure_detector::FailureKind;
    use crate::managers::recovery_manager::Strategy;

    #[test]
    fn defaults_are_the_reference_designs() {
        let c = Config::default();
        assert_eq!(c.node_manager.budget_joules.get(), 1000.0);
        assert_eq!(c.node_manager.costs["join"].get(), 10.0);
        assert_eq!(c.communication_manager.budget_joules.get(), 1000.0);
        assert_eq!(c.communication_manager.costs["broadcast"].get(), 5.0);
        assert_eq!((c.alerts.warning, c.alerts.critical), (0.8, 0.95));
        assert_eq!((c.leader_election.budget_joules.get(), c.leader_election.costs["election"].get()), (3000.0, 20.0));
        assert_eq!((c.state_replicator.budget_joules.get(), c.state_replicator.costs["replicate"].get()), (4000.0, 25.0));
        assert_eq!((c.raft.election_timeout_ms, c.raft.heartbeat_ms), (150, 50));
        assert_eq!((c.failure_detector.budget_joules.get(), c.failure_detector.costs["check"].get()), (5000.0, 15.0));
        assert_eq!((c.recovery_manager.budget_joules.get(), c.recovery_manager.costs["recover"].get()), (6000.0, 35.0));
        assert_eq!((c.load_distributor.budget_joules.get(), c.load_distributor.costs["distribute"].get()), (7000.0, 40.0));
        assert_eq!((c.resource_scaler.budget_joules.get(), c.resource_scaler.costs["scale"].get()), (8000.0, 45.0));
        assert_eq!(c.failure_detector.settings.phi(), cluster::phi::PhiConfig::default(), "Akka's defaults");
        assert_eq!(c.recovery_manager.settings.strategies.len(), 4, "every failure kind has a strategy");
        // The names in logs are the names in the configuration file.
        for (kind, strategy) in &c.recovery_manager.settings.strategies {
            let toml = toml::Table::try_from(&c.recovery_manager.settings).unwrap().to_string();
            assert!(toml.contains(&format!("{} = \"{}\"", kind.name(), strategy.name())), "{toml}");
        }
    }

    #[test]
    fn strategies_and_detection_are_configurable() {
        let c = Config::from_toml("[recovery_manager.strategies]\nunreachable = \"fail_over\"\n[failure_detector]\nheartbeat_ms = 100").unwrap();
        assert_eq!(c.recovery_manager.settings.strategies[&FailureKind::Unreachable], Strategy::FailOver);
        assert_eq!(c.recovery_manager.settings.strategies[&FailureKind::Rejoined], Strategy::CatchUp);
        assert_eq!(c.failure_detector.settings.heartbeat_ms, 100);
        let err = Config::from_toml("[recovery_manager.strategies]\nunreachable = \"pray\"").unwrap_err().to_string();
        assert!(err.contains("pray"), "{err}");
        let err = Config::from_toml("[worker_pool]\ninitial = 0").unwrap_err().to_string();
        assert!(err.contains("1 <= initial <= max"), "{err}");
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let c = Config::from_toml("[node_manager]\nbudget_joules = 50.0\ncosts = { join = 2.5 }\n").unwrap();
        assert_eq!(c.node_manager.budget_joules.get(), 50.0);
        assert_eq!(c.node_manager.costs["join"].get(), 2.5);
        assert_eq!(c.node_manager.costs["leave"], Config::default().node_manager.costs["leave"]);
        assert_eq!(c.communication_manager, Config::default().communication_manager);
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn mistakes_are_named() {
        let err = Config::from_toml("[node_manager]\ncosts = { joinn = 1.0 }").unwrap_err().to_string();
        assert!(err.contains("node_manager.costs.joinn: no such operation"), "{err}");
        let err = Config::from_toml("[node_manager]\nbudget_joules = -5.0").unwrap_err().to_string();
        assert!(err.contains("cannot be negative"), "{err}");
        let err = Config::from_toml("[node_managr]\nbudget_joules = 5.0").unwrap_err().to_string();
        assert!(err.contains("node_managr"), "{err}");
        let err = Config::from_toml("[failure_detector]\nheartbeat_msec = 5").unwrap_err().to_string();
        assert!(err.contains("failure_detector.heartbeat_msec: no such setting"), "{err}");
        let err = Config::from_toml("[failure_detection]\nheartbeat_ms = 5").unwrap_err().to_string();
        assert!(err.contains("[failure_detection] is now part of [failure_detector]"), "{err}");
        let err = Config::from_toml("[node_manager]\nbudget = 5.0").unwrap_err().to_string();
        assert!(err.contains("node_manager.budget: no such setting"), "{err}");
        let err = Config::from_toml("[alerts]\nwarning = 0.99").unwrap_err().to_string();
        assert!(err.contains("warning < critical"), "{err}");
        let err = Config::from_toml("[node_manager]\ngrants = [\"Root\"]").unwrap_err().to_string();
        assert!(err.contains("Root"), "{err}");
        assert!(Config::from_toml("this is = = not toml").is_err());
        let err = Config::from_toml("[meter]\nwatts_per_core = 5.0").unwrap_err().to_string();
        assert!(err.contains("[meter] is now part of [energy]"), "{err}");
        let err = Config::from_toml("[energy]\naccounting = \"real\"").unwrap_err().to_string();
        assert!(err.contains("real") && err.contains("physical"), "{err}");
        let err = Config::from_toml("[energy]\naccounting = \"physical\"\n[node_manager]\ncosts = { join = 1.0 }").unwrap_err().to_string();
        assert!(err.contains("node_manager.costs: physical accounting measures"), "{err}");
        let err = Config::from_toml("[raft]\nheartbeat_ms = 500").unwrap_err().to_string();
        assert!(err.contains("heartbeat_ms < election_timeout_ms"), "{err}");
    }
}
