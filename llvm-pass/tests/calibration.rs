//! `ergon energy calibrate`'s path end to end on this machine: instrumented workloads, the probe's
//! counter, the fit, and a profile that says plainly when the counter is not RAPL.

mod common;

use std::process::Command;

#[test]
fn calibration_runs_end_to_end_and_says_when_its_counter_is_not_rapl() {
    let out = Command::new(common::instrumented_fixtures().join("calibrate")).output().expect("the fixture runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let profile = &report["profile"];
    let runs = profile["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 21, "seven mixes at three duty cycles");
    for run in runs {
        let ops = &run["ops"];
        let counted = |class: &str| ops[class].as_u64().unwrap();
        match run["mix"].as_str().unwrap() {
            "alu" => assert!(counted("alu") > 100 * counted("fp").max(1), "{run}"),
            "fp" => assert!(counted("fp") > counted("mem"), "{run}"),
            "memory" => assert!(counted("mem") > 1000, "{run}"),
            _ => {}
        }
        assert!(run["joules"].as_f64().unwrap() >= 0.0);
    }
    let r_squared = profile["fit"]["r_squared"].as_f64().unwrap();
    assert!(r_squared.is_finite() && r_squared <= 1.0);
    let basis = profile["basis"].as_str().unwrap();
    if profile["source"] == "rapl" {
        assert!(basis.contains("(RAPL)"), "{basis}");
    } else {
        assert!(basis.contains("is not RAPL") && basis.contains("Horowitz"), "{basis}");
        let default = serde_json::to_value(energy::CostModel::default()).unwrap();
        assert_eq!(profile["cost_model"], default, "the documented default is kept");
    }
}
