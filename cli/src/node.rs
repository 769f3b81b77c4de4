//! `ergon node`: run one node of a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use net::node::{Node, NodeConfig};

/// Runs the node of `config` until SIGTERM or Ctrl-C, then stops it cleanly.
pub fn run(config: PathBuf) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
    let config = NodeConfig::load(&config)?;
    let system = actix::System::new();
    system.block_on(async move {
        let node = Node::start(config)?;
        let metrics = node.metrics_address().map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"));
        tracing::info!(node = node.id(), cluster = %node.cluster(), address = %node.address(), %metrics, "node started");
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
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
