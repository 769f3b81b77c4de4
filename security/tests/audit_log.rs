//! The audit log's promises: every kind of tampering is found, crashes are repaired and reported,
//! rotation keeps the chain, and bad input gives clear errors.

use std::fs;
use std::path::{Path, PathBuf};

use security::audit::{
    repair, verify, verify_keyed, verify_with, AuditConfig, AuditEntry, AuditError, AuditKey, AuditLog, AuditReader, AuditSink, Durability,
    EntryKind, Filter, KeyError, Outcome, Problem, ReadError, Summary, TailRepair, Verification, VerifyError,
};

fn entry(i: usize) -> AuditEntry {
    let mut e = AuditEntry::new(EntryKind::EnergyUsage, Outcome::Allowed, "node-manager/n1", "alice", "join", &format!("node-{i}"));
    e.energy = Some(security::audit::EnergyRecord {
        charged_j: 10.0,
        measured_j: 1e-6,
        estimate_j: 10.0,
        remaining_j: 990.0,
        source: "time-model".into(),
        accounting: "tutorial".into(),
        elapsed_ns: 1000,
        ops: None,
    });
    e
}

fn write_log(dir: &Path, n: usize, config: impl FnOnce(&mut AuditConfig)) {
    let mut cfg = AuditConfig::new(dir);
    config(&mut cfg);
    let (log, _) = AuditLog::open(cfg).unwrap();
    (0..n).for_each(|i| log.record(entry(i)));
    log.close().unwrap();
}

fn segment(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("segment-{index:06}.jsonl"))
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn set_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn problem(result: Result<security::audit::VerifyReport, VerifyError>) -> (Option<usize>, Option<u64>, Problem) {
    match result {
        Err(VerifyError::Broken { line, seq, problem, .. }) => (line, seq, problem),
        other => panic!("expected a broken log, got {other:?}"),
    }
}

#[test]
fn an_intact_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 20, |_| {});
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.entries, report.first_seq, report.last_seq, report.head_checked), (20, 0, 19, true));
}

#[test]
fn an_edit_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, |_| {});
    let seg = segment(dir.path(), 1);
    let mut l = lines(&seg);
    l[4] = l[4].replace("\"charged_j\":10.0", "\"charged_j\":1.0");
    set_lines(&seg, &l);
    assert_eq!(problem(verify(dir.path())), (Some(5), Some(4), Problem::Edited));
    let message = verify(dir.path()).unwrap_err().to_string();
    assert!(message.contains("segment-000001.jsonl, line 5 (entry 4)") && message.contains("edited"), "{message}");
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, |_| {});
    let seg = segment(dir.path(), 1);
    let mut l = lines(&seg);
    // Forge entry 2 with a valid hash of its own.
    let edited = l[2].replace("node-2", "node-X");
    let body = &edited[..edited.len() - 75];
    let hash = hex::encode(Sha256::digest(format!("{body}}}").as_bytes()));
    l[2] = format!("{body},\"hash\":\"{hash}\"}}");
    set_lines(&seg, &l);
    assert_eq!(problem(verify(dir.path())), (Some(4), Some(3), Problem::Relinked));
}

#[test]
fn a_deletion_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, |_| {});
    let seg = segment(dir.path(), 1);
    let mut l = lines(&seg);
    l.remove(3);
    set_lines(&seg, &l);
    assert_eq!(problem(verify(dir.path())), (Some(4), Some(4), Problem::Missing { expected: 3, found: 4 }));
}

#[test]
fn deleting_the_first_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, |_| {});
    let seg = segment(dir.path(), 1);
    let l = lines(&seg);
    set_lines(&seg, &l[1..]);
    assert_eq!(problem(verify(dir.path())).2, Problem::Missing { expected: 0, found: 1 });
}

#[test]
fn a_reordering_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, |_| {});
    let seg = segment(dir.path(), 1);
    let mut l = lines(&seg);
    l.swap(5, 6);
    set_lines(&seg, &l);
    assert_eq!(problem(verify(dir.path())), (Some(6), Some(6), Problem::Reordered { expected: 5, found: 6 }));
}

