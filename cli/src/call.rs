//! `ergon call`: call a node's managers as an authenticated client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use net::actors::managers::state_replicator::Consistency;
use net::calls::{Answer, Call, Expect, Manager, RaftJoin, RaftView};
use net::client::{Client, ClientError, Credentials};
use net::tcp::Member;
use security::identity::TlsFiles;
use serde::Deserialize;

/// A client's configuration file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    /// The cluster's name.
    cluster: String,
    /// Who the client is (`user:operator`), proven by its certificate in `tls`.
    #[serde(default)]
    principal: Option<String>,
    /// Its certificate, key and the cluster's CA (relative to the file).
    #[serde(default)]
    tls: Option<TlsFiles>,
    /// Instead of a certificate: a capability token (`ergon token issue`), and the CA to check
    /// the nodes against.
    #[serde(default)]
    token: Option<String>,
    /// The cluster's CA, for a client with a token.
    #[serde(default)]
    ca: Option<PathBuf>,
    /// Only for a cluster of insecure nodes.
    #[serde(default)]
    insecure: bool,
    /// The nodes, tried in order.
    nodes: Vec<Member>,
    /// The local address to call from (on a host with several); any by default.
    #[serde(default)]
    source: Option<std::net::IpAddr>,
}

#[derive(Subcommand)]
pub enum CallCommand {
    /// Replace the replicated state's data; answered once a quorum committed it.
    Replicate {
        /// The new data (UTF-8).
        data: String,
    },
    /// The replicated state as the node has applied it.
    ReadState,
    /// Who leads, as the node knows it.
    Leader,
    /// Publish on a channel of the node's communication manager.
    Broadcast {
        /// The channel.
        channel: String,
        /// The content.
        content: String,
    },
    /// Ask the node manager to admit a node (it becomes the principal node:<ID>).
    Join {
        /// The node's id.
        id: String,
        /// What kind of node.
        #[arg(long, default_value = "worker")]
        kind: String,
        /// The energy it brings, joules.
        #[arg(long, default_value_t = 100.0)]
        energy: f64,
        /// Capabilities it asks for (comma-separated).
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// The scope it asks for, within node_management.
        #[arg(long, default_value = "node_management")]
        scope: String,
        /// Make it a member of the replicated state too, reached at this HOST:PORT (the id is
        /// then its node number): answered once it is a voter. The node itself is started
        /// with `ergon node --join`, which does this for it.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// With --address: the voter it replaces, removed when it becomes a voter.
        #[arg(long, value_name = "ID", requires = "address")]
        replaces: Option<u64>,
    },
    /// Ask the node manager to remove a node.
    Leave {
        /// The node's id.
        id: String,
    },
    /// The node manager's members.
    ListNodes,
    /// A manager's budget, counters and operations.
    Status {
        /// The manager, by its configuration section (`state_replicator`, `node_manager`, ...).
        manager: String,
    },
    /// Set a key of the replicated map; answered with its revision once a quorum committed it.
    Put {
        /// The key (UTF-8).
        key: String,
        /// The value (UTF-8).
        value: String,
    },
    /// Read a key. Linearizable by default: the leader confirms with a quorum that it still
    /// leads, so the read sees every write acknowledged before it, through any node.
    Get {
        /// The key.
        key: String,
        /// Answer at once from the node's applied map: it may miss recent writes, and says so.
        #[arg(long, conflicts_with = "max_lag_ms")]
        stale: bool,
        /// Bounded staleness: answer from the node's applied map if it heard from the leader
        /// within this many milliseconds (and has applied all it knows committed); otherwise
        /// the read is served linearizably. The answer says which.
        #[arg(long, value_name = "MS")]
        max_lag_ms: Option<u64>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set a key only if it holds what is expected: give exactly one of --absent, --revision or
    /// --expect. A mismatch is an answer, with what the key holds.
    ///
    /// Examples:
    ///   ergon call --config client.toml cas lock me --absent
    ///   ergon call --config client.toml cas counter 2 --revision 17
    #[command(verbatim_doc_comment)]
    Cas {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
        /// The key must not exist.
        #[arg(long, group = "expected")]
        absent: bool,
        /// The key must have been written at this revision.
        #[arg(long, group = "expected")]
        revision: Option<u64>,
        /// The key must hold this value.
        #[arg(long, group = "expected")]
        expect: Option<String>,
    },
}

fn load(path: &Path) -> Result<ClientConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: ClientConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(tls) = &mut config.tls {
        [&mut tls.ca, &mut tls.cert, &mut tls.key].into_iter().for_each(resolve);
    }
    config.ca.iter_mut().for_each(resolve);
    Ok(config)
}

