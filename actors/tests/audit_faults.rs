//! Faults injected into the audit writer with fail-rs failpoints (process-wide, so these tests
//! have a binary of their own and take turns): an fsync that fails stops the writer for good (the
//! kernel may have dropped what it wrote, so it does not retry), and a writer that stalls lets
//! its queue grow only to `audit.max_queue_bytes` before the gate refuses.


use actors::managers::communication::{Broadcast, CommunicationError};
use actors::security::audit::{AuditConfig, Durability};

mod common;

#[actix::test]
async fn an_fsync_failure_stops_the_writer_for_good_and_nothing_is_acknowledged_after_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.durability = Durability::BeforeReply;
    let (log, comm, ctx) = common::broadcaster_on(config);
    let say = |channel: &str| Broadcast { ctx: ctx.clone(), channel: channel.into(), content: "x".into() };
    comm.send(say("before")).await.unwrap().unwrap();

    // The disk fails the next fsync: the request whose entry it was to make durable is not
    // acknowledged, and the log is unavailable from then on.
    fail::cfg("audit-sync", "return").unwrap();
    let err = comm.send(say("during")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::AuditUnavailable(ref why) if why.contains("fsync")), "{err}");
    fail::cfg("audit-sync", "off").unwrap();
    // For good: the kernel may have dropped what the writer wrote, so it does not retry.
    let err = comm.send(say("after")).await.unwrap().unwrap_err();
    assert!(matches!(err, CommunicationError::AuditUnavailable(ref why) if why.contains("fsync")), "{err}");
    assert!(log.flush().is_err(), "the writer has stopped");
    scenario.teardown();
}

#[actix::test]
async fn a_stalled_writer_lets_its_queue_grow_only_to_its_bound() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.max_queue_bytes = 16 << 10;
    let (_log, comm, ctx) = common::broadcaster_on(config);
    let say = |i: usize| Broadcast { ctx: ctx.clone(), channel: format!("c{i}"), content: "x".into() };
    comm.send(say(0)).await.unwrap().unwrap();

    // The disk stalls: entries wait in the queue, and past 16 KiB of them the gate refuses.
    fail::cfg("audit-writer-stall", "pause").unwrap();
    actix::clock::sleep(std::time::Duration::from_millis(50)).await;
    let mut served = 0;
    let refused = loop {
        match comm.send(say(served + 1)).await.unwrap() {
            Ok(_) => served += 1,
            Err(e) => break e,
        }
        assert!(served < 10_000, "the queue grew without bound");
    };
    assert!(matches!(refused, CommunicationError::AuditUnavailable(ref why) if why.contains("audit.max_queue_bytes")), "{refused}");
    assert!(served > 10, "{served} served before the bound");
    // The writer catches up, and service resumes.
    fail::cfg("audit-writer-stall", "off").unwrap();
    let resumed = common::eventually(std::time::Duration::from_secs(20), || async { comm.send(say(0)).await.unwrap().ok() }).await;
    assert!(resumed.is_some());
    scenario.teardown();
}
