//! `ergon audit`: verify, repair, summary, show, plot.

mod plot;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use security::audit::{
    decode_line, AuditConfig, AuditKey, AuditReader, EntryKind, Filter, StoredEntry, Summary, Tally, Verification, VerifyError,
};

/// The log was read and is damaged or tampered with.
pub const EXIT_BROKEN: u8 = 1;
/// The log could not be read: missing, empty, not a log, or an I/O error.
pub const EXIT_UNREADABLE: u8 = 2;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every seal, chain link and sequence number, and HEAD.
    ///
    /// Exits 0 on an intact log. Exits 1 on a damaged one (an edited, deleted, reordered or
    /// removed entry, a torn final line, or, with --key, an entry not sealed with the key),
    /// naming the file, line and entry of the first problem. Exits 2 when PATH cannot be read as a
    /// log at all, or the key cannot be read.
    ///
    /// A log written without a key (audit.key_file) is a plain hash chain: it shows accidents and
    /// careless edits, but anyone who can write the files can rebuild it. A keyed log can only be
    /// verified with its key.
    ///
    /// Examples: ergon audit verify ergon-demo/audit
    ///           ergon audit verify /var/log/ergon --key /etc/ergon/audit.key
    Verify {
        /// A log directory or a single segment file.
        path: PathBuf,
        /// The key the log is sealed with (the file audit.key_file names).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The log is being written: a partial final line is a write in progress, not damage.
        #[arg(long)]
        live: bool,
    },
    /// Restore a log that a crash or power cut left inconsistent, and say what was done.
    ///
    /// Sets HEAD back to the last complete entry when it names entries that never reached the
    /// disk (possible with durability "never"), moves a torn final line aside, and records the
    /// repair in the chain, so that the loss stays visible. Does nothing to a sound log. Run it
    /// while no node writes the log.
    ///
    /// Example: ergon audit repair /var/log/ergon --key /etc/ergon/audit.key
    Repair {
        /// The log directory.
        dir: PathBuf,
        /// The key the log is sealed with, if it is keyed.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Count requests, refusals and joules, by actor, principal and operation.
    ///
    /// Example: ergon audit summary ergon-demo/audit --json
    Summary {
        /// A log directory or a single segment file.
        path: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Print entries, optionally filtered, optionally following the log as it grows.
    ///
    /// Examples:
    ///   ergon audit show ergon-demo/audit --denied
    ///   ergon audit show ergon-demo/audit --principal user:intruder --since 10m
    ///   ergon audit show /var/log/ergon --follow --json
    #[command(verbatim_doc_comment)]
    Show(ShowArgs),
    /// Draw joules over time as an SVG: one line per actor (or operation, or principal), the
    /// joules charged from the log's first entry on, with refusals marked (x) on their line and
    /// energy alerts along the top (triangles). Where the log has attribution entries, the
    /// machine's energy counter is drawn beside the charges, on the right-hand axis; under
    /// physical accounting an actor's line includes the corrections that made it pay its share.
    ///
    /// At most 12 lines are drawn, the largest; the rest are summed into "others". Time is cut
    /// into --points equal stretches, so the picture stays the same size however long the log.
    ///
    /// Examples:
    ///   ergon audit plot ergon-demo/audit -o energy.svg
    ///   ergon audit plot ergon-power-cap/audit -o by-principal.svg --by principal --points 400
    #[command(verbatim_doc_comment)]
    Plot {
        /// A log directory or a single segment file.
        path: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        out: PathBuf,
        /// What each line is.
        #[arg(long, value_enum, default_value = "actor")]
        by: plot::By,
        /// How many stretches of time each line has.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        points: u32,
    },
}

#[derive(Args)]
pub struct ShowArgs {
    /// A log directory or a single segment file.
    path: PathBuf,
    /// Only entries of this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only entries of this operation (join, broadcast, ...).
    #[arg(long)]
    operation: Option<String>,
    /// Only entries of this actor (node-manager/n1, ...).
    #[arg(long)]
    actor: Option<String>,
    /// Only requests refused before running.
    #[arg(long)]
    denied: bool,
    /// Only entries at or after this time: RFC 3339 (2026-11-21T10:00:00Z) or an age (15m, 2h).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only entries before this time: RFC 3339 or an age.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Print each entry as its JSON line.
    #[arg(long)]
    json: bool,
    /// Keep watching for new entries (and new segments) until interrupted.
    #[arg(long, short)]
    follow: bool,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(text) {
        Ok(age) => chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .ok_or_else(|| format!("{text:?} reaches further back than a date can go")),
        Err(_) => Err(format!("{text:?} is neither an RFC 3339 time (2026-11-21T10:00:00Z) nor an age (15m, 2h)")),
    }
}

pub fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { path, key, live } => Ok(verify_command(&path, key.as_deref(), live)),
        AuditCommand::Repair { dir, key } => repair_command(dir, key),
        AuditCommand::Summary { path, json } => summary(&path, json),
        AuditCommand::Show(args) => show(args),
        AuditCommand::Plot { path, out, by, points } => plot_command(&path, &out, by, points as usize),
    }
}

