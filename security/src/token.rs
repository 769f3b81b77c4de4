//! Capability tokens: authority a cluster's key signs for a principal, which its holder can
//! attenuate offline (fewer capabilities, a narrower scope, an earlier expiry) and hand on.
//!
//! A token is a [biscuit](https://www.biscuitsec.org). Its authority block, signed by the
//! cluster's token key, names the principal, its capabilities and its scope, and when it expires:
//!
//! ```text
//! principal("user:ci"); capability("StateManagement"); scope("replication_management");
//! check if time($t), $t <= 2027-01-01T00:00:00Z;
//! ```
//!
//! An attenuation appends checks on the request:
//! `check if capability_request($c), ["StateManagement"].contains($c)`,
//! `check if scope_request($s), $s.starts_with("replication_management")`, or another expiry. A
//! node verifies a token once, when the connection opens ([`TokenKey::verify`]): for each scope it
//! serves it asks the token which capabilities it allows there, and grants exactly those for the
//! connection, so each message's check stays a bitset test.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use biscuit_auth::{builder::BlockBuilder, Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};

use crate::{CapSet, Capability, Principal, Scope};

/// Why a token could not be made, attenuated or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A key file could not be read or written, or holds no key.
    #[error("{path}: {problem}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The token is not one of this cluster's, is damaged, or says something impossible.
    #[error("token refused: {0}")]
    Refused(String),
    /// The token has been revoked.
    #[error("token refused: revoked ({0})")]
    Revoked(String),
}

/// Limits on one check of a token: biscuit's own, with time to spare. Its default of 1 ms is
/// exceeded by a busy machine, and a check that times out must not read as a refusal.
fn limits() -> biscuit_auth::datalog::RunLimits {
    biscuit_auth::datalog::RunLimits { max_time: Duration::from_millis(200), ..Default::default() }
}

fn refused(e: impl std::fmt::Display) -> TokenError {
    TokenError::Refused(e.to_string())
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The key that signs a cluster's tokens.
pub struct TokenAuthority {
    key: KeyPair,
}

impl TokenAuthority {
    /// A new key.
    pub fn generate() -> Self {
        TokenAuthority { key: KeyPair::new() }
    }

    /// The key in the PEM file `path`.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let problem = |problem: String| TokenError::Key { path: path.to_owned(), problem };
        let pem = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        let key = PrivateKey::from_pem(&pem).map_err(|e| problem(format!("not a token key: {e}")))?;
        Ok(TokenAuthority { key: KeyPair::from(&key) })
    }

    /// The private key, PEM (keep it secret: it makes tokens).
    pub fn private_pem(&self) -> String {
        self.key.to_private_key_pem().map(|pem| pem.to_string()).expect("an Ed25519 key serialises")
    }

    /// The public key, PEM: what nodes verify tokens with.
    pub fn public_pem(&self) -> String {
        self.key.public().to_pem().expect("an Ed25519 key serialises")
    }

    /// A token for `principal`, with `capabilities` in `scope`, valid for `valid_for`; base64.
    pub fn issue(&self, principal: &Principal, capabilities: CapSet, scope: &Scope, valid_for: Duration) -> Result<String, TokenError> {
        let mut code = format!("principal({:?});\nscope({:?});\n", principal.as_str(), scope.as_str());
        for capability in capabilities.iter() {
            code.push_str(&format!("capability({:?});\n", capability.name()));
        }
        code.push_str(&format!("check if time($t), $t <= {};\n", rfc3339(SystemTime::now() + valid_for)));
        let token = Biscuit::builder().code(&code).map_err(refused)?.build(&self.key).map_err(refused)?;
        token.to_base64().map_err(refused)
    }
}

