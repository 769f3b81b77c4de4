//! Energy counters on fake powercap trees and perf PMU descriptions built in temporary
//! directories, software perf events on this machine, and the probe's choice in each case. (This
//! machine has no RAPL and no hardware counters; one test probes it as it is.)

use std::fs;
use std::path::Path;
use std::time::Duration;

use energy::counters::perf::{discover_power, machine_events, online_cpus};
use energy::counters::powercap::{discover, machine_zones, unreadable, wrap_delta, PowercapCounter};
use energy::counters::{probe, probe_with, CounterError, EnergyCounter, PerfCounter, PowerEvent, ProbeConfig, Status, Zone};
use energy::Source;
use perf_event::events::Software;

const MAX: u64 = 262_143_328_850;

/// A powercap tree under construction.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Adds zone `id` named `name` with its counter at `uj` (`id` may be a path inside another
    /// zone, where the device tree keeps subzones).
    fn zone(&self, id: &str, name: &str, uj: u64) -> &Tree {
        let dir = self.root().join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("max_energy_range_uj"), format!("{MAX}\n")).unwrap();
        self.set(id, uj);
        self
    }

    fn set(&self, id: &str, uj: u64) {
        fs::write(self.root().join(id).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    fn write(&self, id: &str, file: &str, contents: &str) {
        fs::write(self.root().join(id).join(file), contents).unwrap();
    }

    fn zones(&self) -> Vec<Zone> {
        discover(self.root()).unwrap().into_iter().filter_map(|(_, z)| z.ok()).collect()
    }

    fn counter(&self, id: &str) -> PowercapCounter {
        let zone = self.zones().into_iter().find(|z| z.id == id).unwrap();
        PowercapCounter::open(zone).unwrap()
    }

    fn config(&self) -> ProbeConfig {
        ProbeConfig { powercap_root: self.root().to_owned(), ..ProbeConfig::default() }
    }
}

fn status<'a>(probe: &'a energy::counters::Probe, name: &str) -> &'a Status {
    &probe.findings.iter().find(|f| f.name.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {probe:#?}")).status
}

#[test]
fn one_wraparound_is_counted_across_the_wrap() {
    assert_eq!(wrap_delta(MAX - 100, 50, MAX), 150);
    assert_eq!(wrap_delta(10, 10, MAX), 0);
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", MAX - 1_000_000);
    let mut counter = tree.counter("intel-rapl:0");
    tree.set("intel-rapl:0", 2_000_000);
    assert_eq!(counter.read().unwrap().get(), 3.0, "1 J before the wrap and 2 J after");
}

#[test]
fn several_wraparounds_accumulate_when_read_between_them() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 0);
    let mut counter = tree.counter("intel-rapl:0");
    // Three and a half trips around the counter, read four times per trip.
    let step = MAX / 4;
    let mut position = 0u64;
    for _ in 0..14 {
        position = (position + step) % MAX;
        tree.set("intel-rapl:0", position);
        counter.read().unwrap();
    }
    let expected = (14 * step) as f64 / 1e6;
    let got = counter.read().unwrap().get();
    assert!((got - expected).abs() < 1e-3, "{got} J, expected {expected} J");
    assert!(got > 3.0 * MAX as f64 / 1e6, "more than three wraps' worth");
}

#[test]
fn several_packages_and_subzones_are_found_in_order_and_summed_without_double_counting() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1)
        .zone("intel-rapl:0:0", "core", 2)
        .zone("intel-rapl:0:1", "dram", 3)
        .zone("intel-rapl:1", "package-1", 4)
        .zone("intel-rapl:1:0", "dram", 5)
        .zone("intel-rapl:10", "package-10", 6)
        .zone("intel-rapl-mmio:0", "package-0", 7);
    fs::create_dir(tree.root().join("intel-rapl")).unwrap(); // the control type, not a zone
    let zones = tree.zones();
    let ids: Vec<&str> = zones.iter().map(|z| z.id.as_str()).collect();
    assert_eq!(
        ids,
        ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl:1:0", "intel-rapl:10", "intel-rapl-mmio:0"]
    );
    assert_eq!(zones[2].parent(), Some("intel-rapl:0"));
    assert_eq!(zones[0].parent(), None);
    let machine: Vec<&str> = machine_zones(&zones).iter().map(|z| z.id.as_str()).collect();
    assert_eq!(machine, ["intel-rapl:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl:1:0", "intel-rapl:10"], "packages and DRAM; not core (inside its package), not the MMIO copy");

    tree.zone("intel-rapl:2", "psys", 8);
    let zones = tree.zones();
    let machine: Vec<&str> = machine_zones(&zones).iter().map(|z| z.id.as_str()).collect();
    assert_eq!(machine, ["intel-rapl:2"], "the platform zone covers everything");
}

