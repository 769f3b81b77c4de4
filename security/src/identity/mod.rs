//! Who is at the other end of a connection, proven by an X.509 certificate.
//!
//! Every identity in a cluster is a DNS name under the cluster's own domain, `<cluster>.ergon`:
//! node 3 of cluster `prod` is `n3.prod.ergon`, the user `operator` is `operator.user.prod.ergon`.
//! A certificate names its holder in a DNS subject alternative name and is signed by the
//! cluster's CA, so that a TLS handshake proves the name, and the name is the principal:
//!
//! - a node **dials** a peer by address but verifies the server's certificate for the peer's
//!   name ([`Identity::client_config`] with [`node_name`]), so an address taken over by another
//!   machine, or another member's certificate, fails the handshake;
//! - a node **accepts** a connection whose certificate chains to the CA, and then believes the
//!   identity the peer claims in its hello only if that certificate is valid for it
//!   ([`certificate_names`]): a member signed by the same CA cannot pass for another member.
//!
//! [`certs`] creates a CA and certificates for tests and quick starts; production users bring
//! their own, named the same way.

pub mod certs;
mod names;
mod tls;

pub use names::{certificate_names, node_name, principal_name, ClusterName};
pub use tls::{Identity, TlsFiles};

use std::path::PathBuf;

/// Why an identity could not be made, loaded or proven.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A cluster name that is not a DNS label.
    #[error("cluster name {0:?} is not usable: it must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")]
    ClusterName(String),
    /// A principal whose name cannot be written as a certificate name.
    #[error("principal {principal} cannot be named in a certificate: {reason}")]
    Unnamable {
        /// The principal.
        principal: String,
        /// Why not.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A certificate does not prove the name it is meant to carry.
    #[error("certificate {path} is not valid for {name}: {reason}")]
    NotValidFor {
        /// The certificate file.
        path: PathBuf,
        /// The name it should prove.
        name: String,
        /// What the check found.
        reason: String,
    },
    /// TLS could not be set up with this material.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}