/// Narrows `token` (base64) without any key: to `capabilities`, to `scope`, to expire within
/// `valid_for`, as given. Answers the new token, base64.
pub fn attenuate(token: &str, capabilities: Option<CapSet>, scope: Option<&Scope>, valid_for: Option<Duration>) -> Result<String, TokenError> {
    let token = UnverifiedBiscuit::from_base64(token.trim()).map_err(refused)?;
    let mut code = String::new();
    if let Some(capabilities) = capabilities {
        let names: Vec<String> = capabilities.iter().map(|c| format!("{:?}", c.name())).collect();
        code.push_str(&format!("check if capability_request($c), [{}].contains($c);\n", names.join(", ")));
    }
    if let Some(scope) = scope.filter(|s| **s != Scope::root()) {
        let s = scope.as_str();
        code.push_str(&format!("check if scope_request($s), $s == {s:?} || $s.starts_with({:?});\n", format!("{s}.")));
    }
    if let Some(valid_for) = valid_for {
        code.push_str(&format!("check if time($t), $t <= {};\n", rfc3339(SystemTime::now() + valid_for)));
    }
    let block = BlockBuilder::new().code(&code).map_err(refused)?;
    token.append(block).map_err(refused)?.to_base64().map_err(refused)
}

/// What `token` (base64) says, block by block, with each block's revocation id; readable without
/// any key, and not verified.
pub fn describe(token: &str) -> Result<String, TokenError> {
    let token = UnverifiedBiscuit::from_base64(token.trim()).map_err(refused)?;
    let ids = token.revocation_identifiers();
    let mut text = String::new();
    for i in 0..token.block_count() {
        let source = token.print_block_source(i).map_err(refused)?;
        let id = ids.get(i).map(hex::encode).unwrap_or_default();
        let title = if i == 0 { "authority".to_owned() } else { format!("attenuation {i}") };
        text.push_str(&format!("block {i} ({title}), revocation id {id}:\n{source}\n"));
    }
    Ok(text)
}

/// What a verified token grants: the principal, and its capabilities in each scope asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Whose authority.
    pub principal: Principal,
    /// For each scope asked about, the capabilities the token allows there (scopes it allows
    /// nothing in are left out).
    pub grants: Vec<(Scope, CapSet)>,
    /// Its revocation id (of its last block), hex.
    pub id: String,
}

/// The public key a node verifies tokens with.
#[derive(Clone)]
pub struct TokenKey(PublicKey);

/// The policy every request is judged by: the capability must be one the authority block grants,
/// in a scope within the one it grants; every block's checks must hold as well.
const POLICY: &str = r#"allow if capability_request($c), capability($c), scope_request($s), scope($g), $g == "*" || $s == $g || $s.starts_with($g + ".");"#;