fn plot_command(path: &Path, out: &Path, by: plot::By, points: usize) -> Result<ExitCode> {
    let plot = plot::Plot::read(path, by, points)?;
    let what = if plot.joules_from.is_empty() { String::new() } else { format!(" ({})", plot.joules_from.join(", ")) };
    plot.draw(out, &format!("ergon: joules over {:.1} s of {}{what}", plot.span, path.display()))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}: {} lines over {:.3} s, {points} stretches each", out.display(), plot.series.len(), plot.span)?;
    for s in &plot.series {
        let refused: u64 = s.denied.iter().map(|d| d.2).sum();
        let total = s.points.last().map_or(0.0, |p| p.1);
        writeln!(stdout, "  {}: {} points, {total:.6} J, {refused} refusal entries", printable(&s.name), s.points.len())?;
    }
    if let Some(counter) = &plot.counter {
        writeln!(stdout, "  {}: {} points, {:.6} J", counter.name, counter.points.len(), counter.points.last().map_or(0.0, |p| p.1))?;
    }
    let alerts: u64 = plot.alerts.iter().map(|a| a.count).sum();
    writeln!(stdout, "  {alerts} alerts")?;
    Ok(ExitCode::SUCCESS)
}

fn repair_command(dir: PathBuf, key: Option<PathBuf>) -> Result<ExitCode> {
    let mut config = AuditConfig::new(dir);
    config.key_file = key;
    let report = security::audit::repair(&config)?;
    match (report.head_rewritten, &report.tail) {
        (false, None) => println!("nothing to repair: {} is sound", config.dir.display()),
        (head, tail) => {
            if head {
                println!(
                    "HEAD recorded entry {}, the log ends at entry {}: HEAD set back, and the loss recorded in the log",
                    report.head_was.map_or("(unreadable)".into(), |s| s.to_string()),
                    report.log_ends.map_or("(none)".into(), |s| s.to_string())
                );
            }
            if let Some(tail) = tail {
                println!("torn final line: {tail:?}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_command(path: &Path, key: Option<&Path>, live: bool) -> ExitCode {
    let key = match key.map(AuditKey::load).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("ergon: {e}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    let verified = security::audit::verify_with(path, &Verification { key: key.as_ref(), live });
    match verified {
        Ok(report) => {
            println!(
                "ok: {} entries ({} to {}) in {} file(s), every {} and link intact{}",
                report.entries,
                report.first_seq,
                report.last_seq,
                report.files,
                if key.is_some() { "seal made with the key" } else { "hash" },
                if report.head_checked { ", HEAD matches" } else { " (a single file: HEAD not checked)" }
            );
            if let Some(bytes) = report.in_progress {
                println!("a write of {bytes} bytes is in progress at the end of the newest segment");
            }
            if key.is_none() {
                println!(
                    "note: the log has no key, so this shows accidents and careless edits; anyone who can write the \
                     files can rebuild a plain chain. Set audit.key_file to seal it."
                );
            }
            ExitCode::SUCCESS
        }
        Err(error @ VerifyError::Broken { .. }) => {
            eprintln!("ergon: audit log is damaged: {error}");
            ExitCode::from(EXIT_BROKEN)
        }
        Err(error) => {
            eprintln!("ergon: {error}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn summary(path: &Path, json: bool) -> Result<ExitCode> {
    let reader = AuditReader::open(path)?;
    let mut summary = Summary::default();
    for entry in reader.entries() {
        match entry {
            Ok(stored) => summary.add(&stored.entry),
            Err(security::audit::ReadError::TornTail { path, bytes }) => {
                eprintln!("ergon: warning: {} ends in a partial line of {bytes} bytes, not counted", path.display());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if summary.total.requests + summary.alerts + summary.repairs == 0 && summary.metered.is_none() {
        bail!("{}: the audit log is empty", path.display());
    }
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        let t = &summary.total;
        writeln!(
            out,
            "{} requests: {} allowed, {} failed, {} denied; {:.3} J charged; {} energy alerts{}",
            t.requests,
            t.requests - t.failed - t.denied,
            t.failed,
            t.denied,
            t.joules,
            summary.alerts,
            if summary.repairs > 0 { format!("; {} log repairs", summary.repairs) } else { String::new() }
        )?;
        let from: Vec<String> = summary.joules_from.iter().map(|(what, n)| format!("{what} ({n})")).collect();
        if !from.is_empty() {
            writeln!(out, "joules from (accounting/source): {}", from.join(", "))?;
        }
        for (title, table) in [("actor", &summary.by_actor), ("principal", &summary.by_principal), ("operation", &summary.by_operation)] {
            writeln!(out)?;
            print_table(&mut out, title, table)?;
        }
        if let Some(metered) = &summary.metered {
            writeln!(out)?;
            print_metered(&mut out, metered)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Longest name a table or a line shows; longer ones end in `…` and how much was cut.
const SHOWN_CHARS: usize = 96;

/// `text` as it may be printed: control characters escaped (so that a name cannot start a line of
/// its own), and at most [`SHOWN_CHARS`] characters.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str(&format!("…(+{} bytes)", text.len() - text.char_indices().nth(i).map_or(text.len(), |(at, _)| at)));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_table(out: &mut impl Write, title: &str, rows: &std::collections::BTreeMap<String, Tally>) -> io::Result<()> {
    let rows: Vec<(String, &Tally)> = rows.iter().map(|(name, t)| (printable(name), t)).collect();
    let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0).max(title.len());
    writeln!(out, "{title:<width$}  {:>8}  {:>7}  {:>7}  {:>12}", "requests", "denied", "failed", "joules")?;
    for (name, t) in rows {
        writeln!(out, "{name:<width$}  {:>8}  {:>7}  {:>7}  {:>12.3}", t.requests, t.denied, t.failed, t.joules)?;
    }
    Ok(())
}

/// The energy counter's total, and each actor's metered energy beside its share of the counter.
fn print_metered(out: &mut impl Write, metered: &security::audit::Metered) -> io::Result<()> {
    let corrects = metered.accounting == "physical";
    let how = if corrects { "the shares corrected the budgets" } else { "reported beside the charges" };
    writeln!(out, "measured by the energy counter ({}): {:.3} J; {} accounting, {how}", metered.source, metered.measured_j, metered.accounting)?;
    let rows: Vec<_> = metered.by_actor.iter().map(|(actor, line)| (printable(actor), line)).collect();
    let width = rows.iter().map(|(actor, _)| actor.chars().count()).max().unwrap_or(0).max("actor".len());
    write!(out, "{:<width$}  {:>12}  {:>12}", "actor", "metered J", "attributed J")?;
    writeln!(out, "{}", if corrects { format!("  {:>12}", "corrected J") } else { String::new() })?;
    for (actor, line) in rows {
        write!(out, "{actor:<width$}  {:>12.3e}  {:>12.3e}", line.metered_j, line.attributed_j)?;
        writeln!(out, "{}", if corrects { format!("  {:>+12.3e}", line.corrected_j) } else { String::new() })?;
    }
    Ok(())
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let filter = Filter {
        principal: args.principal,
        operation: args.operation,
        actor: args.actor,
        denied: args.denied,
        since: args.since,
        until: args.until,
    };
    let mut tail = Tail::open(&args.path)?;
    let mut out = io::stdout().lock();
    let mut seen = 0u64;
    let mut announced = false;
    loop {
        let caught_up = tail.read_available(|line, path, number| {
            let stored = decode_line(line).map_err(|why| anyhow::anyhow!("{}, line {number}: {why}", path.display()))?;
            seen += 1;
            if filter.matches(&stored.entry) {
                if args.json {
                    out.write_all(line)?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(out, "{}", render(&stored))?;
                }
            }
            Ok(())
        })?;
        if caught_up && !args.follow {
            break;
        }
        if caught_up {
            out.flush()?;
            if !announced {
                // On stderr, so that the entries on stdout stay machine-readable.
                eprintln!("ergon: following {} after {seen} entries; Ctrl-C stops", args.path.display());
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    if seen == 0 {
        bail!("{}: the audit log is empty", args.path.display());
    }
    if let Some(bytes) = tail.partial_line() {
        eprintln!("ergon: warning: the log ends in a partial line of {bytes} bytes (a write in progress, or torn by a crash)");
    }
    Ok(ExitCode::SUCCESS)
}

fn render(stored: &StoredEntry) -> String {
    let e = &stored.entry;
    let outcome = match (e.outcome, e.alert()) {
        (_, Some(level)) => format!("alert:{level}"),
        (o, None) => format!("{o:?}").to_lowercase(),
    };
    let charged = e.energy.as_ref().map_or(String::new(), |en| match e.kind {
        EntryKind::EnergyAttribution => format!("{:.6} J attributed ({})", en.measured_j, en.source),
        _ => format!("{:.3} J", en.charged_j),
    });
    let detail = e.error().map(|code| format!(" {}: {}", printable(code), printable(e.reason().unwrap_or("")))).unwrap_or_else(|| {
        e.reason().map(|r| format!(" {}", printable(r))).unwrap_or_default()
    });
    let principal = match e.detail.remote() {
        Some(remote) => format!("{}@{}", printable(&e.principal), printable(remote)),
        None => printable(&e.principal),
    };
    format!(
        "{:>6} {} {} {} {} {} {} {}{}",
        stored.seq,
        e.ts.to_datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        printable(&e.actor),
        principal,
        printable(&e.operation),
        printable(&e.resource),
        outcome,
        charged,
        detail
    )
}

/// Reads complete lines from a log as it grows, moving to the next segment when one appears.
struct Tail {
    path: PathBuf,
    file_index: usize,
    reader: Option<BufReader<File>>,
    offset: u64,
    line_number: usize,
    partial: usize,
}

impl Tail {
    fn open(path: &Path) -> Result<Tail> {
        AuditReader::open(path)?;
        Ok(Tail { path: path.to_owned(), file_index: 0, reader: None, offset: 0, line_number: 0, partial: 0 })
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        Ok(AuditReader::open(&self.path)?.files().to_vec())
    }

    /// Passes every complete line not yet seen to `each`; returns whether it reached the end.
    fn read_available(&mut self, mut each: impl FnMut(&[u8], &Path, usize) -> Result<()>) -> Result<bool> {
        loop {
            let files = self.files()?;
            let Some(path) = files.get(self.file_index).cloned() else { return Ok(true) };
            if self.reader.is_none() {
                let mut file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                file.seek(SeekFrom::Start(self.offset))?;
                self.reader = Some(BufReader::new(file));
            }
            let reader = self.reader.as_mut().expect("opened above");
            let mut line = Vec::new();
            let read = reader.read_until(b'\n', &mut line)?;
            if read > 0 && line.last() == Some(&b'\n') {
                self.offset += read as u64;
                self.line_number += 1;
                line.pop();
                each(&line, &path, self.line_number)?;
                continue;
            }
            // End of what is complete in this file: a partial line is re-read next time.
            self.partial = line.len();
            self.reader = None;
            if self.file_index + 1 < files.len() && self.partial == 0 {
                self.file_index += 1;
                self.offset = 0;
                self.line_number = 0;
                continue;
            }
            return Ok(true);
        }
    }

    fn partial_line(&self) -> Option<usize> {
        (self.partial > 0).then_some(self.partial)
    }
}
