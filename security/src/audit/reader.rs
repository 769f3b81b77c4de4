//! Reading a log back: every entry in order, or those a [`Filter`] selects.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::chain::{self, LineError};
use super::{list_segments, AuditEntry, Outcome, StoredEntry, Timestamp};

/// Why a log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing at the path.
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    /// A directory without segments.
    #[error("{0}: not an audit log (no segment-NNNNNN.jsonl files in it)")]
    NoSegments(PathBuf),
    /// A file with no entries.
    #[error("{0}: the audit log is empty")]
    Empty(PathBuf),
    /// A line that is not an audit entry.
    #[error("{path}, line {line}: not an audit entry: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// The file ends in a partial line: a crash during a write, or a write in progress.
    #[error("{path}: ends in a partial line of {bytes} bytes (a write in progress, or torn by a crash)")]
    TornTail {
        /// The file.
        path: PathBuf,
        /// Length of the partial line.
        bytes: usize,
    },
    /// A read failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// The files of a log, in order: the segments of a log directory, or one file.
#[derive(Debug, Clone)]
pub struct AuditReader {
    files: Vec<PathBuf>,
    dir: Option<PathBuf>,
}

impl AuditReader {
    /// A reader for a log directory or a single segment file.
    pub fn open(path: &Path) -> Result<AuditReader, ReadError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound(path.to_owned()),
            _ => ReadError::Io { path: path.to_owned(), source: e },
        })?;
        if meta.is_dir() {
            let segments = list_segments(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
            if segments.is_empty() {
                return Err(ReadError::NoSegments(path.to_owned()));
            }
            Ok(AuditReader { files: segments.into_iter().map(|(_, p)| p).collect(), dir: Some(path.to_owned()) })
        } else {
            Ok(AuditReader { files: vec![path.to_owned()], dir: None })
        }
    }

    /// The files, oldest first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The log directory, when the reader was opened on one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Every entry, oldest first. Each is checked against its own hash (an edited line is
    /// `Malformed`); chain links are [`verify`](super::verify)'s business. A partial final line
    /// ends the iteration with [`ReadError::TornTail`].
    pub fn entries(&self) -> impl Iterator<Item = Result<StoredEntry, ReadError>> + '_ {
        self.lines().map(|item| {
            let line = item?;
            chain::decode(&line.bytes, chain::Check::Unchecked).map_err(|e| line.error(e))
        })
    }

    /// Raw lines with their positions (for the verifier, which checks more than each line).
    pub(crate) fn lines(&self) -> impl Iterator<Item = Result<Line, ReadError>> + '_ {
        self.files.iter().flat_map(|path| FileLines::open(path))
    }
}

/// One line of a log file, without its newline.
pub(crate) struct Line {
    pub path: PathBuf,
    pub number: usize,
    pub bytes: Vec<u8>,
}

impl Line {
    pub(crate) fn error(&self, e: LineError) -> ReadError {
        let reason = match e {
            LineError::Malformed(why) => why,
            other => other.describe(),
        };
        ReadError::Malformed { path: self.path.clone(), line: self.number, reason }
    }
}

/// The lines of one file; stops after the first error.
enum FileLines {
    Open { path: PathBuf, reader: BufReader<File>, number: usize },
    Failed(Option<ReadError>),
}

impl FileLines {
    fn open(path: &Path) -> FileLines {
        match File::open(path) {
            Ok(file) => FileLines::Open { path: path.to_owned(), reader: BufReader::new(file), number: 0 },
            Err(source) => FileLines::Failed(Some(ReadError::Io { path: path.to_owned(), source })),
        }
    }
}

impl Iterator for FileLines {
    type Item = Result<Line, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (path, reader, number) = match self {
            FileLines::Failed(error) => return error.take().map(Err),
            FileLines::Open { path, reader, number } => (path, reader, number),
        };
        let mut bytes = Vec::new();
        let result = match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return None,
            Ok(_) if bytes.last() != Some(&b'\n') => Err(ReadError::TornTail { path: path.clone(), bytes: bytes.len() }),
            Ok(_) => {
                bytes.pop();
                *number += 1;
                Ok(Line { path: path.clone(), number: *number, bytes })
            }
            Err(source) => Err(ReadError::Io { path: path.clone(), source }),
        };
        if let Err(e) = result {
            *self = FileLines::Failed(None);
            return Some(Err(e));
        }
        Some(result)
    }
}

/// Selects entries; an unset field selects everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this operation.
    pub operation: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only requests refused before running.
    pub denied: bool,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether `entry` is selected.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.principal, &entry.principal)
            && is(&self.operation, &entry.operation)
            && is(&self.actor, &entry.actor)
            && (!self.denied || entry.outcome == Outcome::Denied)
            && self.since.is_none_or(|t| entry.ts >= Timestamp::from(t))
            && self.until.is_none_or(|t| entry.ts < Timestamp::from(t))
    }
}
