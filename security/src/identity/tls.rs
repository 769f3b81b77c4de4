//! TLS configurations for one identity: its certificate chain and key, and the cluster's CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};

use super::IdentityError;

/// Where an identity's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate: peers' certificates must chain to it.
    pub ca: PathBuf,
    /// This identity's certificate (followed by any intermediates).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A loaded identity, proven at load time to be valid for its name, with the TLS configurations
/// that present it.
#[derive(Clone)]
pub struct Identity {
    name: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, what: impl std::fmt::Display) -> IdentityError {
    IdentityError::Pem { path: path.to_owned(), what: what.to_string() }
}

/// The trust anchors in the CA file `path`.
pub(crate) fn roots(path: &Path) -> Result<Arc<RootCertStore>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_error(path, e))? {
        roots.add(cert.map_err(|e| pem_error(path, e))?).map_err(|e| pem_error(path, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(pem_error(path, "holds no certificate"));
    }
    Ok(Arc::new(roots))
}

fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(pem_error(path, "holds no certificate"));
    }
    Ok(chain)
}

impl Identity {
    /// Loads the identity `name` (see [`super::node_name`]) from `files`, and checks that its
    /// certificate chains to the CA and is valid for `name`, both to serve and to dial.
    pub fn load(files: &TlsFiles, name: &str) -> Result<Self, IdentityError> {
        let provider = provider();
        let roots = roots(&files.ca)?;
        let chain = chain(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;

        let not_valid = |reason: String| IdentityError::NotValidFor { path: files.cert.clone(), name: name.to_owned(), reason };
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| not_valid(e.to_string()))?;
        let as_server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| pem_error(&files.ca, e))?;
        as_server
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .map_err(|e| not_valid(format!("as a server: {e}")))?;
        let clients: Arc<dyn ClientCertVerifier> = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| pem_error(&files.ca, e))?;
        clients.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map_err(|e| not_valid(format!("as a client: {e}")))?;

        // Clients without a certificate are let through the handshake: they may prove who they
        // are with a token in their hello instead. Whoever presents one must chain to the CA.
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| pem_error(&files.key, format!("does not match {}: {e}", files.cert.display())))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| pem_error(&files.key, format!("does not match {}: {e}", files.cert.display())))?;
        Ok(Identity { name: name.to_owned(), server: Arc::new(server), client: Arc::new(client) })
    }

    /// The name it proves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For accepting connections: presents this identity, and asks clients for theirs.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// For dialing: presents this identity, and verifies the server against the CA (for the
    /// server name the dialer gives).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// For dialing without an identity of one's own (a client with a token): verifies the
    /// server against the CA in `ca`.
    pub fn anonymous_client_config(ca: &Path) -> Result<Arc<ClientConfig>, IdentityError> {
        let config =
            ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots(ca)?);
        Ok(Arc::new(config.with_no_client_auth()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::certs::{write_issued, write_new, Authority};
    use super::super::{certificate_names, node_name, ClusterName};
    use super::*;

    fn files(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) }
    }

    #[test]
    fn an_identity_loads_only_for_the_name_its_certificate_proves_and_only_under_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterName::new("test").unwrap();
        let ca = Authority::generate(&cluster).unwrap();
        write_new(&dir.path().join("ca.pem"), ca.cert_pem(), false).unwrap();
        write_issued(dir.path(), "n1", &ca.issue(&node_name(&cluster, 1)).unwrap()).unwrap();

        let n1 = Identity::load(&files(dir.path(), "n1"), "n1.test.ergon").unwrap();
        assert_eq!(n1.name(), "n1.test.ergon");
        let err = Identity::load(&files(dir.path(), "n1"), "n2.test.ergon").err().unwrap().to_string();
        assert!(err.contains("n1.pem is not valid for n2.test.ergon"), "{err}");

        // The same name, signed by another cluster's CA.
        let other = Authority::generate(&cluster).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        write_issued(&dir.path().join("other"), "n1", &other.issue("n1.test.ergon").unwrap()).unwrap();
        let foreign = TlsFiles { cert: dir.path().join("other/n1.pem"), key: dir.path().join("other/n1.key"), ..files(dir.path(), "n1") };
        let err = Identity::load(&foreign, "n1.test.ergon").err().unwrap().to_string();
        // Same subject, another key: the signature does not verify.
        assert!(err.contains("as a server: invalid peer certificate: BadSignature"), "{err}");

        // A key that is not the certificate's.
        let mismatched = TlsFiles { key: dir.path().join("other/n1.key"), ..files(dir.path(), "n1") };
        let err = Identity::load(&mismatched, "n1.test.ergon").err().unwrap().to_string();
        assert!(err.contains("does not match"), "{err}");

        let missing = Identity::load(&files(dir.path(), "n9"), "n9.test.ergon").err().unwrap().to_string();
        assert!(missing.contains("n9.pem"), "{missing}");
    }

    #[test]
    fn a_certificate_names_exactly_its_holder() {
        let cluster = ClusterName::new("test").unwrap();
        let ca = Authority::generate(&cluster).unwrap();
        let n1 = ca.issue(&node_name(&cluster, 1)).unwrap();
        let der = CertificateDer::from_pem_slice(n1.cert_pem.as_bytes()).unwrap();
        assert_eq!(certificate_names(&der, "n1.test.ergon"), Ok(()));
        assert!(certificate_names(&der, "n2.test.ergon").is_err());
        assert!(certificate_names(&der, "n1.other.ergon").is_err());
    }

    #[test]
    fn a_ca_key_issues_certificates_that_chain_to_the_ca_written_before() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterName::new("test").unwrap();
        let ca = Authority::generate(&cluster).unwrap();
        write_new(&dir.path().join("ca.pem"), ca.cert_pem(), false).unwrap();
        write_new(&dir.path().join("ca.key"), &ca.key_pem(), true).unwrap();
        let again = Authority::load(&cluster, &dir.path().join("ca.key")).unwrap();
        write_issued(dir.path(), "n4", &again.issue("n4.test.ergon").unwrap()).unwrap();
        Identity::load(&files(dir.path(), "n4"), "n4.test.ergon").unwrap();
        let exists = write_new(&dir.path().join("ca.key"), "x", true).err().unwrap().to_string();
        assert!(exists.contains("ca.key"), "{exists}");
    }
}
