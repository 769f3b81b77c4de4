//! Configuration: budgets, base costs, grants and limits, with the tutorial's defaults.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use energy::{Joules, Thresholds, Watts};
use security::audit::AuditConfig;
use security::{CapSet, Capability};
use serde::{Deserialize, Serialize};

use crate::communication::CommunicationManager;
use crate::failure_detector::{FailureDetector, FailureKind};
use crate::leader_election::LeaderElection;
use crate::load_distributor::LoadDistributor;
use crate::node_manager::NodeManager;
use crate::recovery_manager::{RecoveryManager, Strategy};
use crate::resource_scaler::ResourceScaler;
use crate::state_replicator::StateReplicator;
use crate::worker_pool::WorkerPool;

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How handler runs are turned into joules.
    pub meter: MeterConfig,
    /// Sampling the machine's energy counter and sharing it among the actors.
    pub attribution: AttributionConfig,
    /// Request size limits.
    pub limits: Limits,
    /// Budget alert thresholds.
    pub alerts: Thresholds,
    /// The audit log.
    pub audit: AuditConfig,
    /// The node manager.
    pub node_manager: ActorConfig,
    /// The communication manager.
    pub communication_manager: ActorConfig,
    /// Raft's timing and log compaction, for every node's consensus actor.
    pub raft: RaftSettings,
    /// The leader election manager.
    pub leader_election: ActorConfig,
    /// The state replication manager.
    pub state_replicator: ActorConfig,
    /// Heartbeats and the phi-accrual detector's settings.
    pub failure_detection: DetectionSettings,
    /// The failure detector.
    pub failure_detector: ActorConfig,
    /// Which recovery strategy handles which kind of failure.
    pub recovery: RecoverySettings,
    /// The recovery manager.
    pub recovery_manager: ActorConfig,
    /// The load distributor.
    pub load_distributor: ActorConfig,
    /// The resource scaler.
    pub resource_scaler: ActorConfig,
    /// Each node's pool of worker actors (the application's work, and the budget that load
    /// distribution weighs).
    pub worker_pool: ActorConfig,
    /// How many workers a pool starts with and may grow to.
    pub workers: PoolSettings,
}

/// Heartbeats and phi-accrual detection. The defaults are Akka's cluster failure detector's: a
/// beat a second, and a silent node is declared failed about 4.5 s after its last beat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSettings {
    /// How often every node sends each peer a heartbeat, and checks each peer's phi.
    pub heartbeat_ms: u64,
    /// Phi at or above this means failed.
    pub threshold: f64,
    /// How many heartbeat intervals to remember per peer.
    pub max_sample_size: usize,
    /// A floor under the intervals' standard deviation.
    pub min_std_deviation_ms: u64,
    /// A pause this long on top of the mean interval is not suspicious.
    pub acceptable_heartbeat_pause_ms: u64,
    /// The interval assumed before any has been measured.
    pub first_heartbeat_estimate_ms: u64,
}

impl DetectionSettings {
    /// The same settings as the cluster core's detector configuration.
    pub fn phi(&self) -> cluster::phi::PhiConfig {
        cluster::phi::PhiConfig {
            threshold: self.threshold,
            max_sample_size: self.max_sample_size,
            min_std_deviation: Duration::from_millis(self.min_std_deviation_ms),
            acceptable_heartbeat_pause: Duration::from_millis(self.acceptable_heartbeat_pause_ms),
            first_heartbeat_estimate: Duration::from_millis(self.first_heartbeat_estimate_ms),
        }
    }
}

impl Default for DetectionSettings {
    fn default() -> Self {
        let akka = cluster::phi::PhiConfig::default();
        DetectionSettings {
            heartbeat_ms: 1000,
            threshold: akka.threshold,
            max_sample_size: akka.max_sample_size,
            min_std_deviation_ms: akka.min_std_deviation.as_millis() as u64,
            acceptable_heartbeat_pause_ms: akka.acceptable_heartbeat_pause.as_millis() as u64,
            first_heartbeat_estimate_ms: akka.first_heartbeat_estimate.as_millis() as u64,
        }
    }
}

/// Which strategy the recovery manager applies to each kind of failure. A kind left out has
/// no strategy, and its failures are answered `StrategyNotFound`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySettings {
    /// Failure kind to strategy.
    pub strategies: BTreeMap<FailureKind, Strategy>,
}

/// The size of each node's worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Workers a pool starts with.
    pub initial: usize,
    /// Workers a pool may grow to; scaling beyond it fails.
    pub max: usize,
}

/// Raft's timing and log compaction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// How often Raft's clock ticks; the timeouts below are rounded to whole ticks.
    pub tick_ms: u64,
    /// A follower that hears no leader for one to two of these campaigns (150 ms by default).
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats (50 ms by default).
    pub heartbeat_ms: u64,
    /// Snapshot the state and drop the log behind it every this many entries.
    pub snapshot_every: u64,
}

