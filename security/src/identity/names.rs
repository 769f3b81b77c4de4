//! How clusters, nodes and principals are named in certificates.

use std::fmt;

use rustls::pki_types::{CertificateDer, ServerName};

use super::IdentityError;
use crate::{Namespace, Principal};

/// The top-level domain of every ergon identity.
const DOMAIN: &str = "ergon";

/// A cluster's name: a DNS label, so that it can be part of every certificate name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// `name`, if it is a DNS label (1 to 63 of `a-z`, `0-9` and `-`, not at either end).
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        if is_label(name) {
            Ok(ClusterName(name.to_owned()))
        } else {
            Err(IdentityError::ClusterName(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The name node `id` of `cluster` proves: `n<id>.<cluster>.ergon`.
pub fn node_name(cluster: &ClusterName, id: u64) -> String {
    format!("n{id}.{cluster}.{DOMAIN}")
}

/// The name a certificate must prove to act as `principal`: `n<id>.<cluster>.ergon` for a node
/// whose name is its numeric id, `<name>.user.<cluster>.ergon` for a user. Actors are ergon's own
/// and have no certificates.
pub fn principal_name(cluster: &ClusterName, principal: &Principal) -> Result<String, IdentityError> {
    let unnamable = |reason: &str| IdentityError::Unnamable { principal: principal.to_string(), reason: reason.to_owned() };
    let name = principal.name();
    match principal.namespace() {
        Namespace::Node => match name.parse::<u64>() {
            Ok(id) if id.to_string() == name => Ok(node_name(cluster, id)),
            _ => Err(unnamable("a cluster node is named by its numeric id")),
        },
        Namespace::User if is_label(name) => Ok(format!("{name}.user.{cluster}.{DOMAIN}")),
        Namespace::User => Err(unnamable("a user's name must be 1 to 63 of a-z, 0-9 and '-'")),
        Namespace::Actor => Err(unnamable("actors are ergon's own and carry no certificate")),
    }
}

/// Whether the certificate `der` names `name` (its validity against the CA is the handshake's
/// to check; this is the step after it, which binds a claimed identity to the certificate).
pub fn certificate_names(der: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let cert = webpki::EndEntityCert::try_from(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = ServerName::try_from(name).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_names_under_the_cluster() {
        let c = ClusterName::new("prod-1").unwrap();
        assert_eq!(node_name(&c, 3), "n3.prod-1.ergon");
        assert_eq!(principal_name(&c, &Principal::node("3")).unwrap(), "n3.prod-1.ergon");
        assert_eq!(principal_name(&c, &Principal::user("operator")).unwrap(), "operator.user.prod-1.ergon");
        for bad in ["", "-a", "a-", "Prod", "a.b", &"x".repeat(64)] {
            assert!(ClusterName::new(bad).is_err(), "{bad:?}");
        }
        let refused = |p: Principal| principal_name(&c, &p).unwrap_err().to_string();
        assert!(refused(Principal::node("worker-1")).contains("numeric id"));
        assert!(refused(Principal::node("03")).contains("numeric id"), "one spelling per node");
        assert!(refused(Principal::user("a.b")).contains("user's name"));
        assert!(refused(Principal::actor("node-manager/1")).contains("actors"));
    }
}
