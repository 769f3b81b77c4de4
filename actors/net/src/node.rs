//! One node process: its configuration, its data directory, and its actors on a
//! [`TcpTransport`].
//!
//! A node's configuration file has a `[node]` section (who it is, where it listens, its members,
//! its TLS files and who may call it), an optional `[network]` section ([`NetSettings`]), and any
//! of ergon's own sections ([`actors::Config`]: `[raft]`, `[audit]`, the managers). Relative paths
//! are relative to the file's directory; the audit log is `<data_dir>/audit` unless `[audit]`
//! says otherwise.
//!
//! ```toml
//! [node]
//! id = 1
//! cluster = "demo"
//! listen = "127.0.0.1:7001"
//! data_dir = "n1"
//! members = [
//!     { id = 1, address = "127.0.0.1:7001" },
//!     { id = 2, address = "127.0.0.2:7001" },
//!     { id = 3, address = "127.0.0.3:7001" },
//! ]
//! tls = { ca = "certs/ca.pem", cert = "certs/n1.pem", key = "certs/n1.key" }
//! callers = [
//!     { principal = "user:operator", capabilities = ["StateManagement", "ReplicationManagement"] },
//! ]
//! ```
//!
//! A node that joins a running cluster lists only itself in `members` and is started with a
//! [`Joining`]: it starts with no configuration of its own, asks the seed for the cluster's
//! members, and asks the leader's node manager to admit it ([`Node::join`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actors::metrics::MetricsServer;
use actors::node::assembly::ClusterNode;
use actors::node::consensus::{Consensus, Inspect};
use actors::transport::Transport;
use actors::security::audit::{AuditLog, AuditSink};
use actors::security::identity::{node_name, ClusterName, Identity, IdentityError, TlsFiles};
use actors::security::{CapSet, Credential, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment};
use cluster::{Member as RaftMember, Membership, NodeId};
use serde::{Deserialize, Serialize};

use crate::calls::{RaftJoin, RaftView};
use crate::client::{Client, ClientError, Credentials};
use crate::service::{Service, Tokens};
use actors::security::token::TokenKey;
use crate::tcp::{Member, NetError, NetSettings, Security, TcpConfig, TcpTransport};

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id.
    pub id: NodeId,
    /// The cluster's name (a DNS label: it is part of every certificate name).
    pub cluster: String,
    /// Where it listens for members and callers.
    pub listen: SocketAddr,
    /// Its Raft store and, by default, its audit log.
    pub data_dir: PathBuf,
    /// Every member, this node included.
    pub members: Vec<Member>,
    /// Its certificate, key and the cluster's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Run without TLS (loopback development only): required when `tls` is absent.
    #[serde(default)]
    pub insecure: bool,
    /// Who may call this node's operations, and with what.
    #[serde(default)]
    pub callers: Vec<CallerGrant>,
    /// Accept capability tokens signed by the cluster's token key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenSettings>,
}

/// How a node checks capability tokens (see [`actors::security::token`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The token key's public half (`ergon token keygen` writes it as `token.pub`).
    pub key: PathBuf,
    /// Revocation ids (hex, as `ergon token inspect` prints them) of tokens no longer accepted.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// What one principal may do when it calls this node with a certificate naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerGrant {
    /// The principal (`user:operator`).
    pub principal: String,
    /// What it is granted.
    pub capabilities: CapSet,
    /// Where it may act; everywhere (`*`) by default.
    #[serde(default = "everywhere")]
    pub scope: String,
}

fn everywhere() -> String {
    Scope::root().as_str().to_owned()
}