impl RaftSettings {
    /// The same settings as the cluster core's timing.
    pub fn timing(&self) -> cluster::Timing {
        cluster::Timing {
            tick: Duration::from_millis(self.tick_ms),
            election_timeout: Duration::from_millis(self.election_timeout_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
        }
    }
}

/// How the per-message meter prices a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
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

/// Size limits that validation applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest identifier (node, channel, subscriber), in bytes.
    pub max_id_bytes: usize,
    /// Largest message payload, in bytes.
    pub max_payload_bytes: usize,
}

/// One actor's budget, grants and costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorConfig {
    /// The initial (and, with a refill, the maximum) budget.
    pub budget_joules: Joules,
    /// Refill rate: with it the budget is a power cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_watts: Option<Watts>,
    /// Capabilities the actor holds, and so may exercise and delegate.
    pub grants: CapSet,
    /// Base cost of each operation.
    pub costs: BTreeMap<String, Joules>,
    /// Messages the actor's mailbox holds before senders wait (actix's default is 16).
    pub mailbox_capacity: usize,
    /// How long the actor waits for a peer's reply.
    pub reply_timeout_ms: u64,
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

fn joules(v: f64) -> Joules {
    Joules::new(v).expect("default costs are valid")
}

fn costs(table: &[(&str, f64)]) -> BTreeMap<String, Joules> {
    table.iter().map(|(name, cost)| (name.to_string(), joules(*cost))).collect()
}