/// What the client configuration proves the caller to be.
fn credentials(config: &ClientConfig, token: Option<String>) -> Result<Credentials> {
    let token = token.or(config.token.clone());
    Ok(match (&config.principal, &config.tls, token, &config.ca, config.insecure) {
        (Some(principal), Some(tls), None, _, false) => Credentials::certificate(&config.cluster, principal, tls.clone())?,
        (_, tls, Some(token), ca, false) => {
            let ca = ca.clone().or(tls.as_ref().map(|t| t.ca.clone())).context("a client with a token needs ca = \"<the cluster's CA>\"")?;
            Credentials::token(&config.cluster, &ca, &token)?
        }
        (Some(principal), None, None, _, true) => Credentials::insecure(&config.cluster, principal)?,
        _ => bail!("the client configuration needs principal and tls = {{ ca, cert, key }}, or a token and ca, or principal and insecure = true"),
    })
}

/// Asks every node of the configuration (or only `only`) for its view of Raft, and prints one
/// line per node: the ones it cannot reach say why.
pub fn cluster_status(config: PathBuf, only: Option<u64>, token: Option<String>, json: bool) -> Result<ExitCode> {
    let config = load(&config)?;
    let credentials = credentials(&config, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut reached = 0;
        if !json {
            println!("{:>5}  {:<22} {:>6} {:>7} {:>8} {:>8}  members", "node", "address", "term", "leader", "commit", "applied");
        }
        for member in config.nodes.iter().filter(|m| only.is_none_or(|id| id == m.id)) {
            let answer = match Client::connect_from(config.source, member.address, member.id, &credentials).await {
                Ok(client) => client.call(Call::RaftStatus).await,
                Err(e) => Err(e),
            };
            match (answer, json) {
                (Ok(answer), true) => {
                    reached += 1;
                    println!("{}", serde_json::to_string(&answer)?);
                }
                (Ok(Answer::Raft(view)), false) => {
                    reached += 1;
                    let leader = view.leader.map_or("-".to_owned(), |l| l.to_string());
                    let RaftView { term, commit_index, applied_index, .. } = view;
                    println!("{:>5}  {:<22} {term:>6} {leader:>7} {commit_index:>8} {applied_index:>8}  {}", member.id, member.address.to_string(), members(&view));
                }
                (Ok(other), false) => println!("{:>5}  {:<22} unexpected answer: {other:?}", member.id, member.address.to_string()),
                (Err(e), _) => eprintln!("{:>5}  {:<22} unreachable: {e}", member.id, member.address.to_string()),
            }
        }
        Ok(if reached > 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNREACHED) })
    })
}

/// "voters 1,2,3", with the outgoing voters of a joint change and the learners when there are any.
fn members(view: &RaftView) -> String {
    let list = |ids: &[u64]| ids.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let mut out = format!("voters {}", list(&view.voters));
    if !view.outgoing.is_empty() {
        out.push_str(&format!(" (joint; outgoing {})", list(&view.outgoing)));
    }
    if !view.learners.is_empty() {
        out.push_str(&format!(", learners {}", list(&view.learners)));
    }
    out
}

/// No node answered.
const EXIT_UNREACHED: u8 = 3;

/// Calls the node `only`, or each node of the configuration in turn until one answers.
pub fn run(config: PathBuf, only: Option<u64>, token: Option<String>, json: bool, command: CallCommand) -> Result<ExitCode> {
    let config = load(&config)?;
    let credentials = credentials(&config, token)?;
    let call = match command {
        CallCommand::Replicate { data } => Call::Replicate { data: data.into_bytes() },
        CallCommand::ReadState => Call::ReadState,
        CallCommand::Leader => Call::Leader,
        CallCommand::Broadcast { channel, content } => Call::Broadcast { channel, content },
        CallCommand::Join { id, kind, energy, capabilities, scope, address, replaces } => {
            let capabilities = capabilities.iter().map(|c| c.trim().parse().with_context(|| format!("capability {c:?}"))).collect::<Result<_>>()?;
            let raft = address.map(|address| RaftJoin { address, replaces });
            Call::Join { id, kind, energy_budget_j: energy, capabilities, scope, raft }
        }
        CallCommand::Leave { id } => Call::Leave { id },
        CallCommand::Put { key, value } => Call::Put { key: key.into_bytes(), value: value.into_bytes() },
        CallCommand::Get { key, stale, max_lag_ms } => {
            let consistency = match (stale, max_lag_ms) {
                (true, _) => Consistency::Stale,
                (false, Some(max_lag_ms)) => Consistency::Bounded { max_lag_ms },
                (false, None) => Consistency::Linearizable,
            };
            Call::Get { key: key.into_bytes(), consistency }
        }
        CallCommand::Delete { key } => Call::Delete { key: key.into_bytes() },
        CallCommand::Cas { key, value, absent, revision, expect } => {
            let expected = match (absent, revision, expect) {
                (true, None, None) => Expect::Absent,
                (false, Some(r), None) => Expect::Revision(r),
                (false, None, Some(v)) => Expect::Value(v.into_bytes()),
                _ => bail!("cas needs exactly one of --absent, --revision N, --expect VALUE"),
            };
            Call::CompareAndSet { key: key.into_bytes(), expected, value: value.into_bytes() }
        }
        CallCommand::ListNodes => Call::ListNodes,
        CallCommand::Status { manager } => {
            let manager: Manager = serde_json::from_value(serde_json::Value::String(manager.clone()))
                .map_err(|_| anyhow::anyhow!("no manager {manager:?}; the managers are node_manager, communication_manager, leader_election, state_replicator, failure_detector, recovery_manager, load_distributor, resource_scaler, worker_pool"))?;
            Call::Status { manager }
        }
    };
    let nodes: Vec<Member> = config.nodes.into_iter().filter(|m| only.is_none_or(|id| id == m.id)).collect();
    if nodes.is_empty() {
        bail!("no such node in the client configuration");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut last = None;
        for member in &nodes {
            let answer = match Client::connect_from(config.source, member.address, member.id, &credentials).await {
                Ok(client) => client.call(call.clone()).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => {
                    print(member.id, &answer, json);
                    return Ok(ExitCode::SUCCESS);
                }
                // Membership changes are the leader's: another node may be it.
                Err(ClientError::Failed(failure)) if failure.code == "NotLeader" && only.is_none() => {
                    eprintln!("ergon: node {}: {failure}; trying the next node", member.id);
                    last = Some(ClientError::Failed(failure));
                }
                // The node answered: its answer stands, whoever else might answer otherwise.
                Err(ClientError::Failed(failure)) => {
                    eprintln!("ergon: node {}: {failure}", member.id);
                    return Ok(ExitCode::from(1));
                }
                Err(e) => {
                    eprintln!("ergon: node {} at {}: {e}", member.id, member.address);
                    last = Some(e);
                }
            }
        }
        bail!("no node answered: {}", last.map_or_else(String::new, |e| e.to_string()))
    })
}