#[test]
fn missing_files_and_trees_are_named() {
    let err = discover(Path::new("/nonexistent/powercap")).unwrap_err();
    assert!(matches!(err, CounterError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("no powercap tree"), "{err}");

    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1);
    fs::remove_file(tree.root().join("intel-rapl:0/max_energy_range_uj")).unwrap();
    let (_, zone) = discover(tree.root()).unwrap().remove(0);
    let err = zone.unwrap_err();
    assert!(err.to_string().contains("max_energy_range_uj: missing"), "{err}");

    tree.zone("intel-rapl:1", "package-1", 1);
    let mut counter = tree.counter("intel-rapl:1");
    fs::remove_file(tree.root().join("intel-rapl:1/energy_uj")).unwrap();
    let err = counter.read().unwrap_err();
    assert!(matches!(err, CounterError::Missing { ref path, .. } if path.ends_with("energy_uj")), "{err:?}");
}

#[test]
fn an_unreadable_counter_says_how_to_grant_access() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1);
    let path = tree.root().join("intel-rapl:0/energy_uj");
    // Tests run as root here, which reads any mode; a directory in its place cannot be read.
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let zone = tree.zones().remove(0);
    let err = PowercapCounter::open(zone).unwrap_err();
    assert!(matches!(err, CounterError::Unreadable { .. }), "{err:?}");
    // What an unprivileged user gets since CVE-2020-8694:
    let denied = unreadable(&path, &std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    let text = denied.to_string();
    assert!(text.contains("CVE-2020-8694") && text.contains("chmod a+r") && text.contains(&tree.root().display().to_string()), "{text}");
}

#[test]
fn garbage_contents_are_errors_not_numbers() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1);
    let mut counter = tree.counter("intel-rapl:0");
    tree.write("intel-rapl:0", "energy_uj", "lots\n");
    let err = counter.read().unwrap_err();
    assert!(matches!(err, CounterError::Garbage { ref contents, .. } if contents == "lots"), "{err:?}");
    tree.write("intel-rapl:0", "energy_uj", &format!("{}\n", MAX + 1));
    let err = counter.read().unwrap_err();
    assert!(err.to_string().contains("above max_energy_range_uj"), "{err}");
    tree.write("intel-rapl:0", "energy_uj", "");
    assert!(matches!(counter.read(), Err(CounterError::Garbage { .. })));
    fs::write(tree.root().join("intel-rapl:0/name"), [0xff, 0xfe]).unwrap();
    let (_, zone) = discover(tree.root()).unwrap().remove(0);
    assert!(zone.unwrap_err().to_string().contains("not UTF-8"));
}

#[test]
fn a_fifo_or_an_endless_file_in_place_of_a_counter_is_refused_without_hanging() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1);
    let mut counter = tree.counter("intel-rapl:0");
    let energy = tree.root().join("intel-rapl:0/energy_uj");
    fs::remove_file(&energy).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&energy).status().unwrap();
    assert!(made.success());
    // Opening a FIFO for reading blocks until someone writes; a reader that did would hang here.
    let err = counter.read().unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    fs::remove_file(&energy).unwrap();
    fs::write(&energy, "1".repeat(1 << 20)).unwrap();
    let err = counter.read().unwrap_err();
    assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
}

#[test]
fn a_counter_that_does_not_advance_is_stuck_and_cpu_time_is_chosen_saying_so() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "psys", 0);
    let probe = probe_with(&tree.config(), || energy::counters::probe::spin(Duration::from_millis(50)));
    assert_eq!(*status(&probe, "powercap:intel-rapl:0"), Status::Stuck);
    assert!(matches!(status(&probe, "cpu-time"), Status::Usable { .. }));
    assert_eq!((probe.chosen.as_slice(), probe.source), (&["cpu-time".to_owned()][..], Source::TimeModel));
    assert!(probe.verdict.contains("not a measurement"), "{}", probe.verdict);
}