impl Default for Config {
    fn default() -> Self {
        use Capability::*;
        Config {
            meter: MeterConfig {
                watts_per_core: Watts::new(12.5).expect("constant"),
                profile: None,
                cost_model: energy::CostModel::default(),
            },
            attribution: AttributionConfig::default(),
            limits: Limits { max_id_bytes: 128, max_payload_bytes: 64 << 10 },
            alerts: Thresholds::default(),
            audit: AuditConfig::new("ergon-audit"),
            node_manager: ActorConfig {
                budget_joules: joules(1000.0),
                refill_watts: None,
                grants: CapSet::of(&[NodeManagement, ConnectionManagement, BroadcastManagement, EnergyManagement]),
                costs: costs(NodeManager::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 1000,
            },
            communication_manager: ActorConfig {
                budget_joules: joules(1000.0),
                refill_watts: None,
                grants: CapSet::of(&[BroadcastManagement, EnergyManagement]),
                costs: costs(CommunicationManager::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 1000,
            },
            raft: RaftSettings { tick_ms: 10, election_timeout_ms: 150, heartbeat_ms: 50, snapshot_every: 1024 },
            leader_election: ActorConfig {
                budget_joules: joules(3000.0),
                refill_watts: None,
                grants: CapSet::of(&[ElectionManagement, VoteManagement, BroadcastManagement, EnergyManagement]),
                costs: costs(LeaderElection::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 2000,
            },
            state_replicator: ActorConfig {
                budget_joules: joules(4000.0),
                refill_watts: None,
                grants: CapSet::of(&[ReplicationManagement, StateManagement, ReplicaManagement, EnergyManagement]),
                costs: costs(StateReplicator::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 1000,
            },
            failure_detection: DetectionSettings::default(),
            failure_detector: ActorConfig {
                budget_joules: joules(5000.0),
                refill_watts: None,
                grants: CapSet::of(&[FailureDetection, FailureHandling, RecoveryManagement, NodeManagement, EnergyManagement]),
                costs: costs(FailureDetector::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 5000,
            },
            recovery: RecoverySettings { strategies: Strategy::DEFAULTS.iter().copied().collect() },
            recovery_manager: ActorConfig {
                budget_joules: joules(6000.0),
                refill_watts: None,
                grants: CapSet::of(&[
                    RecoveryManagement,
                    StrategyManagement,
                    FailureHandling,
                    ElectionManagement,
                    VoteManagement,
                    DistributionManagement,
                    EnergyManagement,
                ]),
                costs: costs(RecoveryManager::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 2000,
            },
            load_distributor: ActorConfig {
                budget_joules: joules(7000.0),
                refill_watts: None,
                grants: CapSet::of(&[DistributionManagement, NodeManagement, EnergyManagement]),
                costs: costs(LoadDistributor::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 1000,
            },
            resource_scaler: ActorConfig {
                budget_joules: joules(8000.0),
                refill_watts: None,
                grants: CapSet::of(&[ScalingManagement, ResourceManagement, EnergyManagement]),
                costs: costs(ResourceScaler::DEFAULT_COSTS),
                mailbox_capacity: 1024,
                reply_timeout_ms: 1000,
            },
            worker_pool: ActorConfig {
                budget_joules: joules(10000.0),
                refill_watts: None,
                grants: CapSet::of(&[
                    ResourceManagement,
                    ScalingManagement,
                    DistributionManagement,
                    RecoveryManagement,
                    FailureHandling,
                    EnergyManagement,
                ]),
                costs: costs(WorkerPool::DEFAULT_COSTS),
                mailbox_capacity: 4096,
                reply_timeout_ms: 5000,
            },
            workers: PoolSettings { initial: 2, max: 32 },
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
        let mut merged = toml::Table::try_from(Config::default()).expect("the defaults serialise");
        merge(&mut merged, overrides);
        let mut config: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if let Some(path) = &config.meter.profile {
            let profile = energy::calibration::Profile::load(path)
                .map_err(|e| ConfigError::Invalid(format!("meter.profile: {e}")))?;
            config.meter.cost_model = profile.cost_model;
        }
        config.check()?;
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
        let actors = [
            ("node_manager", &self.node_manager, NodeManager::DEFAULT_COSTS),
            ("communication_manager", &self.communication_manager, CommunicationManager::DEFAULT_COSTS),
            ("leader_election", &self.leader_election, LeaderElection::DEFAULT_COSTS),
            ("state_replicator", &self.state_replicator, StateReplicator::DEFAULT_COSTS),
            ("failure_detector", &self.failure_detector, FailureDetector::DEFAULT_COSTS),
            ("recovery_manager", &self.recovery_manager, RecoveryManager::DEFAULT_COSTS),
            ("load_distributor", &self.load_distributor, LoadDistributor::DEFAULT_COSTS),
            ("resource_scaler", &self.resource_scaler, ResourceScaler::DEFAULT_COSTS),
            ("worker_pool", &self.worker_pool, WorkerPool::DEFAULT_COSTS),
        ];
        for (name, actor, operations) in actors {
            if let Some(unknown) = actor.costs.keys().find(|k| !operations.iter().any(|(op, _)| op == k)) {
                let known: Vec<_> = operations.iter().map(|(op, _)| *op).collect();
                return Err(ConfigError::Invalid(format!(
                    "{name}.costs.{unknown}: no such operation; {name} has {}",
                    known.join(", ")
                )));
            }
            if actor.mailbox_capacity == 0 {
                return Err(ConfigError::Invalid(format!("{name}.mailbox_capacity must be at least 1")));
            }
        }
        let raft = &self.raft;
        if raft.tick_ms == 0 || raft.heartbeat_ms < raft.tick_ms || raft.election_timeout_ms <= raft.heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "raft: need 0 < tick_ms <= heartbeat_ms < election_timeout_ms, got {} / {} / {}",
                raft.tick_ms, raft.heartbeat_ms, raft.election_timeout_ms
            )));
        }
        let detection = &self.failure_detection;
        if detection.heartbeat_ms == 0 || !(detection.threshold.is_finite() && detection.threshold > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "failure_detection: need heartbeat_ms > 0 and a positive threshold, got {} ms and {}",
                detection.heartbeat_ms, detection.threshold
            )));
        }
        let workers = &self.workers;
        if workers.initial == 0 || workers.initial > workers.max {
            return Err(ConfigError::Invalid(format!(
                "workers: need 1 <= initial <= max, got initial {} and max {}",
                workers.initial, workers.max
            )));
        }
        Ok(())
    }
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

    #[test]
    fn defaults_are_the_tutorials() {
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
        assert_eq!(c.failure_detection.phi(), cluster::phi::PhiConfig::default(), "Akka's defaults");
        assert_eq!(c.recovery.strategies.len(), 4, "every failure kind has a strategy");
        // The names in logs are the names in the configuration file.
        for (kind, strategy) in &c.recovery.strategies {
            let toml = toml::Table::try_from(&c.recovery).unwrap().to_string();
            assert!(toml.contains(&format!("{} = \"{}\"", kind.name(), strategy.name())), "{toml}");
        }
    }

    #[test]
    fn strategies_and_detection_are_configurable() {
        let c = Config::from_toml("[recovery.strategies]\nunreachable = \"fail_over\"\n[failure_detection]\nheartbeat_ms = 100").unwrap();
        assert_eq!(c.recovery.strategies[&FailureKind::Unreachable], Strategy::FailOver);
        assert_eq!(c.recovery.strategies[&FailureKind::Rejoined], Strategy::CatchUp);
        assert_eq!(c.failure_detection.heartbeat_ms, 100);
        let err = Config::from_toml("[recovery.strategies]\nunreachable = \"pray\"").unwrap_err().to_string();
        assert!(err.contains("pray"), "{err}");
        let err = Config::from_toml("[workers]\ninitial = 0").unwrap_err().to_string();
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
        let err = Config::from_toml("[alerts]\nwarning = 0.99").unwrap_err().to_string();
        assert!(err.contains("warning < critical"), "{err}");
        let err = Config::from_toml("[node_manager]\ngrants = [\"Root\"]").unwrap_err().to_string();
        assert!(err.contains("Root"), "{err}");
        assert!(Config::from_toml("this is = = not toml").is_err());
        let err = Config::from_toml("[raft]\nheartbeat_ms = 500").unwrap_err().to_string();
        assert!(err.contains("heartbeat_ms < election_timeout_ms"), "{err}");
    }
}