fn print(node: u64, answer: &Answer, json: bool) {
    if json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "node": node, "answer": answer })).expect("answers serialise"));
        return;
    }
    match answer {
        Answer::State { version, data } => println!("node {node}: version {version}: {}", String::from_utf8_lossy(data)),
        Answer::Leader(Some((leader, term))) => println!("node {node}: leader {leader} in term {term}"),
        Answer::Leader(None) => println!("node {node}: no leader known"),
        Answer::Receipt { seq, delivered } => println!("node {node}: broadcast {seq} delivered to {}", delivered.join(", ")),
        Answer::Joined { node: n, confirmed_by } => {
            println!("node {node}: {} joined ({}, {} J, {} in {}), confirmed by [{}]", n.id, n.kind, n.energy_budget_j, n.capabilities, n.scope, confirmed_by.join(", "))
        }
        Answer::Node(n) if n.kind == "founder" => println!("node {node}: {} (a founding member)", n.id),
        Answer::Node(n) => println!("node {node}: {} ({}, joined by {})", n.id, n.kind, n.joined_by),
        Answer::Nodes(nodes) if nodes.is_empty() => println!("node {node}: no members"),
        Answer::Nodes(nodes) => {
            for n in nodes {
                println!("{} {} {} J {} in {} (joined by {})", n.id, n.kind, n.energy_budget_j, n.capabilities, n.scope, n.joined_by);
            }
        }
        Answer::Raft(view) => println!(
            "node {node}: term {}, leader {:?}, commit {}, applied {}, {}",
            view.term,
            view.leader,
            view.commit_index,
            view.applied_index,
            members(view)
        ),
        Answer::Written { revision } => println!("node {node}: written at revision {revision}"),
        Answer::Deleted { revision, existed: true } => println!("node {node}: deleted at revision {revision}"),
        Answer::Deleted { revision, existed: false } => println!("node {node}: no such key (revision {revision})"),
        Answer::Mismatch { revision, current } => match current {
            Some((value, at)) => {
                println!("node {node}: not set (revision {revision}): it holds {} written at revision {at}", String::from_utf8_lossy(value))
            }
            None => println!("node {node}: not set (revision {revision}): the key does not exist"),
        },
        Answer::Read { value, revision, level, behind } => {
            let level = match level {
                Consistency::Linearizable => "linearizable".to_string(),
                Consistency::Stale => "stale".to_string(),
                Consistency::Bounded { max_lag_ms } => format!("bounded (the leader heard from within {max_lag_ms} ms)"),
            };
            let how = format!("{level} read at revision {revision}, {behind} committed entries not yet applied");
            match value {
                Some((value, at)) => println!("node {node}: {} (written at revision {at}; {how})", String::from_utf8_lossy(value)),
                None => println!("node {node}: no such key ({how})"),
            }
        }
        Answer::Status(s) => {
            println!("{}: {:.3} of {:.3} J left ({}), {} allowed, {} failed, {} denied", s.actor, s.remaining_j, s.total_j, s.source, s.allowed, s.failed, s.denied);
            for (name, base, runs, mean) in &s.operations {
                println!("  {name}: base {base:.3} J, {runs} runs, mean measured {mean:.9} J");
            }
        }
    }
}