#[test]
fn advancing_rapl_zones_are_chosen_over_cpu_time() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1_000).zone("intel-rapl:0:0", "core", 500).zone("intel-rapl:1", "package-1", 0);
    let probe = probe_with(&tree.config(), || {
        tree.set("intel-rapl:0", 3_001_000);
        tree.set("intel-rapl:0:0", 1_000_500);
        tree.set("intel-rapl:1", 2_000_000);
    });
    assert!(matches!(status(&probe, "powercap:intel-rapl:0 "), Status::Usable { joules, .. } if *joules == 3.0), "{probe:#?}");
    assert_eq!(probe.source, Source::Rapl);
    assert_eq!(probe.chosen, ["powercap:intel-rapl:0 (package-0)", "powercap:intel-rapl:1 (package-1)"]);

    // One package that stands still makes the sum untrustworthy: fall back.
    let probe = probe_with(&tree.config(), || tree.set("intel-rapl:0", 9_000_000));
    assert_eq!(*status(&probe, "powercap:intel-rapl:1"), Status::Stuck);
    assert_eq!(probe.source, Source::TimeModel);
    assert!(probe.verdict.contains("cannot be read or do not advance"), "{}", probe.verdict);
}

#[test]
fn this_machine_is_probed_as_it_is() {
    // No RAPL here (a VM): whatever the tree shows, the choice must not be a RAPL counter that
    // does not advance, and the verdict must say what the joules are.
    let probe = probe(&ProbeConfig { load: Duration::from_millis(50), ..ProbeConfig::default() });
    for finding in &probe.findings {
        if probe.chosen.contains(&finding.name) {
            assert!(matches!(finding.status, Status::Usable { .. }), "{finding:?}");
        }
    }
    assert!(!probe.verdict.is_empty());
}

/// A fake `power` PMU: its type, format, cpumask and `energy-*` events, as the RAPL perf driver
/// writes them.
fn power_pmu(events: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let pmu = root.path().join("power");
    fs::create_dir_all(pmu.join("events")).unwrap();
    fs::create_dir_all(pmu.join("format")).unwrap();
    // No kernel PMU has this type, so opening it fails the way a missing event does.
    fs::write(pmu.join("type"), "4242\n").unwrap();
    fs::write(pmu.join("format/event"), "config:0-7\n").unwrap();
    fs::write(pmu.join("cpumask"), "0,18\n").unwrap();
    for (i, (name, scale, unit)) in events.iter().enumerate() {
        fs::write(pmu.join("events").join(name), format!("event=0x{:02x}\n", i + 1)).unwrap();
        fs::write(pmu.join("events").join(format!("{name}.scale")), format!("{scale}\n")).unwrap();
        fs::write(pmu.join("events").join(format!("{name}.unit")), format!("{unit}\n")).unwrap();
    }
    root
}

const RAPL_SCALE: &str = "2.3283064365386962890625e-10";

#[test]
fn the_power_pmu_is_described_from_sysfs_and_its_machine_events_chosen() {
    let root = power_pmu(&[
        ("energy-cores", RAPL_SCALE, "Joules"),
        ("energy-pkg", RAPL_SCALE, "Joules"),
        ("energy-ram", "1.52587890625e-05", "Joules"),
    ]);
    let found = discover_power(root.path()).unwrap();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["energy-cores", "energy-pkg", "energy-ram"]);
    let events: Vec<PowerEvent> = found.into_iter().map(|(_, e)| e.unwrap()).collect();
    assert_eq!(events[2].scale, 1.52587890625e-05);
    assert_eq!(events[0].cpus, [0, 18], "one CPU per package, from cpumask");
    let machine: Vec<&str> = machine_events(&events).iter().map(|e| e.name.as_str()).collect();
    assert_eq!(machine, ["energy-pkg", "energy-ram"], "cores are inside the package");

    let with_psys = power_pmu(&[("energy-pkg", RAPL_SCALE, "Joules"), ("energy-psys", RAPL_SCALE, "Joules")]);
    let events: Vec<PowerEvent> = discover_power(with_psys.path()).unwrap().into_iter().map(|(_, e)| e.unwrap()).collect();
    let machine: Vec<&str> = machine_events(&events).iter().map(|e| e.name.as_str()).collect();
    assert_eq!(machine, ["energy-psys"], "psys covers the packages");

    // The configuration is read through perf-event2's dynamic PMU builder; the kernel then refuses
    // the made-up PMU type, and the error says the event cannot be counted here.
    let err = PerfCounter::power(&events[0]).unwrap_err();
    assert!(matches!(err, CounterError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("cannot count this event"), "{err}");
}