#[test]
fn removing_the_newest_entries_is_found_through_head() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, |_| {});
    let seg = segment(dir.path(), 1);
    let l = lines(&seg);
    set_lines(&seg, &l[..7]);
    assert_eq!(problem(verify(dir.path())).2, Problem::Truncated { head_seq: 9, last_seq: Some(6) });
    // And the writer refuses to extend it, which would hide the gap.
    let err = AuditLog::open(AuditConfig::new(dir.path())).err().unwrap();
    assert!(matches!(err, AuditError::HeadAhead { head_seq: 9, last_seq: Some(6), .. }), "{err}");
}

#[test]
fn a_missing_head_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 2, |_| {});
    fs::remove_file(dir.path().join("HEAD")).unwrap();
    assert!(matches!(problem(verify(dir.path())).2, Problem::HeadMissing(_)));
}

#[test]
fn a_torn_tail_is_reported_by_verify_and_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 4, |_| {});
    let seg = segment(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(br#"{"seq":4,"prev":"ab"#);
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(problem(verify(dir.path())), (Some(5), None, Problem::TornTail { bytes: 19 }));

    let (log, report) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let Some(TailRepair::Moved { bytes: 19, saved_to, .. }) = report.repaired else { panic!("{report:?}") };
    assert_eq!(fs::read(&saved_to).unwrap(), br#"{"seq":4,"prev":"ab"#, "the torn bytes are kept, not dropped");
    log.record(entry(99));
    log.close().unwrap();

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.entries, 6);
    let kinds: Vec<_> = AuditReader::open(dir.path()).unwrap().entries().map(|e| e.unwrap().entry.kind).collect();
    assert_eq!(kinds[4], EntryKind::LogRepair, "the repair is recorded in the chain");
}

#[test]
fn a_whole_entry_missing_only_its_newline_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, |_| {});
    let seg = segment(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.pop();
    fs::write(&seg, &bytes).unwrap();
    let (log, report) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    assert!(matches!(report.repaired, Some(TailRepair::Completed { seq: 2, .. })), "{report:?}");
    assert_eq!(report.next_seq, 3);
    log.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().entries, 3);
}

#[test]
fn rotation_continues_the_chain_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 50, |c| c.max_segment_bytes = 2_000);
    let report = verify(dir.path()).unwrap();
    assert!(report.files >= 10, "expected many segments, got {}", report.files);
    assert_eq!((report.entries, report.last_seq), (50, 49));
    for i in 1..=report.files as u32 {
        assert!(fs::metadata(segment(dir.path(), i)).unwrap().len() <= 2_000);
    }
    // Reopening continues in the newest segment, from the right place.
    write_log(dir.path(), 5, |c| c.max_segment_bytes = 2_000);
    assert_eq!(verify(dir.path()).unwrap().last_seq, 54);
    // Deleting a whole middle segment is a deletion.
    fs::remove_file(segment(dir.path(), 3)).unwrap();
    assert!(matches!(problem(verify(dir.path())).2, Problem::Missing { .. }));
}

#[test]
fn every_durability_mode_writes_a_verifiable_log() {
    for durability in [Durability::EveryEntry, Durability::IntervalMs(5), Durability::Never] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 25, |c| c.durability = durability);
        assert_eq!(verify(dir.path()).unwrap().entries, 25, "{durability:?}");
    }
}

#[test]
fn garbage_missing_and_empty_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.jsonl");
    fs::write(&garbage, b"\x00\xffthis is not json\n{}\n").unwrap();
    let message = verify(&garbage).unwrap_err().to_string();
    assert!(message.contains("garbage.jsonl, line 1: not an audit entry"), "{message}");

    let empty = dir.path().join("empty.jsonl");
    fs::write(&empty, b"").unwrap();
    assert!(matches!(verify(&empty), Err(VerifyError::Read(ReadError::Empty(_)))));

    let missing = dir.path().join("nope");
    assert_eq!(verify(&missing).unwrap_err().to_string(), format!("{}: no such file or directory", missing.display()));

    let not_a_log = tempfile::tempdir().unwrap();
    assert!(verify(not_a_log.path()).unwrap_err().to_string().contains("not an audit log"));
}

#[test]
fn a_damaged_log_is_not_extended() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, |_| {});
    let seg = segment(dir.path(), 1);
    let mut l = lines(&seg);
    l[2] = l[2].replace("alice", "mallory");
    set_lines(&seg, &l);
    let err = AuditLog::open(AuditConfig::new(dir.path())).err().unwrap();
    assert!(matches!(err, AuditError::Corrupt { line: 3, .. }), "{err}");
}

