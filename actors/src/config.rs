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
use crate::leader_election::LeaderElection;
use crate::node_manager::NodeManager;
use crate::state_replicator::StateReplicator;

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How handler runs are turned into joules.
    pub meter: MeterConfig,
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

/// The time meter's setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Power charged per second of handler running time. The default, 12.5 W, is a server
    /// package's TDP shared among its cores (for example 200 W over 16 cores).
    pub watts_per_core: Watts,
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
            meter: MeterConfig { watts_per_core: Watts::new(12.5).expect("constant") },
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
        let config: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if let Some(problem) = self.alerts.problem() {
            return Err(ConfigError::Invalid(problem));
        }
        let actors = [
            ("node_manager", &self.node_manager, NodeManager::DEFAULT_COSTS),
            ("communication_manager", &self.communication_manager, CommunicationManager::DEFAULT_COSTS),
            ("leader_election", &self.leader_election, LeaderElection::DEFAULT_COSTS),
            ("state_replicator", &self.state_replicator, StateReplicator::DEFAULT_COSTS),
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
