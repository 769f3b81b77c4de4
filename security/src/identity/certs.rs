//! A cluster CA and the certificates it signs, for tests and quick starts (`ergon certs init`).
//! Production users bring certificates from their own CA, named as [`super::node_name`] and
//! [`super::principal_name`] say.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::{ClusterName, IdentityError};

/// A cluster's certificate authority: its certificate and the key that signs members'.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// How long certificates made here are valid: quick-start material, not a deployment's.
const VALID_YEARS: i32 = 2;

fn validity(params: &mut CertificateParams) {
    let now = chrono::Utc::now();
    let yesterday = now - chrono::Duration::days(1);
    params.not_before = rcgen::date_time_ymd(yesterday.year(), yesterday.month() as u8, yesterday.day() as u8);
    params.not_after = rcgen::date_time_ymd(now.year() + VALID_YEARS, now.month() as u8, now.day().min(28) as u8);
}

impl Authority {
    /// A new CA for `cluster`.
    pub fn generate(cluster: &ClusterName) -> Result<Self, IdentityError> {
        let key = KeyPair::generate()?;
        Self::from_key(cluster, key)
    }

    /// The CA of `cluster` whose key is `key_pem`, to issue more certificates later. Its
    /// certificate is made anew; certificates it signs chain to the original one as well, since
    /// the subject and key are the same.
    pub fn from_key(cluster: &ClusterName, key: KeyPair) -> Result<Self, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("ergon cluster {cluster} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Authority { params, key, cert_pem })
    }

    /// Loads the CA key of `cluster` from `path`.
    pub fn load(cluster: &ClusterName, path: &Path) -> Result<Self, IdentityError> {
        let pem = std::fs::read_to_string(path).map_err(|source| IdentityError::File { path: path.to_owned(), source })?;
        let key = KeyPair::from_pem(&pem).map_err(|e| IdentityError::Pem { path: path.to_owned(), what: e.to_string() })?;
        Self::from_key(cluster, key)
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `name` (see [`super::node_name`]), usable both to serve and to dial, as
    /// a node's connections do both.
    pub fn issue(&self, name: &str) -> Result<Issued, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes `text` to a new file `path`, readable by its owner only if it is `secret`. An existing
/// file is never overwritten: a CA key replaced by accident cannot be got back.
pub fn write_new(path: &Path, text: &str, secret: bool) -> Result<PathBuf, IdentityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| IdentityError::File { path: path.to_owned(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(if secret { 0o600 } else { 0o644 }).open(path).map_err(failed)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
    Ok(path.to_owned())
}

/// Writes certificate and key as `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
pub fn write_issued(dir: &Path, stem: &str, issued: &Issued) -> Result<Vec<PathBuf>, IdentityError> {
    Ok(vec![
        write_new(&dir.join(format!("{stem}.pem")), &issued.cert_pem, false)?,
        write_new(&dir.join(format!("{stem}.key")), &issued.key_pem, true)?,
    ])
}
