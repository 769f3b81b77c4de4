//! The durable audit log: a writer thread, segments, `HEAD`, and repair on open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::chain::{self, AuditKey, Check, KeyError, LineError, GENESIS};
use super::{list_segments, segment_name, AuditEntry, AuditSink, Detail, Durable, EntryKind, Outcome, Unavailable, HEAD_FILE};

/// When written entries are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `fsync` after every entry: nothing acknowledged is lost, at a disk flush per entry.
    EveryEntry,
    /// `fsync` at most every this many milliseconds: a crash loses at most that window.
    IntervalMs(u64),
    /// Never `fsync`; the operating system writes back when it likes.
    Never,
    /// `fsync` before a request is answered: the gate holds each reply until its entry is on
    /// disk. Entries that arrive while a sync runs share the next one (group commit), so the cost
    /// is one disk flush per batch, not per entry.
    BeforeReply,
}

/// What the log does when it cannot write (as auditd's `disk_full_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse gated requests (`AuditUnavailable`) until the log can write again.
    #[default]
    Refuse,
    /// End the process (exit status 75, `EX_TEMPFAIL`), so that a supervisor restarts the node
    /// elsewhere rather than have it run unaudited or refuse everything.
    Stop,
}

/// The exit status of a process the audit log stopped ([`OnFailure::Stop`]).
pub const EXIT_AUDIT_FAILED: i32 = 75;

/// What [`OnFailure::Stop`] does: called once, on the writer's thread, with the reason.
pub type StopHook = Arc<dyn Fn(&str) + Send + Sync>;

fn exit_process(why: &str) {
    eprintln!("ergon: {why}");
    std::process::exit(EXIT_AUDIT_FAILED);
}

/// Where and how to keep an audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log's directory; created if missing.
    pub dir: PathBuf,
    /// When entries reach the disk.
    #[serde(default = "default_durability")]
    pub durability: Durability,
    /// A segment is closed and a new one started before it would grow past this size.
    #[serde(default = "default_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Bytes of entries queued for the writer before the log says it cannot take more
    /// ([`AuditSink::available`]), and the gate refuses requests until the writer catches up.
    /// Recording never waits, so the actors' threads are never blocked by the disk.
    #[serde(default = "default_queue_bytes")]
    pub max_queue_bytes: u64,
    /// What to do when the log cannot write.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A file holding the key that seals every entry (HMAC-SHA256; 32 bytes or more, as hex or
    /// raw). Without one the chain is a plain hash chain, which shows accidents and careless edits
    /// but not someone who rewrites the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_durability() -> Durability {
    Durability::IntervalMs(10)
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_queue_bytes() -> u64 {
    64 << 20
}

impl AuditConfig {
    /// The defaults (fsync every 10 ms, 64 MiB segments) for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AuditConfig {
            dir: dir.into(),
            durability: default_durability(),
            max_segment_bytes: default_segment_bytes(),
            max_queue_bytes: default_queue_bytes(),
            on_failure: OnFailure::Refuse,
            key_file: None,
        }
    }
}

/// Why the audit log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The newest complete entry is not a valid entry: the log was damaged, not torn by a crash.
    #[error("audit log {path}, line {line}: {reason}; refusing to extend a damaged chain (run `ergon audit verify`)")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `HEAD` names an entry past the end of the log: the newest entries were removed.
    #[error(
        "audit log {dir}: HEAD records entry {head_seq}, but the log ends {}; the newest entries were removed \
         (run `ergon audit verify`)",
        .last_seq.map_or("before its first entry".to_string(), |s| format!("at entry {s}"))
    )]
    HeadAhead {
        /// The log directory.
        dir: PathBuf,
        /// The sequence number `HEAD` records.
        head_seq: u64,
        /// The last sequence number present.
        last_seq: Option<u64>,
    },
    /// The writer thread could not write; the entries it holds are kept and retried.
    #[error("audit writer: {message} ({pending} entries waiting to be written)")]
    Writer {
        /// The last error.
        message: String,
        /// Entries not yet on disk.
        pending: usize,
    },
    /// The writer thread has stopped.
    #[error("the audit writer thread has stopped")]
    WriterGone,
    /// The configured key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io { path: path.to_owned(), source }
}