#[test]
fn a_single_segment_verifies_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 30, |c| c.max_segment_bytes = 2_000);
    let report = verify(&segment(dir.path(), 2)).unwrap();
    assert!(report.first_seq > 0 && !report.head_checked);
}

#[test]
fn the_reader_filters_and_the_summary_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    for i in 0..6 {
        let mut e = entry(i);
        if i % 3 == 0 {
            e.outcome = Outcome::Denied;
            e.kind = EntryKind::SecurityViolation;
            e.principal = "mallory".into();
            e.energy.as_mut().unwrap().charged_j = 0.0;
        }
        log.record(e);
    }
    log.close().unwrap();
    let reader = AuditReader::open(dir.path()).unwrap();
    let all: Vec<_> = reader.entries().map(|e| e.unwrap().entry).collect();
    let denied = Filter { denied: true, ..Filter::default() };
    assert_eq!(all.iter().filter(|e| denied.matches(e)).count(), 2);
    let alice = Filter { principal: Some("alice".into()), operation: Some("join".into()), ..Filter::default() };
    assert_eq!(all.iter().filter(|e| alice.matches(e)).count(), 4);
    let future = Filter { since: Some(chrono::Utc::now() + chrono::Duration::hours(1)), ..Filter::default() };
    assert_eq!(all.iter().filter(|e| future.matches(e)).count(), 0);

    let summary: Summary = all.iter().collect();
    assert_eq!((summary.total.requests, summary.total.denied, summary.total.joules), (6, 2, 40.0));
    assert_eq!(summary.by_principal["mallory"].denied, 2);
    assert_eq!(summary.by_actor["node-manager/n1"].joules, 40.0);
}

/// What a forger who can write the files does: rewrites entries and seals the chain and `HEAD`
/// again, with plain SHA-256 (or an HMAC under a key of its own).
fn forge(dir: &Path, principal: &str, key: Option<&[u8]>) {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mut prev = "0".repeat(64);
    let mut last = None;
    for index in 1.. {
        let path = segment(dir, index);
        if !path.exists() {
            break;
        }
        let forged: Vec<String> = lines(&path)
            .into_iter()
            .map(|line| {
                let cut = line.rfind(",\"hash\":\"").or_else(|| line.rfind(",\"mac\":\"")).unwrap();
                let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
                let seq = value["seq"].as_u64().unwrap();
                let old_prev = value["prev"].as_str().unwrap().to_owned();
                value["principal"] = principal.into();
                let body = line[..cut].replace(&old_prev, &prev).replace("\"alice\"", &format!("{:?}", principal));
                let content = format!("{body}}}");
                let (field, seal) = match key {
                    None => ("hash", hex::encode(Sha256::digest(content.as_bytes()))),
                    Some(key) => ("mac", hex::encode(Hmac::<Sha256>::new_from_slice(key).unwrap().chain_update(content.as_bytes()).finalize().into_bytes())),
                };
                prev = seal.clone();
                last = Some(seq);
                format!("{body},\"{field}\":\"{seal}\"}}")
            })
            .collect();
        set_lines(&path, &forged);
    }
    fs::write(dir.join("HEAD"), format!("{{\"seq\":{},\"hash\":\"{prev}\"}}", last.unwrap())).unwrap();
}

#[test]
fn a_keyed_chain_cannot_be_rebuilt_without_its_key() {
    let (dir, secrets) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = secrets.path().join("audit.key");
    fs::write(&key_file, hex::encode([0x5a; 32])).unwrap();
    write_log(dir.path(), 12, |c| {
        c.key_file = Some(key_file.clone());
        c.max_segment_bytes = 2_000;
    });
    let key = AuditKey::load(&key_file).unwrap();
    assert_eq!(verify_keyed(dir.path(), &key).unwrap().entries, 12);
    assert_eq!(problem(verify(dir.path())), (Some(1), Some(0), Problem::Keyed), "without the key it cannot vouch");
    // It reads without the key, for `ergon audit show`.
    assert_eq!(AuditReader::open(dir.path()).unwrap().entries().filter(Result::is_ok).count(), 12);

    // A plain chain, rebuilt by someone without the key, fools a plain verifier, not the key.
    forge(dir.path(), "mallory", None);
    verify(dir.path()).expect("a rebuilt plain chain verifies without a key: why a key is wanted");
    assert_eq!(problem(verify_keyed(dir.path(), &key)), (Some(1), Some(0), Problem::Unkeyed));
    // Nor does a chain sealed with another key.
    forge(dir.path(), "mallory", Some(&[0x11; 32]));
    assert_eq!(problem(verify_keyed(dir.path(), &key)), (Some(1), Some(0), Problem::Edited));

    // A keyed log is not extended without its key, nor an unkeyed one with a key.
    let err = AuditLog::open(AuditConfig::new(dir.path())).err().expect("refused").to_string();
    assert!(err.contains("configure audit.key_file"), "{err}");
    let plain = tempfile::tempdir().unwrap();
    write_log(plain.path(), 2, |_| {});
    let mut keyed = AuditConfig::new(plain.path());
    keyed.key_file = Some(key_file.clone());
    let err = AuditLog::open(keyed).err().expect("refused").to_string();
    assert!(err.contains("a keyed log continues only a keyed chain"), "{err}");
    let mut short = AuditConfig::new(plain.path());
    fs::write(secrets.path().join("short.key"), "abcd").unwrap();
    short.key_file = Some(secrets.path().join("short.key"));
    assert!(matches!(AuditLog::open(short), Err(AuditError::Key(KeyError::TooShort(2)))));
}

