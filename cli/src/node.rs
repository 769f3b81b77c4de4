//! `ergon node`: run one node of a cluster, or join a running one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use net::client::Credentials;
use net::node::{Joining, Node, NodeConfig};
use net::tcp::Member;

/// How `--join` names the seed: `ID@HOST:PORT` (its id, so that its certificate can be checked).
pub fn parse_seed(text: &str) -> Result<Member, String> {
    let (id, address) = text.split_once('@').ok_or_else(|| format!("{text:?}: expected ID@HOST:PORT, for instance 1@127.0.0.1:7001"))?;
    let id = id.parse().ok().filter(|&id| id > 0).ok_or_else(|| format!("{text:?}: {id:?} is not a node id (1 or more)"))?;
    let address = address.parse().map_err(|e| format!("{text:?}: {address:?} is not HOST:PORT ({e})"))?;
    Ok(Member { id, address })
}

/// Runs the node of `config` until SIGTERM or Ctrl-C, then stops it cleanly. With `join`, the
/// node starts with no configuration of its own and asks `join` to admit it (replacing voter
/// `replaces`, if given), proving itself with its certificate or with `token`; with `join_later`,
/// it starts with no configuration and waits for an operator to admit it.
pub fn run(config: PathBuf, join: Option<Member>, join_later: bool, replaces: Option<u64>, token: Option<String>) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
    let config = NodeConfig::load(&config)?;
    if replaces.is_some() && join.is_none() {
        bail!("--replaces names the voter a joining node replaces; it needs --join");
    }
    let joining = match join {
        Some(seed) => Some(Joining { seed, replaces, credentials: credentials(&config, token)? }),
        None => None,
    };
    let system = actix::System::new();
    system.block_on(async move {
        let node = if joining.is_some() || join_later { Node::start_to_join(config)? } else { Node::start(config)? };
        let metrics = node.metrics_address().map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"));
        tracing::info!(node = node.id(), cluster = %node.cluster(), address = %node.address(), %metrics, "node started");
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
        if let Some(joining) = &joining {
            tokio::select! {
                joined = node.join(joining) => match joined {
                    Ok(voters) => tracing::info!(node = node.id(), ?voters, "a voter of the cluster"),
                    Err(e) => {
                        node.shutdown().await?;
                        return Err(e.into());
                    }
                },
                _ = terminate.recv() => {
                    node.shutdown().await?;
                    bail!("SIGTERM while joining");
                }
            }
        }
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
        node.shutdown().await?;
        tracing::info!("stopped; audit log flushed and synced");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What a joining node proves itself with: a token if given, else its own certificate (or, on an
/// insecure cluster, its claimed name).
fn credentials(config: &NodeConfig, token: Option<String>) -> Result<Credentials> {
    let node = &config.node;
    let principal = format!("node:{}", node.id);
    Ok(match (&node.tls, token) {
        (Some(tls), Some(token)) => Credentials::token(&node.cluster, &tls.ca, &token)?,
        (Some(tls), None) => Credentials::certificate(&node.cluster, &principal, tls.clone())?,
        (None, _) => Credentials::insecure(&node.cluster, &principal)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_an_id_and_an_address() {
        assert_eq!(parse_seed("2@127.0.0.2:7001").unwrap(), Member { id: 2, address: "127.0.0.2:7001".parse().unwrap() });
        assert!(parse_seed("127.0.0.2:7001").unwrap_err().contains("expected ID@HOST:PORT"));
        assert!(parse_seed("0@127.0.0.2:7001").unwrap_err().contains("not a node id"));
        assert!(parse_seed("2@localhost").unwrap_err().contains("is not HOST:PORT"));
    }
}