/// A node's whole configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Who it is and whom it talks to.
    pub node: NodeSection,
    /// The network's limits and timing.
    pub network: NetSettings,
    /// ergon's own configuration.
    pub ergon: Config,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unreadable or wrong.
    #[error("{path}: {problem}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The node's certificate does not prove it, or its files are unusable.
    #[error("node identity: {0}")]
    Identity(#[from] IdentityError),
    /// The data directory belongs to another node, or cannot be used.
    #[error("data directory {path}: {problem}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The Raft store would not open.
    #[error("Raft store: {0}")]
    Store(#[from] cluster::ReplicaError),
    /// The token key could not be read.
    #[error("tokens: {0}")]
    Token(#[from] actors::security::token::TokenError),
    /// The audit log would not open.
    #[error("audit log: {0}")]
    Audit(#[from] actors::security::audit::AuditError),
    /// The network would not start (a port in use, most often).
    #[error("{0}")]
    Net(#[from] NetError),
    /// `/metrics` could not be served.
    #[error("{0}")]
    Metrics(#[from] actors::metrics::MetricsError),
    /// The node could not join the cluster.
    #[error("joining the cluster: {0}")]
    Join(String),
}

/// How a new node joins a running cluster.
#[derive(Clone)]
pub struct Joining {
    /// A member to ask first (any member: it names the leader).
    pub seed: Member,
    /// A voter this node replaces (removed when this node becomes a voter).
    pub replaces: Option<NodeId>,
    /// What this node proves itself with when it calls the members: its own certificate, or a
    /// token allowing `NodeManagement` and `ElectionManagement`.
    pub credentials: Credentials,
}

impl NodeConfig {
    /// Reads a node's configuration file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let problem = |problem: String| NodeError::Config { path: path.to_owned(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(problem)
    }

    /// Parses a node's configuration, resolving relative paths against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let node = table.remove("node").ok_or("no [node] section: a node needs at least its id, cluster, listen, data_dir and members")?;
        let mut node: NodeSection = node.try_into().map_err(|e: toml::de::Error| format!("[node]: {}", e.message()))?;
        let network: NetSettings = match table.remove("network") {
            Some(network) => network.try_into().map_err(|e: toml::de::Error| format!("[network]: {}", e.message()))?,
            None => NetSettings::default(),
        };
        let audit_given = table.get("audit").and_then(|a| a.get("dir")).is_some();
        let mut ergon = Config::from_toml(&toml::to_string(&table).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;

        let resolve = |p: &Path| if p.is_absolute() { p.to_owned() } else { base.join(p) };
        node.data_dir = resolve(&node.data_dir);
        if let Some(tls) = &mut node.tls {
            *tls = TlsFiles { ca: resolve(&tls.ca), cert: resolve(&tls.cert), key: resolve(&tls.key) };
        }
        if let Some(tokens) = &mut node.tokens {
            tokens.key = resolve(&tokens.key);
        }
        ergon.audit.dir = if audit_given { resolve(&ergon.audit.dir) } else { node.data_dir.join("audit") };

        ClusterName::new(&node.cluster).map_err(|e| format!("[node] cluster: {e}"))?;
        if !node.members.iter().any(|m| m.id == node.id) {
            return Err(format!("[node] members does not list this node ({})", node.id));
        }
        let mut ids: Vec<_> = node.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.contains(&0) {
            return Err("[node] members: each id must be unique and at least 1".into());
        }
        match (&node.tls, node.insecure) {
            (None, false) => return Err("[node] has no tls files; set tls = { ca, cert, key }, or insecure = true for loopback development".into()),
            (Some(_), true) => return Err("[node] sets both tls and insecure = true; choose one".into()),
            _ => {}
        }
        for caller in &node.callers {
            caller.principal.parse::<Principal>().map_err(|e| format!("[node] callers: {e}"))?;
            Scope::new(&caller.scope).map_err(|e| format!("[node] callers: {} scope: {e}", caller.principal))?;
        }
        if let Some(problem) = network.problem() {
            return Err(format!("[network]: {problem}"));
        }
        Ok(NodeConfig { node, network, ergon })
    }
}

/// What the data directory records about whose it is.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Owner {
    cluster: String,
    id: NodeId,
}

/// Makes sure `dir` is this node's: records the owner on first use, refuses another's.
fn claim(dir: &Path, owner: &Owner) -> Result<(), NodeError> {
    let problem = |problem: String| NodeError::DataDir { path: dir.to_owned(), problem };
    std::fs::create_dir_all(dir).map_err(|e| problem(e.to_string()))?;
    let file = dir.join("node.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let found: Owner = toml::from_str(&text).map_err(|e| problem(format!("node.toml: {}", e.message())))?;
            if &found != owner {
                return Err(problem(format!(
                    "belongs to node {} of cluster {:?}, not node {} of cluster {:?}",
                    found.id, found.cluster, owner.id, owner.cluster
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = toml::to_string(owner).expect("an owner serialises");
            std::fs::write(&file, text).map_err(|e| problem(format!("node.toml: {e}")))
        }
        Err(e) => Err(problem(format!("node.toml: {e}"))),
    }
}

/// A running node: its actors, its transport, its audit log, and the callers it knows.
pub struct Node {
    id: NodeId,
    env: Environment,
    actors: ClusterNode,
    transport: Arc<TcpTransport>,
    audit: Arc<AuditLog>,
    callers: Vec<Credential>,
    cluster: ClusterName,
    metrics: Option<MetricsServer>,
}

impl Node {
    /// Starts the node described by `config`, one of the cluster's founders: a new data directory
    /// starts a cluster of its `members`. Must run inside an actix system.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Self::launch(config, false)
    }

    /// Starts the node described by `config` as one that will join a running cluster
    /// ([`Node::join`]): a new data directory has no configuration until the leader sends it one.
    /// Must run inside an actix system.
    pub fn start_to_join(config: NodeConfig) -> Result<Node, NodeError> {
        Self::launch(config, true)
    }

    fn launch(config: NodeConfig, joining: bool) -> Result<Node, NodeError> {
        let NodeConfig { node, network, ergon } = config;
        let cluster = ClusterName::new(&node.cluster)?;
        let security = match &node.tls {
            Some(files) => Security::Tls(Identity::load(files, &node_name(&cluster, node.id))?),
            None => Security::Insecure,
        };
        let tokens = match &node.tokens {
            Some(t) => Some(Tokens { key: TokenKey::load(&t.key)?, revoked: t.revoked.clone() }),
            None => None,
        };
        claim(&node.data_dir, &Owner { cluster: node.cluster.clone(), id: node.id })?;
        let (audit, _) = AuditLog::open(ergon.audit.clone())?;
        let audit = Arc::new(audit);
        let grants = Arc::new(GrantTable::new());
        let member_grants = ergon.load_distributor.grants;
        let env = Environment::new(ergon, grants.clone(), audit.clone() as Arc<dyn AuditSink>);
        let metrics = env.serve_metrics()?;
        let founders: BTreeMap<NodeId, RaftMember> = match joining {
            true => BTreeMap::new(),
            false => node.members.iter().map(|m| (m.id, RaftMember { address: m.address.to_string(), replaces: None })).collect(),
        };
        let voters: Vec<NodeId> = founders.keys().copied().collect();
        let replica = Consensus::open(&env, node.id, &founders, &node.data_dir.join("raft"))?;
        let transport = Arc::new(TcpTransport::start(TcpConfig {
            cluster: cluster.clone(),
            me: node.id,
            incarnation: replica.incarnation(),
            listen: node.listen,
            peers: node.members.clone(),
            security,
            settings: network,
            grants: grants.clone(),
            member_grants,
        })?);
        let consensus = Consensus::run(&env, replica, transport.clone());
        let actors = ClusterNode::start(&env, node.id, &voters, consensus, transport.clone());
        transport.attach(actors.inbox());
        let callers = node
            .callers
            .iter()
            .map(|c| {
                let principal = c.principal.parse().expect("checked when loaded");
                grants.grant(principal, c.capabilities, Scope::new(&c.scope).expect("checked when loaded"), Origin::Configured)
            })
            .collect::<Vec<_>>();
        transport.serve_callers(Arc::new(Service::new(actors.clone(), grants, callers.clone(), tokens)));
        Ok(Node { id: node.id, env, actors, transport, audit, callers, cluster, metrics })
    }

    /// Joins the cluster: asks `joining.seed` who the members and the leader are, reaches them,
    /// and asks the leader's node manager to admit this node; answers the voters once this node
    /// is one of them. A node that is already a member answers at once. A seed that is not the
    /// leader names it, and the leader is asked instead; the whole is bounded by the node
    /// manager's `membership_timeout_ms`.
    pub async fn join(&self, joining: &Joining) -> Result<Vec<NodeId>, NodeError> {
        let me = self.id;
        if let Ok(view) = self.actors.consensus.send(Inspect).await {
            if view.voters.contains(&me) {
                return Ok(view.voters);
            }
        }
        let config = self.env.config();
        let limit = std::time::Duration::from_millis(config.node_manager.settings.membership_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        let energy = config.worker_pool.budget_joules.get();
        let mut target = joining.seed;
        let mut last = String::from("no attempt finished");
        while tokio::time::Instant::now() < deadline {
            match self.ask_to_join(&target, joining, energy).await {
                Ok(Step::Joined(voters)) => return Ok(voters),
                Ok(Step::AskLeader(leader)) => {
                    tracing::info!(node = me, leader = leader.id, address = %leader.address, "joining: asking the leader");
                    target = leader;
                    continue;
                }
                Ok(Step::Wait(why)) => last = why,
                // Refusals of the request itself (permissions, a duplicate id, a change under
                // way) will not change by asking again.
                Err(ClientError::Failed(f)) if !matches!(f.code.as_str(), "NotLeader" | "Unavailable" | "MembershipChangeFailed") => {
                    return Err(NodeError::Join(format!("node {} refused: {f}", target.id)));
                }
                Err(e) => last = format!("node {}: {e}", target.id),
            }
            tracing::info!(node = me, "joining: {last}; asking again");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            target = joining.seed;
        }
        Err(NodeError::Join(format!("not a voter within {limit:?}: {last}")))
    }

    async fn ask_to_join(&self, target: &Member, joining: &Joining, energy: f64) -> Result<Step, ClientError> {
        let client = Client::connect(target.address, target.id, &joining.credentials).await?;
        let view = client.raft_status().await?;
        // Reach every member now: the leader must be able to send this node its snapshot.
        self.transport.follow(self.id, &membership_of(&view));
        if view.voters.contains(&self.id) && view.outgoing.is_empty() {
            return Ok(Step::Joined(view.voters));
        }
        // An earlier request made this node a learner (its answer was lost, or came too late):
        // the leader promotes it once it has caught up.
        if view.learners.contains(&self.id) || view.outgoing.contains(&self.id) || view.voters.contains(&self.id) {
            return Ok(Step::Wait("this node is joining; waiting to be promoted".into()));
        }
        match view.leader {
            None => return Ok(Step::Wait(format!("node {} knows no leader", target.id))),
            Some(leader) if leader != target.id => {
                return match view.address(leader).and_then(|a| a.parse().ok()) {
                    Some(address) => Ok(Step::AskLeader(Member { id: leader, address })),
                    None => Ok(Step::Wait(format!("node {} does not know where leader {leader} is", target.id))),
                };
            }
            Some(_) => {}
        }
        let raft = RaftJoin { address: self.address().to_string(), replaces: joining.replaces };
        let (_, confirmed_by) = client.join(&self.id.to_string(), "voter", energy, CapSet::EMPTY, actors::managers::node_manager::SCOPE, Some(raft)).await?;
        // The leader answers with the voters of the configuration this node joined ("node 1", ...).
        let voters = confirmed_by.iter().filter_map(|v| v.strip_prefix("node ")?.parse().ok()).collect();
        Ok(Step::Joined(voters))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its cluster.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Its actors.
    pub fn actors(&self) -> &ClusterNode {
        &self.actors
    }

    /// Where it serves `/metrics`, if it does.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::address)
    }

    /// Its transport.
    pub fn transport(&self) -> &Arc<TcpTransport> {
        &self.transport
    }

    /// What its actors share.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The credential of a configured caller.
    pub fn caller(&self, principal: &Principal) -> Option<&Credential> {
        self.callers.iter().find(|c| c.principal() == principal)
    }

    /// Stops the node: its actors stop, its connections close, its audit log is flushed and
    /// synced. The Raft store closes when the consensus actor drops it.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.metrics.take();
        self.transport.shutdown();
        self.actors.stop().await;
        self.audit.flush()?;
        Ok(())
    }
}

/// What one request to join came to.
enum Step {
    Joined(Vec<NodeId>),
    AskLeader(Member),
    Wait(String),
}

/// The membership a node's Raft view describes.
fn membership_of(view: &RaftView) -> Membership {
    Membership {
        voters: view.voters.iter().copied().collect(),
        outgoing: view.outgoing.iter().copied().collect(),
        learners: view.learners.iter().copied().collect(),
        members: view.addresses.iter().map(|(id, a)| (*id, RaftMember { address: a.clone(), replaces: None })).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_cluster_configurations_are_valid() {
        for (id, text) in [
            (1, include_str!("../../../examples/cluster/n1.toml")),
            (2, include_str!("../../../examples/cluster/n2.toml")),
            (3, include_str!("../../../examples/cluster/n3.toml")),
            (4, include_str!("../../../examples/cluster/n4.toml")),
        ] {
            let config = NodeConfig::from_toml(text, Path::new("/etc/ergon")).unwrap();
            assert_eq!(config.node.id, id);
            assert_eq!(config.node.members.len(), if id == 4 { 1 } else { 3 }, "node 4 joins: it lists only itself");
            assert_eq!(config.node.data_dir, PathBuf::from(format!("/etc/ergon/data/n{id}")));
            assert_eq!(config.ergon.audit.dir, PathBuf::from(format!("/etc/ergon/data/n{id}/audit")), "the audit log defaults into the data directory");
            assert_eq!(config.node.tls.unwrap().ca, PathBuf::from("/etc/ergon/certs/ca.pem"));
            assert_eq!(config.ergon.metrics.listen, Some(format!("127.0.0.{id}:9464").parse().unwrap()));
        }
    }

    #[test]
    fn mistakes_in_a_node_configuration_are_named() {
        let base = include_str!("../../../examples/cluster/n1.toml");
        let refused = |text: &str| NodeConfig::from_toml(text, Path::new(".")).unwrap_err();
        assert!(refused("").contains("no [node] section"));
        assert!(refused(&base.replace("id = 1\n", "id = 9\n")).contains("does not list this node (9)"));
        assert!(refused(&base.replace("cluster = \"demo\"", "cluster = \"Demo!\"")).contains("cluster name \"Demo!\" is not usable"));
        assert!(refused(&base.replace("principal = \"user:operator\"", "principal = \"operator\"")).contains("not a principal"));
        assert!(refused(&format!("{base}\n[network]\nmax_frame_bytes = 10\n")).contains("max_frame_bytes"));
        assert!(refused(&format!("{base}\n[network]\nmax_frame = 10\n")).contains("unknown field `max_frame`"));
        let typo = refused(&format!("{base}\n[raft]\ntick = 5\n"));
        assert!(typo.contains("tick"), "{typo}");
        let both = base.replace("[node]\n", "[node]\ninsecure = true\n");
        assert!(refused(&both).contains("both tls and insecure"));
    }
}
