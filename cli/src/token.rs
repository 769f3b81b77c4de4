//! `ergon token`: capability tokens for callers that hold no certificate of their own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use security::identity::certs::write_new;
use security::token::{attenuate, describe, TokenAuthority};
use security::{CapSet, Principal, Scope};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create the cluster's token key: `token.key` (secret: it makes tokens) and `token.pub`
    /// (what nodes verify with: `[node] tokens = { key = "token.pub" }`).
    ///
    /// Example:
    ///   ergon token keygen --out certs
    Keygen {
        /// Where to write the two files.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Issue a token for a principal, with capabilities in a scope, valid for a while; prints it.
    ///
    /// A node that accepts tokens lets its holder act as PRINCIPAL with exactly these
    /// capabilities, in SCOPE and the scopes below it, until it expires. It is checked once per
    /// connection; each request then passes the gates as any other.
    ///
    /// Example:
    ///   ergon token issue --key certs/token.key --principal user:ci \
    ///       --capabilities StateManagement,ReplicationManagement --scope replication_management --valid-for 8h
    Issue {
        /// The token key (`token.key`).
        #[arg(long)]
        key: PathBuf,
        /// Whose authority (`user:ci`).
        #[arg(long)]
        principal: String,
        /// Comma-separated capabilities.
        #[arg(long, value_delimiter = ',', required = true)]
        capabilities: Vec<String>,
        /// Where they apply (`*`, everywhere, by default).
        #[arg(long, default_value = "*")]
        scope: String,
        /// How long it is valid (`30m`, `8h`, `7d`).
        #[arg(long, default_value = "1h")]
        valid_for: humantime::Duration,
    },
    /// Narrow a token, offline and without any key: fewer capabilities, a narrower scope, an
    /// earlier expiry. Prints the new token; whoever holds it can do no more than the old one.
    ///
    /// Example:
    ///   ergon token attenuate "$TOKEN" --capabilities StateManagement --valid-for 10m
    Attenuate {
        /// The token to narrow.
        token: String,
        /// Keep only these (comma-separated).
        #[arg(long, value_delimiter = ',')]
        capabilities: Option<Vec<String>>,
        /// Only within this scope.
        #[arg(long)]
        scope: Option<String>,
        /// Expire within this long.
        #[arg(long)]
        valid_for: Option<humantime::Duration>,
    },
    /// Print what a token says, block by block, with the revocation ids to list in
    /// `[node] tokens.revoked` (not verified: no key is needed).
    Inspect {
        /// The token.
        token: String,
    },
}

fn capabilities(names: &[String]) -> Result<CapSet> {
    names.iter().map(|n| n.trim().parse().with_context(|| format!("capability {n:?}"))).collect()
}

pub fn run(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::Keygen { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let authority = TokenAuthority::generate();
            for (name, text, secret) in [("token.key", authority.private_pem(), true), ("token.pub", authority.public_pem(), false)] {
                println!("{}", write_new(&out.join(name), &text, secret)?.display());
            }
        }
        TokenCommand::Issue { key, principal, capabilities: names, scope, valid_for } => {
            let authority = TokenAuthority::load(&key)?;
            let principal: Principal = principal.parse()?;
            let scope = Scope::new(&scope)?;
            println!("{}", authority.issue(&principal, capabilities(&names)?, &scope, valid_for.into())?);
        }
        TokenCommand::Attenuate { token, capabilities: names, scope, valid_for } => {
            let caps = names.map(|n| capabilities(&n)).transpose()?;
            let scope = scope.map(|s| Scope::new(&s)).transpose()?;
            println!("{}", attenuate(&token, caps, scope.as_ref(), valid_for.map(Duration::from))?);
        }
        TokenCommand::Inspect { token } => print!("{}", describe(&token)?),
    }
    Ok(ExitCode::SUCCESS)
}
