//! `ergon audit plot`: the SVG holds what it says: a line per actor (or operation), each with one
//! point per stretch of time plus its start, refusals and alerts marked, and the energy counter
//! beside the charges.

use std::path::Path;
use std::process::{Command, Output};

use security::audit::{AuditConfig, AuditEntry, AuditLog, AuditSink, Detail, EnergyRecord, EntryKind, Outcome, Timestamp};

fn ergon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ergon")).args(args).output().expect("the ergon binary runs")
}

const T0: i64 = 1_800_000_000_000_000_000;

/// An entry at `second` seconds after T0.
fn at(second: i64, kind: EntryKind, outcome: Outcome, actor: &str, operation: &str, charged: f64, measured: f64) -> AuditEntry {
    let mut e = AuditEntry::new(kind, outcome, actor, "user:alice", operation, "r");
    e.ts = Timestamp::from_unix_nanos(T0 + second * 1_000_000_000);
    e.energy = Some(EnergyRecord {
        charged_j: charged,
        measured_j: measured,
        estimate_j: 0.0,
        remaining_j: 0.0,
        source: "rapl".into(),
        accounting: "physical".into(),
        elapsed_ns: 0,
        ops: None,
    });
    e
}

/// Ten joins of 1 J a second by the node manager; five broadcasts of 2 J every other second and a
/// refused one by the communication manager; a critical alert; the node manager's correction of
/// +0.5 J with its 1.5 J share, and 4 J unattributed.
fn write_log(dir: &Path) {
    let (log, _) = AuditLog::open(AuditConfig::new(dir)).unwrap();
    for s in 0..10 {
        log.record(at(s, EntryKind::EnergyUsage, Outcome::Allowed, "node-manager/n1", "join", 1.0, 1e-6));
    }
    for s in [0, 2, 4, 6, 8] {
        log.record(at(s, EntryKind::EnergyUsage, Outcome::Allowed, "communication-manager/n1", "broadcast", 2.0, 1e-6));
    }
    log.record(at(5, EntryKind::Rejected, Outcome::Denied, "communication-manager/n1", "broadcast", 0.0, 1e-6));
    let mut alert = at(7, EntryKind::EnergyAlert, Outcome::Allowed, "communication-manager/n1", "broadcast", 0.0, 0.0);
    alert.detail = Detail::from_alert("critical", "critical energy usage".into());
    log.record(alert);
    log.record(at(3, EntryKind::EnergyAttribution, Outcome::Allowed, "node-manager/n1", "attribution", 0.5, 1.5));
    log.record(at(9, EntryKind::EnergyAttribution, Outcome::Allowed, "unattributed", "attribution", 0.0, 4.0));
    log.close().unwrap();
}

/// The number of points of each polyline in an SVG, longest first.
fn polylines(svg: &str) -> Vec<usize> {
    let mut counts: Vec<usize> = svg
        .split("<polyline")
        .skip(1)
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next().map(|pts| pts.split_whitespace().count()))
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

#[test]
fn the_plot_has_a_line_per_actor_with_a_point_per_stretch_and_the_counter_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let svg_path = dir.path().join("energy.svg");
    let out = ergon(&["audit", "plot", dir.path().to_str().unwrap(), "-o", svg_path.to_str().unwrap(), "--points", "9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 lines over 9.000 s, 9 stretches each"), "{stdout}");
    assert!(stdout.contains("node-manager/n1: 10 points, 10.500000 J, 0 refusal entries"), "joins plus the correction: {stdout}");
    assert!(stdout.contains("communication-manager/n1: 10 points, 10.000000 J, 1 refusal entries"), "{stdout}");
    assert!(stdout.contains("measured by the energy counter: 10 points, 5.500000 J"), "{stdout}");
    assert!(stdout.contains("1 alerts"), "{stdout}");

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"), "an SVG");
    for name in ["node-manager/n1", "communication-manager/n1", "measured by the energy counter", "refused (x)", "alerts"] {
        assert!(svg.contains(name), "the legend names {name}");
    }
    assert!(svg.contains("physical/rapl"), "the title says what the joules are");
    assert_eq!(&polylines(&svg)[..3], [10, 10, 10], "two lines and the counter, each with 9 stretches and its start");
    assert!(polylines(&svg)[3] < 10);
}

#[test]
fn by_operation_leaves_corrections_out_and_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let svg_path = dir.path().join("ops.svg");
    let out = ergon(&["audit", "plot", dir.path().to_str().unwrap(), "-o", svg_path.to_str().unwrap(), "--by", "operation", "--points", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("join: 4 points, 10.000000 J"), "{stdout}");
    assert!(stdout.contains("broadcast: 4 points, 10.000000 J, 1 refusal entries"), "{stdout}");

    let empty = tempfile::tempdir().unwrap();
    let out = ergon(&["audit", "plot", empty.path().to_str().unwrap(), "-o", svg_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = ergon(&["audit", "plot", dir.path().to_str().unwrap(), "-o", "/nonexistent/dir/x.svg"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/x.svg"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ergon(&["audit", "plot", dir.path().to_str().unwrap(), "-o", "x.svg", "--points", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
}