#[test]
fn repair_sets_head_back_after_a_power_cut_and_says_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, |c| c.durability = Durability::Never);
    // With durability `never`, HEAD can reach the disk and the entries it names not.
    let head = fs::read_to_string(dir.path().join("HEAD")).unwrap().replace("\"seq\":9", "\"seq\":15");
    fs::write(dir.path().join("HEAD"), head).unwrap();
    assert!(matches!(AuditLog::open(AuditConfig::new(dir.path())), Err(AuditError::HeadAhead { head_seq: 15, .. })));

    let report = repair(&AuditConfig::new(dir.path())).unwrap();
    assert_eq!((report.head_was, report.log_ends, report.head_rewritten), (Some(15), Some(9), true));
    let verified = verify(dir.path()).unwrap();
    assert_eq!(verified.entries, 11, "the ten entries and the repair's own");
    let last = AuditReader::open(dir.path()).unwrap().entries().last().unwrap().unwrap().entry;
    assert_eq!(last.kind, EntryKind::LogRepair);
    assert!(last.reason().unwrap().contains("entries 10 to 15 were lost"), "{:?}", last.reason());

    // A log that needs nothing gets nothing.
    let report = repair(&AuditConfig::new(dir.path())).unwrap();
    assert!(!report.head_rewritten && report.tail.is_none());
    assert_eq!(verify(dir.path()).unwrap().entries, 11);
}

#[test]
fn a_live_log_verifies_with_its_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, |_| {});
    let newest = segment(dir.path(), 1);
    let mut bytes = fs::read(&newest).unwrap();
    bytes.extend_from_slice(b"{\"seq\":3,\"prev\":");
    fs::write(&newest, bytes).unwrap();
    assert!(matches!(verify(dir.path()), Err(VerifyError::Broken { problem: Problem::TornTail { .. }, .. })));
    let live = verify_with(dir.path(), &Verification { live: true, ..Verification::default() }).unwrap();
    assert_eq!((live.entries, live.in_progress), (3, Some(16)));
}

#[test]
fn before_reply_tells_each_entry_once_it_is_on_disk_and_a_batch_shares_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.durability = Durability::BeforeReply;
    let (log, _) = AuditLog::open(config).unwrap();
    assert!(log.replies_after_durable());
    let (told, durable) = std::sync::mpsc::channel();
    let segment = segment(dir.path(), 1);
    let before = log.syncs();
    for i in 0..1000 {
        let told = told.clone();
        let segment = segment.clone();
        log.record_durable(
            entry(i),
            Box::new(move |answer| {
                // Told on the writer's thread, after the sync: the entry is in the file.
                let on_disk = fs::read_to_string(&segment).unwrap().contains(&format!("\"node-{i}\""));
                let _ = told.send((i, answer, on_disk));
            }),
        );
    }
    let answers: Vec<_> = (0..1000).map(|_| durable.recv_timeout(std::time::Duration::from_secs(30)).unwrap()).collect();
    assert!(answers.iter().all(|(_, answer, on_disk)| answer.is_ok() && *on_disk), "every entry durable when told");
    let syncs = log.syncs() - before;
    assert!((1..100).contains(&syncs), "{syncs} syncs for 1000 entries: batches share one");
    log.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().entries, 1000);
}
