//! `ergon`: the operator's tool for ergon's energy audit logs and energy counters.

mod audit;
mod call;
mod certs;
mod energy;
mod node;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run a node of an ergon cluster and call its managers; read, check and summarise the audit logs
/// that ergon's gated actors write; and find out what this machine can measure.
///
/// Every request to a gated actor, allowed or denied, is one entry of a hash-chained JSON Lines
/// log: who asked, what for, whether it was allowed, and how many joules it cost. A log is a
/// directory of `segment-NNNNNN.jsonl` files with a `HEAD` file beside them; every audit command
/// also accepts a single segment file.
#[derive(Parser)]
#[command(name = "ergon", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Find out which energy counters this machine has and which ergon would use.
    #[command(subcommand)]
    Energy(energy::EnergyCommand),
    /// Run one node of a cluster: its eight managers and worker pool, its Raft store and audit
    /// log, listening for its peers and callers, until SIGTERM or Ctrl-C.
    ///
    /// The configuration's [node] section says who the node is (id, cluster), where it listens,
    /// its data directory, every member's address, its TLS files (or insecure = true, for
    /// loopback development) and which principals may call it with what; any of ergon's own
    /// sections ([raft], [audit], the managers) may follow. Logs go to stderr (RUST_LOG filters).
    ///
    /// Examples:
    ///   ergon node --config examples/cluster/n1.toml
    ///   ergon node --config n4.toml --join 1@127.0.0.1:7001
    ///   ergon node --config n5.toml --join 1@127.0.0.1:7001 --replaces 2
    #[command(verbatim_doc_comment)]
    Node {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Join a running cluster through this member (ID@HOST:PORT): the node starts with no
        /// configuration of its own, becomes a learner, and a voter once it has caught up. Its
        /// configuration lists only itself in members. Needs NodeManagement and
        /// ElectionManagement on the members, granted to node:<id> or carried by --token.
        #[arg(long, value_name = "ID@HOST:PORT", value_parser = node::parse_seed, conflicts_with = "join_later")]
        join: Option<net::tcp::Member>,
        /// Start as a node that is not a member yet (no configuration of its own) and wait for
        /// an operator to admit it: ergon call join ID --address HOST:PORT. Its configuration's
        /// members lists the current members (which will contact it) as well as itself.
        #[arg(long)]
        join_later: bool,
        /// With --join: the voter this node replaces, removed when this node becomes a voter
        /// (joint consensus: the cluster stays available throughout).
        #[arg(long, value_name = "ID")]
        replaces: Option<u64>,
        /// With --join: a capability token to join with instead of the node's certificate.
        #[arg(long, env = "ERGON_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Call a node's managers as an authenticated client.
    ///
    /// The client configuration names the cluster, the principal, its TLS files and the nodes;
    /// without --node each is tried in turn until one answers.
    ///
    /// Examples:
    ///   ergon call --config examples/cluster/client.toml replicate "hello"
    ///   ergon call --config examples/cluster/client.toml --node 2 read-state
    ///   ergon call --config examples/cluster/client.toml status state_replicator
    ///   ERGON_TOKEN="$(cat ci.token)" ergon call --config examples/cluster/client.toml read-state
    #[command(verbatim_doc_comment)]
    Call {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        call: call::CallCommand,
    },
    /// See a cluster: each node's view of Raft.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create a cluster CA and node and user certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Capability tokens: make the cluster's token key, issue, attenuate and inspect tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Ask every node of the client configuration for its term, the leader it knows, its commit
    /// and applied index, and the voters; one line per node, and why for the nodes it cannot
    /// reach. Exits 3 if none answers. Needs ElectionManagement.
    ///
    /// Example:
    ///   ergon cluster status --config examples/cluster/client.toml
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How a client finds and proves itself to the nodes.
#[derive(clap::Args)]
struct ClientArgs {
    /// The client's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Ask only this node.
    #[arg(long)]
    node: Option<u64>,
    /// Act with this capability token instead of the configuration's certificate.
    #[arg(long, env = "ERGON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print each answer as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so a closed pipe (`ergon audit show ... | head`) would end in an
    // error message. The commands that print end as other Unix tools do instead: quietly, killed
    // by SIGPIPE. The node and the client keep ignoring it: they write to sockets, where a closed
    // connection must be an error to handle, not the end of the process.
    if !matches!(cli.command, Command::Node { .. } | Command::Call { .. } | Command::Cluster(_)) {
        sigpipe::reset();
    }
    let result = match cli.command {
        Command::Audit(command) => audit::run(command),
        Command::Energy(command) => energy::run(command),
        Command::Node { config, join, join_later, replaces, token } => node::run(config, join, join_later, replaces, token),
        Command::Call { client: ClientArgs { config, node, token, json }, call } => call::run(config, node, token, json, call),
        Command::Cluster(ClusterCommand::Status { client: ClientArgs { config, node, token, json } }) => {
            call::cluster_status(config, node, token, json)
        }
        Command::Certs(command) => certs::run(command),
        Command::Token(command) => token::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ergon: {error:#}");
            ExitCode::from(audit::EXIT_UNREADABLE)
        }
    }
}
