//! The line format and its hash chain.
//!
//! A line is `{"seq":N,"prev":"<hex>",<entry fields>,"hash":"<hex>"}`. The hash covers the line
//! with its `,"hash":"…"` suffix removed and the closing brace kept, byte for byte as written, so
//! verification needs no canonical re-serialisation: any changed byte changes the hash.

use sha2::{Digest, Sha256};

use super::{AuditEntry, StoredEntry};

/// The `prev` of the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &[u8] = br#","hash":""#;
/// `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Writes `entry` as line `seq` chained to `prev` into `line` (with its newline); returns its hash.
pub(crate) fn encode(seq: u64, prev: &str, entry: &AuditEntry, scratch: &mut Vec<u8>, line: &mut Vec<u8>) -> String {
    scratch.clear();
    serde_json::to_writer(&mut *scratch, entry).expect("audit entries serialise: no maps with non-string keys");
    line.clear();
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\",");
    line.extend_from_slice(&scratch[1..]); // the entry's fields and its closing brace
    let hash = hex::encode(Sha256::digest(&line[..]));
    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    hash
}

/// Why a line is not a well-formed chained entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not an entry at all.
    Malformed(String),
    /// Well-formed, but its content does not hash to its `hash`.
    HashMismatch {
        /// The sequence number the line claims.
        seq: u64,
    },
}

/// Parses a line (without its newline) and checks it against its own hash.
pub(crate) fn decode(line: &[u8]) -> Result<StoredEntry, LineError> {
    let stored: StoredEntry = serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    let n = line.len();
    if n < SUFFIX_LEN || &line[n - SUFFIX_LEN..n - SUFFIX_LEN + HASH_KEY.len()] != HASH_KEY || &line[n - 2..] != b"\"}" {
        return Err(LineError::Malformed("the line does not end with its \"hash\" field".into()));
    }
    let mut hasher = Sha256::new();
    hasher.update(&line[..n - SUFFIX_LEN]);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()) != stored.hash {
        return Err(LineError::HashMismatch { seq: stored.seq });
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
        let hash = encode(7, GENESIS, &original, &mut scratch, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let stored = decode(&line[..line.len() - 1]).unwrap();
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
            encode(0, GENESIS, &original, &mut scratch, &mut line);
            line.pop();
            assert!(String::from_utf8_lossy(&line).contains(fields), "{}", String::from_utf8_lossy(&line));
            let read = decode(&line).unwrap().entry;
            assert_eq!((read.error(), read.reason(), read.alert()), (original.error(), original.reason(), original.alert()));
            assert_eq!(read, original);
        }
    }

    #[test]
    fn changing_any_byte_of_the_content_breaks_the_hash() {
        let (mut scratch, mut line) = (Vec::new(), Vec::new());
        encode(0, GENESIS, &entry(), &mut scratch, &mut line);
        line.pop();
        let text = String::from_utf8(line).unwrap().replace("\"n1\"", "\"n2\"");
        assert_eq!(decode(text.as_bytes()).unwrap_err(), LineError::HashMismatch { seq: 0 });
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [&b""[..], b"{", b"\xff\xfe", b"[1,2]", br#"{"seq":1}"#] {
            assert!(matches!(decode(bad), Err(LineError::Malformed(_))), "{bad:?}");
        }
    }
}