/// What opening the log found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReport {
    /// The sequence number the next entry gets.
    pub next_seq: u64,
    /// Segments present after opening.
    pub segments: usize,
    /// How a torn final line was repaired, if there was one.
    pub repaired: Option<TailRepair>,
}

/// A torn final line found on open (a crash during a write), and what was done with it.
#[derive(Debug, Clone, PartialEq)]
pub enum TailRepair {
    /// The line was whole but for its newline, and chained correctly: the newline was added.
    Completed {
        /// The segment.
        file: PathBuf,
        /// The entry's sequence number.
        seq: u64,
    },
    /// The bytes were not a whole entry: they were moved to a side file and cut from the segment.
    Moved {
        /// The segment.
        file: PathBuf,
        /// How many bytes.
        bytes: usize,
        /// Where they were saved.
        saved_to: PathBuf,
    },
}

// Entries travel unboxed: boxing would put an allocation on the gate's path for every message.
#[allow(clippy::large_enum_variant)]
enum Command {
    Entry(AuditEntry, Option<Durable>),
    Flush(SyncSender<Result<(), AuditError>>),
}

/// Whether the log can take entries, shared by the log's users and its writer.
#[derive(Default)]
struct Health {
    /// Set while writes fail, and for good once an fsync has failed.
    failed: AtomicBool,
    fatal: AtomicBool,
    reason: Mutex<String>,
    /// Bytes of entries recorded and not yet taken by the writer (an estimate of each).
    queued: AtomicU64,
    /// Times the writer forced the current segment to disk.
    syncs: AtomicU64,
}

