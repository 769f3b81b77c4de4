//! The audit log fails closed: on a filesystem that fills up, gated requests are refused
//! (`AuditUnavailable`) instead of served unaudited, nothing acknowledged is lost, nothing is
//! written twice, and service resumes once the log can write again; or, with
//! `on_failure = "stop"`, the node is stopped. The filesystem is a small
//! tmpfs the test mounts (it needs root, as CI has) and unmounts, also when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actors::managers::communication::{Broadcast, CommunicationError};
use actors::security::audit::{verify, AuditConfig, AuditLog, AuditReader, AuditSink, Durability, OnFailure, Outcome, StopHook};
use actors::security::CapSet;

/// A tmpfs of `bytes`, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root): {status}");
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: the log's writer may still hold its files until the actix system stops.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills `fs` but for about `leave` bytes; the file that does it, to delete later.
fn fill(fs: &SmallFs, leave: u64) -> PathBuf {
    let filler = fs.path().join("filler");
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(fs.path()).output().unwrap();
    let avail: u64 = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    std::fs::write(&filler, vec![0u8; avail.saturating_sub(leave) as usize]).unwrap();
    filler
}

#[actix::test]
async fn a_full_disk_refuses_requests_until_the_log_can_write_again() {
    let fs = SmallFs::mount(1 << 20);
    let dir = fs.path().join("audit");
    let mut config = AuditConfig::new(&dir);
    config.durability = Durability::IntervalMs(1);
    let (log, _) = AuditLog::open(config.clone()).unwrap();
    let log = Arc::new(log);
    let (comm, ctx) = common::broadcaster(log.clone());
    let filler = fill(&fs, 64 << 10);

    // Broadcast until the log cannot write: every request answered either ran (and is in the
    // log, checked below) or was refused because the log could not take it.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..100_000 {
        let broadcast = Broadcast { ctx: ctx.clone(), channel: format!("c{i}"), content: "x".into() };
        match comm.send(broadcast).await.unwrap() {
            Ok(_) => acknowledged.push(format!("c{i}")),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        if i % 100 == 0 {
            actix::clock::sleep(Duration::from_millis(1)).await;
        }
    }
    let refused = refused.expect("the disk filled up");
    assert!(matches!(refused, CommunicationError::AuditUnavailable(ref why) if why.contains("cannot write")), "{refused}");
    assert!(!acknowledged.is_empty());
    let again = Broadcast { ctx: ctx.clone(), channel: "more".into(), content: "x".into() };
    assert!(matches!(comm.send(again).await.unwrap(), Err(CommunicationError::AuditUnavailable(_))), "still refused");

    // Space again: the writer retries, catches up, and requests are served again.
    std::fs::remove_file(&filler).unwrap();
    let served = common::eventually(Duration::from_secs(20), || async {
        let retry = Broadcast { ctx: ctx.clone(), channel: "after".into(), content: "x".into() };
        comm.send(retry).await.unwrap().ok()
    })
    .await;
    assert!(served.is_some(), "service resumes once the log can write");
    acknowledged.push("after".into());
    log.flush().unwrap();

    // Every acknowledged broadcast is in the log exactly once, and the chain is intact.
    verify(&dir).unwrap();
    let reader = AuditReader::open(&dir).unwrap();
    let mut written: Vec<String> = reader
        .entries()
        .map(Result::unwrap)
        .filter(|e| e.entry.operation == "broadcast" && e.entry.outcome == Outcome::Allowed)
        .map(|e| e.entry.resource.to_string())
        .collect();
    written.sort();
    let mut expected = acknowledged.clone();
    expected.sort();
    let mut unique = written.clone();
    unique.dedup();
    assert_eq!(unique.len(), written.len(), "no entry is written twice");
    for channel in &acknowledged {
        assert!(written.binary_search(channel).is_ok(), "acknowledged broadcast {channel} is not in the log");
    }
}