#[test]
fn a_power_pmu_with_garbage_or_missing_descriptions_is_named() {
    let root = power_pmu(&[
        ("energy-pkg", "a lot", "Joules"),
        ("energy-ram", RAPL_SCALE, "Watts"),
        ("energy-cores", "-1", "Joules"),
    ]);
    fs::remove_file(root.path().join("power/events/energy-pkg.unit")).unwrap();
    for (name, event) in discover_power(root.path()).unwrap() {
        let err = event.unwrap_err();
        let message = err.to_string();
        match name.as_str() {
            "energy-pkg" => assert!(message.contains("\"a lot\" is not a counter value"), "{message}"),
            "energy-ram" => assert!(message.contains("in Joules only"), "{message}"),
            _ => assert!(message.contains("positive number of joules"), "{message}"),
        }
    }
    for hostile in ["all of them\n", "0-18446744073709551615\n", "0-100000000\n"] {
        fs::write(root.path().join("power/cpumask"), hostile).unwrap();
        for (_, event) in discover_power(root.path()).unwrap() {
            assert!(event.unwrap_err().to_string().contains("not a CPU list"), "{hostile}");
        }
    }
    let missing = discover_power(&root.path().join("nowhere")).unwrap_err();
    assert!(missing.to_string().contains("no `power` PMU"), "{missing}");

    // The probe reports every event as unusable and falls back, saying why.
    let config = ProbeConfig { pmu_root: root.path().to_owned(), ..ProbeConfig::default() };
    let probe = probe_with(&config, || energy::counters::probe::spin(Duration::from_millis(20)));
    assert!(matches!(status(&probe, "perf:power/energy-ram"), Status::Unusable { .. }));
    assert_ne!(probe.source, Source::Rapl);
    assert!(probe.verdict.contains("cannot be read or do not advance"), "{}", probe.verdict);
}

#[test]
fn software_perf_events_count_on_this_machine() {
    // The software cpu-clock event goes through the same per-CPU opening and reading as RAPL's
    // power PMU and the hardware counters, which this virtual machine does not have. Priced at
    // 1 nJ per nanosecond, it reads as 1 W per CPU.
    let cpus = online_cpus().unwrap();
    let opened =
        PerfCounter::open("perf:cpu-clock".into(), Source::TimeModel, &[(Software::CPU_CLOCK, 1e-9)], &cpus, Path::new("cpu-clock"));
    let mut counter = match opened {
        Ok(counter) => counter,
        // Unprivileged, machine-wide events are refused; the error must say what to change.
        Err(CounterError::Unreadable { why, .. }) => {
            assert!(why.contains("perf_event_paranoid"), "{why}");
            return;
        }
        Err(e) => panic!("software events exist on every Linux: {e}"),
    };
    let started = std::time::Instant::now();
    let first = counter.read().unwrap();
    energy::counters::probe::spin(Duration::from_millis(50));
    let used = counter.read().unwrap().get() - first.get();
    let most = started.elapsed().as_secs_f64() * cpus.len() as f64;
    assert!(used > 0.0 && used <= most * 1.05, "{used} J in {most} CPU-seconds at 1 W");
    assert_eq!(counter.source(), Source::TimeModel);
}

