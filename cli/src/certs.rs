//! `ergon certs`: a cluster CA and certificates for its nodes and users, for tests and quick
//! starts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use security::identity::certs::{write_issued, write_new, Authority};
use security::identity::{node_name, principal_name, ClusterName};
use security::Principal;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA and a certificate for each node and user, in OUT.
    ///
    /// Node N's certificate names `nN.<cluster>.ergon` and a user's `<user>.user.<cluster>.ergon`:
    /// a node believes a peer is node N, or a caller is user:U, only if its certificate names
    /// that, and it was signed by the CA. Files: `ca.pem`, `ca.key` (keep it secret: it makes
    /// members), `nN.pem` and `nN.key` per node, `<user>.pem` and `<user>.key` per user. Existing
    /// files are never overwritten. This is quick-start material (valid two years, no
    /// revocation); production clusters use their own CA, with the same names.
    ///
    /// Examples:
    ///   ergon certs init --cluster demo --nodes 3 --user operator --out certs
    ///   ergon certs issue --cluster demo --ca-key certs/ca.key --node 4 --out certs
    Init {
        /// The cluster's name (a DNS label: a-z, 0-9 and '-').
        #[arg(long)]
        cluster: String,
        /// Certificates for nodes 1 to NODES.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// A certificate for this user (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Where to write the files (created if missing).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Issue more certificates with an existing CA key.
    Issue {
        /// The cluster's name.
        #[arg(long)]
        cluster: String,
        /// The CA's key, as `init` wrote it.
        #[arg(long)]
        ca_key: PathBuf,
        /// A certificate for this node id (repeatable).
        #[arg(long = "node")]
        nodes: Vec<u64>,
        /// A certificate for this user (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Where to write the files.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

pub fn run(command: CertsCommand) -> Result<ExitCode> {
    let (cluster, authority, nodes, users, out) = match command {
        CertsCommand::Init { cluster, nodes, users, out } => {
            let name = ClusterName::new(&cluster)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let authority = Authority::generate(&name)?;
            let written = [
                write_new(&out.join("ca.pem"), authority.cert_pem(), false)?,
                write_new(&out.join("ca.key"), &authority.key_pem(), true)?,
            ];
            written.iter().for_each(|p| println!("{}", p.display()));
            (name, authority, (1..=nodes).collect::<Vec<_>>(), users, out)
        }
        CertsCommand::Issue { cluster, ca_key, nodes, users, out } => {
            let name = ClusterName::new(&cluster)?;
            let authority = Authority::load(&name, &ca_key)?;
            (name, authority, nodes, users, out)
        }
    };
    for id in nodes {
        for path in write_issued(&out, &format!("n{id}"), &authority.issue(&node_name(&cluster, id))?)? {
            println!("{}", path.display());
        }
    }
    for user in users {
        let name = principal_name(&cluster, &Principal::user(&user))?;
        for path in write_issued(&out, &user, &authority.issue(&name)?)? {
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