#[test]
fn with_on_failure_stop_the_node_is_stopped_instead() {
    let fs = SmallFs::mount(1 << 20);
    let mut config = AuditConfig::new(fs.path().join("audit"));
    config.on_failure = OnFailure::Stop;
    let (stopped, reason) = std::sync::mpsc::channel();
    let stop: StopHook = Arc::new(move |why: &str| {
        let _ = stopped.send(why.to_owned());
    });
    let (log, _) = AuditLog::open_with_stop(config, stop).unwrap();
    let filler = fill(&fs, 0);
    for i in 0..64 {
        log.record(actors::security::audit::AuditEntry::new(
            actors::security::audit::EntryKind::EnergyUsage,
            Outcome::Allowed,
            "a",
            "user:alice",
            "join",
            &format!("w{i}"),
        ));
    }
    let why = reason.recv_timeout(Duration::from_secs(20)).expect("the stop hook is called");
    assert!(why.contains("cannot write") && why.contains("audit.on_failure = \"stop\""), "{why}");
    std::fs::remove_file(filler).unwrap();
}

#[actix::test]
async fn with_before_reply_a_request_is_answered_once_its_entry_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.durability = Durability::BeforeReply;
    let (log, comm, ctx) = common::broadcaster_on(config);
    let segment = dir.path().join("segment-000001.jsonl");
    let before = log.syncs();

    // 64 in flight at once: each answer comes after its own entry reached the disk.
    let requests = (0..64).map(|i| {
        let (comm, ctx, segment) = (comm.clone(), ctx.clone(), segment.clone());
        async move {
            let answer = comm.send(Broadcast { ctx, channel: format!("c{i}"), content: "x".into() }).await.unwrap();
            let on_disk = std::fs::read_to_string(&segment).unwrap().contains(&format!("\"resource\":\"c{i}\""));
            (answer.is_ok(), on_disk)
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|&(ok, on_disk)| ok && on_disk), "{answers:?}");
    let syncs = log.syncs() - before;
    assert!(syncs < 64, "{syncs} syncs for 64 requests: they were committed in groups");
    // A refusal waits for its entry too.
    let guest = Broadcast { ctx: ctx.attenuate(CapSet::EMPTY), channel: "denied".into(), content: "x".into() };
    assert!(comm.send(guest).await.unwrap().is_err());
    assert!(std::fs::read_to_string(&segment).unwrap().contains("\"resource\":\"denied\""));
}

/// Counts its ticks: proof that the arbiter it shares with a manager keeps running.
struct Ticker(Arc<std::sync::atomic::AtomicU64>);

impl Actor for Ticker {
    type Context = actix::Context<Self>;
    fn started(&mut self, ctx: &mut actix::Context<Self>) {
        use actix::AsyncContext;
        ctx.run_interval(Duration::from_millis(5), |ticker, _| {
            ticker.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

#[actix::test]
async fn with_before_reply_on_a_full_disk_nothing_is_acknowledged_that_is_not_durable() {
    let fs = SmallFs::mount(1 << 20);
    let dir = fs.path().join("audit");
    let mut config = AuditConfig::new(&dir);
    config.durability = Durability::BeforeReply;
    let (log, comm, ctx) = common::broadcaster_on(config);
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let _ticker = Ticker(ticks.clone()).start();
    let filler = fill(&fs, 32 << 10);

    let mut acknowledged = Vec::new();
    let mut refusals = 0;
    let ticks_before = ticks.load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..20_000 {
        let broadcast = Broadcast { ctx: ctx.clone(), channel: format!("c{i}"), content: "x".into() };
        match comm.send(broadcast).await.unwrap() {
            Ok(_) => acknowledged.push(format!("c{i}")),
            Err(CommunicationError::AuditUnavailable(_)) => {
                refusals += 1;
                if refusals == 50 {
                    break;
                }
                actix::clock::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refusals, 50, "the disk filled up and requests were refused");
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > ticks_before, "the arbiter kept ticking");

    std::fs::remove_file(&filler).unwrap();
    let served = common::eventually(Duration::from_secs(20), || async {
        let retry = Broadcast { ctx: ctx.clone(), channel: "after".into(), content: "x".into() };
        comm.send(retry).await.unwrap().ok()
    })
    .await;
    assert!(served.is_some(), "service resumes");
    log.flush().unwrap();
    verify(&dir).unwrap();
    let written: std::collections::BTreeSet<String> = AuditReader::open(&dir)
        .unwrap()
        .entries()
        .map(Result::unwrap)
        .filter(|e| e.entry.operation == "broadcast" && e.entry.outcome == Outcome::Allowed)
        .map(|e| e.entry.resource.to_string())
        .collect();
    for channel in acknowledged.iter().chain(Some(&"after".to_string())) {
        assert!(written.contains(channel), "acknowledged {channel} is not in the log");
    }
}