#[test]
fn hardware_counters_are_used_where_they_open_and_named_where_they_do_not() {
    let cpus = online_cpus().unwrap();
    match PerfCounter::hardware(&cpus) {
        Ok(mut counter) => {
            let first = counter.read().unwrap();
            energy::counters::probe::spin(Duration::from_millis(20));
            assert!(counter.read().unwrap() > first, "instructions retire under load");
            assert_eq!(counter.source(), Source::PerfCounters);
        }
        Err(CounterError::Missing { why, .. }) => assert!(why.contains("cannot count this event"), "{why}"),
        Err(CounterError::Unreadable { why, .. }) => assert!(why.contains("perf_event_paranoid"), "{why}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_zone_and_subzone_is_listed_by_name_with_its_status() {
    let tree = Tree::new();
    tree.zone("intel-rapl:0", "package-0", 1_000)
        .zone("intel-rapl:0:0", "core", 100)
        .zone("intel-rapl:0:1", "uncore", 0)
        .zone("intel-rapl:1", "package-1", 2_000)
        .zone("intel-rapl:1:0", "dram", 10)
        .zone("intel-rapl:2", "psys", 0)
        .zone("intel-rapl-mmio:0", "package-0", 5);
    // As the device tree keeps them: a subzone inside its package only, not beside it.
    let nested = "intel-rapl:1/intel-rapl:1:1";
    tree.zone(nested, "core", 7);
    // A package whose counter is garbage, and a subzone whose counter is missing.
    tree.write("intel-rapl:1", "energy_uj", "0xdeadbeef\n");
    fs::remove_file(tree.root().join("intel-rapl:1:0/energy_uj")).unwrap();
    // A zone with no name at all.
    fs::create_dir(tree.root().join("intel-rapl:3")).unwrap();

    let probe = probe_with(&tree.config(), || {
        tree.set("intel-rapl:0", 2_001_000);
        tree.set("intel-rapl:0:0", 1_000_100);
        tree.set("intel-rapl-mmio:0", 3_000_005);
        tree.set(nested, 500_007);
    });
    let zones: Vec<(&str, Option<&str>, Option<&str>, &Status)> = probe
        .findings
        .iter()
        .filter_map(|f| f.zone.as_ref().map(|z| (z.id.as_str(), z.name.as_deref(), z.parent.as_deref(), &f.status)))
        .collect();
    let ids: Vec<&str> = zones.iter().map(|z| z.0).collect();
    assert_eq!(
        ids,
        ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl:1:0", "intel-rapl:1:1", "intel-rapl:2", "intel-rapl:3", "intel-rapl-mmio:0"]
    );
    let names: Vec<Option<&str>> = zones.iter().map(|z| z.1).collect();
    assert_eq!(
        names,
        [Some("package-0"), Some("core"), Some("uncore"), Some("package-1"), Some("dram"), Some("core"), Some("psys"), None, Some("package-0")]
    );
    assert_eq!(zones[5].2, Some("intel-rapl:1"), "the nested subzone is its package's");
    assert!(matches!(zones[0].3, Status::Usable { joules, .. } if *joules == 2.0));
    assert!(matches!(zones[5].3, Status::Usable { joules, .. } if *joules == 0.5));
    assert_eq!(*zones[2].3, Status::Stuck, "uncore did not advance");
    assert_eq!(*zones[6].3, Status::Stuck, "psys did not advance");
    let why = |i: usize| match zones[i].3 {
        Status::Unusable { why } => why.clone(),
        other => panic!("{} is {other:?}", zones[i].0),
    };
    assert!(why(3).contains("0xdeadbeef"), "the garbage package: {}", why(3));
    assert!(why(4).contains("energy_uj"), "the missing counter: {}", why(4));
    assert!(why(7).contains("name"), "the nameless zone: {}", why(7));
    // The garbage package keeps its name in the listing.
    assert!(probe.findings.iter().any(|f| f.name == "powercap:intel-rapl:1 (package-1)" && matches!(f.status, Status::Unusable { .. })));
    assert!(probe.findings.iter().any(|f| f.zone.as_ref().is_some_and(|z| z.mmio)));
    // With psys stuck and package-1 unreadable, no RAPL group can be trusted.
    assert_eq!(probe.source, Source::TimeModel, "{}", probe.verdict);

    let json = serde_json::to_value(&probe).unwrap();
    let listed: Vec<&str> = json["findings"].as_array().unwrap().iter().filter_map(|f| f["zone"]["id"].as_str()).collect();
    assert_eq!(listed, ids);
    assert_eq!(json["findings"][3]["status"], "unusable");
    assert_eq!(json["findings"][3]["zone"]["name"], "package-1");
}