impl TokenKey {
    /// The public key in the PEM file `path`.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let problem = |problem: String| TokenError::Key { path: path.to_owned(), problem };
        let pem = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        PublicKey::from_pem(&pem).map(TokenKey).map_err(|e| problem(format!("not a token public key: {e}")))
    }

    /// Verifies `token` (base64): signed by this key, not in `revoked` (hex revocation ids of any
    /// of its blocks), not expired; and asks it which capabilities it allows in each of `scopes`.
    pub fn verify(&self, token: &[u8], scopes: &[Scope], revoked: &[String]) -> Result<Verified, TokenError> {
        let text = std::str::from_utf8(token).map_err(|_| refused("not base64 text"))?;
        let token = Biscuit::from_base64(text.trim(), self.0).map_err(refused)?;
        let ids: Vec<String> = token.revocation_identifiers().iter().map(hex::encode).collect();
        if let Some(id) = ids.iter().find(|id| revoked.contains(id)) {
            return Err(TokenError::Revoked(id.clone()));
        }
        // Queries read the authority block and the authorizer only: a later block cannot name
        // another principal.
        let mut authorizer = token.authorizer().map_err(refused)?;
        let principals: Vec<(String,)> = authorizer.query_with_limits("data($p) <- principal($p)", limits()).map_err(refused)?;
        let [(principal,)] = principals.as_slice() else {
            return Err(refused(format!("a token names exactly one principal; this one names {}", principals.len())));
        };
        let principal: Principal = principal.parse().map_err(refused)?;
        let mut grants = Vec::new();
        for scope in scopes {
            let mut allowed = CapSet::EMPTY;
            for &capability in Capability::ALL.iter() {
                if self.allows(&token, capability, scope)? {
                    allowed = allowed.union(CapSet::of(&[capability]));
                }
            }
            if !allowed.is_empty() {
                grants.push((scope.clone(), allowed));
            }
        }
        Ok(Verified { principal, grants, id: ids.last().cloned().unwrap_or_default() })
    }

    /// Whether `token` allows `capability` in `scope`. A check that could not finish (it ran past
    /// its limits) is an error, never a quiet "no": under load that would drop a capability the
    /// token grants.
    fn allows(&self, token: &Biscuit, capability: Capability, scope: &Scope) -> Result<bool, TokenError> {
        let request = format!("capability_request({:?});\nscope_request({:?});\n{POLICY}", capability.name(), scope.as_str());
        let built = biscuit_auth::AuthorizerBuilder::new().time().code(&request).and_then(|b| b.set_limits(limits()).build(token));
        match built.and_then(|mut authorizer| authorizer.authorize()) {
            Ok(_) => Ok(true),
            Err(biscuit_auth::error::Token::RunLimit(limit)) => Err(refused(format!("checking the token ran past its limits: {limit}"))),
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn scopes() -> Vec<Scope> {
        ["replication_management", "node_management", "election_management"].iter().map(|s| Scope::new(s).unwrap()).collect()
    }

    fn key(authority: &TokenAuthority) -> TokenKey {
        TokenKey(PublicKey::from_pem(&authority.public_pem()).unwrap())
    }

    #[test]
    fn a_token_grants_what_it_names_and_attenuation_only_narrows() {
        let authority = TokenAuthority::generate();
        let caps = CapSet::of(&[StateManagement, ReplicationManagement, NodeManagement]);
        let token = authority.issue(&Principal::user("ci"), caps, &Scope::root(), Duration::from_secs(3600)).unwrap();
        let verified = key(&authority).verify(token.as_bytes(), &scopes(), &[]).unwrap();
        assert_eq!(verified.principal, Principal::user("ci"));
        assert_eq!(verified.grants.len(), 3);
        assert!(verified.grants.iter().all(|(_, c)| *c == caps));

        // Offline, without the key: only StateManagement, only in replication_management.
        let narrowed = attenuate(&token, Some(CapSet::of(&[StateManagement, EnergyManagement])), Some(&Scope::new("replication_management").unwrap()), None).unwrap();
        let verified = key(&authority).verify(narrowed.as_bytes(), &scopes(), &[]).unwrap();
        assert_eq!(verified.grants, vec![(Scope::new("replication_management").unwrap(), CapSet::of(&[StateManagement]))], "EnergyManagement was never granted");

        // A narrowed token cannot be widened again by another block.
        let widened = attenuate(&narrowed, Some(CapSet::all()), Some(&Scope::root()), None).unwrap();
        let verified = key(&authority).verify(widened.as_bytes(), &scopes(), &[]).unwrap();
        assert_eq!(verified.grants, vec![(Scope::new("replication_management").unwrap(), CapSet::of(&[StateManagement]))]);
    }

    #[test]
    fn forged_expired_revoked_and_garbage_tokens_are_refused() {
        let authority = TokenAuthority::generate();
        let ci = Principal::user("ci");
        let token = authority.issue(&ci, CapSet::of(&[StateManagement]), &Scope::root(), Duration::from_secs(3600)).unwrap();
        let other = TokenAuthority::generate();
        let err = key(&other).verify(token.as_bytes(), &scopes(), &[]).unwrap_err();
        assert!(err.to_string().contains("token refused"), "{err}");

        let expired = attenuate(&token, None, None, Some(Duration::ZERO)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let verified = key(&authority).verify(expired.as_bytes(), &scopes(), &[]).unwrap();
        assert!(verified.grants.is_empty(), "an expired token allows nothing: {verified:?}");

        let id = key(&authority).verify(token.as_bytes(), &scopes(), &[]).unwrap().id;
        assert!(matches!(key(&authority).verify(token.as_bytes(), &scopes(), &[id]), Err(TokenError::Revoked(_))));
        assert!(key(&authority).verify(b"not a token", &scopes(), &[]).is_err());
        assert!(key(&authority).verify(&[0xff, 0xfe], &scopes(), &[]).is_err());
    }
}
