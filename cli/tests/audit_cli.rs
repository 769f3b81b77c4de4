//! `ergon audit` as an operator uses it: exit codes, messages and output.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use security::audit::{AuditConfig, AuditEntry, AuditLog, AuditSink, EnergyRecord, EntryKind, Outcome};

fn ergon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ergon")).args(args).output().expect("the ergon binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_log(dir: &Path) {
    let (log, _) = AuditLog::open(AuditConfig::new(dir)).unwrap();
    for (principal, operation, outcome, joules) in [
        ("alice", "join", Outcome::Allowed, 10.0),
        ("alice", "broadcast", Outcome::Allowed, 5.0),
        ("mallory", "join", Outcome::Denied, 0.0),
        ("bob", "broadcast", Outcome::Failed, 5.0),
    ] {
        let kind = if outcome == Outcome::Denied { EntryKind::SecurityViolation } else { EntryKind::EnergyUsage };
        let mut e = AuditEntry::new(kind, outcome, "node-manager/n1", principal, operation, "w1");
        e.energy = Some(EnergyRecord {
            charged_j: joules,
            measured_j: 0.0,
            estimate_j: joules,
            remaining_j: 100.0,
            source: "fixed".into(),
            accounting: "tutorial".into(),
            elapsed_ns: 0,
            ops: None,
        });
        log.record(e);
    }
    log.close().unwrap();
}

#[test]
fn verify_passes_an_intact_log_and_fails_an_edited_one_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let out = ergon(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: 4 entries"));

    let segment = dir.path().join("segment-000001.jsonl");
    let edited = fs::read_to_string(&segment).unwrap().replacen("\"charged_j\":5.0", "\"charged_j\":0.5", 1);
    fs::write(&segment, edited).unwrap();
    let out = ergon(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("segment-000001.jsonl, line 2 (entry 1)") && err.contains("edited"), "{err}");
}

