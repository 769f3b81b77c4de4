//! `ergon energy probe` on a fake powercap tree and on this machine.

use std::fs;
use std::process::{Command, Output};

fn ergon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ergon")).args(args).output().expect("the ergon binary runs")
}

#[test]
fn probe_lists_a_stuck_rapl_zone_and_chooses_cpu_time() {
    let root = tempfile::tempdir().unwrap();
    let zone = root.path().join("intel-rapl:0");
    fs::create_dir(&zone).unwrap();
    fs::write(zone.join("name"), "psys\n").unwrap();
    fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    fs::write(zone.join("energy_uj"), "0\n").unwrap();
    let out = ergon(&["energy", "probe", "--powercap-root", root.path().to_str().unwrap(), "--load-ms", "50", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let psys = &report["findings"][0];
    assert_eq!((psys["name"].as_str(), psys["status"].as_str()), (Some("powercap:intel-rapl:0 (psys)"), Some("stuck")), "{report}");
    assert_eq!(report["source"], "time-model");

    let out = ergon(&["energy", "probe", "--powercap-root", root.path().to_str().unwrap(), "--load-ms", "50"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("stuck") && table.contains("measures nothing here"), "{table}");
    assert!(table.contains("not a measurement of energy"), "{table}");
}

#[test]
fn probe_says_why_a_missing_tree_is_unusable() {
    let out = ergon(&["energy", "probe", "--powercap-root", "/nonexistent/powercap", "--load-ms", "20"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("unusable") && table.contains("no powercap tree"), "{table}");
}

#[test]
fn probe_lists_packages_and_their_subzones_by_name_garbage_included() {
    let root = tempfile::tempdir().unwrap();
    let zone = |id: &str, name: &str, uj: &str| {
        let dir = root.path().join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("max_energy_range_uj"), "262143328850\n").unwrap();
        fs::write(dir.join("energy_uj"), uj).unwrap();
    };
    zone("intel-rapl:0", "package-0", "10\n");
    zone("intel-rapl:0/intel-rapl:0:0", "core", "5\n");
    zone("intel-rapl:0/intel-rapl:0:1", "dram", "5\n");
    zone("intel-rapl:1", "package-1", "garbage\n");
    let out = ergon(&["energy", "probe", "--powercap-root", root.path().to_str().unwrap(), "--load-ms", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = |needle: &str| table.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in\n{table}"));
    assert!(line("powercap:intel-rapl:0 (package-0)").contains("stuck"), "{table}");
    assert!(line("└ powercap:intel-rapl:0:0 (core)").contains("stuck"), "{table}");
    assert!(line("└ powercap:intel-rapl:0:1 (dram)").contains("stuck"), "{table}");
    let garbage = line("powercap:intel-rapl:1 (package-1)");
    assert!(garbage.contains("unusable") && garbage.contains("garbage"), "{table}");
    assert!(line("cpu-time").contains("[used]"), "{table}");
}
