//! Checking a log end to end: every hash, every link, every sequence number, and `HEAD`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::chain::{self, AuditKey, Check, LineError, GENESIS};
use super::reader::{AuditReader, ReadError};
use super::HEAD_FILE;

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// Files checked.
    pub files: usize,
    /// Sequence number of the first entry.
    pub first_seq: u64,
    /// Sequence number of the last entry.
    pub last_seq: u64,
    /// Whether `HEAD` was checked (only for a log directory).
    pub head_checked: bool,
    /// Verifying a live log: the bytes of a final line still being written, if there was one.
    pub in_progress: Option<usize>,
}

/// How to verify a log.
#[derive(Debug, Clone, Default)]
pub struct Verification<'a> {
    /// The key the log is sealed with, if it is keyed.
    pub key: Option<&'a AuditKey>,
    /// The log is being written: a partial final line is a write in progress, not damage.
    pub live: bool,
}

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A line that is not an audit entry.
    Malformed(String),
    /// An entry whose content does not match its hash.
    Edited,
    /// An entry that does not link to the one before it.
    Relinked,
    /// Entries absent from where they belong.
    Missing {
        /// The first absent sequence number.
        expected: u64,
        /// The sequence number found in its place.
        found: u64,
    },
    /// Entries out of order.
    Reordered {
        /// The sequence number that belonged here.
        expected: u64,
        /// The sequence number found here.
        found: u64,
    },
    /// A partial final line.
    TornTail {
        /// Its length.
        bytes: usize,
    },
    /// The log ends before the entry `HEAD` records.
    Truncated {
        /// The entry `HEAD` records.
        head_seq: u64,
        /// The last entry present.
        last_seq: Option<u64>,
    },
    /// The entry `HEAD` records has another hash.
    HeadMismatch {
        /// That entry.
        seq: u64,
    },
    /// No `HEAD` beside the segments (or not a head record).
    HeadMissing(String),
    /// No entries at all.
    Empty,
    /// An entry follows the one numbered `u64::MAX`, the last a log can number.
    Exhausted {
        /// The sequence number found after it.
        found: u64,
    },
    /// The entry is sealed with a key, and no key was given.
    Keyed,
    /// The log is verified with a key, and this entry has a plain hash instead: it was written by
    /// someone without the key.
    Unkeyed,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed(why) => write!(f, "not an audit entry: {why}"),
            Problem::Edited => f.write_str("the entry's content does not match its hash: it was edited"),
            Problem::Relinked => {
                f.write_str("the entry does not link to the one before it: the entry before it was replaced or rewritten")
            }
            Problem::Missing { expected, found } if found - expected == 1 => {
                write!(f, "entry {expected} is missing (found {found} in its place): it was deleted")
            }
            Problem::Missing { expected, found } => {
                write!(f, "entries {expected} to {} are missing (found {found}): they were deleted", found - 1)
            }
            Problem::Reordered { expected, found } => {
                write!(f, "entry {found} stands where entry {expected} belongs: entries were reordered")
            }
            Problem::TornTail { bytes } => write!(
                f,
                "the log ends in a partial line of {bytes} bytes, torn by a crash during a write \
                 (opening the log for writing moves it aside and records the repair)"
            ),
            Problem::Truncated { head_seq, last_seq } => write!(
                f,
                "HEAD records entry {head_seq} but the log ends {}: the newest entries were removed",
                last_seq.map_or("before its first entry".to_string(), |s| format!("at entry {s}"))
            ),
            Problem::HeadMismatch { seq } => write!(f, "entry {seq} does not have the hash HEAD records for it: it was replaced"),
            Problem::Keyed => write!(f, "the entry is sealed with a key; verify with the key (ergon audit verify --key FILE)"),
            Problem::Unkeyed => {
                write!(f, "the entry has a plain hash where the key's seal belongs: written by someone without the key (forged)")
            }
            Problem::Exhausted { found } => {
                write!(f, "entry {found} follows entry {}, the last a log can number: the numbers were wrapped", u64::MAX)
            }
            Problem::HeadMissing(why) => write!(f, "{why}: removal of the newest entries could not be ruled out"),
            Problem::Empty => f.write_str("the log has no entries"),
        }
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read at all.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The log was read and something in it is wrong.
    #[error("{path}{}: {problem}", location(.line, .seq))]
    Broken {
        /// The file where the problem is.
        path: PathBuf,
        /// 1-based line number, when the problem is at a line.
        line: Option<usize>,
        /// The sequence number of the entry at fault, when known.
        seq: Option<u64>,
        /// What is wrong.
        problem: Problem,
    },
}

fn location(line: &Option<usize>, seq: &Option<u64>) -> String {
    match (line, seq) {
        (Some(l), Some(s)) => format!(", line {l} (entry {s})"),
        (Some(l), None) => format!(", line {l}"),
        _ => String::new(),
    }
}

fn broken(path: &Path, line: Option<usize>, seq: Option<u64>, problem: Problem) -> VerifyError {
    VerifyError::Broken { path: path.to_owned(), line, seq, problem }
}

#[derive(serde::Deserialize)]
struct Head {
    seq: Option<u64>,
    hash: String,
}

/// Verifies a log directory (segments and `HEAD`) or a single segment file sealed with `key`:
/// every entry must carry the key's seal, so a chain rebuilt by someone without the key fails.
pub fn verify_keyed(path: &Path, key: &AuditKey) -> Result<VerifyReport, VerifyError> {
    verify_with(path, &Verification { key: Some(key), live: false })
}