impl Health {
    fn fail(&self, reason: String, fatal: bool) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        if fatal {
            self.fatal.store(true, Ordering::Release);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn recover(&self) {
        if !self.fatal.load(Ordering::Acquire) {
            self.failed.store(false, Ordering::Release);
        }
    }
}

/// What an entry costs the queue, roughly: its fixed part and its strings.
fn queued_size(entry: &AuditEntry) -> u64 {
    (std::mem::size_of::<AuditEntry>() + entry.principal.len() + entry.resource.len() + entry.reason().map_or(0, str::len)) as u64
}

/// The durable [`AuditSink`]: entries are queued and written by a writer thread in batches.
///
/// [`record`](AuditSink::record) returns after queuing; it waits only when the queue is full, so
/// that a writer that falls behind slows the gate down rather than losing entries.
/// [`flush`](Self::flush) waits until everything recorded before it is on disk. Dropping the log
/// writes what is queued; [`close`](Self::close) does so and reports any error.
pub struct AuditLog {
    queue: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
    health: Arc<Health>,
    max_queue_bytes: u64,
    before_reply: bool,
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir`, repairing a torn final line.
    pub fn open(config: AuditConfig) -> Result<(AuditLog, OpenReport), AuditError> {
        AuditLog::open_with_stop(config, Arc::new(exit_process))
    }

    /// Like [`open`](Self::open), with what [`OnFailure::Stop`] does instead of ending the
    /// process (an application that stops its nodes itself, or a test).
    pub fn open_with_stop(config: AuditConfig, stop: StopHook) -> Result<(AuditLog, OpenReport), AuditError> {
        let health = Arc::new(Health::default());
        let (mut writer, report) = Writer::open(&config)?;
        writer.health = health.clone();
        writer.stop = stop;
        let (queue, commands) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("ergon-audit".into())
            .spawn(move || writer.run(commands))
            .map_err(io_err(&config.dir))?;
        let before_reply = config.durability == Durability::BeforeReply;
        let log = AuditLog { queue: Some(queue), writer: Some(handle), dir: config.dir, health, max_queue_bytes: config.max_queue_bytes, before_reply };
        Ok((log, report))
    }

    /// How many times the writer has forced the log to disk: with
    /// [`Durability::BeforeReply`], far fewer than the entries, since a batch shares one.
    pub fn syncs(&self) -> u64 {
        self.health.syncs.load(Ordering::Relaxed)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until every entry recorded before this call is written, synced (unless durability is
    /// [`Durability::Never`]) and recorded in `HEAD`.
    pub fn flush(&self) -> Result<(), AuditError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let queue = self.queue.as_ref().ok_or(AuditError::WriterGone)?;
        queue.send(Command::Flush(reply)).map_err(|_| AuditError::WriterGone)?;
        self.wake_writer();
        answer.recv().map_err(|_| AuditError::WriterGone)?
    }

    /// Someone waits for the writer: it should not finish an idle nap first. A wake-up costs a
    /// system call only if the writer is napping, and a waiter waits for a sync anyway.
    fn wake_writer(&self) {
        if let Some(writer) = &self.writer {
            writer.thread().unpark();
        }
    }

    /// Flushes and stops the writer.
    pub fn close(mut self) -> Result<(), AuditError> {
        let result = self.flush();
        self.stop();
        result
    }

    fn stop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AuditLog {
    fn send(&self, entry: AuditEntry, done: Option<Durable>) {
        self.health.queued.fetch_add(queued_size(&entry), Ordering::Relaxed);
        let waited_for = done.is_some();
        let unsent = match &self.queue {
            Some(queue) => queue.send(Command::Entry(entry, done)).err().map(|e| e.0),
            None => Some(Command::Entry(entry, done)),
        };
        if waited_for {
            self.wake_writer();
        }
        if let Some(Command::Entry(_, done)) = unsent {
            tracing::error!(dir = %self.dir.display(), "audit writer has stopped; entry not recorded");
            if let Some(done) = done {
                done(Err(Unavailable(format!("audit log {}: the writer has stopped", self.dir.display()))));
            }
        }
    }
}

impl AuditSink for AuditLog {
    fn record(&self, entry: AuditEntry) {
        self.send(entry, None);
    }

    fn replies_after_durable(&self) -> bool {
        self.before_reply
    }

    fn record_durable(&self, entry: AuditEntry, done: Durable) {
        self.send(entry, Some(done));
    }

    fn available(&self) -> Result<(), Unavailable> {
        if self.health.failed.load(Ordering::Acquire) {
            let reason = self.health.reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(Unavailable(format!("audit log {}: {reason}", self.dir.display())));
        }
        let queued = self.health.queued.load(Ordering::Relaxed);
        if queued >= self.max_queue_bytes {
            return Err(Unavailable(format!(
                "audit log {}: {queued} bytes of entries wait for the writer (audit.max_queue_bytes is {})",
                self.dir.display(),
                self.max_queue_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Head {
    seq: Option<u64>,
    hash: String,
}

/// The writer thread's state. Everything here happens off the gate's path.
struct Writer {
    dir: PathBuf,
    key: Option<AuditKey>,
    on_failure: OnFailure,
    stop: StopHook,
    health: Arc<Health>,
    /// Why the writer cannot go on: an fsync failed, after which the kernel may already have
    /// dropped the data, so nothing written since can be trusted to be on disk.
    fatal: Option<String>,
    durability: Durability,
    max_segment_bytes: u64,
    segment: u32,
    file: File,
    /// Length of the current segment up to its last complete entry.
    segment_bytes: u64,
    next_seq: u64,
    last_hash: String,
    /// Lines encoded but not yet written.
    batch: Vec<u8>,
    scratch: Vec<u8>,
    line: Vec<u8>,
    /// Entries whose write failed; retried before anything newer.
    pending: Vec<AuditEntry>,
    /// Entries written since the last checkpoint (fsync + `HEAD`).
    unsynced: bool,
    last_checkpoint: Instant,
    last_error: Option<String>,
}

/// How long the writer waits before retrying after a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// `HEAD` is rewritten at least this often under [`Durability::Never`].
const NEVER_CHECKPOINT: Duration = Duration::from_secs(1);
/// Most commands taken from the queue per batch.
const BATCH: usize = 4096;
/// The writer's shortest and longest naps between polls of its queue.
const POLL_MIN: Duration = Duration::from_micros(200);
const POLL_MAX: Duration = Duration::from_millis(20);

impl Writer {
    fn open(config: &AuditConfig) -> Result<(Writer, OpenReport), AuditError> {
        let dir = &config.dir;
        let key = config.key_file.as_deref().map(AuditKey::load).transpose()?;
        let check = key.as_ref().map_or(Check::Unkeyed, Check::Key);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segments = list_segments(dir).map_err(io_err(dir))?;
        let mut repaired = None;
        let mut last: Option<(u64, String)> = None;
        // Walk back from the newest segment to the newest complete entry.
        for (i, (_, path)) in segments.iter().enumerate().rev() {
            let is_newest = i + 1 == segments.len();
            let mut bytes = fs::read(path).map_err(io_err(path))?;
            if is_newest {
                let before_tail = last_entry(path, &bytes, check)?;
                repaired = repair_tail(path, &mut bytes, before_tail.as_ref(), check)?;
            }
            if let Some(found) = last_entry(path, &bytes, check)? {
                last = Some(found);
                break;
            }
        }
        let head_path = dir.join(HEAD_FILE);
        if let Ok(text) = fs::read_to_string(&head_path) {
            let head: Head = serde_json::from_str(&text).map_err(|e| AuditError::Corrupt {
                path: head_path.clone(),
                line: 1,
                reason: format!("HEAD is not a head record: {e}"),
            })?;
            let last_seq = last.as_ref().map(|(s, _)| *s);
            if let Some(head_seq) = head.seq {
                if last_seq.is_none_or(|l| l < head_seq) {
                    return Err(AuditError::HeadAhead { dir: dir.clone(), head_seq, last_seq });
                }
            }
        }
        let segment = segments.last().map_or(1, |(index, _)| *index);
        let path = dir.join(segment_name(segment));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        let segment_bytes = file.metadata().map_err(io_err(&path))?.len();
        let (next_seq, last_hash) = last.map_or((0, GENESIS.to_owned()), |(seq, hash)| (seq + 1, hash));
        let mut writer = Writer {
            dir: dir.clone(),
            key,
            on_failure: config.on_failure,
            stop: Arc::new(exit_process),
            health: Arc::default(),
            fatal: None,
            durability: config.durability,
            max_segment_bytes: config.max_segment_bytes,
            segment,
            file,
            segment_bytes,
            next_seq,
            last_hash,
            batch: Vec::new(),
            scratch: Vec::new(),
            line: Vec::new(),
            pending: Vec::new(),
            unsynced: false,
            last_checkpoint: Instant::now(),
            last_error: None,
        };
        if let Some(TailRepair::Moved { file, bytes, saved_to }) = &repaired {
            tracing::warn!(file = %file.display(), bytes, saved_to = %saved_to.display(), "audit log: torn final line moved aside");
            let mut entry = AuditEntry::new(EntryKind::LogRepair, Outcome::Allowed, "audit-log", "system", "repair", &file.display().to_string());
            entry.detail = Detail::from_reason(format!(
                "torn final line of {bytes} bytes (a crash during a write) moved to {}",
                saved_to.display()
            ));
            writer.write_all(vec![entry]).map_err(io_err(dir))?;
        }
        writer.checkpoint().map_err(io_err(dir))?;
        let segments = list_segments(dir).map_err(io_err(dir))?.len();
        let next_seq = writer.next_seq;
        Ok((writer, OpenReport { next_seq, segments, repaired }))
    }

    /// Polls the queue rather than blocking on it: a writer parked in `recv` would have every
    /// `record` pay a futex wake-up, a system call per gated message. Polling backs off while
    /// idle and never sleeps past the next checkpoint; an entry someone waits on (durability
    /// `before_reply`) or a flush wakes it from its nap.
    fn run(mut self, commands: Receiver<Command>) {
        let interval = match self.durability {
            Durability::EveryEntry => Duration::ZERO,
            Durability::IntervalMs(ms) => Duration::from_millis(ms),
            Durability::Never => NEVER_CHECKPOINT,
            Durability::BeforeReply => Duration::from_millis(10),
        };
        let mut idle = POLL_MIN;
        loop {
            let mut entries = std::mem::take(&mut self.pending);
            let retrying = !entries.is_empty();
            let mut waiters = Vec::new();
            let mut durable: Vec<Durable> = Vec::new();
            let mut closed = false;
            let mut taken = 0;
            while taken < BATCH {
                match commands.try_recv() {
                    Ok(Command::Entry(entry, done)) => {
                        self.health.queued.fetch_sub(queued_size(&entry), Ordering::Relaxed);
                        entries.push(entry);
                        durable.extend(done);
                    }
                    Ok(Command::Flush(reply)) => waiters.push(reply),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
                taken += 1;
            }
            // A test stalls the writer here (a slow disk) to see the queue's bound hold.
            fail::fail_point!("audit-writer-stall");
            let mut result = self.write_all(entries);
            // Everyone waiting for this batch shares one sync: the group commit.
            let due = !waiters.is_empty() || !durable.is_empty() || self.last_checkpoint.elapsed() >= interval;
            if result.is_ok() && self.unsynced && due {
                result = self.checkpoint();
            }
            match (&self.fatal, result) {
                (Some(why), _) => {
                    tracing::error!(dir = %self.dir.display(), "audit log stopped: {why}");
                    self.stop_process_if_configured(why);
                    self.health.fail(why.clone(), true);
                    for done in durable {
                        done(Err(Unavailable(why.clone())));
                    }
                    for reply in waiters {
                        let _ = reply.send(Err(AuditError::Writer { message: why.clone(), pending: self.pending.len() }));
                    }
                    return;
                }
                (None, Ok(())) => {
                    self.last_error = None;
                    self.health.recover();
                    // Durable only if nothing is still pending (an earlier failure's retry).
                    let answer = if self.pending.is_empty() { Ok(()) } else { Err(Unavailable("entries still wait to be written".into())) };
                    for done in durable {
                        done(answer.clone());
                    }
                }
                (None, Err(e)) => {
                    self.stop_process_if_configured(&e.to_string());
                    tracing::error!(dir = %self.dir.display(), error = %e, pending = self.pending.len(), "audit log write failed; requests are refused until it can write");
                    self.health.fail(format!("cannot write ({e}); {} entries wait", self.pending.len()), false);
                    self.last_error = Some(e.to_string());
                    for done in durable {
                        done(Err(Unavailable(format!("the entry is not durable: {e}"))));
                    }
                }
            }
            for reply in waiters {
                let answer = match &self.last_error {
                    None => Ok(()),
                    Some(message) => Err(AuditError::Writer { message: message.clone(), pending: self.pending.len() }),
                };
                let _ = reply.send(answer);
            }
            if closed {
                break;
            }
            if taken == BATCH {
                continue;
            }
            idle = if taken > 0 || retrying { POLL_MIN } else { (idle * 2).min(POLL_MAX) };
            let mut nap = if self.last_error.is_some() { RETRY_AFTER } else { idle };
            if self.unsynced {
                nap = nap.min(interval.saturating_sub(self.last_checkpoint.elapsed()));
            }
            std::thread::park_timeout(nap);
        }
        // The queue is closed: write what is left, once more if the first try fails.
        for _ in 0..2 {
            if self.fatal.is_some() {
                break;
            }
            let left = std::mem::take(&mut self.pending);
            if self.write_all(left).and_then(|()| self.checkpoint()).is_ok() {
                return;
            }
        }
        tracing::error!(dir = %self.dir.display(), lost = self.pending.len(), "audit log closed with entries that could not be written");
    }

    /// With [`OnFailure::Stop`], stops the node (by default, the process): the log cannot
    /// write, and the node must not go on without it.
    fn stop_process_if_configured(&self, why: &str) {
        if self.on_failure == OnFailure::Stop {
            let why = format!("audit log {} cannot write ({why}); stopping (audit.on_failure = \"stop\")", self.dir.display());
            tracing::error!("{why}");
            (self.stop)(&why);
        }
    }

    /// Writes entries in order; on failure, the ones not in the file stay in `pending`. What
    /// counts as written is what reached the file (the sequence numbers it advanced), so an entry
    /// is never appended twice, whatever failed after its write.
    fn write_all(&mut self, entries: Vec<AuditEntry>) -> io::Result<()> {
        if self.fatal.is_some() {
            self.pending.extend(entries);
            return Ok(());
        }
        let first_seq = self.next_seq;
        let mut seq = self.next_seq;
        let mut prev = self.last_hash.clone();
        let mut outcome = Ok(());
        for entry in &entries {
            let hash = chain::encode(seq, &prev, entry, self.key.as_ref(), &mut self.scratch, &mut self.line);
            let full = self.segment_bytes + (self.batch.len() + self.line.len()) as u64 > self.max_segment_bytes;
            if full && self.segment_bytes + self.batch.len() as u64 > 0 {
                outcome = self.commit(seq, &prev).and_then(|()| self.rotate());
                if outcome.is_err() {
                    break;
                }
            }
            self.batch.extend_from_slice(&self.line);
            seq += 1;
            prev = hash;
            if self.durability == Durability::EveryEntry {
                outcome = self.commit(seq, &prev).and_then(|()| self.sync());
                if outcome.is_err() {
                    break;
                }
            }
        }
        if outcome.is_ok() {
            outcome = self.commit(seq, &prev);
        }
        self.batch.clear();
        let written = (self.next_seq - first_seq) as usize;
        self.pending.extend(entries.into_iter().skip(written));
        outcome
    }

    /// Forces the segment to disk. A failure is fatal: the kernel may have dropped the dirty
    /// pages already, so retrying could report success for data that is gone.
    fn sync(&mut self) -> io::Result<()> {
        self.health.syncs.fetch_add(1, Ordering::Relaxed);
        let synced = (|| {
            fail::fail_point!("audit-sync", |_| Err(io::Error::other("injected by the audit-sync failpoint")));
            self.file.sync_data()
        })();
        synced.inspect_err(|e| {
            self.fatal = Some(format!("fsync of the current segment failed ({e}); the writer stops, since what it wrote may be lost"));
        })
    }

    /// Appends the encoded batch, whose last entry is `next_seq - 1` with hash `last_hash`.
    /// A failed write is cut back so the segment ends at a complete entry.
    fn commit(&mut self, next_seq: u64, last_hash: &str) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.batch);
        match result {
            Ok(()) => {
                self.segment_bytes += self.batch.len() as u64;
                self.next_seq = next_seq;
                self.last_hash = last_hash.to_owned();
                self.unsynced = true;
            }
            Err(_) => {
                let _ = self.file.set_len(self.segment_bytes);
            }
        }
        self.batch.clear();
        result
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.checkpoint()?;
        let path = self.dir.join(segment_name(self.segment + 1));
        self.file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        self.segment += 1;
        self.segment_bytes = 0;
        if self.durability != Durability::Never {
            File::open(&self.dir)?.sync_all().inspect_err(|e| {
                self.fatal = Some(format!("fsync of the log directory failed ({e}); the writer stops"));
            })?;
        }
        Ok(())
    }

    /// Syncs what was written (per the durability) and records the newest entry in `HEAD`.
    fn checkpoint(&mut self) -> io::Result<()> {
        let sync = self.durability != Durability::Never;
        if sync {
            self.sync()?;
        }
        let head = Head { seq: self.next_seq.checked_sub(1), hash: self.last_hash.clone() };
        write_head(&self.dir, &head, sync)?;
        self.unsynced = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// Replaces `HEAD` (through a temporary file and a rename, so it is never half written).
fn write_head(dir: &Path, head: &Head, sync: bool) -> io::Result<()> {
    let tmp = dir.join("HEAD.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(serde_json::to_string(head).expect("a head serialises").as_bytes())?;
    if sync {
        file.sync_data()?;
    }
    fs::rename(&tmp, dir.join(HEAD_FILE))
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairReport {
    /// The entry `HEAD` recorded, if it could be read.
    pub head_was: Option<u64>,
    /// The last complete entry of the log.
    pub log_ends: Option<u64>,
    /// Whether `HEAD` was set back to the log's last entry.
    pub head_rewritten: bool,
    /// What was done with a torn final line, if there was one.
    pub tail: Option<TailRepair>,
}

/// Restores a log that a crash or a power cut left inconsistent, and says what it did: `HEAD`
/// ahead of the data (with durability `never`, `HEAD` can reach the disk before the entries it
/// names) or unreadable is set back to the last complete entry, a torn final line is moved aside,
/// and a `log_repair` entry records it in the chain, so that the loss stays visible. A log that
/// needs nothing gets nothing.
pub fn repair(config: &AuditConfig) -> Result<RepairReport, AuditError> {
    let dir = &config.dir;
    let key = config.key_file.as_deref().map(AuditKey::load).transpose()?;
    let check = key.as_ref().map_or(Check::Unkeyed, Check::Key);
    let mut last = None;
    for (_, path) in list_segments(dir).map_err(io_err(dir))?.iter().rev() {
        let bytes = fs::read(path).map_err(io_err(path))?;
        if let Some(found) = last_entry(path, &bytes, check)? {
            last = Some(found);
            break;
        }
    }
    let head_path = dir.join(HEAD_FILE);
    let head: Option<Head> = fs::read_to_string(&head_path).ok().and_then(|text| serde_json::from_str(&text).ok());
    let head_was = head.as_ref().and_then(|h| h.seq);
    let log_ends = last.as_ref().map(|(seq, _)| *seq);
    let head_ahead = match (&head, log_ends) {
        (Some(head), _) => head.seq > log_ends,
        (None, _) => head_path.exists(),
    };
    if head_ahead {
        let (seq, hash) = last.clone().map_or((None, GENESIS.to_owned()), |(seq, hash)| (Some(seq), hash));
        write_head(dir, &Head { seq, hash }, true).map_err(io_err(&head_path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    let (log, report) = AuditLog::open(config.clone())?;
    if head_ahead {
        let what = match (head_was, log_ends) {
            (Some(head), Some(end)) => format!("HEAD recorded entry {head}, but the log ended at entry {end}: entries {} to {head} were lost (a power cut before they reached the disk, or a removal)", end + 1),
            (Some(head), None) => format!("HEAD recorded entry {head}, but the log had no entry: entries 0 to {head} were lost"),
            (None, _) => "HEAD could not be read; it was rebuilt from the log".to_owned(),
        };
        tracing::warn!(dir = %dir.display(), "audit log repaired: {what}");
        let mut entry = AuditEntry::new(EntryKind::LogRepair, Outcome::Allowed, "audit-log", "system", "repair", &dir.display().to_string());
        entry.detail = Detail::from_reason(what);
        log.record(entry);
    }
    log.close()?;
    Ok(RepairReport { head_was, log_ends, head_rewritten: head_ahead, tail: report.repaired })
}

/// The sequence number and hash of the last complete line of a segment, if it has one.
fn last_entry(path: &Path, bytes: &[u8], check: Check<'_>) -> Result<Option<(u64, String)>, AuditError> {
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => &bytes[..end],
        None => return Ok(None),
    };
    let start = complete.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line_no = complete.iter().filter(|b| **b == b'\n').count() + 1;
    match chain::decode(&complete[start..], check) {
        Ok(stored) => Ok(Some((stored.seq, stored.hash))),
        Err(e) => {
            let hint = match e {
                LineError::Keyed { .. } => " (the log is keyed: configure audit.key_file)",
                LineError::Unkeyed { .. } => " (a keyed log continues only a keyed chain: give it a directory of its own)",
                _ => "",
            };
            Err(AuditError::Corrupt { path: path.to_owned(), line: line_no, reason: format!("{}{hint}", e.describe()) })
        }
    }
}

/// Handles bytes after the last newline of the newest segment: a write a crash cut short.
fn repair_tail(
    path: &Path,
    bytes: &mut Vec<u8>,
    last: Option<&(u64, String)>,
    check: Check<'_>,
) -> Result<Option<TailRepair>, AuditError> {
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep == bytes.len() {
        return Ok(None);
    }
    let tail = &bytes[keep..];
    let (expected_seq, expected_prev) = last.map_or((0, GENESIS), |(seq, hash)| (seq + 1, hash.as_str()));
    if let Ok(stored) = chain::decode(tail, check) {
        if stored.seq == expected_seq && stored.prev == expected_prev {
            let mut file = OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
            file.write_all(b"\n").and_then(|()| file.sync_data()).map_err(io_err(path))?;
            bytes.push(b'\n');
            tracing::warn!(file = %path.display(), seq = stored.seq, "audit log: final entry lacked its newline; completed");
            return Ok(Some(TailRepair::Completed { file: path.to_owned(), seq: stored.seq }));
        }
    }
    let saved_to = path.with_extension(format!("jsonl.torn-{expected_seq}"));
    fs::write(&saved_to, tail).map_err(io_err(&saved_to))?;
    let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    file.set_len(keep as u64).and_then(|()| file.sync_all()).map_err(io_err(path))?;
    let moved = bytes.len() - keep;
    bytes.truncate(keep);
    Ok(Some(TailRepair::Moved { file: path.to_owned(), bytes: moved, saved_to }))
}
