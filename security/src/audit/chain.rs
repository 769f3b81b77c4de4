//! The line format and its hash chain.
//!
//! A line is `{"seq":N,"prev":"<hex>",<entry fields>,"hash":"<hex>"}`. The hash covers the line
//! with its `,"hash":"…"` suffix removed and the closing brace kept, byte for byte as written, so
//! verification needs no canonical re-serialisation: any changed byte changes the hash.
//!
//! With an [`AuditKey`], the seal is `"mac"` instead of `"hash"`: HMAC-SHA256 of the same bytes
//! under the key. A plain hash chain shows accidents and careless edits, but anyone who can write
//! the files can rebuild it; a keyed chain cannot be rebuilt without the key.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{AuditEntry, StoredEntry};

/// The secret a keyed log is sealed with: at least 32 bytes.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

/// Why a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("audit key {path}: {why}")]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key is too short to be a secret.
    #[error("audit key: {0} bytes is too short; use at least 32 random bytes (for instance `head -c 32 /dev/urandom | xxd -p -c 64`)")]
    TooShort(usize),
}

impl AuditKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < 32 {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(AuditKey(bytes.to_vec()))
    }

    /// The key in a file: hexadecimal text (64 digits or more), or raw bytes; at most 4 KiB.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let unreadable = |why: String| KeyError::Unreadable { path: path.to_owned(), why };
        let metadata = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
        if !metadata.is_file() || metadata.len() > 4096 {
            return Err(unreadable("not a regular file of at most 4 KiB".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        match hex::decode(text.trim()) {
            Ok(decoded) => AuditKey::from_bytes(&decoded),
            Err(_) => AuditKey::from_bytes(&bytes),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({} bytes)", self.0.len())
    }
}

/// What a reader can check of a line's seal.
#[derive(Clone, Copy)]
pub(crate) enum Check<'a> {
    /// Hashes only: a keyed line is an error (it cannot be checked).
    Unkeyed,
    /// Every line must be sealed with this key.
    Key(&'a AuditKey),
    /// Hashes are checked; keyed lines are read without being checked (to show a log, not to
    /// vouch for it).
    Unchecked,
}

/// The `prev` of the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &[u8] = br#","hash":""#;
const MAC_KEY: &[u8] = br#","mac":""#;

/// Writes `entry` as line `seq` chained to `prev` into `line` (with its newline), sealed with
/// `key` if there is one; returns its seal.
pub(crate) fn encode(
    seq: u64,
    prev: &str,
    entry: &AuditEntry,
    key: Option<&AuditKey>,
    scratch: &mut Vec<u8>,
    line: &mut Vec<u8>,
) -> String {
    scratch.clear();
    serde_json::to_writer(&mut *scratch, entry).expect("audit entries serialise: no maps with non-string keys");
    line.clear();
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\",");
    line.extend_from_slice(&scratch[1..]); // the entry's fields and its closing brace
    let (seal, field) = match key {
        None => (hex::encode(Sha256::digest(&line[..])), HASH_KEY),
        Some(key) => (hex::encode(key.mac().chain_update(&line[..]).finalize().into_bytes()), MAC_KEY),
    };
    line.pop();
    line.extend_from_slice(field);
    line.extend_from_slice(seal.as_bytes());
    line.extend_from_slice(b"\"}\n");
    seal
}

/// Why a line is not a well-formed chained entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not an entry at all.
    Malformed(String),
    /// Well-formed, but its content does not hash to its `hash` (or, keyed, to its `mac`).
    HashMismatch {
        /// The sequence number the line claims.
        seq: u64,
    },
    /// Sealed with a key, and read without it.
    Keyed {
        /// The sequence number the line claims.
        seq: u64,
    },
    /// Read with a key, and sealed with a plain hash: someone without the key wrote it.
    Unkeyed {
        /// The sequence number the line claims.
        seq: u64,
    },
}

impl LineError {
    /// What is wrong, in words.
    pub(crate) fn describe(&self) -> String {
        match self {
            LineError::Malformed(why) => format!("not an audit entry ({why})"),
            LineError::HashMismatch { .. } => "its content does not match its seal (edited)".into(),
            LineError::Keyed { .. } => "it is sealed with a key; give the key to check it".into(),
            LineError::Unkeyed { .. } => "it has a plain hash where the key's seal belongs (written without the key)".into(),
        }
    }
}