/// Verifies a log directory (segments and `HEAD`) or a single segment file.
///
/// A directory must start at entry 0 and end at or after the entry `HEAD` records; a single
/// file may start anywhere (it may continue an earlier segment) and has no `HEAD` to check.
/// Returns the first problem, with its file, line and entry.
///
/// This checks a plain hash chain, which anyone who can write the files can rebuild: it shows
/// accidents and careless edits, not a deliberate forger. A keyed log is refused here (its seals
/// need the key); see [`verify_keyed`].
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_with(path, &Verification::default())
}

/// Verifies a log as `how` says: with or without its key, finished or live.
pub fn verify_with(path: &Path, how: &Verification<'_>) -> Result<VerifyReport, VerifyError> {
    let check = how.key.map_or(Check::Unkeyed, Check::Key);
    let mut in_progress = None;
    let reader = AuditReader::open(path)?;
    let head = match reader.dir() {
        Some(dir) => {
            let head_path = dir.join(HEAD_FILE);
            let text = std::fs::read_to_string(&head_path)
                .map_err(|e| broken(&head_path, None, None, Problem::HeadMissing(format!("cannot read HEAD ({e})"))))?;
            let head: Head = serde_json::from_str(&text)
                .map_err(|e| broken(&head_path, None, None, Problem::HeadMissing(format!("HEAD is not a head record ({e})"))))?;
            Some((head_path, head))
        }
        None => None,
    };

    let mut lines = reader.lines();
    let mut last: Option<(u64, String)> = None;
    let mut first_seq = None;
    let mut entries = 0;
    let mut last_place = None;
    while let Some(item) = lines.next() {
        let line = match item {
            Ok(line) => line,
            // Only the newest segment can have a write in progress.
            Err(ReadError::TornTail { path, bytes }) if how.live && reader.files().last() == Some(&path) => {
                in_progress = Some(bytes);
                break;
            }
            Err(ReadError::TornTail { path, bytes }) => {
                let next_line = last_place.as_ref().filter(|(p, _)| *p == path).map_or(1, |(_, n)| n + 1);
                return Err(broken(&path, Some(next_line), None, Problem::TornTail { bytes }));
            }
            Err(e) => return Err(e.into()),
        };
        let at = |seq, problem| broken(&line.path, Some(line.number), seq, problem);
        let stored = match chain::decode(&line.bytes, check) {
            Ok(stored) => stored,
            Err(LineError::Malformed(why)) => return Err(at(None, Problem::Malformed(why))),
            Err(LineError::HashMismatch { seq }) => return Err(at(Some(seq), Problem::Edited)),
            Err(LineError::Keyed { seq }) => return Err(at(Some(seq), Problem::Keyed)),
            Err(LineError::Unkeyed { seq }) => return Err(at(Some(seq), Problem::Unkeyed)),
        };
        let seq = stored.seq;
        let expected = match &last {
            Some((prev_seq, _)) => match prev_seq.checked_add(1) {
                Some(next) => Some(next),
                None => return Err(at(Some(seq), Problem::Exhausted { found: seq })),
            },
            None if reader.dir().is_some() => Some(0),
            None => None,
        };
        match expected {
            Some(expected) if seq > expected => {
                let later = lines
                    .by_ref()
                    .filter_map(Result::ok)
                    .any(|l| chain::decode(&l.bytes, check).is_ok_and(|s| s.seq == expected));
                let problem = if later { Problem::Reordered { expected, found: seq } } else { Problem::Missing { expected, found: seq } };
                return Err(at(Some(seq), problem));
            }
            Some(expected) if seq < expected => return Err(at(Some(seq), Problem::Reordered { expected, found: seq })),
            _ => {}
        }
        let expected_prev = last.as_ref().map_or(if seq == 0 { Some(GENESIS) } else { None }, |(_, h)| Some(h.as_str()));
        if expected_prev.is_some_and(|p| p != stored.prev) {
            return Err(at(Some(seq), Problem::Relinked));
        }
        if let Some((head_path, head)) = &head {
            if head.seq == Some(seq) && head.hash != stored.hash {
                return Err(broken(head_path, None, Some(seq), Problem::HeadMismatch { seq }));
            }
        }
        first_seq.get_or_insert(seq);
        entries += 1;
        last_place = Some((line.path.clone(), line.number));
        last = Some((seq, stored.hash));
    }
    let last_seq = last.as_ref().map(|(s, _)| *s);
    if let Some((head_path, head)) = &head {
        if let Some(head_seq) = head.seq {
            if last_seq.is_none_or(|l| l < head_seq) {
                let (path, line) = last_place.clone().map_or((head_path.clone(), None), |(p, n)| (p, Some(n)));
                return Err(broken(&path, line, last_seq, Problem::Truncated { head_seq, last_seq }));
            }
        }
    }
    match (first_seq, last_seq) {
        (Some(first_seq), Some(last_seq)) => Ok(VerifyReport {
            entries,
            files: reader.files().len(),
            first_seq,
            last_seq,
            head_checked: head.is_some(),
            in_progress,
        }),
        _ => Err(match reader.dir() {
            Some(dir) => broken(dir, None, None, Problem::Empty),
            None => ReadError::Empty(path.to_owned()).into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::audit::{AuditEntry, EntryKind, Outcome};

    #[test]
    fn sequence_numbers_do_not_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment-wrapped.jsonl");
        let entry = AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "a", "user:mallory", "join", "w1");
        let (mut scratch, mut line) = (Vec::new(), Vec::new());
        let mut file = std::fs::File::create(&path).unwrap();
        let last = chain::encode(u64::MAX, GENESIS, &entry, None, &mut scratch, &mut line);
        file.write_all(&line).unwrap();
        chain::encode(0, &last, &entry, None, &mut scratch, &mut line);
        file.write_all(&line).unwrap();
        drop(file);
        let err = verify(&path).unwrap_err().to_string();
        assert!(err.contains("the numbers were wrapped"), "{err}");
    }
}