#[test]
fn verify_with_a_key_vouches_for_a_keyed_log_and_without_one_says_what_a_plain_chain_is_worth() {
    let (dir, secrets) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = secrets.path().join("audit.key");
    fs::write(&key, "7f".repeat(32)).unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.key_file = Some(key.clone());
    let (log, _) = AuditLog::open(config).unwrap();
    log.record(AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "a", "user:alice", "join", "w1"));
    log.close().unwrap();
    let path = dir.path().to_str().unwrap();

    let out = ergon(&["audit", "verify", path, "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("every seal made with the key and link intact"), "{}", text(&out.stdout));
    let out = ergon(&["audit", "verify", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--key FILE"), "{}", text(&out.stderr));
    let out = ergon(&["audit", "verify", path, "--key", "/nonexistent/audit.key"]);
    assert_eq!(out.status.code(), Some(2));
    // `show` reads a keyed log without its key.
    let out = ergon(&["audit", "show", path]);
    assert!(text(&out.stdout).contains("user:alice"), "{}", text(&out.stdout));

    let plain = tempfile::tempdir().unwrap();
    write_log(plain.path());
    let out = ergon(&["audit", "verify", plain.path().to_str().unwrap()]);
    assert!(text(&out.stdout).contains("note: the log has no key"), "{}", text(&out.stdout));
}

#[test]
fn repair_sets_head_back_and_verify_live_accepts_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let path = dir.path().to_str().unwrap();
    let head = fs::read_to_string(dir.path().join("HEAD")).unwrap().replace("\"seq\":3", "\"seq\":7");
    fs::write(dir.path().join("HEAD"), head).unwrap();
    assert_eq!(ergon(&["audit", "verify", path]).status.code(), Some(1));
    let out = ergon(&["audit", "repair", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("HEAD recorded entry 7, the log ends at entry 3"), "{}", text(&out.stdout));
    assert_eq!(ergon(&["audit", "verify", path]).status.code(), Some(0));
    assert!(text(&ergon(&["audit", "repair", path]).stdout).contains("nothing to repair"));

    let segment = dir.path().join("segment-000001.jsonl");
    let mut bytes = fs::read(&segment).unwrap();
    bytes.extend_from_slice(b"{\"seq\":5");
    fs::write(&segment, bytes).unwrap();
    assert_eq!(ergon(&["audit", "verify", path]).status.code(), Some(1));
    let out = ergon(&["audit", "verify", path, "--live"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a write of 8 bytes is in progress"), "{}", text(&out.stdout));
}

#[test]
fn verify_reports_a_truncated_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let segment = dir.path().join("segment-000001.jsonl");
    let text_ = fs::read_to_string(&segment).unwrap();
    let kept: String = text_.lines().take(3).map(|l| format!("{l}\n")).collect();
    fs::write(&segment, kept).unwrap();
    let out = ergon(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("newest entries were removed"), "{}", text(&out.stderr));
}

#[test]
fn unreadable_inputs_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.jsonl");
    fs::write(&garbage, [0xff, 0x00, b'\n']).unwrap();
    let empty = dir.path().join("empty.jsonl");
    fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing");
    for (path, expected) in [
        (&missing, "no such file or directory"),
        (&empty, "the audit log is empty"),
        (&garbage, "line 1: not an audit entry"),
    ] {
        for command in ["verify", "summary", "show"] {
            let out = ergon(&["audit", command, path.to_str().unwrap()]);
            let err = text(&out.stderr);
            let code = out.status.code();
            // Garbage is a damaged log for verify (1) and unreadable for the readers (2).
            let allowed = if command == "verify" && path == &garbage { Some(1) } else { Some(2) };
            assert_eq!(code, allowed, "{command} {}: {err}", path.display());
            assert!(err.contains(expected), "{command} {}: {err}", path.display());
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn summary_adds_up_by_principal_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let out = ergon(&["audit", "summary", dir.path().to_str().unwrap()]);
    let table = text(&out.stdout);
    assert!(table.starts_with("4 requests: 2 allowed, 1 failed, 1 denied; 20.000 J charged"), "{table}");
    let out = ergon(&["audit", "summary", dir.path().to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["by_principal"]["alice"]["joules"], 15.0);
    assert_eq!(json["by_principal"]["mallory"]["denied"], 1);
    assert_eq!(json["by_operation"]["broadcast"]["failed"], 1);
}

#[test]
fn show_filters_entries() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let path = dir.path().to_str().unwrap();
    let lines = |args: &[&str]| {
        let mut all = vec!["audit", "show", path];
        all.extend_from_slice(args);
        text(&ergon(&all).stdout).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(lines(&[]).len(), 4);
    let denied = lines(&["--denied"]);
    assert_eq!(denied.len(), 1);
    assert!(denied[0].contains("mallory") && denied[0].contains("denied"), "{denied:?}");
    assert_eq!(lines(&["--principal", "alice", "--operation", "broadcast"]).len(), 1);
    assert_eq!(lines(&["--actor", "node-manager/n2"]).len(), 0);
    assert_eq!(lines(&["--since", "1h"]).len(), 4);
    assert_eq!(lines(&["--until", "1h"]).len(), 0);
    let json = lines(&["--json", "--principal", "bob"]);
    let parsed: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(parsed["outcome"], "failed");

    let out = ergon(&["audit", "show", path, "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("neither an RFC 3339 time"));
    let out = ergon(&["audit", "show", path, "--since", "300000y"]);
    assert_eq!(out.status.code(), Some(2), "an age before any date is an error, not a panic");
    assert!(text(&out.stderr).contains("further back than a date can go"), "{}", text(&out.stderr));
}

#[test]
fn hostile_names_neither_break_the_summary_nor_forge_lines_in_show() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let long = "m".repeat(64 << 10);
    log.record(AuditEntry::new(EntryKind::SecurityViolation, Outcome::Denied, "a", &long, "join", "w1"));
    let forged = "x\n     9 2026-01-01T00:00:00.000Z node-manager/n1 user:admin join w1 allowed 0.000 J";
    log.record(AuditEntry::new(EntryKind::SecurityViolation, Outcome::Denied, "a", "user:eve", "join", forged));
    log.close().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = ergon(&["audit", "summary", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("…(+65440 bytes)"), "a 64 KiB name is cut, not a 64 KiB column");
    let out = ergon(&["audit", "show", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert_eq!(shown.lines().count(), 2, "one line per entry: {shown}");
    assert!(shown.contains("x\\n     9"), "the newline is shown escaped: {shown}");
}

/// The lines a child writes, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn follow_prints_entries_written_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ergon"))
        .args(["audit", "show", dir.path().to_str().unwrap(), "--follow", "--principal", "carol"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (lines_of(child.stdout.take().unwrap()), lines_of(child.stderr.take().unwrap()));
    let within = std::time::Duration::from_secs(30);
    let note = stderr.recv_timeout(within).expect("the follower says when it has read what is there");
    assert!(note.contains("following") && note.contains("after 4 entries"), "{note}");
    // A second writer session appends, rotating into new segments.
    let mut config = AuditConfig::new(dir.path());
    config.max_segment_bytes = 600;
    let (log, _) = AuditLog::open(config).unwrap();
    for i in 0..3 {
        log.record(AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "a", "carol", "join", &format!("x{i}")));
    }
    log.close().unwrap();
    let shown: Vec<String> = (0..3).map(|_| stdout.recv_timeout(within).expect("each new entry is shown")).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    let rest: Vec<String> = stdout.iter().collect();
    assert!(rest.is_empty(), "only carol's three new entries: {rest:?}");
    assert!(shown[2].contains(" x2 "), "{shown:?}");
    assert!(fs::read_dir(dir.path()).unwrap().count() > 3, "the writer rotated");
}

#[test]
fn summary_sets_each_actors_metered_energy_beside_its_share_of_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    for (actor, metered, attributed) in [("node-manager/n1", 2e-6, 0.25), ("energy-meter", 0.0, 0.05), ("unattributed", 0.0, 1.7)] {
        let mut e = AuditEntry::new(EntryKind::EnergyAttribution, Outcome::Allowed, actor, "ergon", "attribution", "powercap:intel-rapl:0");
        e.energy = Some(EnergyRecord {
            charged_j: 0.0,
            measured_j: attributed,
            estimate_j: metered,
            remaining_j: 0.0,
            source: "rapl".into(),
            accounting: "tutorial".into(),
            elapsed_ns: 0,
            ops: None,
        });
        log.record(e);
    }
    log.close().unwrap();
    let out = ergon(&["audit", "summary", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("measured by the energy counter (rapl): 2.000 J"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("node-manager/n1") && l.contains("2.000e-6") && l.contains("2.500e-1")), "{stdout}");
    let out = ergon(&["audit", "show", dir.path().to_str().unwrap(), "--operation", "attribution"]);
    assert!(text(&out.stdout).contains("1.700000 J attributed (rapl)"), "{}", text(&out.stdout));
}

#[test]
fn a_closed_pipe_ends_show_quietly_as_it_ends_other_unix_tools() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    for i in 0..20_000 {
        log.record(AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "node-manager/n1", "alice", "join", &format!("w{i}")));
    }
    log.close().unwrap();
    // `ergon audit show LOG | head -1`: the reader takes one line and goes away.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ergon"))
        .args(["audit", "show", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("alice"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(SIGPIPE), "ended by SIGPIPE, as `cat` or `grep` would be: {:?}", out.status);
    assert_eq!(text(&out.stderr), "", "and without a word");
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;