/// Parses a line (without its newline) and checks it against its own seal, as far as `check` can.
pub(crate) fn decode(line: &[u8], check: Check<'_>) -> Result<StoredEntry, LineError> {
    let stored: StoredEntry = serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    let n = line.len();
    let sealed_by = |field: &[u8]| {
        let suffix = field.len() + 64 + 2;
        (n >= suffix && &line[n - suffix..n - suffix + field.len()] == field && &line[n - 2..] == b"\"}").then_some(suffix)
    };
    let seq = stored.seq;
    let (content, keyed) = match (sealed_by(HASH_KEY), sealed_by(MAC_KEY)) {
        (Some(suffix), _) => (&line[..n - suffix], false),
        (None, Some(suffix)) => (&line[..n - suffix], true),
        (None, None) => return Err(LineError::Malformed("the line does not end with its \"hash\" or \"mac\" field".into())),
    };
    let expected = match (keyed, check) {
        (false, Check::Key(_)) => return Err(LineError::Unkeyed { seq }),
        (false, _) => hex::encode(Sha256::new().chain_update(content).chain_update(b"}").finalize()),
        (true, Check::Key(key)) => hex::encode(key.mac().chain_update(content).chain_update(b"}").finalize().into_bytes()),
        (true, Check::Unkeyed) => return Err(LineError::Keyed { seq }),
        (true, Check::Unchecked) => return Ok(stored),
    };
    if expected != stored.hash {
        return Err(LineError::HashMismatch { seq });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Detail, EntryKind, Outcome};

    fn entry() -> AuditEntry {
        AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "a", "p", "join", "n1")
    }

    #[test]
    fn an_encoded_line_decodes_to_the_same_entry() {
        let (mut scratch, mut line) = (Vec::new(), Vec::new());
        let original = entry();
        let hash = encode(7, GENESIS, &original, None, &mut scratch, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let stored = decode(&line[..line.len() - 1], Check::Unkeyed).unwrap();
        assert_eq!((stored.seq, stored.prev.as_str(), stored.hash), (7, GENESIS, hash));
        assert_eq!(stored.entry, original);
    }

    #[test]
    fn details_are_written_as_their_own_fields_and_read_back() {
        let mut refused = entry();
        refused.detail = Detail::from_error("PermissionDenied", "lacks {Join}".into());
        let mut alert = entry();
        alert.detail = Detail::from_alert("warning", "80% used".into());
        for (original, fields) in [
            (entry(), r#""resource":"n1","hash""#),
            (refused, r#""resource":"n1","error":"PermissionDenied","reason":"lacks {Join}","hash""#),
            (alert, r#""resource":"n1","reason":"80% used","alert":"warning","hash""#),
        ] {
            let (mut scratch, mut line) = (Vec::new(), Vec::new());
            encode(0, GENESIS, &original, None, &mut scratch, &mut line);
            line.pop();
            assert!(String::from_utf8_lossy(&line).contains(fields), "{}", String::from_utf8_lossy(&line));
            let read = decode(&line, Check::Unkeyed).unwrap().entry;
            assert_eq!((read.error(), read.reason(), read.alert()), (original.error(), original.reason(), original.alert()));
            assert_eq!(read, original);
        }
    }

    #[test]
    fn changing_any_byte_of_the_content_breaks_the_hash() {
        let (mut scratch, mut line) = (Vec::new(), Vec::new());
        encode(0, GENESIS, &entry(), None, &mut scratch, &mut line);
        line.pop();
        let text = String::from_utf8(line).unwrap().replace("\"n1\"", "\"n2\"");
        assert_eq!(decode(text.as_bytes(), Check::Unkeyed).unwrap_err(), LineError::HashMismatch { seq: 0 });
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [&b""[..], b"{", b"\xff\xfe", b"[1,2]", br#"{"seq":1}"#] {
            assert!(matches!(decode(bad, Check::Unkeyed), Err(LineError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_keyed_line_checks_only_with_its_key() {
        let key = AuditKey::from_bytes(&[7; 32]).unwrap();
        let other = AuditKey::from_bytes(&[8; 32]).unwrap();
        let (mut scratch, mut line) = (Vec::new(), Vec::new());
        let mac = encode(3, GENESIS, &entry(), Some(&key), &mut scratch, &mut line);
        line.pop();
        assert!(String::from_utf8_lossy(&line).ends_with(&format!(",\"mac\":\"{mac}\"}}")));
        assert_eq!(decode(&line, Check::Key(&key)).unwrap().hash, mac);
        assert_eq!(decode(&line, Check::Key(&other)), Err(LineError::HashMismatch { seq: 3 }));
        assert_eq!(decode(&line, Check::Unkeyed), Err(LineError::Keyed { seq: 3 }));
        assert!(decode(&line, Check::Unchecked).is_ok(), "readable without the key, not vouched for");
        encode(3, GENESIS, &entry(), None, &mut scratch, &mut line);
        line.pop();
        assert_eq!(decode(&line, Check::Key(&key)), Err(LineError::Unkeyed { seq: 3 }), "a rebuilt plain chain");
        assert!(matches!(AuditKey::from_bytes(b"short"), Err(KeyError::TooShort(5))));
    }
}
