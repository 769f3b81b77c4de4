//! An fsync that fails stops the audit writer for good: the kernel may have dropped what it
//! wrote, so it does not retry, and the gate refuses everything from then on. The failure is
//! injected with a fail-rs failpoint (`audit-sync`), which is process-wide, so this test has a
//! binary of its own.

use std::sync::Arc;

use actix::Actor;
use actors::managers::communication::{Broadcast, CommunicationError, CommunicationManager};
use actors::security::audit::{AuditConfig, AuditLog, Durability};
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment};

#[actix::test]
async fn an_fsync_failure_stops_the_writer_for_good_and_nothing_is_acknowledged_after_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.durability = Durability::BeforeReply;
    let (log, _) = AuditLog::open(config).unwrap();
    let log = Arc::new(log);
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(Principal::user("operator"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let env = Environment::new(Config::default(), grants, log.clone());
    let comm = CommunicationManager::new(&env, "n1").start();
    let ctx = operator.context(Scope::new("communication_management").unwrap()).unwrap();
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
